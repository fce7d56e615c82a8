//! The phases of a devnet run that wait on the ledger: every worker registered, the job
//! submitted and executed, a cheater holding the first unit, the job followed to its end.

use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use trainmesh_actors::coordinator::GetStatus;
use trainmesh_actors::node::NodeHandle;
use trainmesh_actors::provider::{AttachedDataset, DataProvider};
use trainmesh_actors::wallet::{Submitter, Wallet};
use trainmesh_contracts::jobs::{Job, JobSpec, JobState, Unit, UnitState};
use trainmesh_contracts::workers::Worker;
use trainmesh_contracts::{keys as state_keys, Address, Call, DatasetId, Event, JobId, UnitId};

/// Waits until every address in `workers` is a registered (hence bonded: registration bonds in
/// the same transaction) worker on `n`'s ledger, and the provider's dataset is attached.
pub(super) async fn wait_for_workers(
    n: &NodeHandle,
    provider: &Addr<DataProvider>,
    workers: &[Address],
    deadline: Instant,
) -> anyhow::Result<DatasetId> {
    loop {
        let missing = {
            let l = n.ledger.read().expect("ledger lock");
            let mut missing = 0;
            for a in workers {
                if l.read::<Worker>(&state_keys::worker(a))?.is_none() {
                    missing += 1;
                }
            }
            missing
        };
        let attached = provider.send(AttachedDataset).await?;
        if let (0, Some(d)) = (missing, attached) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!(
                "workers or dataset not on the ledger in time ({missing} of {} workers unregistered, dataset attached: {})",
                workers.len(),
                attached.is_some()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How often the devnet reads the ledger while it waits.
const POLL: Duration = Duration::from_millis(100);
/// A job submission not executed after this long is sent again.
const RESUBMIT_AFTER: Duration = Duration::from_secs(8);

/// Submits the demo job and waits until it executes; returns its id. While it does not show,
/// the same signed transaction is sent again: one nonce, so at most one copy ever commits, and no
/// copy can take a nonce the researcher's later transactions use.
pub(super) async fn submit_job(
    n: &NodeHandle,
    researcher: &[u8; 32],
    chain_id: &str,
    spec: &JobSpec,
    deadline: Instant,
) -> anyhow::Result<JobId> {
    let submitter = Submitter::Local(n.coordinator.clone().expect("validator").recipient());
    let wallet = Wallet::new(*researcher, chain_id.into(), submitter.clone());
    let mut scanned = n.ledger.read().expect("ledger lock").height();
    let tx = wallet
        .sign_next(&n.ledger, Call::SubmitJob { spec: spec.clone() })
        .map_err(|e| anyhow::anyhow!("signing the job: {e}"))?;
    let mut sent: Option<Instant> = None;
    loop {
        if sent.is_none_or(|t| t.elapsed() > RESUBMIT_AFTER) {
            sent = Some(Instant::now());
            // Once it committed, a resend is a replay: the receipts below show it.
            match submitter.submit(vec![tx.encode()]).await {
                Err(e) if e.code != "nonce_replayed" => {
                    anyhow::bail!("submitting the job: {e}")
                }
                _ => {}
            }
        }
        tokio::time::sleep(POLL).await;
        let l = n.ledger.read().expect("ledger lock");
        for height in scanned + 1..=l.height() {
            for r in l.receipts(height)? {
                if r.tx_hash != Some(tx.hash()) {
                    continue;
                }
                let events = r.outcome.map_err(|e| {
                    anyhow::anyhow!("the job was refused: {} ({})", e.message, e.code)
                })?;
                return events
                    .iter()
                    .find_map(|e| match e {
                        Event::JobSubmitted { job, .. } => Some(*job),
                        _ => None,
                    })
                    .context("the job's receipt holds no JobSubmitted event");
            }
        }
        scanned = l.height();
        drop(l);
        if Instant::now() > deadline {
            bail!("the job was not committed in time");
        }
    }
}

/// Polls the job's first unit until `ready` says what it waited for; past `deadline`, fails
/// with `timed_out`.
async fn wait_for_first_unit<T>(
    n: &NodeHandle,
    job: JobId,
    deadline: Instant,
    timed_out: &str,
    ready: impl Fn(&Unit) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let first = UnitId { job, index: 0 };
    loop {
        let unit = n
            .ledger
            .read()
            .expect("ledger lock")
            .read::<Unit>(&state_keys::unit(first))?;
        if let Some(found) = unit.as_ref().map(&ready).transpose()?.flatten() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{timed_out}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the job's first unit is assigned, and checks that a cheater holds it (it must:
/// the cheaters are the only trainers on the ledger yet). Returns the cheater.
pub(super) async fn wait_for_cheater(
    n: &NodeHandle,
    job: JobId,
    cheaters: &[Address],
    deadline: Instant,
) -> anyhow::Result<Address> {
    wait_for_first_unit(
        n,
        job,
        deadline,
        "no cheater was assigned the first unit in time",
        |u| match (u.state, u.trainer) {
            (UnitState::Assigned, Some(t)) if !cheaters.contains(&t) => {
                bail!("unit 0 went to {t}, who is not a cheater")
            }
            (UnitState::Assigned, Some(t)) => Ok(Some(t)),
            _ => Ok(None),
        },
    )
    .await
}

/// Waits until the job's first unit has its first panel of evaluators (drawn when its result
/// was submitted).
pub(super) async fn wait_for_panel(
    n: &NodeHandle,
    job: JobId,
    deadline: Instant,
) -> anyhow::Result<()> {
    wait_for_first_unit(
        n,
        job,
        deadline,
        "the first unit's panel was not drawn in time",
        |u| Ok((u.result.is_some() && !u.evaluators.is_empty()).then_some(())),
    )
    .await
}

/// Follows the job with a progress bar until it leaves `Running`.
pub(super) async fn follow(
    n: &NodeHandle,
    id: JobId,
    units_total: u64,
    deadline: Instant,
    timeout_s: u64,
) -> anyhow::Result<Job> {
    let bar = ProgressBar::new(units_total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} units  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    loop {
        let round = n
            .coordinator
            .as_ref()
            .expect("validator")
            .send(GetStatus)
            .await?
            .last_committed_round
            .0;
        let (job, unit) = job_and_unit(n, id)?;
        bar.set_position(job.units_done as u64);
        bar.set_message(progress(round, &job, unit.as_ref()));
        if job.state != JobState::Running {
            bar.finish();
            return Ok(job);
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!("the job did not finish in {timeout_s} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn progress(round: u64, job: &Job, unit: Option<&Unit>) -> String {
    let loss = unit
        .and_then(|u| u.result.as_ref())
        .and_then(|r| r.loss_trace_ppm.last())
        .map(|l| format!("{:.4}", *l as f64 / 1e6))
        .unwrap_or_else(|| "-".into());
    let acc = job
        .latest_metric_ppm
        .map(|m| format!("{:.4}", m as f64 / 1e6))
        .unwrap_or_else(|| "-".into());
    format!(
        "round {round} | job {} unit {} {} | loss {loss} | held-out acc {acc}",
        job.state.name(),
        job.current_unit,
        unit.map(|u| u.state.name()).unwrap_or("-"),
    )
}

/// A job and its current unit.
fn job_and_unit(n: &NodeHandle, id: JobId) -> anyhow::Result<(Job, Option<Unit>)> {
    let l = n.ledger.read().expect("ledger lock");
    let job = l
        .read::<Job>(&state_keys::job(id))?
        .with_context(|| format!("job {} is not on the ledger", id.0))?;
    let unit = l.read::<Unit>(&state_keys::unit(UnitId {
        job: id,
        index: job.current_unit,
    }))?;
    Ok((job, unit))
}
