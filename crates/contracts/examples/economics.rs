//! Economics simulation: the real contracts, driven through many days of jobs, with a share of
//! cheating trainers and of lazy evaluators. Prints the supply over time and what each role
//! earned; the last line is one JSON object.
//!
//! `cargo run --release -p trainmesh-contracts --example economics -- --days 30 --units-per-day 200 --cheat-percent 5 --lazy-percent 20`
//!
//! Cheaters fake every result (honest evaluators reject it; a rejection is final once the contest
//! window passes, a cheater never contests). Lazy evaluators accept everything without checking:
//! on a panel with an honest evaluator and a cheater's result the panel splits, the dispute goes
//! against the cheater (it cannot open a chain that holds up) and the lazy accept is slashed; on
//! a panel of two lazy evaluators a cheat is certified. The JSON line reports what that costs and
//! pays: income and slashes per honest and per lazy evaluator (net of `--audit-cost`, the
//! compute an honest evaluator spends per audit, in TRAIN), and the cheats certified.
//!
//! Planted faults (`--plant-ppm`, parts per million of units): every trainer seals a secret per
//! unit; a unit the draw makes a plant is submitted with a provably wrong last segment, honest
//! evaluators reject it, lazy ones accept it and are slashed, and the true result follows. The
//! JSON line adds the plants and how many lazy accepts they caught: that is what makes laziness
//! cost more than the audits it saves, even when no trainer cheats.
//!
//! Attacks (run on a copy of the network the simulation leaves, so that they change none of its
//! figures): **emission farming** — a researcher pays its own sybil trainer, holding most of the
//! trainer stake, on its own zero-price dataset, with the cheapest units allowed — and **slot
//! squatting** — one account submits as many jobs nobody can take as it may — and **spam** — one
//! account floods a validator with transactions that do nothing (calls that fail, the same bytes
//! again, replays of committed ones, a second transaction per nonce, far-ahead nonces), run on the
//! real ledger and mempool admission beside an honest user. The JSON line's `attacks` lists each
//! with the attacker's profit in TRAIN (for the first two, contract flows; transaction fees, which
//! only lower them, are counted in the spam scenario alone).
//!
//! Every number comes from executing the contracts (`calls::execute` over an in-memory state):
//! escrow, fee shares, emission and its decay, slashing, refunds. Change the parameters with the
//! flags to see their effect before proposing them to governance.

use std::collections::BTreeMap;

use clap::Parser;
use trainmesh_contracts::calls::{execute, on_batch_end, Call};
use trainmesh_contracts::datasets::DatasetSpec;
use trainmesh_contracts::jobs::{
    self, Attestation, HyperParams, JobSpec, Metric, Optimizer, Target, UnitState, WorkResult,
};
use trainmesh_contracts::workers::{self, Capability, Role};
use trainmesh_contracts::{
    accounts, invariants, Address, Amount, Context, DatasetId, Event, Genesis, GenesisAccount,
    Hash32, JobId, MemState, Params, PaymentReason, TimestampMs, UnitId,
};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 30)]
    days: u64,
    #[arg(long, default_value_t = 200)]
    units_per_day: u64,
    /// Share of the trainers that fake their results, in percent.
    #[arg(long, default_value_t = 5)]
    cheat_percent: u64,
    /// Share of the evaluators that accept without checking, in percent.
    #[arg(long, default_value_t = 20)]
    lazy_percent: u64,
    /// What an honest audit costs its evaluator, in milli-TRAIN (compute, not on the ledger).
    #[arg(long, default_value_t = 500)]
    audit_cost_milli: u64,
    #[arg(long, default_value_t = 20)]
    trainers: u64,
    #[arg(long, default_value_t = 10)]
    evaluators: u64,
    /// Emission per certificate, in TRAIN.
    #[arg(long, default_value_t = 10)]
    emission: u64,
    /// Emission decay per interval, in basis points.
    #[arg(long, default_value_t = 100)]
    decay_bps: u32,
    #[arg(long, default_value_t = 1_000)]
    decay_interval: u64,
    /// Chance that a unit is a planted fault, in parts per million.
    #[arg(long, default_value_t = 20_000)]
    plant_ppm: u32,
}

