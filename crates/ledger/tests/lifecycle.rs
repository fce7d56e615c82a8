//! Whole contract flows through signed transactions and batches: a job from submission to
//! settlement, a cheating trainer, a deadline refund, a governance vote, disputes.

mod common;

use common::{genesis, Net};
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::datasets::DatasetSpec;
use trainmesh_ledger::contracts::disputes::{Move, Stage};
use trainmesh_ledger::contracts::jobs::{
    self, Attestation, HyperParams, JobSpec, JobState, Metric, Optimizer, Target, UnitState,
    WorkResult,
};
use trainmesh_ledger::contracts::keys;
use trainmesh_ledger::contracts::workers::{Capability, Role};
use trainmesh_ledger::contracts::{
    Address, Amount, DatasetId, Event, Hash32, JobId, ParamUpdate, Params, PaymentReason,
    SlashReason, TimestampMs, UnitId,
};
use trainmesh_ledger::AccountKey;

struct World {
    net: Net,
    /// The one validator (it referees disputes).
    validator: AccountKey,
    researcher: AccountKey,
    provider: AccountKey,
    trainers: Vec<AccountKey>,
    evaluators: Vec<AccountKey>,
}

fn capability() -> Capability {
    Capability {
        adapter: "cpu".into(),
        backend: "cpu".into(),
        memory_mb: 8_192,
        gflops: 40,
        conformance: None,
    }
}

fn world(params: Params) -> World {
    let researcher = AccountKey::from_seed(100);
    let provider = AccountKey::from_seed(101);
    let trainers: Vec<AccountKey> = (200..202).map(AccountKey::from_seed).collect();
    let evaluators: Vec<AccountKey> = (300..303).map(AccountKey::from_seed).collect();
    let validator = AccountKey::from_seed(1);
    let mut funded: Vec<(&AccountKey, u64)> =
        vec![(&researcher, 10_000), (&provider, 100), (&validator, 100)];
    funded.extend(trainers.iter().map(|k| (k, 1_000)));
    funded.extend(evaluators.iter().map(|k| (k, 1_000)));
    let g = genesis(&funded, &[&validator], params);
    let mut net = Net::new(&g);
    for (keys, role) in [(&trainers, Role::Trainer), (&evaluators, Role::Evaluator)] {
        for k in keys {
            net.ok(
                k,
                Call::RegisterWorker {
                    role,
                    bond: Amount::from_train(500),
                    capability: capability(),
                    peer_id: k.peer_binding(&k.secret()).0,
                    peer_signature: k.peer_binding(&k.secret()).1,
                },
            );
        }
    }
    net.ok(
        &provider,
        Call::AttachDataset {
            spec: dataset_spec(&provider),
        },
    );
    World {
        net,
        validator,
        researcher,
        provider,
        trainers,
        evaluators,
    }
}

/// What the trainer keeps of a certificate's emission: the validators take their share.
fn trainer_emission(emission: Amount, p: &Params) -> Amount {
    emission
        .checked_sub(emission.mul_bps(p.validator_share_bps))
        .unwrap()
}

/// The world's dataset, served by `provider`'s own node and bound to it.
fn dataset_spec(provider: &AccountKey) -> DatasetSpec {
    let (shards_root, heldout_root) = (Hash32([7; 32]), Hash32([8; 32]));
    let (peer_id, peer_signature) =
        provider.dataset_binding(&provider.secret(), &shards_root, &heldout_root);
    DatasetSpec {
        name: "digits".into(),
        shards_root,
        shard_sizes: vec![1_000, 1_000],
        heldout_root,
        heldout_samples: 360,
        licence: "CC-BY-4.0".into(),
        price_per_use: Amount::from_train(1),
        peer_id,
        peer_signature,
    }
}

/// The attack: filling a node's upload quota with junk for free. Uploads are bounded by a deposit
/// held on the ledger, which comes back only once a dataset of the depositor, served by that
/// node, was used; junk nobody uses keeps its deposit locked.
#[test]
fn an_upload_deposit_comes_back_only_once_the_dataset_is_used() {
    let mut w = world(Params::default());
    let provider = w.provider.clone();
    let node = dataset_spec(&provider).peer_id;
    let deposit = Amount::from_train(5);
    let before = w.net.balance(&provider.address());
    w.net.ok(
        &provider,
        Call::DepositForUploads {
            node: node.clone(),
            amount: deposit,
        },
    );
    assert_eq!(
        w.net.balance(&provider.address()),
        Amount(before.0 - deposit.0 - common::FEE.0)
    );
    let reclaim = Call::ReclaimUploadDeposit {
        dataset: DatasetId(1),
    };
    let refused = w.net.call(&provider, reclaim.clone()).unwrap_err().message;
    assert!(refused.contains("not used yet"), "{refused}");
    let researcher = w.researcher.clone();
    let refused = w
        .net
        .call(&researcher, reclaim.clone())
        .unwrap_err()
        .message;
    assert!(refused.contains("not the sender's"), "{refused}");
    // A job certifies a unit on the dataset: the deposit comes back, once.
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    w.run_unit(JobId(1), 0, 960_000, true);
    let before = w.net.balance(&provider.address());
    w.net.ok(&provider, reclaim.clone());
    assert_eq!(
        w.net.balance(&provider.address()),
        Amount(before.0 + deposit.0 - common::FEE.0)
    );
    let refused = w.net.call(&provider, reclaim).unwrap_err().message;
    assert!(refused.contains("no deposit"), "{refused}");
    w.net.check();
}

/// The attack: an account attaches another provider's dataset — its shards root, its serving
/// peer — at a lower price, to collect the data fees while the real provider serves the data;
/// or front-runs the provider's own attachment. Refused: the serving peer's signature binds the
/// roots to the provider, and a shards root is attached once.
#[test]
fn datasets_cannot_be_squatted() {
    let mut w = world(Params::default());
    let squatter = w.researcher.clone();
    let original = dataset_spec(&w.provider);
    // The provider's spec, as is, at a lower price: the peer did not bind it to the squatter.
    let copied = DatasetSpec {
        price_per_use: Amount::ZERO,
        ..original.clone()
    };
    let refused = w.net.call(&squatter, Call::AttachDataset { spec: copied });
    let m = refused.unwrap_err().message;
    assert!(m.contains("did not bind"), "{m}");
    // Its own node's binding over the same shards: the root is taken.
    let (peer_id, peer_signature) = squatter.dataset_binding(
        &squatter.secret(),
        &original.shards_root,
        &original.heldout_root,
    );
    let own_node = DatasetSpec {
        peer_id,
        peer_signature,
        price_per_use: Amount::ZERO,
        ..original.clone()
    };
    let refused = w
        .net
        .call(&squatter, Call::AttachDataset { spec: own_node });
    let m = refused.unwrap_err().message;
    assert!(m.contains("attached already"), "{m}");
    // The provider itself cannot attach the same shards twice either.
    let again = w
        .net
        .call(&w.provider.clone(), Call::AttachDataset { spec: original });
    assert!(again.is_err());
    w.net.check();
}

fn job_spec(deadline_ms: u64, units: u64) -> JobSpec {
    JobSpec {
        model: r#"{"kind":"mlp","layers":[64,32,10]}"#.into(),
        dataset: DatasetId(1),
        hyper: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate_ppm: 1_000,
            batch_size: 32,
            total_steps: 100 * units,
            steps_per_unit: 100,
            seed: 42,
        },
        target: Target {
            metric: Metric::Accuracy,
            threshold_ppm: 950_000,
        },
        budget: Amount::from_train(100 * units),
        deadline: TimestampMs(deadline_ms),
        tier: 1,
        min_memory_mb: 1_024,
    }
}

impl World {
    fn key_of(&self, a: Address) -> &AccountKey {
        self.trainers
            .iter()
            .chain(&self.evaluators)
            .find(|k| k.address() == a)
            .expect("a known worker")
    }

    fn unit(&self, job: JobId, index: u32) -> jobs::Unit {
        self.net
            .ledger
            .read(&keys::unit(UnitId { job, index }))
            .unwrap()
            .expect("unit exists")
    }

    fn job(&self, job: JobId) -> jobs::Job {
        self.net.ledger.read(&keys::job(job)).unwrap().unwrap()
    }

    fn result(metric_ppm: u32, checkpoint: u8) -> WorkResult {
        WorkResult {
            checkpoint: Hash32([checkpoint; 32]),
            chain_root: Hash32([checkpoint ^ 0xff; 32]),
            // A unit of 100 steps is cut into 100 segments (the contract's rule).
            segments: jobs::chain_segments(100),
            loss_trace_ppm: vec![900_000, 500_000, 300_000],
            metric_ppm,
        }
    }

    /// The segments `evaluator` must name for the unit: the ledger's draw for it.
    fn drawn(&self, job: JobId, index: u32, evaluator: &Address) -> Vec<u32> {
        let unit = self.unit(job, index);
        assert!(unit.result.is_some(), "a submitted unit");
        unit.drawn_segments(evaluator, self.job(job).spec.tier)
    }

    /// The assigned trainer submits; every sampled evaluator attests `accept`.
    fn run_unit(&mut self, job: JobId, index: u32, metric_ppm: u32, accept: bool) -> Vec<Event> {
        let unit = self.unit(job, index);
        assert_eq!(unit.state, UnitState::Assigned, "{unit:?}");
        let trainer = self.key_of(unit.trainer.unwrap()).clone();
        let id = UnitId { job, index };
        self.net.ok(
            &trainer,
            Call::SubmitWorkResult {
                unit: id,
                result: World::result(metric_ppm, index as u8 + 1),
            },
        );
        let unit = self.unit(job, index);
        assert_eq!(unit.state, UnitState::Submitted);
        assert!(!unit.evaluators.contains(&trainer.address()));
        let mut events = Vec::new();
        // Every evaluator commits first; then each reveals.
        let mut sealed = Vec::new();
        for e in unit.evaluators.clone() {
            let key = self.key_of(e).clone();
            let tier = self.job(job).spec.tier;
            let attestation = Attestation {
                accept,
                metric_ppm,
                tier,
                segments_checked: if tier >= 1 {
                    self.drawn(job, index, &e)
                } else {
                    Vec::new()
                },
            };
            events.extend(self.commit(&key, id, &attestation));
            sealed.push((key, attestation));
        }
        for (key, attestation) in sealed {
            match self.net.call(&key, World::reveal(id, attestation, &key)) {
                Ok(ev) => events.extend(ev),
                // Once a quorum decided, the unit moved on: later attestations are refused.
                Err(r) => assert_eq!(r.code, "contract_error", "{}", r.message),
            }
        }
        events
    }

    /// Job 1 of one unit submitted, its result in (metric 0.96) and its panel drawn: the job,
    /// the unit and the panel.
    fn submitted_unit(&mut self) -> (JobId, UnitId, Vec<Address>) {
        let deadline = self.net.time_ms + 3_600_000;
        let researcher = self.researcher.clone();
        self.net.ok(
            &researcher,
            Call::SubmitJob {
                spec: job_spec(deadline, 1),
            },
        );
        let (job, unit) = (
            JobId(1),
            UnitId {
                job: JobId(1),
                index: 0,
            },
        );
        let trainer = self.key_of(self.unit(job, 0).trainer.unwrap()).clone();
        self.net.ok(
            &trainer,
            Call::SubmitWorkResult {
                unit,
                result: World::result(960_000, 1),
            },
        );
        (job, unit, self.unit(job, 0).evaluators.clone())
    }

