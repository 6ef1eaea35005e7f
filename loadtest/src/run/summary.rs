//! The end of a run: what was asked and what was recorded, as a readable table or as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::keys::{KeyDist, KeyScope};
use super::stats::{Failures, Stats};

/// What a run was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// The target, as given.
    pub target: String,
    /// The request method.
    pub method: &'static str,
    /// The request target path.
    pub path: String,
    /// Connections kept open.
    pub connections: u64,
    /// Threads (runtimes) they ran on.
    pub threads: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// The keys requests carried, if any.
    pub keys: Option<KeysUsed>,
    /// Requests after which a connection was opened again, if any.
    pub reconnect_every: Option<u64>,
    /// The seed of the key draws; `--seed` repeats them.
    pub seed: u64,
}

/// How keys were drawn.
#[derive(Debug, Clone, Serialize)]
pub struct KeysUsed {
    /// How many keys there were.
    pub count: u64,
    /// Their distribution.
    pub dist: KeyDist,
    /// The Zipf exponent, for a Zipf distribution.
    pub zipf_s: Option<f64>,
    /// When a key was drawn.
    pub scope: KeyScope,
}

/// A run's result.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What was asked.
    #[serde(flatten)]
    pub setup: Setup,
    /// Responses recorded (any status).
    pub requests: u64,
    /// The recorded period, in seconds: from the end of the warm-up to the deadline or the last
    /// response.
    pub duration_s: f64,
    /// Responses per second over that period.
    pub requests_per_second: f64,
    /// Response latency in microseconds.
    pub latency_us: Latency,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Requests that got no response.
    pub errors: Errors,
}

/// Latency figures, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    #[serde(rename = "p99.99")]
    pub p99_99: u64,
    pub max: u64,
}

/// Failed requests: the total and each kind.
#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    /// All failed requests.
    pub total: u64,
    /// By kind.
    #[serde(flatten)]
    pub kinds: Failures,
}

