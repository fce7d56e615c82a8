//! Governance: proposals that change parameters, stake-weighted votes, a quorum and a threshold,
//! a timelock, then execution.
//!
//! ```text
//! Propose (deposit) ─► Voting ─period over─► Passed ─timelock─► Executed
//!                                    └─────► Rejected (deposit burned without quorum, else returned)
//! ```

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::counters;
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events, PaymentReason};
use crate::keys;
use crate::params::{self, ParamUpdate};
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Context, ProposalId, TimestampMs};

pub const UPDATES_PER_PROPOSAL_MAX: usize = 16;
pub const OPEN_PROPOSALS_MAX: usize = 64;
pub const VOTERS_MAX: usize = 10_000;
const DESCRIPTION_BYTES_MAX: usize = 1_024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalState {
    Voting,
    Passed,
    Rejected,
    Executed,
}

impl ProposalState {
    pub fn name(self) -> &'static str {
        match self {
            ProposalState::Voting => "voting",
            ProposalState::Passed => "passed",
            ProposalState::Rejected => "rejected",
            ProposalState::Executed => "executed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub proposer: Address,
    pub description: String,
    pub updates: Vec<ParamUpdate>,
    pub deposit: Amount,
    pub state: ProposalState,
    pub voting_ends: TimestampMs,
    pub execute_at: Option<TimestampMs>,
    pub yes: Amount,
    pub no: Amount,
    pub voters: Vec<Address>,
}

pub fn load(state: &(impl State + ?Sized), id: ProposalId) -> ContractResult<Proposal> {
    state
        .read(&keys::proposal(id))?
        .ok_or(ContractError::UnknownProposal(id))
}

fn store(state: &mut (impl State + ?Sized), p: &Proposal) {
    state.write(keys::proposal(p.id), p);
}

fn open(state: &(impl State + ?Sized)) -> ContractResult<Vec<ProposalId>> {
    Ok(state.read(keys::OPEN_PROPOSALS)?.unwrap_or_default())
}

pub fn propose(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    proposer: Address,
    description: String,
    updates: Vec<ParamUpdate>,
    deposit: Amount,
    events: &mut Events,
) -> ContractResult<ProposalId> {
    let p = params::load(state)?;
    if updates.is_empty() || updates.len() > UPDATES_PER_PROPOSAL_MAX {
        return Err(ContractError::TooMany {
            what: "parameter updates",
            count: updates.len(),
            max: UPDATES_PER_PROPOSAL_MAX,
        });
    }
    if description.len() > DESCRIPTION_BYTES_MAX {
        return Err(ContractError::TooMany {
            what: "description bytes",
            count: description.len(),
            max: DESCRIPTION_BYTES_MAX,
        });
    }
    // The updates must produce valid parameters now (they are checked again at execution).
    let mut check = p.clone();
    for u in &updates {
        check = check.updated(u)?;
    }
    // Within the hard bounds, and no further from today's values than one proposal may go.
    p.check_change(&check)?;
    if deposit < p.governance_min_deposit {
        return Err(ContractError::InsufficientBalance {
            available: deposit,
            required: p.governance_min_deposit,
        });
    }
    let mut ids = open(state)?;
    if ids.len() >= OPEN_PROPOSALS_MAX {
        return Err(ContractError::TooMany {
            what: "open proposals",
            count: ids.len() + 1,
            max: OPEN_PROPOSALS_MAX,
        });
    }
    accounts::debit(state, &proposer, deposit)?;
    let mut c = counters::load(state)?;
    c.proposals += 1;
    counters::store(state, &c);
    let id = ProposalId(c.proposals);
    ids.push(id);
    state.write(keys::OPEN_PROPOSALS.to_vec(), &ids);
    events.push(Event::ProposalCreated {
        proposal: id,
        proposer,
        updates: updates.clone(),
    });
    store(
        state,
        &Proposal {
            id,
            proposer,
            description,
            updates,
            deposit,
            state: ProposalState::Voting,
            voting_ends: ctx.time.saturating_add_ms(p.governance_voting_period_ms),
            execute_at: None,
            yes: Amount::ZERO,
            no: Amount::ZERO,
            voters: Vec::new(),
        },
    );
    Ok(id)
}

/// A vote weighs the voter's bonded stake at the time of voting.
pub fn vote(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    voter: Address,
    id: ProposalId,
    approve: bool,
    events: &mut Events,
) -> ContractResult<()> {
    let mut p = load(state, id)?;
    if p.state != ProposalState::Voting || ctx.time >= p.voting_ends {
        return Err(ContractError::WrongProposalState {
            proposal: id,
            state: p.state.name(),
            action: "voting",
        });
    }
    if p.voters.contains(&voter) {
        return Err(ContractError::AlreadyVoted(voter));
    }
    if p.voters.len() >= VOTERS_MAX {
        return Err(ContractError::TooMany {
            what: "voters",
            count: p.voters.len() + 1,
            max: VOTERS_MAX,
        });
    }
    let weight = accounts::load(state, &voter)?.stake;
    if weight.is_zero() {
        return Err(ContractError::NoVotingPower(voter));
    }
    if approve {
        p.yes = p.yes.checked_add(weight)?;
    } else {
        p.no = p.no.checked_add(weight)?;
    }
    p.voters.push(voter);
    store(state, &p);
    events.push(Event::Voted {
        proposal: id,
        voter,
        approve,
        weight,
    });
    Ok(())
}

/// Once per batch: tally proposals whose vote ended, execute those whose timelock passed.
pub fn on_batch_end(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    events: &mut Events,
) -> ContractResult<()> {
    let params = params::load(state)?;
    let mut still_open = Vec::new();
    let was_open = open(state)?;
    for id in was_open.iter().copied() {
        let mut p = load(state, id)?;
        match p.state {
            ProposalState::Voting if ctx.time >= p.voting_ends => {
                let staked = accounts::supply(state)?.staked;
                let turnout = p.yes.checked_add(p.no)?;
                let quorum = staked.mul_bps(params.governance_quorum_bps);
                let threshold = turnout.mul_bps(params.governance_threshold_bps);
                if turnout < quorum || turnout.is_zero() {
                    p.state = ProposalState::Rejected;
                    accounts::burn(state, p.deposit)?;
                    events.push(Event::ProposalRejected {
                        proposal: id,
                        reason: format!("turnout {turnout} below quorum {quorum}; deposit burned"),
                    });
                } else if p.yes <= threshold {
                    p.state = ProposalState::Rejected;
                    return_deposit(state, &p, events)?;
                    events.push(Event::ProposalRejected {
                        proposal: id,
                        reason: format!("yes {} not above threshold {threshold}", p.yes),
                    });
                } else {
                    let at = p
                        .voting_ends
                        .saturating_add_ms(params.governance_timelock_ms);
                    p.state = ProposalState::Passed;
                    p.execute_at = Some(at);
                    return_deposit(state, &p, events)?;
                    events.push(Event::ProposalPassed {
                        proposal: id,
                        execute_at: at,
                    });
                    still_open.push(id);
                }
                store(state, &p);
            }
            ProposalState::Passed if p.execute_at.is_some_and(|t| ctx.time >= t) => {
                // Parameters may have changed since the vote: apply in order, all or nothing.
                let now = params::load(state)?;
                let mut next = now.clone();
                let mut result = Ok(());
                for u in &p.updates {
                    match next.updated(u) {
                        Ok(n) => next = n,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if result.is_ok() {
                    result = now.check_change(&next);
                }
                match result {
                    Ok(()) => {
                        params::store(state, &next);
                        crate::jobs::trainer_pool_changed(state)?;
                        p.state = ProposalState::Executed;
                        events.push(Event::ProposalExecuted { proposal: id });
                    }
                    Err(e) => {
                        p.state = ProposalState::Rejected;
                        events.push(Event::ProposalRejected {
                            proposal: id,
                            reason: format!("no longer valid at execution: {e}"),
                        });
                    }
                }
                store(state, &p);
            }
            _ => still_open.push(id),
        }
    }
    if still_open != was_open {
        state.write(keys::OPEN_PROPOSALS.to_vec(), &still_open);
    }
    Ok(())
}

fn return_deposit(
    state: &mut (impl State + ?Sized),
    p: &Proposal,
    events: &mut Events,
) -> ContractResult<()> {
    accounts::credit(state, &p.proposer, p.deposit)?;
    events.push(Event::Paid {
        to: p.proposer,
        amount: p.deposit,
        reason: PaymentReason::DepositReturned { proposal: p.id },
    });
    Ok(())
}
