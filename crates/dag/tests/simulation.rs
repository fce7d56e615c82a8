//! Seeded simulations of the consensus under faults. Every failure prints its seed and the
//! command that replays it (`DAG_SIM_SEED=<seed> DAG_SIM_NODES=<n> DAG_SIM_MS=<ms>` with
//! `DAG_SIM_MIX=<mix>` or `DAG_SIM_SCENARIO=<name>`).
//!
//! Each Byzantine behaviour is a named scenario below; each once found a real defect of the core
//! (docs/design/dag.md, "Threat model"), and the random sweep draws them all.

use trainmesh_dag::sim::{self, Behaviour, Crash, FaultKind, Mix, Partition, SimConfig};
use trainmesh_dag::AuthorityIndex;

/// Simulated duration of the CI's runs: faults in the first half, then healing, a catch-up
/// grace, and a window in which the commit rate is measured.
const CI_RUN_MS: u64 = 8_000;
/// Seeds per committee size in the CI's random sweep: 200 runs, most of them on the cheap size
/// (a run of 10 validators costs about ten of 4). The release sweep (`examples/sim_sweep.rs`)
/// spreads thousands evenly.
const CI_SEEDS: [(usize, u64); 3] = [(4, 130), (7, 50), (10, 20)];
const CI_SIZES: [usize; 3] = [4, 7, 10];

fn check(config: SimConfig) -> sim::SimReport {
    let seed = config.seed;
    let nodes = config.nodes;
    match sim::run(config) {
        Ok(report) => {
            println!(
                "seed={seed} nodes={nodes}: commits={:?} rate={:?} (min {:.2}/s) txs={} round={} delivered={} dropped={} rejected={} restarts={} forged={}/{}",
                report.commits_per_node,
                report.commit_rate_after_heal,
                report.min_commit_rate_per_s,
                report.committed_transactions,
                report.highest_round.0,
                report.messages_delivered,
                report.messages_dropped,
                report.messages_rejected,
                report.restarts,
                report.forged_certified,
                report.forged_headers,
            );
            report
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// Runs every seed, then fails with the list of failing seeds (each with its replay command).
fn sweep(configs: impl Iterator<Item = SimConfig>) -> usize {
    let mut runs = 0;
    let mut failures = Vec::new();
    for config in configs {
        runs += 1;
        if let Err(f) = sim::run(config) {
            failures.push(f.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    runs
}

fn ci_random(mix: Mix, nodes: usize) -> impl Iterator<Item = SimConfig> {
    let seeds = CI_SEEDS
        .iter()
        .find(|(n, _)| *n == nodes)
        .map_or(0, |(_, seeds)| *seeds);
    (0..seeds).map(move |seed| SimConfig::draw(seed, nodes, &mix, CI_RUN_MS))
}

fn scenario(kind: FaultKind, seeds: std::ops::Range<u64>) -> impl Iterator<Item = SimConfig> {
    CI_SIZES.into_iter().flat_map(move |nodes| {
        seeds
            .clone()
            .map(move |seed| SimConfig::scenario(kind, seed, nodes, CI_RUN_MS))
    })
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
    check(SimConfig::draw(31, 31, &Mix::all(), 4_000));
}

// The CI's random sweep: 200 seeds over 4, 7 and 10 validators, every fault kind (one test per
// size, so they run in parallel).
#[test]
fn random_faults_4() {
    sweep(ci_random(Mix::all(), 4));
}

#[test]
fn random_faults_7() {
    sweep(ci_random(Mix::all(), 7));
}

#[test]
fn random_faults_10() {
    sweep(ci_random(Mix::all(), 10));
}

#[test]
fn ci_sweep_holds_at_least_200_seeds() {
    assert!(CI_SEEDS.iter().map(|(_, s)| s).sum::<u64>() >= 200);
    assert_eq!(CI_SEEDS.map(|(n, _)| n), CI_SIZES);
}

/// One named scenario per fault kind (with its companions), over a few seeds and every CI
/// committee size.
macro_rules! scenario_tests {
    ($($(#[$attr:meta])* $name:ident: $kind:expr, $seeds:expr;)*) => {$(
        #[test]
        $(#[$attr])*
        fn $name() {
            sweep(scenario($kind, $seeds));
        }
    )*};
}

scenario_tests! {
    scenario_withheld_leader_certificate: FaultKind::WithheldLeaderCertificate, 0..2;
    scenario_in_window_junk: FaultKind::InWindowJunk, 0..2;
    scenario_clock_skew: FaultKind::ClockSkew, 0..2;
    scenario_slow_validator: FaultKind::SlowValidator, 0..2;
    scenario_forged_parents: FaultKind::ForgedParents, 0..3;
    scenario_future_timestamps: FaultKind::FutureTimestamps, 0..3;
    scenario_hostile_sync: FaultKind::HostileSync, 0..3;
    scenario_restart_beyond_window: FaultKind::RestartBeyondWindow, 0..6;
    scenario_straggler_chain: FaultKind::StragglerChain, 0..3;
    scenario_shallow_gc: FaultKind::ShallowGc, 0..3;
    scenario_small_reply_cap: FaultKind::SmallReplyCap, 0..3;
    scenario_tight_bounds: FaultKind::TightBounds, 0..3;
}

/// Replays one run: `DAG_SIM_SEED=42 DAG_SIM_NODES=7 DAG_SIM_MS=6000 DAG_SIM_MIX=all cargo test -p trainmesh-dag --test simulation replay -- --nocapture`
/// (or `DAG_SIM_SCENARIO=<fault kind>` instead of the mix).
#[test]
fn replay() {
    let Ok(seed) = std::env::var("DAG_SIM_SEED") else {
        println!("DAG_SIM_SEED not set: nothing to replay");
        return;
    };
    let var = |name: &str| std::env::var(name).ok();
    let seed: u64 = seed.parse().expect("DAG_SIM_SEED is a number");
    let nodes: usize =
        var("DAG_SIM_NODES").map_or(4, |n| n.parse().expect("DAG_SIM_NODES is a number"));
    let ms: u64 = var("DAG_SIM_MS").map_or(sim::DEFAULT_DURATION_MS, |m| {
        m.parse().expect("DAG_SIM_MS is a number")
    });
    let config = match var("DAG_SIM_SCENARIO") {
        Some(name) => {
            let kind = FaultKind::from_name(&name).expect("DAG_SIM_SCENARIO names a fault kind");
            SimConfig::scenario(kind, seed, nodes, ms)
        }
        None => {
            let mix = Mix::parse(&var("DAG_SIM_MIX").unwrap_or_else(|| "all".into()))
                .expect("DAG_SIM_MIX is all, all-a-b or a+b");
            SimConfig::draw(seed, nodes, &mix, ms)
        }
    };
    println!("{}", config.describe());
    check(config);
}
