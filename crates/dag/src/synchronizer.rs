//! What waits for which parent, what is being fetched from whom, and catching up by rounds.
//!
//! Bookkeeping only: the core decides what to accept; this room remembers suspended headers and
//! certificates, the digests they wait for, and the requests to send. Every map is bounded, and
//! so that junk cannot crowd out honest work:
//! - headers waiting for parents are limited *per author* (`pending_headers_per_author_max`, and
//!   never more than an equal split of `pending_headers_max`), so one author's signed junk inside
//!   the round window fills only its own share;
//! - digests wanted only by headers may take at most half of `missing_certificates_max`; digests
//!   a certificate waits for (a quorum vouched for them) may take all of it. Beyond what is
//!   tracked, a missing parent is still asked once from the peer that referenced it (which holds
//!   it, if honest), so junk can exhaust what we track and retry, never what we ask for.
//!
//! Catching up pages through (round, author) positions: each reply continues from just after the
//! last certificate received, so a round larger than one reply is still crossed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::committee::Committee;
use crate::config::CoreConfig;
use crate::error::{DagError, DagResult};
use crate::messages::{Certificate, ConsensusMessage, SignedHeader, SyncRequest};
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs};

/// Something suspended until a certificate arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Waiter {
    Certificate(Digest),
    Header(Digest),
}

struct PendingCertificate {
    certificate: Certificate,
    missing: BTreeSet<Digest>,
}

struct PendingHeader {
    header: Arc<SignedHeader>,
    missing: BTreeSet<Digest>,
}

struct MissingCertificate {
    round: Round,
    /// Authorities that referenced it, asked first.
    referrers: Vec<AuthorityIndex>,
    /// How many requests were sent for it.
    attempts: usize,
    requested_at: TimestampMs,
    /// Whether a certificate waits for it (else only headers do).
    for_certificate: bool,
}

struct CatchUp {
    peer: AuthorityIndex,
    requested_at: TimestampMs,
    attempts: usize,
    /// The position asked for last.
    position: (Round, AuthorityIndex),
}

/// What became ready when a certificate was accepted.
#[derive(Default)]
pub(crate) struct Released {
    pub(crate) certificates: Vec<Certificate>,
    pub(crate) headers: Vec<Arc<SignedHeader>>,
}

pub(crate) struct Synchronizer {
    me: AuthorityIndex,
    committee: Committee,
    config: CoreConfig,
    pending_certificates: BTreeMap<Digest, PendingCertificate>,
    pending_headers: BTreeMap<Digest, PendingHeader>,
    headers_per_author: BTreeMap<AuthorityIndex, usize>,
    /// Missing digest → (its round, what waits for it).
    waiters: BTreeMap<Digest, (Round, BTreeSet<Waiter>)>,
    missing: BTreeMap<Digest, MissingCertificate>,
    missing_for_headers_only: usize,
    catch_up: Option<CatchUp>,
    behind_peer: Option<AuthorityIndex>,
}

/// A message to one peer.
pub(crate) type Request = (AuthorityIndex, ConsensusMessage);

impl Synchronizer {
    pub(crate) fn new(me: AuthorityIndex, committee: &Committee, config: &CoreConfig) -> Self {
        Synchronizer {
            me,
            committee: committee.clone(),
            config: config.clone(),
            pending_certificates: BTreeMap::new(),
            pending_headers: BTreeMap::new(),
            headers_per_author: BTreeMap::new(),
            waiters: BTreeMap::new(),
            missing: BTreeMap::new(),
            missing_for_headers_only: 0,
            catch_up: None,
            behind_peer: None,
        }
    }

    pub(crate) fn pending_certificates(&self) -> usize {
        self.pending_certificates.len()
    }
    pub(crate) fn pending_headers(&self) -> usize {
        self.pending_headers.len()
    }
    pub(crate) fn missing(&self) -> usize {
        self.missing.len()
    }

    pub(crate) fn is_pending(&self, digest: &Digest) -> bool {
        self.pending_certificates.contains_key(digest)
    }

