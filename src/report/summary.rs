//! The report's result: plain values ready for a table or JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::forecast::{timestamp, Basis, Forecast, RECENT_MS};
use super::{Report, Tally};
use crate::quota::Window;

/// How many routes the report lists, busiest first.
pub const TOP_ROUTES: usize = 10;

/// Everything `keygate report` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Lines skipped because they were not access log records.
    pub malformed_lines: u64,
    /// The earliest record's time (RFC 3339), if any.
    pub first: Option<String>,
    /// The latest record's time: the instant forecasts are made for.
    pub last: Option<String>,
    /// Every record together.
    pub total: Stats,
    /// By tenant, in name order; records of keys without a tenant (or without a key) last.
    pub tenants: Vec<TenantRow>,
    /// By client key, in id order; records without a recognised key last.
    pub keys: Vec<KeyRow>,
    /// The [`TOP_ROUTES`] routes with the most requests.
    pub top_routes: Vec<RouteRow>,
    /// Calendar quota forecasts, by key then window; empty without a config.
    pub forecasts: Vec<Forecast>,
}

/// A tenant's records.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    /// The tenant; `None` for records without one.
    pub tenant: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub stats: Stats,
}

/// A client key's records.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    /// The key's id; `None` for records without a recognised key.
    pub key_id: Option<String>,
    /// The key's tenant, if any.
    pub tenant: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub stats: Stats,
}

/// A route's records.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    /// The route's `path_prefix`; `None` for requests no route matched.
    pub route: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub stats: Stats,
}

/// Totals of a group of records.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Records.
    pub requests: u64,
    /// Responses with status 400 or more other than 429, and exchanges that ended without a
    /// response (status 0).
    pub errors: u64,
    /// `errors / requests`, 0 to 1.
    pub error_rate: f64,
    /// Responses with status 429 (the gateway's limits, exhausted provider keys, or the
    /// provider's own).
    pub http_429: u64,
    /// `http_429 / requests`, 0 to 1.
    pub http_429_rate: f64,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
    /// Completion tokens reported.
    pub completion_tokens: u64,
    /// Both together.
    pub tokens: u64,
    /// Latency percentiles in microseconds; `None` without records.
    pub latency_us: Option<Latency>,
}

/// Latency percentiles, in microseconds. Exact to 3 significant digits for the total and 2
/// for each group (hdrhistogram's precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// The largest.
    pub max: u64,
}

impl Report {
    /// The summary of everything read so far.
    pub fn summary(&self) -> Summary {
        let mut routes: Vec<(&String, &Tally)> = self.routes.iter().collect();
        routes.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then_with(|| a.0.cmp(b.0)));

        Summary {
            records: self.records,
            malformed_lines: self.malformed,
            first: self.first_ms.map(timestamp),
            last: self.last_ms.map(timestamp),
            total: stats(&self.total),
            tenants: named_last(&self.tenants)
                .map(|(tenant, tally)| TenantRow {
                    tenant: name(tenant),
                    stats: stats(tally),
                })
                .collect(),
            keys: named_last(&self.keys)
                .map(|(key_id, (tenant, tally))| KeyRow {
                    key_id: name(key_id),
                    tenant: name(tenant),
                    stats: stats(tally),
                })
                .collect(),
            top_routes: routes
                .into_iter()
                .take(TOP_ROUTES)
                .map(|(route, tally)| RouteRow {
                    route: name(route),
                    stats: stats(tally),
                })
                .collect(),
            forecasts: self.forecasts(),
        }
    }

    /// A forecast per calendar quota of each client key that has one, as of the last
    /// record; none when nothing was read.
    fn forecasts(&self) -> Vec<Forecast> {
        let (Some(as_of_ms), Some(log_start_ms)) = (self.last_ms, self.first_ms) else {
            return Vec::new();
        };
        let mut forecasts = Vec::new();
        for (key_id, key) in &self.quota_keys {
            let mut charged_ms = key.charged_ms.clone();
            charged_ms.sort_unstable();
            let basis = Basis {
                charged_ms: &charged_ms,
                as_of_ms,
                log_start_ms,
            };
            let quota = key.quota;
            let windows = [
                (Window::Minute, quota.per_minute),
                (Window::Hour, quota.per_hour),
                (Window::Day, quota.per_day),
                (Window::Month, quota.per_month),
            ];
            for (window, limit) in windows {
                if let Some(limit) = limit {
                    let tenant = key.tenant.as_deref();
                    forecasts.push(basis.forecast(key_id, tenant, window, limit));
                }
            }
        }
        forecasts
    }
}

/// How far back "recent" looks in a forecast, in seconds; for the table's heading.
pub(super) const RECENT_SECS: u64 = RECENT_MS / 1000;

/// A map's entries in key order, the unnamed (`""`) one last.
fn named_last<V>(
    map: &std::collections::BTreeMap<String, V>,
) -> impl Iterator<Item = (&String, &V)> {
    let unnamed = map.get_key_value("");
    map.iter()
        .filter(|(name, _)| !name.is_empty())
        .chain(unnamed)
}

fn name(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn stats(tally: &Tally) -> Stats {
    let share = |n: u64| {
        if tally.requests == 0 {
            0.0
        } else {
            n as f64 / tally.requests as f64
        }
    };
    Stats {
        requests: tally.requests,
        errors: tally.errors,
        error_rate: share(tally.errors),
        http_429: tally.too_many,
        http_429_rate: share(tally.too_many),
        prompt_tokens: tally.prompt_tokens,
        completion_tokens: tally.completion_tokens,
        tokens: tally.prompt_tokens.saturating_add(tally.completion_tokens),
        latency_us: latency(&tally.latency_us).map(|latency| Latency {
            max: tally.max_latency_us,
            ..latency
        }),
    }
}

fn latency(histogram: &Histogram<u64>) -> Option<Latency> {
    if histogram.is_empty() {
        return None;
    }
    Some(Latency {
        p50: histogram.value_at_quantile(0.50),
        p90: histogram.value_at_quantile(0.90),
        p99: histogram.value_at_quantile(0.99),
        max: histogram.max(),
    })
}
