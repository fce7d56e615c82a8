//! The persistent [`ConsensusStore`] on redb: one redb write transaction (one fsync) per batch,
//! whatever its size — the unit of group commit.
//!
//! Tables (values in the crate's canonical encoding):
//! - `own_headers`: `round ‖ digest → SignedHeader` (the headers we signed, until pruned)
//! - `latest_own_header`: `0 → round ‖ digest` (the key of the latest one)
//! - `votes`: `author → VoteRecord`
//! - `certificates`: `digest → tag ‖ …`: tag 0, then the `Certificate`; or tag 1, then the round
//!   (big-endian) and the votes, for a certificate of a header of ours, whose header (payload
//!   and all) is already in `own_headers` — what we propose is written once, not twice
//! - `certificates_by_round`: `round ‖ author ‖ digest → ()` (big-endian, so ranges are rounds)
//! - `commits`: `index → CommitRecord`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::encoding::{decode, encode, encode_into, encoded_len, MESSAGE_BYTES_MAX};
use crate::error::{DagError, DagResult};
use crate::messages::{Certificate, SignedHeader, VoteSignature};
use crate::store::{BatchWriter, CommitRecord, ConsensusStore, StoreBatch, VoteRecord};
use crate::types::{AuthorityIndex, Digest, Round};

const OWN_HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("own_headers");
const LATEST_OWN_HEADER: TableDefinition<u8, &[u8]> = TableDefinition::new("latest_own_header");
const VOTES: TableDefinition<u32, &[u8]> = TableDefinition::new("votes");
const CERTIFICATES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("certificates");
const CERTIFICATES_BY_ROUND: TableDefinition<&[u8], ()> =
    TableDefinition::new("certificates_by_round");
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");

fn storage<E: std::fmt::Display>(e: E) -> DagError {
    DagError::Storage {
        reason: e.to_string(),
    }
}

fn corrupt<E: std::fmt::Display>(e: E) -> DagError {
    DagError::CorruptStore {
        reason: e.to_string(),
    }
}

/// Tags of a `certificates` value.
/// redb's page cache. The core keeps what it works on in memory and reads the store back only
/// when it restarts or serves a peer's sync, so a small cache suffices; a large one would hold
/// every page written (redb caches what it writes) and grow by the write rate until full.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const CERTIFICATE_WHOLE: u8 = 0;
const CERTIFICATE_OF_OWN_HEADER: u8 = 1;

fn own_header_key(round: Round, digest: &Digest) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&round.0.to_be_bytes());
    key[8..].copy_from_slice(digest.as_bytes());
    key
}

fn round_key(round: Round, author: AuthorityIndex, digest: &Digest) -> [u8; 44] {
    let mut key = [0u8; 44];
    key[..8].copy_from_slice(&round.0.to_be_bytes());
    key[8..12].copy_from_slice(&author.0.to_be_bytes());
    key[12..].copy_from_slice(digest.as_bytes());
    key
}

/// A [`ConsensusStore`] in a redb file.
#[derive(Debug)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, creating its tables.
    pub fn open(path: impl AsRef<Path>) -> DagResult<RedbStore> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(OWN_HEADERS).map_err(storage)?;
            txn.open_table(LATEST_OWN_HEADER).map_err(storage)?;
            txn.open_table(VOTES).map_err(storage)?;
            txn.open_table(CERTIFICATES).map_err(storage)?;
            txn.open_table(CERTIFICATES_BY_ROUND).map_err(storage)?;
            txn.open_table(COMMITS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// A read-only handle on the same database, for another thread: redb's readers see the
    /// last committed write and never block the writer (nor it them).
    pub fn reader(&self) -> RedbReader {
        RedbReader {
            db: self.db.clone(),
        }
    }
}

/// Bounded reads of a [`RedbStore`] from another thread (serving peers' sync requests while the
/// core writes). Every read stops at its limits: none walks the store to its end.
#[derive(Clone, Debug)]
pub struct RedbReader {
    db: Arc<Database>,
}

