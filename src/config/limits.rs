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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Sustained rate, from `rate = "n/s" | "n/m" | "n/h"`.
    pub rate: Rate,
    /// Requests that may pass at once, at least 1. Default: the rate's count when the rate
    /// is per second (`"5/s"` gives 5), otherwise 1.
    pub burst: u64,
}

/// Request quotas over calendar windows in UTC; each is at least 1 when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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
    use super::super::tests::{parse, problems, GATEWAY};
    use super::*;

    const TENANT: &str = "[[tenant]]\nname = \"t\"\n";
    const KEY: &str = "[[client_key]]\nid = \"ck\"\nsecret = \"a\"\n";

    #[test]
    fn tenant_limits_are_read() {
        let text = format!(
            "{GATEWAY}{TENANT}rate = \"600/m\"\nburst = 20\n\
             quota = {{ per_hour = 5000, per_month = 1000000 }}\n\
             tokens_per_minute = 90000\ntokens_per_day = 5000000\nmax_concurrent = 32\n\
             [[tenant]]\nname = \"free\"\n"
        );
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let want = Limits {
            rate: Some(RateLimit {
                rate: Rate {
                    count: 600,
                    per: Duration::from_secs(60),
                },
                burst: 20,
            }),
            quota: Quota {
                per_hour: Some(5000),
                per_month: Some(1_000_000),
                ..Quota::default()
            },
            tokens_per_minute: Some(90_000),
            tokens_per_day: Some(5_000_000),
            max_concurrent: Some(32),
        };
        assert_eq!(config.tenants[0].limits, want);
        assert!(config.tenants[1].limits.is_unlimited());

        // The default burst follows the same rule as a client key's.
        let text = format!("{GATEWAY}{TENANT}rate = \"7/s\"\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.tenants[0].limits.rate.map(|r| r.burst), Some(7));
    }

    /// Bad limit keys; the line among them that holds the problem; its column and message.
    const BAD_LIMITS: &[(&str, usize, &str)] = &[
        (
            "rate = \"5 per second\"",
            1,
            "8: rate: invalid rate \"5 per second\";",
        ),
        ("rate = \"0/m\"", 1, "8: rate: rate \"0/m\" allows nothing;"),
        ("burst = 3", 1, "9: burst needs a rate"),
        (
            "rate = \"1/s\"\nburst = 0",
            2,
            "9: burst must be at least 1, not 0",
        ),
        (
            "quota = { per_day = 0 }",
            1,
            "21: per_day must be at least 1, not 0",
        ),
        (
            "quota = { per_week = 1 }",
            1,
            "11: unknown field `per_week`, expected one of",
        ),
        (
            "tokens_per_minute = -1",
            1,
            "21: tokens_per_minute must be at least 1, not -1",
        ),
        (
            "tokens_per_day = 0",
            1,
            "18: tokens_per_day must be at least 1, not 0",
        ),
        (
            "max_concurrent = 4294967296",
            1,
            "18: max_concurrent must be from 1 to 4294967295, not 4294967296",
        ),
    ];

    #[test]
    fn bad_limits_point_at_the_value_in_a_tenant_or_a_key() {
        // The tenant's limit keys start on line 5, the client key's on line 6.
        for &(lines, at, want) in BAD_LIMITS {
            let tenant = problems(&format!("{GATEWAY}{TENANT}{lines}\n"));
            let key = problems(&format!("{GATEWAY}{KEY}{lines}\n"));
            let want_tenant = format!("c.toml:{}:{want}", 4 + at);
            let want_key = format!("c.toml:{}:{want}", 5 + at);
            assert!(tenant.starts_with(&want_tenant), "{lines}\n got: {tenant}");
            assert!(key.starts_with(&want_key), "{lines}\n got: {key}");
            assert_eq!(tenant.lines().count(), 1, "{tenant}");
            assert_eq!(key.lines().count(), 1, "{key}");
        }
    }

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
