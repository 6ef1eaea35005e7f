//! The counters of one principal (a client key or a tenant) and the admission decision over
//! all of its limits: check everything first, change nothing unless everything passes.

use serde::{Deserialize, Serialize};

use super::clock::{Window, SECOND};
use super::gcra::Bucket;
use crate::config::Limits;

/// Requests counted in one calendar window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCount {
    /// The window's start, in seconds since the epoch.
    pub id: u64,
    /// What was counted in it.
    pub used: u64,
}

impl WindowCount {
    /// The count in the window holding `now`: zero once that window has moved on.
    fn current(&self, window: Window, now: u64) -> u64 {
        if self.id == window.bounds(now).0 {
            self.used
        } else {
            0
        }
    }

    fn add(&mut self, window: Window, now: u64, amount: u64) {
        let id = window.bounds(now).0;
        if self.id != id {
            *self = WindowCount { id, used: 0 };
        }
        self.used = self.used.saturating_add(amount);
    }
}

/// Everything a principal has used. All but `in_flight` survives restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Theoretical arrival time of the request-rate bucket (ns since the epoch).
    pub rate_tat: u64,
    /// Requests per calendar window, in [`Window::ALL`] order.
    pub windows: [WindowCount; 4],
    /// Theoretical arrival time of the tokens-per-minute bucket.
    pub tokens_tat: u64,
    /// Tokens counted in the current UTC day.
    pub tokens_day: WindowCount,
    /// Requests in flight now; not persisted.
    #[serde(skip)]
    pub in_flight: u32,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The sustained request rate and burst.
    Rate,
    /// A calendar quota.
    Quota(Window),
    /// Tokens per minute.
    TokensPerMinute,
    /// Tokens per UTC day.
    TokensPerDay,
    /// Requests in flight.
    Concurrency,
}

impl Exceeded {
    /// The contract's error code: calendar quotas are `quota_exceeded`, the rest
    /// `rate_limit_exceeded`.
    pub fn code(self) -> &'static str {
        match self {
            Exceeded::Quota(_) => "quota_exceeded",
            _ => "rate_limit_exceeded",
        }
    }

    /// A short name for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Exceeded::Rate => "rate",
            Exceeded::Quota(Window::Minute) => "quota_minute",
            Exceeded::Quota(Window::Hour) => "quota_hour",
            Exceeded::Quota(Window::Day) => "quota_day",
            Exceeded::Quota(Window::Month) => "quota_month",
            Exceeded::TokensPerMinute => "tokens_per_minute",
            Exceeded::TokensPerDay => "tokens_per_day",
            Exceeded::Concurrency => "concurrency",
        }
    }
}

/// A refusal: the limit that decided it and the true wait until a retry can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused, the one with the longest wait when several did.
    pub exceeded: Exceeded,
    /// Nanoseconds until the same request would pass, as far as time alone decides.
    pub retry_after: u64,
}

/// What an admitted request holds of one principal's counters until it is settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    /// Tokens reserved.
    pub tokens: u64,
    /// When it was admitted (ns since the epoch).
    pub at: u64,
    /// The tokens-per-minute TAT right after the reservation: where it ends in the bucket.
    pub tokens_tat: u64,
}

impl Hold {
    /// A hold of `tokens` admitted at `at` of which nothing has drained yet, for tests.
    #[cfg(test)]
    pub fn fresh(at: u64, tokens: u64) -> Hold {
        Hold {
            tokens,
            at,
            tokens_tat: u64::MAX,
        }
    }
}

/// What passing the check would change, computed without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    rate_tat: Option<u64>,
    tokens_tat: Option<u64>,
    tokens: u64,
}