fn address(tag: &str, i: u64) -> Address {
    Address::from_public_key(blake3::hash(format!("{tag}-{i}").as_bytes()).as_bytes())
}

#[derive(Clone)]
struct Sim {
    state: MemState,
    time: u64,
    height: u64,
    earned: BTreeMap<&'static str, u128>,
    slashed: u128,
    roles: BTreeMap<Address, &'static str>,
    /// Paid to and slashed from each address.
    paid_to: BTreeMap<Address, u128>,
    slashed_from: BTreeMap<Address, u128>,
    disputes: u64,
    plants_accepted: u64,
}

impl Sim {
    fn ctx(&mut self) -> Context {
        self.time += 1_000;
        self.height += 1;
        Context {
            height: self.height,
            time: TimestampMs(self.time),
            seed: *blake3::hash(&self.height.to_le_bytes()).as_bytes(),
        }
    }

    fn call(&mut self, sender: Address, call: Call) -> Vec<Event> {
        let ctx = self.ctx();
        let name = call.name();
        let mut events = execute(&mut self.state, &ctx, sender, call)
            .unwrap_or_else(|e| panic!("{name} failed: {e}"));
        events.extend(on_batch_end(&mut self.state, &ctx).expect("batch end"));
        self.record(&events);
        events
    }

    /// A batch with no transactions: deadlines pass.
    fn tick(&mut self) -> Vec<Event> {
        let ctx = self.ctx();
        let events = on_batch_end(&mut self.state, &ctx).expect("batch end");
        self.record(&events);
        events
    }

    fn record(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Paid { to, amount, reason } => {
                    let role = match reason {
                        PaymentReason::Emission { .. } => "trainer emission",
                        PaymentReason::ValidatorReward { .. } => "validator reward",
                        PaymentReason::Refund { .. } => "researcher refund",
                        _ => self.roles.get(to).copied().unwrap_or("other"),
                    };
                    *self.earned.entry(role).or_default() += amount.0;
                    *self.paid_to.entry(*to).or_default() += amount.0;
                }
                Event::Slashed { who, amount, .. } => {
                    self.slashed += amount.0;
                    *self.slashed_from.entry(*who).or_default() += amount.0;
                }
                Event::DisputeOpened { .. } => self.disputes += 1,
                Event::PlantResolved { missed, .. } => self.plants_accepted += missed.len() as u64,
                _ => {}
            }
        }
    }
}

fn params_now(sim: &Sim) -> Params {
    trainmesh_contracts::params::load(&sim.state).expect("parameters")
}

/// What became of one unit.
#[derive(Default)]
struct UnitOutcome {
    certified: bool,
    plants: u64,
}

