//! The real Prometheus server (Debian `prometheus`, installed by the README's test command)
//! scrapes a devnet with `ops/prometheus/prometheus.yml`, and its HTTP API returns trainmesh
//! series.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

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
    let _devnet = Killed(
        Command::new(env!("CARGO_BIN_EXE_trainmesh"))
            .args(["devnet", "--gateway", &format!("127.0.0.1:{gateway}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
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
