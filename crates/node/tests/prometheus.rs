//! The real Prometheus server (Debian `prometheus`, installed by the README's test command)
//! scrapes a devnet with `ops/prometheus/prometheus.yml`, and its HTTP API returns trainmesh
//! series.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{free_port, get, Killed};
use std::time::{Duration, Instant};

#[test]
fn prometheus_scrapes_the_devnet() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed (./scripts/test.sh installs it)"
        );
        eprintln!("skipped: prometheus is not installed (./scripts/test.sh installs it)");
        return;
    }
    let gateway = free_port();
    let _devnet = common::devnet(gateway);
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/prometheus/prometheus.yml"),
    )
    .unwrap();
    assert!(shipped.contains("127.0.0.1:8080"));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        shipped.replace("127.0.0.1:8080", &format!("127.0.0.1:{gateway}")),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    for series in [
        "trainmesh_consensus_commits_total",
        "trainmesh_ledger_height",
        "trainmesh_training_steps_total",
    ] {
        loop {
            let answer = get(web, &format!("/api/v1/query?query={series}"));
            let found = answer
                .as_deref()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .is_some_and(|v| {
                    v["status"] == "success"
                        && v["data"]["result"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty())
                });
            if found {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus has no {series}: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
