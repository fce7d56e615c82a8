//! Ledger throughput: signed transfers and a mixed contract workload, executed in batches with
//! durable commits (redb fsync per batch), against a baseline that writes the same number of keys
//! of the same sizes straight into redb, in the same process.
//!
//! `cargo run --release -p trainmesh-ledger --example bench -- --accounts 10000 --batches 20 --batch-size 5000`
//!
//! What is measured per batch: decoding, signature checks (batch verification on every core),
//! execution through the contracts, the Jellyfish Merkle update and the durable redb commit.
//! The baseline measures only the redb writes and commits. The last line is one JSON object.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use redb::{Database, TableDefinition};
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::workers::Capability;
use trainmesh_ledger::contracts::{
    workers::Role, Amount, Genesis, GenesisAccount, Params, TimestampMs,
};
use trainmesh_ledger::{AccountKey, Batch, Ledger, PreparedBatch};

#[derive(Parser, Debug, Clone, Copy)]
struct Args {
    /// Funded accounts taking part.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Measured batches per workload.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Transactions per batch.
    #[arg(long, default_value_t = 5_000)]
    batch_size: usize,
}

const CHAIN: &str = "trainmesh-bench";

fn genesis(keys: &[AccountKey]) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.address(),
                balance: Amount::from_train(1_000_000),
            })
            .collect(),
        validators: vec![],
        params: Params::default(),
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    }
}

fn batch_of(index: u64, transactions: Vec<Bytes>) -> Batch {
    Batch {
        index,
        timestamp: TimestampMs(1_000 * (index + 1)),
        seed: *blake3::hash(&index.to_le_bytes()).as_bytes(),
        transactions,
    }
}

/// Pre-signs every batch (signing is the client's work, not the ledger's).
fn transfer_batches(
    keys: &[AccountKey],
    args: &Args,
    first_index: u64,
    nonces: &mut [u64],
) -> Vec<Batch> {
    let mut out = Vec::new();
    for b in 0..args.batches {
        let mut txs = Vec::with_capacity(args.batch_size);
        for i in 0..args.batch_size {
            let from = (b * args.batch_size + i) % keys.len();
            let to = (from * 7 + 13) % keys.len();
            let call = Call::Transfer {
                to: keys[to].address(),
                amount: Amount(1_000 + i as u128),
            };
            txs.push(Bytes::from(
                keys[from]
                    .sign(CHAIN, nonces[from], Amount(1_000_000), call)
                    .encode(),
            ));
            nonces[from] += 1;
        }
        out.push(batch_of(first_index + b as u64, txs));
    }
    out
}

/// Transfers, bonds, unbonds, heartbeats and worker registrations, mixed.
fn mixed_batches(
    keys: &[AccountKey],
    args: &Args,
    first_index: u64,
    nonces: &mut [u64],
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut registered = vec![false; keys.len()];
    for b in 0..args.batches {
        let mut txs = Vec::with_capacity(args.batch_size);
        for i in 0..args.batch_size {
            let from = (b * args.batch_size + i * 3 + 1) % keys.len();
            let call = match i % 5 {
                0 | 1 => Call::Transfer {
                    to: keys[(from + 1) % keys.len()].address(),
                    amount: Amount(5_000),
                },
                2 => Call::Bond {
                    amount: Amount::from_train(1),
                },
                3 if !registered[from] => {
                    registered[from] = true;
                    let (peer_id, peer_signature) = keys[from].peer_binding(&keys[from].secret());
                    Call::RegisterWorker {
                        role: if from.is_multiple_of(2) {
                            Role::Trainer
                        } else {
                            Role::Evaluator
                        },
                        bond: Amount::from_train(200),
                        capability: Capability {
                            adapter: "cpu".into(),
                            backend: "cpu".into(),
                            memory_mb: 4_096,
                            gflops: 30,
                            conformance: None,
                        },
                        peer_id,
                        peer_signature,
                    }
                }
                3 => Call::Heartbeat,
                _ => Call::Unbond {
                    amount: Amount(1_000),
                },
            };
            txs.push(Bytes::from(
                keys[from]
                    .sign(CHAIN, nonces[from], Amount(1_000_000), call)
                    .encode(),
            ));
            nonces[from] += 1;
        }
        out.push(batch_of(first_index + b as u64, txs));
    }
    out
}

struct Run {
    txs: usize,
    accepted: usize,
    elapsed: Duration,
    timings: trainmesh_ledger::BatchTimings,
}

