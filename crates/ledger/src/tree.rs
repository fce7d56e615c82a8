//! The Jellyfish Merkle tree's storage: the tree of the latest version only, one record per nibble
//! path, in the `jmt_latest` table.
//!
//! Records:
//! - an internal node (or the null root of an empty tree): `I` ‖ version (8, big-endian) ‖
//!   Borsh(node);
//! - a leaf: `L` ‖ the state key it stands for. A leaf is (SHA-256(key), SHA-256(value)), and the
//!   value is in the `state` table, written in the same redb transaction: the record names the
//!   key only, so a write that changes a value but not the tree's shape rewrites no leaf record.
//!
//! Updating a node overwrites the record at its path; a path that holds no node any more loses
//! its record. All in the batch's write transaction: a crash leaves the previous tree or the new
//! one, as it leaves the previous state or the new one.

use std::collections::HashMap;

use jmt::storage::{LeafNode, NibblePath, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, ValueHash, Version};
use redb::{ReadableTable, Table, TableDefinition};
use sha2::Sha256;

use crate::error::{LedgerError, LedgerResult};

pub(crate) const JMT_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_latest");

const INTERNAL: u8 = b'I';
const LEAF: u8 = b'L';

fn corrupt<E: std::fmt::Display>(e: E) -> LedgerError {
    LedgerError::Corrupt {
        reason: e.to_string(),
    }
}

fn storage<E: std::fmt::Display>(e: E) -> LedgerError {
    LedgerError::Storage {
        reason: e.to_string(),
    }
}

/// A nibble path, packed two nibbles a byte, inline (no allocation, cheap to hash and compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PathId {
    packed: [u8; 32],
    nibbles: u8,
}

impl PathId {
    fn of(path: &NibblePath) -> PathId {
        let mut packed = [0u8; 32];
        for (i, nibble) in path.nibbles().enumerate() {
            packed[i / 2] |= u8::from(nibble) << if i % 2 == 0 { 4 } else { 0 };
        }
        PathId {
            packed,
            nibbles: path.num_nibbles() as u8,
        }
    }

    /// The table key: the packed path, then the nibble count (so the records of a subtree sit
    /// side by side).
    fn key(&self) -> ([u8; 33], usize) {
        let len = (self.nibbles as usize).div_ceil(2);
        let mut key = [0u8; 33];
        key[..len].copy_from_slice(&self.packed[..len]);
        key[len] = self.nibbles;
        (key, len + 1)
    }
}

/// The table key of a tree node.
fn path_key(path: &NibblePath) -> Vec<u8> {
    let (key, len) = PathId::of(path).key();
    key[..len].to_vec()
}

/// One record of the table, parsed.
enum Record<'a> {
    Internal { version: Version, node: &'a [u8] },
    Leaf { key: &'a [u8] },
}

fn parse(record: &[u8]) -> anyhow::Result<Record<'_>> {
    match record.split_first() {
        Some((&INTERNAL, rest)) if rest.len() > 8 => Ok(Record::Internal {
            version: Version::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
            node: &rest[8..],
        }),
        Some((&LEAF, key)) => Ok(Record::Leaf { key }),
        _ => anyhow::bail!("malformed tree record"),
    }
}

/// The latest tree's nodes in memory (by path, with their versions), so a batch does not read
/// and decode them from redb again. Only a lookup aid: it is filled after a commit succeeds, and a
/// restart begins with it empty.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    nodes: HashMap<PathId, (Version, Node)>,
}

impl NodeCache {
    /// Nodes kept in memory, at most (a few hundred bytes each).
    const NODES_MAX: usize = 1_000_000;

    fn get(&self, key: &NodeKey) -> Option<&Node> {
        self.at(&PathId::of(key.nibble_path()), key.version())
    }

    fn at(&self, path: &PathId, version: Version) -> Option<&Node> {
        match self.nodes.get(path) {
            Some((v, node)) if *v == version => Some(node),
            _ => None,
        }
    }

