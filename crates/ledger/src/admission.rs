//! Mempool admission: what a validator lets into its mempool, before any of it is proposed.
//!
//! The ledger charges every transaction that reaches execution with a valid nonce (see
//! `Params::min_fee`), so spam that executes is paid for. What never executes — duplicates,
//! replays of committed transactions, nonces that can never be reached, transactions that cannot
//! pay, or that expired — must not take room in headers either: the mempool refuses them here.
//!
//! Rules, in order: not expired, and not valid for longer than [`AdmissionLimits::lifetime_max_ms`]
//! (everything admitted leaves within that time); the fee at least the chain's minimum; a nonce
//! neither used (committed) nor more than [`AdmissionLimits::per_sender`] ahead of the account's;
//! one transaction per (sender, nonce) — a second, different one is refused, the same one again
//! is a duplicate and is not proposed twice (unless it has waited [`AdmissionLimits::resend_ms`],
//! in case its first proposal was lost); at most `per_sender` pending transactions per sender,
//! whose fees together the sender's balance covers; at most [`AdmissionLimits::per_source`]
//! pending transactions and [`AdmissionLimits::per_source_bytes`] bytes from one source (a
//! peer: each relays for whom it likes, but takes no more than its share); and
//! [`AdmissionLimits::pending_max`] in all.
//!
//! An entry leaves when its sender's nonce on the ledger passes it (it committed, or another
//! transaction took the nonce) or when it expires; [`Admission::sweep`] removes both.

use std::collections::{BTreeMap, HashMap};

use trainmesh_contracts::accounts::Account;
use trainmesh_contracts::{Address, Amount};

use crate::transaction::SignedTransaction;

/// Where a transaction came from: this node (its gateway, its own wallet) or a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Local,
    /// A peer, by a key of the caller's choosing (a hash of its peer id).
    Peer([u8; 32]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub per_sender: u64,
    pub per_source: usize,
    pub per_source_bytes: usize,
    pub pending_max: usize,
    pub lifetime_max_ms: u64,
    pub resend_ms: u64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            per_sender: 16,
            per_source: 4_096,
            per_source_bytes: 8 * 1024 * 1024,
            pending_max: 100_000,
            lifetime_max_ms: 3_600_000,
            resend_ms: 5_000,
        }
    }
}

/// Why a transaction was not admitted: a stable code (the gateway's error code) and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Refusal {
    Refusal { code, message }
}

/// What admission decided for a transaction it did not refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// New (or resent after [`AdmissionLimits::resend_ms`]): goes into the mempool.
    New,
    /// Already pending here: not proposed again.
    Duplicate,
}

#[derive(Clone, Debug)]
struct Pending {
    sender: Address,
    nonce: u64,
    fee: Amount,
    expires_ms: u64,
    source: Source,
    bytes: usize,
    admitted_ms: u64,
}

#[derive(Default, Clone, Copy, Debug)]
struct Usage {
    count: usize,
    bytes: usize,
}

