//! Tier-0 and tier-1 verification through the public API: honest trainers always pass, cheating
//! trainers that fake a fraction of their segments are caught at the advertised rate.
//!
//! Randomized: the audit beacons derive from a base seed, printed, and replayed with
//! `TRAINMESH_TEST_SEED=<n>`.

use std::collections::BTreeMap;
use trainmesh_contracts::sampling::audit_sample;
use trainmesh_contracts::types::Address;
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::Samples;
use trainmesh_gpu::import::digits_bundled;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::{Model, ModelSpec};
use trainmesh_gpu::train::{initial_state, CheckpointStore, Trainer, WorkResult};
use trainmesh_gpu::verify::{
    audit, miss_probability, referee_step, tier0, SegmentFault, SegmentReplayer,
    DEFAULT_AUDIT_SEGMENTS,
};
use trainmesh_gpu::{GpuError, Hash32};

fn base_seed() -> u64 {
    let seed = std::env::var("TRAINMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126);
    println!("TRAINMESH_TEST_SEED={seed}");
    seed
}

fn setup() -> (Model, HyperParams, Samples) {
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":16,"activation":"relu"}]}"#,
    )
    .unwrap();
    let hyper = HyperParams {
        optimizer: Optimizer::Adam {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        batch: 16,
        seed: 77,
    };
    (model, hyper, digits_bundled())
}

/// A trainer that skips the work of the segments in `faked`: it advances the step counter and
/// nudges the parameters so the checkpoint looks fresh, then carries on honestly from there.
fn cheat(
    model: &Model,
    hyper: HyperParams,
    data: &Samples,
    segments: u64,
    segment_steps: u64,
    faked: &[usize],
    store: &mut CheckpointStore,
) -> WorkResult {
    let mut trainer = Trainer::new(model, hyper, data).unwrap();
    let start = initial_state(model, &hyper);
    let start_hash = store.put(start.encode(model));
    let mut state = start.clone();
    let mut chain = Vec::new();
    let mut losses = Vec::new();
    for i in 0..segments as usize {
        if faked.contains(&i) {
            state.step += segment_steps;
            for t in state.params.iter_mut() {
                for v in t.data.iter_mut() {
                    *v *= 0.999;
                }
            }
            losses.extend(std::iter::repeat_n(0.1f32, segment_steps as usize));
        } else {
            losses.extend(trainer.run(&mut state, segment_steps));
        }
        chain.push(store.put(state.encode(model)));
    }
    WorkResult {
        start: start_hash,
        start_step: 0,
        segment_steps,
        chain,
        losses,
    }
}

/// The evaluator's replayer, memoized by start checkpoint: replay is a pure function, so caching
/// it changes nothing but the test's running time across many audit seeds.
struct Memo<'a> {
    inner: Trainer<'a>,
    cache: BTreeMap<(Hash32, u64), Vec<u8>>,
}

impl SegmentReplayer for Memo<'_> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        let key = (Hash32::of(start), steps);
        if let Some(v) = self.cache.get(&key) {
            return Ok(v.clone());
        }
        let out = self.inner.replay(start, steps)?;
        self.cache.insert(key, out.clone());
        Ok(out)
    }
}

fn beacon(seed: u64, i: u64) -> Hash32 {
    Hash32::of(&[seed.to_le_bytes(), i.to_le_bytes()].concat())
}

/// The ledger's draw for one evaluator: `k` of the result's segments from the audit seed `b`.
fn draw(result: &WorkResult, b: &Hash32, evaluator: u8, k: usize) -> Vec<usize> {
    audit_sample(
        &b.0,
        &result.chain_root().0,
        &Address([evaluator; 32]),
        result.chain.len() as u32,
        k as u32,
    )
    .into_iter()
    .map(|i| i as usize)
    .collect()
}