    /// The salt an evaluator in these tests seals its attestations with.
    fn salt(key: &AccountKey) -> Hash32 {
        Hash32(*blake3::hash(&key.secret()).as_bytes())
    }

    /// `key` commits to `attestation` for the unit's current attempt.
    fn commit(&mut self, key: &AccountKey, id: UnitId, attestation: &Attestation) -> Vec<Event> {
        let attempt = self.unit(id.job, id.index).attempt;
        let commitment = jobs::attestation_commitment(
            id,
            attempt,
            &key.address(),
            attestation,
            &World::salt(key),
        );
        self.net.ok(
            key,
            Call::CommitAttestation {
                unit: id,
                commitment,
            },
        )
    }

    /// The first trainer proposes `updates`; every worker votes yes. Returns the proposal.
    fn propose_and_approve(
        &mut self,
        description: &str,
        updates: Vec<ParamUpdate>,
    ) -> trainmesh_ledger::contracts::ProposalId {
        let proposer = self.trainers[0].clone();
        self.net.ok(
            &proposer,
            Call::Propose {
                description: description.into(),
                updates,
                deposit: Amount::from_train(10),
            },
        );
        let proposal = trainmesh_ledger::contracts::ProposalId(1);
        for k in self
            .trainers
            .clone()
            .iter()
            .chain(self.evaluators.clone().iter())
        {
            self.net.ok(
                k,
                Call::Vote {
                    proposal,
                    approve: true,
                },
            );
        }
        proposal
    }

    /// The reveal of `attestation` by `key`.
    fn reveal(id: UnitId, attestation: Attestation, key: &AccountKey) -> Call {
        Call::Attest {
            unit: id,
            attestation,
            salt: World::salt(key),
        }
    }
}

#[test]
fn job_runs_from_submission_to_settlement() {
    let mut w = world(Params::default());
    let researcher = w.researcher.address();
    let before = w.net.balance(&researcher);
    let provider_before = w.net.balance(&w.provider.address());
    let deadline = w.net.time_ms + 3_600_000;
    let events = w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 3),
        },
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::JobSubmitted { units: 3, .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::UnitAssigned { .. })));
    let job = JobId(1);
    assert_eq!(w.job(job).escrow, Amount::from_train(300));

    // Unit 0 certified below target: the job goes on with unit 1 from unit 0's checkpoint.
    let trainer0 = w.unit(job, 0).trainer.unwrap();
    let trainer0_before = w.net.balance(&trainer0);
    let events = w.run_unit(job, 0, 800_000, true);
    let certificate = events
        .iter()
        .find_map(|e| match e {
            Event::WorkCertified { certificate, .. } => Some(*certificate),
            _ => None,
        })
        .expect("a certificate of useful work");
    // Paid: 70 TRAIN share + the emission less the validators' share to the trainer (less its
    // transaction fee), 10 to the data provider.
    let p = Params::default();
    assert_eq!(
        w.net.balance(&trainer0),
        trainer0_before
            .checked_add(Amount::from_train(70))
            .unwrap()
            .checked_add(trainer_emission(p.emission_for(0), &p))
            .unwrap()
            .checked_sub(common::FEE)
            .unwrap()
    );
    assert_eq!(
        w.net.balance(&w.provider.address()),
        provider_before.checked_add(Amount::from_train(10)).unwrap()
    );
    assert!(events.iter().any(|e| matches!(e, Event::Paid { reason: PaymentReason::Emission { certificate: c, .. }, .. } if *c == certificate)));
    assert_eq!(w.unit(job, 1).start_checkpoint, Hash32([1; 32]));
    assert_eq!(w.job(job).units_done, 1);

    // Unit 1 reaches the target: the job completes and the unspent escrow comes back.
    let events = w.run_unit(job, 1, 960_000, true);
    let j = w.job(job);
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.escrow, Amount::ZERO);
    assert!(events.iter().any(|e| matches!(e, Event::Paid { reason: PaymentReason::Refund { .. }, amount, .. } if *amount == Amount::from_train(100))));
    // The researcher paid for two units plus fees, nothing more.
    let spent = before.checked_sub(w.net.balance(&researcher)).unwrap();
    assert_eq!(
        spent,
        Amount::from_train(200).checked_add(common::FEE).unwrap()
    );
    assert_eq!(j.latest_metric_ppm, Some(960_000));
    // Trainers' collateral is free again.
    for t in &w.trainers {
        assert_eq!(
            w.net.ledger.account(&t.address()).unwrap().locked,
            Amount::ZERO
        );
    }
}

#[test]
fn cheating_trainer_is_slashed_and_the_unit_reassigned() {
    let mut w = world(quick());
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let cheater = w.unit(job, 0).trainer.unwrap();
    let stake_before = w.net.ledger.account(&cheater).unwrap().stake;
    let verdict = w.run_unit(job, 0, 990_000, false);
    assert!(verdict
        .iter()
        .any(|e| matches!(e, Event::WorkRejected { trainer, .. } if *trainer == cheater)));
    // The rejection waits out the contest window: nothing is slashed yet.
    assert_eq!(w.unit(job, 0).state, UnitState::Rejected);
    assert_eq!(w.net.ledger.account(&cheater).unwrap().stake, stake_before);
    let early = w.net.batch(vec![], quick().disputes.window_ms / 2);
    assert!(!early
        .end_events
        .iter()
        .any(|e| matches!(e, Event::Slashed { .. })));
    // Not contested: final once the window closes.
    let events = w
        .net
        .batch(vec![], quick().disputes.window_ms / 2 + 1)
        .end_events;
    let slashed = events
        .iter()
        .find_map(|e| match e {
            Event::Slashed {
                who,
                amount,
                reason: SlashReason::RejectedWork { .. },
                ..
            } if *who == cheater => Some(*amount),
            _ => None,
        })
        .expect("the cheater is slashed");
    // The whole collateral: the base times what the sample of a 100-segment unit cannot see.
    assert_eq!(slashed, jobs::unit_collateral(&Params::default(), 100));
    let after = w.net.ledger.account(&cheater).unwrap();
    assert_eq!(after.stake, stake_before.checked_sub(slashed).unwrap());
    assert_eq!(after.locked, Amount::ZERO);
    // Reporters (the rejecting evaluators) got half of it; the rest burned.
    let rewards: u128 = events
        .iter()
        .filter_map(|e| match e {
            Event::Paid {
                amount,
                reason: PaymentReason::ReporterReward { offender },
                ..
            } if *offender == cheater => Some(amount.0),
            _ => None,
        })
        .sum();
    assert_eq!(rewards, slashed.mul_bps(5_000).0);
    // Reassigned to the other trainer, never the cheater again.
    let unit = w.unit(job, 0);
    assert_eq!(unit.state, UnitState::Assigned);
    assert_ne!(unit.trainer, Some(cheater));
    assert!(unit.excluded.contains(&cheater));
    assert_eq!(unit.attempt, 1);
    // The honest trainer finishes the job.
    w.run_unit(job, 0, 970_000, true);
    assert_eq!(w.job(job).state, JobState::Completed);
    let rep: trainmesh_ledger::contracts::reputation::Reputation = w
        .net
        .ledger
        .read(&keys::reputation(&cheater))
        .unwrap()
        .unwrap();
    assert_eq!(rep.rejected, 1);
}

#[test]
fn deadline_refunds_the_unspent_budget() {
    let mut w = world(Params::default());
    let researcher = w.researcher.address();
    let deadline = w.net.time_ms + 60_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 5),
        },
    );
    let job = JobId(1);
    let trainer = w.unit(job, 0).trainer.unwrap();
    let after_submit = w.net.balance(&researcher);
    // Nothing happens until the deadline passes.
    let out = w.net.batch(vec![], 120_000);
    assert!(out.end_events.iter().any(|e| matches!(e, Event::JobFinished { state, refunded, .. } if state == "expired" && *refunded == Amount::from_train(500))));
    assert_eq!(w.job(job).state, JobState::Expired);
    assert_eq!(w.unit(job, 0).state, UnitState::Cancelled);
    assert_eq!(
        w.net.balance(&researcher),
        after_submit.checked_add(Amount::from_train(500)).unwrap()
    );
    assert_eq!(w.net.ledger.account(&trainer).unwrap().locked, Amount::ZERO);
}

#[test]
fn silent_trainer_times_out_and_the_unit_moves_on() {
    let mut w = world(Params {
        unit_timeout_ms: 30_000,
        ..Params::default()
    });
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let silent = w.unit(job, 0).trainer.unwrap();
    let collateral = w.unit(job, 0).collateral;
    let stake = w.stake(&silent);
    let out = w.net.batch(vec![], 31_000);
    assert!(out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::UnitTimedOut { trainer, .. } if *trainer == silent)));
    // Timing out is not free: a tenth of the unit's collateral.
    assert_eq!(
        w.stake(&silent),
        stake
            .checked_sub(collateral.mul_bps(jobs::TIMEOUT_SLASH_BPS))
            .unwrap()
    );
    assert_eq!(w.net.ledger.account(&silent).unwrap().locked, Amount::ZERO);
    let unit = w.unit(job, 0);
    assert_eq!(unit.state, UnitState::Assigned);
    assert_ne!(unit.trainer, Some(silent));
    w.run_unit(job, 0, 990_000, true);
    assert_eq!(w.job(job).state, JobState::Completed);
}

#[test]
fn governance_vote_changes_a_real_parameter() {
    let mut w = world(Params {
        governance_voting_period_ms: 10_000,
        governance_timelock_ms: 5_000,
        ..Params::default()
    });
    let new_emission = Amount::from_train(20);
    // A trainer proposes; most stake votes yes.
    let proposer = w.trainers[0].clone();
    let proposal = w.propose_and_approve(
        "raise the reward for useful work",
        vec![ParamUpdate::EmissionPerCertificate(new_emission)],
    );
    // A second vote by the same account is refused.
    let again = w.net.call(
        &proposer,
        Call::Vote {
            proposal,
            approve: false,
        },
    );
    assert!(again.unwrap_err().message.contains("already voted"));
    let out = w.net.batch(vec![], 10_000);
    assert!(out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::ProposalPassed { .. })));
    let p: Params = w.net.ledger.read(keys::PARAMS).unwrap().unwrap();
    assert_eq!(
        p.emission_per_certificate,
        Amount::from_train(10),
        "timelock not over yet"
    );
    let out = w.net.batch(vec![], 6_000);
    assert!(out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::ProposalExecuted { .. })));
    let p: Params = w.net.ledger.read(keys::PARAMS).unwrap().unwrap();
    assert_eq!(p.emission_per_certificate, new_emission);
    // The new parameter is the one paid out.
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let events = w.run_unit(JobId(1), 0, 990_000, true);
    let p = Params::default();
    assert!(events.iter().any(|e| matches!(e, Event::Paid { reason: PaymentReason::Emission { .. }, amount, .. } if *amount == trainer_emission(new_emission, &p))));
}

