//! The HTTP gateway of a node: a versioned JSON API under `/v1` and Prometheus metrics at
//! `/metrics`. Writes are signed transactions only: the gateway never holds a user's key; it
//! checks a transaction's encoding, chain id and signature, then hands it to a validator's mempool.
//! Errors are JSON bodies `{ "code": ..., "message": ... }` with a stable code; bodies are
//! limited in size.

use std::net::SocketAddr;

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
use trainmesh_contracts::{keys as state_keys, Address, DatasetId, JobId, UnitId};
use trainmesh_dag::RedbStore;
use trainmesh_ledger::transaction::SignedTransaction;
use trainmesh_ledger::TRANSACTION_BYTES_MAX;

/// The largest request body (a signed transaction, hex-encoded, in JSON).
pub const BODY_BYTES_MAX: usize = 2 * TRANSACTION_BYTES_MAX + 1_024;
/// The most items a list returns.
pub const LIST_MAX: usize = 1_000;
/// Requests per second each client (IP address) may sustain, and its burst.
pub const CLIENT_RATE_PER_S: f64 = 100.0;
pub const CLIENT_BURST: f64 = 200.0;
/// Clients tracked at once (the least recently seen are forgotten first).
pub const CLIENTS_MAX: usize = 10_000;

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
    /// The registries `/metrics` serves (a devnet: every node's).
    pub registries: Vec<prometheus::Registry>,
    pub submitter: Submitter,
    pub coordinator: Option<actix::Addr<Coordinator<RedbStore>>>,
    pub chain_id: String,
    pub fetcher: trainmesh_actors::blobs::Fetcher,
}

impl Gateway {
    /// The gateway of a running node.
    pub fn of(n: &trainmesh_actors::node::NodeHandle, chain_id: &str) -> Gateway {
        Gateway {
            ledger: n.ledger.clone(),
            registries: vec![n.metrics.registry.clone()],
            submitter: n.wallet.submitter().clone(),
            coordinator: n.coordinator.clone(),
            chain_id: chain_id.to_string(),
            fetcher: n.fetcher.clone(),
        }
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
    let (height, next_index, root) = {
        let l = g.ledger.read().expect("ledger lock");
        (l.height(), l.next_index(), hex::encode(l.state_root()))
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
        "consensus": consensus,
    })))
}

async fn metrics(g: web::Data<Gateway>) -> ApiResult {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&trainmesh_actors::metrics::gather_all(&g.registries))
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

async fn job(g: web::Data<Gateway>, id: web::Path<u64>) -> ApiResult {
    let id = JobId(id.into_inner());
    let job: Job = read(&g, &state_keys::job(id))?.ok_or_else(|| ApiError::not_found("job"))?;
    let mut units = Vec::new();
    for index in 0..=job.current_unit {
        if let Some(u) = read::<Unit>(&g, &state_keys::unit(UnitId { job: id, index }))? {
            units.push(u);
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "job": job, "units": units })))
}

/// The job's latest certified checkpoint (safetensors: parameters and optimizer state), fetched
/// from the trainers that serve it and checked against the hash on the ledger.
async fn weights(g: web::Data<Gateway>, id: web::Path<u64>) -> ApiResult {
    let id = JobId(id.into_inner());
    let job: Job = read(&g, &state_keys::job(id))?.ok_or_else(|| ApiError::not_found("job"))?;
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

/// Heights the payment history looks back over.
pub const HISTORY_HEIGHTS_MAX: u64 = 10_000;

/// Every payment to and slash of an account in the last heights, newest first, each with its
/// reason (and the certificate that caused it).
async fn history(g: web::Data<Gateway>, a: web::Path<String>) -> ApiResult {
    use trainmesh_contracts::Event;
    let a = address(&a)?;
    let l = g.ledger.read().expect("ledger lock");
    let top = l.height();
    let mut out = Vec::new();
    for height in (top.saturating_sub(HISTORY_HEIGHTS_MAX)..=top).rev() {
        for r in l.receipts(height).map_err(ApiError::internal)? {
            let Ok(events) = &r.outcome else { continue };
            for e in events {
                let entry = match e {
                    Event::Paid { to, amount, reason } if *to == a => serde_json::json!({
                        "height": height, "kind": "payment", "amount": amount, "reason": reason,
                        "tx_hash": r.tx_hash.map(hex::encode),
                    }),
                    Event::Slashed {
                        who,
                        amount,
                        burned,
                        reason,
                    } if *who == a => serde_json::json!({
                        "height": height, "kind": "slash", "amount": amount, "burned": burned,
                        "reason": reason, "tx_hash": r.tx_hash.map(hex::encode),
                    }),
                    _ => continue,
                };
                if out.len() < LIST_MAX {
                    out.push(entry);
                }
            }
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "address": a, "history": out })))
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    /// The signed transaction's canonical encoding, hex.
    transaction: String,
}

async fn submit(g: web::Data<Gateway>, body: web::Json<SubmitBody>) -> ApiResult {
    let bytes = hex::decode(body.transaction.trim())
        .map_err(|e| ApiError::new(400, "bad_encoding", format!("transaction is not hex: {e}")))?;
    let tx = SignedTransaction::decode(&bytes)
        .map_err(|e| ApiError::new(400, e.code(), e.to_string()))?;
    tx.verify(&g.chain_id)
        .map_err(|e| ApiError::new(400, e.code(), e.to_string()))?;
    let hash = tx.hash();
    g.submitter
        .submit(vec![bytes])
        .await
        .map_err(|e| ApiError::new(503, "mempool_unavailable", e))?;
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
        App::new()
            .wrap_fn(move |req, srv| {
                let ip = req.peer_addr().map(|a| a.ip());
                let allowed = ip.is_none_or(|ip| {
                    limiter
                        .lock()
                        .expect("limiter lock")
                        .allow(ip, std::time::Instant::now())
                });
                let fut = allowed.then(|| srv.call(req));
                async move {
                    match fut {
                        Some(f) => f.await,
                        None => Err(ApiError::new(
                            429,
                            "rate_limited",
                            format!("more than {CLIENT_RATE_PER_S} requests per second"),
                        )
                        .into()),
                    }
                }
            })
            .app_data(web::Data::new(g.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(BODY_BYTES_MAX)
                    .error_handler(|e, _| json_error(e)),
            )
            .app_data(web::PayloadConfig::new(BODY_BYTES_MAX))
            .route("/", web::get().to(explorer))
            .route("/metrics", web::get().to(metrics))
            .route("/v1/consensus/dag", web::get().to(dag))
            .route("/v1/openapi.json", web::get().to(openapi))
            .route("/v1/status", web::get().to(status))
            .route("/v1/jobs", web::get().to(jobs))
            .route("/v1/jobs/{id}", web::get().to(job))
            .route("/v1/jobs/{id}/weights", web::get().to(weights))
            .route("/v1/accounts/{address}", web::get().to(account))
            .route("/v1/accounts/{address}/history", web::get().to(history))
            .route("/v1/workers", web::get().to(workers))
            .route("/v1/datasets", web::get().to(datasets))
            .route("/v1/transactions", web::post().to(submit))
            .default_service(web::to(not_found))
    })
    .workers(1)
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
        ("get", "/v1/accounts/{address}"),
        ("get", "/v1/accounts/{address}/history"),
        ("get", "/v1/workers"),
        ("get", "/v1/datasets"),
        ("post", "/v1/transactions"),
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
    }
}
