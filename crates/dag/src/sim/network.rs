//! The simulated network: per-message delay (base, jitter, long tail), loss, duplication and
//! partitions before healing, slow validators for the whole run, and stragglers whose headers and
//! certificates reach some peers late.

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::Rng;

use crate::encoding::encode;
use crate::messages::{ConsensusMessage, SyncResponse};
use crate::types::AuthorityIndex;

use super::{Event, Simulator};

/// The authorities whose headers or certificates a message carries.
fn authors_carried(message: &ConsensusMessage) -> BTreeSet<AuthorityIndex> {
    match message {
        ConsensusMessage::Header(h) => BTreeSet::from([h.author()]),
        ConsensusMessage::Certificate(c) => BTreeSet::from([c.author()]),
        ConsensusMessage::CertificateSummary(s) => BTreeSet::from([s.author]),
        ConsensusMessage::SyncResponse(SyncResponse { certificates, .. }) => {
            certificates.iter().map(|c| c.author()).collect()
        }
        ConsensusMessage::Vote(_) | ConsensusMessage::SyncRequest(_) => BTreeSet::new(),
    }
}

impl Simulator {
    /// Encodes once and sends to each target.
    pub(super) fn send_message(
        &mut self,
        from: AuthorityIndex,
        targets: &[AuthorityIndex],
        message: &ConsensusMessage,
    ) {
        let bytes = Bytes::from(encode(message));
        let carried = authors_carried(message);
        for &to in targets {
            let extra = self.straggler_delay(to, &carried);
            self.send_bytes(from, to, bytes.clone(), extra);
        }
    }

    /// The extra delay of a message carrying `carried`'s headers or certificates to `to`.
    fn straggler_delay(&self, to: AuthorityIndex, carried: &BTreeSet<AuthorityIndex>) -> u64 {
        self.config
            .stragglers
            .iter()
            .filter(|s| {
                self.now_ms >= s.start_ms
                    && self.now_ms < s.end_ms
                    && s.victims.contains(&to)
                    && carried.contains(&s.node)
            })
            .map(|s| s.delay_ms)
            .max()
            .unwrap_or(0)
    }

    fn partitioned(&self, a: AuthorityIndex, b: AuthorityIndex) -> bool {
        self.config.partitions.iter().any(|p| {
            self.now_ms >= p.start_ms
                && self.now_ms < p.end_ms
                && p.groups.iter().any(|g| g.contains(&a) != g.contains(&b))
        })
    }

    /// Sends raw bytes (possibly garbage) with the network's delay plus `extra_ms`.
    pub(super) fn send_bytes(
        &mut self,
        from: AuthorityIndex,
        to: AuthorityIndex,
        bytes: Bytes,
        extra_ms: u64,
    ) {
        if from == to {
            return;
        }
        let before_heal = self.now_ms < self.config.heal_at_ms;
        if self.partitioned(from, to)
            || (before_heal && self.rng.gen_bool(self.config.drop_probability))
        {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if before_heal && self.rng.gen_bool(self.config.duplicate_probability) {
            2
        } else {
            1
        };
        let slow = |a: AuthorityIndex| self.config.slow_nodes.get(&a).copied().unwrap_or(0);
        let link_ms = slow(from) + slow(to) + extra_ms;
        for _ in 0..copies {
            let l = self.config.latency;
            let mut delay = l.base_ms + link_ms + self.rng.gen_range(0..=l.jitter_ms);
            if self.rng.gen_bool(l.tail_probability) {
                delay += self.rng.gen_range(0..=l.tail_ms);
            }
            self.schedule(
                self.now_ms + delay,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }
}