#[test]
fn only_the_assigned_trainer_and_sampled_evaluators_may_act() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let unit = UnitId { job, index: 0 };
    let assigned = w.unit(job, 0).trainer.unwrap();
    let other = w
        .trainers
        .iter()
        .find(|k| k.address() != assigned)
        .unwrap()
        .clone();
    let r = w
        .net
        .call(
            &other,
            Call::SubmitWorkResult {
                unit,
                result: World::result(1, 1),
            },
        )
        .unwrap_err();
    assert!(
        r.message.contains("not the trainer assigned"),
        "{}",
        r.message
    );
    // Attesting before any result is a wrong state; after it, only the sampled may attest.
    let stranger = w.researcher.clone();
    let attestation = Attestation {
        accept: true,
        metric_ppm: 1,
        tier: 0,
        segments_checked: vec![],
    };
    let r = w
        .net
        .call(
            &stranger,
            World::reveal(unit, attestation.clone(), &stranger),
        )
        .unwrap_err();
    assert!(r.message.contains("is assigned"), "{}", r.message);
    let trainer = w.key_of(assigned).clone();
    w.net.ok(
        &trainer,
        Call::SubmitWorkResult {
            unit,
            result: World::result(1, 1),
        },
    );
    let r = w
        .net
        .call(&stranger, World::reveal(unit, attestation, &stranger))
        .unwrap_err();
    assert!(r.message.contains("was not sampled"), "{}", r.message);
    assert_eq!(r.code, "contract_error");
    let r = w
        .net
        .call(
            &stranger,
            Call::CommitAttestation {
                unit,
                commitment: Hash32([5; 32]),
            },
        )
        .unwrap_err();
    assert!(r.message.contains("was not sampled"), "{}", r.message);
}

/// A worker registers with the conformance digest its device reproduced; a digest that is not
/// 64 lowercase hex digits is refused with a clear error, and nothing of the refused
/// registration is kept (the worker can register afterwards with a well-formed one).
#[test]
fn a_malformed_conformance_digest_is_refused() {
    let mut w = world(Params::default());
    let newcomer = w.researcher.clone();
    for bad in ["abc", &"G".repeat(64), &"A".repeat(64), &"0".repeat(65)] {
        let r = w
            .net
            .call(
                &newcomer,
                Call::RegisterWorker {
                    role: Role::Trainer,
                    bond: Amount::from_train(500),
                    capability: Capability {
                        conformance: Some(bad.to_string()),
                        ..capability()
                    },
                    peer_id: newcomer.peer_binding(&newcomer.secret()).0,
                    peer_signature: newcomer.peer_binding(&newcomer.secret()).1,
                },
            )
            .unwrap_err();
        assert!(r.message.contains("conformance digest"), "{}", r.message);
    }
    let events = w.net.ok(
        &newcomer,
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount::from_train(500),
            capability: Capability {
                conformance: Some("0123456789abcdef".repeat(4)),
                ..capability()
            },
            peer_id: newcomer.peer_binding(&newcomer.secret()).0,
            peer_signature: newcomer.peer_binding(&newcomer.secret()).1,
        },
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkerRegistered { who, .. } if *who == newcomer.address())));
    w.net.check();
}

/// The trainer does not choose how its chain is cut: a result with another number of segments
/// than the contract fixes for the unit (fewer, to make each audited segment cheaper to fake
/// around, or more) is refused; and an evaluator cannot choose what it checked: an attestation
/// naming other segments than the ledger's draw for it, or another tier than the job's, is
/// refused with a clear error, and the unit stays open for a proper one.
#[test]
fn the_contract_fixes_the_segments_and_each_evaluators_sample() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let unit = UnitId { job, index: 0 };
    let trainer = w.key_of(w.unit(job, 0).trainer.unwrap()).clone();
    for segments in [1, 50, 4_096] {
        let r = w
            .net
            .call(
                &trainer,
                Call::SubmitWorkResult {
                    unit,
                    result: WorkResult {
                        segments,
                        ..World::result(960_000, 1)
                    },
                },
            )
            .unwrap_err();
        assert!(r.message.contains("segments"), "{}", r.message);
    }
    w.net.ok(
        &trainer,
        Call::SubmitWorkResult {
            unit,
            result: World::result(960_000, 1),
        },
    );
    let evaluators = w.unit(job, 0).evaluators.clone();
    let (e1, e2) = (evaluators[0], evaluators[1]);
    let (d1, d2) = (w.drawn(job, 0, &e1), w.drawn(job, 0, &e2));
    assert_ne!(d1, d2, "each evaluator draws its own sample");
    for d in [&d1, &d2] {
        assert_eq!(
            (d[0], *d.last().unwrap()),
            (0, 99),
            "the ends are always checked"
        );
        assert_eq!(d.len(), 2 + 22);
    }
    let (k1, k2) = (w.key_of(e1).clone(), w.key_of(e2).clone());
    let attestation = |segments_checked: Vec<u32>, tier: u8| Attestation {
        accept: true,
        metric_ppm: 960_000,
        tier,
        segments_checked,
    };
    // Each bad attestation, committed and revealed by the first evaluator on its own unit
    // attempt, is refused at the reveal; the second evaluator's proper one is accepted.
    let bad = attestation(d2.clone(), 1);
    w.commit(&k1, unit, &bad);
    w.commit(&k2, unit, &attestation(d2.clone(), 1));
    let r = w.net.call(&k1, World::reveal(unit, bad, &k1)).unwrap_err();
    assert!(r.message.contains("drawn"), "{}", r.message);
    for (segments, tier) in [(d1[1..].to_vec(), 1), (Vec::new(), 1), (d1.clone(), 0)] {
        // A commitment to these would be refused alike when revealed: the check runs on what
        // is revealed, and a commitment cannot be replaced.
        let r = w
            .net
            .call(&k1, World::reveal(unit, attestation(segments, tier), &k1))
            .unwrap_err();
        assert!(r.message.contains("does not open"), "{}", r.message);
    }
    assert!(w.unit(job, 0).attestations.is_empty());
    w.net.ok(&k2, World::reveal(unit, attestation(d2, 1), &k2));
    assert_eq!(w.unit(job, 0).attestations.len(), 1);
    w.net.check();
}

/// Emission pays for audited work only: a tier-0 job (only the metric recomputed) is certified
/// and its trainer paid from the researcher's escrow, but no TRAIN is minted for it and the
/// emission schedule does not advance — a researcher paying itself through a sybil trainer
/// cannot farm emission with unaudited units. The same unit at tier 1 earns emission.
#[test]
fn tier0_earns_no_emission() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 3_600_000;
    let mut spec = job_spec(deadline, 1);
    spec.tier = 0;
    w.net.ok(&w.researcher, Call::SubmitJob { spec });
    let events = w.run_unit(JobId(1), 0, 960_000, true);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::Paid {
                reason: PaymentReason::Emission { .. },
                ..
            }
        )),
        "{events:?}"
    );
    let counters: trainmesh_ledger::contracts::counters::Counters =
        w.net.ledger.read(keys::COUNTERS).unwrap().unwrap();
    assert_eq!(
        (counters.certificates, counters.emitting_certificates),
        (1, 0)
    );

    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let events = w.run_unit(JobId(2), 0, 960_000, true);
    let p = Params::default();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Paid { reason: PaymentReason::Emission { .. }, amount, .. } if *amount == trainer_emission(p.emission_for(0), &p)
    )));
    w.net.check();
}

/// A worker's peer id is bound to its account: the peer id's ed25519 key must sign the account's
/// binding message. Registering under another node's peer id (here an evaluator's, with the
/// evaluator's own signature replayed, or with a signature of one's own key), with a peer id that
/// is not an ed25519 key's, or with a truncated signature is refused with a clear error; a
/// network key of one's own — separate from the account key — is accepted.
#[test]
fn a_worker_cannot_register_under_another_nodes_peer_id() {
    let mut w = world(Params::default());
    let newcomer = w.researcher.clone();
    let victim = w.evaluators[0].clone();
    let (victim_peer, victim_signature) = victim.peer_binding(&victim.secret());
    let (_, own_signature) = newcomer.peer_binding(&newcomer.secret());
    let register = |peer_id: String, peer_signature: Vec<u8>| Call::RegisterWorker {
        role: Role::Evaluator,
        bond: Amount::from_train(500),
        capability: capability(),
        peer_id,
        peer_signature,
    };
    for (peer_id, signature) in [
        (victim_peer.clone(), victim_signature.clone()),
        (victim_peer.clone(), own_signature.clone()),
        ("peer-newcomer".to_string(), own_signature.clone()),
        (victim_peer, victim_signature[..63].to_vec()),
    ] {
        let r = w
            .net
            .call(&newcomer, register(peer_id, signature))
            .unwrap_err();
        assert!(r.message.contains("peer id"), "{}", r.message);
    }
    let network_secret = [42u8; 32];
    let (peer_id, signature) = newcomer.peer_binding(&network_secret);
    assert_ne!(peer_id, newcomer.peer_binding(&newcomer.secret()).0);
    w.net.ok(&newcomer, register(peer_id, signature));
    w.net.check();
}

/// Evaluators commit before any verdict is visible: a reveal before the whole panel committed is
/// refused; a second evaluator that copies the first's commitment from the ledger cannot open
/// it (the commitment binds the evaluator's address), nor can anyone open a commitment with
/// another salt; and commitments cannot be replaced.
#[test]
fn an_evaluator_cannot_copy_or_answer_another_evaluators_verdict() {
    let mut w = world(Params::default());
    let (job, unit, evaluators) = w.submitted_unit();
    let (k1, k2) = (
        w.key_of(evaluators[0]).clone(),
        w.key_of(evaluators[1]).clone(),
    );
    let honest = Attestation {
        accept: true,
        metric_ppm: 960_000,
        tier: 1,
        segments_checked: w.drawn(job, 0, &k1.address()),
    };
    w.commit(&k1, unit, &honest);
    let r = w
        .net
        .call(&k1, World::reveal(unit, honest.clone(), &k1))
        .unwrap_err();
    assert!(r.message.contains("every evaluator"), "{}", r.message);
    // The second copies the first's commitment as it stands on the ledger.
    let copied = w.unit(job, 0).commitments[0].1;
    w.net.ok(
        &k2,
        Call::CommitAttestation {
            unit,
            commitment: copied,
        },
    );
    let r = w
        .net
        .call(
            &k1,
            Call::CommitAttestation {
                unit,
                commitment: Hash32([1; 32]),
            },
        )
        .unwrap_err();
    assert!(r.message.contains("already"), "{}", r.message);
    // Another salt does not open the first's commitment.
    let r = w
        .net
        .call(
            &k1,
            Call::Attest {
                unit,
                attestation: honest.clone(),
                salt: Hash32([9; 32]),
            },
        )
        .unwrap_err();
    assert!(r.message.contains("does not open"), "{}", r.message);
    w.net.ok(&k1, World::reveal(unit, honest.clone(), &k1));
    // The copier replays the first's reveal, salt and all: it does not open its commitment.
    let r = w
        .net
        .call(
            &k2,
            Call::Attest {
                unit,
                attestation: honest,
                salt: World::salt(&k1),
            },
        )
        .unwrap_err();
    assert!(r.message.contains("does not open"), "{}", r.message);
    assert_eq!(w.unit(job, 0).attestations.len(), 1);
    w.net.check();
}