#[test]
fn cheaters_faking_a_tenth_of_segments_are_caught_at_099_and_honest_trainers_never() {
    let seed = base_seed();
    let (model, hyper, data) = setup();
    let (m, s) = (200u64, 1u64);
    // Which segments the cheater fakes: 10%, chosen from the seed.
    // Neither the first nor the last (which every draw checks): the middles are the hard case.
    let faked: Vec<usize> = {
        let root = Hash32::of(&seed.to_le_bytes());
        let mut f = audit_sample(
            &root.0,
            &root.0,
            &Address([0; 32]),
            m as u32 - 2,
            m as u32 / 10,
        )
        .into_iter()
        .map(|i| i as usize + 1)
        .collect::<Vec<_>>();
        f.sort_unstable();
        f
    };
    let mut store = CheckpointStore::new();
    let honest = {
        let mut t = Trainer::new(&model, hyper, &data).unwrap();
        t.work_unit(&initial_state(&model, &hyper), m, s, &mut store)
            .unwrap()
            .0
    };
    let cheater = cheat(&model, hyper, &data, m, s, &faked, &mut store);
    let mut memo = Memo {
        inner: Trainer::new(&model, hyper, &data).unwrap(),
        cache: BTreeMap::new(),
    };
    // The network's panel: each evaluator checks the two ends and its share of the 44 middles
    // that catch a 10% cheat at 0.99, drawn from its own seed.
    let params = trainmesh_contracts::params::Params::default();
    let panel = params.evaluators_per_unit as u8;
    let k = trainmesh_contracts::jobs::audit_segments(&params) as usize;
    assert_eq!(
        (k - 2) * panel as usize,
        DEFAULT_AUDIT_SEGMENTS.next_multiple_of(panel as usize)
    );

    let audits = 1000u64;
    let mut caught = 0u64;
    for i in 0..audits {
        let b = beacon(seed, i);
        let mut any = false;
        for evaluator in 1..=panel {
            let h = audit(
                &honest,
                &honest.chain_root(),
                &draw(&honest, &b, evaluator, k),
                &store,
                &mut memo,
            )
            .unwrap();
            assert!(
                h.accepted(),
                "honest trainer rejected at audit {i}: {:?}",
                h.faults
            );
            let c = audit(
                &cheater,
                &cheater.chain_root(),
                &draw(&cheater, &b, evaluator, k),
                &store,
                &mut memo,
            )
            .unwrap();
            any |= !c.accepted();
            for (seg, fault) in &c.faults {
                assert!(faked.contains(seg), "segment {seg} blamed but honest");
                assert!(
                    matches!(fault, SegmentFault::HashMismatch { .. }),
                    "{fault:?}"
                );
            }
        }
        caught += u64::from(any);
    }
    let rate = caught as f64 / audits as f64;
    // Each draw checks the two ends, which this cheater left honest, and k − 2 of the m − 2
    // middles; the panel's draws are independent, so it misses when every one of them does.
    let analytic =
        1.0 - miss_probability(m as usize - 2, faked.len(), k - 2).powi(i32::from(panel));
    // Three standard deviations of a binomial at p = 0.99 below the target.
    let sigma = (0.99 * 0.01 / audits as f64).sqrt();
    println!(
        "detection by a panel of {panel}: empirical {rate}, analytic {analytic}, audit cost {}",
        (k * panel as usize) as f64 / m as f64
    );
    assert!(analytic >= 0.99, "analytic detection {analytic}");
    assert!(rate >= analytic - 3.0 * sigma, "empirical detection {rate}");

    // An honest trainer survives a full audit of every segment.
    let every: Vec<usize> = (0..m as usize).collect();
    let all = audit(&honest, &honest.chain_root(), &every, &store, &mut memo).unwrap();
    assert!(all.accepted() && all.checked.len() == m as usize);
    let all = audit(&cheater, &cheater.chain_root(), &every, &store, &mut memo).unwrap();
    let mut blamed: Vec<usize> = all.faults.iter().map(|(i, _)| *i).collect();
    blamed.sort();
    assert_eq!(
        blamed, faked,
        "a full audit blames exactly the faked segments"
    );
}

