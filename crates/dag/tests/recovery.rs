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

/// One input of a scripted run: a certificate, a header, or a tick, each at a time.
enum Input {
    Certificate(trainmesh_dag::Certificate),
    Header(trainmesh_dag::SignedHeader),
    Tick,
}

/// The inputs of a group-commit run for authority 1: rounds 1-7 of a full DAG (commits), a
/// round-8 header from authority 3 (a vote), then a tick with transactions waiting (our own
/// round-8 header).
fn scripted_inputs(tc: &TestCommittee) -> (Vec<Input>, trainmesh_dag::SignedHeader) {
    let text = (1..=7)
        .map(|r| format!("{r}: * -> *"))
        .collect::<Vec<_>>()
        .join("\n");
    let dag = DagBuilder::parse(tc, &text);
    let parents: Vec<_> = tc
        .committee()
        .indices()
        .map(|a| dag.certificate(a, Round(7)).reference())
        .collect();
    let author = AuthorityIndex(3);
    let voted = tc.header(author, Round(8), parents.clone(), vec!["x".into()]);
    let conflicting = tc.header(author, Round(8), parents, vec!["y".into()]);
    let mut inputs: Vec<Input> = dag
        .certificates()
        .into_iter()
        .map(Input::Certificate)
        .collect();
    inputs.push(Input::Header(voted));
    inputs.push(Input::Tick);
    (inputs, conflicting)
}

/// Handles the inputs in order; returns every action. Certificates come at time 0, the header
/// and the tick at 1000 ms.
fn handle_all<S: ConsensusStore>(
    core: &mut Core<S>,
    inputs: &[Input],
    tc: &TestCommittee,
) -> Vec<Action> {
    core.submit_transactions(vec!["mine".into()]).unwrap();
    handle_each(core, inputs, tc)
}

/// The inputs in order, with no transaction of our own submitted first.
fn handle_each<S: ConsensusStore>(
    core: &mut Core<S>,
    inputs: &[Input],
    tc: &TestCommittee,
) -> Vec<Action> {
    let v = Validator::new(tc.committee().clone(), config());
    let mut actions = Vec::new();
    for input in inputs {
        let out = match input {
            Input::Certificate(c) => core.handle_certificate(
                c.author(),
                v.verify_certificate(c.clone()).unwrap(),
                TimestampMs(0),
            ),
            Input::Header(h) => core.handle_header(
                h.author(),
                v.verify_header(h.clone()).unwrap(),
                TimestampMs(1_000),
            ),
            Input::Tick => core.tick(TimestampMs(1_000)),
        };
        actions.extend(out.unwrap());
    }
    actions
}

/// What a restarted core shows of its past: the actions it resumes with, its votes, its status
/// and its committed sequence, encoded.
fn restart_view(
    tc: &TestCommittee,
    me: AuthorityIndex,
    path: &std::path::Path,
) -> (Core<RedbStore>, Vec<Vec<u8>>) {
    let (core, actions) = start(tc, me, RedbStore::open(path).unwrap(), 2_000);
    let mut view: Vec<Vec<u8>> = actions
        .iter()
        .map(|a| format!("{a:?}").into_bytes())
        .collect();
    view.push(format!("{:?}", core.store().votes().unwrap()).into_bytes());
    view.push(format!("{:?}", core.status()).into_bytes());
    view.extend(core.committed_from(0).unwrap().iter().map(encode));
    (core, view)
}

fn is_vote(a: &Action) -> bool {
    matches!(
        a,
        Action::Send {
            message: ConsensusMessage::Vote(_),
            ..
        }
    )
}

