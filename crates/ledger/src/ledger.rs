//! The ledger: executes committed batches in one redb write transaction each, and commits to the
//! resulting state with a Jellyfish Merkle root.
//!
//! Tables:
//! - `state`: raw key → value (the contracts' key space, see `docs/design/ledger.md`)
//! - `jmt_latest`: nibble path → node, the Merkle tree of the latest version (see [`crate::tree`])
//! - `meta`: chain id, genesis hash, height, next consensus index, state root
//! - `batch_receipts`: height → BCS of the receipts of that batch's transactions, in order

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use jmt::{KeyHash, RootHash, Sha256Jmt, Version};
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use trainmesh_contracts::accounts::{self, Account};
use trainmesh_contracts::{
    calls, Context, ContractError, ContractResult, Event, Genesis, Overlay, State, StateExt,
    TimestampMs,
};

use crate::error::{LedgerError, LedgerResult};
use crate::transaction::SignedTransaction;
use crate::tree::{self, CacheUpdate, NodeCache, TreeStore, JMT_NODES};
use crate::verify::verify_all;

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("batch_receipts");
/// What the end of each batch did (deadlines, timeouts, disputes settled by default), by height:
/// only heights where it did something.
const END_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("batch_end_events");
/// Where each transaction's receipt is: hash → height ‖ charged (1 byte). A receipt that
/// charged a fee (the transaction executed, its call passing or failing) wins over a free
/// refusal of the same bytes (sent early, or replayed later); a hash is charged at most once.
const TX_HEIGHTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_heights");
/// The heights at which an account was paid or slashed: address ‖ height (big-endian) → ().
const ACCOUNT_HEIGHTS: TableDefinition<&[u8], ()> = TableDefinition::new("account_heights");

/// Transactions in one batch.
pub const BATCH_TRANSACTIONS_MAX: usize = 100_000;

fn storage<E: std::fmt::Display>(e: E) -> LedgerError {
    LedgerError::Storage {
        reason: e.to_string(),
    }
}

fn corrupt<E: std::fmt::Display>(e: E) -> LedgerError {
    LedgerError::Corrupt {
        reason: e.to_string(),
    }
}

/// One committed sub-DAG as the ledger sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The consensus commit index: batches execute in this order, without gaps.
    pub index: u64,
    pub timestamp: TimestampMs,
    /// What every draw of this batch derives from: the beacon value of its commit
    /// ([`crate::beacon`]), fixed only after the commit's content was.
    pub seed: [u8; 32],
    pub transactions: Vec<Bytes>,
}

/// A batch whose transactions are decoded and signature-checked, ready to execute.
#[derive(Debug)]
pub struct PreparedBatch {
    index: u64,
    timestamp: TimestampMs,
    seed: [u8; 32],
    chain_id: String,
    checked: Vec<LedgerResult<SignedTransaction>>,
    too_many: Option<usize>,
    prepare_time: std::time::Duration,
}

impl PreparedBatch {
    /// Decodes every transaction and checks chain id and signatures on every core. Needs no
    /// ledger state: it may run while the previous batch executes.
    pub fn prepare(batch: &Batch, chain_id: &str) -> PreparedBatch {
        let started = std::time::Instant::now();
        let too_many =
            (batch.transactions.len() > BATCH_TRANSACTIONS_MAX).then_some(batch.transactions.len());
        let checked = if too_many.is_some() {
            Vec::new()
        } else {
            let decoded: Vec<LedgerResult<SignedTransaction>> = batch
                .transactions
                .iter()
                .map(|b| SignedTransaction::decode(b))
                .collect();
            let ok: Vec<SignedTransaction> = decoded
                .iter()
                .filter_map(|d| d.as_ref().ok().cloned())
                .collect();
            let mut verified = verify_all(&ok, chain_id).into_iter();
            decoded
                .into_iter()
                .map(|d| {
                    let tx = d?;
                    verified
                        .next()
                        .expect("one result per decoded transaction")?;
                    Ok(tx)
                })
                .collect()
        };
        PreparedBatch {
            index: batch.index,
            timestamp: batch.timestamp,
            seed: batch.seed,
            chain_id: chain_id.to_string(),
            checked,
            too_many,
            prepare_time: started.elapsed(),
        }
    }

    pub fn index(&self) -> u64 {
        self.index
    }
}

