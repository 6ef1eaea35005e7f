//! The limits a client key or a tenant carries: rate, calendar quotas, tokens, concurrency.
//!
//! `[[client_key]]` and `[[tenant]]` accept the same limit keys and validate them with the one
//! routine here, so a limit means the same thing, and is checked the same way, wherever it is
//! written. Only values live here; counting requests against them is the shards' job.

use std::time::Duration;

use super::raw::{RawLimits, RawQuota};
use super::validate::{opt_int, Ctx};
use super::value::{self, Rate};

/// What one client key, or one tenant across all its keys together, may use.
///
/// The default is no limit at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Sustained request rate and bucket size. Default: no rate limit.
    pub rate: Option<RateLimit>,
    /// Calendar-window request quotas (UTC). Default: none.
    pub quota: Quota,
    /// LLM tokens per minute, from the upstream's reported usage. Default: no limit.
    pub tokens_per_minute: Option<u64>,
    /// LLM tokens per UTC day. Default: no limit.
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once. Default: no limit.
    pub max_concurrent: Option<u32>,
}

/// A token bucket: `rate` refills it, `burst` is its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, from `rate = "n/s" | "n/m" | "n/h"`.
    pub rate: Rate,
    /// Requests that may pass at once, at least 1. Default: the rate's count when the rate
    /// is per second (`"5/s"` gives 5), otherwise 1.
    pub burst: u64,
}

/// Request quotas over calendar windows in UTC; each is at least 1 when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Requests per calendar minute. Default: none.
    pub per_minute: Option<u64>,
    /// Requests per calendar hour. Default: none.
    pub per_hour: Option<u64>,
    /// Requests per calendar day (UTC). Default: none.
    pub per_day: Option<u64>,
    /// Requests per calendar month (UTC). Default: none.
    pub per_month: Option<u64>,
}

impl Limits {
    /// True when no limit is set, so admission need not count anything for this holder.
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// Validates the limit keys of one `[[client_key]]` or `[[tenant]]` table. Each problem points
/// at the value written, wherever the table is.
pub(crate) fn limits(raw: RawLimits<'_>, cx: &mut Ctx<'_, '_>) -> Limits {
    Limits {
        rate: rate_limit(&raw, cx),
        quota: raw.quota.as_ref().map(|q| quota(q, cx)).unwrap_or_default(),
        tokens_per_minute: opt_int(raw.tokens_per_minute, "tokens_per_minute", 1..=i64::MAX, cx),
        tokens_per_day: opt_int(raw.tokens_per_day, "tokens_per_day", 1..=i64::MAX, cx),
        max_concurrent: opt_int(
            raw.max_concurrent,
            "max_concurrent",
            1..=u32::MAX.into(),
            cx,
        ),
    }
}

fn rate_limit(raw: &RawLimits<'_>, cx: &mut Ctx<'_, '_>) -> Option<RateLimit> {
    let burst: Option<u64> = opt_int(raw.burst, "burst", 1..=i64::MAX, cx);
    let Some(v) = raw.rate else {
        if let Some(b) = raw.burst {
            cx.problems.at(b.span(), "burst needs a rate");
        }
        return None;
    };

    let rate = value::parse_rate(v.get_ref())
        .map_err(|err| cx.problems.at(v.span(), format!("rate: {err}")))
        .ok()?;
    let default_burst = if rate.per == Duration::from_secs(1) {
        rate.count.max(1)
    } else {
        1
    };
    Some(RateLimit {
        rate,
        burst: burst.unwrap_or(default_burst),
    })
}

fn quota(raw: &RawQuota, cx: &mut Ctx<'_, '_>) -> Quota {
    Quota {
        per_minute: opt_int(&raw.per_minute, "per_minute", 1..=i64::MAX, cx),
        per_hour: opt_int(&raw.per_hour, "per_hour", 1..=i64::MAX, cx),
        per_day: opt_int(&raw.per_day, "per_day", 1..=i64::MAX, cx),
        per_month: opt_int(&raw.per_month, "per_month", 1..=i64::MAX, cx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_one_limit_makes_limits_limited() {
        assert!(Limits::default().is_unlimited());
        let one_each = [
            Limits {
                rate: Some(RateLimit {
                    rate: Rate {
                        count: 1,
                        per: Duration::from_secs(1),
                    },
                    burst: 1,
                }),
                ..Limits::default()
            },
            Limits {
                quota: Quota {
                    per_month: Some(1),
                    ..Quota::default()
                },
                ..Limits::default()
            },
            Limits {
                tokens_per_minute: Some(1),
                ..Limits::default()
            },
            Limits {
                tokens_per_day: Some(1),
                ..Limits::default()
            },
            Limits {
                max_concurrent: Some(1),
                ..Limits::default()
            },
        ];
        for limits in one_each {
            assert!(!limits.is_unlimited(), "{limits:?}");
        }
    }
}