impl Counters {
    /// Whether one more request reserving `tokens` may pass at `now`. Every limit is
    /// checked; the refusal names the one with the longest wait.
    pub fn check(&self, limits: &Limits, now: u64, tokens: u64) -> Result<Grant, Refusal> {
        let mut refusal: Option<Refusal> = None;
        let mut refuse = |exceeded, retry_after: u64| {
            if refusal.is_none_or(|r| retry_after > r.retry_after) {
                refusal = Some(Refusal {
                    exceeded,
                    retry_after,
                });
            }
        };

        let rate_tat = limits.rate.map(|rate| {
            let bucket = rate_bucket(&rate);
            bucket.admit(self.rate_tat, now, 1).unwrap_or_else(|wait| {
                refuse(Exceeded::Rate, wait);
                self.rate_tat
            })
        });

        for (slot, (window, quota)) in quotas(limits).enumerate() {
            let Some(quota) = quota else { continue };
            if self.windows[slot].current(window, now) >= quota {
                refuse(
                    Exceeded::Quota(window),
                    window.bounds(now).1.saturating_sub(now),
                );
            }
        }

        let tokens_tat = limits.tokens_per_minute.map(|per_minute| {
            let bucket = Bucket::new(per_minute, 60 * SECOND, per_minute);
            // A reservation larger than the whole bucket could never pass: it waits for a
            // full bucket instead, and settling charges what was really used.
            let cost = tokens.min(per_minute);
            bucket
                .admit(self.tokens_tat, now, cost)
                .unwrap_or_else(|wait| {
                    refuse(Exceeded::TokensPerMinute, wait);
                    self.tokens_tat
                })
        });

        if let Some(per_day) = limits.tokens_per_day {
            let used = self.tokens_day.current(Window::Day, now);
            if used.saturating_add(tokens.min(per_day)) > per_day {
                refuse(
                    Exceeded::TokensPerDay,
                    Window::Day.bounds(now).1.saturating_sub(now),
                );
            }
        }

        if let Some(max) = limits.max_concurrent {
            if self.in_flight >= max {
                // Nothing but a finishing request frees a slot; a second is the honest floor.
                refuse(Exceeded::Concurrency, SECOND);
            }
        }

        match refusal {
            Some(refusal) => Err(refusal),
            None => Ok(Grant {
                rate_tat,
                tokens_tat,
                tokens,
            }),
        }
    }

    /// Applies a grant from [`Counters::check`] made at the same `now`.
    pub fn commit(&mut self, limits: &Limits, now: u64, grant: Grant) -> Hold {
        if let Some(tat) = grant.rate_tat {
            self.rate_tat = tat;
        }
        for (slot, (window, quota)) in quotas(limits).enumerate() {
            if quota.is_some() {
                self.windows[slot].add(window, now, 1);
            }
        }
        if let Some(tat) = grant.tokens_tat {
            self.tokens_tat = tat;
        }
        if let Some(per_day) = limits.tokens_per_day {
            // As checked and as settled: a reservation counts at most a whole day.
            self.tokens_day
                .add(Window::Day, now, grant.tokens.min(per_day));
        }
        self.in_flight += 1;
        Hold {
            tokens: grant.tokens,
            at: now,
            tokens_tat: grant.tokens_tat.unwrap_or(0),
        }
    }

    /// Ends a request that held `hold` and used `used` tokens: the difference is charged or
    /// given back, and its concurrency slot freed.
    ///
    /// Only what is still in the buckets comes back. The tokens-per-minute bucket drains in
    /// order of admission, so the reservation occupies the stretch of the bucket's timeline
    /// that ends at the TAT its admission set; whatever of that stretch lies before `now`
    /// has drained already, and refunding it would credit the bucket twice. Likewise a
    /// reservation made on an earlier UTC day is not taken back from today's count.
    pub fn settle(&mut self, limits: &Limits, now: u64, hold: Hold, used: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(per_minute) = limits.tokens_per_minute {
            let interval = Bucket::new(per_minute, 60 * SECOND, per_minute).interval;
            let reserved = hold.tokens.min(per_minute);
            if used >= reserved {
                let extra = (used - reserved).saturating_mul(interval);
                self.tokens_tat = self.tokens_tat.max(now).saturating_add(extra);
            } else {
                let start = hold
                    .tokens_tat
                    .saturating_sub(reserved.saturating_mul(interval));
                let undrained = hold.tokens_tat.saturating_sub(now.max(start)) / interval;
                let refund = (reserved - used).min(undrained);
                self.tokens_tat = self
                    .tokens_tat
                    .saturating_sub(refund.saturating_mul(interval));
            }
        }
        if let Some(per_day) = limits.tokens_per_day {
            let reserved = hold.tokens.min(per_day);
            let today = Window::Day.bounds(now).0;
            let reserved_today = Window::Day.bounds(hold.at).0 == today;
            if reserved_today && self.tokens_day.id == today {
                self.tokens_day.used = self
                    .tokens_day
                    .used
                    .saturating_add(used)
                    .saturating_sub(reserved);
            } else {
                self.tokens_day.add(Window::Day, now, used);
            }
        }
    }

