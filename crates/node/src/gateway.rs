//! The HTTP gateway of a node: a versioned JSON API under `/v1` and Prometheus metrics at
//! `/metrics`. Writes are signed transactions only: the gateway never holds a user's key; it
//! checks a transaction's encoding, chain id and signature, then hands it to a validator's mempool.
//! Errors are JSON bodies `{ "code": ..., "message": ... }` with a stable code; bodies are
//! limited in size.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde::Serialize;
use trainmesh_actors::coordinator::{Coordinator, GetStatus};
use trainmesh_actors::ledger::SharedLedger;
use trainmesh_actors::wallet::Submitter;
use trainmesh_contracts::datasets::Dataset;
use trainmesh_contracts::jobs::{Job, Unit};
use trainmesh_contracts::workers::Worker;
use trainmesh_contracts::{keys as state_keys, Address, Call, DatasetId, JobId, UnitId};
use trainmesh_dag::RedbStore;
use trainmesh_ledger::{LedgerError, TRANSACTION_BYTES_MAX};

use crate::submission::{check_submission, Submission, SubmissionError, SubmitBody};
use crate::uploads::{ManifestRequest, Split, UploadError, Uploads};
use trainmesh_actors::metrics::GatewayMetrics;

/// The largest request body (a signed transaction, hex-encoded, in JSON).
pub const BODY_BYTES_MAX: usize = 2 * TRANSACTION_BYTES_MAX + 1_024;
/// The largest manifest body (two lists of hex hashes at the ledger's shard bound).
pub const MANIFEST_BODY_BYTES_MAX: usize = 2 * 70 * crate::uploads::MANIFEST_SHARDS_MAX + 4_096;
pub use crate::uploads::SHARD_UPLOAD_BYTES_MAX;
/// The most items a list returns.
pub const LIST_MAX: usize = 1_000;
/// Requests per second each client (IP address) may sustain, and its burst.
pub const CLIENT_RATE_PER_S: f64 = 100.0;
pub const CLIENT_BURST: f64 = 200.0;
/// Clients tracked at once (the least recently seen are forgotten first).
pub const CLIENTS_MAX: usize = 10_000;
/// Job event streams open at once.
pub const EVENT_STREAMS_MAX: usize = 256;
/// Job event streams one client (address) may hold open: no client takes every stream.
pub const EVENT_STREAMS_PER_CLIENT: usize = 8;

