//! A long sweep of seeded simulations (the CI runs a fixed, shorter list; this runs as many as you
//! like).
//!
//! `cargo run --release -p trainmesh-dag --example sim_sweep -- --from 0 --count 10000 --nodes 4,7,10`
//!
//! Options: `--scenario NAME` runs one named fault kind (always present) instead of a random mix;
//! `--mix all|all-a-b|a+b` picks the kinds random runs draw from; `--ms` sets the simulated
//! duration; `--threads` runs seeds in parallel.
//!
//! Each failure prints one line with its seed, committee size, the broken invariant and the
//! command that replays it. The last line is one JSON object: `seeds` (runs), `failures`,
//! `first_failure` (`{seed, nodes, replay}` of the lowest failing run, or null), and the failures
//! counted by invariant. The exit code is the number of failures, capped at 100.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Parser;
use serde_json::json;
use trainmesh_dag::sim::{self, FaultKind, Mix, SimConfig, SimFailure, DEFAULT_DURATION_MS};

#[derive(Parser, Debug)]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Seeds per committee size.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Committee sizes, comma separated.
    #[arg(long, default_value = "4,7,10", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// One named scenario (a fault kind, always present), e.g. `forged_parents`.
    #[arg(long)]
    scenario: Option<String>,
    /// The fault kinds random runs draw from.
    #[arg(long, default_value = "all")]
    mix: String,
    /// Simulated duration of each run.
    #[arg(long, default_value_t = DEFAULT_DURATION_MS)]
    ms: u64,
    /// Runs in parallel.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also print a line for every run that passes.
    #[arg(long)]
    verbose: bool,
}

/// A failure's reason starts with the invariant it broke ("agreement: ...", "liveness: ...").
fn invariant(failure: &SimFailure) -> String {
    let reason = &failure.reason;
    reason.split(':').next().unwrap_or(reason).to_string()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scenario = match &args.scenario {
        Some(name) => Some(
            FaultKind::from_name(name)
                .ok_or_else(|| anyhow::anyhow!("unknown scenario {name:?}"))?,
        ),
        None => None,
    };
    let mix = Mix::parse(&args.mix).map_err(anyhow::Error::msg)?;
    let jobs: Vec<(usize, u64)> = args
        .nodes
        .iter()
        .flat_map(|&n| (args.from..args.from + args.count).map(move |s| (n, s)))
        .collect();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, u64, SimFailure)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| {
                while let Some(&(nodes, seed)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let config = match scenario {
                    Some(kind) => SimConfig::scenario(kind, seed, nodes, args.ms),
                    None => SimConfig::draw(seed, nodes, &mix, args.ms),
                };
                match sim::run(config) {
                    Ok(r) if args.verbose => println!(
                        "ok   seed={seed} nodes={nodes} commits(min)={} rate(min)={:.2}/s restarts={} round={}",
                        r.commits_per_node.values().min().unwrap_or(&0),
                        r.commit_rate_after_heal.values().copied().fold(f64::INFINITY, f64::min),
                        r.restarts,
                        r.highest_round.0
                    ),
                    Ok(_) => {}
                    Err(f) => {
                        println!(
                            "FAIL seed={seed} nodes={nodes} at {}ms: {}\n  config: {}\n  replay: {}",
                            f.at_ms,
                            f.reason,
                            f.config,
                            f.replay_command()
                        );
                        failures.lock().expect("no panics while held").push((nodes, seed, f));
                    }
                }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("no panics while held");
    failures.sort_by_key(|(n, s, _)| (*s, *n));
    let mut by_invariant: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, f) in &failures {
        *by_invariant.entry(invariant(f)).or_default() += 1;
    }
    let first = failures.first().map(
        |(nodes, seed, f)| json!({"seed": seed, "nodes": nodes, "replay": f.replay_command()}),
    );
    println!(
        "{}",
        json!({
            "seeds": jobs.len(),
            "failures": failures.len(),
            "first_failure": first,
            "failures_by_invariant": by_invariant,
            "scenario": args.scenario,
            "mix": mix.describe(),
            "duration_ms": args.ms,
        })
    );
    std::process::exit(failures.len().min(100) as i32);
}