struct BatchHeader {
    index: u64,
    timestamp: TimestampMs,
    seed: [u8; 32],
}

/// What happened to one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_hash: Option<[u8; 32]>,
    /// The fee charged: the whole fee once the nonce, expiry and fee checks passed (even when
    /// the call then failed), nothing otherwise.
    pub fee_paid: trainmesh_contracts::Amount,
    pub outcome: Result<Vec<Event>, Rejection>,
}

/// A rejected transaction: the stable code and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl From<&LedgerError> for Rejection {
    fn from(e: &LedgerError) -> Rejection {
        Rejection {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    pub height: u64,
    pub state_root: [u8; 32],
    pub receipts: Vec<Receipt>,
    /// Events of the end-of-batch work (deadlines, timeouts, governance).
    pub end_events: Vec<Event>,
    /// Where the time went (metrics and benchmarks; not part of any state).
    pub timings: BatchTimings,
}

/// Wall time of the phases of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchTimings {
    pub decode_and_verify: std::time::Duration,
    pub execute: std::time::Duration,
    pub merkle_and_commit: std::time::Duration,
}

impl BatchOutcome {
    pub fn accepted(&self) -> usize {
        self.receipts.iter().filter(|r| r.outcome.is_ok()).count()
    }
}

/// Where the ledger stands (kept beside the state, not in it: a batch of rejected transactions
/// leaves the state root as it was).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    height: u64,
    next_index: u64,
    timestamp: TimestampMs,
    /// The Merkle tree's version: bumped by every batch that changes the state.
    tree_version: u64,
}

/// A value and its Merkle proof against a state root: what a light client checks.
#[derive(Debug)]
pub struct StateProof {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub proof: jmt::proof::SparseMerkleProof<Sha256>,
}

impl StateProof {
    /// Checks that `key` holds `value` (or nothing) under `root`.
    pub fn verify(&self, root: [u8; 32]) -> bool {
        self.proof
            .verify(
                RootHash(root),
                KeyHash::with::<Sha256>(&self.key),
                self.value.as_deref(),
            )
            .is_ok()
    }
}

/// The state of one batch: redb underneath, this batch's writes on top.
struct BatchState<'a, 't> {
    table: &'a Table<'t, &'static [u8], &'static [u8]>,
    recent: &'a ValueCache,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl State for BatchState<'_, '_> {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.recent.values.get(key) {
            return Ok(v.clone());
        }
        self.table
            .get(key)
            .map(|v| v.map(|v| v.value().to_vec()))
            .map_err(|e| ContractError::Storage(e.to_string()))
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}

/// The committed values of recently changed keys, so execution does not read them from redb
/// again. Only a lookup aid, like the tree's node cache: filled after a commit succeeds (with
/// exactly what it committed), empty after a restart.
#[derive(Debug, Default)]
struct ValueCache {
    values: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl ValueCache {
    /// Values kept in memory, at most.
    const VALUES_MAX: usize = 1_000_000;

    fn apply(&mut self, committed: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if self.values.len() + committed.len() > Self::VALUES_MAX {
            self.values.clear();
        }
        self.values.extend(committed);
    }
}

/// What the caches learn from a batch once it is committed.
#[derive(Debug, Default)]
struct Learned {
    nodes: CacheUpdate,
    values: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// A read-only view of the committed state.
struct ReadState<'a> {
    table: &'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl State for ReadState<'_> {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>> {
        self.table
            .get(key)
            .map(|v| v.map(|v| v.value().to_vec()))
            .map_err(|e| ContractError::Storage(e.to_string()))
    }
    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) {
        unreachable!("read-only state is never written")
    }
    fn delete(&mut self, _key: &[u8]) {
        unreachable!("read-only state is never written")
    }
}

/// The ledger over one redb database.
#[derive(Debug)]
pub struct Ledger {
    db: Database,
    cache: NodeCache,
    values: ValueCache,
    chain_id: String,
    position: Position,
    root: [u8; 32],
}

impl Ledger {
    /// Opens (or creates) the ledger file; call [`Ledger::init`] once with the genesis.
    pub fn open(path: impl AsRef<Path>) -> LedgerResult<Ledger> {
        Ledger::from_db(Database::create(path).map_err(storage)?)
    }

