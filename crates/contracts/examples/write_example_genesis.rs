//! Writes `ops/genesis/example.json`: four validators and a few funded accounts with
//! deterministic keys (`cargo run -p trainmesh-contracts --example write_example_genesis`).
//! The node's `trainmesh genesis new` is the general tool; this keeps the checked-in example
//! reproducible.

use trainmesh_contracts::{
    Address, Amount, Genesis, GenesisAccount, GenesisValidator, Hash32, Params,
};

fn key(seed: &str) -> [u8; 32] {
    *blake3::hash(seed.as_bytes()).as_bytes()
}

fn main() {
    let names = [
        "researcher",
        "data-provider",
        "trainer-1",
        "trainer-2",
        "evaluator-1",
        "evaluator-2",
    ];
    let accounts = names
        .iter()
        .map(|name| GenesisAccount {
            address: Address::from_public_key(&key(name)),
            balance: Amount::from_train(10_000),
        })
        .collect();
    let validators = (1..=4)
        .map(|i| GenesisValidator {
            address: Address::from_public_key(&key(&format!("validator-{i}"))),
            consensus_key: Hash32(key(&format!("validator-{i}/consensus"))),
            stake: Amount::from_train(100_000),
        })
        .collect();
    let g = Genesis {
        chain_id: "trainmesh-devnet".into(),
        genesis_time_ms: 0,
        accounts,
        validators,
        params: Params::default(),
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../ops/genesis/example.json"
    );
    std::fs::write(path, g.to_json() + "\n").expect("write the example genesis");
    println!("wrote {path}");
}
