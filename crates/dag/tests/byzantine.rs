//! What one Byzantine validator can try against the core, and why it gains nothing: each test is
//! the attack, built by hand with real signatures, fed to real cores through validation.

use std::collections::BTreeSet;

use trainmesh_dag::encoding::encode;
use trainmesh_dag::leader_schedule::LeaderSchedule;
use trainmesh_dag::messages::VoteSignature;
use trainmesh_dag::test_dag::{DagBuilder, TestCommittee};
use trainmesh_dag::{
    Action, AuthorityIndex, Certificate, CertificateRef, CommittedSubDag, ConsensusMessage, Core,
    CoreConfig, DagError, Digest, Header, MemStore, Round, Signature, SignedHeader, SyncRequest,
    TimestampMs, Validator, Vote,
};

/// A core that never proposes on its own: it only orders what it is fed.
fn observer_config() -> CoreConfig {
    CoreConfig {
        max_header_delay_ms: u64::MAX / 4,
        leader_timeout_ms: u64::MAX / 4,
        resend_interval_ms: u64::MAX / 4,
        ..CoreConfig::default()
    }
}

struct Observer {
    core: Core<MemStore>,
    validator: Validator,
    commits: Vec<CommittedSubDag>,
    sent: Vec<(Option<AuthorityIndex>, ConsensusMessage)>,
    errors: Vec<DagError>,
}

impl Observer {
    fn new(tc: &TestCommittee, me: AuthorityIndex, config: CoreConfig) -> Observer {
        Observer::with_store(tc, me, config, MemStore::new())
    }

    fn with_store(
        tc: &TestCommittee,
        me: AuthorityIndex,
        config: CoreConfig,
        store: MemStore,
    ) -> Observer {
        let (core, _) = Core::new(
            config.clone(),
            tc.committee().clone(),
            me,
            tc.key_copy(me),
            store,
            TimestampMs(0),
        )
        .unwrap();
        Observer {
            core,
            validator: Validator::new(tc.committee().clone(), config),
            commits: Vec::new(),
            sent: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Feeds certificates as if each came from its author; refusals are kept, not fatal.
    fn feed(&mut self, certificates: &[Certificate]) {
        for c in certificates {
            self.deliver(c.author(), ConsensusMessage::Certificate(c.clone()), 0);
        }
    }

    fn deliver(&mut self, from: AuthorityIndex, message: ConsensusMessage, now: u64) {
        let result = self
            .validator
            .verify_message(message)
            .and_then(|m| self.core.handle_message(from, m, TimestampMs(now)));
        match result {
            Ok(actions) => self.absorb(actions),
            Err(e) => self.errors.push(e),
        }
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Commit(s) => self.commits.push(s),
                Action::Broadcast(m) => self.sent.push((None, m)),
                Action::Send { to, message } => self.sent.push((Some(to), message)),
                _ => {}
            }
        }
    }

    fn votes_sent(&self) -> usize {
        self.sent
            .iter()
            .filter(|(_, m)| matches!(m, ConsensusMessage::Vote(_)))
            .count()
    }

    fn encoded_commits(&self) -> Vec<Vec<u8>> {
        self.commits.iter().map(encode).collect()
    }
}

fn leader(tc: &TestCommittee, round: u64) -> AuthorityIndex {
    LeaderSchedule::new(tc.committee()).leader(Round(round))
}

fn refs(dag: &DagBuilder, names: &[(AuthorityIndex, u64)]) -> Vec<CertificateRef> {
    names
        .iter()
        .map(|(a, r)| dag.certificate(*a, Round(*r)).reference())
        .collect()
}

fn all_voters(tc: &TestCommittee) -> Vec<AuthorityIndex> {
    tc.committee().indices().collect()
}

/// A header signed by `author` with every field chosen by the caller.
fn signed(
    tc: &TestCommittee,
    author: AuthorityIndex,
    round: u64,
    created_at: u64,
    mut parents: Vec<CertificateRef>,
) -> SignedHeader {
    parents.sort_by_key(|p| p.author);
    let header = Header {
        epoch: tc.committee().epoch(),
        chain: tc.committee().chain(),
        round: Round(round),
        author,
        created_at: TimestampMs(created_at),
        parents,
        payload: vec![bytes::Bytes::from(format!("tx-{author}{round}"))],
    };
    SignedHeader::new(header, tc.key(author))
}