/// An evaluator that commits and then keeps its verdict back (say, after seeing the other's
/// reveal) is slashed when the unit times out; the one that revealed is not, and a fresh panel
/// is drawn.
#[test]
fn an_evaluator_withholding_its_reveal_is_slashed() {
    let mut w = world(Params {
        unit_timeout_ms: 30_000,
        ..Params::default()
    });
    let (job, unit, evaluators) = w.submitted_unit();
    let (k1, k2) = (
        w.key_of(evaluators[0]).clone(),
        w.key_of(evaluators[1]).clone(),
    );
    let attest = |w: &World, k: &AccountKey| Attestation {
        accept: true,
        metric_ppm: 960_000,
        tier: 1,
        segments_checked: w.drawn(job, 0, &k.address()),
    };
    let (a1, a2) = (attest(&w, &k1), attest(&w, &k2));
    w.commit(&k1, unit, &a1);
    w.commit(&k2, unit, &a2);
    w.net.ok(&k2, World::reveal(unit, a2, &k2));
    let stake_before =
        |w: &World, k: &AccountKey| w.net.ledger.account(&k.address()).unwrap().stake;
    let (s1, s2) = (stake_before(&w, &k1), stake_before(&w, &k2));
    let out = w.net.batch(vec![], 31_000);
    let events: Vec<Event> = out.end_events.clone();
    let slashed: Vec<Address> = events
        .iter()
        .filter_map(|e| match e {
            Event::Slashed {
                who,
                reason: SlashReason::WithheldReveal { .. },
                ..
            } => Some(*who),
            _ => None,
        })
        .collect();
    assert_eq!(slashed, vec![k1.address()]);
    let p = Params::default();
    assert_eq!(
        stake_before(&w, &k1),
        s1.checked_sub(
            p.min_evaluator_stake
                .mul_bps(jobs::WITHHELD_REVEAL_SLASH_BPS)
        )
        .unwrap()
    );
    assert_eq!(stake_before(&w, &k2), s2);
    let unit_now = w.unit(job, 0);
    assert_eq!(unit_now.attempt, 1);
    assert!(unit_now.commitments.is_empty() && unit_now.attestations.is_empty());
    w.net.check();
}

/// Every engine is exact, so honest evaluators measure the same held-out metric: two accepts
/// that disagree on it (a lazy evaluator guessing the number it did not compute) certify
/// nothing, and the unit goes to a fresh panel instead.
#[test]
fn accepts_that_disagree_on_the_metric_certify_nothing() {
    let mut w = world(Params::default());
    let (job, unit, evaluators) = w.submitted_unit();
    let keys: Vec<AccountKey> = evaluators.iter().map(|e| w.key_of(*e).clone()).collect();
    let sealed: Vec<(AccountKey, Attestation)> = keys
        .iter()
        .zip([960_000, 955_000])
        .map(|(k, metric_ppm)| {
            let a = Attestation {
                accept: true,
                metric_ppm,
                tier: 1,
                segments_checked: w.drawn(job, 0, &k.address()),
            };
            (k.clone(), a)
        })
        .collect();
    for (k, a) in &sealed {
        w.commit(k, unit, a);
    }
    let mut events = Vec::new();
    for (k, a) in sealed {
        events.extend(w.net.ok(&k, World::reveal(unit, a, &k)));
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::WorkCertified { .. })),
        "{events:?}"
    );
    let u = w.unit(job, 0);
    assert_eq!(u.state, UnitState::Submitted);
    assert_eq!(u.attempt, 1, "a fresh panel for the next attempt");
    assert!(u.commitments.is_empty() && u.attestations.is_empty());
    w.net.check();
}

/// The collateral a trainer locks scales with what the panel's sample cannot see: for a unit of
/// m segments, the base collateral times ⌈(m − 2)/44⌉, so that faking even one segment (caught
/// with probability about 44/(m − 2)) costs at least the base in expectation. A trainer whose
/// free stake does not cover it is not drawn: the unit waits.
#[test]
fn collateral_scales_with_what_the_sample_cannot_see() {
    let p = Params::default();
    assert_eq!(jobs::chain_segments(100), 100);
    assert_eq!(jobs::collateral_factor(100), 3);
    assert_eq!(jobs::collateral_factor(46), 1);
    assert_eq!(jobs::collateral_factor(1_024), 24);
    let mut w = world(p.clone());
    let deadline = w.net.time_ms + 3_600_000;
    w.net.ok(
        &w.researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let unit = w.unit(JobId(1), 0);
    let trainer = unit
        .trainer
        .expect("a trainer with 500 TRAIN covers 3 × 20");
    // The base is the network's: the minimum trainer stake × the rejected-work slash.
    let base = p.min_trainer_stake.mul_bps(p.slash_rejected_work_bps);
    assert_eq!(base, Amount::from_train(20));
    assert_eq!(unit.collateral, Amount(base.0 * 3));
    assert_eq!(
        w.net.ledger.account(&trainer).unwrap().locked,
        unit.collateral
    );

    // A unit of 1,024 segments (the most a chain has, the audit at its cheapest) locks 24 × the
    // base, 480 TRAIN: the other trainer, with 500 free, takes it (before, the base was a share
    // of the trainer's own stake, and 24 × 20% of any stake is more than that stake).
    let mut spec = job_spec(deadline, 1);
    spec.hyper.steps_per_unit = 1_024;
    spec.hyper.total_steps = 1_024;
    w.net
        .ok(&w.researcher, Call::SubmitJob { spec: spec.clone() });
    let big = w.unit(JobId(2), 0);
    assert_eq!(big.state, UnitState::Assigned, "{big:?}");
    assert_ne!(big.trainer, Some(trainer));
    assert_eq!(big.collateral, Amount(base.0 * 24));
    // A third such unit waits: neither trainer has 480 TRAIN free.
    w.net.ok(&w.researcher, Call::SubmitJob { spec });
    let third = w.unit(JobId(3), 0);
    assert_eq!(third.state, UnitState::Waiting, "{third:?}");
    assert_eq!(third.trainer, None);
    w.net.check();
}

/// A unit's draw is sized by the panel drawn with it: governance changing the panel size after
/// the evaluators committed does not change what they owe, so their honest reveals still open
/// and certify (before, the contract recomputed the draw from the parameters of the day, refused
/// both reveals, and the withheld-reveal rule then slashed honest evaluators).
#[test]
fn a_parameter_change_after_the_commitments_does_not_change_the_draw() {
    let mut w = world(Params {
        governance_voting_period_ms: 10_000,
        governance_timelock_ms: 5_000,
        ..Params::default()
    });
    let (job, unit, evaluators) = w.submitted_unit();
    assert_eq!(evaluators.len(), 2);
    let keys: Vec<AccountKey> = evaluators.iter().map(|e| w.key_of(*e).clone()).collect();
    let honest: Vec<Attestation> = keys
        .iter()
        .map(|k| Attestation {
            accept: true,
            metric_ppm: 960_000,
            tier: 1,
            segments_checked: w.drawn(job, 0, &k.address()),
        })
        .collect();
    assert_eq!(
        honest[0].segments_checked.len(),
        jobs::panel_audit_segments(2) as usize
    );
    for (k, a) in keys.iter().zip(&honest) {
        w.commit(k, unit, a);
    }
    // Panels of three from now on: each evaluator's share of the draw would shrink.
    w.propose_and_approve(
        "panels of three",
        vec![ParamUpdate::Evaluators {
            per_unit: 3,
            quorum: 2,
        }],
    );
    w.net.batch(vec![], 10_000);
    let out = w.net.batch(vec![], 6_000);
    assert!(out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::ProposalExecuted { .. })));
    let p: Params = w.net.ledger.read(keys::PARAMS).unwrap().unwrap();
    assert_eq!(p.evaluators_per_unit, 3);
    assert_ne!(jobs::audit_segments(&p), jobs::panel_audit_segments(2));
    // The draw the ledger holds the panel to is the one it committed to.
    assert_eq!(
        w.drawn(job, 0, &keys[0].address()),
        honest[0].segments_checked
    );
    for (k, a) in keys.iter().zip(honest) {
        w.net.ok(k, World::reveal(unit, a, k));
    }
    assert_eq!(w.unit(job, 0).state, UnitState::Certified);
    w.net.check();
}

// ---- Disputes -------------------------------------------------------------------------------

/// Parameters with dispute windows short enough that workers stay live (heartbeats time out
/// after 5 minutes) while a test waits one out.
fn quick() -> Params {
    Params {
        disputes: trainmesh_ledger::contracts::disputes::DisputeParams {
            window_ms: 30_000,
            move_ms: 30_000,
            ..Default::default()
        },
        ..Params::default()
    }
}

/// A unit of 2,062 steps is cut into 2 segments of 1,031 (2,062 = 2 × 1,031): the bisection of a
/// segment takes ⌈log₂ 1,031⌉ = 11 rounds.
const DISPUTE_STEPS: u64 = 2_062;

/// The state hash after `step` steps of a unit trained honestly (the tests' stand-in for the
/// executor: the referee "replays" a step by reading it off).
fn truth(step: u64) -> Hash32 {
    Hash32(*blake3::hash(&[b"state/".as_slice(), &step.to_le_bytes()].concat()).as_bytes())
}

/// What one side of a dispute holds: the true states, forged from step `from` on (`None`: honest).
#[derive(Clone, Copy)]
struct Side {
    forged_from: Option<u64>,
}

impl Side {
    const HONEST: Side = Side { forged_from: None };

    fn state(self, step: u64) -> Hash32 {
        match self.forged_from {
            Some(f) if step >= f => Hash32(
                *blake3::hash(&[b"forged/".as_slice(), &step.to_le_bytes()].concat()).as_bytes(),
            ),
            _ => truth(step),
        }
    }
}

impl World {
    /// A job whose unit the assigned trainer completes with the chain `trainer` holds; returns
    /// the unit, the trainer's key, the chain's leaves and the panel.
    fn disputable_unit(
        &mut self,
        trainer: Side,
    ) -> (UnitId, AccountKey, Vec<Hash32>, Vec<Address>) {
        let deadline = self.net.time_ms + 24 * 3_600_000;
        let mut spec = job_spec(deadline, 1);
        spec.hyper.steps_per_unit = DISPUTE_STEPS;
        spec.hyper.total_steps = DISPUTE_STEPS;
        let researcher = self.researcher.clone();
        self.net.ok(&researcher, Call::SubmitJob { spec });
        let id = UnitId {
            job: JobId(1),
            index: 0,
        };
        let unit = self.unit(id.job, 0);
        let segments = jobs::chain_segments(DISPUTE_STEPS);
        assert_eq!(segments, 2);
        let seg = DISPUTE_STEPS / u64::from(segments);
        let leaves: Vec<Hash32> = (1..=u64::from(segments))
            .map(|i| trainer.state(i * seg))
            .collect();
        let key = self.key_of(unit.trainer.unwrap()).clone();
        self.net.ok(
            &key,
            Call::SubmitWorkResult {
                unit: id,
                result: WorkResult {
                    checkpoint: *leaves.last().unwrap(),
                    chain_root: trainmesh_ledger::contracts::merkle::merkle_root(&leaves),
                    segments,
                    loss_trace_ppm: vec![900_000, 500_000],
                    metric_ppm: 960_000,
                },
            },
        );
        let panel = self.unit(id.job, 0).evaluators.clone();
        (id, key, leaves, panel)
    }

