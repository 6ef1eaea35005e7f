//! A per-minute limit as a token bucket refilled continuously: the capacity is the limit, and
//! it refills at the limit per minute, a fraction at a time.
//!
//! Sans-IO and exact: the caller passes the time in, and the level is kept as an integer in
//! units of 1/60,000,000,000 of a token (a minute in nanoseconds), so one nanosecond refills
//! exactly `limit` units and nothing drifts with rounding.

use std::time::{Duration, Instant};

/// Nanoseconds in a minute: the number of level units one token is worth.
const UNITS_PER_TOKEN: u128 = 60_000_000_000;

/// A bucket of `limit` tokens refilled at `limit` per minute.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: u64,
    /// The level at `updated`, in 1/[`UNITS_PER_TOKEN`] token.
    level: u128,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `limit` tokens at `now`.
    pub fn new(limit: u64, now: Instant) -> Self {
        TokenBucket {
            limit,
            level: capacity(limit),
            updated: now,
        }
    }

    /// The per-minute limit, which is also the capacity.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whole tokens in the bucket at `now`.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        (self.level / UNITS_PER_TOKEN) as u64
    }

    /// Whether `cost` tokens are in the bucket at `now`.
    pub fn fits(&mut self, cost: u64, now: Instant) -> bool {
        self.refill(now);
        self.level >= units(cost)
    }

    /// Takes `cost` tokens, or as many as there are; check [`TokenBucket::fits`] first.
    pub fn take(&mut self, cost: u64, now: Instant) {
        self.refill(now);
        self.level = self.level.saturating_sub(units(cost));
    }

    /// How long from `now` until the bucket is full again.
    pub fn until_full(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.until_level(capacity(self.limit))
    }

    /// How long from `now` until `cost` tokens are in the bucket; `None` when `cost` is over the
    /// capacity, so that it never fits.
    pub fn until_fits(&mut self, cost: u64, now: Instant) -> Option<Duration> {
        if cost > self.limit {
            return None;
        }
        self.refill(now);
        Some(self.until_level(units(cost)))
    }

    /// Fills the bucket again, as at the start.
    pub fn reset(&mut self, now: Instant) {
        self.level = capacity(self.limit);
        self.updated = now;
    }

    /// Adds what flowed in since the last update. A `now` before it (callers on other threads
    /// read the clock before waiting for the lock) adds nothing.
    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.updated) else {
            return;
        };
        let added = elapsed.as_nanos().saturating_mul(u128::from(self.limit));
        self.level = self.level.saturating_add(added).min(capacity(self.limit));
        self.updated = now;
    }

    /// The time the current level needs to reach `target`, rounded up to the nanosecond.
    fn until_level(&self, target: u128) -> Duration {
        let missing = target.saturating_sub(self.level);
        if missing == 0 || self.limit == 0 {
            return Duration::ZERO;
        }
        let nanos = missing.div_ceil(u128::from(self.limit));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn units(tokens: u64) -> u128 {
    u128::from(tokens) * UNITS_PER_TOKEN
}

fn capacity(limit: u64) -> u128 {
    units(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_empties() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, start);
        assert_eq!(bucket.remaining(start), 3);
        assert_eq!(bucket.until_full(start), Duration::ZERO);
        for left in [2, 1, 0] {
            assert!(bucket.fits(1, start));
            bucket.take(1, start);
            assert_eq!(bucket.remaining(start), left);
        }
        assert!(!bucket.fits(1, start));
    }

    #[test]
    fn refills_at_the_limit_per_minute() {
        let start = Instant::now();
        // 60 a minute: one a second.
        let mut bucket = TokenBucket::new(60, start);
        bucket.take(60, start);
        assert_eq!(bucket.until_fits(1, start), Some(Duration::from_secs(1)));
        assert_eq!(bucket.until_full(start), Duration::from_secs(60));

        let later = start + Duration::from_millis(2500);
        assert_eq!(bucket.remaining(later), 2);
        assert!(bucket.fits(2, later) && !bucket.fits(3, later));
        assert_eq!(
            bucket.until_fits(3, later),
            Some(Duration::from_millis(500))
        );
        assert_eq!(bucket.until_full(later), Duration::from_millis(57_500));
    }

    #[test]
    fn never_overfills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        bucket.take(4, start);
        assert_eq!(bucket.remaining(start + Duration::from_secs(3600)), 10);
    }

    #[test]
    fn fractional_refill_is_exact() {
        let start = Instant::now();
        // 7 a minute: one every 8.571428... s; seven of those make exactly a minute.
        let mut bucket = TokenBucket::new(7, start);
        bucket.take(7, start);
        let one = bucket.until_fits(1, start).unwrap();
        assert_eq!(one, Duration::from_nanos(8_571_428_572));
        assert_eq!(bucket.remaining(start + one - Duration::from_nanos(1)), 0);
        assert_eq!(bucket.remaining(start + one), 1);
        assert_eq!(bucket.remaining(start + Duration::from_secs(60)), 7);
    }

    #[test]
    fn a_cost_over_the_capacity_never_fits() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, start);
        assert!(!bucket.fits(101, start));
        assert_eq!(bucket.until_fits(101, start), None);
        assert_eq!(bucket.until_fits(100, start), Some(Duration::ZERO));
    }

    #[test]
    fn an_earlier_clock_reading_changes_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(60, start);
        bucket.take(60, start);
        assert_eq!(bucket.remaining(start - Duration::from_secs(1)), 0);
        assert_eq!(bucket.remaining(start + Duration::from_secs(1)), 1);
    }

    #[test]
    fn reset_fills_it() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, start);
        bucket.take(5, start);
        bucket.reset(start);
        assert_eq!(bucket.remaining(start), 5);
    }

    #[test]
    fn a_zero_limit_is_always_empty() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0, start);
        assert!(bucket.fits(0, start));
        assert!(!bucket.fits(1, start));
        assert_eq!(bucket.until_full(start), Duration::ZERO);
    }
}