    /// Opens over any redb storage backend (tests use one that fails on purpose).
    pub fn open_with_backend(backend: impl StorageBackend) -> LedgerResult<Ledger> {
        Ledger::from_db(
            Database::builder()
                .create_with_backend(backend)
                .map_err(storage)?,
        )
    }

    fn from_db(db: Database) -> LedgerResult<Ledger> {
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(STATE).map_err(storage)?;
            txn.open_table(JMT_NODES).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(RECEIPTS).map_err(storage)?;
            txn.open_table(END_EVENTS).map_err(storage)?;
            txn.open_table(TX_HEIGHTS).map_err(storage)?;
            txn.open_table(ACCOUNT_HEIGHTS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let mut ledger = Ledger {
            db,
            cache: NodeCache::default(),
            values: ValueCache::default(),
            chain_id: String::new(),
            position: Position::default(),
            root: [0; 32],
        };
        ledger.load_meta()?;
        Ok(ledger)
    }

    fn load_meta(&mut self) -> LedgerResult<()> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        if let Some(v) = meta.get("chain_id").map_err(storage)? {
            self.chain_id = String::from_utf8(v.value().to_vec()).map_err(corrupt)?;
        }
        if let Some(v) = meta.get("position").map_err(storage)? {
            self.position = bcs::from_bytes(v.value()).map_err(corrupt)?;
        }
        if let Some(v) = meta.get("root").map_err(storage)? {
            self.root = v.value().try_into().map_err(corrupt)?;
        }
        Ok(())
    }

    pub fn is_initialized(&self) -> bool {
        !self.chain_id.is_empty()
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Batches executed so far.
    pub fn height(&self) -> u64 {
        self.position.height
    }

    /// The consensus index of the next batch to execute.
    pub fn next_index(&self) -> u64 {
        self.position.next_index
    }

    pub fn state_root(&self) -> [u8; 32] {
        self.root
    }

    /// Writes the genesis state. On a ledger that has one already, only checks it is the same.
    pub fn init(&mut self, genesis: &Genesis) -> LedgerResult<()> {
        let hash = hex::encode(blake3::hash(&bcs::to_bytes(genesis).map_err(corrupt)?).as_bytes());
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let meta = txn.open_table(META).map_err(storage)?;
            let existing = meta
                .get("genesis_hash")
                .map_err(storage)?
                .map(|v| String::from_utf8_lossy(v.value()).to_string());
            if let Some(existing) = existing {
                if existing != hash {
                    return Err(LedgerError::GenesisMismatch {
                        existing,
                        given: hash,
                    });
                }
                return Ok(());
            }
        }
        let root = {
            let mut table = txn.open_table(STATE).map_err(storage)?;
            let mut bs = BatchState {
                table: &table,
                recent: &self.values,
                writes: BTreeMap::new(),
            };
            genesis
                .apply(&mut bs)
                .map_err(|e| LedgerError::InvalidGenesis {
                    reason: e.to_string(),
                })?;
            let writes = bs.writes;
            Self::commit_writes(&txn, &mut table, writes, 0, &self.cache)?
                .map_or([0; 32], |(root, _)| root)
        };
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert("genesis_hash", hash.as_bytes())
                .map_err(storage)?;
            meta.insert("chain_id", genesis.chain_id.as_bytes())
                .map_err(storage)?;
            let position = Position {
                height: 0,
                next_index: 0,
                timestamp: TimestampMs(genesis.genesis_time_ms),
                tree_version: 0,
            };
            meta.insert(
                "position",
                bcs::to_bytes(&position).map_err(corrupt)?.as_slice(),
            )
            .map_err(storage)?;
            meta.insert("root", root.as_slice()).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        self.load_meta()
    }