    /// A peer showed us a round far above ours: catch up from it (one peer at a time).
    pub(crate) fn note_behind(&mut self, peer: AuthorityIndex) {
        if self.catch_up.is_none() {
            self.behind_peer = Some(peer);
        }
    }

    /// Suspends a certificate until `missing` arrive; returns the requests to send. A full
    /// queue drops it: it is fetched again when something refers to it.
    pub(crate) fn suspend_certificate(
        &mut self,
        certificate: Certificate,
        missing: BTreeSet<Digest>,
        from: AuthorityIndex,
        now: TimestampMs,
    ) -> Vec<Request> {
        let digest = certificate.digest();
        if self.pending_certificates.len() >= self.config.pending_certificates_max {
            return Vec::new();
        }
        let parent_round = certificate.round().prev();
        self.wait(&missing, parent_round, Waiter::Certificate(digest));
        let requests = self.request(&missing, parent_round, from, true, now);
        self.forget_missing(&digest);
        self.pending_certificates.insert(
            digest,
            PendingCertificate {
                certificate,
                missing,
            },
        );
        requests
    }

    /// Suspends a header until its parents arrive, within its author's share.
    pub(crate) fn suspend_header(
        &mut self,
        header: Arc<SignedHeader>,
        missing: BTreeSet<Digest>,
        from: AuthorityIndex,
        now: TimestampMs,
    ) -> DagResult<Vec<Request>> {
        let author = header.author();
        let count = self.headers_per_author.get(&author).copied().unwrap_or(0);
        // Each author's share: never more than an equal split of the whole queue.
        let max = self
            .config
            .pending_headers_per_author_max
            .min((self.config.pending_headers_max / self.committee.size()).max(1));
        if count >= max {
            return Err(DagError::AuthorQuotaExceeded { author, count, max });
        }
        if self.pending_headers.len() >= self.config.pending_headers_max
            || self.pending_headers.contains_key(&header.digest())
        {
            return Ok(Vec::new());
        }
        let parent_round = header.round().prev();
        self.wait(&missing, parent_round, Waiter::Header(header.digest()));
        let requests = self.request(&missing, parent_round, from, false, now);
        *self.headers_per_author.entry(author).or_default() += 1;
        self.pending_headers
            .insert(header.digest(), PendingHeader { header, missing });
        Ok(requests)
    }

    /// Fetches certificates a quorum vouched for (a summary's header we lack).
    pub(crate) fn fetch_certified(
        &mut self,
        digests: &BTreeSet<Digest>,
        round: Round,
        from: AuthorityIndex,
        now: TimestampMs,
    ) -> Vec<Request> {
        self.request(digests, round, from, true, now)
    }

    fn wait(&mut self, missing: &BTreeSet<Digest>, round: Round, waiter: Waiter) {
        for d in missing {
            self.waiters
                .entry(*d)
                .or_insert_with(|| (round, BTreeSet::new()))
                .1
                .insert(waiter);
        }
    }

    fn request(
        &mut self,
        digests: &BTreeSet<Digest>,
        round: Round,
        referrer: AuthorityIndex,
        for_certificate: bool,
        now: TimestampMs,
    ) -> Vec<Request> {
        let mut ask = Vec::new();
        for d in digests {
            if self.pending_certificates.contains_key(d) {
                continue; // Here already, waiting on its own parents.
            }
            if let Some(m) = self.missing.get_mut(d) {
                if !m.referrers.contains(&referrer) {
                    m.referrers.push(referrer);
                }
                if for_certificate && !m.for_certificate {
                    m.for_certificate = true;
                    self.missing_for_headers_only -= 1;
                }
                continue;
            }
            ask.push(*d);
            if !self.has_room_for_missing(for_certificate) {
                // Asked once from the referrer, which holds it, but not tracked for retries:
                // junk can exhaust what we track, never what we ask an honest referrer for.
                continue;
            }
            self.missing.insert(
                *d,
                MissingCertificate {
                    round,
                    referrers: vec![referrer],
                    attempts: 1,
                    requested_at: now,
                    for_certificate,
                },
            );
            if !for_certificate {
                self.missing_for_headers_only += 1;
            }
        }
        if referrer == self.me {
            return Vec::new();
        }
        self.digest_requests(referrer, ask)
    }

