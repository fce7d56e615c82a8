//! The main job end to end: `trainmesh devnet --until-done` trains the demo MLP on the digits
//! to the target held-out accuracy through the whole network: honest, with a cheater, and with a
//! cheater and a lazy evaluator, and with a colluding evaluator.

use std::process::Command;

fn devnet(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
        .args([
            "devnet",
            "--until-done",
            "--timeout-s",
            "400",
            "--gateway",
            "127.0.0.1:0",
        ])
        .args(extra)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet {extra:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).expect("the last line is JSON")
}

#[test]
fn devnet_finishes_the_demo_job() {
    let s = devnet(&[]);
    assert_eq!(s["job_status"], "completed");
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.95, "{s}");
    assert!(s["certificates"].as_u64().unwrap() >= 1);
    assert!(s["committed_rounds"].as_u64().unwrap() > 0);
    assert!(s["trainer_rewards"].as_f64().unwrap() > 0.0);
    assert_eq!(s["rejected_results"], 0, "{s}");
    assert_eq!(s["trainers_slashed"], 0.0, "{s}");
    assert_trained_where_it_says(&s);
}

/// Every unit's device is reported; with a conforming device (lavapipe in CI) the trainers train
/// on it, and evaluators on the CPU executor certified that work by exact comparison.
fn assert_trained_where_it_says(s: &serde_json::Value) {
    let devices = s["devices"].as_array().expect("devices");
    assert!(
        devices.len() as u64 >= s["certificates"].as_u64().unwrap(),
        "{s}"
    );
    let gpu_units = s["gpu_units"].as_u64().unwrap();
    match s["train_device"].as_str() {
        Some(adapter) => {
            assert!(gpu_units > 0, "{s}");
            assert!(devices.iter().all(|d| d["device"] == adapter), "{s}");
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and the devnet trained on the CPU: {s}"
            );
            assert_eq!(gpu_units, 0, "{s}");
        }
    }
}

/// Certain by construction: the cheater holds the first unit (the honest trainers start only once
/// it does), it fakes every segment (so any audited segment exposes it), and the honest trainers
/// finish the job.
#[test]
fn devnet_catches_and_slashes_a_cheater() {
    let s = devnet(&["--cheaters", "1"]);
    assert_eq!(s["job_status"], "completed");
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.95, "{s}");
    assert!(s["rejected_results"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["rejected_honest_results"], 0, "{s}");
    assert!(s["cheaters_slashed"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["trainers_slashed"], s["cheaters_slashed"], "{s}");
    assert_trained_where_it_says(&s);
}

/// A validator signs a second header for one of its rounds and sends it to one peer. That peer
/// holds both headers the moment the second arrives: it files the evidence from its account, the
/// ledger slashes the double signer (and only it), and consensus and the job go on.
#[test]
fn devnet_slashes_a_double_signing_validator() {
    let s = devnet(&["--equivocators", "1"]);
    assert_eq!(s["job_status"], "completed", "{s}");
    assert_eq!(s["validators_slashed"], 1, "{s}");
    assert_eq!(s["trainers_slashed"], 0.0, "{s}");
}

/// Certain by construction: the cheater holds the first unit, and its panel is the only two
/// evaluators on the ledger when the panel is drawn, one lazy (it replays nothing and accepts)
/// and one honest (it rejects). The split goes to dispute, not to a fresh draw; the challenger
/// names a faked segment, the cheater cannot defend its chain, and loses: its collateral and the
/// lazy evaluator's accept are slashed. The other evaluators start after, and the job finishes.
#[test]
fn devnet_catches_a_lazy_evaluator_in_a_dispute() {
    let s = devnet(&["--cheaters", "1", "--lazy-evaluators", "1"]);
    assert_eq!(s["job_status"], "completed");
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.95, "{s}");
    assert!(s["disputes"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["evaluators_slashed"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["cheaters_slashed"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["trainers_slashed"], s["cheaters_slashed"], "{s}");
    assert_eq!(s["rejected_honest_results"], 0, "{s}");
}

/// Certain by construction: the first panel is one colluding evaluator (it rejects everything)
/// and one honest one. The split goes to dispute; the colluder names a segment and claims it
/// ends elsewhere; the honest trainer opens its chain, and the validators replay the disputed
/// step from the state both sides agree on: the trainer wins, the colluder is slashed, and a
/// fresh panel certifies the work. No trainer loses anything.
#[test]
fn devnet_defeats_a_colluding_evaluator_at_the_referee() {
    let s = devnet(&["--colluding-evaluators", "1"]);
    assert_eq!(s["job_status"], "completed");
    assert!(s["disputes"].as_u64().unwrap() >= 1, "{s}");
    let outcomes = s["dispute_outcomes"].as_array().expect("dispute outcomes");
    assert!(!outcomes.is_empty(), "{s}");
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "trainer_wins"),
        "{s}"
    );
    assert!(s["evaluators_slashed"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["trainers_slashed"], 0.0, "{s}");
    assert_eq!(s["rejected_results"], 0, "{s}");
}

/// Certain by construction: every unit is planted once (rate 1,000,000 ppm), and the first
/// panel is the lazy evaluator and an honest one. The honest trainer of the first unit plants a
/// provably wrong last segment; the lazy evaluator accepts it without replaying, the honest one
/// rejects it; the seal opens and the lazy one is slashed (the trainer is its reporter). Every
/// trainer then submits its true result, and the job completes; no trainer loses anything.
#[test]
fn devnet_catches_a_lazy_evaluator_with_a_planted_fault() {
    let s = devnet(&["--lazy-evaluators", "1", "--plant-rate-ppm", "1000000"]);
    assert_eq!(s["job_status"], "completed");
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.95, "{s}");
    assert!(s["plants"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["plants_accepted"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["evaluators_slashed"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["trainers_slashed"], 0.0, "{s}");
    assert_eq!(s["rejected_results"], 0, "{s}");
}

/// `--job lm`: a byte-level transformer language model trained through the whole network on the
/// fortunes corpus; evaluators certify its held-out loss by replaying audited segments exactly.
#[test]
fn devnet_trains_a_language_model() {
    let s = devnet(&["--job", "lm"]);
    assert_eq!(s["job_status"], "completed", "{s}");
    let loss = s["held_out_loss"].as_f64().unwrap();
    assert!(loss > 0.0 && loss <= 2.6, "{s}");
    let bits = s["held_out_bits_per_token"].as_f64().unwrap();
    assert!((bits - loss / std::f64::consts::LN_2).abs() < 1e-9, "{s}");
    assert_eq!(s["model_parameters"], 120_576, "{s}");
    assert!(s["rounds"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["rejected_results"], 0, "{s}");
    assert_eq!(s["trainers_slashed"], 0.0, "{s}");
    // Transformers train on the CPU executor (no device kernels for them yet), device or not.
    let devices = s["devices"].as_array().unwrap();
    assert!(
        !devices.is_empty() && devices.iter().all(|d| d["device"] == "cpu"),
        "{s}"
    );
}