/// Runs a unit to its end: the trainer seals (a plant first if the draw makes it one), submits,
/// the panel commits, the seal opens, all reveal, a dispute plays out, the contest window passes.
/// Honest evaluators reject faulty work (a cheat or a plant); lazy ones accept everything.
fn run_unit(
    sim: &mut Sim,
    id: UnitId,
    cheat: bool,
    lazy: &[Address],
    audits: &mut BTreeMap<Address, u64>,
) -> UnitOutcome {
    let index = id.index;
    let mut out = UnitOutcome::default();
    // At most two rounds: a plant (if the draw makes the unit one), then the result.
    loop {
        let unit = jobs::load_unit(&sim.state, id).unwrap();
        let trainer = unit.trainer.unwrap();
        let secret = Hash32(*blake3::hash(format!("{id}/{}", unit.attempt).as_bytes()).as_bytes());
        let mut planted = false;
        if trainmesh_contracts::plants::required(&unit, 1, &params_now(sim)) {
            sim.call(
                trainer,
                Call::SealPlant {
                    unit: id,
                    seal: trainmesh_contracts::plants::seal_of(&secret),
                },
            );
            let p = jobs::load_unit(&sim.state, id).unwrap().plant.unwrap();
            planted = trainmesh_contracts::plants::is_plant(&secret, &p.seed, p.rate_ppm);
        }
        let result = WorkResult {
            checkpoint: if planted {
                trainmesh_contracts::plants::planted_checkpoint(&secret, id)
            } else {
                Hash32([index as u8; 32])
            },
            chain_root: Hash32([3; 32]),
            segments: jobs::chain_segments(100),
            loss_trace_ppm: vec![500_000],
            metric_ppm: 900_000,
        };
        sim.call(trainer, Call::SubmitWorkResult { unit: id, result });
        let unit = jobs::load_unit(&sim.state, id).unwrap();
        // The whole panel commits, then the trainer opens its seal, then all reveal.
        let salt = Hash32([7; 32]);
        let faulty = cheat || planted;
        let attestations: Vec<(Address, Attestation)> = unit
            .evaluators
            .iter()
            .map(|e| {
                // Each evaluator names the ledger's draw for it.
                let segments_checked = trainmesh_contracts::sampling::audit_sample(
                    &unit.audit_seed.0,
                    &[3; 32],
                    e,
                    jobs::chain_segments(100),
                    jobs::audit_segments(&Params::default()),
                );
                if !lazy.contains(e) {
                    *audits.entry(*e).or_default() += 1;
                }
                let attestation = Attestation {
                    accept: !faulty || lazy.contains(e),
                    metric_ppm: 900_000,
                    tier: 1,
                    segments_checked,
                };
                (*e, attestation)
            })
            .collect();
        for (e, attestation) in &attestations {
            let commitment = jobs::attestation_commitment(id, unit.attempt, e, attestation, &salt);
            sim.call(
                *e,
                Call::CommitAttestation {
                    unit: id,
                    commitment,
                },
            );
        }
        if unit.plant.is_some() {
            sim.call(trainer, Call::OpenPlant { unit: id, secret });
        }
        let mut outcome = Vec::new();
        for (e, attestation) in attestations {
            outcome.extend(sim.call(
                e,
                Call::Attest {
                    unit: id,
                    attestation,
                    salt,
                },
            ));
        }
        if planted {
            out.plants += 1;
            continue;
        }
        let unit = jobs::load_unit(&sim.state, id).unwrap();
        if let (UnitState::Disputed, Some(d)) = (unit.state, &unit.dispute) {
            // The honest challenger names the faked segment; the cheater cannot open a
            // chain that holds up and stays silent: it loses at the next batch.
            sim.call(
                d.challenger,
                Call::Dispute {
                    unit: id,
                    mv: trainmesh_contracts::disputes::Move::Segment {
                        segment: 0,
                        end: Hash32([9; 32]),
                    },
                },
            );
        }
        // The contest window (or the dispute's moves) pass.
        while matches!(
            jobs::load_unit(&sim.state, id).unwrap().state,
            UnitState::Rejected | UnitState::Disputed
        ) {
            sim.tick();
        }
        out.certified = outcome
            .iter()
            .any(|e| matches!(e, Event::WorkCertified { .. }));
        return out;
    }
}

/// A dataset spec served by `provider`'s own node (its network key derived from its address),
/// bound to it as the ledger requires.
fn served_dataset(
    provider: Address,
    name: &str,
    roots: (u8, u8),
    shard_bytes: u64,
    heldout_samples: u64,
    licence: &str,
    price_per_use: Amount,
) -> DatasetSpec {
    let key = ed25519_zebra::SigningKey::from(provider.0);
    let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
    let (shards_root, heldout_root) = (Hash32([roots.0; 32]), Hash32([roots.1; 32]));
    let message =
        trainmesh_contracts::datasets::binding_message(&provider, &shards_root, &heldout_root);
    let signature: [u8; 64] = key.sign(&message).into();
    DatasetSpec {
        name: name.into(),
        shards_root,
        shard_sizes: vec![shard_bytes],
        heldout_root,
        heldout_samples,
        licence: licence.into(),
        price_per_use,
        peer_id: workers::ed25519_peer_id(&public),
        peer_signature: signature.to_vec(),
    }
}

/// Registers `a` as a worker of `role` with `bond`, its network key bound to its account.
fn register(sim: &mut Sim, a: Address, role: Role, bond: Amount) {
    let key = ed25519_zebra::SigningKey::from(a.0);
    let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
    let peer_id = workers::ed25519_peer_id(&public);
    let signature: [u8; 64] = key.sign(&workers::peer_binding_message(&a)).into();
    sim.call(
        a,
        Call::RegisterWorker {
            role,
            bond,
            capability: Capability {
                adapter: "sim".into(),
                backend: "cpu".into(),
                memory_mb: 8_192,
                gflops: 50,
                conformance: None,
            },
            peer_id,
            peer_signature: signature.to_vec(),
        },
    );
}