    /// Whether nothing was ever counted: such counters need not be stored.
    pub fn is_fresh(&self) -> bool {
        self == &Counters::default()
    }
}

/// The request budget most likely to run out first, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit's size.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Nanoseconds until it is whole again (the window's end for quotas).
    pub reset: u64,
    /// The policy's window in seconds, for `RateLimit-Policy`.
    pub window_secs: u64,
    /// The policy's name.
    pub name: &'static str,
}

impl Counters {
    /// Every request budget of `limits` as of `now`, tightest first.
    pub fn budgets(&self, limits: &Limits, now: u64) -> impl Iterator<Item = Budget> + '_ {
        let rate = limits.rate.map(|rate| {
            let bucket = rate_bucket(&rate);
            Budget {
                limit: bucket.burst,
                remaining: bucket.remaining(self.rate_tat, now),
                reset: bucket.reset(self.rate_tat, now),
                window_secs: bucket
                    .burst
                    .saturating_mul(bucket.interval)
                    .div_ceil(SECOND)
                    .max(1),
                name: "rate",
            }
        });
        let windows = quotas(limits)
            .enumerate()
            .filter_map(move |(slot, (window, quota))| {
                let quota = quota?;
                Some(Budget {
                    limit: quota,
                    remaining: quota.saturating_sub(self.windows[slot].current(window, now)),
                    reset: window.bounds(now).1.saturating_sub(now),
                    window_secs: window.nominal_secs(),
                    name: window.name(),
                })
            });
        rate.into_iter().chain(windows)
    }

    /// The tokens-per-minute budget, when the limits have one.
    pub fn tokens_budget(&self, limits: &Limits, now: u64) -> Option<Budget> {
        let per_minute = limits.tokens_per_minute?;
        let bucket = Bucket::new(per_minute, 60 * SECOND, per_minute);
        Some(Budget {
            limit: per_minute,
            remaining: bucket.remaining(self.tokens_tat, now),
            reset: bucket.reset(self.tokens_tat, now),
            window_secs: 60,
            name: "tokens",
        })
    }

    /// Tokens counted in the current UTC day, reservations of requests in flight included.
    pub fn tokens_today(&self, now: u64) -> u64 {
        self.tokens_day.current(Window::Day, now)
    }

    /// The tightest request budget: least remaining, then longest reset.
    pub fn tightest(&self, limits: &Limits, now: u64) -> Option<Budget> {
        self.budgets(limits, now)
            .min_by_key(|budget| (budget.remaining, std::cmp::Reverse(budget.reset)))
    }
}

fn rate_bucket(rate: &crate::config::RateLimit) -> Bucket {
    let period = u64::try_from(rate.rate.per.as_nanos()).unwrap_or(u64::MAX);
    Bucket::new(rate.rate.count, period, rate.burst)
}

