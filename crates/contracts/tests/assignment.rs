//! Drawing trainers for waiting units at the end of a batch: one scan of the workers serves every
//! waiting unit, however many wait (units nobody can take must not cost a scan each, each batch).

use std::cell::Cell;

use trainmesh_contracts::calls::{execute, on_batch_end, Call};
use trainmesh_contracts::datasets::{binding_message, DatasetSpec};
use trainmesh_contracts::jobs::{HyperParams, JobSpec, Metric, Optimizer, Target};
use trainmesh_contracts::workers::{self, Capability, Role};
use trainmesh_contracts::{
    Address, Amount, Context, ContractResult, DatasetId, Event, Genesis, GenesisAccount, Hash32,
    MemState, Params, State, TimestampMs,
};

/// A state that counts the reads of worker records.
struct Counting<'a> {
    inner: &'a mut MemState,
    worker_reads: Cell<usize>,
}

impl State for Counting<'_> {
    fn get(&self, key: &[u8]) -> ContractResult<Option<Vec<u8>>> {
        if key.starts_with(b"worker/") {
            self.worker_reads.set(self.worker_reads.get() + 1);
        }
        self.inner.get(key)
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) {
        self.inner.delete(key)
    }
}

fn address(tag: &str, i: u64) -> Address {
    Address::from_public_key(blake3::hash(format!("{tag}-{i}").as_bytes()).as_bytes())
}

fn ctx(t: u64) -> Context {
    Context {
        height: t,
        time: TimestampMs(1_000_000 + t * 1_000),
        seed: *blake3::hash(&t.to_le_bytes()).as_bytes(),
    }
}

fn call(state: &mut MemState, t: &mut u64, sender: Address, c: Call) -> Vec<Event> {
    *t += 1;
    let name = c.name();
    execute(state, &ctx(*t), sender, c).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Registers `a` as a trainer declaring `memory_mb`, its network key bound to its account.
fn register(state: &mut MemState, t: &mut u64, a: Address, memory_mb: u64) {
    let key = ed25519_zebra::SigningKey::from(a.0);
    let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
    let signature: [u8; 64] = key.sign(&workers::peer_binding_message(&a)).into();
    call(
        state,
        t,
        a,
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount::from_train(500),
            capability: Capability {
                adapter: "test".into(),
                backend: "cpu".into(),
                memory_mb,
                gflops: 50,
                conformance: None,
            },
            peer_id: workers::ed25519_peer_id(&public),
            peer_signature: signature.to_vec(),
        },
    );
}

fn job_spec(memory_mb: u64, deadline: TimestampMs) -> JobSpec {
    JobSpec {
        model: "{\"kind\":\"mlp\"}".into(),
        dataset: DatasetId(1),
        hyper: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate_ppm: 1_000,
            batch_size: 64,
            total_steps: 100,
            steps_per_unit: 100,
            seed: 1,
        },
        target: Target {
            metric: Metric::Accuracy,
            threshold_ppm: 990_000,
        },
        budget: Amount::from_train(10),
        deadline,
        tier: 1,
        min_memory_mb: memory_mb,
    }
}