/// Event streams open per client; a slot frees itself when its stream ends.
#[derive(Clone, Debug, Default)]
pub struct ClientStreams(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One client's claim on an event stream.
#[derive(Debug)]
pub struct ClientSlot {
    streams: ClientStreams,
    client: std::net::IpAddr,
}

impl ClientStreams {
    /// A slot for `client`, unless it holds [`EVENT_STREAMS_PER_CLIENT`] already.
    pub fn acquire(&self, client: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self.0.lock().expect("streams lock");
        let n = open.entry(client).or_default();
        if *n >= EVENT_STREAMS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            streams: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().expect("streams lock");
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}
/// How often an event stream looks for a new ledger height, and how long it stays silent at most.
pub const EVENT_POLL: std::time::Duration = std::time::Duration::from_millis(200);
pub const EVENT_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Token buckets per client: `CLIENT_RATE_PER_S` sustained, `CLIENT_BURST` at once.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>,
}

impl RateLimiter {
    /// Whether `client` may make a request at `now` (and takes a token if so).
    pub fn allow(&mut self, client: std::net::IpAddr, now: std::time::Instant) -> bool {
        if self.buckets.len() >= CLIENTS_MAX && !self.buckets.contains_key(&client) {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.buckets.remove(&ip);
            }
        }
        let (tokens, last) = self.buckets.entry(client).or_insert((CLIENT_BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * CLIENT_RATE_PER_S;
        *tokens = (*tokens + refill).min(CLIENT_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the gateway serves from.
#[derive(Clone)]
pub struct Gateway {
    pub ledger: SharedLedger,
    /// The registries `/metrics` serves (a devnet: every node's, those started later too).
    pub registries: Arc<std::sync::RwLock<Vec<prometheus::Registry>>>,
    pub submitter: Submitter,
    pub coordinator: Option<actix::Addr<Coordinator<RedbStore>>>,
    pub chain_id: String,
    pub fetcher: trainmesh_actors::blobs::Fetcher,
    /// Dataset shards uploaded to this node.
    pub uploads: Uploads,
    /// Open event streams (each holds a permit), and per client.
    streams: Arc<tokio::sync::Semaphore>,
    client_streams: ClientStreams,
    metrics: GatewayMetrics,
}

impl Gateway {
    /// The gateway of a running node (its uploads live in `<data dir>/uploads`).
    pub fn of(n: &trainmesh_actors::node::NodeHandle, chain_id: &str) -> anyhow::Result<Gateway> {
        let uploads = Uploads::open(
            n.data_dir.join("uploads"),
            n.blobs.clone(),
            n.peer_id.to_string(),
            n.peer_signer.clone(),
        )?;
        Ok(Gateway {
            ledger: n.ledger.clone(),
            registries: Arc::new(std::sync::RwLock::new(vec![n.metrics.registry.clone()])),
            submitter: n.wallet.submitter().clone(),
            coordinator: n.coordinator.clone(),
            chain_id: chain_id.to_string(),
            fetcher: n.fetcher.clone(),
            uploads,
            streams: Arc::new(tokio::sync::Semaphore::new(EVENT_STREAMS_MAX)),
            client_streams: ClientStreams::default(),
            metrics: GatewayMetrics::new(&n.name, ROUTE_PATTERNS),
        })
    }
}

/// An error as the API reports it.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(404, "not_found", format!("{what} not found"))
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, "internal", e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self)
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

fn read<T: serde::de::DeserializeOwned>(g: &Gateway, key: &[u8]) -> Result<Option<T>, ApiError> {
    g.ledger
        .read()
        .expect("ledger lock")
        .read(key)
        .map_err(ApiError::internal)
}

async fn status(g: web::Data<Gateway>) -> ApiResult {
    let (height, next_index, root, min_fee) = {
        let l = g.ledger.read().expect("ledger lock");
        let params = l
            .read::<trainmesh_contracts::Params>(state_keys::PARAMS)
            .map_err(ApiError::internal)?;
        let min_fee = params.map(|p| p.min_fee.0.to_string());
        (
            l.height(),
            l.next_index(),
            hex::encode(l.state_root()),
            min_fee,
        )
    };
    let consensus = match &g.coordinator {
        Some(c) => c.send(GetStatus).await.ok().map(|s| {
            serde_json::json!({
                "proposed_round": s.proposed_round.0,
                "last_committed_round": s.last_committed_round.0,
                "next_commit_index": s.next_commit_index,
                "mempool_bytes": s.mempool_bytes,
            })
        }),
        None => None,
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "chain_id": g.chain_id,
        "height": height,
        "next_index": next_index,
        "state_root": root,
        "min_fee": min_fee,
        "peer_id": g.uploads.peer_id(),
        "consensus": consensus,
    })))
}

async fn metrics(g: web::Data<Gateway>) -> ApiResult {
    let mut registries = g.registries.read().expect("registries lock").clone();
    registries.push(g.metrics.registry.clone());
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&trainmesh_actors::metrics::gather_all(&registries))
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

async fn jobs(g: web::Data<Gateway>) -> ApiResult {
    let count = read::<trainmesh_contracts::counters::Counters>(&g, state_keys::COUNTERS)?
        .map(|c| c.jobs)
        .unwrap_or(0);
    let mut out = Vec::new();
    for id in (1..=count).rev().take(LIST_MAX) {
        if let Some(j) = read::<Job>(&g, &state_keys::job(JobId(id)))? {
            out.push(j);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// A job and its units as the API shows them, with the height they were read at.
fn job_snapshot(g: &Gateway, id: JobId) -> Result<(u64, Job, Vec<Unit>), ApiError> {
    let l = g.ledger.read().expect("ledger lock");
    let read = |key: &[u8]| l.read(key).map_err(ApiError::internal);
    let job: Job = read(&state_keys::job(id))?.ok_or_else(|| ApiError::not_found("job"))?;
    let mut units = Vec::new();
    for index in 0..=job.current_unit {
        if let Some(u) = l
            .read::<Unit>(&state_keys::unit(UnitId { job: id, index }))
            .map_err(ApiError::internal)?
        {
            units.push(u);
        }
    }
    Ok((l.height(), job, units))
}

async fn job(g: web::Data<Gateway>, id: web::Path<u64>) -> ApiResult {
    let (_, job, units) = job_snapshot(&g, JobId(id.into_inner()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "job": job, "units": units })))
}

/// One Server-Sent Event.
fn sse(event: &str, id: u64, data: &serde_json::Value) -> web::Bytes {
    web::Bytes::from(format!("event: {event}\nid: {id}\ndata: {data}\n\n"))
}

struct EventStream {
    g: web::Data<Gateway>,
    id: JobId,
    height: Option<u64>,
    last: Option<(Job, Vec<Unit>)>,
    quiet_since: std::time::Instant,
    ended: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: Option<ClientSlot>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.g.metrics.streams.dec();
    }
}

impl EventStream {
    /// The next chunk of the stream: an event when the job changed, a keep-alive comment after a
    /// quiet while; `None` after the job ended.
    async fn next(mut self) -> Option<(Result<web::Bytes, std::convert::Infallible>, EventStream)> {
        if self.ended {
            return None;
        }
        loop {
            let height = self.g.ledger.read().expect("ledger lock").height();
            if self.height != Some(height) {
                self.height = Some(height);
                let (height, job, units) = match job_snapshot(&self.g, self.id) {
                    Ok(s) => s,
                    Err(e) => {
                        self.ended = true;
                        let body = serde_json::json!({ "code": e.code, "message": e.message });
                        return Some((Ok(sse("error", height, &body)), self));
                    }
                };
                if self.last.as_ref() != Some(&(job.clone(), units.clone())) {
                    let running = job.state == trainmesh_contracts::jobs::JobState::Running;
                    let body = serde_json::json!({ "height": height, "job": job, "units": units });
                    self.last = Some((job, units));
                    self.quiet_since = std::time::Instant::now();
                    self.ended = !running;
                    let event = if running { "job" } else { "end" };
                    return Some((Ok(sse(event, height, &body)), self));
                }
            }
            if self.quiet_since.elapsed() >= EVENT_KEEPALIVE {
                self.quiet_since = std::time::Instant::now();
                return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), self));
            }
            tokio::time::sleep(EVENT_POLL).await;
        }
    }
}