fn quotas(limits: &Limits) -> impl Iterator<Item = (Window, Option<u64>)> {
    let quota = &limits.quota;
    Window::ALL.into_iter().zip([
        quota.per_minute,
        quota.per_hour,
        quota.per_day,
        quota.per_month,
    ])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Quota, Rate, RateLimit};

    const S: u64 = SECOND;
    const MS: u64 = 1_000_000;
    /// 2026-12-04T16:02:28Z.
    const T0: u64 = 1_796_400_148 * S;
    /// The next UTC minute, hour and day after `T0`.
    const NEXT_MINUTE: u64 = 1_796_400_180 * S;
    const NEXT_HOUR: u64 = 1_796_403_600 * S;
    const NEXT_DAY: u64 = 1_796_428_800 * S;
    /// 2027-01-01T00:00:00Z.
    const NEW_YEAR: u64 = 1_798_761_600 * S;
    /// 2028-03-01T00:00:00Z, after a leap day.
    const MARCH_2028: u64 = 1_835_481_600 * S;

    fn rate(count: u64, per_secs: u64, burst: u64) -> Option<RateLimit> {
        Some(RateLimit {
            rate: Rate {
                count,
                per: Duration::from_secs(per_secs),
            },
            burst,
        })
    }

    fn rated(count: u64, per_secs: u64, burst: u64) -> Limits {
        Limits {
            rate: rate(count, per_secs, burst),
            ..Limits::default()
        }
    }

    fn quota(quota: Quota) -> Limits {
        Limits {
            quota,
            ..Limits::default()
        }
    }

    /// Check then commit, as the quota book does.
    fn admit(c: &mut Counters, limits: &Limits, now: u64, tokens: u64) -> Result<(), Refusal> {
        let grant = c.check(limits, now, tokens)?;
        c.commit(limits, now, grant);
        Ok(())
    }

    fn admit_all(c: &mut Counters, limits: &Limits, now: u64, n: u64) {
        for i in 0..n {
            admit(c, limits, now, 0).unwrap_or_else(|r| panic!("request {i} refused: {r:?}"));
        }
    }

    fn refusal(exceeded: Exceeded, retry_after: u64) -> Result<(), Refusal> {
        Err(Refusal {
            exceeded,
            retry_after,
        })
    }

    #[test]
    fn limits_at_the_edge_of_u64_count_without_overflow() {
        let huge = Limits {
            rate: Some(crate::config::RateLimit {
                rate: crate::config::Rate {
                    count: 1,
                    per: Duration::from_secs(3600),
                },
                burst: u64::MAX,
            }),
            quota: crate::config::Quota {
                per_minute: Some(u64::MAX),
                per_hour: Some(u64::MAX),
                per_day: Some(u64::MAX),
                per_month: Some(u64::MAX),
            },
            tokens_per_minute: Some(u64::MAX),
            tokens_per_day: Some(u64::MAX),
            max_concurrent: Some(u32::MAX),
        };
        let mut counters = Counters::default();
        for now in [T0, T0 + S, u64::MAX / 2] {
            let grant = counters.check(&huge, now, u64::MAX).expect("admitted");
            let hold = counters.commit(&huge, now, grant);
            counters.settle(&huge, now, hold, u64::MAX);
            assert_eq!(counters.budgets(&huge, now).count(), 5);
            assert!(counters.tokens_budget(&huge, now).is_some());
        }
    }

    #[test]
    fn rate_passes_the_burst_then_refuses_with_the_exact_wait() {
        // (count, period in s, burst, the wait after the burst = one interval)
        let table = [
            (5, 1, 5, 200 * MS),
            (10, 1, 10, 100 * MS),
            (2, 1, 1, 500 * MS),
            (3, 1, 1, 333_333_334),
            (1, 60, 1, 60 * S),
            (20, 60, 20, 3 * S),
            (60, 3600, 5, 60 * S),
        ];
        for (count, per, burst, wait) in table {
            let limits = rated(count, per, burst);
            let mut c = Counters::default();
            admit_all(&mut c, &limits, T0, burst);
            let case = format!("{count}/{per}s burst {burst}");
            assert_eq!(
                admit(&mut c, &limits, T0, 0),
                refusal(Exceeded::Rate, wait),
                "{case}"
            );
            assert_eq!(
                admit(&mut c, &limits, T0 + wait - 1, 0),
                refusal(Exceeded::Rate, 1),
                "{case}"
            );
            assert_eq!(admit(&mut c, &limits, T0 + wait, 0), Ok(()), "{case}");
            assert_eq!(
                admit(&mut c, &limits, T0 + wait, 0),
                refusal(Exceeded::Rate, wait),
                "{case}"
            );
        }
    }

    #[test]
    fn an_idle_bucket_refills_only_to_its_burst() {
        let limits = rated(10, 1, 10);
        let mut c = Counters::default();
        admit_all(&mut c, &limits, T0, 10);
        // An hour idle gives back ten, never more.
        let later = T0 + 3600 * S;
        admit_all(&mut c, &limits, later, 10);
        assert_eq!(
            admit(&mut c, &limits, later, 0),
            refusal(Exceeded::Rate, 100 * MS)
        );
    }

    #[test]
    fn calendar_quotas_reopen_exactly_at_the_next_window() {
        // (quota, filled at, refused until)
        let table = [
            (
                Quota {
                    per_minute: Some(3),
                    ..Quota::default()
                },
                T0,
                NEXT_MINUTE,
            ),
            (
                Quota {
                    per_minute: Some(3),
                    ..Quota::default()
                },
                T0 + 500 * MS,
                NEXT_MINUTE,
            ),
            (
                Quota {
                    per_hour: Some(2),
                    ..Quota::default()
                },
                T0,
                NEXT_HOUR,
            ),
            (
                Quota {
                    per_day: Some(1),
                    ..Quota::default()
                },
                T0,
                NEXT_DAY,
            ),
            // The last millisecond of December: January starts a new month.
            (
                Quota {
                    per_month: Some(2),
                    ..Quota::default()
                },
                NEW_YEAR - MS,
                NEW_YEAR,
            ),
            // 2028-02-29T23:59:30Z: a leap February ends 30 s later.
            (
                Quota {
                    per_month: Some(1),
                    ..Quota::default()
                },
                MARCH_2028 - 30 * S,
                MARCH_2028,
            ),
        ];
        for (q, at, reopens) in table {
            let limits = quota(q);
            let size = [q.per_minute, q.per_hour, q.per_day, q.per_month]
                .into_iter()
                .flatten()
                .next()
                .unwrap();
            let window = match q {
                Quota {
                    per_minute: Some(_),
                    ..
                } => Window::Minute,
                Quota {
                    per_hour: Some(_), ..
                } => Window::Hour,
                Quota {
                    per_day: Some(_), ..
                } => Window::Day,
                _ => Window::Month,
            };
            let mut c = Counters::default();
            admit_all(&mut c, &limits, at, size);
            let exceeded = Exceeded::Quota(window);
            assert_eq!(
                admit(&mut c, &limits, at, 0),
                refusal(exceeded, reopens - at),
                "{q:?}"
            );
            assert_eq!(
                admit(&mut c, &limits, reopens - 1, 0),
                refusal(exceeded, 1),
                "{q:?}"
            );
            // The new window counts from zero: the whole quota again.
            admit_all(&mut c, &limits, reopens, size);
            assert!(admit(&mut c, &limits, reopens, 0).is_err(), "{q:?}");
            let budget = c.tightest(&limits, reopens).unwrap();
            assert_eq!((budget.limit, budget.remaining), (size, 0), "{q:?}");
        }
    }

    #[test]
    fn a_refused_request_changes_nothing() {
        // (limits, tokens of the admitted request, later, tokens tried, the limit that refuses)
        let table = [
            // The rate refuses while the hourly quota has room.
            (
                Limits {
                    rate: rate(1, 1, 1),
                    quota: Quota {
                        per_hour: Some(5),
                        ..Quota::default()
                    },
                    ..Limits::default()
                },
                0,
                0,
                0,
                Exceeded::Rate,
            ),
            // The minute quota refuses while the rate has room.
            (
                Limits {
                    rate: rate(10, 1, 10),
                    quota: Quota {
                        per_minute: Some(1),
                        per_day: Some(100),
                        ..Quota::default()
                    },
                    ..Limits::default()
                },
                0,
                2 * S,
                0,
                Exceeded::Quota(Window::Minute),
            ),
            // Tokens per minute refuse while rate and quota have room.
            (
                Limits {
                    rate: rate(10, 1, 10),
                    quota: Quota {
                        per_hour: Some(5),
                        ..Quota::default()
                    },
                    tokens_per_minute: Some(100),
                    tokens_per_day: Some(10_000),
                    ..Limits::default()
                },
                80,
                0,
                50,
                Exceeded::TokensPerMinute,
            ),
            // Tokens per day refuse while the minute bucket has room.
            (
                Limits {
                    tokens_per_minute: Some(1000),
                    tokens_per_day: Some(100),
                    quota: Quota {
                        per_hour: Some(5),
                        ..Quota::default()
                    },
                    ..Limits::default()
                },
                80,
                0,
                50,
                Exceeded::TokensPerDay,
            ),
            // Concurrency refuses while everything else has room.
            (
                Limits {
                    rate: rate(10, 1, 10),
                    quota: Quota {
                        per_hour: Some(5),
                        ..Quota::default()
                    },
                    tokens_per_minute: Some(100),
                    max_concurrent: Some(1),
                    ..Limits::default()
                },
                10,
                0,
                10,
                Exceeded::Concurrency,
            ),
        ];
        for (limits, first, later, tokens, exceeded) in table {
            let mut c = Counters::default();
            admit(&mut c, &limits, T0, first).expect("first request");
            let before = c.clone();
            let refused = admit(&mut c, &limits, T0 + later, tokens).unwrap_err();
            assert_eq!(refused.exceeded, exceeded, "{limits:?}");
            assert_eq!(c, before, "{exceeded:?} changed the counters");
        }
    }

    #[test]
    fn the_refusal_names_the_longest_wait() {
        // 1/m: 60 s; the minute quota reopens in 32 s.
        let limits = Limits {
            rate: rate(1, 60, 1),
            quota: Quota {
                per_minute: Some(1),
                ..Quota::default()
            },
            ..Limits::default()
        };
        let mut c = Counters::default();
        admit_all(&mut c, &limits, T0, 1);
        assert_eq!(
            admit(&mut c, &limits, T0, 0),
            refusal(Exceeded::Rate, 60 * S)
        );

        // 1/s: 1 s; the hour quota reopens at 17:00.
        let limits = Limits {
            rate: rate(1, 1, 1),
            quota: Quota {
                per_hour: Some(1),
                ..Quota::default()
            },
            ..Limits::default()
        };
        let mut c = Counters::default();
        admit_all(&mut c, &limits, T0, 1);
        assert_eq!(
            admit(&mut c, &limits, T0, 0),
            refusal(Exceeded::Quota(Window::Hour), NEXT_HOUR - T0)
        );
    }

    #[test]
    fn tokens_per_minute_are_reserved_then_settled() {
        // 100 tokens a minute: one token every 600 ms.
        let limits = Limits {
            tokens_per_minute: Some(100),
            ..Limits::default()
        };
        let remaining = |c: &Counters| c.tokens_budget(&limits, T0).unwrap().remaining;
        let mut c = Counters::default();
        assert_eq!(remaining(&c), 100);

        admit(&mut c, &limits, T0, 60).unwrap();
        assert_eq!(remaining(&c), 40);
        // 60 more would be 20 over: they wait for 20 tokens to refill.
        assert_eq!(
            admit(&mut c, &limits, T0, 60),
            refusal(Exceeded::TokensPerMinute, 20 * 600 * MS)
        );

        // The request used 10 of its 60: the 50 come back, and the same request now fits.
        c.settle(&limits, T0, Hold::fresh(T0, 60), 10);
        assert_eq!(remaining(&c), 90);
        admit(&mut c, &limits, T0, 60).unwrap();
        assert_eq!(remaining(&c), 30);

        // It used 160 of its 60: the extra 100 become a debt; 170 are spent in all, so the
        // next token is 71 refills (42.6 s) away.
        c.settle(&limits, T0, Hold::fresh(T0, 60), 160);
        assert_eq!(remaining(&c), 0);
        assert_eq!(
            admit(&mut c, &limits, T0, 1),
            refusal(Exceeded::TokensPerMinute, 42_600 * MS)
        );
        assert_eq!(admit(&mut c, &limits, T0 + 42_600 * MS, 1), Ok(()));
        assert_eq!(c.in_flight, 1);
    }

    #[test]
    fn a_reservation_above_tokens_per_minute_waits_for_a_full_bucket() {
        let limits = Limits {
            tokens_per_minute: Some(100),
            ..Limits::default()
        };
        let mut c = Counters::default();
        // 500 could never fit: it passes on a full bucket and takes all of it.
        admit(&mut c, &limits, T0, 500).unwrap();
        assert_eq!(c.tokens_budget(&limits, T0).unwrap().remaining, 0);
        assert_eq!(
            admit(&mut c, &limits, T0, 500),
            refusal(Exceeded::TokensPerMinute, 60 * S)
        );
        // It used 20: 80 come back.
        c.settle(&limits, T0, Hold::fresh(T0, 500), 20);
        assert_eq!(c.tokens_budget(&limits, T0).unwrap().remaining, 80);
    }

    #[test]
    fn tokens_per_day_count_to_the_end_of_the_utc_day() {
        let limits = Limits {
            tokens_per_day: Some(1000),
            ..Limits::default()
        };
        let mut c = Counters::default();
        admit(&mut c, &limits, T0, 600).unwrap();
        assert_eq!(
            admit(&mut c, &limits, T0, 600),
            refusal(Exceeded::TokensPerDay, NEXT_DAY - T0)
        );
        c.settle(&limits, T0, Hold::fresh(T0, 600), 100);
        assert_eq!(c.tokens_day.used, 100);
        admit(&mut c, &limits, T0, 600).unwrap();
        assert_eq!(
            admit(&mut c, &limits, T0, 301),
            refusal(Exceeded::TokensPerDay, NEXT_DAY - T0)
        );
        admit(&mut c, &limits, T0, 300).unwrap();
        assert_eq!(c.tokens_day.used, 1000);

        // The next day starts from zero; a request reserved yesterday and settled today
        // charges today what it used.
        c.settle(&limits, NEXT_DAY, Hold::fresh(T0, 300), 250);
        assert_eq!(
            c.tokens_day,
            WindowCount {
                id: NEXT_DAY / S,
                used: 250
            }
        );
        admit(&mut c, &limits, NEXT_DAY, 750).unwrap();
        assert!(admit(&mut c, &limits, NEXT_DAY, 1).is_err());
    }

    #[test]
    fn a_reservation_above_tokens_per_day_is_settled_to_what_was_used() {
        let limits = Limits {
            tokens_per_day: Some(1000),
            ..Limits::default()
        };
        let mut c = Counters::default();
        // 5000 could never fit a day of 1000: on an unused day it passes, holding all 1000.
        admit(&mut c, &limits, T0, 5000).unwrap();
        assert_eq!(
            admit(&mut c, &limits, T0, 1),
            refusal(Exceeded::TokensPerDay, NEXT_DAY - T0)
        );
        // It used 100: that is what the day is charged, and 900 remain.
        c.settle(&limits, T0, Hold::fresh(T0, 5000), 100);
        assert_eq!(c.tokens_day.used, 100);
        admit(&mut c, &limits, T0, 900).unwrap();
    }

    #[test]
    fn concurrency_is_freed_by_settling() {
        let limits = Limits {
            max_concurrent: Some(2),
            ..Limits::default()
        };
        let mut c = Counters::default();
        admit_all(&mut c, &limits, T0, 2);
        assert_eq!(
            admit(&mut c, &limits, T0, 0),
            refusal(Exceeded::Concurrency, S)
        );
        c.settle(&limits, T0, Hold::fresh(T0, 0), 0);
        assert_eq!(c.in_flight, 1);
        admit(&mut c, &limits, T0, 0).unwrap();
        assert_eq!(c.in_flight, 2);
        for _ in 0..3 {
            c.settle(&limits, T0, Hold::fresh(T0, 0), 0);
        }
        assert_eq!(c.in_flight, 0, "settling never goes below zero");
    }

    #[test]
    fn the_tightest_budget_is_the_least_remaining() {
        let limits = |rate_limit, per_minute, per_hour| Limits {
            rate: rate_limit,
            quota: Quota {
                per_minute,
                per_hour,
                per_day: Some(1000),
                ..Quota::default()
            },
            ..Limits::default()
        };
        // (limits, requests at T0, (name, limit, remaining, reset, window))
        let table = [
            // The hour quota has 3 left, the rate 8.
            (
                limits(rate(10, 1, 10), None, Some(5)),
                2,
                ("hour", 5, 3, NEXT_HOUR - T0, 3600),
            ),
            // The rate has none left, the hour quota 98.
            (
                limits(rate(2, 1, 2), None, Some(100)),
                2,
                ("rate", 2, 0, S, 1),
            ),
            // 1/m: one request empties it for a minute.
            (
                limits(rate(1, 60, 1), None, None),
                1,
                ("rate", 1, 0, 60 * S, 60),
            ),
            // Rate and minute quota both have 7 left: the longer reset is the tighter.
            (
                limits(rate(10, 1, 10), Some(10), None),
                3,
                ("minute", 10, 7, NEXT_MINUTE - T0, 60),
            ),
            // Only the day quota.
            (
                limits(None, None, None),
                0,
                ("day", 1000, 1000, NEXT_DAY - T0, 86_400),
            ),
        ];
        for (limits, n, (name, limit, remaining, reset, window_secs)) in table {
            let mut c = Counters::default();
            admit_all(&mut c, &limits, T0, n);
            let budget = c.tightest(&limits, T0).unwrap();
            assert_eq!(
                budget,
                Budget {
                    limit,
                    remaining,
                    reset,
                    window_secs,
                    name
                },
                "{limits:?}"
            );
            assert_eq!(
                c.budgets(&limits, T0).count(),
                1 + limits.rate.iter().count()
                    + [limits.quota.per_minute, limits.quota.per_hour]
                        .iter()
                        .flatten()
                        .count()
            );
        }
        assert_eq!(Counters::default().tightest(&Limits::default(), T0), None);
    }

    #[test]
    fn a_refund_never_returns_tokens_the_bucket_already_drained() {
        let limits = Limits {
            tokens_per_minute: Some(100),
            ..Limits::default()
        };
        let mut c = Counters::default();
        let first = c.commit(&limits, T0, c.check(&limits, T0, 100).unwrap());

        // A minute later the first reservation has drained; a second one takes the bucket.
        let later = T0 + 60 * S;
        let grant = c.check(&limits, later, 100).unwrap();
        c.commit(&limits, later, grant);

        // The first request ends now having used nothing: its 100 tokens are long gone from
        // the bucket, so nothing comes back and the second request's charge stands.
        c.settle(&limits, later + S, first, 0);
        assert_eq!(
            c.check(&limits, later + S, 100).map(|_| ()),
            Err(Refusal {
                exceeded: Exceeded::TokensPerMinute,
                retry_after: 59 * S
            })
        );
    }

    #[test]
    fn a_reservation_from_yesterday_is_not_taken_back_from_today() {
        let limits = Limits {
            tokens_per_day: Some(1000),
            ..Limits::default()
        };
        let mut c = Counters::default();
        let yesterday = c.commit(&limits, T0, c.check(&limits, T0, 300).unwrap());
        let grant = c.check(&limits, NEXT_DAY, 300).unwrap();
        c.commit(&limits, NEXT_DAY, grant);

        // Yesterday's request ends today: today counts its usage on top of today's
        // reservation, and does not lose yesterday's 300.
        c.settle(&limits, NEXT_DAY, yesterday, 250);
        assert_eq!(
            c.tokens_day,
            WindowCount {
                id: NEXT_DAY / S,
                used: 550
            }
        );
    }
}
