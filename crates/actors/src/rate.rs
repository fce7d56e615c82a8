//! Token buckets, one per peer, with the time passed in: how much a peer may take of a service
//! (bytes of sync served) per second, with a burst.

use std::collections::BTreeMap;
use std::time::Instant;

/// Up to `capacity` tokens, refilled at `per_second`; starts full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: u64,
    per_second: u64,
    /// In thousandths of a token, so that refill is exact per millisecond.
    milli: u64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u64, per_second: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity,
            per_second,
            milli: capacity.saturating_mul(1_000),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed_ms = now.saturating_duration_since(self.updated).as_millis() as u64;
        // Thousandths of a token per millisecond = tokens per second.
        self.milli = self
            .milli
            .saturating_add(elapsed_ms.saturating_mul(self.per_second))
            .min(self.capacity.saturating_mul(1_000));
        self.updated = self.updated.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.milli / 1_000
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let need = n.saturating_mul(1_000);
        if self.milli < need {
            return false;
        }
        self.milli -= need;
        true
    }

    /// Takes `n` tokens, or all there are (what was served is spent, even past the balance).
    pub fn spend(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.milli = self.milli.saturating_sub(n.saturating_mul(1_000));
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.milli >= self.capacity.saturating_mul(1_000)
    }
}

/// One bucket per key, at most `keys_max` of them (a full bucket is forgotten first: it is the
/// same as a new one).
#[derive(Debug)]
pub struct RateLimiter<K> {
    capacity: u64,
    per_second: u64,
    keys_max: usize,
    buckets: BTreeMap<K, TokenBucket>,
}

impl<K: Ord + Clone> RateLimiter<K> {
    pub fn new(capacity: u64, per_second: u64, keys_max: usize) -> Self {
        RateLimiter {
            capacity,
            per_second,
            keys_max,
            buckets: BTreeMap::new(),
        }
    }

    /// The bucket of `key`; `None` when every slot holds a peer that is still drawing down its
    /// bucket (then the newcomer waits, the others keep their share).
    pub fn bucket(&mut self, key: &K, now: Instant) -> Option<&mut TokenBucket> {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.keys_max {
                self.buckets.retain(|_, b| !b.is_full(now));
            }
            if self.buckets.len() >= self.keys_max {
                return None;
            }
            self.buckets.insert(
                key.clone(),
                TokenBucket::new(self.capacity, self.per_second, now),
            );
        }
        self.buckets.get_mut(key)
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 5, start);
        for i in 0..10 {
            assert!(b.try_take(1, start), "token {i} of the burst");
        }
        assert!(!b.try_take(1, start));
        // 5 per second: one more every 200 ms, never more than the capacity.
        assert!(!b.try_take(1, at(start, 199)));
        assert!(b.try_take(1, at(start, 200)));
        assert_eq!(b.available(at(start, 1_200)), 5);
        assert_eq!(b.available(at(start, 60_000)), 10);
        // Spending past the balance empties it; it refills from zero.
        b.spend(1_000, at(start, 60_000));
        assert_eq!(b.available(at(start, 60_000)), 0);
        assert_eq!(b.available(at(start, 60_400)), 2);
        // A clock read out of order does not mint tokens.
        assert_eq!(b.available(at(start, 1_000)), 2);
    }

    #[test]
    fn over_a_minute_a_peer_gets_its_rate_and_no_more() {
        let start = Instant::now();
        let mut limits = RateLimiter::new(100, 50, 16);
        let (mut greedy, mut modest) = (0u64, 0u64);
        for ms in 0..60_000 {
            let now = at(start, ms);
            // The greedy peer asks every millisecond, the modest one every 100 ms.
            if limits.bucket(&1u8, now).unwrap().try_take(1, now) {
                greedy += 1;
            }
            if ms % 100 == 0 && limits.bucket(&2u8, now).unwrap().try_take(1, now) {
                modest += 1;
            }
        }
        // Burst + 50/s × 60 s (the last millisecond's token not yet whole).
        assert!((3_098..=3_100).contains(&greedy), "greedy got {greedy}");
        assert_eq!(modest, 600);
    }

    #[test]
    fn slots_go_to_newcomers_only_when_someone_is_idle() {
        let start = Instant::now();
        let mut limits = RateLimiter::new(10, 1, 2);
        limits.bucket(&1u8, start).unwrap().spend(5, start);
        limits.bucket(&2u8, start).unwrap().spend(5, start);
        assert!(limits.bucket(&3u8, start).is_none());
        // Peer 1 refills (idle for 5 s): its slot may go.
        limits
            .bucket(&2u8, at(start, 1_000))
            .unwrap()
            .spend(5, at(start, 1_000));
        assert!(limits.bucket(&3u8, at(start, 5_000)).is_some());
        assert_eq!(limits.tracked(), 2);
    }
}
