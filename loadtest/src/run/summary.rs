//! The end of a run: what was asked and what was recorded, as a readable table or as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::keys::{KeyDist, KeyScope};
use super::mix::Kind;
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
    /// Open loop: the requests a second asked for; `None` for a closed loop.
    pub rate: Option<f64>,
    /// The kinds of request and their weights, with `--mix`.
    pub mix: Option<Vec<(Kind, u32)>>,
    /// The size of a `body` request of the mix, in bytes, when the mix has them.
    pub body_bytes: Option<usize>,
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
    /// The recorded period, in seconds: from the end of the warm-up to the deadline, or to the
    /// last response when `--requests` ran out first.
    pub duration_s: f64,
    /// Responses per second over that period.
    pub requests_per_second: f64,
    /// Response latency in microseconds (in an open loop, from when each request was due).
    pub latency_us: Latency,
    /// Open loop only: latency from each request's actual write, in microseconds, as a
    /// measurement that does not correct for coordinated omission would report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_time_us: Option<Latency>,
    /// With `--mix`: each kind's share and latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<Vec<KindFigures>>,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Requests that got no response.
    pub errors: Errors,
    /// Open loop: requests due in the recorded period that were never sent, their connections
    /// still waiting for earlier responses at the end (0 without `--duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsent: Option<u64>,
    /// The signal that ended the run early, if one did: the recorded period ends with it, and
    /// requests then in flight count neither as answered nor as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<&'static str>,
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

/// One kind of request of a mix.
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    /// The kind.
    pub kind: Kind,
    /// Its weight in `--mix`.
    pub weight: u32,
    /// Its responses recorded.
    pub requests: u64,
    /// Its latency, in microseconds.
    pub latency_us: Latency,
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
        let by_kind = setup.mix.as_ref().map(|weights| {
            weights
                .iter()
                .enumerate()
                .map(|(index, &(kind, weight))| {
                    // A mix of one kind keeps no histogram of its own: it is the whole run's.
                    let histogram = stats.by_kind.get(index).unwrap_or(&stats.latency);
                    KindFigures {
                        kind,
                        weight,
                        requests: histogram.len(),
                        latency_us: Latency::of(histogram),
                    }
                })
                .collect()
        });
        Summary {
            setup,
            requests,
            duration_s: (seconds * 1000.0).round() / 1000.0,
            requests_per_second: if seconds > 0.0 {
                rounded_rate(requests as f64 / seconds)
            } else {
                0.0
            },
            latency_us: Latency::of(&stats.latency),
            service_time_us: stats.service.as_ref().map(Latency::of),
            by_kind,
            status: stats.statuses().collect(),
            errors: Errors {
                total: stats.failures.total(),
                kinds: stats.failures,
            },
            unsent: stats.service.is_some().then_some(stats.unsent),
            interrupted: None,
        }
    }
}

/// A rate in requests a second, rounded to what a reader can use: a tenth above 100 a second,
/// a thousandth below (a slow open loop's 0.5 a second must not read 0 or 1).
fn rounded_rate(rate: f64) -> f64 {
    let scale = if rate >= 100.0 { 10.0 } else { 1000.0 };
    (rate * scale).round() / scale
}

/// The `status` line of a text summary: each status and its count, or `none`.
pub(crate) fn write_statuses<K: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    statuses: &BTreeMap<K, u64>,
) -> fmt::Result {
    write!(f, "status      ")?;
    if statuses.is_empty() {
        write!(f, "none")?;
    }
    for (index, (status, count)) in statuses.iter().enumerate() {
        let gap = if index == 0 { "" } else { "  " };
        write!(f, "{gap}{status}: {count}")?;
    }
    writeln!(f)
}