    /// Applies a batch's writes to the state table and the Merkle tree at `version`; returns the
    /// new root, or `None` when nothing changed.
    fn commit_writes(
        txn: &redb::WriteTransaction,
        table: &mut Table<&'static [u8], &'static [u8]>,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        version: Version,
        cache: &NodeCache,
    ) -> LedgerResult<Option<([u8; 32], Learned)>> {
        // One table operation per write: it returns the value it replaces, and a write of the
        // value already there changes nothing (rewriting it leaves the table as it was).
        let mut before = HashMap::with_capacity(writes.len());
        let mut changed = Vec::with_capacity(writes.len());
        for (k, v) in writes {
            let old = match &v {
                Some(v) => table.insert(k.as_slice(), v.as_slice()),
                None => table.remove(k.as_slice()),
            }
            .map_err(storage)?
            .map(|old| old.value().to_vec());
            if old != v {
                changed.push((KeyHash::with::<Sha256>(&k), k.clone(), v));
                before.insert(k, old);
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        let mut nodes = txn.open_table(JMT_NODES).map_err(storage)?;
        let mut names: HashMap<KeyHash, &[u8]> = HashMap::with_capacity(changed.len());
        let mut values = Vec::with_capacity(changed.len());
        for (h, k, v) in &changed {
            names.insert(*h, k.as_slice());
            values.push((*h, v.clone()));
        }
        let (root, update) = {
            let reader = TreeStore {
                nodes: &nodes,
                state: &*table,
                cache,
                before: Some(&before),
                proved: None,
            };
            let tree = Sha256Jmt::new(&reader);
            if values.iter().all(|(_, v)| v.is_some()) {
                // One pass over the sorted keys: much faster than inserting key by key, and the
                // same tree (a test checks both paths agree).
                let values = values
                    .into_iter()
                    .map(|(h, v)| (h, v.expect("checked above")))
                    .collect();
                let (roots, update) = tree
                    .batch_put_value_sets(vec![values], None, version)
                    .map_err(storage)?;
                (roots[0], update)
            } else {
                // Deletions need the general path.
                tree.put_value_set(values, version).map_err(storage)?
            }
        };
        let nodes = tree::write_update(&mut nodes, cache, &update, &names)?;
        drop(names);
        let values = changed.into_iter().map(|(_, k, v)| (k, v)).collect();
        Ok(Some((root.0, Learned { nodes, values })))
    }

    /// Executes one committed batch atomically: every transaction (or its rejection), the
    /// end-of-batch work, the new root and position, all in one redb write transaction.
    pub fn execute(&mut self, batch: &Batch) -> LedgerResult<BatchOutcome> {
        let prepared = PreparedBatch::prepare(batch, &self.chain_id);
        self.execute_prepared(prepared)
    }

    /// Executes a batch whose transactions were decoded and checked by
    /// [`PreparedBatch::prepare`] (which needs no access to the ledger, so a node can prepare the
    /// next batch on other cores while this one executes).
    pub fn execute_prepared(&mut self, prepared: PreparedBatch) -> LedgerResult<BatchOutcome> {
        let PreparedBatch {
            index,
            timestamp,
            seed,
            chain_id,
            checked,
            too_many,
            prepare_time,
        } = prepared;
        if chain_id != self.chain_id {
            return Err(LedgerError::WrongChainId {
                expected: self.chain_id.clone(),
                actual: chain_id,
            });
        }
        let batch = BatchHeader {
            index,
            timestamp,
            seed,
        };
        if !self.is_initialized() {
            return Err(LedgerError::NoGenesis);
        }
        let expected = self.position.next_index;
        if batch.index < expected {
            return Err(LedgerError::BatchAlreadyExecuted { index: batch.index });
        }
        if batch.index > expected {
            return Err(LedgerError::BatchOutOfOrder {
                expected,
                actual: batch.index,
            });
        }
        if let Some(count) = too_many {
            return Err(LedgerError::Malformed {
                reason: format!(
                    "{count} transactions in one batch, the limit is {BATCH_TRANSACTIONS_MAX}"
                ),
            });
        }
        let mut timings = BatchTimings {
            decode_and_verify: prepare_time,
            ..BatchTimings::default()
        };
        let started = std::time::Instant::now();
        let height = self.position.height + 1;
        let ctx = Context {
            height,
            time: batch.timestamp.max(self.position.timestamp),
            seed: batch.seed,
        };
        let mut position = Position {
            height,
            next_index: batch.index + 1,
            timestamp: ctx.time,
            tree_version: self.position.tree_version,
        };
        let txn = self.db.begin_write().map_err(storage)?;
        let (receipts, end_events, root, cache_update) = {
            let mut table = txn.open_table(STATE).map_err(storage)?;
            let mut bs = BatchState {
                table: &table,
                recent: &self.values,
                writes: BTreeMap::new(),
            };
            let mut receipts = Vec::with_capacity(checked.len());
            // Constant within the batch: governance changes parameters only at its end.
            let rules = FeeRules::load(&bs)?;
            let mut validator_fees = trainmesh_contracts::Amount::ZERO;
            for tx in checked {
                let receipt = match tx {
                    Err(e) => Receipt {
                        tx_hash: None,
                        fee_paid: trainmesh_contracts::Amount::ZERO,
                        outcome: Err(Rejection::from(&e)),
                    },
                    Ok(tx) => {
                        let hash = tx.hash();
                        let applied =
                            apply_transaction(&mut bs, &ctx, tx, rules, &mut validator_fees);
                        let (fee_paid, outcome) = match applied {
                            Ok(Charged { fee_paid, outcome }) => (fee_paid, outcome),
                            Err(e) => (trainmesh_contracts::Amount::ZERO, Err(e)),
                        };
                        match outcome {
                            // Storage failures abort the whole batch; rejections are receipts.
                            Err(
                                e @ (LedgerError::Storage { .. } | LedgerError::Corrupt { .. }),
                            ) => return Err(e),
                            outcome => Receipt {
                                tx_hash: Some(hash),
                                fee_paid,
                                outcome: outcome.map_err(|e| Rejection::from(&e)),
                            },
                        }
                    }
                };
                receipts.push(receipt);
            }
            let end_events = {
                let mut overlay = Overlay::new(&mut bs);
                // The validators' share of the batch's fees, by committee stake.
                let mut paid = trainmesh_contracts::events::Events::default();
                trainmesh_contracts::staking::pay_validators(
                    &mut overlay,
                    &ctx,
                    validator_fees,
                    false,
                    &mut paid,
                )?;
                let mut events = paid.0;
                events.extend(calls::on_batch_end(&mut overlay, &ctx)?);
                overlay.commit();
                events
            };
            let writes = bs.writes;
            timings.execute = started.elapsed();
            let next_version = position.tree_version + 1;
            let (root, cache_update) =
                match Self::commit_writes(&txn, &mut table, writes, next_version, &self.cache)? {
                    Some((root, update)) => {
                        position.tree_version = next_version;
                        (root, update)
                    }
                    None => (self.root, Learned::default()),
                };
            (receipts, end_events, root, cache_update)
        };
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(
                "position",
                bcs::to_bytes(&position).map_err(corrupt)?.as_slice(),
            )
            .map_err(storage)?;
            meta.insert("root", root.as_slice()).map_err(storage)?;
            let mut rt = txn.open_table(RECEIPTS).map_err(storage)?;
            rt.insert(
                height,
                bcs::to_bytes(&receipts).map_err(corrupt)?.as_slice(),
            )
            .map_err(storage)?;
            if !end_events.is_empty() {
                let mut et = txn.open_table(END_EVENTS).map_err(storage)?;
                et.insert(
                    height,
                    bcs::to_bytes(&end_events).map_err(corrupt)?.as_slice(),
                )
                .map_err(storage)?;
            }
            index_batch(&txn, height, &receipts, &end_events)?;
        }
        txn.commit().map_err(storage)?;
        self.cache.apply(cache_update.nodes);
        self.values.apply(cache_update.values);
        timings.merkle_and_commit = started.elapsed() - timings.execute;
        self.position = position;
        self.root = root;
        Ok(BatchOutcome {
            height,
            state_root: root,
            receipts,
            end_events,
            timings,
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&ReadState) -> LedgerResult<T>) -> LedgerResult<T> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(STATE).map_err(storage)?;
        f(&ReadState { table: &table })
    }

    /// What executing `tx` next would do, against the committed state, writing nothing: its
    /// events, or the error its receipt would carry. A nonce ahead of the account's is taken as
    /// is (the transactions before it may still be on their way); the stateless checks (chain id,
    /// signature) are the caller's.
    pub fn simulate(&self, tx: SignedTransaction) -> LedgerResult<Vec<Event>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(STATE).map_err(storage)?;
        let mut base = ReadState { table: &table };
        // Writes stay in this overlay, which is dropped uncommitted.
        let mut scratch = Overlay::new(&mut base);
        let sender = tx.sender();
        let mut account = accounts::load(&scratch, &sender)?;
        if tx.transaction.nonce > account.nonce {
            account.nonce = tx.transaction.nonce;
            accounts::store(&mut scratch, &sender, &account);
        }
        let ctx = Context {
            height: self.position.height + 1,
            time: self.position.timestamp,
            seed: [0; 32],
        };
        let rules = FeeRules::load(&scratch)?;
        let mut fees = trainmesh_contracts::Amount::ZERO;
        apply_transaction(&mut scratch, &ctx, tx, rules, &mut fees)?.outcome
    }

