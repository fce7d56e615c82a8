//! Declarative scenarios, one per branch of the Bullshark commit rule, written in the
//! `test_dag` notation and fed to a real core through validation.

use trainmesh_dag::leader_schedule::LeaderSchedule;
use trainmesh_dag::test_dag::{name, DagBuilder, TestCommittee};
use trainmesh_dag::{
    Action, AuthorityIndex, Certificate, CommittedSubDag, ConsensusMessage, Core, CoreConfig,
    DagError, MemStore, Round, TimestampMs, Validator,
};

/// A core that never proposes on its own (time stands still): it only orders what it is fed.
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
    other_actions: Vec<Action>,
}

impl Observer {
    fn new(tc: &TestCommittee, me: AuthorityIndex, config: CoreConfig) -> Observer {
        let (core, _) = Core::new(
            config.clone(),
            tc.committee().clone(),
            me,
            tc.key_copy(me),
            MemStore::new(),
            TimestampMs(0),
        )
        .unwrap();
        Observer {
            core,
            validator: Validator::new(tc.committee().clone(), config),
            commits: Vec::new(),
            other_actions: Vec::new(),
        }
    }

    fn feed(&mut self, certificates: &[Certificate]) {
        for c in certificates {
            let from = c.author();
            let verified = self.validator.verify_certificate(c.clone()).unwrap();
            let actions = self
                .core
                .handle_certificate(from, verified, TimestampMs(0))
                .unwrap();
            self.absorb(actions);
        }
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Commit(s) => self.commits.push(s),
                other => self.other_actions.push(other),
            }
        }
    }

    fn committed_names(&self) -> Vec<Vec<String>> {
        self.commits
            .iter()
            .map(|s| s.certificates.iter().map(name).collect())
            .collect()
    }

    fn leaders(&self) -> Vec<String> {
        self.commits
            .iter()
            .map(|s| format!("{}{}", s.leader.author, s.leader.round.0))
            .collect()
    }
}

fn leader(tc: &TestCommittee, round: u64) -> AuthorityIndex {
    LeaderSchedule::new(tc.committee()).leader(Round(round))
}

