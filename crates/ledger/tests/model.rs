//! The ledger against a plain reference model, and through a storage backend that fails.
//!
//! Random bounded sequences of signed operations (transfers, bonds, unbonds, withdrawals, and
//! replayed, skipped, foreign or forged transactions) run through the real ledger (signatures,
//! encoding, redb, the Merkle root) and through a model written as plainly as possible. After every
//! batch: every account and every receipt agree, and the invariants hold over the whole state.
//! Every run prints its seed; `LEDGER_MODEL_SEED=<seed>` replays one.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{genesis, CHAIN};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::{invariants, Amount, Params, TimestampMs};
use trainmesh_ledger::{AccountKey, Batch, Ledger, Transaction};

/// The default minimum fee (0.001 TRAIN).
const FEE: u128 = 1_000_000;
const ACCOUNTS: usize = 5;
const UNBONDING_DELAY_MS: u64 = 5_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ModelAccount {
    balance: u128,
    nonce: u64,
    stake: u128,
    unbonding: Vec<(u128, u64)>,
}

/// The reference: the rules of fees, nonces, transfers and staking, nothing else.
#[derive(Clone, Debug, Default)]
struct Model {
    accounts: Vec<ModelAccount>,
}

impl Model {
    /// Applies one valid-looking transaction; returns the expected rejection code, if any.
    fn apply(
        &mut self,
        who: usize,
        nonce: u64,
        call: &Call,
        now: u64,
        to_index: &BTreeMap<[u8; 32], usize>,
    ) -> Option<&'static str> {
        let a = self.accounts[who].clone();
        if nonce < a.nonce {
            return Some("nonce_replayed");
        }
        if nonce > a.nonce {
            return Some("nonce_skipped");
        }
        if a.balance < FEE {
            return Some("insufficient_balance");
        }
        // From here the fee is paid and the nonce used, whatever the call does.
        let mut next = a.clone();
        next.balance -= FEE;
        next.nonce += 1;
        self.accounts[who] = next.clone();
        match call {
            Call::Transfer { to, amount } => {
                if amount.0 == 0 {
                    return Some("contract_error");
                }
                if next.balance < amount.0 {
                    return Some("insufficient_balance");
                }
                next.balance -= amount.0;
                self.accounts[who] = next;
                let t = to_index[&to.0];
                self.accounts[t].balance += amount.0;
                return None;
            }
            Call::Bond { amount } => {
                if amount.0 == 0 || next.balance < amount.0 {
                    return Some(if amount.0 == 0 {
                        "contract_error"
                    } else {
                        "insufficient_balance"
                    });
                }
                next.balance -= amount.0;
                next.stake += amount.0;
            }
            Call::Unbond { amount } => {
                if amount.0 == 0 || next.stake < amount.0 || next.unbonding.len() >= 32 {
                    return Some("contract_error");
                }
                next.stake -= amount.0;
                next.unbonding.push((amount.0, now + UNBONDING_DELAY_MS));
            }
            Call::Withdraw => {
                let ready: u128 = next
                    .unbonding
                    .iter()
                    .filter(|(_, t)| *t <= now)
                    .map(|(a, _)| a)
                    .sum();
                if !next.unbonding.iter().any(|(_, t)| *t <= now) {
                    return Some("contract_error");
                }
                next.unbonding.retain(|(_, t)| *t > now);
                next.balance += ready;
            }
            other => panic!("the model does not know {other:?}"),
        }
        self.accounts[who] = next;
        None
    }
}

