//! The gateway of a running devnet: status, metrics, jobs, accounts, workers, datasets, the
//! OpenAPI document (every documented path is served), and clear errors for bad input.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::free_port;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_with(port, method, path, "", body)
}

/// One HTTP/1.1 request with extra header lines (each ending in CRLF); returns (status, body).
fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    // Decode a chunked body.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut b = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            b.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        b
    } else {
        rest.to_string()
    };
    Some((status, body))
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, "").expect("the gateway answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Reads a Server-Sent Events stream until the server closes it: (event, data) pairs.
fn sse(port: u16, path: &str) -> Vec<(String, serde_json::Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    // Events are single lines of `event:` and `data:`, so chunk framing can be read around.
    let mut events = Vec::new();
    let mut event = None;
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = Some(e.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            let e = event.take().expect("data follows its event");
            events.push((e, serde_json::from_str(d).unwrap()));
        }
    }
    events
}

/// The receipt of a transaction, once it executed (a deadline, not a fixed wait).
fn wait_for_receipt(port: u16, tx_hash: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = http(port, "GET", &format!("/v1/transactions/{tx_hash}"), "")
            .expect("the gateway answers");
        if status == 200 {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no receipt for {tx_hash}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the owner signs to download a job's weights (the gateway's `weights_request_message`).
fn weights_request_message(job: u64, time_ms: u64) -> Vec<u8> {
    let mut m = b"trainmesh/weights/v1/trainmesh-devnet\0".to_vec();
    m.extend_from_slice(&job.to_le_bytes());
    m.extend_from_slice(&time_ms.to_le_bytes());
    m
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A job spec like the one in `job` (as the API shows it), to vary.
fn last_spec(view: &serde_json::Value) -> trainmesh_contracts::jobs::JobSpec {
    serde_json::from_value(view["job"]["spec"].clone()).unwrap()
}

#[test]
fn gateway_serves_the_devnet() {
    let port = free_port();
    let _devnet = common::devnet(port);
    let deadline = Instant::now() + Duration::from_secs(300);
    // The demo job completes and shows up with its units.
    let job = loop {
        if let Some((200, body)) = http(port, "GET", "/v1/jobs", "") {
            let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(j) = jobs.as_array().and_then(|a| a.first()) {
                if j["state"] == "Completed" {
                    break j.clone();
                }
            }
        }
        assert!(Instant::now() < deadline, "the job did not complete");
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = job["id"].as_u64().unwrap();
    // The devnet researcher's key: it owns the demo job.
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("researcher.key");
    let researcher = blake3::hash(b"trainmesh/devnet-key/researcher");
    std::fs::write(&keyfile, researcher.to_hex().as_str()).unwrap();
    let detail = json(port, &format!("/v1/jobs/{id}"));
    assert!(detail["units"].as_array().unwrap().len() >= 2, "{detail}");
    let status = json(port, "/v1/status");
    assert_eq!(status["chain_id"], "trainmesh-devnet");
    assert!(status["height"].as_u64().unwrap() > 0);
    assert!(json(port, "/v1/workers").as_array().unwrap().len() >= 5);
    assert_eq!(json(port, "/v1/datasets").as_array().unwrap().len(), 1);
    let owner = job["owner"].as_str().unwrap();
    let account = json(port, &format!("/v1/accounts/{owner}"));
    assert!(
        account["account"]["nonce"].as_u64().unwrap() >= 1,
        "{account}"
    );

    let (s, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(s, 200);
    for series in [
        "trainmesh_consensus_commits_total",
        "trainmesh_ledger_height",
        "trainmesh_mempool_transactions_total",
        "trainmesh_consensus_commit_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }

    // The trained weights, to the job's owner only: unsigned, signed by another account,
    // signed long ago — refused; signed by the owner — safetensors whose BLAKE3 is the
    // certified checkpoint.
    let weights_path = format!("/v1/jobs/{id}/weights");
    let (s, body) = http(port, "GET", &weights_path, "").unwrap();
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature_required"), "{body}");
    let owner_key = trainmesh_ledger::AccountKey::from_secret(*researcher.as_bytes());
    let now_ms = wall_clock_ms();
    let signed_get = |key: &trainmesh_ledger::AccountKey, time: u64| {
        let message = weights_request_message(id, time);
        let headers = format!(
            "X-Trainmesh-Key: {}\r\nX-Trainmesh-Time: {time}\r\nX-Trainmesh-Signature: {}\r\n",
            hex(&key.public_key()),
            hex(&key.sign_message(&message))
        );
        http_with(port, "GET", &weights_path, &headers, "").unwrap()
    };
    let stranger_key = trainmesh_ledger::AccountKey::from_seed(4242);
    let (s, body) = signed_get(&stranger_key, now_ms);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not_owner"), "{body}");
    let (s, body) = signed_get(&owner_key, now_ms - 3_600_000);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("stale_request"), "{body}");
    let (s, weights) = signed_get(&owner_key, now_ms);
    assert_eq!(s, 200);
    assert!(weights.len() > 1_000, "{} bytes", weights.len());

    // Why a trainer was paid: each payment names its certificate.
    let certified_trainer = detail["units"][0]["trainer"].as_str().unwrap().to_string();
    let h = json(port, &format!("/v1/accounts/{certified_trainer}/history"));
    let paid = h["history"].as_array().unwrap();
    assert!(
        paid.iter()
            .any(|e| e["kind"] == "payment"
                && e["reason"]["TrainerShare"]["certificate"].is_string()),
        "{h}"
    );

    // The job CLI on top of the gateway.
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
            .arg("job")
            .args(args)
            .args([
                "--gateway",
                &format!("http://127.0.0.1:{port}"),
                "--id",
                &id.to_string(),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "job {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    assert_eq!(cli(&["status"])["job_status"], "completed");
    assert_eq!(cli(&["wait"])["job_status"], "completed");
    let file = dir.path().join("weights.safetensors");
    let d = cli(&[
        "download",
        "--out",
        file.to_str().unwrap(),
        "--key",
        keyfile.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(d["blake3"], blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(
        d["blake3"], job["latest_checkpoint"],
        "the certified checkpoint"
    );

    // A data provider's path: prepare shards, upload them, attach the dataset (signed here).
    let gateway = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    let shards = dir.path().join("shards");
    let prepared = run(&[
        "dataset",
        "prepare",
        "--dataset",
        "digits",
        "--name",
        "digits-again",
        "--seed",
        "5",
        "--out",
        shards.to_str().unwrap(),
    ]);
    assert_eq!(prepared["features"], 64);
    let attached = run(&[
        "dataset",
        "attach",
        "--dir",
        shards.to_str().unwrap(),
        "--key",
        keyfile.to_str().unwrap(),
        "--gateway",
        &gateway,
    ]);
    let dataset = attached["dataset"].as_u64().unwrap();
    assert_eq!(
        json(port, &format!("/v1/datasets/{dataset}"))["spec"]["name"],
        "digits-again"
    );
    let tx_hash = attached["tx_hash"].as_str().unwrap();
    let receipt = json(port, &format!("/v1/transactions/{tx_hash}"));
    assert_eq!(receipt["status"], "executed", "{receipt}");

    // A researcher's job on it, submitted through the gateway and followed as a stream.
    let submitted = run(&[
        "job",
        "submit",
        "--key",
        keyfile.to_str().unwrap(),
        "--gateway",
        &gateway,
        "--dataset",
        &dataset.to_string(),
    ]);
    let job2 = submitted["job"].as_u64().unwrap();
    let events = sse(port, &format!("/v1/jobs/{job2}/events"));
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.0, "end", "{events:?}");
    assert!(rest.iter().all(|(e, _)| e == "job"), "{events:?}");
    assert_eq!(last.1["job"]["state"], "Completed", "{}", last.1);
    assert_eq!(last.1["job"]["spec"]["dataset"], dataset);
    let done: Vec<u64> = events
        .iter()
        .map(|(_, v)| v["job"]["units_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(
        events
            .iter()
            .any(|(_, v)| v["units"][0]["state"].to_string().contains("Certified")),
        "the stream showed a certified unit: {events:?}"
    );

    // Dry runs refuse what execution would, with the contract's reason.
    let key = trainmesh_ledger::AccountKey::from_secret(*researcher.as_bytes());
    let nonce = json(port, &format!("/v1/accounts/{}", key.address().to_hex()))["account"]["nonce"]
        .as_u64()
        .unwrap();
    let job_call = |model: &str, budget_train: u64| trainmesh_contracts::Call::SubmitJob {
        spec: trainmesh_contracts::jobs::JobSpec {
            model: model.into(),
            budget: trainmesh_contracts::Amount::from_train(budget_train),
            ..last_spec(&last.1)
        },
    };
    let good_model = last.1["job"]["spec"]["model"].as_str().unwrap().to_string();
    let submit = |tx: trainmesh_ledger::SignedTransaction| -> (u16, String) {
        let body = format!(r#"{{"transaction":"{}"}}"#, hex(&tx.encode()));
        let (s, b) = http(port, "POST", "/v1/transactions", &body).unwrap();
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        (s, v["code"].as_str().unwrap_or_default().to_string())
    };
    let chain = "trainmesh-devnet";
    // Signed as a client does: valid for ten minutes from now.
    let soon = wall_clock_ms() + 600_000;
    let signed =
        |k: &trainmesh_ledger::AccountKey,
         nonce: u64,
         fee: trainmesh_contracts::Amount,
         call: trainmesh_contracts::Call| { k.sign_until(chain, nonce, fee, soon, call) };
    let fee = trainmesh_contracts::Amount(
        json(port, "/v1/status")["min_fee"]
            .as_str()
            .expect("the status reports the minimum fee")
            .parse()
            .unwrap(),
    );
    assert_eq!(
        submit(signed(&key, nonce, fee, job_call(&good_model, 10_000_000))),
        (402, "insufficient_balance".into())
    );
    assert_eq!(
        submit(signed(&key, nonce, fee, job_call(r#"{"kind":"mlp"}"#, 10))),
        (400, "bad_spec".into())
    );
    // A valid model of the wrong shape for the dataset (784 inputs; the digits have 64).
    assert_eq!(
        submit(signed(
            &key,
            nonce,
            fee,
            job_call(r#"{"kind":"logistic","input":784,"classes":10}"#, 10)
        )),
        (400, "bad_spec".into())
    );
    let stranger = trainmesh_ledger::AccountKey::from_seed(77);
    assert_eq!(
        submit(signed(&stranger, 0, fee, job_call(&good_model, 10))),
        (402, "insufficient_balance".into())
    );
    assert_eq!(
        submit(signed(&key, nonce - 1, fee, job_call(&good_model, 10))),
        (409, "nonce_replayed".into())
    );
    // Free spam: no fee, a fee under the minimum, a transaction already expired, or one that
    // would wait in the mempool for days.
    let transfer = |amount: u128| trainmesh_contracts::Call::Transfer {
        to: stranger.address(),
        amount: trainmesh_contracts::Amount(amount),
    };
    let zero = trainmesh_contracts::Amount::ZERO;
    assert_eq!(
        submit(signed(&key, nonce, zero, transfer(1))),
        (400, "fee_too_low".into())
    );
    assert_eq!(
        submit(signed(
            &key,
            nonce,
            trainmesh_contracts::Amount(fee.0 - 1),
            transfer(1)
        )),
        (400, "fee_too_low".into())
    );
    assert_eq!(
        submit(key.sign_until(chain, nonce, fee, 1_000, transfer(1))),
        (400, "expired".into())
    );
    let in_a_week = wall_clock_ms() + 7 * 86_400_000;
    assert_eq!(
        submit(key.sign_until(chain, nonce, fee, in_a_week, transfer(1))),
        (400, "expiry_too_far".into())
    );
    // A zero transfer would create an account for nothing: the dry run refuses it.
    assert_eq!(
        submit(signed(&key, nonce, fee, transfer(0))),
        (400, "contract_error".into())
    );
    // One transaction per nonce: the same one again is taken (and proposed once), another
    // for the same nonce is refused while the first is pending.
    let once = signed(&key, nonce, fee, transfer(1));
    assert_eq!(submit(once.clone()).0, 202);
    // Taken again, or already committed (a race this test does not control).
    let again = submit(once.clone());
    assert!(
        again.0 == 202 || again == (409, "nonce_replayed".into()),
        "{again:?}"
    );
    let other = signed(&key, nonce, fee, transfer(2));
    let (s, code) = submit(other);
    assert!(
        (s, code.as_str()) == (409, "nonce_taken") || (s, code.as_str()) == (409, "nonce_replayed"),
        "{s} {code}"
    );
    let receipt = wait_for_receipt(port, &hex(&once.hash()));
    assert_eq!(receipt["status"], "executed", "{receipt}");
    assert_eq!(receipt["fee_paid"], fee.0.to_string(), "{receipt}");
    assert_eq!(
        submit(once),
        (409, "nonce_replayed".into()),
        "a committed transaction is not taken again"
    );

    // Every documented GET path is served.
    let doc = json(port, "/v1/openapi.json");
    for (path, methods) in doc["paths"].as_object().unwrap() {
        if methods.get("get").is_some() {
            let p = path
                .replace("{id}", &id.to_string())
                .replace("{address}", owner)
                .replace("{hash}", tx_hash);
            let (s, body) = http(port, "GET", &p, "").unwrap();
            // The weights need the owner's signature (served signed above).
            let expected = if path.ends_with("/weights") { 401 } else { 200 };
            assert_eq!(s, expected, "{p}: {body}");
        }
    }

    // Bad input: clear JSON errors, nothing crashes.
    let error = |method: &str, path: &str, body: &str| -> (u16, String) {
        let (s, b) = http(port, method, path, body).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"));
        (s, v["code"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(error("GET", "/v1/nowhere", ""), (404, "not_found".into()));
    assert_eq!(
        error("GET", "/v1/jobs/999999", ""),
        (404, "not_found".into())
    );
    assert_eq!(
        error("GET", "/v1/accounts/xyz", ""),
        (400, "bad_address".into())
    );
    assert_eq!(
        error("POST", "/v1/transactions", r#"{"transaction":"zz"}"#),
        (400, "bad_encoding".into())
    );
    assert_eq!(
        error("POST", "/v1/transactions", "{not json"),
        (400, "bad_json".into())
    );
    let (s, code) = error("POST", "/v1/transactions", r#"{"transaction":"0102"}"#);
    assert_eq!(s, 400, "{code}");
    assert!(!code.is_empty());
    let huge = format!(r#"{{"transaction":"{}"}}"#, "00".repeat(400_000));
    assert_eq!(
        error("POST", "/v1/transactions", &huge),
        (413, "body_too_large".into())
    );
    assert_eq!(error("GET", "/v1/jobs/abc", ""), (400, "bad_path".into()));
    assert_eq!(
        error("GET", "/v1/transactions/00", ""),
        (400, "bad_hash".into())
    );
    assert_eq!(
        error("GET", &format!("/v1/transactions/{}", "ab".repeat(32)), ""),
        (404, "unknown_transaction".into())
    );
    // An upload must be signed by its provider (whose balance bounds what it keeps here).
    assert_eq!(
        error("POST", "/v1/datasets/shards?split=train", "not a shard"),
        (401, "signature_required".into())
    );
    assert_eq!(
        error("POST", "/v1/datasets/shards?split=sideways", "x"),
        (400, "bad_query".into())
    );
    assert_eq!(
        error(
            "POST",
            "/v1/datasets/shards?split=train",
            &"x".repeat(5 << 20)
        ),
        (413, "body_too_large".into())
    );
    assert_eq!(
        error(
            "POST",
            "/v1/datasets/manifests",
            &format!(
                r#"{{"name":"n","features":64,"classes":10,"train":["{}"],"heldout":["{}"],"provider":"{}","signature":"{}"}}"#,
                "ab".repeat(32),
                "cd".repeat(32),
                "ef".repeat(32),
                "01".repeat(64)
            )
        ),
        (404, "unknown_shard".into())
    );
    let (s, m) = http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(s, 200);
    assert!(
        m.contains(r#"trainmesh_gateway_requests_total{route="/v1/datasets/shards",status="201""#),
        "gateway requests by route and status"
    );
    // Still serving.
    assert_eq!(json(port, "/v1/status")["chain_id"], "trainmesh-devnet");
}