    /// Reads a record of the committed state.
    pub fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> LedgerResult<Option<T>> {
        self.with_state(|s| Ok(s.read(key)?))
    }

    pub fn account(&self, address: &trainmesh_contracts::Address) -> LedgerResult<Account> {
        self.with_state(|s| Ok(accounts::load(s, address)?))
    }

    /// Every (key, value) of the committed state, in key order.
    pub fn entries(&self) -> LedgerResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(STATE).map_err(storage)?;
        let mut out = Vec::new();
        for e in table.iter().map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The receipts of the batch executed at `height`.
    pub fn receipts(&self, height: u64) -> LedgerResult<Vec<Receipt>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(RECEIPTS).map_err(storage)?;
        match table.get(height).map_err(storage)? {
            Some(v) => bcs::from_bytes(v.value()).map_err(corrupt),
            None => Ok(Vec::new()),
        }
    }

    /// The height of the receipt of the transaction `hash`: the one that charged its fee, or
    /// else its latest free refusal; `None` if no batch held it.
    pub fn tx_height(&self, hash: &[u8; 32]) -> LedgerResult<Option<u64>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TX_HEIGHTS).map_err(storage)?;
        let Some(v) = table.get(hash.as_slice()).map_err(storage)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.value()[..8]
            .try_into()
            .map_err(|_| corrupt("short transaction index entry"))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// The heights at or below `at_most` where `account` was paid or slashed, newest first, at
    /// most `limit` of them.
    pub fn account_heights(
        &self,
        account: &trainmesh_contracts::Address,
        at_most: u64,
        limit: usize,
    ) -> LedgerResult<Vec<u64>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(ACCOUNT_HEIGHTS).map_err(storage)?;
        let key = |h: u64| {
            let mut k = account.0.to_vec();
            k.extend_from_slice(&h.to_be_bytes());
            k
        };
        let (low, high) = (key(0), key(at_most));
        let mut out = Vec::new();
        for entry in table
            .range(low.as_slice()..=high.as_slice())
            .map_err(storage)?
            .rev()
            .take(limit)
        {
            let (k, _) = entry.map_err(storage)?;
            let bytes: [u8; 8] = k.value()[32..40]
                .try_into()
                .map_err(|_| corrupt("short account index entry"))?;
            out.push(u64::from_be_bytes(bytes));
        }
        Ok(out)
    }

    /// The events of the end of the batch executed at `height` (none when it did nothing).
    pub fn end_events(&self, height: u64) -> LedgerResult<Vec<Event>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(END_EVENTS).map_err(storage)?;
        match table.get(height).map_err(storage)? {
            Some(v) => bcs::from_bytes(v.value()).map_err(corrupt),
            None => Ok(Vec::new()),
        }
    }

    /// A key's value with its Merkle proof against the current root.
    pub fn prove(&self, key: &[u8]) -> LedgerResult<StateProof> {
        let txn = self.db.begin_read().map_err(storage)?;
        let nodes = txn.open_table(JMT_NODES).map_err(storage)?;
        let state = txn.open_table(STATE).map_err(storage)?;
        let reader = TreeStore {
            nodes: &nodes,
            state: &state,
            cache: &self.cache,
            before: None,
            proved: Some(key),
        };
        let (value, proof) = Sha256Jmt::new(&reader)
            .get_with_proof(KeyHash::with::<Sha256>(key), self.position.tree_version)
            .map_err(storage)?;
        Ok(StateProof {
            key: key.to_vec(),
            value,
            proof,
        })
    }
}

