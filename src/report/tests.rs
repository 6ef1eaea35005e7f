//! The report over a log this test writes with the access log's own serializer: exact
//! totals, percentiles, routes and forecasts.

use std::path::Path;

use super::*;
use crate::accesslog::{Record, RequestId};

/// 2026-12-04T16:00:00Z in nanoseconds.
const HOUR_START_NS: u64 = 1_796_400_000_000_000_000;
const MINUTE_NS: u64 = 60_000_000_000;

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
[[upstream]]
name = "up"
provider = "openai"
endpoints = ["http://127.0.0.1:9"]
[[route]]
path_prefix = "/v1/"
upstream = "up"
[[tenant]]
name = "acme"
[[client_key]]
id = "a"
tenant = "acme"
secret = "kg-a"
quota = { per_hour = 100, per_day = 70 }
[[client_key]]
id = "b"
secret = "kg-b"
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new("c.toml"), Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

/// A record of key `a` at `ts`, with `latency_us`.
fn of_a(ts: u64, latency_us: u64) -> Record<'static> {
    Record {
        ts,
        request_id: RequestId::new(1, 0, ts),
        tenant: Some("acme"),
        key_id: Some("a"),
        method: b"POST",
        path: b"/v1/chat/completions",
        route: Some("/v1/"),
        upstream: Some("up"),
        upstream_key: Some("pk"),
        status: 200,
        latency_us,
        upstream_latency_us: Some(latency_us / 2),
        bytes_in: 100,
        bytes_out: 200,
        prompt_tokens: Some(10),
        completion_tokens: Some(5),
        retries: 0,
        error_code: None,
    }
}

/// The test's log: one hour of key `a` at one request a minute, its refusals, key `b`'s
/// success and errors, unauthenticated requests, and lines that are not records.
fn log() -> Vec<u8> {
    let mut log = Vec::new();
    // b at 15:00: the log reaches back more than an hour.
    let early = Record {
        tenant: None,
        key_id: Some("b"),
        ..of_a(HOUR_START_NS - 60 * MINUTE_NS, 200)
    };
    early.write_to(&mut log);
    // a: 15:30 to 16:29, latencies 1 to 60 µs.
    for i in 0..60 {
        let ts = HOUR_START_NS - 30 * MINUTE_NS + i * MINUTE_NS;
        of_a(ts, i + 1).write_to(&mut log);
    }
    // a: five refusals at 16:29:30, which take nothing from its quota.
    for _ in 0..5 {
        let refused = Record {
            status: 429,
            upstream: None,
            upstream_key: None,
            upstream_latency_us: None,
            prompt_tokens: None,
            completion_tokens: None,
            error_code: Some("quota_exceeded"),
            ..of_a(HOUR_START_NS + 29 * MINUTE_NS + MINUTE_NS / 2, 100)
        };
        refused.write_to(&mut log);
    }
    // b: 3 upstream errors and 2 unrouted requests.
    for (status, route, code) in [
        (502, Some("/v1/"), "upstream_error"),
        (502, Some("/v1/"), "upstream_error"),
        (504, Some("/v1/"), "upstream_timeout"),
        (404, None, "not_found"),
        (404, None, "not_found"),
    ] {
        let record = Record {
            tenant: None,
            key_id: Some("b"),
            status,
            route,
            prompt_tokens: None,
            completion_tokens: None,
            error_code: Some(code),
            ..of_a(HOUR_START_NS, 200)
        };
        record.write_to(&mut log);
    }
    // Two requests without a key.
    for _ in 0..2 {
        let record = Record {
            tenant: None,
            key_id: None,
            route: None,
            upstream: None,
            status: 401,
            error_code: Some("invalid_api_key"),
            ..of_a(HOUR_START_NS, 50)
        };
        record.write_to(&mut log);
    }
    // Not records: garbage, a record cut short, a wrong timestamp, a wrong type, a blank
    // line (skipped, not counted), and invalid UTF-8.
    log.extend_from_slice(b"not json\n");
    let mut cut = Vec::new();
    of_a(HOUR_START_NS, 1).write_to(&mut cut);
    log.extend_from_slice(&cut[..cut.len() / 2]);
    log.push(b'\n');
    log.extend_from_slice(b"{\"ts\":\"yesterday\",\"status\":200,\"latency_us\":1}\n");
    log.extend_from_slice(
        b"{\"ts\":\"2026-12-04T16:00:00Z\",\"status\":\"ok\",\"latency_us\":1}\n",
    );
    log.extend_from_slice(b"\n");
    log.extend_from_slice(b"\xff\xfe\n");
    log
}

