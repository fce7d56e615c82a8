//! The multi-process testnet of `ops/testnet/testnet.sh`: every node is its own `trainmesh node`
//! process on loopback. While the demo job runs, one validator is killed with SIGKILL and
//! restarted: the job completes, and the restarted validator's state roots equal the others'.
//! Then a fifth node starts late, syncs, and agrees.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_trainmesh");

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/testnet/testnet.sh")
}

fn start_node(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .unwrap();
    Command::new(BIN)
        .args(["node", "--config", "node.toml"])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("a node starts")
}

/// Height → state root from a node's status file (empty until it writes one).
fn roots(dir: &Path) -> BTreeMap<u64, String> {
    let Ok(text) = std::fs::read_to_string(dir.join("data/status.json")) else {
        return BTreeMap::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return BTreeMap::new();
    };
    v["roots"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn height(dir: &Path) -> u64 {
    roots(dir).keys().next_back().copied().unwrap_or(0)
}

fn wait_until(what: &str, deadline: Instant, mut f: impl FnMut() -> bool) {
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every height both nodes reached after `from` has the same root in both; at least `min` of them.
fn agree(a: &Path, b: &Path, from: u64, min: usize) -> bool {
    let (ra, rb) = (roots(a), roots(b));
    let mut common = 0;
    for (h, root) in ra.range(from..) {
        if let Some(other) = rb.get(h) {
            assert_eq!(
                root,
                other,
                "{} and {} differ at height {h}",
                a.display(),
                b.display()
            );
            common += 1;
        }
    }
    common >= min
}

struct Nodes(Vec<(PathBuf, Child)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("node.log")) {
            let tail: Vec<&str> = t.lines().rev().take(15).collect();
            out += &format!("--- {}\n", e.path().display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
    }
    out
}

#[test]
fn testnet_survives_a_killed_validator_and_a_late_joiner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = Command::new(script())
        .args(["init", dir.to_str().unwrap(), "4", "2", "2"])
        .env("TRAINMESH", BIN)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let mut nodes = Nodes(Vec::new());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("node.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        let d = dir.join(n);
        let child = start_node(&d);
        nodes.0.push((d, child));
    }
    let node_dir = |name: &str| dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(300);

    // The researcher submits the demo job and follows it (stderr tells when it was committed).
    let mut submit = Command::new(script())
        .args(["submit", dir.to_str().unwrap()])
        .env("TRAINMESH", BIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = submit.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut client_log = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let submitted = l.contains("submitted");
                client_log.push(l);
                if submitted {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the client stopped: {client_log:?}\n{}", logs(dir))
            }
        }
        assert!(
            Instant::now() < deadline,
            "job not submitted: {client_log:?}\n{}",
            logs(dir)
        );
    }

    // Kill validator-3 while the job runs; the others go on without it; restart it.
    let v3 = names.iter().position(|n| n == "validator-3").unwrap();
    nodes.0[v3].1.kill().unwrap();
    nodes.0[v3].1.wait().unwrap();
    let killed_at = height(&node_dir("validator-0"));
    wait_until("progress without validator-3", deadline, || {
        height(&node_dir("validator-0")) >= killed_at + 10
    });
    nodes.0[v3].1 = start_node(&node_dir("validator-3"));
    let restarted_at = height(&node_dir("validator-0"));

    let out = submit.wait_with_output().unwrap();
    for l in rx.try_iter() {
        client_log.push(l);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "job: {stdout}\n{client_log:?}\n{}",
        logs(dir)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("{summary}");
    assert_eq!(summary["job_status"], "completed", "{summary}");
    assert!(summary["test_accuracy"].as_f64().unwrap() >= 0.95);

    // The restarted validator caught up and agrees with the others.
    for other in ["validator-0", "validator-1", "validator-2"] {
        wait_until("validator-3 to agree after its restart", deadline, || {
            agree(&node_dir("validator-3"), &node_dir(other), restarted_at, 20)
        });
    }

    // A fifth node, started late, syncs from the committee and agrees.
    let late = dir.join("late");
    std::fs::create_dir_all(&late).unwrap();
    let bootstrap = std::fs::read_to_string(dir.join("bootstrap")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        late.join("node.toml"),
        format!(
            "name = \"late\"\ndata_dir = \"data\"\ngenesis = \"../genesis.json\"\n\
             listen = \"/ip4/127.0.0.1/tcp/{port}\"\naccount_key = \"../keys/researcher.key\"\n\
             bootstrap = [{}]\n",
            bootstrap.trim()
        ),
    )
    .unwrap();
    let child = start_node(&late);
    nodes.0.push((late.clone(), child));
    let now = height(&node_dir("validator-0"));
    wait_until("the late node to catch up", deadline, || {
        height(&late) >= now
    });
    wait_until("the late node to agree", deadline, || {
        agree(&late, &node_dir("validator-0"), 1, 20)
    });
}