/// Writes the gateway's indexes of one batch: where each transaction's receipt is, and which
/// accounts were paid or slashed at this height.
fn index_batch(
    txn: &redb::WriteTransaction,
    height: u64,
    receipts: &[Receipt],
    end_events: &[Event],
) -> LedgerResult<()> {
    let mut by_hash = txn.open_table(TX_HEIGHTS).map_err(storage)?;
    for r in receipts {
        let Some(hash) = r.tx_hash else { continue };
        let charged = !r.fee_paid.is_zero();
        let known = by_hash
            .get(hash.as_slice())
            .map_err(storage)?
            .map(|v| v.value().get(8) == Some(&1));
        if known == Some(true) || (known == Some(false) && !charged) {
            continue;
        }
        let mut value = height.to_be_bytes().to_vec();
        value.push(u8::from(charged));
        by_hash
            .insert(hash.as_slice(), value.as_slice())
            .map_err(storage)?;
    }
    let mut by_account = txn.open_table(ACCOUNT_HEIGHTS).map_err(storage)?;
    let executed = receipts
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .flatten();
    for e in executed.chain(end_events) {
        let who = match e {
            Event::Paid { to, .. } => to,
            Event::Slashed { who, .. } => who,
            _ => continue,
        };
        let mut key = who.0.to_vec();
        key.extend_from_slice(&height.to_be_bytes());
        by_account.insert(key.as_slice(), ()).map_err(storage)?;
    }
    Ok(())
}