// ------------------------------------------------------------------------------------------------
// Parent references.

/// Leader of round 4 (Byzantine) signs a header whose three references claim three authors but
/// all carry the digest of one non-supporter of the round-2 leader; with a quorum of votes it
/// would be a vertex with one real parent. An observer that saw the round-2 leader's support
/// commits it; one that did not would commit the forged leader first and skip it for good.
#[test]
fn forged_parent_references_cannot_split_two_observers() {
    let tc = TestCommittee::new(4);
    let (l2, l4) = (leader(&tc, 2), leader(&tc, 4));
    let all = all_voters(&tc);
    let mut dag = DagBuilder::parse(&tc, "1: * -> *\n2: * -> *");
    let others: Vec<AuthorityIndex> = all.iter().copied().filter(|a| *a != l2).collect();
    // Round 3: two supporters of the round-2 leader, two non-supporters.
    let (s1, s2, n1, n2) = (all[0], all[1], all[2], all[3]);
    for s in [s1, s2] {
        let parents = refs(&dag, &all.iter().map(|a| (*a, 2)).collect::<Vec<_>>());
        dag.add(s, Round(3), parents);
    }
    for n in [n1, n2] {
        let parents = refs(&dag, &others.iter().map(|a| (*a, 2)).collect::<Vec<_>>());
        dag.add(n, Round(3), parents);
    }
    let n1_digest = dag.certificate(n1, Round(3)).digest();
    // The forged leader of round 4: three authors, one digest.
    let forged_parents = all
        .iter()
        .filter(|a| **a != s2)
        .map(|a| CertificateRef {
            author: *a,
            round: Round(3),
            digest: n1_digest,
        })
        .collect();
    let forged = tc.certify(signed(&tc, l4, 4, 400, forged_parents), &all);
    // Two honest round-4 certificates that see only one supporter, then f+1 support for the
    // forged leader at round 5.
    let honest4: Vec<AuthorityIndex> = all.iter().copied().filter(|a| *a != l4).take(2).collect();
    for a in &honest4 {
        dag.add(*a, Round(4), refs(&dag, &[(s1, 3), (n1, 3), (n2, 3)]));
    }
    let mut round5 = Vec::new();
    for a in &honest4 {
        let mut parents = refs(&dag, &[(honest4[0], 4), (honest4[1], 4)]);
        parents.push(forged.reference());
        round5.push(tc.certify(signed(&tc, *a, 5, 500, parents), &all));
    }
    let c = |a: AuthorityIndex, r: u64| dag.certificate(a, Round(r)).clone();
    let early: Vec<Certificate> = (1..=2)
        .flat_map(|r| all.iter().map(move |a| (*a, r)))
        .map(|(a, r)| c(a, r))
        .collect();
    let round4: Vec<Certificate> = honest4.iter().map(|a| c(*a, 4)).collect();

    // Observer 1: both supporters first. Observer 2: the second supporter last.
    let mut o1 = Observer::new(&tc, AuthorityIndex(3), observer_config());
    o1.feed(&early);
    o1.feed(&[c(s1, 3), c(s2, 3), c(n1, 3), c(n2, 3)]);
    o1.feed(&round4);
    o1.feed(std::slice::from_ref(&forged));
    o1.feed(&round5);
    let mut o2 = Observer::new(&tc, AuthorityIndex(3), observer_config());
    o2.feed(&early);
    o2.feed(&[c(s1, 3), c(n1, 3), c(n2, 3)]);
    o2.feed(&round4);
    o2.feed(std::slice::from_ref(&forged));
    o2.feed(&round5);
    o2.feed(&[c(s2, 3)]);

    assert!(!o1.commits.is_empty(), "the round-2 leader commits");
    assert_eq!(o1.encoded_commits(), o2.encoded_commits());
    for o in [&o1, &o2] {
        assert!(
            o.errors
                .iter()
                .any(|e| matches!(e, DagError::ParentMismatch { .. })),
            "the forged certificate is refused: {:?}",
            o.errors
        );
        let committed: BTreeSet<Digest> = o
            .commits
            .iter()
            .flat_map(|s| s.certificates.iter().map(|c| c.digest()))
            .collect();
        assert!(!committed.contains(&forged.digest()));
    }
}