/// What a group of accounts holds: balances, stake and unbonding, in base units.
fn worth(sim: &Sim, who: &[Address]) -> i128 {
    who.iter()
        .map(|a| {
            let acc = accounts::load(&sim.state, a).unwrap();
            (acc.balance.0 + acc.stake.0 + acc.unbonding_total().0) as i128
        })
        .sum()
}

fn job_spec(dataset: DatasetId, units: u64, budget: Amount, deadline: TimestampMs) -> JobSpec {
    JobSpec {
        model: "{\"kind\":\"mlp\"}".into(),
        dataset,
        hyper: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate_ppm: 1_000,
            batch_size: 64,
            total_steps: 100 * units,
            steps_per_unit: 100,
            seed: 1,
        },
        target: Target {
            metric: Metric::Accuracy,
            threshold_ppm: 990_000,
        },
        budget,
        deadline,
        tier: 1,
        min_memory_mb: 0,
    }
}

/// Emission farming: a researcher pays its own sybil trainer (with most of the trainer stake,
/// so that it wins most draws) on its own zero-price dataset, with the cheapest units allowed.
/// Its profit is what the three accounts together hold after the job, less before.
fn emission_farming(
    sim: &mut Sim,
    funder: Address,
    lazy: &[Address],
    audits: &mut BTreeMap<Address, u64>,
) -> serde_json::Value {
    let farmer = address("farmer", 0);
    let trainer = address("farmer-trainer", 0);
    let provider = address("farmer-provider", 0);
    for (a, train) in [(farmer, 1_000), (trainer, 200_000), (provider, 10)] {
        sim.call(
            funder,
            Call::Transfer {
                to: a,
                amount: Amount::from_train(train),
            },
        );
    }
    register(sim, trainer, Role::Trainer, Amount::from_train(150_000));
    let events = sim.call(
        provider,
        Call::AttachDataset {
            spec: served_dataset(provider, "own", (11, 12), 1_000, 100, "own", Amount::ZERO),
        },
    );
    let dataset = events
        .iter()
        .find_map(|e| match e {
            Event::DatasetAttached { dataset, .. } => Some(*dataset),
            _ => None,
        })
        .expect("attached");
    let coalition = [farmer, trainer, provider];
    let before = worth(sim, &coalition);
    let units = 50;
    let deadline = TimestampMs(sim.time + 30 * 24 * 3_600_000);
    let events = sim.call(
        farmer,
        Call::SubmitJob {
            spec: job_spec(dataset, units, Amount::from_train(units), deadline),
        },
    );
    let job = events
        .iter()
        .find_map(|e| match e {
            Event::JobSubmitted { job, .. } => Some(*job),
            _ => None,
        })
        .expect("submitted");
    let mut won = 0;
    while jobs::load_job(&sim.state, job).unwrap().state == jobs::JobState::Running {
        let index = jobs::load_job(&sim.state, job).unwrap().current_unit;
        let id = UnitId { job, index };
        if jobs::load_unit(&sim.state, id).unwrap().trainer == Some(trainer) {
            won += 1;
        }
        run_unit(sim, id, false, lazy, audits);
    }
    let profit = worth(sim, &coalition) - before;
    serde_json::json!({
        "attack": "emission_farming",
        "units": units,
        "units_won_by_the_sybil_trainer": won,
        "profit_train": profit as f64 / 1e9,
    })
}

