//! Seeded simulations of the consensus under faults. Every failure prints its seed and the
//! command that replays it (`DAG_SIM_SEED=<seed> [DAG_SIM_NODES=<n>]`).

use trainmesh_dag::sim::{self, Behaviour, Crash, Partition, SimConfig};
use trainmesh_dag::AuthorityIndex;

fn check(config: SimConfig) -> sim::SimReport {
    let seed = config.seed;
    let nodes = config.nodes;
    println!("simulating seed={seed} nodes={nodes}");
    match sim::run(config) {
        Ok(report) => {
            println!(
                "seed={seed} nodes={nodes}: commits={:?} txs={} round={} delivered={} dropped={} rejected={} restarts={}",
                report.commits_per_node,
                report.committed_transactions,
                report.highest_round.0,
                report.messages_delivered,
                report.messages_dropped,
                report.messages_rejected,
                report.restarts
            );
            report
        }
        Err(failure) => panic!("{failure}\n  (DAG_SIM_NODES={nodes})"),
    }
}

#[test]
fn calm_network_commits_everything() {
    let report = check(SimConfig::calm(1, 4));
    assert!(
        report.commits_per_node.values().all(|&c| c >= 10),
        "{report:?}"
    );
    assert!(report.committed_transactions > 0);
}

#[test]
fn equivocator_is_caught_and_consensus_continues() {
    let mut config = SimConfig::calm(2, 4);
    config
        .byzantine
        .insert(AuthorityIndex(1), Behaviour::Equivocate);
    let report = check(config);
    assert!(
        report.equivocations_detected.contains(&AuthorityIndex(1)),
        "{report:?}"
    );
}

#[test]
fn junk_and_invalid_signatures_are_rejected() {
    let mut config = SimConfig::calm(3, 7);
    config
        .byzantine
        .insert(AuthorityIndex(2), Behaviour::JunkRounds);
    config
        .byzantine
        .insert(AuthorityIndex(5), Behaviour::InvalidSignatures);
    let report = check(config);
    assert!(report.messages_rejected > 0);
}

#[test]
fn fixed_seeds_with_random_faults() {
    for (seed, nodes) in [
        (11, 4),
        (12, 4),
        (13, 4),
        (14, 5),
        (15, 7),
        (16, 7),
        (17, 10),
        (18, 4),
    ] {
        check(SimConfig::random(seed, nodes));
    }
}

#[test]
fn crashed_nodes_restart_from_their_store_and_replay_identically() {
    let mut config = SimConfig::calm(4, 4);
    config.duration_ms = 14_000;
    config.heal_at_ms = 9_000;
    config.crashes = vec![
        Crash {
            node: AuthorityIndex(1),
            at_ms: 2_000,
            down_ms: 1_500,
        },
        Crash {
            node: AuthorityIndex(1),
            at_ms: 5_000,
            down_ms: 3_000,
        },
    ];
    let report = check(config);
    assert_eq!(report.restarts, 2);
    // The restarted node caught up with the others.
    let commits: Vec<u64> = report.commits_per_node.values().copied().collect();
    assert!(
        commits.iter().max().unwrap() - commits.iter().min().unwrap() <= 2,
        "{commits:?}"
    );
}

#[test]
fn partition_without_quorum_stalls_then_heals() {
    let mut config = SimConfig::calm(5, 4);
    config.partitions = vec![Partition {
        start_ms: 1_000,
        end_ms: 5_000,
        groups: vec![
            vec![AuthorityIndex(0), AuthorityIndex(1)],
            vec![AuthorityIndex(2), AuthorityIndex(3)],
        ],
    }];
    config.heal_at_ms = 5_000;
    config.duration_ms = 10_000;
    let report = check(config);
    assert!(
        report.commits_after_heal.values().all(|&c| c >= 5),
        "{report:?}"
    );
}

#[test]
fn large_committee() {
    let mut config = SimConfig::random(31, 31);
    config.duration_ms = 4_000;
    config.heal_at_ms = 2_000;
    check(config);
}

/// Replays one seed: `DAG_SIM_SEED=42 DAG_SIM_NODES=7 cargo test -p trainmesh-dag --test simulation replay -- --nocapture`.
#[test]
fn replay() {
    let Ok(seed) = std::env::var("DAG_SIM_SEED") else {
        println!("DAG_SIM_SEED not set: nothing to replay");
        return;
    };
    let seed: u64 = seed.parse().expect("DAG_SIM_SEED is a number");
    let nodes: usize = std::env::var("DAG_SIM_NODES")
        .ok()
        .map(|n| n.parse().expect("DAG_SIM_NODES is a number"))
        .unwrap_or(4);
    check(SimConfig::random(seed, nodes));
}