    /// Every evaluator of the panel commits to its verdict, then all reveal.
    fn verdicts(&mut self, id: UnitId, verdicts: &[(Address, bool)]) -> Vec<Event> {
        let sealed = self.commit_all(id, verdicts);
        self.reveal_all(id, sealed)
    }

    /// Every sealed attestation revealed, in order; their events.
    fn reveal_all(&mut self, id: UnitId, sealed: Vec<(AccountKey, Attestation)>) -> Vec<Event> {
        let mut events = Vec::new();
        for (k, a) in sealed {
            events.extend(self.net.ok(&k, World::reveal(id, a, &k)));
        }
        events
    }

    fn dispute(&self, id: UnitId) -> trainmesh_ledger::contracts::disputes::Dispute {
        self.unit(id.job, id.index).dispute.expect("a dispute")
    }

    fn play(&mut self, key: &AccountKey, id: UnitId, mv: Move) -> Vec<Event> {
        self.net.ok(key, Call::Dispute { unit: id, mv })
    }

    /// The trainer's opening of its chain (`leaves`) at `segment`: start and end with their
    /// Merkle proofs (segment 0 starts at the unit's start checkpoint).
    fn chain_opening(&self, id: UnitId, leaves: &[Hash32], segment: u32) -> Move {
        let s = segment as usize;
        let (start, start_proof) = if s == 0 {
            (self.unit(id.job, id.index).start_checkpoint, None)
        } else {
            (
                leaves[s - 1],
                Some(trainmesh_ledger::contracts::merkle::merkle_proof(
                    leaves,
                    s - 1,
                )),
            )
        };
        Move::Chain {
            start,
            start_proof,
            end: leaves[s],
            end_proof: trainmesh_ledger::contracts::merkle::merkle_proof(leaves, s),
        }
    }

    /// Plays an opened dispute to its end: the challenger names `segment`, the trainer opens its
    /// chain, both answer every midpoint from what they hold, and the validator referees the
    /// last step. Returns every event from the first move on.
    fn play_out(
        &mut self,
        id: UnitId,
        trainer: (&AccountKey, Side),
        challenger: Side,
        leaves: &[Hash32],
        segment: u32,
    ) -> Vec<Event> {
        let d = self.dispute(id);
        let challenger_key = self.key_of(d.challenger).clone();
        let seg = DISPUTE_STEPS / leaves.len() as u64;
        let base = u64::from(segment) * seg;
        let mut events = self.play(
            &challenger_key,
            id,
            Move::Segment {
                segment,
                end: challenger.state(base + seg),
            },
        );
        let opening = self.chain_opening(id, leaves, segment);
        events.extend(self.play(trainer.0, id, opening));
        while let Some(d) = self.unit(id.job, id.index).dispute {
            match d.stage {
                Stage::Midpoint => {
                    let step = base + d.midpoint();
                    events.extend(self.play(
                        trainer.0,
                        id,
                        Move::Midpoint {
                            hash: trainer.1.state(step),
                        },
                    ));
                    let agrees = challenger.state(step) == trainer.1.state(step);
                    events.extend(self.play(&challenger_key, id, Move::Respond { agrees }));
                }
                Stage::Referee => {
                    assert_eq!(d.disputed.0, d.agreed.0 + 1, "one step is left");
                    // The referee replays the step from the agreed state.
                    let validator = self.validator.clone();
                    events.extend(self.play(
                        &validator,
                        id,
                        Move::Referee {
                            end: Some(truth(base + d.disputed.0)),
                        },
                    ));
                }
                other => panic!("the dispute stopped at {other:?}"),
            }
        }
        events
    }

    fn stake(&self, a: &Address) -> Amount {
        self.net.ledger.account(a).unwrap().stake
    }
}

fn settled(events: &[Event]) -> (String, u32) {
    events
        .iter()
        .find_map(|e| match e {
            Event::DisputeSettled { outcome, moves, .. } => Some((outcome.clone(), *moves)),
            _ => None,
        })
        .expect("the dispute settled")
}

fn slashed_for_lost_dispute(events: &[Event]) -> Vec<Address> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Slashed {
                who,
                reason: SlashReason::LostDispute { .. },
                ..
            } => Some(*who),
            _ => None,
        })
        .collect()
}

/// Two evaluators reject honest work together (to split the trainer's collateral). The trainer
/// contests; the bisection ends at one step, which the validator referees: the evaluators lose,
/// are slashed with the trainer as reporter, and the unit gets a fresh panel without them. The
/// trainer keeps its stake and its collateral, gets its bond back, and is paid when the fresh
/// panel certifies.
#[test]
fn colluding_evaluators_rejecting_honest_work_lose_the_dispute() {
    let mut w = world(quick());
    let (id, trainer, leaves, panel) = w.disputable_unit(Side::HONEST);
    let colluders: Vec<(Address, bool)> = panel.iter().map(|e| (*e, false)).collect();
    w.verdicts(id, &colluders);
    assert_eq!(w.unit(id.job, 0).state, UnitState::Rejected);
    let trainer_stake = w.stake(&trainer.address());
    let collateral = w.unit(id.job, 0).collateral;
    let evaluator_stakes: Vec<Amount> = panel.iter().map(|e| w.stake(e)).collect();
    // Only the trainer may contest, and only with a move the dispute waits for.
    let outsider = w
        .trainers
        .iter()
        .find(|k| k.address() != trainer.address())
        .unwrap()
        .clone();
    let r = w
        .net
        .call(
            &outsider,
            Call::Dispute {
                unit: id,
                mv: Move::Contest,
            },
        )
        .unwrap_err();
    assert!(r.message.contains("not"), "{}", r.message);
    let r = w
        .net
        .call(
            &trainer,
            Call::Dispute {
                unit: id,
                mv: Move::Respond { agrees: true },
            },
        )
        .unwrap_err();
    assert!(r.message.contains("is rejected"), "{}", r.message);
    let opened = w.play(&trainer, id, Move::Contest);
    assert!(opened
        .iter()
        .any(|e| matches!(e, Event::DisputeOpened { .. })));
    let bond = quick().disputes.bond;
    assert_eq!(
        w.net.ledger.account(&trainer.address()).unwrap().locked,
        collateral.checked_add(bond).unwrap()
    );
    // The colluding challenger claims the second segment ends elsewhere, and denies every state
    // from step 1,800 on.
    let events = w.play_out(
        id,
        (&trainer, Side::HONEST),
        Side {
            forged_from: Some(1_800),
        },
        &leaves,
        1,
    );
    let (outcome, moves) = settled(&events);
    assert_eq!(outcome, "trainer_wins");
    // Contest, segment, chain, 11 rounds of two moves, one referee vote.
    assert!(moves <= 1 + 2 + 2 * 11 + 1, "{moves} moves");
    let mut losers = slashed_for_lost_dispute(&events);
    losers.sort();
    let mut expected = panel.clone();
    expected.sort();
    assert_eq!(losers, expected);
    for (e, before) in panel.iter().zip(&evaluator_stakes) {
        assert_eq!(
            w.stake(e),
            before.checked_sub(before.mul_bps(2_000)).unwrap(),
            "{e} loses a fifth of its stake"
        );
    }
    let rewarded: u128 = events
        .iter()
        .filter_map(|e| match e {
            Event::Paid {
                to,
                amount,
                reason: PaymentReason::ReporterReward { .. },
            } if *to == trainer.address() => Some(amount.0),
            _ => None,
        })
        .sum();
    assert!(rewarded > 0, "the loser pays the winner's costs");
    let account = w.net.ledger.account(&trainer.address()).unwrap();
    assert_eq!(account.stake, trainer_stake);
    assert_eq!(
        account.locked, collateral,
        "the bond is free, the collateral stays on the unit"
    );
    let unit = w.unit(id.job, 0);
    assert_eq!(unit.state, UnitState::Submitted);
    assert!(
        unit.evaluators.iter().all(|e| !panel.contains(e)),
        "a fresh panel"
    );
    // A fourth evaluator joins; the fresh panel certifies and the trainer is paid.
    let newcomer = AccountKey::from_seed(304);
    let researcher = w.researcher.clone();
    w.net.ok(
        &researcher,
        Call::Transfer {
            to: newcomer.address(),
            amount: Amount::from_train(1_000),
        },
    );
    w.net.ok(
        &newcomer,
        Call::RegisterWorker {
            role: Role::Evaluator,
            bond: Amount::from_train(500),
            capability: capability(),
            peer_id: newcomer.peer_binding(&newcomer.secret()).0,
            peer_signature: newcomer.peer_binding(&newcomer.secret()).1,
        },
    );
    w.evaluators.push(newcomer);
    w.net.batch(vec![], 1_000);
    let panel = w.unit(id.job, 0).evaluators.clone();
    assert_eq!(panel.len(), 2, "{panel:?}");
    let honest: Vec<(Address, bool)> = panel.iter().map(|e| (*e, true)).collect();
    let events = w.verdicts(id, &honest);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { trainer: t, .. } if *t == trainer.address())));
    assert_eq!(
        w.net.ledger.account(&trainer.address()).unwrap().locked,
        Amount::ZERO
    );
    w.net.check();
}

