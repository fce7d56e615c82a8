//! The end of a devnet run: what the network certified, rejected and paid for the demo job,
//! printed for people and as one JSON line for scripts and tests.

use trainmesh_actors::node::NodeHandle;
use trainmesh_contracts::jobs::{Job, Unit, UnitState};
use trainmesh_contracts::{keys as state_keys, Address, Event, SlashReason, UnitId};

/// A tracked account of the devnet: its name, whether it cheats, its address.
pub(super) struct Tracked {
    pub name: String,
    pub cheater: bool,
    pub address: Address,
}

/// Every rejected result and timed-out unit of a job, from the ledger's receipts.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    /// (unit, trainer) of every result an evaluator quorum rejected.
    pub rejected: Vec<(UnitId, Address)>,
    /// (unit, trainer) of every unit whose trainer did not deliver in time.
    pub timed_out: Vec<(UnitId, Address)>,
    /// Disputes opened over the job's units (contested rejections, split panels).
    pub disputes: usize,
    /// (unit, outcome, moves) of every dispute settled.
    pub settled: Vec<(UnitId, String, u32)>,
    /// (unit, evaluator) of every evaluator slashed over the job's units: on the losing side
    /// of a dispute, or for keeping back a committed verdict.
    pub evaluators_slashed: Vec<(UnitId, Address)>,
    /// Planted faults opened over the job's units, and the verdicts that accepted one.
    pub plants: usize,
    pub plants_accepted: usize,
    /// Everything slashed, by account (base units): what the ledger took, apart from fees.
    pub slashed: std::collections::BTreeMap<Address, u128>,
    /// Validators slashed for double signing, and the round.
    pub double_signers: Vec<(Address, u64)>,
}

impl Verdicts {
    pub fn of(n: &NodeHandle, job: &Job) -> anyhow::Result<Verdicts> {
        let l = n.ledger.read().expect("ledger lock");
        let mut v = Verdicts::default();
        for height in 1..=l.height() {
            let mut batch: Vec<Event> = Vec::new();
            for receipt in l.receipts(height)? {
                if let Ok(events) = receipt.outcome {
                    batch.extend(events);
                }
            }
            batch.extend(l.end_events(height)?);
            for e in &batch {
                if let Event::Slashed {
                    who,
                    amount,
                    reason,
                    ..
                } = e
                {
                    *v.slashed.entry(*who).or_default() += amount.0;
                    if let SlashReason::DoubleSign { round } = reason {
                        v.double_signers.push((*who, *round));
                    }
                }
                match e {
                    Event::WorkRejected { unit, trainer, .. } if unit.job == job.id => {
                        v.rejected.push((*unit, *trainer))
                    }
                    Event::UnitTimedOut { unit, trainer } if unit.job == job.id => {
                        v.timed_out.push((*unit, *trainer))
                    }
                    Event::DisputeOpened { unit, .. } if unit.job == job.id => v.disputes += 1,
                    Event::PlantResolved { unit, missed, .. } if unit.job == job.id => {
                        v.plants += 1;
                        v.plants_accepted += missed.len();
                    }
                    Event::DisputeSettled {
                        unit,
                        outcome,
                        moves,
                    } if unit.job == job.id => v.settled.push((*unit, outcome.clone(), *moves)),
                    Event::Slashed {
                        who,
                        reason:
                            SlashReason::LostDispute { unit }
                            | SlashReason::WithheldReveal { unit }
                            | SlashReason::AcceptedPlant { unit },
                        ..
                    } if unit.job == job.id => v.evaluators_slashed.push((*unit, *who)),
                    _ => {}
                }
            }
        }
        Ok(v)
    }
}

pub(super) fn balance_of(n: &NodeHandle, a: &Address) -> u128 {
    n.ledger
        .read()
        .expect("ledger lock")
        .account(a)
        .map(|acc| acc.balance.0 + acc.stake.0)
        .unwrap_or(0)
}

pub(super) fn train(amount: i128) -> f64 {
    amount as f64 / trainmesh_contracts::types::UNITS_PER_TRAIN as f64
}