/// The pending transactions a validator has admitted, by hash, sender and source.
#[derive(Debug, Default)]
pub struct Admission {
    limits: AdmissionLimits,
    pending: HashMap<[u8; 32], Pending>,
    by_sender: HashMap<Address, BTreeMap<u64, [u8; 32]>>,
    by_source: HashMap<Source, Usage>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Decides on `tx` (decoded, its signature and chain checked) of `bytes` encoded bytes from
    /// `source`, given its sender's `account` on the ledger, the chain's `min_fee` and the time.
    pub fn admit(
        &mut self,
        tx: &SignedTransaction,
        bytes: usize,
        source: Source,
        account: &Account,
        min_fee: Amount,
        now_ms: u64,
    ) -> Result<Admitted, Refusal> {
        let t = &tx.transaction;
        let sender = tx.sender();
        let l = self.limits;
        self.forget_used(&sender, account.nonce);
        if t.expires_ms < now_ms {
            return Err(refuse(
                "expired",
                format!("expired at {} ms; it is {now_ms} ms", t.expires_ms),
            ));
        }
        if t.expires_ms - now_ms > l.lifetime_max_ms {
            return Err(refuse(
                "expiry_too_far",
                format!(
                    "valid for {} ms; a mempool holds a transaction for at most {} ms",
                    t.expires_ms - now_ms,
                    l.lifetime_max_ms
                ),
            ));
        }
        if t.fee < min_fee {
            return Err(refuse(
                "fee_too_low",
                format!("fee {} is below the minimum fee {min_fee}", t.fee),
            ));
        }
        if t.nonce < account.nonce {
            return Err(refuse(
                "nonce_replayed",
                format!(
                    "nonce {} was already used (the account is at {})",
                    t.nonce, account.nonce
                ),
            ));
        }
        if t.nonce - account.nonce >= l.per_sender {
            return Err(refuse(
                "nonce_too_far",
                format!(
                    "nonce {} is more than {} ahead of the account's {}",
                    t.nonce, l.per_sender, account.nonce
                ),
            ));
        }
        let hash = tx.hash();
        if let Some(p) = self.pending.get_mut(&hash) {
            if now_ms.saturating_sub(p.admitted_ms) >= l.resend_ms {
                p.admitted_ms = now_ms;
                return Ok(Admitted::New);
            }
            return Ok(Admitted::Duplicate);
        }
        let of_sender = self.by_sender.get(&sender);
        if of_sender.is_some_and(|m| m.contains_key(&t.nonce)) {
            return Err(refuse(
                "nonce_taken",
                format!(
                    "another transaction of this sender with nonce {} is pending",
                    t.nonce
                ),
            ));
        }
        let count = of_sender.map_or(0, |m| m.len());
        if count as u64 >= l.per_sender {
            return Err(refuse(
                "sender_quota",
                format!(
                    "{count} transactions of this sender are pending, the most is {}",
                    l.per_sender
                ),
            ));
        }
        let fees_due = of_sender
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|h| self.pending.get(h))
            .try_fold(t.fee, |sum, p| sum.checked_add(p.fee).ok());
        match fees_due {
            Some(fees) if fees <= account.balance => {}
            _ => {
                return Err(refuse(
                    "insufficient_balance",
                    format!(
                        "the balance {} does not cover the fees of this sender's pending \
                         transactions and this one",
                        account.balance
                    ),
                ))
            }
        }
        if source != Source::Local {
            let used = self.by_source.get(&source).copied().unwrap_or_default();
            if used.count >= l.per_source || used.bytes + bytes > l.per_source_bytes {
                return Err(refuse(
                    "source_quota",
                    format!(
                        "this peer has {} transactions ({} bytes) pending, the most is {} ({} \
                         bytes)",
                        used.count, used.bytes, l.per_source, l.per_source_bytes
                    ),
                ));
            }
        }
        if self.pending.len() >= l.pending_max {
            return Err(refuse(
                "mempool_full",
                format!("{} transactions are pending", self.pending.len()),
            ));
        }
        self.pending.insert(
            hash,
            Pending {
                sender,
                nonce: t.nonce,
                fee: t.fee,
                expires_ms: t.expires_ms,
                source,
                bytes,
                admitted_ms: now_ms,
            },
        );
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(t.nonce, hash);
        let u = self.by_source.entry(source).or_default();
        u.count += 1;
        u.bytes += bytes;
        Ok(Admitted::New)
    }

    /// Removes what expired before `now_ms`, and what its sender's nonce on the ledger
    /// (`nonce_of`) has passed.
    pub fn sweep(&mut self, now_ms: u64, mut nonce_of: impl FnMut(&Address) -> u64) {
        let senders: Vec<Address> = self.by_sender.keys().copied().collect();
        for sender in senders {
            self.forget_used(&sender, nonce_of(&sender));
        }
        let expired: Vec<[u8; 32]> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires_ms < now_ms)
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            self.remove(&h);
        }
    }

    /// Drops the sender's entries below `nonce` (committed, or their nonce taken).
    fn forget_used(&mut self, sender: &Address, nonce: u64) {
        let Some(m) = self.by_sender.get(sender) else {
            return;
        };
        let used: Vec<[u8; 32]> = m.range(..nonce).map(|(_, h)| *h).collect();
        for h in used {
            self.remove(&h);
        }
    }

    /// Forgets a transaction admitted but not taken after all (the mempool was full).
    pub fn forget(&mut self, hash: &[u8; 32]) {
        self.remove(hash);
    }

    fn remove(&mut self, hash: &[u8; 32]) {
        let Some(p) = self.pending.remove(hash) else {
            return;
        };
        if let Some(m) = self.by_sender.get_mut(&p.sender) {
            m.remove(&p.nonce);
            if m.is_empty() {
                self.by_sender.remove(&p.sender);
            }
        }
        if let Some(u) = self.by_source.get_mut(&p.source) {
            u.count -= 1;
            u.bytes -= p.bytes;
            if u.count == 0 {
                self.by_source.remove(&p.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountKey;
    use trainmesh_contracts::Call;

    const CHAIN: &str = "admission-test";
    const FEE: Amount = Amount(1_000_000);
    const NOW: u64 = 1_000_000;

    fn account(nonce: u64, balance: u128) -> Account {
        Account {
            balance: Amount(balance),
            nonce,
            ..Account::default()
        }
    }

    fn tx(key: &AccountKey, nonce: u64, amount: u128) -> SignedTransaction {
        let call = Call::Transfer {
            to: AccountKey::from_seed(99).address(),
            amount: Amount(amount),
        };
        key.sign_until(CHAIN, nonce, FEE, NOW + 60_000, call)
    }

    fn admit(
        a: &mut Admission,
        t: &SignedTransaction,
        source: Source,
        acct: &Account,
    ) -> Result<Admitted, &'static str> {
        a.admit(t, t.encode().len(), source, acct, FEE, NOW)
            .map_err(|r| r.code)
    }

    #[test]
    fn duplicates_and_a_second_transaction_for_one_nonce_are_not_proposed() {
        let mut a = Admission::new(AdmissionLimits::default());
        let key = AccountKey::from_seed(1);
        let acct = account(0, 10 * FEE.0);
        let first = tx(&key, 0, 5);
        assert_eq!(
            admit(&mut a, &first, Source::Local, &acct),
            Ok(Admitted::New)
        );
        let relayed = Source::Peer([7; 32]);
        assert_eq!(
            admit(&mut a, &first, relayed, &acct),
            Ok(Admitted::Duplicate)
        );
        assert_eq!(
            admit(&mut a, &tx(&key, 0, 6), relayed, &acct),
            Err("nonce_taken")
        );
        // Resent after the resend interval (its proposal may have been lost): proposed again.
        let later = NOW + AdmissionLimits::default().resend_ms;
        let again = a.admit(&first, 100, relayed, &acct, FEE, later);
        assert_eq!(again, Ok(Admitted::New));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn replays_far_nonces_low_fees_and_expiry_are_refused() {
        let mut a = Admission::new(AdmissionLimits::default());
        let key = AccountKey::from_seed(2);
        let acct = account(5, 100 * FEE.0);
        assert_eq!(
            admit(&mut a, &tx(&key, 4, 1), Source::Local, &acct),
            Err("nonce_replayed")
        );
        assert_eq!(
            admit(&mut a, &tx(&key, 5 + 16, 1), Source::Local, &acct),
            Err("nonce_too_far")
        );
        let call = Call::Transfer {
            to: key.address(),
            amount: Amount(1),
        };
        let cheap = key.sign_until(CHAIN, 5, Amount(FEE.0 - 1), NOW + 1, call.clone());
        assert_eq!(
            admit(&mut a, &cheap, Source::Local, &acct),
            Err("fee_too_low")
        );
        let stale = key.sign_until(CHAIN, 5, FEE, NOW - 1, call.clone());
        assert_eq!(admit(&mut a, &stale, Source::Local, &acct), Err("expired"));
        let forever = key.sign_until(CHAIN, 5, FEE, u64::MAX, call);
        assert_eq!(
            admit(&mut a, &forever, Source::Local, &acct),
            Err("expiry_too_far")
        );
        assert!(a.is_empty());
    }

    #[test]
    fn a_sender_gets_no_more_pending_than_it_can_pay_for_or_its_quota() {
        let mut a = Admission::new(AdmissionLimits::default());
        let key = AccountKey::from_seed(3);
        // Pays for three fees.
        let poor = account(0, 3 * FEE.0);
        for n in 0..3 {
            assert_eq!(
                admit(&mut a, &tx(&key, n, 1), Source::Local, &poor),
                Ok(Admitted::New)
            );
        }
        assert_eq!(
            admit(&mut a, &tx(&key, 3, 1), Source::Local, &poor),
            Err("insufficient_balance")
        );
        let rich = AccountKey::from_seed(4);
        let acct = account(0, 1_000 * FEE.0);
        for n in 0..16 {
            assert_eq!(
                admit(&mut a, &tx(&rich, n, 1), Source::Local, &acct),
                Ok(Admitted::New)
            );
        }
        // The nonce window and the quota are one: the 17th is too far ahead.
        assert_eq!(
            admit(&mut a, &tx(&rich, 16, 1), Source::Local, &acct),
            Err("nonce_too_far")
        );
        // Once the ledger passes nonces, room frees: the sweep drops what committed.
        a.sweep(NOW, |who| if *who == rich.address() { 4 } else { 0 });
        assert_eq!(a.len(), 3 + 12);
        let moved = account(4, 1_000 * FEE.0);
        assert_eq!(
            admit(&mut a, &tx(&rich, 16, 1), Source::Local, &moved),
            Ok(Admitted::New)
        );
    }

    #[test]
    fn one_peer_takes_no_more_than_its_share_and_expired_entries_leave() {
        let limits = AdmissionLimits {
            per_source: 5,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(limits);
        let peer = Source::Peer([1; 32]);
        let acct = account(0, 1_000 * FEE.0);
        for i in 0..5 {
            let t = tx(&AccountKey::from_seed(100 + i), 0, 1);
            assert_eq!(admit(&mut a, &t, peer, &acct), Ok(Admitted::New));
        }
        let sixth = tx(&AccountKey::from_seed(105), 0, 1);
        assert_eq!(admit(&mut a, &sixth, peer, &acct), Err("source_quota"));
        // Another peer, or this node's own gateway, is not held back by it.
        assert_eq!(
            admit(&mut a, &sixth, Source::Peer([2; 32]), &acct),
            Ok(Admitted::New)
        );
        // Everything expires within the lifetime: the sweep empties the mempool's books.
        a.sweep(NOW + 60_001, |_| 0);
        assert!(a.is_empty());
        assert_eq!(
            admit(&mut a, &tx(&AccountKey::from_seed(106), 0, 1), peer, &acct),
            Ok(Admitted::New)
        );
    }
}
