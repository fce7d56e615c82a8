//! `trainmesh gpu check`: the adapter, its conformance and measured throughput, in one JSON line.

use std::process::Command;

#[test]
fn gpu_check_reports_conformance_and_measured_throughput() {
    let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
        .args(["gpu", "check"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert!(v["cpu_train_samples_per_s"].as_f64().unwrap() > 0.0);
    if v["adapter"].is_null() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and no GPU adapter is usable: {}",
            v["reason"]
        );
        assert_eq!(v["train_on"], "cpu");
        println!("SKIPPED the device part: {}", v["reason"]);
        return;
    }
    let conformance = &v["conformance"];
    assert_eq!(conformance["passed"], true, "{conformance}");
    assert_eq!(v["eligible"], true);
    assert!(conformance["cases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["got"] == c["expected"]));
    assert!(v["device_gflops"].as_f64().unwrap() > 0.0);
    let device = v["device_train_samples_per_s"].as_f64().unwrap();
    let cpu = v["cpu_train_samples_per_s"].as_f64().unwrap();
    // The faster path, measured, with the reason.
    let want = if device >= cpu { "device" } else { "cpu" };
    assert_eq!(v["train_on"], want, "{last}");
    assert!(v["reason"].as_str().unwrap().contains("samples/s"));
}
