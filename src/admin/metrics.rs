//! `/metrics` in the Prometheus text format (version 0.0.4). Labels come only from names in
//! the config or the key table (upstream names, provider and client key ids, route prefixes,
//! tenant names) or from fixed sets, never from client input.
//!
//! Shards count client keys and tenants by table position; [`key_names`] is the one place a
//! scrape turns positions into names, reading the key table only then.

use std::fmt::{self, Display, Write};
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::AdminState;
use crate::keys::KeyTable;
use crate::metrics::{Counts, PoolGauge, Usage, DURATION_BUCKETS, REJECTION_REASONS};
use crate::quota::SECOND;
use crate::upstream::{KeyPool, KeyStatus, PoolKey};

/// A counter family: name, help, and how to read it off a key.
type Counter = (&'static str, &'static str, fn(&PoolKey) -> u64);

/// A gauge family that has a value only when it is known: name, help, and how to read it
/// off a key at a time.
type KnownGauge = (&'static str, &'static str, fn(&PoolKey, u64) -> Option<u64>);

/// A per-shard upstream connection gauge: name, help, and how to read it.
type PoolFamily = (&'static str, &'static str, fn(&PoolGauge) -> u64);

/// The whole exposition at wall-clock time `now` (ns since the epoch).
pub(super) fn render(state: &AdminState, now: u64) -> String {
    let mut out = String::with_capacity(4096);
    provider_keys(&mut out, state, now);
    traffic(&mut out, state);

    if let Some(log) = &state.access_log {
        let written = "keygate_access_log_records_total";
        family(
            &mut out,
            written,
            "counter",
            "Access log records written to the file.",
        );
        let _ = writeln!(out, "{written} {}", log.written());
        let dropped = "keygate_access_log_dropped_total";
        family(
            &mut out,
            dropped,
            "counter",
            "Access log records dropped: the writer fell behind, or the file failed.",
        );
        let _ = writeln!(out, "{dropped} {}", log.dropped());
    }
    out
}

/// Client key ids and tenant names by table position, from the key table served now.
///
/// The one place metrics read the key table: every position a shard counted is named
/// through what this returns, so pointing it at another table renames everything at once.
fn key_names(state: &AdminState) -> KeyNames {
    KeyNames(state.clients.table())
}

/// The key table one scrape names positions by.
struct KeyNames(Arc<KeyTable>);

impl KeyNames {
    /// A key's id and its tenant's name (empty for none); `None` for a position the table
    /// does not hold.
    fn key(&self, index: u32) -> Option<(&str, &str)> {
        let key = self.0.keys().get(index as usize)?;
        let tenant = key.tenant.and_then(|t| self.tenant(t)).unwrap_or("");
        Some((&key.id, tenant))
    }

    fn tenant(&self, index: u32) -> Option<&str> {
        self.0.tenants().get(index as usize).map(|t| &*t.name)
    }

    /// Every tenant's position and name.
    fn tenants(&self) -> impl Iterator<Item = (usize, &str)> {
        self.0.tenants().iter().map(|t| &*t.name).enumerate()
    }
}