#[test]
fn group_commit_then_crash_recovers_as_if_every_call_had_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let (inputs, conflicting) = scripted_inputs(&tc);

    // Reference: a write per call.
    let each_path = dir.path().join("each.redb");
    let (mut core, _) = start(&tc, me, RedbStore::open(&each_path).unwrap(), 0);
    let each_actions = handle_all(&mut core, &inputs, &tc);
    drop(core);
    let (_, each_view) = restart_view(&tc, me, &each_path);

    // Group commit: every input handled, one flush, then the crash.
    let group_path = dir.path().join("group.redb");
    let (mut core, _) = start(&tc, me, RedbStore::open(&group_path).unwrap(), 0);
    core.set_deferred_flush(true).unwrap();
    let group_actions = handle_all(&mut core, &inputs, &tc);
    core.flush().unwrap();
    drop(core);
    assert_eq!(group_actions, each_actions, "deferring changes no action");
    assert_eq!(
        group_actions.iter().filter(|a| is_vote(a)).count(),
        1,
        "the script votes once"
    );
    assert!(!headers(&group_actions).is_empty(), "the script proposes");
    assert!(group_actions.iter().any(|a| matches!(a, Action::Commit(_))));

    let (mut core, group_view) = restart_view(&tc, me, &group_path);
    assert_eq!(group_view, each_view, "the same restart, byte for byte");
    // No second header for our round, no vote for the other header of the voted slot.
    let later = core.tick(TimestampMs(10_000)).unwrap();
    assert!(headers(&later).is_empty(), "{later:?}");
    let v = Validator::new(tc.committee().clone(), config());
    let actions = core
        .handle_header(
            conflicting.author(),
            v.verify_header(conflicting).unwrap(),
            TimestampMs(10_001),
        )
        .unwrap();
    assert!(!actions.iter().any(is_vote), "{actions:?}");
}

#[test]
fn batches_written_through_the_store_writer_restart_as_flushes_do() {
    let dir = tempfile::tempdir().unwrap();
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let (inputs, _) = scripted_inputs(&tc);

    let each_path = dir.path().join("each.redb");
    let (mut core, _) = start(&tc, me, RedbStore::open(&each_path).unwrap(), 0);
    let each_actions = handle_all(&mut core, &inputs, &tc);
    drop(core);
    let (_, each_view) = restart_view(&tc, me, &each_path);

    // Pipelined: the batch of every few inputs is taken and written through the writer, as a
    // driver's writer thread does, while the core itself writes nothing.
    let piped_path = dir.path().join("piped.redb");
    let (mut core, _) = start(&tc, me, RedbStore::open(&piped_path).unwrap(), 0);
    core.set_deferred_flush(true).unwrap();
    let mut writer = core.batch_writer().expect("redb offers a writer");
    let mut piped_actions = Vec::new();
    let mut writes = 0;
    core.submit_transactions(vec!["mine".into()]).unwrap();
    for chunk in inputs.chunks(3) {
        piped_actions.extend(handle_each(&mut core, chunk, &tc));
        let batch = core.take_batch();
        if !batch.is_empty() {
            writer.write(batch).unwrap();
            writes += 1;
        }
    }
    assert!(core.take_batch().is_empty(), "everything was taken");
    assert!(writes > 1, "the script spans several batches");
    drop((core, writer));
    assert_eq!(piped_actions, each_actions, "pipelining changes no action");
    let (_, piped_view) = restart_view(&tc, me, &piped_path);
    assert_eq!(piped_view, each_view, "the same restart, byte for byte");

    // A batch taken but never written is lost as an unflushed group is: the store is as it was
    // after the last write.
    let lost_path = dir.path().join("lost.redb");
    let (mut core, _) = start(&tc, me, RedbStore::open(&lost_path).unwrap(), 0);
    core.set_deferred_flush(true).unwrap();
    handle_all(&mut core, &inputs, &tc);
    let _never_written = core.take_batch();
    drop(core);
    let (_, lost_view) = restart_view(&tc, me, &lost_path);
    let (_, fresh_view) = restart_view(&tc, me, &dir.path().join("fresh.redb"));
    assert_eq!(lost_view, fresh_view);
}