    pub(crate) fn apply(&mut self, update: CacheUpdate) {
        for (path, version) in &update.stale {
            if self.at(path, *version).is_some() {
                self.nodes.remove(path);
            }
        }
        if self.nodes.len() + update.fresh.len() > Self::NODES_MAX {
            self.nodes.clear();
        }
        self.nodes.extend(
            update
                .fresh
                .into_iter()
                .map(|(path, version, node)| (path, (version, node))),
        );
    }
}

/// What a committed batch changes in the node cache.
#[derive(Debug, Default)]
pub(crate) struct CacheUpdate {
    fresh: Vec<(PathId, Version, Node)>,
    stale: Vec<(PathId, Version)>,
}

/// The tree's view of redb.
pub(crate) struct TreeStore<'a, N, S> {
    pub nodes: &'a N,
    pub state: &'a S,
    pub cache: &'a NodeCache,
    /// The values, before the batch, of the keys the batch changed (`state` already holds the new
    /// ones): the tree being updated is the one before the batch.
    pub before: Option<&'a HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// The key whose value a proof asks for (the tree names keys by their hash only).
    pub proved: Option<&'a [u8]>,
}

impl<N, S> TreeStore<'_, N, S>
where
    S: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn value(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(before) = self.before.and_then(|b| b.get(key)) {
            return Ok(before.clone());
        }
        Ok(self.state.get(key)?.map(|v| v.value().to_vec()))
    }
}

impl<N, S> TreeReader for TreeStore<'_, N, S>
where
    N: ReadableTable<&'static [u8], &'static [u8]>,
    S: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(node) = self.cache.get(node_key) {
            return Ok(Some(node.clone()));
        }
        let Some(record) = self
            .nodes
            .get(path_key(node_key.nibble_path()).as_slice())?
        else {
            return Ok(None);
        };
        match parse(record.value())? {
            // The path holds a node of another version: the one asked for is gone.
            Record::Internal { version, .. } if version != node_key.version() => Ok(None),
            Record::Internal { node, .. } => Ok(Some(borsh::from_slice(node)?)),
            // Only the latest tree is kept, and its leaf at this path is this key's.
            Record::Leaf { key } => {
                let value = self
                    .value(key)?
                    .ok_or_else(|| anyhow::anyhow!("a leaf names a key without a value"))?;
                Ok(Some(Node::Leaf(LeafNode::new(
                    KeyHash::with::<Sha256>(key),
                    ValueHash::with::<Sha256>(&value),
                ))))
            }
        }
    }

    fn get_value_option(
        &self,
        _max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        // Only a proof reads values (updates need their hashes only), and a proof is for one key.
        let Some(key) = self.proved else {
            anyhow::bail!("the tree reads no values outside a proof");
        };
        anyhow::ensure!(
            KeyHash::with::<Sha256>(key) == key_hash,
            "the tree asked for the value of another key than the one proven"
        );
        self.value(key)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("tree restoration is not supported by the ledger store")
    }
}

