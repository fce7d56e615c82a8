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

/// The example without its `consensus` section (as every genesis file written before it).
fn without_consensus_section() -> String {
    let start = EXAMPLE
        .find(",\n  \"consensus\"")
        .expect("the example has the section");
    format!("{}\n}}\n", &EXAMPLE[..start])
}

#[test]
fn a_genesis_without_consensus_parameters_gets_todays_defaults() {
    let g = Genesis::from_json(&without_consensus_section()).expect("an older genesis still loads");
    assert_eq!(
        g.consensus,
        trainmesh_dag::CoreConfig::default().consensus()
    );
    let example = Genesis::from_json(EXAMPLE).unwrap();
    assert_eq!(
        example.consensus, g.consensus,
        "the example spells out the defaults"
    );
}

#[test]
fn bad_consensus_parameters_are_refused_naming_the_parameter() {
    let cases = [
        (
            "\"gc_depth_rounds\": 50",
            "\"gc_depth_rounds\": 0",
            "gc_depth_rounds = 0",
        ),
        (
            "\"gc_depth_rounds\": 50",
            "\"gc_depth_rounds\": 1",
            "gc_depth_rounds = 1",
        ),
        (
            "\"gc_depth_rounds\": 50",
            "\"gc_depth_rounds\": 201",
            "gc_depth_rounds = 201",
        ),
        (
            "\"round_window_rounds\": 200",
            "\"round_window_rounds\": 10000000",
            "round_window_rounds",
        ),
        (
            "\"leader_timeout_ms\": 1000",
            "\"leader_timeout_ms\": 0",
            "leader_timeout_ms = 0",
        ),
        (
            "\"leader_timeout_ms\": 1000",
            "\"leader_timeout_ms\": 86400000",
            "leader_timeout_ms",
        ),
        (
            "\"header_transactions_max\": 20000",
            "\"header_transactions_max\": 0",
            "header_transactions_max",
        ),
        (
            "\"transaction_bytes_max\": 262144",
            "\"transaction_bytes_max\": 0",
            "transaction_bytes_max",
        ),
        (
            "\"header_payload_bytes_max\": 500000",
            "\"header_payload_bytes_max\": 4194000",
            "half a network message",
        ),
        (
            "\"gc_depth_rounds\": 50",
            "\"gc_depth\": 50",
            "unknown field `gc_depth`",
        ),
        (
            "\"gc_depth_rounds\": 50",
            "\"gc_depth_rounds\": -3",
            "expected u64",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let err = Genesis::from_json(&EXAMPLE.replacen(from, to, 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{to}: {err}");
    }
    // The bounds hold between fields too: a deeper collection than the window is refused.
    let mut g = Genesis::from_json(EXAMPLE).unwrap();
    g.consensus.round_window_rounds = 20;
    g.consensus.gc_depth_rounds = 21;
    let err = g.validate().unwrap_err().to_string();
    assert!(
        err.contains("gc_depth_rounds = 21 is outside 2..=20"),
        "{err}"
    );
}