/// A trainer that replaces only its final checkpoint (trains honestly, then installs other
/// weights in the last segment) is caught by every evaluator on every draw: the ledger's sample
/// always holds the last segment.
#[test]
fn a_trainer_replacing_only_its_last_segment_is_always_caught() {
    let seed = base_seed();
    let (model, hyper, data) = setup();
    let (m, s) = (128u64, 1u64);
    let mut store = CheckpointStore::new();
    let cheater = cheat(&model, hyper, &data, m, s, &[m as usize - 1], &mut store);
    let mut memo = Memo {
        inner: Trainer::new(&model, hyper, &data).unwrap(),
        cache: BTreeMap::new(),
    };
    for i in 0..200u64 {
        let b = beacon(seed, i);
        for evaluator in [1u8, 2, 3] {
            let k = trainmesh_contracts::jobs::audit_segments(&Default::default()) as usize;
            let checked = draw(&cheater, &b, evaluator, k);
            let r = audit(&cheater, &cheater.chain_root(), &checked, &store, &mut memo).unwrap();
            assert!(!r.accepted(), "draw {i}, evaluator {evaluator}: missed");
            assert_eq!(
                r.faults.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                vec![m as usize - 1]
            );
        }
    }
}

#[test]
fn tier0_and_referee_and_malformed_results() {
    let (model, hyper, data) = setup();
    let mut store = CheckpointStore::new();
    let mut t = Trainer::new(&model, hyper, &data).unwrap();
    let (result, state) = t
        .work_unit(&initial_state(&model, &hyper), 4, 50, &mut store)
        .unwrap();
    let heldout = data.select(&(0..300).collect::<Vec<_>>());
    let blob = store.get(&result.final_checkpoint()).unwrap();
    let metrics = tier0(&model, blob, &result.final_checkpoint(), &heldout).unwrap();
    assert_eq!(
        metrics,
        trainmesh_gpu::train::evaluate(&model, &state.params, &heldout).unwrap()
    );
    assert!(matches!(
        tier0(&model, blob, &result.start, &heldout),
        Err(GpuError::CheckpointHashMismatch { .. })
    ));

    // The referee re-runs one step.
    let start = store.get(&result.start).unwrap().to_vec();
    let mut one = Trainer::new(&model, hyper, &data).unwrap();
    let mut s1 = TrainState::decode(&start, &model).unwrap();
    one.run(&mut s1, 1);
    let honest_end = s1.hash(&model);
    let mut referee = Trainer::new(&model, hyper, &data).unwrap();
    assert!(referee_step(&mut referee, &start, &result.start, &honest_end).unwrap());
    assert!(!referee_step(&mut referee, &start, &result.start, &result.start).unwrap());

    // An audit past its time budget ends with no verdict (not a fault blamed on the trainer),
    // and one within it gives the replay of the last segment, which the metric is measured on.
    let all: Vec<usize> = (0..result.chain.len()).collect();
    let mut late = trainmesh_gpu::verify::Budgeted {
        inner: Trainer::new(&model, hyper, &data).unwrap(),
        deadline: std::time::Instant::now(),
        budget_ms: 0,
    };
    assert!(matches!(
        audit(&result, &result.chain_root(), &all, &store, &mut late),
        Err(GpuError::OutOfTime { .. })
    ));
    let mut in_time = trainmesh_gpu::verify::Budgeted {
        inner: Trainer::new(&model, hyper, &data).unwrap(),
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(3_600),
        budget_ms: 3_600_000,
    };
    let report = audit(&result, &result.chain_root(), &all, &store, &mut in_time).unwrap();
    assert!(report.accepted());
    assert_eq!(
        report.last_end.as_deref().map(Hash32::of),
        Some(result.final_checkpoint())
    );

    // A result that is not the committed one, or is malformed, is refused before any replay.
    let b = beacon(1, 1);
    let checked = draw(&result, &b, 1, 3);
    let wrong_root = Hash32::of(b"other");
    assert!(matches!(
        audit(&result, &wrong_root, &checked, &store, &mut referee),
        Err(GpuError::ResultMalformed { .. })
    ));
    // A draw outside the chain is refused too.
    assert!(matches!(
        audit(&result, &result.chain_root(), &[4], &store, &mut referee),
        Err(GpuError::ResultMalformed { .. })
    ));
    let mut short = result.clone();
    short.losses.pop();
    assert!(matches!(
        audit(&short, &short.chain_root(), &checked, &store, &mut referee),
        Err(GpuError::ResultMalformed { .. })
    ));
    // A trainer that withholds a committed checkpoint fails the audit of that segment.
    let empty = CheckpointStore::new();
    let r = audit(
        &result,
        &result.chain_root(),
        &checked,
        &empty,
        &mut referee,
    )
    .unwrap();
    assert!(r
        .faults
        .iter()
        .all(|(_, f)| matches!(f, SegmentFault::Unavailable { .. })));
    assert!(!r.accepted());
}

