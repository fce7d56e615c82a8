//! The key-value space contracts read and write, behind a narrow trait with an in-memory twin.
//!
//! Keys are namespaced byte strings (see `keys`); values are the canonical encoding (BCS) of the
//! record types. The ledger implements [`State`] over redb with per-transaction overlays.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ContractError, ContractResult};

/// The largest value a record may encode to.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

pub trait State {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
}

/// Typed access on top of [`State`].
pub trait StateExt: State {
    fn read<T: DeserializeOwned>(&self, key: &[u8]) -> ContractResult<Option<T>> {
        match self.get(key)? {
            Some(bytes) => bcs::from_bytes(&bytes).map(Some).map_err(|e| {
                ContractError::CorruptState(format!("record {}: {e}", String::from_utf8_lossy(key)))
            }),
            None => Ok(None),
        }
    }

    fn write<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        let bytes = bcs::to_bytes(value).expect("records always serialize");
        assert!(
            bytes.len() <= RECORD_BYTES_MAX,
            "record over {RECORD_BYTES_MAX} bytes"
        );
        self.put(key, bytes);
    }
}

impl<S: State + ?Sized> StateExt for S {}

/// The in-memory twin: a sorted map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemState {
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl State for MemState {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>> {
        Ok(self.entries.get(key).cloned())
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.entries.insert(key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }
}

/// Writes on top of another state, applied to it only on [`Overlay::commit`]: a failed
/// transaction leaves nothing behind.
#[derive(Debug)]
pub struct Overlay<'a, S: State + ?Sized> {
    base: &'a mut S,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, S: State + ?Sized> Overlay<'a, S> {
    pub fn new(base: &'a mut S) -> Overlay<'a, S> {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }

    pub fn commit(self) {
        for (k, v) in self.writes {
            match v {
                Some(v) => self.base.put(k, v),
                None => self.base.delete(&k),
            }
        }
    }
}

impl<S: State + ?Sized> State for Overlay<'_, S> {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}