fn summary() -> Summary {
    let config = config();
    let mut report = Report::new(Some(&config));
    report.read(&log()[..]).expect("read from memory");
    report.summary()
}

#[test]
fn totals_count_every_record_once_and_skip_what_is_not_one() {
    let summary = summary();
    assert_eq!((summary.records, summary.malformed_lines), (73, 5));
    assert_eq!(summary.first.as_deref(), Some("2026-12-04T15:00:00.000Z"));
    assert_eq!(summary.last.as_deref(), Some("2026-12-04T16:29:30.000Z"));

    let total = &summary.total;
    // Errors: b's 5 and the 2 unauthenticated; the 429s are counted apart.
    assert_eq!((total.requests, total.errors, total.http_429), (73, 7, 5));
    assert_eq!(total.error_rate, 7.0 / 73.0);
    assert_eq!((total.prompt_tokens, total.completion_tokens), (630, 315));
    assert_eq!(total.tokens, 945);
}

#[test]
fn tenants_keys_and_routes_are_tallied_apart() {
    let summary = summary();
    let tenants: Vec<_> = summary
        .tenants
        .iter()
        .map(|row| (row.tenant.as_deref(), row.stats.requests, row.stats.errors))
        .collect();
    assert_eq!(tenants, [(Some("acme"), 65, 0), (None, 8, 7)]);

    let keys: Vec<_> = summary
        .keys
        .iter()
        .map(|row| {
            let s = &row.stats;
            (
                row.key_id.as_deref(),
                row.tenant.as_deref(),
                s.requests,
                s.errors,
                s.http_429,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (Some("a"), Some("acme"), 65, 0, 5),
            (Some("b"), None, 6, 5, 0),
            (None, None, 2, 2, 0),
        ]
    );
    let a = &summary.keys[0].stats;
    assert_eq!((a.tokens, a.http_429_rate), (900, 5.0 / 65.0));

    let routes: Vec<_> = summary
        .top_routes
        .iter()
        .map(|row| (row.route.as_deref(), row.stats.requests))
        .collect();
    assert_eq!(routes, [(Some("/v1/"), 69), (None, 4)]);
}

#[test]
fn latency_percentiles_are_nearest_rank() {
    let summary = summary();
    // a's 60 successes took 1 to 60 µs, its 5 refusals 100 µs.
    let a = summary.keys[0].stats.latency_us;
    assert_eq!(
        a,
        Some(Latency {
            p50: 33,
            p90: 59,
            p99: 100,
            max: 100
        })
    );
    // All 73: those, b's six at 200 µs and two at 50 µs.
    let total = summary.total.latency_us;
    assert_eq!(
        total,
        Some(Latency {
            p50: 37,
            p90: 100,
            p99: 200,
            max: 200
        })
    );
}

#[test]
fn long_latencies_keep_their_precision_in_every_group() {
    let mut report = Report::new(None);
    let mut log = Vec::new();
    for latency_us in [1500, 250_000, 2_000_000, 90_000_000_000] {
        of_a(HOUR_START_NS, latency_us).write_to(&mut log);
    }
    report.read(&log[..]).expect("read from memory");
    let summary = report.summary();
    let within = |got: u64, want: u64, share: f64| {
        let error = got.abs_diff(want) as f64 / want as f64;
        assert!(error <= share, "{got} is not within {share} of {want}");
    };
    // Groups keep 2 significant digits (1%), the total 3 (0.1%).
    for (latency, share) in [
        (summary.keys[0].stats.latency_us, 0.01),
        (summary.top_routes[0].stats.latency_us, 0.01),
        (summary.total.latency_us, 0.001),
    ] {
        let latency = latency.expect("records");
        within(latency.p50, 250_000, share);
        within(latency.p90, 90_000_000_000, share);
        // The largest is kept exactly, whatever the precision.
        assert_eq!(latency.max, 90_000_000_000);
    }
}

#[test]
fn forecasts_count_the_window_and_project_the_last_hour() {
    let summary = summary();
    let got: Vec<_> = summary
        .forecasts
        .iter()
        .map(|f| {
            (
                f.key_id.as_str(),
                f.window,
                f.limit,
                f.used,
                f.remaining,
                f.recent_per_hour,
                f.outcome,
                f.runs_out_at.as_deref(),
                f.resets_at.as_str(),
            )
        })
        .collect();
    // As of 16:29:30. The last hour (after 15:29:30) holds all 60 charged requests; the
    // refusals are not charged. The 16:00 hour holds the 30 from 16:00 on: 70 left, at 60
    // an hour that lasts the hour. The day holds 60 of 70: 10 left, 10 minutes away.
    assert_eq!(
        got,
        [
            (
                "a",
                "hour",
                100,
                30,
                70,
                60.0,
                Outcome::Lasts,
                None,
                "2026-12-04T17:00:00.000Z"
            ),
            (
                "a",
                "day",
                70,
                60,
                10,
                60.0,
                Outcome::RunsOut,
                Some("2026-12-04T16:39:30.000Z"),
                "2026-12-05T00:00:00.000Z"
            ),
        ]
    );
    assert_eq!(summary.forecasts[0].tenant.as_deref(), Some("acme"));
}

#[test]
fn answers_of_a_retired_route_are_not_charged() {
    let mut log = Vec::new();
    of_a(HOUR_START_NS, 10).write_to(&mut log);
    for _ in 0..3 {
        let gone = Record {
            status: 410,
            upstream: None,
            upstream_key: None,
            upstream_latency_us: None,
            prompt_tokens: None,
            completion_tokens: None,
            error_code: Some("route_retired"),
            ..of_a(HOUR_START_NS + MINUTE_NS, 10)
        };
        gone.write_to(&mut log);
    }
    let mut report = Report::new(Some(&config()));
    report.read(&log[..]).expect("read from memory");
    let summary = report.summary();
    let used: Vec<_> = summary
        .forecasts
        .iter()
        .map(|f| (f.window, f.used))
        .collect();
    assert_eq!(used, [("hour", 1), ("day", 1)]);
    assert_eq!(summary.keys[0].stats.requests, 4);
}

#[test]
fn the_table_and_the_json_show_the_same_numbers() {
    let summary = summary();
    let mut text = Vec::new();
    write_table(&summary, &mut text).expect("write to memory");
    let text = String::from_utf8(text).unwrap_or_default();
    assert!(text.starts_with(
        "73 records from 2026-12-04T15:00:00.000Z to 2026-12-04T16:29:30.000Z; \
         malformed lines skipped: 5\n"
    ));
    // The rows whose first cell is `first`, as words.
    let rows = |first: &str| -> Vec<Vec<&str>> {
        text.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|words| words.first() == Some(&first))
            .collect()
    };
    assert_eq!(
        rows("all"),
        [["all", "73", "7", "9.59", "5", "6.85", "945", "0.0", "0.1", "0.2", "0.2"]]
    );
    assert_eq!(rows("b")[0][..6], ["b", "-", "6", "5", "83.33", "0"]);
    let a = rows("a");
    assert_eq!(a.len(), 3, "a's key row and two forecast rows");
    assert_eq!(a[0][..4], ["a", "acme", "65", "0"]);
    assert_eq!(
        a[2],
        [
            "a",
            "acme",
            "day",
            "70",
            "60",
            "10",
            "60.0",
            "2026-12-05T00:00:00.000Z",
            "runs",
            "out",
            "at",
            "2026-12-04T16:39:30.000Z"
        ]
    );

    let json = serde_json::to_value(&summary).unwrap_or_default();
    assert_eq!(json["total"]["requests"], 73);
    assert_eq!(json["total"]["latency_us"]["p99"], 200);
    assert_eq!(json["keys"][2]["key_id"], serde_json::Value::Null);
    assert_eq!(json["forecasts"][1]["outcome"], "runs_out");
    assert_eq!(
        json["forecasts"][1]["runs_out_at"],
        "2026-12-04T16:39:30.000Z"
    );
}

#[test]
fn without_a_config_or_records_there_is_nothing_to_forecast() {
    let mut report = Report::new(None);
    report.read(&log()[..]).expect("read from memory");
    assert!(report.summary().forecasts.is_empty());

    let empty = Report::new(Some(&config())).summary();
    assert_eq!((empty.records, empty.total.latency_us), (0, None));
    assert!(empty.forecasts.is_empty() && empty.keys.is_empty());
    let mut text = Vec::new();
    write_table(&empty, &mut text).expect("write to memory");
    assert_eq!(text, b"no records; malformed lines skipped: 0\n");
}
