//! A consensus message as a validator's coordinator receives it: decoded with the size limit,
//! validated against the committee, then handed to the core of authority 0.

use std::sync::OnceLock;

use trainmesh_dag::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Authority, AuthorityIndex, Committee, ConsensusMessage, Core, CoreConfig, DagError, Epoch,
    KeyPair, MemStore, TimestampMs, Validator,
};

/// Authorities in the fuzzed committee (one may be Byzantine: f = 1).
pub const AUTHORITIES: u32 = 4;

/// The committee every consensus target uses: four authorities of stake 1, keys from seeds
/// 0..4 (so a target can sign as any of them).
pub fn committee() -> &'static Committee {
    static COMMITTEE: OnceLock<Committee> = OnceLock::new();
    COMMITTEE.get_or_init(|| {
        let authorities = (0..AUTHORITIES)
            .map(|i| Authority {
                public_key: key(AuthorityIndex(i)).public(),
                stake: 1,
            })
            .collect();
        Committee::new(Epoch(0), authorities).expect("a committee of four distinct keys")
    })
}

/// The key of authority `index`.
pub fn key(index: AuthorityIndex) -> KeyPair {
    KeyPair::from_seed(u64::from(index.0))
}

pub fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| Validator::new(committee().clone(), CoreConfig::default()))
}

/// A fresh core of `me` on an empty store, and the actions it starts with.
pub fn fresh_core(me: AuthorityIndex, now: TimestampMs) -> Core<MemStore> {
    let (core, _) = Core::new(
        CoreConfig::default(),
        committee().clone(),
        me,
        key(me),
        MemStore::new(),
        now,
    )
    .expect("a fresh core starts");
    core
}

/// Errors that are not the sender's fault: with an in-memory store, none may happen.
pub fn is_local_failure(e: &DagError) -> bool {
    matches!(e, DagError::Storage { .. } | DagError::CorruptStore { .. })
}

/// The first byte picks the sending authority (1 to 3), the rest is the message.
pub fn dag_message(data: &[u8]) {
    let Some((&sender, bytes)) = data.split_first() else {
        return;
    };
    let from = AuthorityIndex(1 + u32::from(sender) % (AUTHORITIES - 1));
    let Ok(message) = decode::<ConsensusMessage>(bytes, MESSAGE_BYTES_MAX) else {
        return;
    };
    assert_eq!(
        encode(&message),
        bytes,
        "a decoded {} does not encode to the bytes it came from",
        message.kind()
    );
    let Ok(verified) = validator().verify_message(message) else {
        return;
    };
    let now = TimestampMs(1_000);
    let mut core = fresh_core(AuthorityIndex(0), now);
    if let Err(e) = core.handle_message(from, verified, now) {
        assert!(!is_local_failure(&e), "in-memory core failed: {e}");
    }
}