#[test]
fn waiting_units_are_drawn_from_one_scan_per_batch() {
    const TRAINERS: u64 = 30;
    const OWNERS: u64 = 5;
    const JOBS_PER_OWNER: u64 = 12;
    let trainers: Vec<Address> = (0..TRAINERS).map(|i| address("trainer", i)).collect();
    let owners: Vec<Address> = (0..OWNERS).map(|i| address("owner", i)).collect();
    let provider = address("provider", 0);
    let genesis = Genesis {
        chain_id: "assignment".into(),
        genesis_time_ms: 1_000_000,
        accounts: trainers
            .iter()
            .chain(&owners)
            .chain([&provider])
            .map(|a| GenesisAccount {
                address: *a,
                balance: Amount::from_train(10_000),
            })
            .collect(),
        validators: vec![trainmesh_contracts::GenesisValidator {
            address: address("validator", 0),
            consensus_key: Hash32(trainmesh_dag::KeyPair::from_seed(0).public().0),
            stake: Amount::from_train(100_000),
        }],
        params: Params::default(),
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let mut state = MemState::default();
    genesis.apply(&mut state).unwrap();
    let mut t = 0;
    let key = ed25519_zebra::SigningKey::from(provider.0);
    let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
    let (shards_root, heldout_root) = (Hash32([1; 32]), Hash32([2; 32]));
    let binding: [u8; 64] = key
        .sign(&binding_message(&provider, &shards_root, &heldout_root))
        .into();
    call(
        &mut state,
        &mut t,
        provider,
        Call::AttachDataset {
            spec: DatasetSpec {
                name: "d".into(),
                shards_root,
                shard_sizes: vec![1_000],
                heldout_root,
                heldout_samples: 100,
                licence: String::new(),
                price_per_use: Amount::ZERO,
                peer_id: workers::ed25519_peer_id(&public),
                peer_signature: binding.to_vec(),
            },
        },
    );
    // Before any trainer registers, every unit waits: 48 that no trainer will ever take (more
    // memory than any declares) and 8 that any can.
    let deadline = TimestampMs(1_000_000 + 30 * 86_400_000);
    let mut submit = |state: &mut MemState, owner: Address, memory_mb: u64| {
        let events = call(
            state,
            &mut t,
            owner,
            Call::SubmitJob {
                spec: job_spec(memory_mb, deadline),
            },
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::UnitWaiting { .. })));
    };
    for owner in &owners[..OWNERS as usize - 1] {
        for _ in 0..JOBS_PER_OWNER {
            submit(&mut state, *owner, 4_096);
        }
    }
    let takeable = 8;
    for _ in 0..takeable {
        submit(&mut state, owners[OWNERS as usize - 1], 0);
    }
    // The trainers come.
    let mut t = 100;
    for a in &trainers {
        register(&mut state, &mut t, *a, 1_024);
    }
    // One batch end: every waiting unit is tried, from one scan; the takeable ones are drawn,
    // each trainer's collateral locked within its stake.
    t += 1;
    let mut counting = Counting {
        inner: &mut state,
        worker_reads: Cell::new(0),
    };
    let events = on_batch_end(&mut counting, &ctx(t)).unwrap();
    let reads = counting.worker_reads.get();
    let assigned = events
        .iter()
        .filter(|e| matches!(e, Event::UnitAssigned { .. }))
        .count();
    assert_eq!(assigned, takeable, "{events:?}");
    let waiting = ((OWNERS - 1) * JOBS_PER_OWNER) as usize + takeable;
    println!("{waiting} waiting units, {TRAINERS} trainers: {reads} worker reads");
    // One read per trainer for the scan, one per drawn unit (its open units): not a scan per
    // waiting unit (that would be about waiting × trainers).
    assert!(
        reads <= TRAINERS as usize + takeable,
        "{reads} worker reads for {waiting} waiting units and {TRAINERS} trainers"
    );
    // Nothing that could make a trainer drawable happens: the next batch end reads no worker.
    t += 1;
    let mut counting = Counting {
        inner: &mut state,
        worker_reads: Cell::new(0),
    };
    let events = on_batch_end(&mut counting, &ctx(t)).unwrap();
    assert_eq!(counting.worker_reads.get(), 0, "{events:?}");
    // A trainer with the memory the others lack registers: the waiting units are drawn again,
    // and it takes some.
    let big = address("big-trainer", 0);
    call(
        &mut state,
        &mut t,
        provider,
        Call::Transfer {
            to: big,
            amount: Amount::from_train(1_000),
        },
    );
    register(&mut state, &mut t, big, 8_192);
    t += 1;
    let events = on_batch_end(&mut state, &ctx(t)).unwrap();
    let taken = events
        .iter()
        .filter(|e| matches!(e, Event::UnitAssigned { trainer, .. } if *trainer == big))
        .count();
    assert!(taken >= 1, "{events:?}");
    trainmesh_contracts::invariants::check(
        state
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
}
