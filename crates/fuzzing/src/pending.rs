//! Crashes the targets found whose fix belongs to code changed elsewhere. Each one's input sits
//! in `fuzz/regressions_pending/<target>/` (listed in `docs/design/fuzzing.md`). While a crash is
//! listed here, the targets skip the messages that reach it, so that fuzzing explores past it;
//! `tests/pending.rs` turns the skipping off and fails, naming the input, once one passes (then
//! the input moves to `fuzz/regressions/` and its entry here goes).

use std::sync::atomic::{AtomicBool, Ordering};

use trainmesh_dag::{Round, SyncRequest, VerifiedMessage};

static SKIP: AtomicBool = AtomicBool::new(true);

/// Lets every message through, pending crashes included (for `tests/pending.rs`).
pub fn stop_skipping() {
    SKIP.store(false, Ordering::Relaxed);
}

/// Whether `message` reaches a pending crash (and skipping is on):
/// - `SyncRequest::Rounds { after_round: u64::MAX }`: `Core::handle_sync_request` computes
///   `after_round.next()`, and `Round::next` overflows (`attempt to add with overflow`,
///   dag/src/types.rs, from dag/src/core.rs `handle_sync_request`); any peer can send it.
pub fn reaches_pending_crash(message: &VerifiedMessage) -> bool {
    SKIP.load(Ordering::Relaxed)
        && matches!(
            message,
            VerifiedMessage::SyncRequest(SyncRequest::Rounds { after_round })
                if *after_round == Round(u64::MAX)
        )
}