    fn has_room_for_missing(&self, for_certificate: bool) -> bool {
        let max = self.config.missing_certificates_max;
        if for_certificate {
            self.missing.len() < max
        } else {
            self.missing.len() < max && self.missing_for_headers_only < max / 2
        }
    }

    fn digest_requests(&self, peer: AuthorityIndex, digests: Vec<Digest>) -> Vec<Request> {
        digests
            .chunks(self.config.sync_digests_max.max(1))
            .map(|chunk| {
                let request = SyncRequest::Certificates {
                    digests: chunk.to_vec(),
                };
                (peer, ConsensusMessage::SyncRequest(request))
            })
            .collect()
    }

    fn forget_missing(&mut self, digest: &Digest) {
        if let Some(m) = self.missing.remove(digest) {
            if !m.for_certificate {
                self.missing_for_headers_only -= 1;
            }
        }
    }

    /// A certificate was accepted: what waited only for it is released.
    pub(crate) fn on_accepted(&mut self, digest: &Digest) -> Released {
        self.forget_missing(digest);
        let mut released = Released::default();
        let waiters = self
            .waiters
            .remove(digest)
            .map(|(_, w)| w)
            .unwrap_or_default();
        for waiter in waiters {
            match waiter {
                Waiter::Certificate(child) => {
                    let Some(p) = self.pending_certificates.get_mut(&child) else {
                        continue;
                    };
                    p.missing.remove(digest);
                    if p.missing.is_empty() {
                        let p = self.pending_certificates.remove(&child).expect("present");
                        released.certificates.push(p.certificate);
                    }
                }
                Waiter::Header(child) => {
                    let Some(p) = self.pending_headers.get_mut(&child) else {
                        continue;
                    };
                    p.missing.remove(digest);
                    if p.missing.is_empty() {
                        released.headers.push(self.remove_header(&child));
                    }
                }
            }
        }
        released
    }

    fn remove_header(&mut self, digest: &Digest) -> Arc<SignedHeader> {
        let p = self.pending_headers.remove(digest).expect("present");
        if let Some(n) = self.headers_per_author.get_mut(&p.header.author()) {
            *n -= 1;
            if *n == 0 {
                self.headers_per_author.remove(&p.header.author());
            }
        }
        p.header
    }