/// A trainer that forged the second half of its chain contests the honest rejection: the
/// bisection narrows to the first forged step, the referee's replay differs from the trainer's
/// hash, and the trainer forfeits its collateral and its bond; the unit goes to another trainer.
#[test]
fn a_trainer_contesting_a_true_rejection_loses_collateral_and_bond() {
    let mut w = world(quick());
    let forger = Side {
        forged_from: Some(1_500),
    };
    let (id, trainer, leaves, panel) = w.disputable_unit(forger);
    let honest: Vec<(Address, bool)> = panel.iter().map(|e| (*e, false)).collect();
    w.verdicts(id, &honest);
    let stake = w.stake(&trainer.address());
    let collateral = w.unit(id.job, 0).collateral;
    w.play(&trainer, id, Move::Contest);
    // A chain opening that does not match the committed root is refused.
    let d = w.dispute(id);
    let challenger = w.key_of(d.challenger).clone();
    w.play(
        &challenger,
        id,
        Move::Segment {
            segment: 1,
            end: truth(DISPUTE_STEPS),
        },
    );
    let r = w
        .net
        .call(
            &trainer,
            Call::Dispute {
                unit: id,
                mv: Move::Chain {
                    start: leaves[0],
                    start_proof: Some(trainmesh_ledger::contracts::merkle::merkle_proof(
                        &leaves, 0,
                    )),
                    end: truth(DISPUTE_STEPS),
                    end_proof: trainmesh_ledger::contracts::merkle::merkle_proof(&leaves, 1),
                },
            },
        )
        .unwrap_err();
    assert!(r.message.contains("under the chain root"), "{}", r.message);
    // Replay the dispute from the chain opening on (the segment is already named).
    let opening = w.chain_opening(id, &leaves, 1);
    let mut events = w.play(&trainer, id, opening);
    let base = 1_031;
    while let Some(d) = w.unit(id.job, 0).dispute {
        match d.stage {
            Stage::Midpoint => {
                let step = base + d.midpoint();
                events.extend(w.play(
                    &trainer,
                    id,
                    Move::Midpoint {
                        hash: forger.state(step),
                    },
                ));
                let agrees = truth(step) == forger.state(step);
                events.extend(w.play(&challenger, id, Move::Respond { agrees }));
            }
            Stage::Referee => {
                assert_eq!(
                    base + d.agreed.0,
                    1_499,
                    "it narrows to the first forged step"
                );
                let validator = w.validator.clone();
                // Only validators referee.
                let r = w
                    .net
                    .call(
                        &trainer,
                        Call::Dispute {
                            unit: id,
                            mv: Move::Referee {
                                end: Some(d.disputed.1),
                            },
                        },
                    )
                    .unwrap_err();
                assert!(r.message.contains("not a validator"), "{}", r.message);
                events.extend(w.play(
                    &validator,
                    id,
                    Move::Referee {
                        end: Some(truth(1_500)),
                    },
                ));
            }
            other => panic!("stopped at {other:?}"),
        }
    }
    assert_eq!(settled(&events).0, "trainer_loses");
    let forfeit = collateral.checked_add(quick().disputes.bond).unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Slashed { who, amount, reason: SlashReason::RejectedWork { .. }, .. }
            if *who == trainer.address() && *amount == forfeit
    )));
    let account = w.net.ledger.account(&trainer.address()).unwrap();
    assert_eq!(account.stake, stake.checked_sub(forfeit).unwrap());
    assert_eq!(account.locked, Amount::ZERO);
    assert!(
        slashed_for_lost_dispute(&events).is_empty(),
        "the honest evaluators keep their stake"
    );
    let unit = w.unit(id.job, 0);
    assert_eq!(unit.state, UnitState::Assigned);
    assert!(unit.excluded.contains(&trainer.address()));
    w.net.check();
}

/// A forging trainer's sybil evaluator accepts while the other rejects: the split goes to
/// dispute, not to a fresh draw. The forger does not open its chain in time and loses; the
/// evaluator that accepted the forged work is slashed with the challenger as reporter.
#[test]
fn a_split_panel_goes_to_dispute_and_the_accepting_sybil_loses() {
    let mut w = world(quick());
    let (id, trainer, _leaves, panel) = w.disputable_unit(Side {
        forged_from: Some(2_000),
    });
    let sybil = panel[0];
    let events = w.verdicts(id, &[(sybil, true), (panel[1], false)]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DisputeOpened { challenger, .. } if *challenger == panel[1])));
    let unit = w.unit(id.job, 0);
    assert_eq!(unit.state, UnitState::Disputed);
    assert_eq!(unit.attempt, 0, "no free redraw");
    let challenger = w.key_of(panel[1]).clone();
    w.play(
        &challenger,
        id,
        Move::Segment {
            segment: 1,
            end: truth(DISPUTE_STEPS),
        },
    );
    let sybil_stake = w.stake(&sybil);
    let trainer_stake = w.stake(&trainer.address());
    // The trainer stays silent past the move deadline.
    let out = w.net.batch(vec![], quick().disputes.move_ms + 1);
    assert_eq!(settled(&out.end_events).0, "trainer_loses");
    assert_eq!(slashed_for_lost_dispute(&out.end_events), vec![sybil]);
    assert_eq!(
        w.stake(&sybil),
        sybil_stake.checked_sub(sybil_stake.mul_bps(2_000)).unwrap()
    );
    assert!(w.stake(&trainer.address()) < trainer_stake);
    assert_eq!(w.unit(id.job, 0).state, UnitState::Assigned);
    w.net.check();
}

/// A challenger that names a segment whose end it computed the same as the trainer's chain has
/// nothing to dispute: the trainer wins at the chain opening.
#[test]
fn a_challenge_that_agrees_with_the_chain_loses_at_once() {
    let mut w = world(quick());
    let (id, trainer, leaves, panel) = w.disputable_unit(Side::HONEST);
    let rejects: Vec<(Address, bool)> = panel.iter().map(|e| (*e, false)).collect();
    w.verdicts(id, &rejects);
    w.play(&trainer, id, Move::Contest);
    let challenger = w.key_of(w.dispute(id).challenger).clone();
    w.play(
        &challenger,
        id,
        Move::Segment {
            segment: 0,
            end: leaves[0],
        },
    );
    let opening = w.chain_opening(id, &leaves, 0);
    let events = w.play(&trainer, id, opening);
    assert_eq!(settled(&events), ("trainer_wins".to_string(), 3));
    assert_eq!(slashed_for_lost_dispute(&events).len(), 2);
    w.net.check();
}

/// A trainer contests, then keeps the agreed state from the challenger so that it cannot answer
/// (a challenger that times out loses). The challenger says so; the validators try to fetch the
/// state themselves. Served to them: the challenger answers again (once). Not served: the
/// trainer loses.
#[test]
fn withholding_the_agreed_state_is_settled_by_the_validators() {
    for served in [true, false] {
        let mut w = world(quick());
        let forger = Side {
            forged_from: Some(1_500),
        };
        let (id, trainer, leaves, panel) = w.disputable_unit(forger);
        let rejects: Vec<(Address, bool)> = panel.iter().map(|e| (*e, false)).collect();
        w.verdicts(id, &rejects);
        w.play(&trainer, id, Move::Contest);
        let challenger = w.key_of(w.dispute(id).challenger).clone();
        w.play(
            &challenger,
            id,
            Move::Segment {
                segment: 1,
                end: truth(DISPUTE_STEPS),
            },
        );
        let opening = w.chain_opening(id, &leaves, 1);
        w.play(&trainer, id, opening);
        let step = 1_031 + w.dispute(id).midpoint();
        w.play(
            &trainer,
            id,
            Move::Midpoint {
                hash: forger.state(step),
            },
        );
        w.play(&challenger, id, Move::Unserved);
        assert_eq!(w.dispute(id).stage, Stage::Available);
        let agreed = w.dispute(id).agreed.1;
        let validator = w.validator.clone();
        let events = w.play(
            &validator,
            id,
            Move::Referee {
                end: served.then_some(agreed),
            },
        );
        if served {
            assert_eq!(w.dispute(id).stage, Stage::Respond);
            let r = w
                .net
                .call(
                    &challenger,
                    Call::Dispute {
                        unit: id,
                        mv: Move::Unserved,
                    },
                )
                .unwrap_err();
            assert!(r.message.contains("fetch it from them"), "{}", r.message);
        } else {
            assert_eq!(settled(&events).0, "trainer_loses");
            assert_eq!(w.unit(id.job, 0).state, UnitState::Assigned);
        }
        w.net.check();
    }
}

/// Panels of three with a quorum of two: a dissenter can be outvoted unless it may contest.
fn panels_of_three() -> Params {
    Params {
        evaluators_per_unit: 3,
        attestation_quorum: 2,
        ..quick()
    }
}

/// A forger's two friendly evaluators accept its work; the third evaluator rejects. A quorum
/// accepted, but the dissenter contests the acceptance: the bisection over the chain ends at one
/// step, the validator referees it, and the forger loses its collateral while both accepting
/// evaluators are slashed with the dissenter as reporter. Nothing is certified or paid.
#[test]
fn an_evaluator_contests_an_acceptance_and_wins() {
    let mut w = world(panels_of_three());
    let forger = Side {
        forged_from: Some(2_000),
    };
    let (id, trainer, leaves, panel) = w.disputable_unit(forger);
    assert_eq!(panel.len(), 3);
    let (friends, dissenter) = ([panel[0], panel[1]], panel[2]);
    let events = w.verdicts(
        id,
        &[(friends[0], true), (friends[1], true), (dissenter, false)],
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DisputeOpened { challenger, .. } if *challenger == dissenter)));
    assert_eq!(w.unit(id.job, 0).state, UnitState::Disputed);
    let friend_stakes: Vec<Amount> = friends.iter().map(|f| w.stake(f)).collect();
    let trainer_stake = w.stake(&trainer.address());
    let events = w.play_out(id, (&trainer, forger), Side::HONEST, &leaves, 1);
    let (outcome, moves) = settled(&events);
    assert_eq!(outcome, "trainer_loses");
    assert!(moves <= 2 + 2 * 11 + 1, "{moves} moves");
    let mut slashed = slashed_for_lost_dispute(&events);
    slashed.sort();
    let mut expected = friends.to_vec();
    expected.sort();
    assert_eq!(slashed, expected);
    for (f, before) in friends.iter().zip(friend_stakes) {
        assert_eq!(
            w.stake(f),
            before.checked_sub(before.mul_bps(2_000)).unwrap()
        );
    }
    assert!(w.stake(&trainer.address()) < trainer_stake);
    let unit = w.unit(id.job, 0);
    assert_ne!(unit.state, UnitState::Certified);
    assert!(unit.excluded.contains(&trainer.address()));
    w.net.check();
}

/// The mirror: honest work, two evaluators accept, one rejects to stall it (or to win the
/// trainer's collateral). Its contest of the acceptance is played out and lost: it is slashed
/// with the trainer as reporter, and the accepting quorum certifies the unit at once — no
/// fresh panel, no second wait.
#[test]
fn a_dissent_against_honest_work_loses_and_the_quorum_certifies() {
    let mut w = world(panels_of_three());
    let (id, trainer, leaves, panel) = w.disputable_unit(Side::HONEST);
    let (accepters, dissenter) = ([panel[0], panel[1]], panel[2]);
    w.verdicts(
        id,
        &[
            (accepters[0], true),
            (accepters[1], true),
            (dissenter, false),
        ],
    );
    assert_eq!(w.unit(id.job, 0).state, UnitState::Disputed);
    let dissenter_stake = w.stake(&dissenter);
    let liar = Side {
        forged_from: Some(1_500),
    };
    let events = w.play_out(id, (&trainer, Side::HONEST), liar, &leaves, 1);
    assert_eq!(settled(&events).0, "trainer_wins");
    assert_eq!(slashed_for_lost_dispute(&events), vec![dissenter]);
    assert_eq!(
        w.stake(&dissenter),
        dissenter_stake
            .checked_sub(dissenter_stake.mul_bps(2_000))
            .unwrap()
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { trainer: t, .. } if *t == trainer.address())));
    let unit = w.unit(id.job, 0);
    assert_eq!(unit.state, UnitState::Certified);
    assert_eq!(unit.attempt, 0, "certified by the first panel");
    w.net.check();
}

// ---- Planted faults -----------------------------------------------------------------------------

use trainmesh_ledger::contracts::plants::{self, PlantParams};

fn with_plants() -> Params {
    Params {
        plants: PlantParams {
            rate_ppm: plants::PPM / 2,
            open_ms: 20_000,
            ..PlantParams::default()
        },
        ..quick()
    }
}