/// Every provider key's state, counters and what its provider said about its budget.
fn provider_keys(out: &mut String, state: &AdminState, now: u64) {
    let pools = state.pools();
    let keys: Vec<(&KeyPool, usize)> = pools
        .iter()
        .flat_map(|pool| (0..pool.keys().len()).map(move |index| (&**pool, index)))
        .collect();

    family(
        out,
        "keygate_upstream_key_state",
        "gauge",
        "Provider key state: 0 ready, 1 cooling down, 2 disabled.",
    );
    for &(pool, index) in &keys {
        let value = match pool.status(index, now) {
            KeyStatus::Ready => 0,
            KeyStatus::Cooling(_) => 1,
            KeyStatus::Disabled(_) => 2,
        };
        sample(out, "keygate_upstream_key_state", pool, index, value);
    }

    family(
        out,
        "keygate_upstream_key_cooldown_seconds",
        "gauge",
        "Time until a cooling provider key is ready again; 0 when it is not cooling.",
    );
    for &(pool, index) in &keys {
        let value = match pool.status(index, now) {
            KeyStatus::Cooling(until) => (until - now) as f64 / SECOND as f64,
            _ => 0.0,
        };
        sample(
            out,
            "keygate_upstream_key_cooldown_seconds",
            pool,
            index,
            value,
        );
    }

    let counters: [Counter; 3] = [
        (
            "keygate_upstream_key_requests_total",
            "Attempts sent upstream with a provider key.",
            PoolKey::sent,
        ),
        (
            "keygate_upstream_key_throttled_total",
            "429 answers a provider key received.",
            PoolKey::throttled,
        ),
        (
            "keygate_upstream_key_refused_total",
            "401 and 403 answers a provider key received.",
            PoolKey::refused,
        ),
    ];
    for (name, help, read) in counters {
        family(out, name, "counter", help);
        for &(pool, index) in &keys {
            sample(out, name, pool, index, read(&pool.keys()[index]));
        }
    }

    let budgets: [KnownGauge; 4] = [
        (
            "keygate_upstream_key_remaining_requests",
            "Requests the provider last said a key has left in its window; its limit once \
             the window has reset.",
            PoolKey::requests_remaining,
        ),
        (
            "keygate_upstream_key_remaining_tokens",
            "Tokens the provider last said a key has left in its window; its limit once the \
             window has reset.",
            PoolKey::tokens_remaining,
        ),
        (
            "keygate_upstream_key_limit_requests_per_minute",
            "Requests per minute a key is paced by: the lower of the configured and the \
             announced limit.",
            |key, _| key.rpm_limit(),
        ),
        (
            "keygate_upstream_key_limit_tokens_per_minute",
            "Tokens per minute a key is paced by: the lower of the configured and the \
             announced limit.",
            |key, _| key.tpm_limit(),
        ),
    ];
    for (name, help, read) in budgets {
        family(out, name, "gauge", help);
        for &(pool, index) in &keys {
            if let Some(value) = read(&pool.keys()[index], now) {
                sample(out, name, pool, index, value);
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, pool: &KeyPool, index: usize, value: impl Display) {
    let key = Label(&pool.keys()[index].id);
    let upstream = Label(&pool.upstream);
    let _ = writeln!(
        out,
        "{name}{{upstream=\"{upstream}\",key=\"{key}\"}} {value}"
    );
}

/// What the shards counted, added up, and their gauges, shard by shard.
fn traffic(out: &mut String, state: &AdminState) {
    let labels = state
        .labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut total = Counts::new(labels.routes.len(), labels.upstreams.len());
    let mut gauges: Vec<(u64, Vec<PoolGauge>)> = Vec::with_capacity(state.shards.len());
    for shard in &state.shards {
        let counts = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        total.add(&counts);
        gauges.push((counts.connections, counts.pools.clone()));
    }
    if gauges.is_empty() {
        return;
    }
    // Slot 0 counts requests no route matched; route slot s is at s + 1.
    let route = |index: usize| -> Label<'_> {
        let label = index
            .checked_sub(1)
            .and_then(|slot| labels.routes.get(slot));
        Label(label.map_or("none", String::as_str))
    };

    let name = "keygate_requests_total";
    family(
        out,
        name,
        "counter",
        "Requests answered, by route (path_prefix) and status class.",
    );
    for (index, classes) in total.requests.iter().enumerate() {
        for (class, count) in classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",status_class=\"{}xx\"}} {count}",
                route(index),
                class + 1
            );
        }
    }

    let name = "keygate_request_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from a request's head to its response's last byte, by route.",
    );
    for (index, durations) in total.durations.iter().enumerate() {
        histogram(out, name, "route", route(index), durations);
    }

    let name = "keygate_upstream_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from sending an attempt upstream to its response head, by upstream.",
    );
    for (upstream, durations) in labels.upstreams.iter().zip(&total.upstream_durations) {
        histogram(out, name, "upstream", Label(upstream), durations);
    }

    let name = "keygate_quota_rejections_total";
    family(
        out,
        name,
        "counter",
        "Requests a client key's (or tenant's) limits refused, by reason.",
    );
    for (reason, count) in REJECTION_REASONS.iter().zip(total.rejections) {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }

    usage(out, &total, &key_names(state));

    let name = "keygate_connections";
    family(out, name, "gauge", "Client connections open, by shard.");
    for (shard, (open, _)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {open}");
    }

    let pools: [PoolFamily; 2] = [
        (
            "keygate_upstream_pool_idle_connections",
            "Idle keep-alive connections to an upstream, by shard.",
            |gauge| gauge.idle,
        ),
        (
            "keygate_upstream_in_flight_requests",
            "Requests on their way to or from an upstream (connections carrying one), by \
             shard.",
            |gauge| gauge.busy,
        ),
    ];
    for (name, help, read) in pools {
        family(out, name, "gauge", help);
        for (shard, (_, upstreams)) in gauges.iter().enumerate() {
            for (upstream, gauge) in labels.upstreams.iter().zip(upstreams) {
                let (upstream, value) = (Label(upstream), read(gauge));
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{shard}\",upstream=\"{upstream}\"}} {value}"
                );
            }
        }
    }
}

