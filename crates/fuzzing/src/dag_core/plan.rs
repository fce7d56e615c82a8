//! What the fuzzer chooses: a schedule of steps, honest traffic and Byzantine messages mixed.
//! Every field is a choice the Byzantine authority could make; the harness signs what it builds
//! with the Byzantine key, so the validator's signature check is passed and the core is reached.

use arbitrary::{Arbitrary, Result, Unstructured};

/// Steps one input runs at most (each may deliver many messages).
pub const STEPS_MAX: usize = 48;
/// Transactions in a Byzantine header, and bytes in one.
pub const PAYLOAD_TRANSACTIONS_MAX: usize = 4;
pub const TRANSACTION_BYTES_MAX: usize = 64;
/// Parents a custom parent list holds at most (the validator refuses more than the committee).
pub const PARENTS_MAX: usize = 6;
/// Digests in a Byzantine sync request (the validator refuses more than 512).
pub const SYNC_DIGESTS_MAX: usize = 520;
/// Certificates in a Byzantine sync response.
pub const SYNC_CERTIFICATES_MAX: usize = 8;

#[derive(Debug)]
pub struct Plan {
    /// Certificates of the Byzantine author may carry votes signed with honest keys (as if more
    /// than f authorities colluded): only the local invariants are checked then, not agreement.
    pub forge_votes: bool,
    pub steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Plan {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Plan> {
        let forge_votes = u.arbitrary()?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < STEPS_MAX {
            steps.push(u.arbitrary()?);
        }
        Ok(Plan { forge_votes, steps })
    }
}

#[derive(Arbitrary, Debug)]
pub enum Step {
    /// Delivers the oldest `count % 16 + 1` queued honest messages (within the run's budget).
    Deliver { count: u8 },
    /// Delivers one queued honest message out of order.
    DeliverOne { pick: u16 },
    /// Loses one queued honest message.
    Drop { pick: u16 },
    /// Time passes; one honest node (or all of them) runs its timers.
    Tick { advance_ms: u16, node: Option<u8> },
    /// The network runs well for a while: everything queued is delivered, every node ticks.
    Settle { rounds: u8 },
    /// A client submits a transaction to an honest node.
    Submit { node: u8, transaction: Vec<u8> },
    /// An honest node crashes and restarts from its store.
    Restart { node: u8 },
    /// The Byzantine authority sends a message to an honest node.
    Byzantine { to: u8, message: ByzantineMessage },
}

#[derive(Arbitrary, Debug)]
pub enum ByzantineMessage {
    Header(HeaderPlan),
    /// A vote for a header the Byzantine authority saw (or for any digest).
    Vote {
        header: u16,
        digest: Option<DigestPlan>,
        round: Option<RoundPlan>,
    },
    /// A certificate of a header of the Byzantine author, with the votes it gathered.
    Certificate {
        header: HeaderSource,
        voters: u8,
    },
    Summary {
        header: HeaderSource,
        voters: u8,
    },
    SyncRequest(SyncPlan),
    SyncResponse {
        certificates: Vec<CertificateSource>,
    },
    /// Sends again a message the Byzantine authority sent before.
    Replay {
        pick: u16,
    },
}

#[derive(Arbitrary, Debug)]
pub struct HeaderPlan {
    pub round: RoundPlan,
    pub parents: ParentsPlan,
    pub created_at: TimePlan,
    pub payload: Vec<Vec<u8>>,
}

/// A round, relative to the highest round the receiving node holds, or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum RoundPlan {
    Next,
    Offset(i8),
    Exact(u64),
    Max,
    BelowMax(u8),
}

#[derive(Arbitrary, Debug)]
pub enum ParentsPlan {
    /// Every certificate of the previous round the receiver holds.
    Quorum,
    /// The certificates of the previous round the receiver holds, by author bit mask.
    Some(u8),
    Custom(Vec<ParentPlan>),
}

#[derive(Arbitrary, Debug)]
pub enum ParentPlan {
    /// A certificate the receiver holds, `rounds_back` below the header.
    Real { rounds_back: u8, author: u8 },
    /// Any reference at all.
    Forged {
        author: u32,
        round: RoundPlan,
        digest: DigestPlan,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum DigestPlan {
    /// A digest the Byzantine authority has seen.
    Known(u16),
    Raw([u8; 32]),
}

/// A header's timestamp, relative to the clock or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum TimePlan {
    Now,
    Ahead(u32),
    Behind(u32),
    Exact(u64),
    Max,
}

#[derive(Arbitrary, Debug)]
pub enum HeaderSource {
    /// A header of the Byzantine author sent before.
    Sent(u16),
    New(HeaderPlan),
}

#[derive(Arbitrary, Debug)]
pub enum CertificateSource {
    /// A certificate of an honest author the Byzantine authority assembled.
    Seen(u16),
    Own {
        header: HeaderSource,
        voters: u8,
    },
}

#[derive(Arbitrary, Debug)]
pub enum SyncPlan {
    Certificates(Vec<DigestPlan>),
    Rounds(RoundPlan, u32),
}

/// Takes at most `max` items of an arbitrary list.
pub fn capped<T>(mut items: Vec<T>, max: usize) -> Vec<T> {
    items.truncate(max);
    items
}