#[test]
fn a_header_whose_references_lie_gets_no_vote() {
    let tc = TestCommittee::new(4);
    let dag = DagBuilder::parse(&tc, "1: * -> *");
    let all = all_voters(&tc);
    let a1 = dag.certificate(all[0], Round(1)).digest();
    let lying = all[..3]
        .iter()
        .map(|a| CertificateRef {
            author: *a,
            round: Round(1),
            digest: a1,
        })
        .collect();
    let mut o = Observer::new(&tc, all[3], observer_config());
    o.feed(&dag.certificates());
    o.deliver(
        all[1],
        ConsensusMessage::Header(signed(&tc, all[1], 2, 200, lying)),
        200,
    );
    assert_eq!(o.votes_sent(), 0);
    assert!(matches!(
        o.errors.as_slice(),
        [DagError::ParentMismatch { .. }]
    ));
    // The honest header of another author for the same round still gets its vote.
    let honest = signed(
        &tc,
        all[2],
        2,
        200,
        refs(&dag, &[(all[0], 1), (all[1], 1), (all[2], 1)]),
    );
    o.deliver(all[2], ConsensusMessage::Header(honest), 200);
    assert_eq!(o.votes_sent(), 1);
}

// ------------------------------------------------------------------------------------------------
// The collection floor and recovery.

/// The DAG of the straggler scenario (gc depth 2): authority `d` builds a chain d1 ← d2 ← … that
/// no one else references until a non-supporter of the round-4 leader does at round 5, so the
/// round-6 leader's history reaches down to round 1. One honest round-5 certificate supports the
/// round-4 leader; `d5` is the second supporter, which the "together" order delivers last. The
/// chain goes on (d6, d7) unreferenced until round 8, whose certificates reach d5 and, through
/// it, the round-4 leader again. [`rounds`] leaves d's certificates from round 5 on out.
struct Straggler<'a> {
    dag: DagBuilder<'a>,
    d: AuthorityIndex,
}

fn straggler_dag(tc: &TestCommittee) -> Straggler<'_> {
    let (l2, l4, l6) = (leader(tc, 2), leader(tc, 4), leader(tc, 6));
    let d = tc
        .committee()
        .indices()
        .find(|a| ![l2, l4, l6].contains(a))
        .expect("four authorities, three leaders at most");
    let honest: Vec<AuthorityIndex> = tc.committee().indices().filter(|a| *a != d).collect();
    let mut dag = DagBuilder::parse(tc, "1: * -> *");
    for r in 2..=4u64 {
        let honest_parents: Vec<_> = honest.iter().map(|a| (*a, r - 1)).collect();
        for a in &honest {
            let parents = refs(&dag, &honest_parents);
            dag.add(*a, Round(r), parents);
        }
        let parents = refs(&dag, &[(d, r - 1), (honest[0], r - 1), (honest[1], r - 1)]);
        dag.add(d, Round(r), parents);
    }
    let not_l4: Vec<AuthorityIndex> = honest.iter().copied().filter(|a| *a != l4).collect();
    let p = honest[0];
    for a in &honest {
        let parents = if *a == p {
            refs(&dag, &honest.iter().map(|h| (*h, 4)).collect::<Vec<_>>())
        } else {
            refs(&dag, &[(d, 4), (not_l4[0], 4), (not_l4[1], 4)])
        };
        dag.add(*a, Round(5), parents);
    }
    dag.add(d, Round(5), refs(&dag, &[(d, 4), (l4, 4), (not_l4[0], 4)]));
    for r in 6..=11u64 {
        let mut parents: Vec<_> = honest.iter().map(|a| (*a, r - 1)).collect();
        if r == 8 {
            parents.push((d, 7)); // The chain d5 ← d6 ← d7 joins the history again.
        }
        for a in &honest {
            let ps = refs(&dag, &parents);
            dag.add(*a, Round(r), ps);
        }
        if r <= 7 {
            let ps = refs(&dag, &[(d, r - 1), (honest[0], r - 1), (honest[1], r - 1)]);
            dag.add(d, Round(r), ps);
        }
    }
    Straggler { dag, d }
}

