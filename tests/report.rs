//! `keygate report` run as a binary over access logs written by the gateway's own access log
//! writer, rotated across several files: exact totals, forecasts, and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keygate::accesslog::{AccessLog, Options, Record, RequestIds};

/// 2026-12-04T12:00:00Z in nanoseconds.
const NOON_NS: u64 = 1_796_385_600_000_000_000;
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
quota = { per_hour = 50, per_day = 100 }
[[client_key]]
id = "b"
secret = "kg-b"
"#;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("keygate-report-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A successful chat completion of key `a`.
fn of_a(ids: &RequestIds, ts: u64) -> Record<'static> {
    Record {
        ts,
        request_id: ids.next_id(),
        tenant: Some("acme"),
        key_id: Some("a"),
        method: b"POST",
        path: b"/v1/chat/completions",
        route: Some("/v1/"),
        upstream: Some("up"),
        upstream_key: Some("pk-1"),
        status: 200,
        latency_us: 1000,
        upstream_latency_us: Some(900),
        bytes_in: 300,
        bytes_out: 700,
        prompt_tokens: Some(100),
        completion_tokens: Some(50),
        retries: 0,
        error_code: None,
    }
}

/// Writes the test's traffic through the access log, rotating every few lines, and returns
/// every file it made. Key `a`: one request a minute from 11:00 to 12:29, then three
/// refusals at 12:29:30. Key `b`: seven requests at 12:00, two of them failing upstream.
fn write_logs(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join("access.log");
    let mut log = AccessLog::open(Options {
        max_bytes: 8 << 10,
        keep: 100,
        batch_bytes: 1024,
        ..Options::new(&path)
    })
    .expect("open the access log");
    let ids = RequestIds::new(0, std::time::SystemTime::now());
    let mut shard = log.shard_log();
    for minute in 0..90 {
        shard.record(&of_a(&ids, NOON_NS - 60 * MINUTE_NS + minute * MINUTE_NS));
    }
    for _ in 0..3 {
        shard.record(&Record {
            status: 429,
            upstream: None,
            upstream_key: None,
            upstream_latency_us: None,
            prompt_tokens: None,
            completion_tokens: None,
            error_code: Some("rate_limit_exceeded"),
            ..of_a(&ids, NOON_NS + 29 * MINUTE_NS + MINUTE_NS / 2)
        });
    }
    for status in [200, 200, 200, 200, 200, 500, 500] {
        shard.record(&Record {
            tenant: None,
            key_id: Some("b"),
            status,
            prompt_tokens: None,
            completion_tokens: None,
            ..of_a(&ids, NOON_NS)
        });
    }
    shard.flush();
    log.finish().expect("finish the access log");
    assert_eq!((log.written(), log.dropped()), (100, 0));

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the log dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("access.log"))
        })
        .collect();
    files.sort();
    files
}

fn report(args: &[&Path], extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command.arg("report").arg("--log").args(args).args(extra);
    command.output().expect("run keygate report")
}

#[test]
fn report_sums_rotated_logs_and_forecasts_quotas() {
    let dir = TempDir::new("sums");
    let files = write_logs(&dir.0);
    assert!(files.len() >= 3, "rotated into several files: {files:?}");
    // A line no gateway wrote.
    let last = files.last().expect("a file");
    let mut text = std::fs::read(last).expect("read a log");
    text.extend_from_slice(b"{\"not\":\"a record\"}\n");
    std::fs::write(last, text).expect("write a log");

    let config = dir.0.join("keygate.toml");
    std::fs::write(&config, CONFIG).expect("write the config");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = report(&paths, &["--config", &config.to_string_lossy(), "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON out");

    assert_eq!(json["records"], 100);
    assert_eq!(json["malformed_lines"], 1);
    assert_eq!(json["first"], "2026-12-04T11:00:00.000Z");
    assert_eq!(json["last"], "2026-12-04T12:29:30.000Z");
    let total = &json["total"];
    assert_eq!(
        (
            &total["requests"],
            &total["errors"],
            &total["http_429"],
            &total["tokens"]
        ),
        (&100.into(), &2.into(), &3.into(), &13_500.into())
    );
    assert_eq!(total["latency_us"]["p50"], 1000);

    let keys: Vec<_> = json["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| (k["key_id"].clone(), k["requests"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(keys, [("a".into(), 93.into()), ("b".into(), 7.into())]);

    // The last hour (after 11:29:30) holds 60 of a's requests: 60 an hour. The 12:00 hour
    // has used 30 of 50, the day 90 of 100.
    let forecast = |i: usize, field: &str| json["forecasts"][i][field].clone();
    assert_eq!(forecast(0, "window"), "hour");
    assert_eq!(
        (forecast(0, "used"), forecast(0, "remaining")),
        (30.into(), 20.into())
    );
    assert_eq!(forecast(0, "recent_per_hour"), 60.0);
    assert_eq!(forecast(0, "outcome"), "runs_out");
    assert_eq!(forecast(0, "runs_out_at"), "2026-12-04T12:49:30.000Z");
    assert_eq!(forecast(1, "window"), "day");
    assert_eq!(
        (forecast(1, "used"), forecast(1, "remaining")),
        (90.into(), 10.into())
    );
    assert_eq!(forecast(1, "runs_out_at"), "2026-12-04T12:39:30.000Z");
    assert_eq!(forecast(1, "resets_at"), "2026-12-05T00:00:00.000Z");
    assert_eq!(json["forecasts"].as_array().map(Vec::len), Some(2));

    // The table says the same.
    let output = report(&paths, &["--config", &config.to_string_lossy()]);
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.starts_with("100 records from 2026-12-04T11:00:00.000Z to "),
        "{table}"
    );
    let day = table
        .lines()
        .find(|line| line.starts_with("a ") && line.contains(" day "))
        .unwrap_or_default();
    assert!(
        day.ends_with("runs out at 2026-12-04T12:39:30.000Z"),
        "{table}"
    );
}

#[test]
fn unreadable_logs_and_invalid_configs_fail_with_their_codes() {
    let dir = TempDir::new("fail");
    let missing = dir.0.join("missing.log");
    let output = report(&[&missing], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open"));

    let log = dir.0.join("access.log");
    std::fs::write(&log, b"").expect("write a log");
    let config = dir.0.join("bad.toml");
    std::fs::write(&config, "[gateway]\n").expect("write a config");
    let output = report(&[&log], &["--config", &config.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());

    let output = report(&[&log], &[]);
    assert!(output.status.success());
    assert_eq!(output.stdout, b"no records; malformed lines skipped: 0\n");
}