impl Summary {
    /// Sums up `stats`, recorded over `duration`.
    pub fn new(setup: Setup, stats: &Stats, duration: Duration) -> Summary {
        let requests = stats.responses();
        let seconds = duration.as_secs_f64();
        let histogram = &stats.latency;
        let quantile = |q: f64| histogram.value_at_quantile(q);
        // The histogram keeps values to three significant digits; report its exact extremes.
        let latency = Latency {
            min: histogram.min(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p99_9: quantile(0.999),
            p99_99: quantile(0.9999),
            max: histogram.max(),
        };
        Summary {
            setup,
            requests,
            duration_s: (seconds * 1000.0).round() / 1000.0,
            requests_per_second: if seconds > 0.0 {
                (requests as f64 / seconds).round()
            } else {
                0.0
            },
            latency_us: latency,
            status: stats.statuses().collect(),
            errors: Errors {
                total: stats.failures.total(),
                kinds: stats.failures,
            },
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let setup = &self.setup;
        let plural = |count: u64, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        writeln!(
            f,
            "target      {} {}{}",
            setup.method, setup.target, setup.path
        )?;
        writeln!(
            f,
            "load        {} on {}, pipeline {}",
            plural(setup.connections, "connection", "connections"),
            plural(setup.threads as u64, "thread", "threads"),
            setup.pipeline
        )?;
        if let Some(keys) = &setup.keys {
            let dist = match keys.zipf_s {
                Some(s) => format!("zipf, s {s}"),
                None => "uniform".to_owned(),
            };
            let scope = match keys.scope {
                KeyScope::Connection => "per connection",
                KeyScope::Request => "per request",
            };
            writeln!(f, "keys        {} ({dist}), drawn {scope}", keys.count)?;
        }
        if let Some(every) = setup.reconnect_every {
            writeln!(
                f,
                "reconnect   every {}",
                plural(every, "request", "requests")
            )?;
        }
        writeln!(f, "seed        {}", setup.seed)?;

        writeln!(
            f,
            "requests    {} in {:.3} s, {} req/s",
            self.requests, self.duration_s, self.requests_per_second
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
        )?;
        write!(f, "status      ")?;
        if self.status.is_empty() {
            write!(f, "none")?;
        }
        for (index, (status, count)) in self.status.iter().enumerate() {
            let gap = if index == 0 { "" } else { "  " };
            write!(f, "{gap}{status}: {count}")?;
        }
        writeln!(f)?;

        write!(f, "errors      {}", self.errors.total)?;
        let kinds = &self.errors.kinds;
        let named = [
            ("connect", kinds.connect),
            ("io", kinds.io),
            ("timeout", kinds.timeout),
            ("closed", kinds.closed),
            ("malformed", kinds.malformed),
        ];
        let mut first = true;
        for (name, count) in named.into_iter().filter(|(_, count)| *count > 0) {
            write!(f, "{}{name} {count}", if first { " (" } else { ", " })?;
            first = false;
        }
        if !first {
            write!(f, ")")?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::Failure;
    use super::*;

    fn setup() -> Setup {
        Setup {
            target: "127.0.0.1:9001".into(),
            method: "POST",
            path: "/v1/chat/completions".into(),
            connections: 2,
            threads: 1,
            pipeline: 1,
            keys: Some(KeysUsed {
                count: 10,
                dist: KeyDist::Zipf,
                zipf_s: Some(1.0),
                scope: KeyScope::Request,
            }),
            reconnect_every: None,
            seed: 7,
        }
    }

    fn stats() -> Stats {
        let mut stats = Stats::new();
        for micros in 1..=1000 {
            stats.response(200, Duration::from_micros(micros));
        }
        stats.response(429, Duration::from_micros(5000));
        stats.failure(Failure::Timeout, 2);
        stats
    }

    #[test]
    fn json_fields() {
        let summary = Summary::new(setup(), &stats(), Duration::from_millis(500));
        let value = serde_json::to_value(&summary).unwrap();
        assert_eq!(value["requests"], 1001);
        assert_eq!(value["requests_per_second"], 2002.0);
        assert_eq!(value["status"]["200"], 1000);
        assert_eq!(value["status"]["429"], 1);
        assert_eq!(value["errors"]["total"], 2);
        assert_eq!(value["errors"]["timeout"], 2);
        assert_eq!(value["keys"]["dist"], "zipf");
        assert_eq!(value["keys"]["scope"], "request");
        assert_eq!(value["target"], "127.0.0.1:9001");
        let latency = &value["latency_us"];
        let p50 = latency["p50"].as_u64().unwrap();
        assert!((495..=505).contains(&p50), "{p50}");
        assert!(latency["p99.9"].as_u64() <= latency["max"].as_u64());
        assert_eq!(latency["max"].as_u64().unwrap() / 10, 500);
    }

    #[test]
    fn text_lines() {
        let summary = Summary::new(setup(), &stats(), Duration::from_millis(500));
        let text = summary.to_string();
        assert!(
            text.contains("load        2 connections on 1 thread, pipeline 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keys        10 (zipf, s 1), drawn per request\n"),
            "{text}"
        );
        assert!(
            text.contains("requests    1001 in 0.500 s, 2002 req/s\n"),
            "{text}"
        );
        assert!(text.contains("status      200: 1000  429: 1\n"), "{text}");
        assert!(text.contains("errors      2 (timeout 2)\n"), "{text}");
    }

    #[test]
    fn nothing_recorded() {
        let summary = Summary::new(setup(), &Stats::new(), Duration::ZERO);
        let text = summary.to_string();
        assert!(
            text.contains("requests    0 in 0.000 s, 0 req/s\n"),
            "{text}"
        );
        assert!(text.contains("status      none\n"), "{text}");
        assert!(text.contains("errors      0\n"), "{text}");
    }
}
