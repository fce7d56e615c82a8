//! What each actor records, in one Prometheus registry per node (exposed by the node's HTTP
//! server). Names follow Prometheus conventions: `_total` counters, `_seconds` histograms.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub registry: Registry,
    // Consensus (Coordinator).
    pub round: IntGauge,
    pub committed_round: IntGauge,
    pub commits: IntCounter,
    pub commit_latency: Histogram,
    pub messages_in: IntCounter,
    pub store_writes: IntCounter,
    pub messages_rejected: IntCounter,
    pub messages_dropped: IntCounter,
    pub equivocations: IntCounter,
    pub mempool_bytes: IntGauge,
    pub mempool_accepted: IntCounter,
    pub mempool_refused: IntCounter,
    // Ledger.
    pub ledger_height: IntGauge,
    /// Committed batches waiting for their beacon value.
    pub beacon_waiting: IntGauge,
    /// Jobs by state ("running", "finished"), from the ledger after every batch.
    pub jobs: prometheus::IntGaugeVec,
    /// Certificates of useful work formed so far (the ledger's counter).
    pub certificates: IntGauge,
    pub ledger_transactions: IntCounterVec,
    pub batch_seconds: Histogram,
    // Network.
    pub bytes_out: IntCounter,
    pub peers: IntGauge,
    /// Received messages dropped because their peer was over its share of the inbound queue.
    pub inbound_dropped: IntCounter,
    /// Bytes of received messages waiting for the router.
    pub inbound_bytes: IntGauge,
    /// Times the router held a message back because the actor it is for was busy.
    pub inbound_paused: IntCounter,
    pub connections_refused: IntCounter,
    pub offences: IntCounter,
    pub bans: IntCounter,
    /// Sync requests answered, by kind ("ledger", "certificates").
    pub sync_served: IntCounterVec,
    /// Sync requests refused: the peer was over its rate, or the server was busy.
    pub sync_throttled: IntCounter,
    /// The lowest commit index a validator still keeps for followers.
    pub retained_from: IntGauge,
    // Work.
    pub training_steps: IntCounter,
    pub training_seconds: Histogram,
    pub training_samples_per_second: prometheus::Gauge,
    pub verification_outcomes: IntCounterVec,
    pub verification_seconds: Histogram,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric name is valid");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric name is valid");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("metric name is valid");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric name is valid");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        Self::with_registry(Registry::new())
    }

    /// Metrics whose every series carries the label `node="<name>"` (a devnet serves the
    /// metrics of all its nodes from one endpoint).
    pub fn for_node(name: &str) -> NodeMetrics {
        let labels = std::collections::HashMap::from([("node".to_string(), name.to_string())]);
        Self::with_registry(Registry::new_custom(None, Some(labels)).expect("a valid label"))
    }

    fn with_registry(r: Registry) -> NodeMetrics {
        let latency = vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0];
        let work = vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];
        let m = NodeMetrics {
            round: gauge(
                &r,
                "trainmesh_consensus_round",
                "Highest round this validator proposed",
            ),
            committed_round: gauge(
                &r,
                "trainmesh_consensus_committed_round",
                "Round of the last committed leader",
            ),
            commits: counter(
                &r,
                "trainmesh_consensus_commits_total",
                "Committed sub-DAGs",
            ),
            commit_latency: histogram(
                &r,
                "trainmesh_consensus_commit_latency_seconds",
                "From the leader's timestamp to its commit",
                latency,
            ),
            messages_in: counter(
                &r,
                "trainmesh_consensus_messages_total",
                "Consensus messages received",
            ),
            store_writes: counter(
                &r,
                "trainmesh_consensus_store_writes_total",
                "Group commits: one store write (one fsync) for the inputs of one mailbox turn",
            ),
            messages_rejected: counter(
                &r,
                "trainmesh_consensus_messages_rejected_total",
                "Consensus messages refused",
            ),
            messages_dropped: counter(
                &r,
                "trainmesh_network_messages_dropped_total",
                "Outgoing messages dropped on a full queue",
            ),
            equivocations: counter(
                &r,
                "trainmesh_consensus_equivocations_total",
                "Equivocations detected",
            ),
            mempool_bytes: gauge(
                &r,
                "trainmesh_mempool_bytes",
                "Bytes waiting in the mempool",
            ),
            mempool_accepted: counter(
                &r,
                "trainmesh_mempool_transactions_total",
                "Transactions accepted into the mempool",
            ),
            mempool_refused: counter(
                &r,
                "trainmesh_mempool_refused_total",
                "Transactions refused by the mempool",
            ),
            ledger_height: gauge(&r, "trainmesh_ledger_height", "Batches executed"),
            beacon_waiting: gauge(
                &r,
                "trainmesh_beacon_waiting_batches",
                "Committed batches waiting for enough beacon shares to execute",
            ),
            jobs: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new("trainmesh_jobs", "Jobs by state"),
                    &["state"],
                )
                .expect("metric name is valid");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            certificates: gauge(
                &r,
                "trainmesh_certificates",
                "Certificates of useful work formed so far",
            ),
            ledger_transactions: counter_vec(
                &r,
                "trainmesh_ledger_transactions_total",
                "Executed transactions by outcome",
                &["outcome"],
            ),
            batch_seconds: histogram(
                &r,
                "trainmesh_ledger_batch_seconds",
                "Time to execute one committed batch",
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
            ),
            bytes_out: counter(&r, "trainmesh_network_bytes_out_total", "Bytes sent"),
            peers: gauge(&r, "trainmesh_network_peers", "Connected peers"),
            inbound_dropped: counter(
                &r,
                "trainmesh_network_inbound_dropped_total",
                "Received messages dropped: their peer was over its share of the inbound queue",
            ),
            inbound_bytes: gauge(
                &r,
                "trainmesh_network_inbound_bytes",
                "Bytes of received messages waiting for the router",
            ),
            inbound_paused: counter(
                &r,
                "trainmesh_network_inbound_paused_total",
                "Times the router held a message back for a busy actor",
            ),
            connections_refused: counter(
                &r,
                "trainmesh_network_connections_refused_total",
                "Connections refused by the connection limits or a ban",
            ),
            offences: counter(
                &r,
                "trainmesh_network_offences_total",
                "Offences recorded against peers",
            ),
            bans: counter(&r, "trainmesh_network_bans_total", "Peers banned"),
            sync_served: counter_vec(
                &r,
                "trainmesh_sync_served_total",
                "Sync requests answered, by kind",
                &["kind"],
            ),
            sync_throttled: counter(
                &r,
                "trainmesh_sync_throttled_total",
                "Sync requests refused: over the peer's rate, or the server busy",
            ),
            retained_from: gauge(
                &r,
                "trainmesh_consensus_retained_from_index",
                "Lowest commit index kept in the DAG store for followers",
            ),
            training_steps: counter(&r, "trainmesh_training_steps_total", "Optimizer steps run"),
            training_seconds: histogram(
                &r,
                "trainmesh_training_unit_seconds",
                "Compute time of one work unit",
                work.clone(),
            ),
            training_samples_per_second: {
                let g = prometheus::Gauge::new(
                    "trainmesh_training_samples_per_second",
                    "Training throughput of the last unit",
                )
                .expect("metric name is valid");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            verification_outcomes: counter_vec(
                &r,
                "trainmesh_verification_outcomes_total",
                "Verdicts given",
                &["verdict"],
            ),
            verification_seconds: histogram(
                &r,
                "trainmesh_verification_seconds",
                "Compute time of one verification",
                work,
            ),
            registry: r,
        };
        // Known label values exist from the start (at zero), so they are exported before the
        // first event.
        for state in ["running", "finished"] {
            m.jobs.with_label_values(&[state]);
        }
        for outcome in ["accepted", "rejected"] {
            m.ledger_transactions.with_label_values(&[outcome]);
        }
        for kind in ["ledger", "certificates"] {
            m.sync_served.with_label_values(&[kind]);
        }
        for verdict in ["accept", "reject"] {
            m.verification_outcomes.with_label_values(&[verdict]);
        }
        m
    }
}