impl Latency {
    /// The figures of `histogram`.
    fn of(histogram: &Histogram<u64>) -> Latency {
        let quantile = |q: f64| histogram.value_at_quantile(q);
        // The histogram keeps values to three significant digits; report its exact extremes.
        Latency {
            min: histogram.min(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p99_9: quantile(0.999),
            p99_99: quantile(0.9999),
            max: histogram.max(),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            self.p50, self.p90, self.p99, self.p99_9, self.p99_99, self.max
        )
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
        let lp = match setup.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "load        {} on {}, pipeline {}, {lp}",
            plural(setup.connections, "connection", "connections"),
            plural(setup.threads as u64, "thread", "threads"),
            setup.pipeline
        )?;
        if let Some(weights) = &setup.mix {
            write!(f, "mix        ")?;
            for (kind, weight) in weights {
                write!(f, " {kind}={weight}")?;
            }
            if let Some(bytes) = setup.body_bytes {
                write!(f, " (body {bytes} bytes)")?;
            }
            writeln!(f)?;
        }
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
        writeln!(f, "latency µs  {}", self.latency_us)?;
        if let Some(service) = &self.service_time_us {
            writeln!(f, "service µs  {service}  (from the actual write)")?;
        }
        for figures in self.by_kind.iter().flatten() {
            writeln!(
                f,
                "  {:<9} {}, µs {}",
                figures.kind.as_str(),
                plural(figures.requests, "request", "requests"),
                figures.latency_us
            )?;
        }
        write_statuses(f, &self.status)?;

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
        writeln!(f)?;
        if let Some(unsent) = self.unsent.filter(|&unsent| unsent > 0) {
            writeln!(
                f,
                "unsent      {} due and never sent: the target fell behind the rate",
                plural(unsent, "request", "requests")
            )?;
        }
        if let Some(signal) = self.interrupted {
            writeln!(
                f,
                "interrupted by {signal}: recorded until then; requests in flight not counted"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Failure, Sample};
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
            rate: None,
            mix: None,
            body_bytes: None,
        }
    }

    fn sample(micros: u64) -> Sample {
        Sample {
            latency: Duration::from_micros(micros),
            service: Duration::from_micros(micros),
            kind: 0,
        }
    }

    fn stats() -> Stats {
        let mut stats = Stats::new();
        for micros in 1..=1000 {
            stats.response(200, sample(micros));
        }
        stats.response(429, sample(5000));
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
            text.contains("load        2 connections on 1 thread, pipeline 1, closed loop\n"),
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
    fn open_loop_and_mix() {
        let mut setup = setup();
        setup.rate = Some(500.0);
        setup.mix = Some(vec![(Kind::Plain, 3), (Kind::Body, 1)]);
        setup.body_bytes = Some(4096);
        let mut stats = Stats::with(2, true);
        for (index, micros) in [(0, 100), (0, 200), (1, 3000)] {
            let sample = Sample {
                latency: Duration::from_micros(micros),
                service: Duration::from_micros(50),
                kind: index,
            };
            stats.response(200, sample);
        }
        let summary = Summary::new(setup, &stats, Duration::from_secs(1));

        let text = summary.to_string();
        for line in [
            "load        2 connections on 1 thread, pipeline 1, open loop at 500 req/s\n",
            "mix         plain=3 body=1 (body 4096 bytes)\n",
            "service µs  p50 50 ",
            "  plain     2 requests, µs p50 100 ",
            "  body      1 request, µs p50 30",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }

        let value = serde_json::to_value(&summary).unwrap();
        assert_eq!(value["rate"], 500.0);
        assert_eq!(value["service_time_us"]["max"], 50);
        assert_eq!(value["by_kind"][1]["kind"], "body");
        assert_eq!(value["by_kind"][1]["requests"], 1);
        assert_eq!(value["mix"][0], serde_json::json!(["plain", 3]));
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
        assert!(!text.contains("interrupted"), "{text}");
    }

    #[test]
    fn slow_rates_keep_their_fractions() {
        let mut stats = Stats::new();
        for micros in [100, 200, 300] {
            stats.response(200, sample(micros));
        }
        let summary = Summary::new(setup(), &stats, Duration::from_secs(6));
        assert_eq!(summary.requests_per_second, 0.5);
        assert!(summary.to_string().contains("3 in 6.000 s, 0.5 req/s\n"));
        let third = Summary::new(setup(), &stats, Duration::from_secs(9));
        assert_eq!(third.requests_per_second, 0.333);
        assert_eq!(rounded_rate(123_456.78), 123_456.8);
    }

    #[test]
    fn an_interrupted_run_says_so() {
        let mut summary = Summary::new(setup(), &stats(), Duration::from_millis(500));
        summary.interrupted = Some("SIGINT");
        assert!(summary.to_string().ends_with(
            "interrupted by SIGINT: recorded until then; requests in flight not counted\n"
        ));
        let value = serde_json::to_value(&summary).unwrap();
        assert_eq!(value["interrupted"], "SIGINT");
        let uninterrupted = Summary::new(setup(), &stats(), Duration::from_millis(500));
        assert!(serde_json::to_value(&uninterrupted).unwrap()["interrupted"].is_null());
    }
}