impl World {
    /// A job of one unit; its trainer seals a secret chosen so that the unit is (or is not) a
    /// plant. The seed is the next batch's, which the test harness derives from the index (a
    /// trainer cannot know it: it comes from the beacon).
    fn sealed_unit(&mut self, plant: bool) -> (UnitId, AccountKey, Hash32) {
        let deadline = self.net.time_ms + 24 * 3_600_000;
        let researcher = self.researcher.clone();
        self.net.ok(
            &researcher,
            Call::SubmitJob {
                spec: job_spec(deadline, 1),
            },
        );
        let id = UnitId {
            job: JobId(
                self.net
                    .ledger
                    .read::<trainmesh_ledger::contracts::counters::Counters>(keys::COUNTERS)
                    .unwrap()
                    .unwrap()
                    .jobs,
            ),
            index: 0,
        };
        let unit = self.unit(id.job, 0);
        let trainer = self.key_of(unit.trainer.unwrap()).clone();
        let batch_seed = *blake3::hash(&self.net.ledger.next_index().to_le_bytes()).as_bytes();
        let seed = plants::plant_seed(&batch_seed, id, unit.attempt);
        let rate = with_plants().plants.rate_ppm;
        let secret = (0u8..=255)
            .map(|i| Hash32([i; 32]))
            .find(|s| plants::is_plant(s, &seed, rate) == plant)
            .expect("half of all secrets draw each way");
        self.net.ok(
            &trainer,
            Call::SealPlant {
                unit: id,
                seal: plants::seal_of(&secret),
            },
        );
        assert_eq!(self.unit(id.job, 0).plant.unwrap().seed, seed);
        (id, trainer, secret)
    }

    fn submit(&mut self, trainer: &AccountKey, id: UnitId, checkpoint: Hash32) {
        let mut result = World::result(960_000, 0);
        result.checkpoint = checkpoint;
        self.net
            .ok(trainer, Call::SubmitWorkResult { unit: id, result });
    }

    /// Each evaluator of the panel commits to `accept`; returns the sealed reveals.
    fn commit_all(
        &mut self,
        id: UnitId,
        accept: &[(Address, bool)],
    ) -> Vec<(AccountKey, Attestation)> {
        let sealed: Vec<(AccountKey, Attestation)> = accept
            .iter()
            .map(|(e, a)| {
                let k = self.key_of(*e).clone();
                let att = Attestation {
                    accept: *a,
                    metric_ppm: 960_000,
                    tier: 1,
                    segments_checked: self.drawn(id.job, id.index, e),
                };
                (k, att)
            })
            .collect();
        for (k, a) in &sealed {
            self.commit(k, id, a);
        }
        sealed
    }
}

/// A lazy evaluator accepts without replaying; the trainer was drawn for a plant and planted
/// its last segment's end. The diligent evaluator rejects it. The seal opens after both
/// committed: the lazy one loses stake and reputation (the trainer reports it), the diligent one
/// keeps its stake, and the unit goes back to its trainer, whose true result a fresh panel
/// certifies.
#[test]
fn a_lazy_evaluator_is_caught_by_a_planted_fault_and_slashed() {
    let mut w = world(with_plants());
    let (id, trainer, secret) = w.sealed_unit(true);
    let planted = plants::planted_checkpoint(&secret, id);
    w.submit(&trainer, id, planted);
    let panel = w.unit(id.job, 0).evaluators.clone();
    let (lazy, diligent) = (panel[0], panel[1]);
    let sealed = w.commit_all(id, &[(lazy, true), (diligent, false)]);
    // Reveals wait for the opening: nobody learns the verdicts before the plant is known.
    let early = w.net.call(
        &sealed[0].0,
        World::reveal(id, sealed[0].1.clone(), &sealed[0].0),
    );
    assert!(early.unwrap_err().message.contains("plant seal"));
    // A wrong secret does not open the seal.
    assert!(w
        .net
        .call(
            &trainer,
            Call::OpenPlant {
                unit: id,
                secret: Hash32([0xAB; 32])
            }
        )
        .is_err());
    let events = w.net.ok(&trainer, Call::OpenPlant { unit: id, secret });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PlantOpened { outcome, .. } if outcome == "planted")));
    let (lazy_stake, diligent_stake) = (w.stake(&lazy), w.stake(&diligent));
    let trainer_balance = w.net.balance(&trainer.address());
    let diligent_balance = w.net.balance(&diligent);
    let events = w.reveal_all(id, sealed);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Slashed { who, reason: SlashReason::AcceptedPlant { .. }, .. } if *who == lazy
    )));
    assert_eq!(
        w.stake(&lazy),
        lazy_stake.checked_sub(lazy_stake.mul_bps(2_000)).unwrap()
    );
    assert_eq!(w.stake(&diligent), diligent_stake);
    assert!(
        w.net.balance(&trainer.address()) > trainer_balance,
        "the trainer is a reporter"
    );
    assert!(
        w.net.balance(&diligent) > diligent_balance.checked_sub(common::FEE).unwrap(),
        "the diligent evaluator is paid for catching it (beyond its fee)"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PlantResolved { caught, missed, .. } if caught == &vec![diligent] && missed == &vec![lazy]
    )));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    // Back to its trainer, planted once: the true result needs no seal and certifies.
    let unit = w.unit(id.job, 0);
    assert_eq!(unit.state, UnitState::Assigned);
    assert_eq!(unit.trainer, Some(trainer.address()));
    assert!(unit.planted && unit.plant.is_none());
    let counters: trainmesh_ledger::contracts::counters::Counters =
        w.net.ledger.read(keys::COUNTERS).unwrap().unwrap();
    assert_eq!((counters.plants, counters.plants_accepted), (1, 1));
    let events = w.run_unit(id.job, 0, 960_000, true);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    w.net.check();
}

/// The griefing attack: a trainer drawn for a plant submits honest work, lets the evaluators
/// accept it, and opens its seal hoping to have them slashed. The ledger sees no planted end:
/// the trainer pays the skip penalty, nobody else loses anything, and the unit certifies.
#[test]
fn a_trainer_cannot_claim_a_plant_on_honest_work() {
    let mut w = world(with_plants());
    let (id, trainer, secret) = w.sealed_unit(true);
    w.submit(&trainer, id, World::result(960_000, 0).checkpoint);
    let panel = w.unit(id.job, 0).evaluators.clone();
    let sealed = w.commit_all(id, &[(panel[0], true), (panel[1], true)]);
    let stakes: Vec<Amount> = panel.iter().map(|e| w.stake(e)).collect();
    let trainer_stake = w.stake(&trainer.address());
    let events = w.net.ok(&trainer, Call::OpenPlant { unit: id, secret });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PlantOpened { outcome, .. } if outcome == "skipped")));
    assert_eq!(
        w.stake(&trainer.address()),
        trainer_stake
            .checked_sub(with_plants().plants.skip_penalty)
            .unwrap()
    );
    let events = w.reveal_all(id, sealed);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    assert_eq!(panel.iter().map(|e| w.stake(e)).collect::<Vec<_>>(), stakes);
    w.net.check();
}

/// A unit not drawn for a plant opens `clear` and runs as usual; a result without a seal is
/// refused while plants are on; a trainer that keeps its seal shut past the deadline pays the
/// skip penalty and the reveals open without it.
#[test]
fn seals_are_required_and_a_silent_trainer_pays() {
    let mut w = world(with_plants());
    let (id, trainer, secret) = w.sealed_unit(false);
    w.submit(&trainer, id, World::result(960_000, 0).checkpoint);
    let panel = w.unit(id.job, 0).evaluators.clone();
    let sealed = w.commit_all(id, &[(panel[0], true), (panel[1], true)]);
    let events = w.net.ok(&trainer, Call::OpenPlant { unit: id, secret });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PlantOpened { outcome, .. } if outcome == "clear")));
    w.reveal_all(id, sealed);
    assert_eq!(w.unit(id.job, 0).state, UnitState::Certified);

    // Unsealed: refused.
    let deadline = w.net.time_ms + 24 * 3_600_000;
    let researcher = w.researcher.clone();
    w.net.ok(
        &researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let id2 = UnitId {
        job: JobId(id.job.0 + 1),
        index: 0,
    };
    let t2 = w.key_of(w.unit(id2.job, 0).trainer.unwrap()).clone();
    let refused = w.net.call(
        &t2,
        Call::SubmitWorkResult {
            unit: id2,
            result: World::result(960_000, 0),
        },
    );
    assert!(refused.unwrap_err().message.contains("SealPlant"));

    // Sealed, then silent after the commitments.
    let (id3, t3, _) = w.sealed_unit(true);
    w.submit(&t3, id3, World::result(960_000, 0).checkpoint);
    let panel = w.unit(id3.job, 0).evaluators.clone();
    let sealed = w.commit_all(id3, &[(panel[0], true), (panel[1], true)]);
    let stake = w.stake(&t3.address());
    let out = w.net.batch(vec![], with_plants().plants.open_ms + 1);
    assert!(out.end_events.iter().any(|e| matches!(
        e,
        Event::Slashed {
            reason: SlashReason::SkippedPlant { .. },
            ..
        }
    )));
    assert!(w.stake(&t3.address()) < stake);
    w.reveal_all(id3, sealed);
    assert_eq!(w.unit(id3.job, 0).state, UnitState::Certified);
    w.net.check();
}

// ---- Governance floors ----------------------------------------------------------------------

/// The attack: one proposal that removes every safeguard (quorum, threshold, timelock, minimum
/// stakes, unbonding delay, slashes to 0; emission without bound). Each is refused at the
/// proposal with the reason; a move within one proposal's reach passes; and repeated halvings
/// stop at the hard floor.
#[test]
fn governance_cannot_remove_a_safeguard_in_one_proposal() {
    let w = world(Params::default());
    let p = Params::default();
    let refused = [
        ParamUpdate::Governance {
            voting_period_ms: p.governance_voting_period_ms,
            quorum_bps: 0,
            threshold_bps: p.governance_threshold_bps,
            timelock_ms: p.governance_timelock_ms,
        },
        ParamUpdate::Governance {
            voting_period_ms: p.governance_voting_period_ms,
            quorum_bps: p.governance_quorum_bps,
            threshold_bps: 1,
            timelock_ms: p.governance_timelock_ms,
        },
        ParamUpdate::Governance {
            voting_period_ms: p.governance_voting_period_ms,
            quorum_bps: p.governance_quorum_bps,
            threshold_bps: p.governance_threshold_bps,
            timelock_ms: 0,
        },
        ParamUpdate::MinTrainerStake(Amount::ZERO),
        ParamUpdate::MinEvaluatorStake(Amount::from_train(1)),
        ParamUpdate::UnbondingDelayMs(0),
        ParamUpdate::SlashRejectedWorkBps(0),
        ParamUpdate::SlashDoubleSignBps(100),
        ParamUpdate::EmissionPerCertificate(Amount::from_train(1_000)),
        ParamUpdate::EmissionDecay {
            bps: 0,
            interval: p.emission_decay_interval,
        },
        ParamUpdate::Evaluators {
            per_unit: 1,
            quorum: 1,
        },
    ];
    let proposer = w.trainers[0].clone();
    let mut net = w.net;
    for u in refused {
        let r = net.call(
            &proposer,
            Call::Propose {
                description: "remove a safeguard".into(),
                updates: vec![u.clone()],
                deposit: Amount::from_train(10),
            },
        );
        let e = r.expect_err(&format!("{u:?} was accepted"));
        assert!(
            e.message.contains("bounds") || e.message.contains("one proposal moves"),
            "{u:?}: {}",
            e.message
        );
    }
    // Within reach: halving the timelock passes.
    let halved = p.updated(&ParamUpdate::Governance {
        voting_period_ms: p.governance_voting_period_ms,
        quorum_bps: p.governance_quorum_bps,
        threshold_bps: p.governance_threshold_bps,
        timelock_ms: p.governance_timelock_ms / 2,
    });
    assert!(p.check_change(&halved.unwrap()).is_ok());
    // Halving again and again reaches the floor, never 0.
    let mut q = p.clone();
    for _ in 0..64 {
        let next = q.updated(&ParamUpdate::SlashRejectedWorkBps(
            q.slash_rejected_work_bps / 2,
        ));
        match next {
            Ok(n) => {
                q.check_change(&n).unwrap();
                q = n;
            }
            Err(e) => {
                assert!(e.to_string().contains("bounds"), "{e}");
                break;
            }
        }
    }
    assert!(
        q.slash_rejected_work_bps >= 500,
        "{}",
        q.slash_rejected_work_bps
    );
    net.check();
}

