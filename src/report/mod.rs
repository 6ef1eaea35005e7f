//! `keygate report`: what access logs say, summed up for an operator.
//!
//! [`Report`] reads access log lines (any number of files, in any order: rotated files
//! too), skips and counts the lines it cannot read, and keeps per-tenant, per-key and
//! per-route tallies with latency histograms. [`Report::summary`] turns them into a
//! [`Summary`]: totals, error and 429 rates, latency percentiles, the busiest routes and,
//! given the config, a forecast of when each client key's calendar quotas run out. Output
//! is rendered by `table` (text) or serde (JSON). Nothing here touches the gateway: it only
//! reads files.

mod forecast;
mod summary;
mod table;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead};

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::accesslog::parse_timestamp;
use crate::config::{Config, Quota};

pub use forecast::{Forecast, Outcome, RECENT_MS};
pub use summary::{KeyRow, Latency, RouteRow, Stats, Summary, TenantRow, TOP_ROUTES};
pub use table::write_table;

/// Error codes of requests refused before admission: they took nothing from the key's
/// quotas (`docs/errors.md`). Every other record of a key counts as charged.
const NOT_ADMITTED: &[&str] = &[
    "bad_request",
    "invalid_api_key",
    "forbidden",
    "not_found",
    "route_retired",
    "method_not_allowed",
    "expectation_failed",
    "headers_too_large",
    "not_implemented",
    "rate_limit_exceeded",
    "quota_exceeded",
];

/// Tallies of access log lines, fed line by line.
#[derive(Debug)]
pub struct Report {
    records: u64,
    malformed: u64,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    total: Tally,
    /// By tenant; `""` for records without one (names are never empty).
    tenants: BTreeMap<String, Tally>,
    /// By key id (`""` for none): the key's tenant and tally.
    keys: BTreeMap<String, (String, Tally)>,
    /// By route (`""` for none).
    routes: BTreeMap<String, Tally>,
    /// Client keys with a calendar quota: tenant, quota, and when each charged request came
    /// (ms since the epoch).
    quota_keys: BTreeMap<String, QuotaKey>,
}

/// One client key whose calendar quota is forecast.
#[derive(Debug)]
struct QuotaKey {
    tenant: Option<String>,
    quota: Quota,
    charged_ms: Vec<u64>,
}

/// Counts and latencies of a group of records.
#[derive(Debug, Clone)]
struct Tally {
    requests: u64,
    errors: u64,
    too_many: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    latency_us: Histogram<u64>,
    /// The largest latency exactly: the histogram keeps it only to its precision.
    max_latency_us: u64,
}

/// The fields of a line the report reads; the others are ignored.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    route: Option<Cow<'a, str>>,
    status: u16,
    latency_us: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(borrow)]
    error_code: Option<Cow<'a, str>>,
}

impl Report {
    /// An empty report. With `config`, every client key with a calendar quota gets a
    /// forecast.
    pub fn new(config: Option<&Config>) -> Report {
        let quota_keys = config
            .into_iter()
            .flat_map(|config| &config.client_keys)
            .filter(|key| key.limits.quota != Quota::default())
            .map(|key| {
                let entry = QuotaKey {
                    tenant: key.tenant.clone(),
                    quota: key.limits.quota,
                    charged_ms: Vec::new(),
                };
                (key.id.clone(), entry)
            })
            .collect();
        Report {
            records: 0,
            malformed: 0,
            first_ms: None,
            last_ms: None,
            total: Tally::new(3),
            tenants: BTreeMap::new(),
            keys: BTreeMap::new(),
            routes: BTreeMap::new(),
            quota_keys,
        }
    }

    /// Reads every line of `reader`. Fails only if reading fails; unreadable lines are
    /// counted as malformed.
    pub fn read<R: BufRead>(&mut self, mut reader: R) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            self.add_line(&line);
        }
    }

    /// Adds one line (its `\n` optional). Blank lines are skipped; a line that is not an
    /// access log record is counted as malformed.
    pub fn add_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let parsed = serde_json::from_slice::<Line<'_>>(line)
            .ok()
            .and_then(|record| Some((parse_timestamp(&record.ts)?, record)));
        match parsed {
            Some((ts_ms, record)) => self.add(ts_ms, &record),
            None => self.malformed += 1,
        }
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Lines skipped so far because they were not records.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn add(&mut self, ts_ms: u64, line: &Line<'_>) {
        self.records += 1;
        self.first_ms = Some(self.first_ms.map_or(ts_ms, |first| first.min(ts_ms)));
        self.last_ms = Some(self.last_ms.map_or(ts_ms, |last| last.max(ts_ms)));

        let tenant = line.tenant.as_deref().unwrap_or("");
        let key_id = line.key_id.as_deref().unwrap_or("");
        let route = line.route.as_deref().unwrap_or("");
        self.total.add(line);
        tally_in(&mut self.tenants, tenant, line);
        match self.keys.get_mut(key_id) {
            Some((_, tally)) => tally.add(line),
            None => {
                let mut tally = Tally::new(2);
                tally.add(line);
                self.keys
                    .insert(key_id.to_owned(), (tenant.to_owned(), tally));
            }
        }
        tally_in(&mut self.routes, route, line);

        let admitted = !NOT_ADMITTED.contains(&line.error_code.as_deref().unwrap_or(""));
        if let (true, Some(key)) = (admitted, self.quota_keys.get_mut(key_id)) {
            key.charged_ms.push(ts_ms);
        }
    }
}

/// Adds `line` to the tally of `name` in `groups`, made on first use (so a name is copied
/// once, not per line).
fn tally_in(groups: &mut BTreeMap<String, Tally>, name: &str, line: &Line<'_>) {
    match groups.get_mut(name) {
        Some(tally) => tally.add(line),
        None => {
            let mut tally = Tally::new(2);
            tally.add(line);
            groups.insert(name.to_owned(), tally);
        }
    }
}

impl Tally {
    /// An empty tally whose latencies keep `digits` significant decimal digits: 3 for the
    /// total, 2 (1% precision, a tenth of the memory) for each of many groups.
    fn new(digits: u8) -> Tally {
        Tally {
            requests: 0,
            errors: 0,
            too_many: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            latency_us: Histogram::new(digits).expect("1 to 5 significant digits are valid"),
            max_latency_us: 0,
        }
    }

    fn add(&mut self, line: &Line<'_>) {
        self.requests += 1;
        if line.status == 429 {
            self.too_many += 1;
        } else if line.status >= 400 || line.status == 0 {
            self.errors += 1;
        }
        self.prompt_tokens = self
            .prompt_tokens
            .saturating_add(line.prompt_tokens.unwrap_or(0));
        self.completion_tokens =
            (self.completion_tokens).saturating_add(line.completion_tokens.unwrap_or(0));
        // `record` grows the histogram to fit; only a value past its largest possible range
        // is clamped.
        if self.latency_us.record(line.latency_us).is_err() {
            self.latency_us.saturating_record(line.latency_us);
        }
        self.max_latency_us = self.max_latency_us.max(line.latency_us);
    }
}

#[cfg(test)]
mod tests;