fn letters(authors: impl IntoIterator<Item = AuthorityIndex>) -> String {
    authors
        .into_iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn all_but(tc: &TestCommittee, excluded: &[AuthorityIndex]) -> String {
    letters(tc.committee().indices().filter(|a| !excluded.contains(a)))
}

fn round_names(round: u64, authors: &str) -> Vec<String> {
    authors
        .split_whitespace()
        .map(|a| format!("{a}{round}"))
        .collect()
}

#[test]
fn direct_commit_with_full_support() {
    let tc = TestCommittee::new(4);
    let dag = DagBuilder::parse(&tc, "1: * -> *\n2: * -> *\n3: * -> *");
    let l2 = leader(&tc, 2);
    let mut o = Observer::new(&tc, AuthorityIndex(3), observer_config());
    let certs = dag.certificates();
    // Rounds 1 and 2 alone commit nothing: the leader needs support from round 3.
    o.feed(&certs[..8]);
    assert!(o.commits.is_empty());
    o.feed(&certs[8..]);
    let mut expected = round_names(1, "A B C D");
    expected.push(format!("{l2}2"));
    assert_eq!(o.committed_names(), vec![expected]);
    assert_eq!(o.commits[0].index, 0);
    assert_eq!(
        o.commits[0].leader,
        dag.certificate(l2, Round(2)).reference()
    );
}

#[test]
fn direct_commit_with_exactly_f_plus_one_support() {
    let tc = TestCommittee::new(4);
    let l2 = leader(&tc, 2);
    let supporters: Vec<AuthorityIndex> = tc.committee().indices().take(2).collect();
    let text = format!(
        "1: * -> *\n2: * -> *\n3: {} -> *; {} -> -{l2}",
        letters(supporters.clone()),
        all_but(&tc, &supporters)
    );
    let dag = DagBuilder::parse(&tc, &text);
    let mut o = Observer::new(&tc, AuthorityIndex(3), observer_config());
    o.feed(&dag.certificates());
    assert_eq!(o.leaders(), vec![format!("{l2}2")]);
}

#[test]
fn leader_missing_commits_nothing_until_the_next_leader() {
    let tc = TestCommittee::new(4);
    let l2 = leader(&tc, 2);
    let l4 = leader(&tc, 4);
    let text = format!(
        "1: * -> *\n2: {} -> *\n3: * -> *\n4: * -> *\n5: * -> *",
        all_but(&tc, &[l2])
    );
    let dag = DagBuilder::parse(&tc, &text);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    o.feed(&dag.certificates());
    assert_eq!(o.leaders(), vec![format!("{l4}4")]);
    let mut expected = round_names(1, "A B C D");
    expected.extend(round_names(2, &all_but(&tc, &[l2])));
    expected.extend(round_names(3, "A B C D"));
    expected.push(format!("{l4}4"));
    assert_eq!(o.committed_names(), vec![expected]);
}

#[test]
fn not_enough_support_then_indirect_commit() {
    let tc = TestCommittee::new(4);
    let l2 = leader(&tc, 2);
    let l4 = leader(&tc, 4);
    // Only one authority (f = 1 stake) of round 3 supports L2: not enough to commit it directly.
    let supporter = tc.committee().indices().find(|a| *a != l2).unwrap();
    let text = format!(
        "1: * -> *\n2: * -> *\n3: {supporter} -> *; {} -> -{l2}\n4: * -> *\n5: * -> *",
        all_but(&tc, &[supporter])
    );
    let dag = DagBuilder::parse(&tc, &text);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    let certs = dag.certificates();
    o.feed(&certs[..12]); // rounds 1-3
    assert!(o.commits.is_empty(), "L2 has only f stake of support");
    o.feed(&certs[12..]);
    // L4 commits, and L2, which it links to through the supporter, commits first.
    assert_eq!(o.leaders(), vec![format!("{l2}2"), format!("{l4}4")]);
    let mut first = round_names(1, "A B C D");
    first.push(format!("{l2}2"));
    assert_eq!(o.committed_names()[0], first);
    let second = &o.committed_names()[1];
    assert!(!second.contains(&format!("{l2}2")), "no double commit");
    assert_eq!(second.last().unwrap(), &format!("{l4}4"));
    assert_eq!(o.commits[1].index, 1);
}

#[test]
fn unlinked_weak_leader_is_skipped() {
    let tc = TestCommittee::new(4);
    let l2 = leader(&tc, 2);
    let l4 = leader(&tc, 4);
    let supporter = tc.committee().indices().find(|a| *a != l2).unwrap();
    // Round 4 ignores the only certificate that supported L2: L4 does not reach L2.
    let text = format!(
        "1: * -> *\n2: * -> *\n3: {supporter} -> *; {} -> -{l2}\n4: * -> -{supporter}\n5: * -> *",
        all_but(&tc, &[supporter])
    );
    let dag = DagBuilder::parse(&tc, &text);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    o.feed(&dag.certificates());
    assert_eq!(o.leaders(), vec![format!("{l4}4")]);
    assert!(!o.committed_names()[0].contains(&format!("{l2}2")));
}

#[test]
fn dead_non_leader_does_not_stop_commits() {
    let tc = TestCommittee::new(4);
    let leaders: Vec<AuthorityIndex> = [2, 4, 6].iter().map(|&r| leader(&tc, r)).collect();
    let dead = tc
        .committee()
        .indices()
        .find(|a| !leaders.contains(a))
        .expect("with 4 authorities some authority leads none of rounds 2, 4, 6");
    let alive = all_but(&tc, &[dead]);
    let text = (1..=7)
        .map(|r| format!("{r}: {alive} -> *"))
        .collect::<Vec<_>>()
        .join("\n");
    let dag = DagBuilder::parse(&tc, &text);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    o.feed(&dag.certificates());
    assert_eq!(
        o.leaders(),
        leaders
            .iter()
            .zip([2, 4, 6])
            .map(|(l, r)| format!("{l}{r}"))
            .collect::<Vec<_>>()
    );
    assert!(o
        .commits
        .iter()
        .flat_map(|s| &s.certificates)
        .all(|c| c.author() != dead));
}

#[test]
fn equivocating_author_gets_one_vote_and_is_reported() {
    let tc = TestCommittee::new(4);
    let dag = DagBuilder::new(&tc);
    let genesis: Vec<_> = tc
        .committee()
        .indices()
        .map(|a| dag.certificate(a, Round(0)).reference())
        .collect();
    let author = AuthorityIndex(1);
    let first = tc.header(author, Round(1), genesis.clone(), vec!["one".into()]);
    let second = tc.header(author, Round(1), genesis, vec!["two".into()]);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    let v = o.validator.clone();

    let actions = o
        .core
        .handle_header(
            author,
            v.verify_header(first.clone()).unwrap(),
            TimestampMs(0),
        )
        .unwrap();
    let vote = match actions.as_slice() {
        [Action::Send {
            to,
            message: ConsensusMessage::Vote(vote),
        }] if *to == author => vote.clone(),
        other => panic!("expected one vote, got {other:?}"),
    };
    assert_eq!(vote.header_digest, first.digest());

    // The second header of the slot: no vote, and evidence that verifies on its own.
    let actions = o
        .core
        .handle_header(
            author,
            v.verify_header(second.clone()).unwrap(),
            TimestampMs(0),
        )
        .unwrap();
    match actions.as_slice() {
        [Action::EquivocationDetected(evidence)] => {
            assert!(evidence.verify(tc.committee()));
            assert_eq!(evidence.first.digest(), first.digest());
            assert_eq!(evidence.second.digest(), second.digest());
        }
        other => panic!("expected evidence only, got {other:?}"),
    }
    // Reported once; afterwards the second header is just refused.
    let err = o
        .core
        .handle_header(author, v.verify_header(second).unwrap(), TimestampMs(0))
        .unwrap_err();
    assert!(matches!(err, DagError::Equivocation { .. }), "{err}");
    // The first header asked again gets the very same vote.
    let actions = o
        .core
        .handle_header(author, v.verify_header(first).unwrap(), TimestampMs(0))
        .unwrap();
    assert!(matches!(
        actions.as_slice(),
        [Action::Send { message: ConsensusMessage::Vote(again), .. }] if *again == vote
    ));
}

#[test]
fn gc_boundary_ignores_late_certificates_and_collects_old_rounds() {
    let tc = TestCommittee::new(4);
    let late = AuthorityIndex(3);
    // D1 exists but nobody references it; it arrives after round 1 was collected.
    let text = format!(
        "1: * -> *\n2: * -> -{late}\n{}",
        (3..=9)
            .map(|r| format!("{r}: * -> *"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let dag = DagBuilder::parse(&tc, &text);
    let config = CoreConfig {
        gc_depth_rounds: 2,
        ..observer_config()
    };
    let mut o = Observer::new(&tc, AuthorityIndex(0), config);
    let late_cert = dag.certificate(late, Round(1)).clone();
    let rest: Vec<_> = dag
        .certificates()
        .into_iter()
        .filter(|c| c.digest() != late_cert.digest())
        .collect();
    o.feed(&rest);
    let status = o.core.status();
    assert_eq!(status.last_committed_round, Round(8));
    assert_eq!(status.gc_round, Round(6));
    assert!(
        o.core.round_certificates(Round(5)).is_empty(),
        "round 5 collected"
    );
    assert_eq!(o.core.round_certificates(Round(6)).len(), 4);
    let commits_before = o.commits.len();
    o.feed(std::slice::from_ref(&late_cert));
    assert_eq!(o.commits.len(), commits_before);
    assert_eq!(o.core.status(), status, "a collected round changes nothing");
    assert!(o
        .commits
        .iter()
        .flat_map(|s| &s.certificates)
        .all(|c| c.digest() != late_cert.digest()));
}

#[test]
fn own_payload_collected_uncommitted_is_reported_for_reproposal() {
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(3);
    let config = CoreConfig {
        gc_depth_rounds: 2,
        max_header_delay_ms: 10,
        ..observer_config()
    };
    let mut o = Observer::new(&tc, me, config);
    o.core.submit_transactions(vec!["precious".into()]).unwrap();
    let actions = o.core.tick(TimestampMs(10)).unwrap();
    assert!(matches!(
        actions.as_slice(),
        [Action::Broadcast(ConsensusMessage::Header(h))] if h.round() == Round(1)
            && h.header().payload == vec![bytes::Bytes::from("precious")]
    ));
    // Nobody votes for it; the others go on without D.
    let text = (1..=7)
        .map(|r| format!("{r}: A B C -> *"))
        .collect::<Vec<_>>()
        .join("\n");
    let dag = DagBuilder::parse(&tc, &text);
    o.feed(&dag.certificates());
    let reproposed: Vec<_> = o
        .other_actions
        .iter()
        .filter_map(|a| match a {
            Action::ReproposePayload(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reproposed, vec![vec![bytes::Bytes::from("precious")]]);
}

#[test]
fn far_future_rounds_are_refused_without_changing_state() {
    let tc = TestCommittee::new(4);
    let mut o = Observer::new(&tc, AuthorityIndex(0), observer_config());
    let far = Round(10_000);
    let parents: Vec<_> = tc
        .committee()
        .indices()
        .map(|author| trainmesh_dag::CertificateRef {
            author,
            round: far.prev(),
            digest: trainmesh_dag::Digest([author.0 as u8 + 1; 32]),
        })
        .collect();
    let header = tc.header(AuthorityIndex(2), far, parents, vec![]);
    let certificate = tc.certify(
        header.clone(),
        &[AuthorityIndex(0), AuthorityIndex(1), AuthorityIndex(2)],
    );
    let before = o.core.status();
    let err = o
        .core
        .handle_header(
            AuthorityIndex(2),
            o.validator.verify_header(header).unwrap(),
            TimestampMs(0),
        )
        .unwrap_err();
    assert!(
        matches!(err, DagError::RoundTooFarAhead { round, .. } if round == far),
        "{err}"
    );
    let err = o
        .core
        .handle_certificate(
            AuthorityIndex(2),
            o.validator.verify_certificate(certificate).unwrap(),
            TimestampMs(0),
        )
        .unwrap_err();
    assert!(matches!(err, DagError::RoundTooFarAhead { .. }), "{err}");
    assert_eq!(o.core.status(), before);
}