/// The metric families of several registries as one exposition (families of the same name are
/// merged, as the text format requires each name once).
pub fn gather_all(registries: &[Registry]) -> Vec<prometheus::proto::MetricFamily> {
    let mut by_name: std::collections::BTreeMap<String, prometheus::proto::MetricFamily> =
        std::collections::BTreeMap::new();
    for r in registries {
        for family in r.gather() {
            match by_name.get_mut(family.name()) {
                Some(existing) => {
                    for m in family.get_metric() {
                        existing.mut_metric().push(m.clone());
                    }
                }
                None => {
                    by_name.insert(family.name().to_string(), family);
                }
            }
        }
    }
    by_name.into_values().collect()
}

/// A gateway's own series, in their own registry (served beside the nodes').
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    pub registry: prometheus::Registry,
    pub requests: prometheus::IntCounterVec,
    pub seconds: prometheus::HistogramVec,
    pub streams: prometheus::IntGauge,
}

impl GatewayMetrics {
    /// The series of a gateway serving `routes` (each starts at zero with status 200).
    pub fn new(node: &str, routes: &[&str]) -> GatewayMetrics {
        let labels = std::collections::HashMap::from([("node".to_string(), node.to_string())]);
        let registry =
            prometheus::Registry::new_custom(None, Some(labels)).expect("valid registry labels");
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trainmesh_gateway_requests_total",
                "HTTP requests to the gateway, by route pattern and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let seconds = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "trainmesh_gateway_request_seconds",
                "Time to answer a gateway request (for streams: to start the stream), by route",
            )
            .buckets(prometheus::exponential_buckets(0.000_5, 4.0, 9).expect("valid buckets")),
            &["route"],
        )
        .expect("valid metric");
        let streams = prometheus::IntGauge::new(
            "trainmesh_gateway_event_streams",
            "Job event streams open now",
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registers once");
        registry
            .register(Box::new(seconds.clone()))
            .expect("registers once");
        registry
            .register(Box::new(streams.clone()))
            .expect("registers once");
        for route in routes {
            requests.with_label_values(&[route, "200"]);
            seconds.with_label_values(&[route]);
        }
        GatewayMetrics {
            registry,
            requests,
            seconds,
            streams,
        }
    }
}