impl RedbReader {
    /// At most `max` commit records from index `from` on, in order.
    pub fn commits_page(&self, from: u64, max: usize) -> DagResult<Vec<CommitRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(COMMITS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.range(from..).map_err(storage)?.take(max) {
            let (_, v) = entry.map_err(storage)?;
            out.push(decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// The lowest commit index still stored (older ones were pruned), if any.
    pub fn first_commit_index(&self) -> DagResult<Option<u64>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(COMMITS).map_err(storage)?;
        let first = t.first().map_err(storage)?;
        Ok(first.map(|(k, _)| k.value()))
    }

    pub fn certificate(&self, digest: &Digest) -> DagResult<Option<Certificate>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(CERTIFICATES).map_err(storage)?;
        let own = txn.open_table(OWN_HEADERS).map_err(storage)?;
        match t.get(digest.as_bytes()).map_err(storage)? {
            Some(v) => Ok(Some(read_certificate(&own, digest, v.value())?)),
            None => Ok(None),
        }
    }

    /// Certificates from position (`first`, `author`) to the end of round `last`, in (round,
    /// author) order: at most `max` of them and at most `bytes_max` encoded bytes (the first one
    /// always, so a page is never empty when there is something to give).
    pub fn certificates_in_rounds(
        &self,
        (first, author): (Round, AuthorityIndex),
        last: Round,
        max: usize,
        bytes_max: usize,
    ) -> DagResult<Vec<Certificate>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let idx = txn.open_table(CERTIFICATES_BY_ROUND).map_err(storage)?;
        let t = txn.open_table(CERTIFICATES).map_err(storage)?;
        let own = txn.open_table(OWN_HEADERS).map_err(storage)?;
        let start = round_key(first, author, &Digest::default());
        let end = round_key(
            last.saturating_add(1),
            AuthorityIndex(0),
            &Digest::default(),
        );
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in idx
            .range(start.as_slice()..end.as_slice())
            .map_err(storage)?
        {
            if out.len() >= max {
                break;
            }
            let (k, _) = entry.map_err(storage)?;
            let digest: [u8; 32] = k
                .value()
                .get(12..44)
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| corrupt("short certificate index key"))?;
            let v = t.get(&digest).map_err(storage)?.ok_or_else(|| {
                corrupt(format!(
                    "index names missing certificate {}",
                    Digest(digest)
                ))
            })?;
            let certificate = read_certificate(&own, &Digest(digest), v.value())?;
            if bytes_max < usize::MAX {
                bytes += encode(&certificate).len();
                if bytes > bytes_max && !out.is_empty() {
                    break;
                }
            }
            out.push(certificate);
        }
        Ok(out)
    }
}

/// Writes batches into a [`RedbStore`]'s database from another thread (redb runs one write
/// transaction at a time; a second waits for the first).
#[derive(Debug)]
pub struct RedbBatchWriter {
    db: Arc<Database>,
}

impl BatchWriter for RedbBatchWriter {
    fn write(&mut self, batch: StoreBatch) -> DagResult<()> {
        write_durably(&self.db, &batch)
    }
}

fn write_durably(db: &Database, batch: &StoreBatch) -> DagResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write().map_err(storage)?;
    write_batch(&txn, batch)?;
    txn.commit().map_err(storage)
}

impl ConsensusStore for RedbStore {
    fn write(&mut self, batch: StoreBatch) -> DagResult<()> {
        write_durably(&self.db, &batch)
    }

    fn batch_writer(&self) -> Option<Box<dyn BatchWriter>> {
        Some(Box::new(RedbBatchWriter {
            db: self.db.clone(),
        }))
    }

