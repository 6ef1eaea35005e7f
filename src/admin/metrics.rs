//! `/metrics` in the Prometheus text format (version 0.0.4). Labels come only from names in
//! the config (upstream names and key ids, both `[A-Za-z0-9_.-]`), never from client input.

use std::fmt::Write;

use super::AdminState;
use crate::metrics::{DURATION_BUCKETS, REJECTION_REASONS};
use crate::quota::SECOND;
use crate::upstream::{KeyPool, KeyStatus, PoolKey};

/// A counter family: name, help, and how to read it off a key.
type Counter = (&'static str, &'static str, fn(&PoolKey) -> u64);

/// The whole exposition at wall-clock time `now` (ns since the epoch).
pub(super) fn render(state: &AdminState, now: u64) -> String {
    let mut out = String::with_capacity(4096);
    let pools = state.pools();
    let keys: Vec<(&KeyPool, usize)> = pools
        .iter()
        .flat_map(|pool| (0..pool.keys().len()).map(move |index| (&**pool, index)))
        .collect();

    family(
        &mut out,
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
        sample(
            &mut out,
            "keygate_upstream_key_state",
            pool,
            index,
            value as f64,
        );
    }

    family(
        &mut out,
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
            &mut out,
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
        family(&mut out, name, "counter", help);
        for &(pool, index) in &keys {
            sample(
                &mut out,
                name,
                pool,
                index,
                read(&pool.keys()[index]) as f64,
            );
        }
    }

    requests(&mut out, state);

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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, pool: &KeyPool, index: usize, value: f64) {
    let key = &pool.keys()[index].id;
    let _ = writeln!(
        out,
        "{name}{{upstream=\"{}\",key=\"{key}\"}} {value}",
        pool.upstream
    );
}

/// The request metrics of every shard, added up.
fn requests(out: &mut String, state: &AdminState) {
    let mut shards = state.shards.iter().map(|shard| {
        shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    });
    let Some(mut total) = shards.next() else {
        return;
    };
    let mut connections = vec![total.connections];
    for counts in shards {
        connections.push(counts.connections);
        total.add(&counts);
    }
    let route = |index: usize| -> String {
        state
            .routes
            .get(index)
            .map_or_else(|| "none".to_string(), |prefix| escape(prefix))
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
    for (index, histogram) in total.durations.iter().enumerate() {
        let label = route(index);
        for bound in DURATION_BUCKETS {
            let count = histogram.count_between(0, (bound * 1e6) as u64);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{label}\",le=\"{bound}\"}} {count}"
            );
        }
        let count = histogram.len();
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}"
        );
        // The histogram keeps values, not their exact sum: mean times count.
        let sum = histogram.mean() * count as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{route=\"{label}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{route=\"{label}\"}} {count}");
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

    let name = "keygate_tenant_tokens_total";
    family(
        out,
        name,
        "counter",
        "Tokens the providers reported, by tenant (empty: keys without one) and kind.",
    );
    for (index, [prompt, completion]) in total.tokens.iter().enumerate() {
        let tenant = state
            .tenants
            .get(index)
            .map_or(String::new(), |t| escape(t));
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{tenant}\",kind=\"prompt\"}} {prompt}"
        );
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{tenant}\",kind=\"completion\"}} {completion}"
        );
    }

    let name = "keygate_connections";
    family(out, name, "gauge", "Client connections open, by shard.");
    for (shard, open) in connections.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {open}");
    }
}

/// A label value as the text format needs it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
