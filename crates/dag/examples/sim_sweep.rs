//! A long sweep of seeded simulations (the CI runs a fixed list; this runs as many as you like).
//!
//! `cargo run --release -p trainmesh-dag --example sim_sweep -- --from 0 --count 500 --nodes 4,7,10`
//!
//! Each failure prints its seed and the command that replays it; the exit code is the number of
//! failures (capped at 100).

use clap::Parser;
use trainmesh_dag::sim::{self, SimConfig};

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
}

fn main() {
    let args = Args::parse();
    let mut failures = 0;
    let mut runs = 0;
    for &nodes in &args.nodes {
        for seed in args.from..args.from + args.count {
            runs += 1;
            match sim::run(SimConfig::random(seed, nodes)) {
                Ok(r) => println!(
                    "ok   seed={seed} nodes={nodes} commits(min)={} restarts={} round={}",
                    r.commits_per_node.values().min().unwrap_or(&0),
                    r.restarts,
                    r.highest_round.0
                ),
                Err(f) => {
                    failures += 1;
                    println!("FAIL {f}\n  (DAG_SIM_NODES={nodes})");
                }
            }
        }
    }
    println!("{runs} runs, {failures} failed");
    std::process::exit(failures.min(100));
}
