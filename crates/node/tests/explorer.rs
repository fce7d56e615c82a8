//! The explorer in headless Chromium (Debian `chromium`, installed by the README's test command)
//! against a running devnet: the page loads without console errors, the DAG view and the loss
//! curve render, a job the test submits through the gateway appears with its curve, and a
//! screenshot is saved (`<target dir>/explorer.png`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{free_port, get};
use std::time::{Duration, Instant};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Where test artifacts go: the target directory.
fn artifact(name: &str) -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_trainmesh"));
    exe.parent().and_then(|p| p.parent()).unwrap().join(name)
}

#[test]
fn explorer_renders_the_devnet_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (./scripts/test.sh installs it)"
        );
        eprintln!("skipped: chromium is not installed (./scripts/test.sh installs it)");
        return;
    };
    let port = free_port();
    let _devnet = common::devnet(port);
    // The devnet's demo job makes progress; then this test submits a second job through the
    // gateway, signed with the devnet researcher's key, and waits for its first certificate.
    let deadline = Instant::now() + Duration::from_secs(300);
    let job_done = |id: u64, units: u64| {
        get(port, &format!("/v1/jobs/{id}")).is_some_and(|b| {
            serde_json::from_str::<serde_json::Value>(&b)
                .is_ok_and(|v| v["job"]["units_done"].as_u64() >= Some(units))
        })
    };
    // The demo job finishes (and its unspent budget is refunded to the researcher).
    while !get(port, "/v1/jobs/1").is_some_and(|b| b.contains("\"state\":\"Completed\"")) {
        assert!(Instant::now() < deadline, "the demo job did not complete");
        std::thread::sleep(Duration::from_millis(200));
    }
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        blake3::hash(b"trainmesh/devnet-key/researcher")
            .to_hex()
            .as_str(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
        .args([
            "job",
            "submit",
            "--gateway",
            &format!("http://127.0.0.1:{port}"),
        ])
        .arg("--key")
        .arg(key.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "job submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let submitted: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let job = submitted["job"].as_u64().unwrap();
    assert_eq!(job, 2, "{submitted}");
    while !job_done(job, 1) {
        assert!(
            Instant::now() < deadline,
            "the submitted job made no progress"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let out = Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=8000",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (dom, log) = run(&["--dump-dom".to_string()]);
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("ERROR")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:#?}"
    );
    assert!(
        dom.contains("trainmesh explorer"),
        "the page did not load:\n{dom}"
    );
    assert!(
        dom.contains("trainmesh-devnet"),
        "the overview did not render"
    );
    assert!(
        dom.contains("class=\"leader\""),
        "no committed leader in the DAG view"
    );
    assert!(
        dom.contains("class=\"cert\""),
        "no certificates in the DAG view"
    );
    assert!(
        dom.contains("<polyline") && dom.contains("class=\"loss\""),
        "no loss curve"
    );
    assert!(
        dom.contains(&format!("Job {job}:")),
        "the job submitted during the test does not appear with its curve"
    );
    assert!(
        dom.contains("TrainerShare") && dom.contains("EvaluatorShare"),
        "no payment reasons"
    );
    assert!(
        dom.contains("Trainer") && dom.contains("Evaluator"),
        "no workers"
    );
    assert!(
        dom.contains("Validators (paid") && dom.contains("100000</td>"),
        "no validators with their committee stake"
    );
    assert!(
        dom.contains("href=\"#account="),
        "addresses do not link to their accounts"
    );

    // Any account, by address: balance, and every payment with its reason (here the refund of the
    // researcher's unspent budget).
    let researcher = trainmesh_ledger::AccountKey::from_secret(
        *blake3::hash(b"trainmesh/devnet-key/researcher").as_bytes(),
    )
    .address()
    .to_hex();
    let account_url = format!("{url}#account={researcher}");
    let out = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&account_url)
        .output()
        .unwrap();
    let account_dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        account_dom.contains(&researcher),
        "the account view did not render"
    );
    assert!(
        account_dom.contains("Refund"),
        "the researcher's refund is not shown with its reason"
    );

    let png = artifact("explorer.png");
    let _ = std::fs::remove_file(&png);
    run(&[format!("--screenshot={}", png.display())]);
    let meta = std::fs::metadata(&png).expect("a screenshot was saved");
    assert!(meta.len() > 10_000, "screenshot of {} bytes", meta.len());
    println!("screenshot: {}", png.display());
}