/// Executes the batches in order while the next one is decoded and signature-checked on the
/// other cores (as a node does: checking needs no ledger state).
fn run(ledger: &mut Ledger, batches: &[Batch]) -> Run {
    let mut r = Run {
        txs: 0,
        accepted: 0,
        elapsed: Duration::ZERO,
        timings: Default::default(),
    };
    let chain = ledger.chain_id().to_string();
    let start = Instant::now();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<PreparedBatch>(1);
        let chain = &chain;
        s.spawn(move || {
            for b in batches {
                if tx.send(PreparedBatch::prepare(b, chain)).is_err() {
                    return;
                }
            }
        });
        for (prepared, b) in rx.iter().zip(batches) {
            let out = ledger.execute_prepared(prepared).expect("batch executes");
            r.txs += b.transactions.len();
            r.accepted += out.accepted();
            r.timings.decode_and_verify += out.timings.decode_and_verify;
            r.timings.execute += out.timings.execute;
            r.timings.merkle_and_commit += out.timings.merkle_and_commit;
        }
    });
    r.elapsed = start.elapsed();
    r
}

/// The baseline: the same number of key writes of the same sizes, one durable commit per batch.
fn raw_redb(
    batches: usize,
    writes_per_batch: usize,
    key_bytes: usize,
    value_bytes: usize,
) -> Duration {
    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::create(dir.path().join("raw.redb")).expect("raw db");
    let value = vec![7u8; value_bytes];
    let mut elapsed = Duration::ZERO;
    for b in 0..batches {
        let start = Instant::now();
        let txn = db.begin_write().expect("write txn");
        {
            let mut t = txn.open_table(T).expect("table");
            for i in 0..writes_per_batch {
                let mut key = vec![0u8; key_bytes];
                let n = (b * writes_per_batch + i) as u64;
                key[..8].copy_from_slice(&blake3::hash(&n.to_le_bytes()).as_bytes()[..8]);
                t.insert(key.as_slice(), value.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        elapsed += start.elapsed();
    }
    elapsed
}

fn main() {
    let args = Args::parse();
    let keys: Vec<AccountKey> = (0..args.accounts as u64)
        .map(|i| AccountKey::from_seed(10_000 + i))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path().join("ledger.redb")).expect("ledger");
    ledger.init(&genesis(&keys)).expect("genesis");
    let mut nonces = vec![0u64; keys.len()];

    println!("+ CONFIG:");
    println!(" accounts: {}", args.accounts);
    println!(" batches per workload: {}", args.batches);
    println!(" transactions per batch: {}", args.batch_size);
    println!(
        " threads for signature checks: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(" durability: redb immediate (fsync per batch)");

    // Warm-up batch (page cache, allocator), not measured.
    let warm = transfer_batches(&keys, &Args { batches: 1, ..args }, 0, &mut nonces);
    run(&mut ledger, &warm);

    let transfers = transfer_batches(&keys, &args, 1, &mut nonces);
    let t = run(&mut ledger, &transfers);
    let mixed = mixed_batches(&keys, &args, 1 + args.batches as u64, &mut nonces);
    let m = run(&mut ledger, &mixed);

    // A transfer writes two account records (sender with nonce and fee, recipient) and the
    // supply record once per batch; the baseline writes as many keys of a similar size.
    let account_value = 80;
    let writes_per_batch = 2 * args.batch_size;
    let raw = raw_redb(args.batches, writes_per_batch, 37, account_value);

    let signed_tps = t.accepted as f64 / t.elapsed.as_secs_f64();
    let mixed_tps = m.accepted as f64 / m.elapsed.as_secs_f64();
    let raw_wps = (args.batches * writes_per_batch) as f64 / raw.as_secs_f64();
    let ratio = t.elapsed.as_secs_f64() / raw.as_secs_f64();

    println!("+ RESULTS:");
    println!(
        " signed transfers: {} accepted of {} in {:.2} s: {:.0} tx/s",
        t.accepted,
        t.txs,
        t.elapsed.as_secs_f64(),
        signed_tps
    );
    println!(
        " mixed workload: {} accepted of {} in {:.2} s: {:.0} tx/s",
        m.accepted,
        m.txs,
        m.elapsed.as_secs_f64(),
        mixed_tps
    );
    for (name, run) in [("transfers", &t), ("mixed", &m)] {
        println!(
            "   {name}: decode + signatures {:.2} s (overlapped), execution {:.2} s, Merkle + commit {:.2} s",
            run.timings.decode_and_verify.as_secs_f64(),
            run.timings.execute.as_secs_f64(),
            run.timings.merkle_and_commit.as_secs_f64()
        );
    }
    println!(
        " raw redb baseline: {} key writes in {:.2} s: {:.0} writes/s",
        args.batches * writes_per_batch,
        raw.as_secs_f64(),
        raw_wps
    );
    println!(" ledger time / raw redb time for the same key writes: {ratio:.2}x");
    println!(" state root: {}", hex::encode(ledger.state_root()));
    println!(
        "{}",
        serde_json::json!({
            "accounts": args.accounts,
            "batch_size": args.batch_size,
            "batches": args.batches,
            "signed_tx_per_s": signed_tps.round(),
            "mixed_tx_per_s": mixed_tps.round(),
            "raw_redb_writes_per_s": raw_wps.round(),
            "ratio_vs_raw": (ratio * 100.0).round() / 100.0,
        })
    );
}