pub(super) fn name_of(tracked: &[Tracked], a: &Address) -> String {
    tracked
        .iter()
        .find(|t| t.address == *a)
        .map(|t| t.name.clone())
        .unwrap_or_else(|| "?".into())
}

fn is_cheater(tracked: &[Tracked], a: &Address) -> bool {
    tracked.iter().any(|t| t.cheater && t.address == *a)
}

/// Prints every certified unit and every rejected result; returns the certificates counted.
pub(super) fn print_units(
    n: &NodeHandle,
    job: &Job,
    verdicts: &Verdicts,
    tracked: &[Tracked],
) -> anyhow::Result<u64> {
    println!("certificates of useful work:");
    let mut certificates = 0;
    for index in 0..=job.current_unit {
        let uid = UnitId { job: job.id, index };
        let Some(unit) = n
            .ledger
            .read()
            .expect("ledger lock")
            .read::<Unit>(&state_keys::unit(uid))?
        else {
            continue;
        };
        if unit.state == UnitState::Certified {
            certificates += 1;
            let measured: Vec<String> = unit
                .attestations
                .iter()
                .map(|(_, a)| format!("{:.4}", a.metric_ppm as f64 / 1e6))
                .collect();
            println!(
                "  unit {index}: certificate {} · trainer {} · evaluators measured {} · {} segments audited",
                &unit.certificate.map(|c| c.to_hex()).unwrap_or_default()[..16],
                unit.trainer.map(|t| name_of(tracked, &t)).unwrap_or_default(),
                measured.join(", "),
                unit.attestations.first().map(|(_, a)| a.segments_checked.len()).unwrap_or(0),
            );
        }
    }
    for (unit, trainer) in &verdicts.rejected {
        println!(
            "  unit {}: result of {} rejected → slashed, unit reassigned",
            unit.index,
            name_of(tracked, trainer)
        );
    }
    for (unit, outcome, moves) in &verdicts.settled {
        println!(
            "  unit {}: dispute settled after {moves} moves: {}",
            unit.index,
            outcome.replace('_', " ")
        );
    }
    for (unit, trainer) in &verdicts.timed_out {
        println!(
            "  unit {}: {} did not deliver in time → unit reassigned",
            unit.index,
            name_of(tracked, trainer)
        );
    }
    Ok(certificates)
}

/// What the trainers gained and lost, in TRAIN: (rewards, slashed, slashed from cheaters). The
/// slashes are the ledger's `Slashed` events: a balance also pays transaction fees.
pub(super) struct TrainerBalances {
    pub rewards: f64,
    pub slashed: f64,
    pub cheaters_slashed: f64,
}

/// Prints every tracked account's change since `before` (balance + stake).
pub(super) fn print_balances(
    n: &NodeHandle,
    tracked: &[Tracked],
    before: &[u128],
    verdicts: &Verdicts,
) -> TrainerBalances {
    println!("balance changes (balance + stake, TRAIN):");
    let (mut rewards, mut slashed, mut cheaters_slashed) = (0i128, 0i128, 0i128);
    for (t, b) in tracked.iter().zip(before) {
        let delta = balance_of(n, &t.address) as i128 - *b as i128;
        if t.name.starts_with("trainer") {
            rewards += delta.max(0);
            let lost = verdicts.slashed.get(&t.address).copied().unwrap_or(0) as i128;
            slashed += lost;
            if t.cheater {
                cheaters_slashed += lost;
            }
        }
        println!("  {:<22} {:+.4}", t.name, train(delta));
    }
    TrainerBalances {
        rewards: train(rewards),
        slashed: train(slashed),
        cheaters_slashed: train(cheaters_slashed),
    }
}

/// Results rejected although their trainer is honest (a false accusation: never expected).
pub(super) fn honest_rejections(verdicts: &Verdicts, tracked: &[Tracked]) -> usize {
    verdicts
        .rejected
        .iter()
        .filter(|(_, t)| !is_cheater(tracked, t))
        .count()
}
