//! Slashing takes stake without releasing locks it was not about.

use trainmesh_contracts::events::Events;
use trainmesh_contracts::{accounts, invariants, staking, Amount, Genesis, MemState, SlashReason};

const EXAMPLE: &str = include_str!("../../../ops/genesis/example.json");

/// A trainer holds collateral on two units and is slashed for one (whose lock its caller freed
/// first): the other unit's collateral stays locked, so the trainer cannot unbond it and escape
/// the next slash. (Before, `slash` also subtracted the amount from the lock: a second time.)
#[test]
fn a_slash_leaves_the_other_units_collateral_locked() {
    let g = Genesis::from_json(EXAMPLE).unwrap();
    let mut state = MemState::default();
    g.apply(&mut state).unwrap();
    let who = g.accounts[0].address;
    let mut events = Events::default();
    staking::bond(&mut state, who, Amount::from_train(500), &mut events).unwrap();
    // Two units' collateral locked; the first is rejected: its caller frees its lock, then slashes.
    let mut a = accounts::load(&state, &who).unwrap();
    a.locked = Amount::from_train(200);
    accounts::store(&mut state, &who, &a);
    let slashed = staking::slash(
        &mut state,
        who,
        Amount::from_train(100),
        &[],
        SlashReason::WithheldReveal {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 0,
            },
        },
        &mut events,
    )
    .unwrap();
    assert_eq!(slashed, Amount::from_train(100));
    let a = accounts::load(&state, &who).unwrap();
    assert_eq!(a.stake, Amount::from_train(400));
    assert_eq!(a.locked, Amount::from_train(200), "the other lock stays");
    // A slash that takes stake below the lock caps the lock at the stake.
    staking::slash(
        &mut state,
        who,
        Amount::from_train(300),
        &[],
        SlashReason::WithheldReveal {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 1,
            },
        },
        &mut events,
    )
    .unwrap();
    let a = accounts::load(&state, &who).unwrap();
    assert_eq!(a.stake, Amount::from_train(100));
    assert_eq!(a.locked, Amount::from_train(100));
    invariants::check(
        state
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
}

/// Validators 0..4 with consensus keys `KeyPair::from_seed(i)`, each funded beyond its stake.
fn validator_world() -> (MemState, Vec<trainmesh_contracts::Address>) {
    use trainmesh_contracts::{Address, GenesisAccount, GenesisValidator, Hash32, Params};
    let addresses: Vec<Address> = (0..4u8)
        .map(|i| Address::from_public_key(&[i + 1; 32]))
        .collect();
    let g = Genesis {
        chain_id: "slashing".into(),
        genesis_time_ms: 0,
        accounts: addresses
            .iter()
            .map(|a| GenesisAccount {
                address: *a,
                balance: Amount::from_train(1_000),
            })
            .collect(),
        validators: addresses
            .iter()
            .enumerate()
            .map(|(i, a)| GenesisValidator {
                address: *a,
                consensus_key: Hash32(trainmesh_dag::KeyPair::from_seed(i as u64).public().0),
                stake: Amount::from_train(100_000),
            })
            .collect(),
        params: Params::default(),
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let mut state = MemState::default();
    g.apply(&mut state).unwrap();
    (state, addresses)
}

/// The attack: a validator unbonds its stake while the (fixed) committee keeps its vote. Only
/// what it bonded beyond its committee stake may leave.
#[test]
fn a_validator_cannot_unbond_its_committee_stake() {
    let (mut state, v) = validator_world();
    let ctx = trainmesh_contracts::Context {
        height: 1,
        time: trainmesh_contracts::TimestampMs(1_000),
        seed: [0; 32],
    };
    let mut events = Events::default();
    staking::bond(&mut state, v[0], Amount::from_train(500), &mut events).unwrap();
    staking::unbond(&mut state, &ctx, v[0], Amount::from_train(500), &mut events).unwrap();
    let err = staking::unbond(&mut state, &ctx, v[0], Amount::from_train(1), &mut events)
        .unwrap_err()
        .to_string();
    assert!(err.contains("validator"), "{err}");
    assert_eq!(
        accounts::load(&state, &v[0]).unwrap().stake,
        Amount::from_train(100_000)
    );
}

/// Two headers of one round signed by validator `author` on the network `chain_id`.
fn equivocation_on(chain_id: &str, author: u32) -> trainmesh_dag::EquivocationEvidence {
    use trainmesh_dag::{AuthorityIndex, Epoch, Header, KeyPair, Round, SignedHeader, TimestampMs};
    let key = KeyPair::from_seed(u64::from(author));
    let header = |payload: u8| Header {
        epoch: Epoch(0),
        chain: trainmesh_dag::chain_digest(chain_id),
        round: Round(7),
        author: AuthorityIndex(author),
        created_at: TimestampMs(1),
        parents: vec![],
        payload: vec![bytes::Bytes::from(vec![payload])],
    };
    trainmesh_dag::EquivocationEvidence {
        first: SignedHeader::new(header(1), &key),
        second: SignedHeader::new(header(2), &key),
    }
}

/// Two headers of one round signed by validator `author` on this network.
fn equivocation(author: u32) -> trainmesh_dag::EquivocationEvidence {
    equivocation_on("slashing", author)
}

/// The attack: a validator's consensus key also signs on another network (a testnet, say),
/// where equivocating costs nothing; its headers from there are replayed here as evidence.
/// Refused: the evidence names its network; this network's evidence still slashes.
#[test]
fn double_sign_evidence_from_another_network_slashes_nothing() {
    let (mut state, v) = validator_world();
    let mut events = Events::default();
    let before = accounts::load(&state, &v[0]).unwrap().stake;
    let elsewhere = equivocation_on("a-testnet", 0);
    let err = staking::slash_double_sign(&mut state, v[1], &elsewhere, &mut events)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another network"), "{err}");
    assert_eq!(accounts::load(&state, &v[0]).unwrap().stake, before);
    // Mixed: one header from here, one from there.
    let mut mixed = equivocation(0);
    mixed.second = elsewhere.second;
    assert!(staking::slash_double_sign(&mut state, v[1], &mixed, &mut events).is_err());
    assert_eq!(accounts::load(&state, &v[0]).unwrap().stake, before);
    let taken = staking::slash_double_sign(&mut state, v[1], &equivocation(0), &mut events);
    assert!(taken.unwrap() > Amount::ZERO);
}

/// The attack: a validator that double-signed reports itself to collect the reporter's share.
/// Refused; reported by another, it is slashed.
#[test]
fn a_validator_reporting_its_own_double_sign_gets_nothing() {
    let (mut state, v) = validator_world();
    let mut events = Events::default();
    let evidence = equivocation(0);
    let err = staking::slash_double_sign(&mut state, v[0], &evidence, &mut events)
        .unwrap_err()
        .to_string();
    assert!(err.contains("own double signing"), "{err}");
    let before = accounts::load(&state, &v[0]).unwrap().stake;
    let taken = staking::slash_double_sign(&mut state, v[1], &evidence, &mut events).unwrap();
    assert!(taken > Amount::ZERO);
    assert_eq!(
        accounts::load(&state, &v[0]).unwrap().stake,
        before.checked_sub(taken).unwrap()
    );
    invariants::check(
        state
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
}