/// The job's progress as Server-Sent Events: `job` at once and on every change, `end` when it is
/// no longer running (then the stream closes).
async fn job_events(
    g: web::Data<Gateway>,
    req: actix_web::HttpRequest,
    id: web::Path<u64>,
) -> ApiResult {
    let id = JobId(id.into_inner());
    job_snapshot(&g, id)?;
    let slot = match req.peer_addr() {
        Some(peer) => Some(g.client_streams.acquire(peer.ip()).ok_or_else(|| {
            ApiError::new(
                429,
                "too_many_streams",
                format!("a client may hold {EVENT_STREAMS_PER_CLIENT} event streams open"),
            )
        })?),
        None => None,
    };
    let permit = g.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            503,
            "too_many_streams",
            format!("{EVENT_STREAMS_MAX} event streams are open; try again later"),
        )
    })?;
    g.metrics.streams.inc();
    let stream = EventStream {
        g: g.clone(),
        id,
        height: None,
        last: None,
        quiet_since: std::time::Instant::now(),
        ended: false,
        _permit: permit,
        _slot: slot,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(futures::stream::unfold(stream, EventStream::next)))
}

/// The job's latest certified checkpoint (safetensors: parameters and optimizer state), fetched
/// from the trainers that serve it and checked against the hash on the ledger.
/// How far the time of a signed request may be from the gateway's clock.
pub const SIGNED_REQUEST_SKEW_MS: u64 = 5 * 60_000;

/// What an account signs to download a job's weights: a domain tag, the chain id, a zero byte,
/// the job id and the request's time (ms since the epoch), both little-endian. Sent as the
/// headers `X-Trainmesh-Key` (public key, hex), `X-Trainmesh-Time` and `X-Trainmesh-Signature`
/// (hex).
pub fn weights_request_message(chain_id: &str, job: JobId, time_ms: u64) -> Vec<u8> {
    let mut m = b"trainmesh/weights/v1/".to_vec();
    m.extend_from_slice(chain_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&job.0.to_le_bytes());
    m.extend_from_slice(&time_ms.to_le_bytes());
    m
}

/// The account that signed this request (see [`weights_request_message`]), if its signature
/// checks and its time is within [`SIGNED_REQUEST_SKEW_MS`] of ours.
fn signed_by(
    req: &actix_web::HttpRequest,
    message: impl Fn(u64) -> Vec<u8>,
) -> Result<Address, ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let (Some(key), Some(time), Some(signature)) = (
        header("X-Trainmesh-Key"),
        header("X-Trainmesh-Time"),
        header("X-Trainmesh-Signature"),
    ) else {
        return Err(ApiError::new(
            401,
            "signature_required",
            "sign the request: X-Trainmesh-Key, X-Trainmesh-Time, X-Trainmesh-Signature",
        ));
    };
    let bad = |why: &str| ApiError::new(401, "bad_signature", why.to_string());
    let key: [u8; 32] = hex::decode(key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("X-Trainmesh-Key is not a 32-byte hex public key"))?;
    let signature: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("X-Trainmesh-Signature is not 64 bytes of hex"))?;
    let time: u64 = time
        .parse()
        .map_err(|_| bad("X-Trainmesh-Time is not a time in ms"))?;
    let now = wall_clock_ms();
    if now.abs_diff(time) > SIGNED_REQUEST_SKEW_MS {
        return Err(ApiError::new(
            401,
            "stale_request",
            format!("signed at {time} ms, it is {now} ms: sign it anew"),
        ));
    }
    ed25519_zebra::VerificationKey::try_from(key)
        .and_then(|k| k.verify(&ed25519_zebra::Signature::from(signature), &message(time)))
        .map_err(|_| bad("the signature does not match the key and the request"))?;
    Ok(Address::from_public_key(&key))
}