#[test]
fn bisection_narrows_a_dispute_to_the_faked_step_and_the_referee_settles_it() {
    let (model, hyper, data) = setup();
    let steps = 16u64;
    // The trainer's per-step states of one segment, honest except that step 11 was skipped
    // (the parameters of step 10 relabelled as step 11), after which it carried on honestly.
    let faked_step = 11u64;
    let start = initial_state(&model, &hyper);
    let mut trainer = Trainer::new(&model, hyper, &data).unwrap();
    let mut state = start.clone();
    let mut claimed = vec![state.encode(&model)];
    for t in 1..=steps {
        if t == faked_step {
            state.step += 1;
        } else {
            trainer.run(&mut state, 1);
        }
        claimed.push(state.encode(&model));
    }
    // The evaluator's own recomputation.
    let mut evaluator = Trainer::new(&model, hyper, &data).unwrap();
    let mut mine = start.clone();
    let mut own = vec![mine.hash(&model)];
    for _ in 0..steps {
        evaluator.run(&mut mine, 1);
        own.push(mine.hash(&model));
    }
    assert_ne!(Hash32::of(&claimed[steps as usize]), own[steps as usize]);

    let mut b = trainmesh_gpu::verify::Bisection::new(steps);
    let mut rounds = 0;
    while !b.is_settled() {
        let mid = b.midpoint() as usize;
        b.record(Hash32::of(&claimed[mid]) == own[mid]);
        rounds += 1;
    }
    assert_eq!(rounds, 4, "⌈log₂ 16⌉ rounds");
    assert_eq!((b.agreed, b.disputed), (faked_step - 1, faked_step));

    // The referee re-runs the one disputed step from the agreed checkpoint: the trainer lied.
    let agreed_blob = &claimed[b.agreed as usize];
    let trainer_claim = Hash32::of(&claimed[b.disputed as usize]);
    let mut referee = Trainer::new(&model, hyper, &data).unwrap();
    assert!(!referee_step(
        &mut referee,
        agreed_blob,
        &own[b.agreed as usize],
        &trainer_claim
    )
    .unwrap());
    assert!(referee_step(
        &mut referee,
        agreed_blob,
        &own[b.agreed as usize],
        &own[b.disputed as usize]
    )
    .unwrap());
}

#[test]
fn a_trainer_keeping_one_checkpoint_in_eight_still_serves_every_audit() {
    let (model, hyper, data) = setup();
    let (m, s, keep) = (40u64, 3u64, 8u64);
    let mut kept = CheckpointStore::new();
    let mut t = Trainer::new(&model, hyper, &data).unwrap();
    let (result, _) = t
        .work_unit_keeping(&initial_state(&model, &hyper), m, s, keep, &mut kept)
        .unwrap();
    // The same chain as keeping everything.
    let mut all = CheckpointStore::new();
    let (full, _) = Trainer::new(&model, hyper, &data)
        .unwrap()
        .work_unit(&initial_state(&model, &hyper), m, s, &mut all)
        .unwrap();
    assert_eq!(result.chain, full.chain);
    assert_eq!(kept.len(), 1 + (m / keep) as usize);
    assert_eq!(all.len(), 1 + m as usize);

    let server = trainmesh_gpu::train::ChainServer::new(
        Trainer::new(&model, hyper, &data).unwrap(),
        &kept,
        &result,
    );
    for h in &result.chain {
        assert_eq!(server.serve(h).as_deref(), all.get(h), "checkpoint {h}");
    }
    assert!(server.serve(&Hash32::of(b"not in the chain")).is_none());
    let every: Vec<usize> = (0..m as usize).collect();
    let mut evaluator = Trainer::new(&model, hyper, &data).unwrap();
    let r = audit(
        &result,
        &result.chain_root(),
        &every,
        &server,
        &mut evaluator,
    )
    .unwrap();
    assert!(
        r.accepted() && r.checked.len() == m as usize,
        "{:?}",
        r.faults
    );
}