/// Slot squatting: one account submits jobs nobody can take, as many as it is allowed, to block
/// other researchers. Its profit is what it holds once those jobs have ended, less before; the
/// JSON says how many it got and whether another researcher could still submit.
fn slot_squatting(sim: &mut Sim, funder: Address, dataset: DatasetId) -> serde_json::Value {
    let squatter = address("squatter", 0);
    sim.call(
        funder,
        Call::Transfer {
            to: squatter,
            amount: Amount::from_train(10_000),
        },
    );
    let before = worth(sim, &[squatter]);
    let deadline = TimestampMs(sim.time + 3_600_000);
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..100 {
        let mut spec = job_spec(dataset, 1, Amount::from_train(10), deadline);
        spec.min_memory_mb = jobs::MEMORY_MB_MAX;
        let ctx = sim.ctx();
        match execute(&mut sim.state, &ctx, squatter, Call::SubmitJob { spec }) {
            Ok(events) => {
                sim.record(&events);
                accepted += 1;
            }
            Err(_) => refused += 1,
        }
    }
    let ctx = sim.ctx();
    let others_can_submit = execute(
        &mut sim.state.clone(),
        &ctx,
        funder,
        Call::SubmitJob {
            spec: job_spec(dataset, 1, Amount::from_train(100), deadline),
        },
    )
    .is_ok();
    // The deadline passes: every squatted job expires and refunds.
    sim.time = deadline.0;
    sim.tick();
    let profit = worth(sim, &[squatter]) - before;
    serde_json::json!({
        "attack": "slot_squatting",
        "jobs_accepted": accepted,
        "jobs_refused": refused,
        "others_can_submit": others_can_submit,
        "profit_train": profit as f64 / 1e9,
    })
}