/// A job's certified weights, to its owner only (a signed request).
async fn weights(
    g: web::Data<Gateway>,
    id: web::Path<u64>,
    req: actix_web::HttpRequest,
) -> ApiResult {
    let id = JobId(id.into_inner());
    let job: Job = read(&g, &state_keys::job(id))?.ok_or_else(|| ApiError::not_found("job"))?;
    let requester = signed_by(&req, |t| weights_request_message(&g.chain_id, id, t))?;
    if requester != job.owner {
        return Err(ApiError::new(
            403,
            "not_owner",
            "a job's weights are served to its owner",
        ));
    }
    if job.units_done == 0 {
        return Err(ApiError::new(
            409,
            "no_weights_yet",
            "no unit of this job is certified yet",
        ));
    }
    // The trainer of the last certified unit holds it; any trainer may.
    let mut last_trainer = None;
    for index in (0..=job.current_unit).rev() {
        if let Some(u) = read::<Unit>(&g, &state_keys::unit(UnitId { job: id, index }))? {
            if u.result.as_ref().map(|r| r.checkpoint) == Some(job.latest_checkpoint) {
                last_trainer = u.trainer;
                break;
            }
        }
    }
    let peers = trainmesh_actors::work::worker_peers(
        &g.ledger,
        trainmesh_contracts::workers::Role::Trainer,
        last_trainer.as_ref(),
    );
    let bytes = g
        .fetcher
        .fetch(
            trainmesh_actors::wire::BlobKind::Checkpoint,
            job.latest_checkpoint.0,
            &peers,
            std::time::Duration::from_secs(20),
            trainmesh_actors::blobs::Audience::Anyone,
        )
        .await
        .map_err(|e| ApiError::new(504, "weights_unavailable", e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"job-{}.safetensors\"", id.0),
        ))
        .insert_header(("X-Checkpoint-Blake3", job.latest_checkpoint.to_hex()))
        .body(bytes.to_vec()))
}

fn address(s: &str) -> Result<Address, ApiError> {
    Address::from_hex(s).map_err(|e| ApiError::new(400, "bad_address", e.to_string()))
}

async fn account(g: web::Data<Gateway>, a: web::Path<String>) -> ApiResult {
    let a = address(&a)?;
    let account = g
        .ledger
        .read()
        .expect("ledger lock")
        .account(&a)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "address": a, "account": account })))
}

/// The latest payments to and slashes of an account, newest first (at most `LIST_MAX` heights
/// of them), each with its reason (and the certificate that caused it).
async fn history(g: web::Data<Gateway>, a: web::Path<String>) -> ApiResult {
    let a = address(&a)?;
    // The scan runs on the blocking pool, not on the server's worker: other requests go on.
    let out = web::block(move || history_of(&g, a))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "address": a, "history": out })))
}

fn history_of(g: &Gateway, a: Address) -> Result<Vec<serde_json::Value>, ApiError> {
    use trainmesh_contracts::Event;
    let l = g.ledger.read().expect("ledger lock");
    let top = l.height();
    let mut out = Vec::new();
    // The ledger's index names the heights where this account was paid or slashed: at most
    // `LIST_MAX` of them are read, however long the chain or busy the account.
    for height in l
        .account_heights(&a, top, LIST_MAX)
        .map_err(ApiError::internal)?
    {
        // The batch's transactions, then what its end did (deadlines, timeouts, disputes
        // settled by default: no transaction hash).
        let mut batch: Vec<(Option<[u8; 32]>, Vec<Event>)> = Vec::new();
        for r in l.receipts(height).map_err(ApiError::internal)? {
            if let Ok(events) = r.outcome {
                batch.push((r.tx_hash, events));
            }
        }
        batch.push((None, l.end_events(height).map_err(ApiError::internal)?));
        for (tx_hash, events) in &batch {
            for e in events {
                let entry = match e {
                    Event::Paid { to, amount, reason } if *to == a => serde_json::json!({
                        "height": height, "kind": "payment", "amount": amount, "reason": reason,
                        "tx_hash": tx_hash.map(hex::encode),
                    }),
                    Event::Slashed {
                        who,
                        amount,
                        burned,
                        reason,
                    } if *who == a => serde_json::json!({
                        "height": height, "kind": "slash", "amount": amount, "burned": burned,
                        "reason": reason, "tx_hash": tx_hash.map(hex::encode),
                    }),
                    _ => continue,
                };
                if out.len() < LIST_MAX {
                    out.push(entry);
                }
            }
        }
    }
    Ok(out)
}