/// What the fee rules of a batch are (governance changes them only at a batch's end).
#[derive(Clone, Copy, Debug)]
struct FeeRules {
    min_fee: trainmesh_contracts::Amount,
    validator_share_bps: u32,
}

impl FeeRules {
    fn load(state: &impl State) -> LedgerResult<FeeRules> {
        let p = trainmesh_contracts::params::load(state)?;
        Ok(FeeRules {
            min_fee: p.min_fee,
            validator_share_bps: p.validator_share_bps,
        })
    }
}

/// A transaction that passed the checks its signer answers for (nonce, expiry, fee): its fee is
/// paid and its nonce used whatever the call does, so a call that fails still costs its sender.
struct Charged {
    fee_paid: trainmesh_contracts::Amount,
    outcome: LedgerResult<Vec<Event>>,
}

/// Checks nonce, expiry and fee, charges the fee and uses the nonce, then runs the call in an
/// overlay of its own. An error (`Err`) writes nothing and charges nothing: the transaction was
/// never valid here. A call that fails is undone, but its fee stays paid.
fn apply_transaction(
    state: &mut impl State,
    ctx: &Context,
    tx: SignedTransaction,
    rules: FeeRules,
    validator_fees: &mut trainmesh_contracts::Amount,
) -> LedgerResult<Charged> {
    let sender = tx.sender();
    let t = tx.transaction;
    let mut overlay = Overlay::new(state);
    let mut account = accounts::load(&overlay, &sender)?;
    if t.nonce < account.nonce {
        return Err(LedgerError::NonceReplayed {
            expected: account.nonce,
            actual: t.nonce,
        });
    }
    if t.nonce > account.nonce {
        return Err(LedgerError::NonceSkipped {
            expected: account.nonce,
            actual: t.nonce,
        });
    }
    if ctx.time.0 > t.expires_ms {
        return Err(LedgerError::Expired {
            expires_ms: t.expires_ms,
            time_ms: ctx.time.0,
        });
    }
    if t.fee < rules.min_fee {
        return Err(LedgerError::FeeTooLow {
            fee: t.fee,
            min_fee: rules.min_fee,
        });
    }
    if account.balance < t.fee {
        return Err(LedgerError::InsufficientBalance {
            available: account.balance,
            required: t.fee,
        });
    }
    account.nonce += 1;
    accounts::store(&mut overlay, &sender, &account);
    // The validators' share is paid at the end of the batch; the rest is burned now.
    let to_validators = t.fee.mul_bps(rules.validator_share_bps);
    let burned = t.fee.checked_sub(to_validators)?;
    accounts::debit(&mut overlay, &sender, t.fee)?;
    accounts::burn(&mut overlay, burned)?;
    let mut events = vec![Event::FeeBurned {
        payer: sender,
        amount: burned,
    }];
    let outcome = {
        let mut call = Overlay::new(&mut overlay);
        match calls::execute(&mut call, ctx, sender, t.call) {
            Ok(more) => {
                call.commit();
                events.extend(more);
                Ok(events)
            }
            Err(e) => Err(LedgerError::from(e)),
        }
    };
    overlay.commit();
    *validator_fees = validator_fees.checked_add(to_validators)?;
    Ok(Charged {
        fee_paid: t.fee,
        outcome,
    })
}
