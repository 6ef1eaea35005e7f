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
                refuse(Exceeded::Quota(window), window.bounds(now).1 - now);
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
                refuse(Exceeded::TokensPerDay, Window::Day.bounds(now).1 - now);
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
    pub fn commit(&mut self, limits: &Limits, now: u64, grant: Grant) {
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
        if limits.tokens_per_day.is_some() {
            self.tokens_day.add(Window::Day, now, grant.tokens);
        }
        self.in_flight += 1;
    }

    /// Ends a request that reserved `reserved` tokens and used `used`: the difference is
    /// charged or given back, and its concurrency slot freed.
    pub fn settle(&mut self, limits: &Limits, now: u64, reserved: u64, used: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(per_minute) = limits.tokens_per_minute {
            let interval = Bucket::new(per_minute, 60 * SECOND, per_minute).interval;
            let reserved = reserved.min(per_minute);
            if used >= reserved {
                let extra = (used - reserved).saturating_mul(interval);
                self.tokens_tat = self.tokens_tat.max(now).saturating_add(extra);
            } else {
                self.tokens_tat = self
                    .tokens_tat
                    .saturating_sub((reserved - used).saturating_mul(interval));
            }
        }
        if let Some(per_day) = limits.tokens_per_day {
            let reserved = reserved.min(per_day);
            if self.tokens_day.id == Window::Day.bounds(now).0 {
                self.tokens_day.used = (self.tokens_day.used + used).saturating_sub(reserved);
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
                window_secs: (bucket.burst * bucket.interval).div_ceil(SECOND).max(1),
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
                    reset: window.bounds(now).1 - now,
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