#[test]
fn deferred_flush_writes_nothing_until_flush() {
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let (inputs, _) = scripted_inputs(&tc);
    let (mut core, _) = start(&tc, me, MemStore::new(), 0);
    core.set_deferred_flush(true).unwrap();
    let writes = core.store().writes();
    let actions = handle_all(&mut core, &inputs, &tc);
    assert!(actions.iter().any(is_vote) && !headers(&actions).is_empty());
    assert_eq!(
        core.store().writes(),
        writes,
        "nothing written before flush"
    );
    assert!(core.store().own_header().unwrap().is_none());
    assert!(core.store().votes().unwrap().is_empty());
    assert!(core.store().certificates_from(Round(0)).unwrap().is_empty());
    assert!(core.store().last_commit().unwrap().is_none());

    core.flush().unwrap();
    assert_eq!(core.store().writes(), writes + 1, "one write for the group");
    assert!(core.store().own_header().unwrap().is_some());
    // Our vote for authority 3's header, and our own header's vote for itself.
    assert_eq!(core.store().votes().unwrap().len(), 2);
    assert_eq!(
        core.store().certificates_from(Round(0)).unwrap().len(),
        7 * 4
    );
    assert!(core.store().last_commit().unwrap().is_some());
    core.flush().unwrap();
    assert_eq!(
        core.store().writes(),
        writes + 1,
        "an empty flush writes nothing"
    );
}

#[test]
fn a_crash_before_the_flush_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dag.redb");
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(1);
    let (inputs, _) = scripted_inputs(&tc);
    let (_, fresh_view) = restart_view(&tc, me, &path);
    let (mut core, _) = start(&tc, me, RedbStore::open(&path).unwrap(), 0);
    core.set_deferred_flush(true).unwrap();
    handle_all(&mut core, &inputs, &tc);
    drop(core);
    let (_, view) = restart_view(&tc, me, &path);
    assert_eq!(view, fresh_view, "nothing of the unflushed group survives");
}

#[test]
fn redb_keeps_the_certificate_of_our_header_without_a_second_copy_of_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dag.redb");
    let tc = TestCommittee::new(4);
    let me = AuthorityIndex(2);
    let dag = DagBuilder::new(&tc);
    let genesis: Vec<_> = tc
        .committee()
        .indices()
        .map(|a| dag.certificate(a, Round(0)).reference())
        .collect();
    let payload = vec![bytes::Bytes::from(vec![7u8; 200_000])];
    let ours = tc.header(me, Round(1), genesis.clone(), payload.clone());
    let theirs = tc.header(AuthorityIndex(0), Round(1), genesis, payload);
    let voters: Vec<_> = tc.committee().indices().collect();
    let our_cert = tc.certify(ours.clone(), &voters);
    let their_cert = tc.certify(theirs, &voters);

    let mut store = RedbStore::open(&path).unwrap();
    store
        .write(trainmesh_dag::store::StoreBatch {
            own_header: Some(ours.clone()),
            ..Default::default()
        })
        .unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    store
        .write(trainmesh_dag::store::StoreBatch {
            certificates: vec![our_cert.clone()],
            ..Default::default()
        })
        .unwrap();
    let growth = std::fs::metadata(&path)
        .unwrap()
        .len()
        .saturating_sub(before);
    assert!(
        growth < 100_000,
        "the file grew by {growth} B for votes alone"
    );
    store
        .write(trainmesh_dag::store::StoreBatch {
            certificates: vec![their_cert.clone()],
            ..Default::default()
        })
        .unwrap();
    drop(store);

    let mut store = RedbStore::open(&path).unwrap();
    assert_eq!(store.own_header().unwrap(), Some(ours.clone()));
    assert_eq!(
        store.certificate(&our_cert.digest()).unwrap(),
        Some(our_cert.clone())
    );
    let mut both = vec![their_cert.clone(), our_cert.clone()];
    both.sort_by_key(|c| (c.round(), c.author()));
    assert_eq!(store.certificates_from(Round(0)).unwrap(), both);
    assert_eq!(
        store.certificates_page(Round(1), me, Round(1), 10).unwrap(),
        vec![our_cert.clone()]
    );
    // Pruning the round drops the certificates but keeps the latest header we signed.
    store.prune(0, Round(2)).unwrap();
    assert!(store.certificates_from(Round(0)).unwrap().is_empty());
    assert_eq!(store.own_header().unwrap(), Some(ours));
}