// ---- Deadlines --------------------------------------------------------------------------------

/// The attack: a researcher sets its deadline just after its last unit's result lands, so that
/// the job expires before the evaluators certify it: the escrow comes back and the trainer's
/// work was free. The result is settled past the deadline instead: certified, paid, and only
/// then does the job end.
#[test]
fn a_researcher_cannot_take_the_last_unit_for_free() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 10_000;
    w.net.ok(
        &w.researcher.clone(),
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let id = UnitId { job, index: 0 };
    let trainer = w.key_of(w.unit(job, 0).trainer.unwrap()).clone();
    let before = w.net.balance(&trainer.address());
    w.net.ok(
        &trainer,
        Call::SubmitWorkResult {
            unit: id,
            result: World::result(960_000, 0),
        },
    );
    // The deadline passes before any evaluator speaks.
    let out = w.net.batch(vec![], 20_000);
    assert!(!out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::JobFinished { .. })));
    assert_eq!(w.unit(job, 0).state, UnitState::Submitted);
    let panel = w.unit(job, 0).evaluators.clone();
    let sealed = w.commit_all(id, &[(panel[0], true), (panel[1], true)]);
    let events = w.reveal_all(id, sealed);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WorkCertified { .. })));
    assert!(
        w.net.balance(&trainer.address()) > before,
        "the trainer is paid"
    );
    assert_ne!(w.job(job).state, JobState::Expired);
    w.net.check();
}

/// The grace is bounded: a result nobody settles does not keep an expired job open forever.
#[test]
fn an_unsettled_result_does_not_keep_a_job_past_its_grace() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 10_000;
    w.net.ok(
        &w.researcher.clone(),
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let job = JobId(1);
    let trainer = w.key_of(w.unit(job, 0).trainer.unwrap()).clone();
    w.net.ok(
        &trainer,
        Call::SubmitWorkResult {
            unit: UnitId { job, index: 0 },
            result: World::result(960_000, 0),
        },
    );
    let grace = Params::default().unit_timeout_ms * jobs::SETTLE_GRACE_TIMEOUTS;
    w.net.batch(vec![], 20_000);
    assert_ne!(w.job(job).state, JobState::Expired);
    let out = w.net.batch(vec![], grace);
    assert!(out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::JobFinished { state, .. } if state == "expired")));
    assert_eq!(
        w.net.ledger.account(&trainer.address()).unwrap().locked,
        Amount::ZERO
    );
    w.net.check();
}

// ---- Emission farming and job slots -------------------------------------------------------------

/// The attack: a researcher registers its own trainer with most of the trainer stake (and, with
/// the old rules, requires more memory than anyone else declared), then posts jobs whose
/// emission it collects. Its trainer is never drawn for its own jobs; the memory trick is
/// refused on both sides.
#[test]
fn a_job_owner_cannot_train_its_own_job() {
    let mut w = world(Params::default());
    let researcher = w.researcher.clone();
    w.net.ok(
        &researcher,
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount::from_train(5_000),
            capability: capability(),
            peer_id: researcher.peer_binding(&researcher.secret()).0,
            peer_signature: researcher.peer_binding(&researcher.secret()).1,
        },
    );
    let deadline = w.net.time_ms + 24 * 3_600_000;
    for job in 1..=8u64 {
        w.net.ok(
            &researcher,
            Call::SubmitJob {
                spec: job_spec(deadline, 1),
            },
        );
        let trainer = w.unit(JobId(job), 0).trainer.expect("assigned");
        assert_ne!(trainer, researcher.address(), "job {job}");
    }
    let mut greedy = job_spec(deadline, 1);
    greedy.min_memory_mb = u64::MAX;
    let refused = w.net.call(&researcher, Call::SubmitJob { spec: greedy });
    assert!(refused.unwrap_err().message.contains("MB"));
    let liar = w.provider.clone();
    let mut huge = capability();
    huge.memory_mb = u64::MAX;
    let refused = w.net.call(
        &liar,
        Call::RegisterWorker {
            role: Role::Evaluator,
            bond: Amount::from_train(1),
            capability: huge,
            peer_id: liar.peer_binding(&liar.secret()).0,
            peer_signature: liar.peer_binding(&liar.secret()).1,
        },
    );
    assert!(refused.unwrap_err().message.contains("MB"));
    w.net.check();
}

/// The attack: many cheap certificates to mint the emission schedule. A certificate mints at
/// most what its payment gave to the evaluators and the burn (20% by default), so a sybil
/// trainer paid by its own researcher mints at most what that researcher lost.
#[test]
fn emission_is_capped_by_what_the_payment_gave_away() {
    let mut w = world(Params::default());
    let deadline = w.net.time_ms + 24 * 3_600_000;
    let mut spec = job_spec(deadline, 1);
    spec.budget = Amount::from_train(10);
    w.net.ok(&w.researcher.clone(), Call::SubmitJob { spec });
    let events = w.run_unit(JobId(1), 0, 990_000, true);
    let minted: Amount = events
        .iter()
        .filter_map(|e| match e {
            Event::Paid {
                reason: PaymentReason::Emission { .. } | PaymentReason::ValidatorReward { .. },
                amount,
                ..
            } => Some(*amount),
            _ => None,
        })
        .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap());
    let p = Params::default();
    let cap = Amount::from_train(10).mul_bps(p.fee_share_evaluators_bps + p.fee_share_burn_bps);
    assert_eq!(minted, cap, "the schedule's 10 TRAIN, capped at 2");
    assert!(minted < p.emission_per_certificate);
    w.net.check();
}

/// The attack: one account fills every job slot for months with jobs that pay nothing, each
/// re-running candidate selection every batch. Per-owner limit, a minimum price per unit, a
/// maximum deadline and bounded steps refuse it; a unit nobody can take ends its job.
#[test]
fn job_slots_cannot_be_squatted() {
    let mut w = world(Params::default());
    let researcher = w.researcher.clone();
    let deadline = w.net.time_ms + 24 * 3_600_000;
    let far = w.net.time_ms + jobs::JOB_DEADLINE_MAX_MS + 10_000;
    let refused = w.net.call(
        &researcher,
        Call::SubmitJob {
            spec: job_spec(far, 1),
        },
    );
    assert!(refused.unwrap_err().message.contains("days away"));
    let mut cheap = job_spec(deadline, 100);
    cheap.budget = Amount::from_train(50);
    assert!(w
        .net
        .call(&researcher, Call::SubmitJob { spec: cheap })
        .is_err());
    let mut endless = job_spec(deadline, 1);
    endless.hyper.steps_per_unit = jobs::STEPS_PER_UNIT_MAX + 1;
    endless.hyper.total_steps = endless.hyper.steps_per_unit;
    let refused = w.net.call(&researcher, Call::SubmitJob { spec: endless });
    assert!(refused.unwrap_err().message.contains("steps per unit"));
    // A unit no worker can take (more memory than any declared) ends its job after the wait.
    let mut unservable = job_spec(deadline, 1);
    unservable.min_memory_mb = jobs::MEMORY_MB_MAX;
    let before = w.net.balance(&researcher.address());
    w.net.ok(&researcher, Call::SubmitJob { spec: unservable });
    assert_eq!(w.unit(JobId(1), 0).state, UnitState::Waiting);
    let wait = Params::default().unit_timeout_ms * jobs::WAITING_TIMEOUTS_MAX;
    // Workers stay live meanwhile (heartbeats time out after 5 minutes).
    let mut waited = 0;
    while waited <= wait {
        for k in w.trainers.clone().iter().chain(w.evaluators.clone().iter()) {
            w.net.ok(k, Call::Heartbeat);
        }
        w.net.batch(vec![], 120_000);
        waited += 120_000;
    }
    assert_eq!(w.job(JobId(1)).state, JobState::Expired);
    assert!(
        w.net.balance(&researcher.address()) > before.checked_sub(Amount::from_train(1)).unwrap()
    );
    // The per-owner limit.
    for _ in 0..jobs::ACTIVE_JOBS_PER_OWNER_MAX {
        w.net.ok(
            &researcher,
            Call::SubmitJob {
                spec: job_spec(deadline, 1),
            },
        );
    }
    let refused = w.net.call(
        &researcher,
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    assert!(refused.unwrap_err().message.contains("one owner"));
    w.net.check();
}

// ---- Validator rewards ------------------------------------------------------------------------

/// Validators are paid a share of every fee (at the end of the batch) and of every certificate's
/// emission (when it forms), in proportion to committee stake — here one validator takes all.
#[test]
fn validators_are_paid_a_share_of_fees_and_emission_by_stake() {
    let mut w = world(Params::default());
    let p = Params::default();
    let validator = w.validator.address();
    let deadline = w.net.time_ms + 24 * 3_600_000;
    let researcher = w.researcher.clone();
    // One batch of one transaction: the fee's share is paid at the batch's end.
    let tx = w.net.signed(
        &researcher,
        w.net.nonce(&researcher.address()),
        Call::SubmitJob {
            spec: job_spec(deadline, 1),
        },
    );
    let before = w.net.balance(&validator);
    let out = w.net.batch(vec![tx], 1_000);
    assert!(out.receipts[0].outcome.is_ok());
    let fee_share = common::FEE.mul_bps(p.validator_share_bps);
    assert!(out.end_events.iter().any(|e| matches!(
        e,
        Event::Paid { to, amount, reason: PaymentReason::ValidatorReward { .. } }
            if *to == validator && *amount == fee_share
    )));
    assert_eq!(
        w.net.balance(&validator),
        before.checked_add(fee_share).unwrap()
    );
    // The certificate's emission: the validators' share minted to them, the rest to the trainer.
    let events = w.run_unit(JobId(1), 0, 990_000, true);
    let emission = p.emission_per_certificate;
    let validators_part = emission.mul_bps(p.validator_share_bps);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Paid { to, amount, reason: PaymentReason::ValidatorReward { .. } }
            if *to == validator && *amount == validators_part
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Paid { amount, reason: PaymentReason::Emission { .. }, .. }
            if *amount == emission.checked_sub(validators_part).unwrap()
    )));
    w.net.check();
}