struct Scenario {
    keys: Vec<AccountKey>,
    batches: Vec<(Batch, Vec<Option<&'static str>>)>,
    /// The model's accounts after each batch.
    expected: Vec<Vec<ModelAccount>>,
}

fn params() -> Params {
    Params {
        unbonding_delay_ms: UNBONDING_DELAY_MS,
        ..Params::default()
    }
}

fn keys() -> Vec<AccountKey> {
    (0..ACCOUNTS as u64)
        .map(|i| AccountKey::from_seed(500 + i))
        .collect()
}

fn genesis_of(keys: &[AccountKey]) -> trainmesh_ledger::contracts::Genesis {
    let funded: Vec<(&AccountKey, u64)> = keys.iter().map(|k| (k, 1_000)).collect();
    genesis(&funded, &[], params())
}

/// Draws a scenario from a seed, computing the expected outcome of every transaction.
fn scenario(seed: u64, batches: usize) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keys = keys();
    let to_index: BTreeMap<[u8; 32], usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.address().0, i))
        .collect();
    let mut model = Model {
        accounts: vec![
            ModelAccount {
                balance: Amount::from_train(1_000).0,
                ..Default::default()
            };
            ACCOUNTS
        ],
    };
    let mut time = 1_000_000u64;
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for index in 0..batches as u64 {
        time += rng.gen_range(0..3_000);
        let mut txs = Vec::new();
        let mut codes = Vec::new();
        for _ in 0..rng.gen_range(0..8) {
            let who = rng.gen_range(0..ACCOUNTS);
            let train = |rng: &mut ChaCha8Rng| {
                Amount(rng.gen_range(0..600) as u128 * 1_000_000_000 + rng.gen_range(0..1_000))
            };
            let call = match rng.gen_range(0..10) {
                0..=3 => Call::Transfer {
                    to: keys[rng.gen_range(0..ACCOUNTS)].address(),
                    amount: train(&mut rng),
                },
                4 | 5 => Call::Bond {
                    amount: train(&mut rng),
                },
                6 | 7 => Call::Unbond {
                    amount: Amount(rng.gen_range(0..model.accounts[who].stake.max(1) * 2)),
                },
                _ => Call::Withdraw,
            };
            let nonce = model.accounts[who].nonce;
            let (tx, code) = match rng.gen_range(0..24) {
                0 => (
                    keys[who]
                        .sign(CHAIN, nonce.saturating_sub(1), Amount(FEE), call.clone())
                        .encode(),
                    if nonce == 0 {
                        model.apply(who, 0, &call, time, &to_index)
                    } else {
                        Some("nonce_replayed")
                    },
                ),
                1 => (
                    keys[who]
                        .sign(CHAIN, nonce + 1 + rng.gen_range(0..3), Amount(FEE), call)
                        .encode(),
                    Some("nonce_skipped"),
                ),
                2 => (
                    keys[who]
                        .sign("elsewhere", nonce, Amount(FEE), call)
                        .encode(),
                    Some("wrong_chain_id"),
                ),
                20 => (
                    keys[who].sign(CHAIN, nonce, Amount(FEE - 1), call).encode(),
                    Some("fee_too_low"),
                ),
                21 => (
                    // Expired just before this batch's time.
                    keys[who]
                        .sign_until(CHAIN, nonce, Amount(FEE), time - 1, call)
                        .encode(),
                    Some("expired"),
                ),
                22 => {
                    // Valid through exactly this batch's time.
                    let code = model.apply(who, nonce, &call, time, &to_index);
                    (
                        keys[who]
                            .sign_until(CHAIN, nonce, Amount(FEE), time, call)
                            .encode(),
                        code,
                    )
                }
                3 => {
                    let forged = Transaction {
                        chain_id: CHAIN.into(),
                        public_key: keys[who].public_key(),
                        nonce,
                        fee: Amount(FEE),
                        expires_ms: u64::MAX,
                        call,
                    }
                    .sign(&keys[(who + 1) % ACCOUNTS].secret());
                    (forged.encode(), Some("bad_signature"))
                }
                _ => {
                    let code = model.apply(who, nonce, &call, time, &to_index);
                    (
                        keys[who].sign(CHAIN, nonce, Amount(FEE), call).encode(),
                        code,
                    )
                }
            };
            txs.push(Bytes::from(tx));
            codes.push(code);
        }
        let batch = Batch {
            index,
            timestamp: TimestampMs(time),
            seed: *blake3::hash(&[seed.to_le_bytes(), index.to_le_bytes()].concat()).as_bytes(),
            transactions: txs,
        };
        out.push((batch, codes));
        expected.push(model.accounts.clone());
    }
    Scenario {
        keys,
        batches: out,
        expected,
    }
}

fn snapshot(ledger: &Ledger, keys: &[AccountKey]) -> Vec<ModelAccount> {
    keys.iter()
        .map(|k| {
            let a = ledger.account(&k.address()).unwrap();
            ModelAccount {
                balance: a.balance.0,
                nonce: a.nonce,
                stake: a.stake.0,
                unbonding: a
                    .unbonding
                    .iter()
                    .map(|u| (u.amount.0, u.release_at.0))
                    .collect(),
            }
        })
        .collect()
}

fn check_invariants(ledger: &Ledger, seed: u64, step: usize) {
    let entries = ledger.entries().unwrap();
    if let Err(e) = invariants::check(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))) {
        panic!(
            "seed {seed}, batch {step}: invariant broken: {e}\n  replay: LEDGER_MODEL_SEED={seed}"
        );
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("LEDGER_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("LEDGER_MODEL_SEED is a number")],
        Err(_) => (1..=12).collect(),
    }
}

