//! `trainmesh bench consensus` as an operator runs it: validator processes over libp2p with
//! durable redb stores, a short run at a low rate. Its last line is the JSON summary, and every
//! pair of validators' committed sequences agrees.

use std::process::Command;

#[test]
fn the_consensus_benchmark_commits_and_its_validators_agree() {
    let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
        .args(["bench", "consensus", "--validators", "4", "--rate", "2000"])
        .args(["--seconds", "5", "--warmup", "1", "--store", "redb"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the benchmark failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(summary["store"], "redb", "{summary}");
    assert_eq!(summary["validators"], 4, "{summary}");
    assert_eq!(summary["agreement"], true, "{summary}");
    assert!(summary["commits_compared"].as_u64() > Some(0), "{summary}");
    assert!(summary["committed_tps"].as_f64() > Some(0.0), "{summary}");
    assert!(
        summary["window_committed_txs"].as_u64() > Some(0),
        "{summary}"
    );
    for key in ["p50_commit_latency_ms", "p99_commit_latency_ms"] {
        assert!(summary[key].is_number(), "{key}: {summary}");
    }
}
