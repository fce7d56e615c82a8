//! Slashing takes stake without releasing locks it was not about.

use trainmesh_contracts::events::Events;
use trainmesh_contracts::{accounts, invariants, staking, Amount, Genesis, MemState, SlashReason};

const EXAMPLE: &str = include_str!("../../../ops/genesis/example.json");

/// A trainer holds collateral on two units and is slashed for one (whose lock its caller freed
/// first): the other unit's collateral stays locked, so the trainer cannot unbond it and escape
/// the next slash. (Before, `slash` also subtracted the amount from the lock: a second time.)
#[test]
fn a_slash_leaves_the_other_units_collateral_locked() {
    let g = Genesis::from_json(EXAMPLE).unwrap();
    let mut state = MemState::default();
    g.apply(&mut state).unwrap();
    let who = g.accounts[0].address;
    let mut events = Events::default();
    staking::bond(&mut state, who, Amount::from_train(500), &mut events).unwrap();
    // Two units' collateral locked; the first is rejected: its caller frees its lock, then slashes.
    let mut a = accounts::load(&state, &who).unwrap();
    a.locked = Amount::from_train(200);
    accounts::store(&mut state, &who, &a);
    let slashed = staking::slash(
        &mut state,
        who,
        Amount::from_train(100),
        &[],
        SlashReason::WithheldReveal {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 0,
            },
        },
        &mut events,
    )
    .unwrap();
    assert_eq!(slashed, Amount::from_train(100));
    let a = accounts::load(&state, &who).unwrap();
    assert_eq!(a.stake, Amount::from_train(400));
    assert_eq!(a.locked, Amount::from_train(200), "the other lock stays");
    // A slash that takes stake below the lock caps the lock at the stake.
    staking::slash(
        &mut state,
        who,
        Amount::from_train(300),
        &[],
        SlashReason::WithheldReveal {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 1,
            },
        },
        &mut events,
    )
    .unwrap();
    let a = accounts::load(&state, &who).unwrap();
    assert_eq!(a.stake, Amount::from_train(100));
    assert_eq!(a.locked, Amount::from_train(100));
    invariants::check(
        state
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
}