    fn own_header(&self) -> DagResult<Option<SignedHeader>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let latest = txn.open_table(LATEST_OWN_HEADER).map_err(storage)?;
        let Some(key) = latest.get(0u8).map_err(storage)? else {
            return Ok(None);
        };
        let headers = txn.open_table(OWN_HEADERS).map_err(storage)?;
        let v = headers
            .get(key.value())
            .map_err(storage)?
            .ok_or_else(|| corrupt("the latest own header is missing"))?;
        Ok(Some(decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?))
    }

    fn votes(&self) -> DagResult<BTreeMap<AuthorityIndex, VoteRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(VOTES).map_err(storage)?;
        let mut out = BTreeMap::new();
        for entry in t.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            out.insert(
                AuthorityIndex(k.value()),
                decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?,
            );
        }
        Ok(out)
    }

    fn certificates_from(&self, round: Round) -> DagResult<Vec<Certificate>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let idx = txn.open_table(CERTIFICATES_BY_ROUND).map_err(storage)?;
        let t = txn.open_table(CERTIFICATES).map_err(storage)?;
        let own = txn.open_table(OWN_HEADERS).map_err(storage)?;
        let start = round_key(round, AuthorityIndex(0), &Digest::default());
        let mut out = Vec::new();
        for entry in idx.range(start.as_slice()..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            let key = k.value();
            let digest: [u8; 32] = key
                .get(12..44)
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| corrupt("short certificate index key"))?;
            let v = t.get(&digest).map_err(storage)?.ok_or_else(|| {
                corrupt(format!(
                    "index names missing certificate {}",
                    Digest(digest)
                ))
            })?;
            out.push(read_certificate(&own, &Digest(digest), v.value())?);
        }
        Ok(out)
    }

    fn certificate(&self, digest: &Digest) -> DagResult<Option<Certificate>> {
        self.reader().certificate(digest)
    }

    fn certificates_page(
        &self,
        round: Round,
        author: AuthorityIndex,
        last_round: Round,
        max: usize,
    ) -> DagResult<Vec<Certificate>> {
        self.reader()
            .certificates_in_rounds((round, author), last_round, max, usize::MAX)
    }

    fn commit(&self, index: u64) -> DagResult<Option<CommitRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(COMMITS).map_err(storage)?;
        let Some(v) = t.get(index).map_err(storage)? else {
            return Ok(None);
        };
        let record: CommitRecord = decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?;
        if record.index != index {
            return Err(corrupt(format!(
                "commit key {index} holds the record of commit {}",
                record.index
            )));
        }
        Ok(Some(record))
    }

    fn commits_from(&self, index: u64) -> DagResult<Vec<CommitRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(COMMITS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.range(index..).map_err(storage)? {
            let (_, v) = entry.map_err(storage)?;
            out.push(decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?);
        }
        Ok(out)
    }

    fn last_commit(&self) -> DagResult<Option<CommitRecord>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(COMMITS).map_err(storage)?;
        let last = t.last().map_err(storage)?;
        match last {
            Some((_, v)) => Ok(Some(decode(v.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    fn prune(
        &mut self,
        commits_below_index: u64,
        certificates_below_round: Round,
    ) -> DagResult<()> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut commits = txn.open_table(COMMITS).map_err(storage)?;
            commits
                .retain_in(..commits_below_index, |_, _| false)
                .map_err(storage)?;
            let mut idx = txn.open_table(CERTIFICATES_BY_ROUND).map_err(storage)?;
            let mut certs = txn.open_table(CERTIFICATES).map_err(storage)?;
            let end = round_key(
                certificates_below_round,
                AuthorityIndex(0),
                &Digest::default(),
            );
            let mut doomed = Vec::new();
            for entry in idx.range(..end.as_slice()).map_err(storage)? {
                let (k, _) = entry.map_err(storage)?;
                doomed.push(k.value().to_vec());
            }
            for key in doomed {
                idx.remove(key.as_slice()).map_err(storage)?;
                if let Some(d) = key.get(12..44).and_then(|d| <[u8; 32]>::try_from(d).ok()) {
                    certs.remove(&d).map_err(storage)?;
                }
            }
            prune_own_headers(&txn, certificates_below_round)?;
        }
        txn.commit().map_err(storage)
    }
}

/// Applies one batch inside `txn`; every record is encoded once.
fn write_batch(txn: &WriteTransaction, batch: &StoreBatch) -> DagResult<()> {
    let mut own = txn.open_table(OWN_HEADERS).map_err(storage)?;
    if let Some(h) = &batch.own_header {
        let key = own_header_key(h.round(), &h.digest());
        own.insert(key.as_slice(), encode(h).as_slice())
            .map_err(storage)?;
        let mut latest = txn.open_table(LATEST_OWN_HEADER).map_err(storage)?;
        latest.insert(0u8, key.as_slice()).map_err(storage)?;
    }
    if !batch.votes.is_empty() {
        let mut t = txn.open_table(VOTES).map_err(storage)?;
        for (author, v) in &batch.votes {
            t.insert(author.0, encode(v).as_slice()).map_err(storage)?;
        }
    }
    if !batch.certificates.is_empty() {
        let mut t = txn.open_table(CERTIFICATES).map_err(storage)?;
        let mut idx = txn.open_table(CERTIFICATES_BY_ROUND).map_err(storage)?;
        for c in &batch.certificates {
            let digest = c.digest();
            let ours = own
                .get(own_header_key(c.round(), &digest).as_slice())
                .map_err(storage)?
                .is_some();
            if ours {
                t.insert(digest.as_bytes(), own_certificate_value(c).as_slice())
                    .map_err(storage)?;
            } else {
                // Encoded straight into the page that holds it: a certificate with a full
                // payload is copied once on its way to the file.
                let len = encoded_len(c);
                let mut slot = t
                    .insert_reserve(digest.as_bytes(), 1 + len)
                    .map_err(storage)?;
                let (tag, rest) = slot
                    .as_mut()
                    .split_first_mut()
                    .expect("a reserved value of 1 + len bytes");
                *tag = CERTIFICATE_WHOLE;
                encode_into(c, rest);
            }
            idx.insert(round_key(c.round(), c.author(), &digest).as_slice(), ())
                .map_err(storage)?;
        }
    }
    if !batch.commits.is_empty() {
        let mut t = txn.open_table(COMMITS).map_err(storage)?;
        for c in &batch.commits {
            t.insert(c.index, encode(c).as_slice()).map_err(storage)?;
        }
    }
    Ok(())
}

/// The `certificates` value of a certificate whose header is one of ours (already stored in
/// `own_headers`): its round and votes alone. Other certificates are stored whole, behind
/// [`CERTIFICATE_WHOLE`].
fn own_certificate_value(c: &Certificate) -> Vec<u8> {
    let votes = encode(&c.votes());
    let mut value = Vec::with_capacity(9 + votes.len());
    value.push(CERTIFICATE_OF_OWN_HEADER);
    value.extend_from_slice(&c.round().0.to_be_bytes());
    value.extend_from_slice(&votes);
    value
}

/// Reads a `certificates` value back, joining our own header to its votes.
fn read_certificate(
    own: &impl ReadableTable<&'static [u8], &'static [u8]>,
    digest: &Digest,
    value: &[u8],
) -> DagResult<Certificate> {
    match value.split_first() {
        Some((&CERTIFICATE_WHOLE, whole)) => decode(whole, MESSAGE_BYTES_MAX).map_err(corrupt),
        Some((&CERTIFICATE_OF_OWN_HEADER, rest)) => {
            let round: [u8; 8] = rest
                .get(..8)
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| corrupt("short certificate of an own header"))?;
            let votes: Vec<VoteSignature> =
                decode(&rest[8..], MESSAGE_BYTES_MAX).map_err(corrupt)?;
            let key = own_header_key(Round(u64::from_be_bytes(round)), digest);
            let header = own.get(key.as_slice()).map_err(storage)?.ok_or_else(|| {
                corrupt(format!("certificate {digest} names a missing own header"))
            })?;
            let header: SignedHeader =
                decode(header.value(), MESSAGE_BYTES_MAX).map_err(corrupt)?;
            if header.digest() != *digest {
                return Err(corrupt(format!("own header stored as {digest} is another")));
            }
            Ok(Certificate::new(Arc::new(header), votes))
        }
        _ => Err(corrupt(format!("certificate {digest}: unknown value tag"))),
    }
}

/// Forgets our headers of rounds below `round`, except the latest one (a restarted core must
/// still see what it last signed).
fn prune_own_headers(txn: &WriteTransaction, round: Round) -> DagResult<()> {
    let latest = txn.open_table(LATEST_OWN_HEADER).map_err(storage)?;
    let keep = latest
        .get(0u8)
        .map_err(storage)?
        .map(|k| k.value().to_vec());
    let mut own = txn.open_table(OWN_HEADERS).map_err(storage)?;
    let end = round.0.to_be_bytes();
    let mut doomed = Vec::new();
    for entry in own.range(..end.as_slice()).map_err(storage)? {
        let (k, _) = entry.map_err(storage)?;
        if keep.as_deref() != Some(k.value()) {
            doomed.push(k.value().to_vec());
        }
    }
    for key in doomed {
        own.remove(key.as_slice()).map_err(storage)?;
    }
    Ok(())
}
