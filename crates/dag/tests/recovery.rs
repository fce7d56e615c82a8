//! Restarts from the redb store: a restarted core never signs a second header for a round nor a
//! second vote for a slot, and re-emits exactly the committed sequence it had.

use trainmesh_dag::encoding::encode;
use trainmesh_dag::test_dag::{DagBuilder, TestCommittee};
use trainmesh_dag::{
    Action, AuthorityIndex, ConsensusMessage, ConsensusStore, Core, CoreConfig, MemStore,
    RedbStore, Round, TimestampMs, Validator,
};

fn config() -> CoreConfig {
    CoreConfig {
        max_header_delay_ms: 10,
        leader_timeout_ms: u64::MAX / 4,
        resend_interval_ms: u64::MAX / 4,
        ..CoreConfig::default()
    }
}

fn start<S: ConsensusStore>(
    tc: &TestCommittee,
    me: AuthorityIndex,
    store: S,
    now: u64,
) -> (Core<S>, Vec<Action>) {
    Core::new(
        config(),
        tc.committee().clone(),
        me,
        tc.key_copy(me),
        store,
        TimestampMs(now),
    )
    .unwrap()
}

fn headers(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(m @ ConsensusMessage::Header(_)) => Some(encode(m)),
            _ => None,
        })
        .collect()
}

#[test]
fn restarted_node_resends_its_header_instead_of_signing_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dag.redb");
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(2);

    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 0);
    core.submit_transactions(vec!["a".into(), "b".into()])
        .unwrap();
    let first = headers(&core.tick(TimestampMs(10)).unwrap());
    assert_eq!(first.len(), 1, "one header proposed for round 1");
    drop(core);

    // Restart with different transactions waiting and time passed: the same header goes out.
    let (mut core, actions) = start(&tc, me, RedbStore::open(&path).unwrap(), 5_000);
    assert_eq!(headers(&actions), first, "the stored header, byte for byte");
    core.submit_transactions(vec!["c".into()]).unwrap();
    let later = headers(&core.tick(TimestampMs(6_000)).unwrap());
    assert!(later.is_empty(), "no second header for round 1: {later:?}");
    assert_eq!(core.status().proposed_round, Round(1));
}

#[test]
fn restarted_node_never_votes_twice_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dag.redb");
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(0);
    let author = AuthorityIndex(3);
    let v = Validator::new(tc.committee().clone(), config());
    let dag = DagBuilder::new(&tc);
    let genesis: Vec<_> = tc
        .committee()
        .indices()
        .map(|a| dag.certificate(a, Round(0)).reference())
        .collect();
    let first = tc.header(author, Round(1), genesis.clone(), vec!["x".into()]);
    let second = tc.header(author, Round(1), genesis, vec!["y".into()]);

    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 0);
    let voted = core
        .handle_header(
            author,
            v.verify_header(first.clone()).unwrap(),
            TimestampMs(1),
        )
        .unwrap();
    assert_eq!(voted.len(), 1);
    drop(core);

    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 2);
    // The conflicting header of the same slot gets no vote after the restart...
    let actions = core
        .handle_header(author, v.verify_header(second).unwrap(), TimestampMs(3))
        .unwrap();
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                message: ConsensusMessage::Vote(_),
                ..
            }
        )),
        "{actions:?}"
    );
    // ...while the one we voted for gets the same vote again.
    let again: Vec<Action> = core
        .handle_header(author, v.verify_header(first).unwrap(), TimestampMs(4))
        .unwrap()
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    message: ConsensusMessage::Vote(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(again, voted);
}

/// Feeds a DAG to a core on `store`, returns the encoded commits.
fn feed<S: ConsensusStore>(
    core: &mut Core<S>,
    certs: &[trainmesh_dag::Certificate],
    tc: &TestCommittee,
) -> Vec<Vec<u8>> {
    let v = Validator::new(tc.committee().clone(), config());
    let mut out = Vec::new();
    for c in certs {
        let actions = core
            .handle_certificate(
                c.author(),
                v.verify_certificate(c.clone()).unwrap(),
                TimestampMs(0),
            )
            .unwrap();
        for a in actions {
            if let Action::Commit(s) = a {
                out.push(encode(&s));
            }
        }
    }
    out
}

#[test]
fn restarted_node_replays_its_commits_byte_for_byte_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dag.redb");
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let text = (1..=12)
        .map(|r| format!("{r}: * -> *"))
        .collect::<Vec<_>>()
        .join("\n");
    let dag = DagBuilder::parse(&tc, &text);
    let certs = dag.certificates();
    let (cut, rest) = certs.split_at(7 * 4); // rounds 1-7, then 8-12

    // Reference run without restart, on the in-memory store.
    let (mut reference, _) = start(&tc, me, MemStore::new(), 0);
    let expected = feed(&mut reference, &certs, &tc);
    assert!(expected.len() >= 5, "{} commits", expected.len());

    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 0);
    let before = feed(&mut core, cut, &tc);
    assert!(!before.is_empty());
    drop(core);

    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 0);
    let replayed: Vec<Vec<u8>> = core.committed_from(0).unwrap().iter().map(encode).collect();
    assert_eq!(replayed, before, "the same commits, byte for byte");
    let after = feed(&mut core, rest, &tc);
    let mut all = before;
    all.extend(after);
    assert_eq!(
        all, expected,
        "the restart changes nothing in the committed sequence"
    );
}

#[test]
fn pruning_keeps_what_replay_needs() {
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let text = (1..=30)
        .map(|r| format!("{r}: * -> *"))
        .collect::<Vec<_>>()
        .join("\n");
    let dag = DagBuilder::parse(&tc, &text);
    let mut cfg = config();
    cfg.gc_depth_rounds = 4;
    let (mut core, _) = Core::new(
        cfg,
        tc.committee().clone(),
        me,
        tc.key_copy(me),
        MemStore::new(),
        TimestampMs(0),
    )
    .unwrap();
    let commits = feed(&mut core, &dag.certificates(), &tc);
    let n = commits.len() as u64;
    assert!(n >= 10);
    core.prune_executed(n - 3).unwrap();
    // Commits after the executed one still replay in full; older ones are gone.
    let replayed: Vec<Vec<u8>> = core.committed_from(0).unwrap().iter().map(encode).collect();
    assert_eq!(replayed, commits[(n - 2) as usize..].to_vec());
}