/// Requests and tokens per tenant (every tenant, and the empty one for keys without a
/// tenant) and per client key (only keys that had traffic, and only their series that are
/// not zero).
fn usage(out: &mut String, total: &Counts, names: &KeyNames) {
    let none = Usage::default();
    let tenants: Vec<(&str, &Usage)> = names
        .tenants()
        .map(|(index, name)| (name, total.tenants.get(index).unwrap_or(&none)))
        .chain(std::iter::once(("", &total.untenanted)))
        .collect();

    let name = "keygate_tenant_requests_total";
    family(
        out,
        name,
        "counter",
        "Requests with a client key answered, by tenant (empty: keys without one) and status \
         class.",
    );
    for &(tenant, usage) in &tenants {
        for (class, count) in usage.requests.iter().enumerate() {
            let (tenant, class) = (Label(tenant), class + 1);
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{tenant}\",status_class=\"{class}xx\"}} {count}"
            );
        }
    }

    let name = "keygate_tenant_tokens_total";
    family(
        out,
        name,
        "counter",
        "Tokens the providers reported, by tenant (empty: keys without one) and kind.",
    );
    for &(tenant, usage) in &tenants {
        let tenant = Label(tenant);
        let [prompt, completion] = usage.tokens;
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{tenant}\",kind=\"prompt\"}} {prompt}"
        );
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{tenant}\",kind=\"completion\"}} {completion}"
        );
    }

    // In table order, so a scrape reads the same from one time to the next.
    let mut keys: Vec<(u32, &Usage)> = total.keys.iter().map(|(&k, usage)| (k, usage)).collect();
    keys.sort_unstable_by_key(|&(index, _)| index);
    let keys: Vec<(&str, &str, &Usage)> = keys
        .into_iter()
        .filter_map(|(index, usage)| {
            let (id, tenant) = names.key(index)?;
            Some((id, tenant, usage))
        })
        .collect();

    let name = "keygate_client_key_requests_total";
    family(
        out,
        name,
        "counter",
        "Requests answered, by client key, its tenant and status class; keys with traffic \
         only.",
    );
    for &(id, tenant, usage) in &keys {
        let (id, tenant) = (Label(id), Label(tenant));
        for (class, &count) in usage.requests.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let class = class + 1;
            let _ = writeln!(
                out,
                "{name}{{key_id=\"{id}\",tenant=\"{tenant}\",status_class=\"{class}xx\"}} \
                 {count}"
            );
        }
    }

    let name = "keygate_client_key_tokens_total";
    family(
        out,
        name,
        "counter",
        "Tokens the providers reported, by client key, its tenant and kind; keys that used \
         tokens only.",
    );
    for &(id, tenant, usage) in &keys {
        if usage.tokens == [0, 0] {
            continue;
        }
        let (id, tenant) = (Label(id), Label(tenant));
        for (kind, count) in ["prompt", "completion"].iter().zip(usage.tokens) {
            let _ = writeln!(
                out,
                "{name}{{key_id=\"{id}\",tenant=\"{tenant}\",kind=\"{kind}\"}} {count}"
            );
        }
    }
}

/// One histogram's series, with the label `label="value"`; values are microseconds.
fn histogram(out: &mut String, name: &str, label: &str, value: Label<'_>, h: &Histogram<u64>) {
    for bound in DURATION_BUCKETS {
        let count = h.count_between(0, (bound * 1e6) as u64);
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {count}"
        );
    }
    let count = h.len();
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {count}"
    );
    // The histogram keeps values, not their exact sum: mean times count.
    let sum = h.mean() * count as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {count}");
}

/// A label value as the text format needs it: backslash, quote and newline escaped, written
/// straight into the output.
#[derive(Clone, Copy)]
struct Label<'a>(&'a str);

impl Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in self.0.split_inclusive(['\\', '"', '\n']) {
            let (text, last) = match piece.char_indices().last() {
                Some((at, c @ ('\\' | '"' | '\n'))) => (&piece[..at], Some(c)),
                _ => (piece, None),
            };
            f.write_str(text)?;
            match last {
                Some('\n') => f.write_str("\\n")?,
                Some(c) => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let cases = [
            ("plain-id_1.0", "plain-id_1.0"),
            ("/v1/", "/v1/"),
            ("a\"b", "a\\\"b"),
            ("back\\slash", "back\\\\slash"),
            ("two\nlines\n", "two\\nlines\\n"),
            ("", ""),
        ];
        for (raw, escaped) in cases {
            assert_eq!(Label(raw).to_string(), escaped, "{raw:?}");
        }
    }
}