async fn workers(g: web::Data<Gateway>) -> ApiResult {
    let index: Vec<Address> = read(&g, state_keys::WORKERS)?.unwrap_or_default();
    let mut out = Vec::new();
    for a in index.iter().take(LIST_MAX) {
        if let Some(w) = read::<Worker>(&g, &state_keys::worker(a))? {
            out.push(w);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// The consensus validators: account, committee stake, and what the account holds (validators
/// are paid a share of fees and emission into their balance at the end of each batch).
async fn validators(g: web::Data<Gateway>) -> ApiResult {
    let list: Vec<trainmesh_contracts::staking::ValidatorInfo> =
        read(&g, state_keys::VALIDATORS)?.unwrap_or_default();
    let mut out = Vec::new();
    for v in list.iter().take(LIST_MAX) {
        let a: trainmesh_contracts::accounts::Account =
            read(&g, &state_keys::account(&v.address))?.unwrap_or_default();
        out.push(serde_json::json!({
            "address": v.address,
            "consensus_key": hex::encode(v.consensus_key),
            "committee_stake": v.committee_stake,
            "balance": a.balance,
            "stake": a.stake,
        }));
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn datasets(g: web::Data<Gateway>) -> ApiResult {
    let count = read::<trainmesh_contracts::counters::Counters>(&g, state_keys::COUNTERS)?
        .map(|c| c.datasets)
        .unwrap_or(0);
    let mut out = Vec::new();
    for id in (1..=count).rev().take(LIST_MAX) {
        if let Some(d) = read::<Dataset>(&g, &state_keys::dataset(DatasetId(id)))? {
            out.push(d);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn dataset(g: web::Data<Gateway>, id: web::Path<u64>) -> ApiResult {
    let d: Dataset = read(&g, &state_keys::dataset(DatasetId(id.into_inner())))?
        .ok_or_else(|| ApiError::not_found("dataset"))?;
    Ok(HttpResponse::Ok().json(d))
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        let (status, code) = e.status_and_code();
        ApiError::new(status, code, e.to_string())
    }
}

impl From<SubmissionError> for ApiError {
    fn from(e: SubmissionError) -> ApiError {
        let (status, code) = e.status_and_code();
        ApiError::new(status, code, e.to_string())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardQuery {
    split: Split,
}

/// A dataset shard, kept and served by this node.
/// What a provider signs to upload a shard: a domain tag, the chain id, a zero byte, the shard's
/// BLAKE3 and the request's time (ms, little-endian), in the headers of a signed request.
pub fn upload_request_message(chain_id: &str, shard: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut m = b"trainmesh/upload/v1/".to_vec();
    m.extend_from_slice(chain_id.as_bytes());
    m.push(0);
    m.extend_from_slice(shard);
    m.extend_from_slice(&time_ms.to_le_bytes());
    m
}

/// Now, in ms since the epoch (0 before it).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Deletes the uploads no attached dataset used in time (run before each upload: what a quota
/// counts is what is still wanted).
fn sweep_uploads(g: &Gateway) {
    let ledger = g.ledger.read().expect("ledger lock");
    let attached = |root: &trainmesh_gpu::hash::Hash32| {
        let key = state_keys::dataset_root(&trainmesh_contracts::Hash32(root.0));
        matches!(
            ledger.read::<trainmesh_contracts::DatasetId>(&key),
            Ok(Some(_))
        )
    };
    let removed = g.uploads.sweep(wall_clock_ms(), attached);
    if removed > 0 {
        tracing::info!(removed, "expired uploads deleted");
    }
}

async fn upload_shard(
    g: web::Data<Gateway>,
    q: web::Query<ShardQuery>,
    req: actix_web::HttpRequest,
    mut body: web::Payload,
) -> ApiResult {
    use futures::StreamExt as _;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, "bad_body", e.to_string()))?;
        if bytes.len() + chunk.len() > SHARD_UPLOAD_BYTES_MAX {
            return Err(ApiError::new(
                413,
                "body_too_large",
                format!("a shard is at most {SHARD_UPLOAD_BYTES_MAX} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    // Signed by its provider, whose deposit for this node (on the ledger: `DepositForUploads`)
    // bounds what it keeps here.
    let hash = *blake3::hash(&bytes).as_bytes();
    let provider = signed_by(&req, |t| upload_request_message(&g.chain_id, &hash, t))?;
    let deposit = g
        .ledger
        .read()
        .expect("ledger lock")
        .read::<trainmesh_contracts::datasets::UploadDeposit>(&state_keys::upload_deposit(
            &provider,
            g.uploads.peer_id(),
        ))
        .map_err(ApiError::internal)?
        .map_or(0, |d| d.amount.0);
    let per_train = u128::from(crate::uploads::UPLOAD_BYTES_PER_TRAIN);
    let allowed = (deposit.saturating_mul(per_train) / trainmesh_contracts::types::UNITS_PER_TRAIN)
        .min(u128::from(u64::MAX)) as u64;
    let split = q.split;
    let gateway = g.clone();
    // Hashing, decoding and an fsync: off the server's thread.
    let info = web::block(move || {
        sweep_uploads(&gateway);
        gateway
            .uploads
            .put_shard(split, bytes, provider, allowed, wall_clock_ms())
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(HttpResponse::Created().json(info))
}

/// A manifest over uploaded shards; the answer is what the provider signs into `AttachDataset`.
async fn upload_manifest(g: web::Data<Gateway>, body: web::Json<ManifestRequest>) -> ApiResult {
    let uploads = g.uploads.clone();
    let reply = web::block(move || uploads.put_manifest(body.into_inner()))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Created().json(reply))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptQuery {
    since: Option<u64>,
}

/// A transaction's receipt, once executed.
async fn transaction(
    g: web::Data<Gateway>,
    hash: web::Path<String>,
    q: web::Query<ReceiptQuery>,
) -> ApiResult {
    let wanted: [u8; 32] = hex::decode(hash.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::new(400, "bad_hash", "a transaction hash is 32 bytes of hex"))?;
    let since = q.since;
    // The scan runs on the blocking pool, not on the server's worker: other requests go on.
    let body = web::block(move || receipt_of(&g, wanted, since))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(body))
}

fn receipt_of(
    g: &Gateway,
    wanted: [u8; 32],
    since: Option<u64>,
) -> Result<serde_json::Value, ApiError> {
    let l = g.ledger.read().expect("ledger lock");
    let not_found = |why: String| ApiError::new(404, "unknown_transaction", why);
    // One index lookup, then one height's receipts.
    let height = l
        .tx_height(&wanted)
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found("no receipt (not executed yet, or never)".into()))?;
    if since.is_some_and(|s| height < s) {
        return Err(not_found(format!(
            "its receipt is at height {height}, before {}",
            since.unwrap_or(0)
        )));
    }
    let receipts = l.receipts(height).map_err(ApiError::internal)?;
    // The receipt the index names: the one that charged, else the free refusal.
    let r = receipts
        .iter()
        .filter(|r| r.tx_hash == Some(wanted))
        .max_by_key(|r| !r.fee_paid.is_zero())
        .ok_or_else(|| ApiError::internal("the transaction index names a height without it"))?;
    let fee_paid = r.fee_paid.0.to_string();
    Ok(match &r.outcome {
        Ok(events) => serde_json::json!({
            "tx_hash": hex::encode(wanted), "height": height, "status": "executed",
            "fee_paid": fee_paid, "events": events, "error": null,
        }),
        Err(rejection) => serde_json::json!({
            "tx_hash": hex::encode(wanted), "height": height, "status": "rejected",
            "fee_paid": fee_paid, "events": null,
            "error": { "code": rejection.code, "message": rejection.message },
        }),
    })
}

/// A mempool's refusal as the gateway answers it.
fn mempool_refusal(r: trainmesh_ledger::admission::Refusal) -> ApiError {
    let status = match r.code {
        "nonce_replayed" | "nonce_taken" => 409,
        "insufficient_balance" => 402,
        "sender_quota" | "source_quota" => 429,
        "mempool_full" | "mempool_unavailable" | "unavailable" => 503,
        _ => 400,
    };
    ApiError::new(status, r.code, r.message)
}

/// The refusal a dry run maps to, for a transaction that would fail.
fn dry_run_error(call: &Call, e: LedgerError) -> ApiError {
    use trainmesh_contracts::ContractError as C;
    let spec_call = matches!(call, Call::SubmitJob { .. } | Call::AttachDataset { .. });
    match e {
        LedgerError::NonceReplayed { .. } => ApiError::new(409, e.code(), e.to_string()),
        LedgerError::InsufficientBalance { .. } => ApiError::new(402, e.code(), e.to_string()),
        LedgerError::Storage { .. } | LedgerError::Corrupt { .. } => ApiError::internal(e),
        LedgerError::Contract(
            ref c @ (C::Invalid { .. }
            | C::TooMany { .. }
            | C::BudgetTooSmall { .. }
            | C::DeadlinePassed { .. }),
        ) if spec_call => ApiError::new(400, "bad_spec", c.to_string()),
        LedgerError::Contract(ref c @ C::UnknownDataset(_)) => {
            ApiError::new(400, "unknown_dataset", c.to_string())
        }
        LedgerError::Contract(ref c @ C::InsufficientStake { .. }) => {
            ApiError::new(402, "insufficient_stake", c.to_string())
        }
        other => ApiError::new(400, other.code(), other.to_string()),
    }
}

/// How long a submission waits for a dataset's manifest to check a model's shape against it.
pub const MANIFEST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a model whose input width or classes differ from the dataset's (trainers could not
/// train it). The manifest comes from this node's store or the dataset's provider; when neither
/// answers in time the check is left to the trainers.
async fn check_model_fits_dataset(
    g: &Gateway,
    model: &trainmesh_gpu::spec::Model,
    dataset: DatasetId,
) -> Result<(), ApiError> {
    let Some(d) = read::<Dataset>(g, &state_keys::dataset(dataset))? else {
        return Ok(()); // the dry run names the unknown dataset
    };
    let Ok(peer) = d.spec.peer_id.parse::<libp2p::PeerId>() else {
        return Ok(());
    };
    let fetched = g
        .fetcher
        .fetch(
            trainmesh_actors::wire::BlobKind::Manifest,
            d.spec.shards_root.0,
            &[peer],
            MANIFEST_WAIT,
            trainmesh_actors::blobs::Audience::Anyone,
        )
        .await;
    let Ok(bytes) = fetched else {
        return Ok(());
    };
    let Ok(m) = serde_json::from_slice::<trainmesh_gpu::dataset::DatasetManifest>(&bytes) else {
        return Ok(());
    };
    if model.is_transformer() != m.is_text() {
        return Err(ApiError::new(
            400,
            "bad_spec",
            if model.is_transformer() {
                format!(
                    "a transformer trains on a text dataset; dataset {} holds samples",
                    dataset.0
                )
            } else {
                format!(
                    "dataset {} is text (token shards): only a transformer trains on it",
                    dataset.0
                )
            },
        ));
    }
    if model.is_transformer() {
        if model.classes != m.classes as usize {
            return Err(ApiError::new(
                400,
                "bad_spec",
                format!(
                    "the model's vocabulary is {}; dataset {} was tokenized into {}",
                    model.classes, dataset.0, m.classes
                ),
            ));
        }
        return Ok(());
    }
    if (model.input, model.classes) != (m.features as usize, m.classes as usize) {
        return Err(ApiError::new(
            400,
            "bad_spec",
            format!(
                "the model takes {} inputs into {} classes; dataset {} has {} features and {} classes",
                model.input, model.classes, dataset.0, m.features, m.classes
            ),
        ));
    }
    Ok(())
}

async fn submit(g: web::Data<Gateway>, body: web::Json<SubmitBody>) -> ApiResult {
    let Submission {
        bytes,
        transaction: tx,
        model,
    } = check_submission(&body, &g.chain_id)?;
    if let (Call::SubmitJob { spec }, Some(model)) = (&tx.transaction.call, &model) {
        check_model_fits_dataset(&g, model, spec.dataset).await?;
    }
    let hash = tx.hash();
    let call = tx.transaction.call.clone();
    let dry_run = g.ledger.read().expect("ledger lock").simulate(tx);
    dry_run.map_err(|e| dry_run_error(&call, e))?;
    g.submitter
        .submit(vec![bytes])
        .await
        .map_err(mempool_refusal)?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "tx_hash": hex::encode(hash) })))
}

#[derive(serde::Deserialize)]
struct DagQuery {
    rounds: Option<u64>,
}

async fn dag(g: web::Data<Gateway>, q: web::Query<DagQuery>) -> ApiResult {
    let Some(c) = &g.coordinator else {
        return Err(ApiError::new(
            404,
            "not_a_validator",
            "this node keeps no DAG; ask a validator's gateway",
        ));
    };
    let rounds = c
        .send(trainmesh_actors::coordinator::GetDag {
            rounds: q.rounds.unwrap_or(50),
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(rounds))
}

/// The explorer: one page over the API, updated live.
async fn explorer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("explorer.html"))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn not_found() -> ApiResult {
    Err(ApiError::not_found("route"))
}

/// The route patterns served (each starts at zero in `trainmesh_gateway_requests_total`).
pub const ROUTE_PATTERNS: &[&str] = &[
    "/",
    "/metrics",
    "/v1/consensus/dag",
    "/v1/openapi.json",
    "/v1/status",
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/weights",
    "/v1/jobs/{id}/events",
    "/v1/accounts/{address}",
    "/v1/accounts/{address}/history",
    "/v1/workers",
    "/v1/validators",
    "/v1/datasets",
    "/v1/datasets/{id}",
    "/v1/datasets/shards",
    "/v1/datasets/manifests",
    "/v1/transactions",
    "/v1/transactions/{hash}",
];

/// The OpenAPI document; the tests check it names exactly the served routes.
pub const OPENAPI: &str = include_str!("openapi.json");

fn json_error(e: actix_web::error::JsonPayloadError) -> actix_web::Error {
    let (status, code) = match &e {
        actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
        | actix_web::error::JsonPayloadError::Overflow { .. } => (413, "body_too_large"),
        _ => (400, "bad_json"),
    };
    ApiError::new(status, code, e.to_string()).into()
}

/// Starts the gateway on `addr` in the current actix system; returns the address it listens on.
pub fn serve(g: Gateway, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let limiter = std::sync::Arc::new(std::sync::Mutex::new(RateLimiter::default()));
    let server = HttpServer::new(move || {
        let limiter = limiter.clone();
        let gateway_metrics = g.metrics.clone();
        App::new()
            .wrap_fn(move |req, srv| {
                let route = req
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_string());
                let started = std::time::Instant::now();
                let ip = req.peer_addr().map(|a| a.ip());
                let allowed = ip.is_none_or(|ip| {
                    limiter
                        .lock()
                        .expect("limiter lock")
                        .allow(ip, std::time::Instant::now())
                });
                let fut = allowed.then(|| srv.call(req));
                let metrics = gateway_metrics.clone();
                async move {
                    let res = match fut {
                        Some(f) => f.await,
                        None => Err(ApiError::new(
                            429,
                            "rate_limited",
                            format!("more than {CLIENT_RATE_PER_S} requests per second"),
                        )
                        .into()),
                    };
                    let status = match &res {
                        Ok(r) => r.status(),
                        Err(e) => e.as_response_error().status_code(),
                    };
                    metrics
                        .requests
                        .with_label_values(&[route.as_str(), status.as_str()])
                        .inc();
                    metrics
                        .seconds
                        .with_label_values(&[route.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    res
                }
            })
            .app_data(web::Data::new(g.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(BODY_BYTES_MAX)
                    .error_handler(|e, _| json_error(e)),
            )
            .app_data(web::PayloadConfig::new(BODY_BYTES_MAX))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::new(400, "bad_query", e.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::new(400, "bad_path", e.to_string()).into()),
            )
            .route("/", web::get().to(explorer))
            .route("/metrics", web::get().to(metrics))
            .route("/v1/consensus/dag", web::get().to(dag))
            .route("/v1/openapi.json", web::get().to(openapi))
            .route("/v1/status", web::get().to(status))
            .route("/v1/jobs", web::get().to(jobs))
            .route("/v1/jobs/{id}", web::get().to(job))
            .route("/v1/jobs/{id}/weights", web::get().to(weights))
            .route("/v1/jobs/{id}/events", web::get().to(job_events))
            .route("/v1/accounts/{address}", web::get().to(account))
            .route("/v1/accounts/{address}/history", web::get().to(history))
            .route("/v1/workers", web::get().to(workers))
            .route("/v1/validators", web::get().to(validators))
            .route("/v1/datasets", web::get().to(datasets))
            .service(web::resource("/v1/datasets/shards").route(web::post().to(upload_shard)))
            .service(
                web::resource("/v1/datasets/manifests")
                    .app_data(
                        web::JsonConfig::default()
                            .limit(MANIFEST_BODY_BYTES_MAX)
                            .error_handler(|e, _| json_error(e)),
                    )
                    .route(web::post().to(upload_manifest)),
            )
            .route("/v1/datasets/{id}", web::get().to(dataset))
            .route("/v1/transactions", web::post().to(submit))
            .route("/v1/transactions/{hash}", web::get().to(transaction))
            .default_service(web::to(not_found))
    })
    .workers(1)
    // The node decides how it stops (Ctrl-C, SIGTERM): the gateway does not stop the system.
    .disable_signals()
    .client_request_timeout(std::time::Duration::from_secs(10))
    .bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the gateway bound no address"))?;
    let server = server.run();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "gateway stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes served, as (method, path) in OpenAPI's path syntax.
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/"),
        ("get", "/metrics"),
        ("get", "/v1/consensus/dag"),
        ("get", "/v1/openapi.json"),
        ("get", "/v1/status"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("get", "/v1/jobs/{id}/weights"),
        ("get", "/v1/jobs/{id}/events"),
        ("get", "/v1/accounts/{address}"),
        ("get", "/v1/accounts/{address}/history"),
        ("get", "/v1/workers"),
        ("get", "/v1/validators"),
        ("get", "/v1/datasets"),
        ("get", "/v1/datasets/{id}"),
        ("post", "/v1/datasets/shards"),
        ("post", "/v1/datasets/manifests"),
        ("post", "/v1/transactions"),
        ("get", "/v1/transactions/{hash}"),
    ];

    #[test]
    fn clients_are_rate_limited_by_token_bucket() {
        let mut l = RateLimiter::default();
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = std::time::Instant::now();
        let burst = (0..1_000).take_while(|_| l.allow(a, t0)).count();
        assert_eq!(burst, CLIENT_BURST as usize);
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0), "another client has its own bucket");
        // A tenth of a second refills a tenth of the rate.
        let later = t0 + std::time::Duration::from_millis(100);
        let refilled = (0..1_000).take_while(|_| l.allow(a, later)).count();
        assert_eq!(refilled, (CLIENT_RATE_PER_S / 10.0) as usize);
    }

    /// One client holds at most its share of the event streams; another is unaffected, and a
    /// slot frees when its stream ends.
    #[test]
    fn a_client_cannot_take_every_event_stream() {
        let streams = ClientStreams::default();
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let mut held: Vec<ClientSlot> = (0..EVENT_STREAMS_PER_CLIENT)
            .map(|_| streams.acquire(a).expect("within the share"))
            .collect();
        assert!(streams.acquire(a).is_none());
        assert!(streams.acquire(b).is_some());
        held.pop();
        assert!(
            streams.acquire(a).is_some(),
            "an ended stream frees its slot"
        );
    }

    #[test]
    fn openapi_names_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        let mut patterns: Vec<&str> = ROUTE_PATTERNS.to_vec();
        patterns.sort();
        patterns.dedup();
        let mut routes: Vec<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        routes.sort();
        routes.dedup();
        assert_eq!(patterns, routes, "ROUTE_PATTERNS names every served route");
    }
}