#[test]
fn ledger_matches_the_reference_model() {
    for seed in seeds() {
        println!("model seed {seed} (replay: LEDGER_MODEL_SEED={seed})");
        let s = scenario(seed, 40);
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path().join("l.redb")).unwrap();
        ledger.init(&genesis_of(&s.keys)).unwrap();
        for (step, ((batch, codes), expected)) in s.batches.iter().zip(&s.expected).enumerate() {
            let out = ledger.execute(batch).unwrap();
            let got: Vec<Option<String>> = out
                .receipts
                .iter()
                .map(|r| r.outcome.as_ref().err().map(|e| e.code.clone()))
                .collect();
            let want: Vec<Option<String>> = codes.iter().map(|c| c.map(String::from)).collect();
            assert_eq!(
                got, want,
                "seed {seed}, batch {step}: receipts differ\n  replay: LEDGER_MODEL_SEED={seed}"
            );
            assert_eq!(
                &snapshot(&ledger, &s.keys),
                expected,
                "seed {seed}, batch {step}: accounts differ\n  replay: LEDGER_MODEL_SEED={seed}"
            );
            check_invariants(&ledger, seed, step);
        }
    }
}

#[test]
fn same_batches_same_root_and_restart_resumes() {
    let s = scenario(77, 30);
    let run = |restart_at: Option<usize>| -> Vec<[u8; 32]> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.init(&genesis_of(&s.keys)).unwrap();
        let mut roots = vec![ledger.state_root()];
        for (i, (batch, _)) in s.batches.iter().enumerate() {
            if Some(i) == restart_at {
                drop(ledger);
                ledger = Ledger::open(&path).unwrap();
                // The same genesis again is accepted; another is refused.
                ledger.init(&genesis_of(&s.keys)).unwrap();
                let other = genesis_of(&keys()[..2]);
                assert!(ledger.init(&other).is_err());
                assert_eq!(ledger.next_index(), i as u64);
            }
            roots.push(ledger.execute(batch).unwrap().state_root);
        }
        roots
    };
    let a = run(None);
    assert_eq!(a, run(None), "deterministic");
    assert_eq!(a, run(Some(13)), "a restart changes nothing");
}

/// Memory shared by every "boot" of a database, and a budget of writes before the disk "dies".
#[derive(Debug, Clone)]
struct FlakyDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    writes_left: Arc<AtomicI64>,
}

impl FlakyDisk {
    fn fail(&self) -> io::Result<()> {
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let b = self.bytes.lock().unwrap();
        let start = offset as usize;
        let src = b
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::other("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fail()?;
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fail()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fail()?;
        let mut b = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn a_disk_that_fails_mid_batch_never_leaves_partial_state() {
    let s = scenario(5, 12);
    // The roots after genesis and after each batch, from a healthy run.
    let (healthy, writes) = {
        let disk = FlakyDisk {
            bytes: Arc::default(),
            writes_left: Arc::new(AtomicI64::new(i64::MAX)),
        };
        let mut l = Ledger::open_with_backend(disk.clone()).unwrap();
        l.init(&genesis_of(&s.keys)).unwrap();
        let mut roots = vec![l.state_root()];
        for (b, _) in &s.batches {
            roots.push(l.execute(b).unwrap().state_root);
        }
        (roots, i64::MAX - disk.writes_left.load(Ordering::SeqCst))
    };
    println!("a healthy run makes {writes} writes and syncs");
    let mut crashes = 0;
    // Fail at every point of the run: each write or sync is a possible crash.
    for budget in 0..writes {
        let disk = FlakyDisk {
            bytes: Arc::default(),
            writes_left: Arc::new(AtomicI64::new(budget)),
        };
        let crashed = (|| -> Result<(), trainmesh_ledger::LedgerError> {
            let mut l = Ledger::open_with_backend(disk.clone())?;
            l.init(&genesis_of(&s.keys))?;
            for (b, _) in &s.batches {
                l.execute(b)?;
            }
            Ok(())
        })()
        .is_err();
        if !crashed {
            continue;
        }
        crashes += 1;
        // Reboot on the same bytes with a healthy disk.
        disk.writes_left.store(i64::MAX, Ordering::SeqCst);
        let Ok(mut l) = Ledger::open_with_backend(disk.clone()) else {
            // Died before the database file was first created: nothing to recover.
            assert!(
                disk.bytes.lock().unwrap().is_empty() || budget < 40,
                "budget {budget}: the database does not reopen"
            );
            continue;
        };
        l.init(&genesis_of(&s.keys)).unwrap();
        let h = l.height() as usize;
        assert_eq!(
            l.state_root(),
            healthy[h],
            "budget {budget}: state after {h} batches is not a clean prefix"
        );
        check_invariants(&l, 5, h);
        for (b, _) in &s.batches[h..] {
            l.execute(b).unwrap();
        }
        assert_eq!(
            l.state_root(),
            *healthy.last().unwrap(),
            "budget {budget}: resumed run diverged"
        );
    }
    assert_eq!(
        crashes, writes,
        "every budget short of the whole run must crash it"
    );
}