/// Writes a tree update into the table. `changed` names the keys of the batch's changes by their
/// hashes. Returns what the cache learns once the transaction commits.
pub(crate) fn write_update(
    nodes: &mut Table<&'static [u8], &'static [u8]>,
    cache: &NodeCache,
    update: &TreeUpdateBatch,
    changed: &HashMap<KeyHash, &[u8]>,
) -> LedgerResult<CacheUpdate> {
    let fresh: Vec<(PathId, &NodeKey, &Node)> = update
        .node_batch
        .nodes()
        .iter()
        .map(|(k, n)| (PathId::of(k.nibble_path()), k, n))
        .collect();
    let mut fresh_at: HashMap<PathId, usize> = HashMap::with_capacity(fresh.len());
    for (i, (path, _, _)) in fresh.iter().enumerate() {
        fresh_at.insert(*path, i);
    }
    // Fresh nodes whose record is already right: a leaf of the same key at the same path (the
    // value, in `state`, is all that changed).
    let mut unchanged = vec![false; fresh.len()];
    // The keys of leaves that moved without changing (read before anything is overwritten).
    let mut moved: HashMap<KeyHash, Vec<u8>> = HashMap::new();
    let mut stale = Vec::with_capacity(update.stale_node_index_batch.len());
    for s in &update.stale_node_index_batch {
        let path = PathId::of(s.node_key.nibble_path());
        stale.push((path, s.node_key.version()));
        let (leaf_hash, state_key) = match cache.at(&path, s.node_key.version()) {
            Some(Node::Leaf(leaf)) => (Some(leaf.key_hash()), None),
            Some(_) => (None, None),
            None => {
                let (key, len) = path.key();
                match nodes.get(&key[..len]).map_err(storage)? {
                    Some(record) => match parse(record.value()).map_err(corrupt)? {
                        Record::Leaf { key } => {
                            (Some(KeyHash::with::<Sha256>(key)), Some(key.to_vec()))
                        }
                        Record::Internal { .. } => (None, None),
                    },
                    None => (None, None),
                }
            }
        };
        let Some(hash) = leaf_hash else {
            continue;
        };
        match fresh_at.get(&path).map(|&i| fresh[i].2) {
            Some(Node::Leaf(leaf)) if leaf.key_hash() == hash => {
                unchanged[fresh_at[&path]] = true;
            }
            _ => {}
        }
        if !changed.contains_key(&hash) {
            let key = match state_key {
                Some(key) => key,
                None => {
                    let (key, len) = path.key();
                    let record = nodes
                        .get(&key[..len])
                        .map_err(storage)?
                        .ok_or_else(|| corrupt("a stale leaf has no record"))?;
                    match parse(record.value()).map_err(corrupt)? {
                        Record::Leaf { key } => key.to_vec(),
                        Record::Internal { .. } => {
                            return Err(corrupt("a stale leaf is not a leaf"))
                        }
                    }
                }
            };
            moved.insert(hash, key);
        }
    }
    for (path, _) in &stale {
        if !fresh_at.contains_key(path) {
            let (key, len) = path.key();
            nodes.remove(&key[..len]).map_err(storage)?;
        }
    }
    let mut record = Vec::with_capacity(1024);
    for ((path, key, node), unchanged) in fresh.iter().zip(unchanged) {
        if unchanged {
            continue;
        }
        record.clear();
        if let Node::Leaf(leaf) = node {
            let hash = leaf.key_hash();
            let state_key = changed
                .get(&hash)
                .copied()
                .or_else(|| moved.get(&hash).map(Vec::as_slice))
                .ok_or_else(|| corrupt("a new leaf of an unknown key"))?;
            record.push(LEAF);
            record.extend_from_slice(state_key);
        } else {
            record.push(INTERNAL);
            record.extend_from_slice(&key.version().to_be_bytes());
            borsh::to_writer(&mut record, *node).map_err(corrupt)?;
        }
        let (table_key, len) = path.key();
        nodes
            .insert(&table_key[..len], record.as_slice())
            .map_err(storage)?;
    }
    Ok(CacheUpdate {
        fresh: fresh
            .into_iter()
            .map(|(path, k, n)| (path, k.version(), n.clone()))
            .collect(),
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nibble path from its Borsh form (its constructors are private to `jmt`).
    fn path(num_nibbles: u64, bytes: &[u8]) -> NibblePath {
        let mut encoded = num_nibbles.to_le_bytes().to_vec();
        encoded.extend((bytes.len() as u32).to_le_bytes());
        encoded.extend(bytes);
        borsh::from_slice(&encoded).unwrap()
    }

    #[test]
    fn path_keys_are_distinct_and_ordered_by_subtree() {
        assert_eq!(path_key(&path(4, &[0xab, 0xcd])), vec![0xab, 0xcd, 4]);
        assert_eq!(path_key(&path(3, &[0xab, 0xc0])), vec![0xab, 0xc0, 3]);
        assert_eq!(path_key(&path(0, &[])), vec![0]);
        // "0" (one nibble) and "00" (two) differ.
        assert_ne!(path_key(&path(1, &[0])), path_key(&path(2, &[0])));
        assert!(path_key(&path(2, &[0xab])) < path_key(&path(3, &[0xab, 0x10])));
    }
}
