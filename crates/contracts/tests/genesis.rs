//! The genesis file: JSON in, validated state out.

use trainmesh_contracts::invariants;
use trainmesh_contracts::{Amount, Genesis, MemState};

const EXAMPLE: &str = include_str!("../../../ops/genesis/example.json");

#[test]
fn the_example_genesis_loads_and_applies() {
    let g = Genesis::from_json(EXAMPLE).expect("ops/genesis/example.json is valid");
    assert_eq!(g.chain_id, "trainmesh-devnet");
    let mut state = MemState::default();
    g.apply(&mut state).unwrap();
    let h = invariants::check(
        state
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
    let expected: u128 = g.accounts.iter().map(|a| a.balance.0).sum::<u128>()
        + g.validators.iter().map(|v| v.stake.0).sum::<u128>();
    assert_eq!(h.total(), expected);
    // JSON round trip keeps everything; amounts stay exact beyond 2^53.
    let again = Genesis::from_json(&g.to_json()).unwrap();
    assert_eq!(again, g);
    assert_eq!(again.hash(), g.hash());
}

#[test]
fn bad_genesis_files_are_refused_with_a_reason() {
    let g = Genesis::from_json(EXAMPLE).unwrap();
    let balance = format!("\"{}\"", g.accounts[0].balance.0);
    let cases = [
        (
            EXAMPLE.replacen(
                "\"chain_id\": \"trainmesh-devnet\"",
                "\"chain_id\": \"\"",
                1,
            ),
            "chain id",
        ),
        (
            EXAMPLE.replacen(
                "\"fee_share_burn_bps\": 500",
                "\"fee_share_burn_bps\": 501",
                1,
            ),
            "fee shares",
        ),
        ("{".to_string(), "genesis file"),
        (
            EXAMPLE.replacen(&g.accounts[0].address.to_hex(), "zz", 1),
            "not hex",
        ),
        (EXAMPLE.replacen(&balance, "\"12.5\"", 1), "whole number"),
    ];
    for (json, needle) in cases {
        let err = Genesis::from_json(&json).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let mut dup = g.clone();
    dup.accounts.push(dup.accounts[0].clone());
    assert!(dup
        .validate()
        .unwrap_err()
        .to_string()
        .contains("listed twice"));
    let mut unstaked = g;
    unstaked.validators[0].stake = Amount::ZERO;
    assert!(unstaked.validate().is_err());
}
