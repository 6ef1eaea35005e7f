//! The generic cell rate algorithm: a token bucket kept as one timestamp, the theoretical
//! arrival time (TAT), so the wait until the next admission is exact (RFC-free; ITU-T I.371).
//!
//! A bucket of `burst` cells refilled one cell every `interval` admits a request costing
//! `cost` cells at `now` when `max(TAT, now) + cost·interval − now ≤ burst·interval`.

/// The admission test of a bucket, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Time to refill one cell.
    pub interval: u64,
    /// Cells the bucket holds.
    pub burst: u64,
}

impl Bucket {
    /// A bucket refilling `count` cells every `period` nanoseconds and holding `burst`.
    /// The interval is rounded up, so rounding can only make the bucket stricter.
    pub fn new(count: u64, period: u64, burst: u64) -> Bucket {
        let count = count.max(1);
        Bucket {
            interval: period.div_ceil(count).max(1),
            burst: burst.max(1),
        }
    }

    /// The TAT after admitting `cost` cells at `now`, or the nanoseconds until that would
    /// be allowed.
    pub fn admit(&self, tat: u64, now: u64, cost: u64) -> Result<u64, u64> {
        let new_tat = tat
            .max(now)
            .saturating_add(cost.saturating_mul(self.interval));
        let capacity = self.burst.saturating_mul(self.interval);
        let ahead = new_tat - now;
        if ahead <= capacity {
            Ok(new_tat)
        } else {
            Err(ahead - capacity)
        }
    }

    /// Cells that could be admitted at `now`.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let used = tat.saturating_sub(now).div_ceil(self.interval);
        self.burst.saturating_sub(used)
    }

    /// Nanoseconds until the bucket is full again.
    pub fn reset(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_steady_rate() {
        // 5 per second, burst 5: five pass at once, the sixth waits exactly 200 ms.
        let bucket = Bucket::new(5, S, 5);
        let mut tat = 0;
        let now = 100 * S;
        for _ in 0..5 {
            tat = bucket.admit(tat, now, 1).expect("within burst");
        }
        assert_eq!(bucket.admit(tat, now, 1), Err(200_000_000));
        assert_eq!(bucket.remaining(tat, now), 0);
        assert_eq!(bucket.reset(tat, now), S);
        // 200 ms later exactly one more passes.
        let later = now + 200_000_000;
        tat = bucket.admit(tat, later, 1).expect("refilled one");
        assert!(bucket.admit(tat, later, 1).is_err());
    }

    #[test]
    fn refused_admission_leaves_state_alone() {
        let bucket = Bucket::new(1, 60 * S, 1);
        let tat = bucket.admit(0, S, 1).unwrap();
        assert_eq!(bucket.admit(tat, S, 1), Err(60 * S));
        assert_eq!(bucket.admit(tat, 61 * S, 1), Ok(121 * S));
    }

    #[test]
    fn costs_of_many_cells() {
        // 1000 tokens per minute: a request of 600 passes, a second of 600 waits for 200.
        let bucket = Bucket::new(1000, 60 * S, 1000);
        let tat = bucket.admit(0, 0, 600).unwrap();
        let wait = bucket.admit(tat, 0, 600).unwrap_err();
        assert_eq!(wait, 200 * bucket.interval);
        assert_eq!(bucket.remaining(tat, 0), 400);
    }

    #[test]
    fn interval_rounds_up() {
        let bucket = Bucket::new(3, S, 1);
        assert_eq!(bucket.interval, 333_333_334);
    }
}