/// Spam: for `rounds` batches, an account sends a validator 40 transactions each round that do
/// nothing — calls that fail (withdrawing what it never bonded), each sent twice, a second
/// transaction for a nonce already pending, nonces far ahead, and replays of its committed ones
/// — beside one honest transfer per round. What the mempool admits is executed by the real
/// ledger. The spammer pays the minimum fee for every call that reaches execution; nothing it
/// sends costs the validators more than one pending entry per fee it can pay, and the honest
/// transfers all commit.
fn spam(rounds: u64) -> serde_json::Value {
    use trainmesh_ledger::admission::{Admission, AdmissionLimits, Admitted, Source};
    use trainmesh_ledger::{AccountKey, Batch, Ledger};
    let spammer = AccountKey::from_seed(0x5BA);
    let honest = AccountKey::from_seed(0x600D);
    let validator = AccountKey::from_seed(0x7A1);
    let genesis = Genesis {
        chain_id: "economics-spam".into(),
        genesis_time_ms: 1_000_000,
        accounts: [(&spammer, 100), (&honest, 100)]
            .iter()
            .map(|(k, train)| GenesisAccount {
                address: k.address(),
                balance: Amount::from_train(*train),
            })
            .collect(),
        validators: vec![trainmesh_contracts::GenesisValidator {
            address: validator.address(),
            consensus_key: Hash32(trainmesh_dag::KeyPair::from_seed(0).public().0),
            stake: Amount::from_train(100_000),
        }],
        params: Params::default(),
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut ledger = Ledger::open(dir.path().join("ledger.redb")).expect("a ledger");
    ledger.init(&genesis).expect("genesis");
    let min_fee = Params::default().min_fee;
    let worth_of = |l: &Ledger, k: &AccountKey| {
        let a = l.account(&k.address()).unwrap();
        (a.balance.0 + a.stake.0) as i128
    };
    let spammer_before = worth_of(&ledger, &spammer);
    let validator_before = worth_of(&ledger, &validator);
    let peer = Source::Peer([0x5A; 32]);
    let mut admission = Admission::new(AdmissionLimits::default());
    let (mut sent, mut admitted, mut executed, mut honest_ok) = (0u64, 0u64, 0u64, 0u64);
    let mut committed: Vec<Vec<u8>> = Vec::new();
    let mut time = genesis.genesis_time_ms;
    for round in 0..rounds {
        time += 1_000;
        let chain = &genesis.chain_id;
        let next = ledger.account(&spammer.address()).unwrap().nonce;
        let mut offered: Vec<Vec<u8>> = Vec::new();
        for i in 0..12 {
            let failing =
                spammer.sign_until(chain, next + i, min_fee, time + 60_000, Call::Withdraw);
            offered.push(failing.encode());
            offered.push(failing.encode());
        }
        for i in 0..8 {
            let other = Call::Transfer {
                to: honest.address(),
                amount: Amount(1 + i),
            };
            offered.push(
                spammer
                    .sign_until(chain, next, min_fee, time + 60_000, other)
                    .encode(),
            );
            let far = spammer.sign_until(
                chain,
                next + 100 + i as u64,
                min_fee,
                time + 60_000,
                Call::Withdraw,
            );
            offered.push(far.encode());
        }
        offered.extend(committed.iter().rev().take(8).cloned());
        let mut batch = Vec::new();
        for bytes in offered {
            sent += 1;
            let tx = trainmesh_ledger::SignedTransaction::decode(&bytes).unwrap();
            let account = ledger.account(&tx.sender()).unwrap();
            if admission.admit(&tx, bytes.len(), peer, &account, min_fee, time) == Ok(Admitted::New)
            {
                admitted += 1;
                batch.push(bytes::Bytes::from(bytes));
            }
        }
        let nonce = ledger.account(&honest.address()).unwrap().nonce;
        let pay = Call::Transfer {
            to: spammer.address(),
            amount: Amount(1),
        };
        batch.push(bytes::Bytes::from(
            honest
                .sign_until(chain, nonce, min_fee, time + 60_000, pay)
                .encode(),
        ));
        let out = ledger
            .execute(&Batch {
                index: round,
                timestamp: TimestampMs(time),
                seed: [round as u8; 32],
                transactions: batch.clone(),
            })
            .expect("the batch executes");
        let (spam_receipts, honest_receipt) = out.receipts.split_at(out.receipts.len() - 1);
        executed += spam_receipts
            .iter()
            .filter(|r| !r.fee_paid.is_zero())
            .count() as u64;
        honest_ok += u64::from(honest_receipt[0].outcome.is_ok());
        for (bytes, r) in batch.iter().zip(spam_receipts) {
            if !r.fee_paid.is_zero() {
                committed.push(bytes.to_vec());
            }
        }
        admission.sweep(time, |a| ledger.account(a).map(|x| x.nonce).unwrap_or(0));
    }
    // The honest user's transfers of 1 base unit each reached the spammer: not its profit.
    let profit = worth_of(&ledger, &spammer) - spammer_before - honest_ok as i128;
    serde_json::json!({
        "attack": "spam",
        "rounds": rounds,
        "sent": sent,
        "admitted": admitted,
        "executed_and_charged": executed,
        "honest_transfers_committed": honest_ok,
        "validator_income_train": (worth_of(&ledger, &validator) - validator_before) as f64 / 1e9,
        "profit_train": profit as f64 / 1e9,
    })
}

fn train(n: u128) -> String {
    format!("{:.1}", n as f64 / 1e9)
}

fn main() {
    let args = Args::parse();
    let params = Params {
        emission_per_certificate: Amount::from_train(args.emission),
        emission_decay_bps: args.decay_bps,
        emission_decay_interval: args.decay_interval,
        // The longest the bounds allow: a simulated day is far shorter (one second per call),
        // and every worker heartbeats once per simulated day.
        unit_timeout_ms: 7 * 24 * 3_600_000,
        heartbeat_timeout_ms: 24 * 3_600_000,
        // Every simulated batch is 1 s later: a rejection is final at the next batch, and a
        // dispute party has one batch for its move.
        disputes: trainmesh_contracts::disputes::DisputeParams {
            window_ms: 1_000,
            move_ms: 1_001,
            ..Default::default()
        },
        plants: trainmesh_contracts::plants::PlantParams {
            rate_ppm: args.plant_ppm,
            ..Default::default()
        },
        ..Params::default()
    };
    let researcher = address("researcher", 0);
    let provider = address("provider", 0);
    let trainers: Vec<Address> = (0..args.trainers).map(|i| address("trainer", i)).collect();
    let evaluators: Vec<Address> = (0..args.evaluators)
        .map(|i| address("evaluator", i))
        .collect();
    let mut accounts_list = vec![GenesisAccount {
        address: researcher,
        balance: Amount::from_train(100_000_000),
    }];
    accounts_list.push(GenesisAccount {
        address: provider,
        balance: Amount::from_train(10),
    });
    for a in trainers.iter().chain(&evaluators) {
        accounts_list.push(GenesisAccount {
            address: *a,
            balance: Amount::from_train(1_000),
        });
    }
    let genesis = Genesis {
        chain_id: "economics".into(),
        genesis_time_ms: 0,
        accounts: accounts_list,
        // Four validators of equal stake: they take `validator_share_bps` of every emission.
        validators: (0..4u8)
            .map(|i| trainmesh_contracts::GenesisValidator {
                address: address("validator", u64::from(i)),
                consensus_key: Hash32([i + 1; 32]),
                stake: Amount::from_train(100_000),
            })
            .collect(),
        params,
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let mut sim = Sim {
        state: MemState::default(),
        time: 0,
        height: 0,
        earned: BTreeMap::new(),
        slashed: 0,
        roles: BTreeMap::new(),
        paid_to: BTreeMap::new(),
        slashed_from: BTreeMap::new(),
        disputes: 0,
        plants_accepted: 0,
    };
    // The first `cheat_percent`% of the trainers cheat, the first `lazy_percent`% of the
    // evaluators are lazy.
    let cheaters: Vec<Address> = trainers
        .iter()
        .take((args.trainers * args.cheat_percent).div_ceil(100) as usize)
        .copied()
        .collect();
    let lazy: Vec<Address> = evaluators
        .iter()
        .take((args.evaluators * args.lazy_percent).div_ceil(100) as usize)
        .copied()
        .collect();
    let mut audits: BTreeMap<Address, u64> = BTreeMap::new();
    let mut cheats_certified = 0u64;
    let mut plants = 0u64;
    genesis.apply(&mut sim.state).expect("genesis");
    sim.roles.insert(provider, "data provider");
    for (list, role, name) in [
        (&trainers, Role::Trainer, "trainer share"),
        (&evaluators, Role::Evaluator, "evaluator share"),
    ] {
        for a in list {
            sim.roles.insert(*a, name);
            register(&mut sim, *a, role, Amount::from_train(500));
        }
    }
    sim.call(
        provider,
        Call::AttachDataset {
            spec: served_dataset(
                provider,
                "digits",
                (1, 2),
                100_000,
                360,
                "CC-BY-4.0",
                Amount::from_train(1),
            ),
        },
    );
    let units_per_job = 20u64;
    let supply0 = accounts::supply(&sim.state).unwrap();
    println!("+ CONFIG: {args:?}");
    println!(
        "{:>4} {:>14} {:>12} {:>12} {:>10} {:>14} {:>14}",
        "day", "supply", "emitted", "burned", "certs", "trainers earn", "evaluators"
    );
    let mut job_n = 0u64;
    let mut certified = 0u64;
    let mut rejected = 0u64;
    let mut current: Option<JobId> = None;
    for day in 1..=args.days {
        for a in trainers.iter().chain(&evaluators) {
            sim.call(*a, Call::Heartbeat);
        }
        for _ in 0..args.units_per_day {
            let job = match current {
                Some(j)
                    if jobs::load_job(&sim.state, j).unwrap().state == jobs::JobState::Running =>
                {
                    j
                }
                _ => {
                    job_n += 1;
                    let mut spec = job_spec(
                        DatasetId(1),
                        units_per_job,
                        Amount::from_train(100 * units_per_job),
                        TimestampMs(sim.time + 30 * 24 * 3_600_000),
                    );
                    spec.hyper.seed = job_n;
                    sim.call(researcher, Call::SubmitJob { spec });
                    let j = JobId(job_n);
                    current = Some(j);
                    j
                }
            };
            let index = jobs::load_job(&sim.state, job).unwrap().current_unit;
            let id = UnitId { job, index };
            let unit = jobs::load_unit(&sim.state, id).unwrap();
            assert_eq!(
                unit.state,
                UnitState::Assigned,
                "enough trainers are registered"
            );
            let cheat = cheaters.contains(&unit.trainer.unwrap());
            let outcome = run_unit(&mut sim, id, cheat, &lazy, &mut audits);
            plants += outcome.plants;
            match (cheat, outcome.certified) {
                (true, true) => cheats_certified += 1,
                (true, false) => rejected += 1,
                _ => {}
            }
            if outcome.certified {
                certified += 1;
            }
        }
        let s = accounts::supply(&sim.state).unwrap();
        invariants::check(
            sim.state
                .entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("invariants hold");
        println!(
            "{day:>4} {:>14} {:>12} {:>12} {certified:>10} {:>14} {:>14}",
            train(s.expected_total().0),
            train(s.emitted.0),
            train(s.burned.0),
            train(
                sim.earned.get("trainer share").copied().unwrap_or(0)
                    + sim.earned.get("trainer emission").copied().unwrap_or(0)
            ),
            train(sim.earned.get("evaluator share").copied().unwrap_or(0)),
        );
    }
    // The attacks run on a copy of the network as the simulation left it, so that they change
    // none of the figures above.
    let attacks = {
        let mut copy = sim.clone();
        let mut audits = audits.clone();
        vec![
            emission_farming(&mut copy, researcher, &lazy, &mut audits),
            slot_squatting(&mut copy, researcher, DatasetId(1)),
            spam(20),
        ]
    };
    for a in &attacks {
        println!(" attack: {a}");
    }
    let s = accounts::supply(&sim.state).unwrap();
    let get = |k: &str| sim.earned.get(k).copied().unwrap_or(0);
    println!("+ RESULTS:");
    for (role, amount) in &sim.earned {
        println!(" {role}: {} TRAIN", train(*amount));
    }
    println!(
        " slashed: {} TRAIN over {rejected} rejected results",
        train(sim.slashed)
    );
    // Per evaluator, honest and lazy: paid, slashed, and (honest only) what its audits cost.
    let per = |group: &[Address], audited: bool| {
        let n = group.len().max(1) as f64;
        let paid: u128 = group
            .iter()
            .map(|a| sim.paid_to.get(a).copied().unwrap_or(0))
            .sum();
        let slashed: u128 = group
            .iter()
            .map(|a| sim.slashed_from.get(a).copied().unwrap_or(0))
            .sum();
        let cost: u64 = if audited {
            group
                .iter()
                .map(|a| audits.get(a).copied().unwrap_or(0))
                .sum::<u64>()
                * args.audit_cost_milli
        } else {
            0
        };
        let net = paid as f64 / 1e9 - slashed as f64 / 1e9 - cost as f64 / 1e3;
        (paid as f64 / 1e9 / n, slashed as f64 / 1e9 / n, net / n)
    };
    let honest_evaluators: Vec<Address> = evaluators
        .iter()
        .filter(|e| !lazy.contains(e))
        .copied()
        .collect();
    let (honest_paid, honest_slashed, honest_net) = per(&honest_evaluators, true);
    let (lazy_paid, lazy_slashed, lazy_net) = per(&lazy, false);
    println!(
        " per honest evaluator: paid {honest_paid:.1}, slashed {honest_slashed:.1}, net of audits {honest_net:.1} TRAIN"
    );
    println!(
        " per lazy evaluator: paid {lazy_paid:.1}, slashed {lazy_slashed:.1}, net {lazy_net:.1} TRAIN; {cheats_certified} cheats certified by lazy panels"
    );
    println!(
        "{}",
        serde_json::json!({
            "attacks": attacks,
            "days": args.days,
            "certificates": certified,
            "rejected": rejected,
            "disputes": sim.disputes,
            "cheats_certified": cheats_certified,
            "plants": plants,
            "plants_accepted": sim.plants_accepted,
            "honest_evaluator_paid_train": honest_paid,
            "honest_evaluator_slashed_train": honest_slashed,
            "honest_evaluator_net_train": honest_net,
            "lazy_evaluator_paid_train": lazy_paid,
            "lazy_evaluator_slashed_train": lazy_slashed,
            "lazy_evaluator_net_train": lazy_net,
            "supply_start_train": supply0.expected_total().0 as f64 / 1e9,
            "supply_end_train": s.expected_total().0 as f64 / 1e9,
            "emitted_train": s.emitted.0 as f64 / 1e9,
            "burned_train": s.burned.0 as f64 / 1e9,
            "trainer_income_train": (get("trainer share") + get("trainer emission")) as f64 / 1e9,
            "evaluator_income_train": get("evaluator share") as f64 / 1e9,
            "validator_income_train": get("validator reward") as f64 / 1e9,
            "data_provider_income_train": get("data provider") as f64 / 1e9,
            "slashed_train": sim.slashed as f64 / 1e9,
        })
    );
}