fn gc2() -> CoreConfig {
    CoreConfig {
        gc_depth_rounds: 2,
        ..observer_config()
    }
}

fn rounds(s: &Straggler, from: u64, to: u64) -> Vec<Certificate> {
    s.dag
        .certificates()
        .into_iter()
        .filter(|c| c.round().0 >= from && c.round().0 <= to)
        .filter(|c| !(c.round() >= Round(5) && c.author() == s.d))
        .collect()
}

#[test]
fn committing_leaders_one_by_one_or_together_gives_the_same_sequence() {
    let tc = TestCommittee::new(4);
    let s = straggler_dag(&tc);
    let d5 = s.dag.certificate(s.d, Round(5)).clone();
    // One by one: d5 arrives with round 5, so the round-4 leader commits on its own.
    let mut one_by_one = Observer::new(&tc, AuthorityIndex(0), gc2());
    one_by_one.feed(&rounds(&s, 1, 5));
    one_by_one.feed(std::slice::from_ref(&d5));
    one_by_one.feed(&rounds(&s, 6, 7));
    // Together: d5 arrives last, so the round-4 leader commits only through the round-6 one.
    let mut together = Observer::new(&tc, AuthorityIndex(0), gc2());
    together.feed(&rounds(&s, 1, 7));
    together.feed(&[d5]);
    let leaders = |o: &Observer| {
        o.commits
            .iter()
            .map(|c| c.leader.round.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(leaders(&one_by_one), vec![2, 4, 6]);
    assert_eq!(leaders(&together), vec![2, 4, 6]);
    assert_eq!(one_by_one.encoded_commits(), together.encoded_commits());
}

#[test]
fn a_restart_after_a_straggler_commit_never_commits_a_certificate_twice() {
    let tc = TestCommittee::new(4);
    let s = straggler_dag(&tc);
    let d5 = s.dag.certificate(s.d, Round(5)).clone();
    let mut o = Observer::new(&tc, AuthorityIndex(0), gc2());
    o.feed(&rounds(&s, 1, 5));
    o.feed(&[d5]);
    o.feed(&rounds(&s, 6, 7));
    let before = o.commits.clone();
    let mut restarted = Observer::with_store(&tc, AuthorityIndex(0), gc2(), o.core.into_store());
    let chain = [
        s.dag.certificate(s.d, Round(6)),
        s.dag.certificate(s.d, Round(7)),
    ];
    restarted.feed(&chain.map(|c| c.clone()));
    restarted.feed(&rounds(&s, 8, 11));
    assert!(!restarted.commits.is_empty(), "a later leader commits");
    let mut seen = BTreeSet::new();
    for c in before.iter().chain(&restarted.commits) {
        for cert in &c.certificates {
            assert!(
                seen.insert(cert.digest()),
                "{} committed twice (commit {})",
                cert.digest(),
                c.index
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Time.

#[test]
fn a_leader_stamping_the_far_future_cannot_move_the_commit_clock() {
    let tc = TestCommittee::new(4);
    let all = all_voters(&tc);
    let l2 = leader(&tc, 2);
    let dag = DagBuilder::parse(&tc, "1: * -> *");
    let round1 = refs(&dag, &all.iter().map(|a| (*a, 1)).collect::<Vec<_>>());
    let mut round2 = Vec::new();
    for a in &all {
        let at = if *a == l2 { u64::MAX } else { 200 };
        round2.push(tc.certify(signed(&tc, *a, 2, at, round1.clone()), &all));
    }
    let round2_refs: Vec<_> = round2.iter().map(|c| c.reference()).collect();
    let round3: Vec<_> = all
        .iter()
        .map(|a| tc.certify(signed(&tc, *a, 3, 300, round2_refs.clone()), &all))
        .collect();
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    o.feed(&dag.certificates());
    o.feed(&round2);
    o.feed(&round3);
    assert_eq!(o.commits.len(), 1);
    // The median of the leader's parents: all stamped 100 by the round-1 builder.
    assert_eq!(o.commits[0].timestamp, TimestampMs(100));
}

#[test]
fn a_header_from_beyond_the_clock_skew_or_before_its_parents_gets_no_vote() {
    let tc = TestCommittee::new(4);
    let all = all_voters(&tc);
    let dag = DagBuilder::parse(&tc, "1: * -> *"); // stamped 100
    let parents = refs(&dag, &all.iter().map(|a| (*a, 1)).collect::<Vec<_>>());
    let config = observer_config();
    let now = 10_000;
    let mut o = Observer::new(&tc, all[3], config.clone());
    o.feed(&dag.certificates());
    let future = now + config.max_clock_skew_ms + 1;
    o.deliver(
        all[0],
        ConsensusMessage::Header(signed(&tc, all[0], 2, future, parents.clone())),
        now,
    );
    o.deliver(
        all[1],
        ConsensusMessage::Header(signed(&tc, all[1], 2, 99, parents.clone())),
        now,
    );
    assert_eq!(o.votes_sent(), 0);
    assert!(matches!(o.errors[0], DagError::HeaderFromFuture { .. }));
    assert!(matches!(o.errors[1], DagError::HeaderBeforeParents { .. }));
    // Within the bound, it is voted for.
    let within = now + config.max_clock_skew_ms;
    o.deliver(
        all[2],
        ConsensusMessage::Header(signed(&tc, all[2], 2, within, parents)),
        now,
    );
    assert_eq!(o.votes_sent(), 1);
}

// ------------------------------------------------------------------------------------------------
// Signatures inside certificates.

#[test]
fn a_certificate_is_refused_when_its_header_signature_is_not_the_authors() {
    let tc = TestCommittee::new(4);
    let all = all_voters(&tc);
    let dag = DagBuilder::parse(&tc, "1: * -> *");
    let parents = refs(&dag, &all.iter().map(|a| (*a, 1)).collect::<Vec<_>>());
    let good = signed(&tc, all[0], 2, 200, parents);
    let junk = SignedHeader::with_signature(good.header().clone(), Signature([7; 64]));
    assert_ne!(
        good.digest(),
        junk.digest(),
        "the vertex digest covers the signature"
    );
    let certificate = tc.certify(junk, &all);
    let validator = Validator::new(tc.committee().clone(), observer_config());
    assert!(matches!(
        validator.verify_certificate(certificate),
        Err(DagError::InvalidSignature { what: "header", .. })
    ));
    // Votes for the well-signed header do not certify another signature of it.
    let votes: Vec<VoteSignature> = all
        .iter()
        .map(|v| VoteSignature {
            voter: *v,
            signature: Vote::new(&good, *v, tc.key(*v)).signature,
        })
        .collect();
    let resigned = SignedHeader::with_signature(good.header().clone(), Signature([9; 64]));
    let mixed = Certificate::new(std::sync::Arc::new(resigned), votes);
    assert!(validator.verify_certificate(mixed).is_err());
}

// ------------------------------------------------------------------------------------------------
// Rounds from the wire.

#[test]
fn rounds_beyond_the_wire_limit_are_refused_and_never_overflow() {
    let tc = TestCommittee::new(4);
    let validator = Validator::new(tc.committee().clone(), observer_config());
    let header = signed(&tc, AuthorityIndex(0), u64::MAX, 0, vec![]);
    assert!(matches!(
        validator.verify_message(ConsensusMessage::Header(header)),
        Err(DagError::RoundOutOfRange { .. })
    ));
    let request = SyncRequest::Rounds {
        round: Round(u64::MAX),
        author: AuthorityIndex(3),
    };
    assert!(matches!(
        validator.verify_message(ConsensusMessage::SyncRequest(request.clone())),
        Err(DagError::RoundOutOfRange { .. })
    ));
    // Even unvalidated, serving it does not overflow.
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    let reply = o.core.handle_sync_request(request);
    assert!(reply.is_some_and(|r| r.certificates.is_empty()));
    assert_eq!(Round(u64::MAX).next(), Round(u64::MAX));
}

// ------------------------------------------------------------------------------------------------
// Catching up, and junk inside the window.

#[test]
fn catch_up_pages_through_rounds_larger_than_one_reply() {
    let tc = TestCommittee::new(4);
    let config = CoreConfig {
        sync_response_certificates_max: 3,
        sync_rounds_max: 2,
        ..observer_config()
    };
    let dag = DagBuilder::parse(
        &tc,
        &(1..=12)
            .map(|r| format!("{r}: * -> *\n"))
            .collect::<String>(),
    );
    let mut server = Observer::new(&tc, AuthorityIndex(0), config.clone());
    server.feed(&dag.certificates());
    let mut client = Observer::new(&tc, AuthorityIndex(1), config);
    // The client hears of round 12 only: far ahead of it, so it catches up from that peer.
    let last = dag.certificate(AuthorityIndex(2), Round(12)).clone();
    client.deliver(AuthorityIndex(0), ConsensusMessage::Certificate(last), 0);
    let mut now = 0;
    for _ in 0..200 {
        now += 1_000;
        let actions = client.core.tick(TimestampMs(now)).unwrap();
        client.absorb(actions);
        let requests: Vec<_> = std::mem::take(&mut client.sent)
            .into_iter()
            .filter_map(|(to, m)| match m {
                ConsensusMessage::SyncRequest(r) if to == Some(AuthorityIndex(0)) => Some(r),
                _ => None,
            })
            .collect();
        for r in requests {
            if let Some(reply) = server.core.handle_sync_request(r) {
                client.deliver(
                    AuthorityIndex(0),
                    ConsensusMessage::SyncResponse(reply),
                    now,
                );
            }
        }
        let status = client.core.status();
        if status.highest_quorum_round == Round(12) && status.pending_certificates == 0 {
            break;
        }
    }
    let status = client.core.status();
    assert_eq!(status.pending_certificates, 0, "{status:?}");
    assert_eq!(status.highest_quorum_round, Round(12), "{status:?}");
    assert_eq!(
        client.commits.len(),
        server.commits.len(),
        "the client commits what the server did"
    );
    assert_eq!(client.encoded_commits(), server.encoded_commits());
}

#[test]
fn one_authors_junk_headers_fill_only_its_share() {
    let tc = TestCommittee::new(4);
    let config = CoreConfig {
        pending_headers_max: 40,
        pending_headers_per_author_max: 8,
        ..observer_config()
    };
    let all = all_voters(&tc);
    let dag = DagBuilder::parse(&tc, "1: * -> *");
    let mut o = Observer::new(&tc, all[3], config);
    o.feed(&dag.certificates());
    // Signed junk of every round in the window, each naming parents nobody has.
    let unknown = |r: u64| -> Vec<CertificateRef> {
        all[..3]
            .iter()
            .map(|a| CertificateRef {
                author: *a,
                round: Round(r - 1),
                digest: Digest([r as u8 ^ a.0 as u8; 32]),
            })
            .collect()
    };
    for r in 3..60 {
        o.deliver(
            all[0],
            ConsensusMessage::Header(signed(&tc, all[0], r, r * 100, unknown(r))),
            0,
        );
    }
    assert_eq!(o.core.status().pending_headers, 8);
    assert!(o
        .errors
        .iter()
        .all(|e| matches!(e, DagError::AuthorQuotaExceeded { .. })));
    // An honest header that waits for a missing parent is still kept, and the parent asked for.
    o.sent.clear();
    let honest_parents = all[..3]
        .iter()
        .map(|a| CertificateRef {
            author: *a,
            round: Round(2),
            digest: Digest([0xA0 + a.0 as u8; 32]),
        })
        .collect();
    let honest = signed(&tc, all[1], 3, 300, honest_parents);
    o.deliver(all[1], ConsensusMessage::Header(honest), 0);
    assert_eq!(o.core.status().pending_headers, 9);
    assert!(o.sent.iter().any(|(to, m)| *to == Some(all[1])
        && matches!(
            m,
            ConsensusMessage::SyncRequest(SyncRequest::Certificates { .. })
        )));
}