    /// The collection round rose: forget fetches below it, and release what waited only for
    /// collected parents (they count as present now).
    pub(crate) fn collect(&mut self, gc_round: Round) -> Released {
        let stale: Vec<Digest> = self
            .missing
            .iter()
            .filter(|(_, m)| m.round < gc_round)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            self.forget_missing(&d);
        }
        self.waiters.retain(|_, (round, _)| *round >= gc_round);
        let mut released = Released::default();
        let stale: Vec<Digest> = self
            .pending_certificates
            .iter()
            .filter(|(_, p)| p.certificate.round().prev() < gc_round)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            let p = self.pending_certificates.remove(&d).expect("present");
            if p.certificate.round() >= gc_round {
                released.certificates.push(p.certificate);
            }
        }
        let stale: Vec<Digest> = self
            .pending_headers
            .iter()
            .filter(|(_, p)| p.header.round().prev() < gc_round)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            let header = self.remove_header(&d);
            if header.round() >= gc_round {
                released.headers.push(header);
            }
        }
        released
    }

    /// The peer to ask on the n-th attempt: the referrers first, then everyone else in turn.
    fn peer_for_attempt(&self, referrers: &[AuthorityIndex], attempt: usize) -> AuthorityIndex {
        let others: Vec<AuthorityIndex> = referrers
            .iter()
            .copied()
            .chain(self.committee.indices().filter(|a| !referrers.contains(a)))
            .filter(|a| *a != self.me)
            .collect();
        others
            .get(attempt % others.len().max(1))
            .copied()
            .unwrap_or(self.me)
    }

    /// Fetches unanswered for `sync_retry_ms` go to the next peer; catching up starts or moves on.
    pub(crate) fn retry(
        &mut self,
        now: TimestampMs,
        from: (Round, AuthorityIndex),
    ) -> Vec<Request> {
        let mut by_peer: BTreeMap<AuthorityIndex, Vec<Digest>> = BTreeMap::new();
        let due: Vec<Digest> = self
            .missing
            .iter()
            .filter(|(_, m)| now.saturating_sub(m.requested_at) >= self.config.sync_retry_ms)
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            let m = self.missing.get_mut(&d).expect("due digests are missing");
            let (referrers, attempt) = (m.referrers.clone(), m.attempts);
            m.attempts += 1;
            m.requested_at = now;
            let peer = self.peer_for_attempt(&referrers, attempt);
            if peer != self.me {
                by_peer.entry(peer).or_default().push(d);
            }
        }
        let mut requests: Vec<Request> = by_peer
            .into_iter()
            .flat_map(|(peer, digests)| self.digest_requests(peer, digests))
            .collect();
        requests.extend(self.retry_catch_up(now, from));
        requests
    }

    fn retry_catch_up(
        &mut self,
        now: TimestampMs,
        from: (Round, AuthorityIndex),
    ) -> Option<Request> {
        let next = match (&self.catch_up, self.behind_peer.take()) {
            (Some(c), _) if now.saturating_sub(c.requested_at) >= self.config.sync_retry_ms => {
                let attempts = c.attempts + 1;
                if attempts >= self.committee.size() * 2 {
                    self.catch_up = None;
                    return None;
                }
                Some((
                    self.peer_for_attempt(&[c.peer], attempts),
                    attempts,
                    c.position,
                ))
            }
            (None, Some(p)) => Some((p, 0, from)),
            _ => None,
        };
        let (peer, attempts, position) = next?;
        if peer == self.me {
            return None;
        }
        Some(self.ask_rounds(peer, attempts, position, now))
    }

    fn ask_rounds(
        &mut self,
        peer: AuthorityIndex,
        attempts: usize,
        position: (Round, AuthorityIndex),
        now: TimestampMs,
    ) -> Request {
        self.catch_up = Some(CatchUp {
            peer,
            requested_at: now,
            attempts,
            position,
        });
        let request = SyncRequest::Rounds {
            round: position.0,
            author: position.1,
        };
        (peer, ConsensusMessage::SyncRequest(request))
    }

    /// A reply from the peer we catch up from: page on from just after its last certificate,
    /// or stop when it had nothing more.
    pub(crate) fn on_rounds_reply(
        &mut self,
        from: AuthorityIndex,
        answered: (Round, AuthorityIndex),
        last: Option<(Round, AuthorityIndex)>,
        now: TimestampMs,
    ) -> Option<Request> {
        let c = self.catch_up.as_ref().filter(|c| c.peer == from)?;
        let asked = c.position;
        if answered != asked {
            return None; // An old or unasked page.
        }
        let Some((round, author)) = last else {
            self.catch_up = None;
            return None;
        };
        let next = if author.as_usize() + 1 >= self.committee.size() {
            (round.next(), AuthorityIndex(0))
        } else {
            (round, AuthorityIndex(author.0 + 1))
        };
        if next <= asked {
            self.catch_up = None; // Not an answer to our page: stop rather than loop.
            return None;
        }
        Some(self.ask_rounds(from, 0, next, now))
    }

    /// When the next retry is due.
    pub(crate) fn next_deadline(&self) -> Option<TimestampMs> {
        let retry = self.config.sync_retry_ms;
        let fetches = self
            .missing
            .values()
            .map(|m| m.requested_at.saturating_add_ms(retry))
            .min();
        let catch_up = match (&self.catch_up, self.behind_peer) {
            (Some(c), _) => Some(c.requested_at.saturating_add_ms(retry)),
            (None, Some(_)) => Some(TimestampMs(0)),
            (None, None) => None,
        };
        match (fetches, catch_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
