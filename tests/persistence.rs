//! Quota counters survive restarts: a clean stop (SIGTERM) writes them, a crash (kill -9)
//! loses at most one persist interval, and damaged state is either recovered from its
//! `.prev` copy or refused, never silently zeroed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::keys::*;
use common::*;

/// Two shards in front of `upstream`, counters in `state`, one key "p5" allowed 5 an hour.
fn config(upstream: std::net::SocketAddr, state: &Path, extra: &str) -> String {
    config_with(2, upstream, state, extra)
}

fn config_with(
    workers: usize,
    upstream: std::net::SocketAddr,
    state: &Path,
    extra: &str,
) -> String {
    let gateway = format!("state_dir = {:?}\n{extra}", state.display().to_string());
    keyed_config(
        workers,
        upstream,
        &gateway,
        &client_key("p5", "quota = { per_hour = 5 }"),
    )
}

/// Sends `n` requests of key p5, each on a fresh connection, and returns their statuses.
fn use_key(gateway: &Gateway, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let response = roundtrip(gateway.addr(), &get_models("kg-p5"));
            if response.status != 200 {
                assert_error(&response, 429, "quota_exceeded");
            }
            response.status
        })
        .collect()
}

fn snapshots(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("quota-shard-") && n.ends_with(".json"))
    });
    files
}

#[test]
fn counts_survive_a_clean_stop() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    stay_in_one_window(3600, Duration::from_secs(30));

    let mut gateway = Gateway::start(&config(mock.addr, &state.0, ""));
    assert_eq!(use_key(&gateway, 3), [200, 200, 200]);
    gateway.process.signal("TERM");
    let status = gateway.process.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{:#?}",
        gateway.process.log_lines()
    );
    assert!(!snapshots(&state.0).is_empty(), "nothing written on stop");

    let gateway = Gateway::start(&config(mock.addr, &state.0, ""));
    assert_eq!(use_key(&gateway, 3), [200, 200, 429]);
}

/// A tenant's counters are persisted and restored like a key's.
#[test]
fn tenant_counts_survive_a_clean_stop() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    let gateway_extra = format!("state_dir = {:?}", state.0.display().to_string());
    let rest = "[[tenant]]\nname = \"acme\"\nquota = { per_hour = 5 }\n\n".to_owned()
        + &client_key("t1", "tenant = \"acme\"")
        + &client_key("t2", "tenant = \"acme\"");
    let config = keyed_config(2, mock.addr, &gateway_extra, &rest);
    stay_in_one_window(3600, Duration::from_secs(30));
    let statuses = |gateway: &Gateway, keys: &[&str]| -> Vec<u16> {
        keys.iter()
            .map(|key| roundtrip(gateway.addr(), &get_models(key)).status)
            .collect()
    };

    let mut gateway = Gateway::start(&config);
    assert_eq!(statuses(&gateway, &["kg-t1", "kg-t2", "kg-t1"]), [200; 3]);
    gateway.process.signal("TERM");
    let status = gateway.process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));

    let gateway = Gateway::start(&config);
    assert_eq!(
        statuses(&gateway, &["kg-t2", "kg-t2", "kg-t2"]),
        [200, 200, 429]
    );
}

/// Snapshots are read whatever shard count wrote them: the key's new owner takes its counts.
#[test]
fn counts_survive_a_change_of_shard_count() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    stay_in_one_window(3600, Duration::from_secs(30));

    for (workers, expected) in [(2, [200, 200]), (3, [200, 200]), (1, [200, 429])] {
        let mut gateway = Gateway::start(&config_with(workers, mock.addr, &state.0, ""));
        assert_eq!(use_key(&gateway, 2), expected, "{workers} shards");
        gateway.process.signal("TERM");
        let status = gateway.process.wait_exit(Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(0));
    }
}

#[test]
fn counts_survive_a_crash_after_a_persist_interval() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    stay_in_one_window(3600, Duration::from_secs(30));

    let mut gateway = Gateway::start(&config(mock.addr, &state.0, "persist_interval = \"200ms\""));
    assert_eq!(use_key(&gateway, 3), [200, 200, 200]);
    // More than two intervals: the snapshot holding all three is on disk.
    thread::sleep(Duration::from_millis(600));
    gateway.process.child.kill().expect("kill -9");
    gateway.process.child.wait().expect("reaped");
    drop(gateway);

    let gateway = Gateway::start(&config(mock.addr, &state.0, "persist_interval = \"200ms\""));
    assert_eq!(use_key(&gateway, 3), [200, 200, 429]);
}

/// Runs `keygate run` on `config` until it exits (at most 15 s): exit code and stderr.
fn run_to_exit(config: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("config");
    let path = dir.0.join("keygate.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keygate");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate started on damaged state instead of refusing");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn damaged_state_and_its_copy_stop_the_start() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    let damaged = state.0.join("quota-shard-0.json");
    std::fs::write(&damaged, b"{\"format\":1,\"taken_at\":").unwrap();
    std::fs::write(state.0.join("quota-shard-0.json.prev"), b"garbage").unwrap();

    let (code, stderr) = run_to_exit(&config(mock.addr, &state.0, ""));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains(&damaged.display().to_string()),
        "the message does not name the file: {stderr}"
    );
    // Nothing was overwritten: the operator still has both files to look at.
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        b"{\"format\":1,\"taken_at\":"
    );
}

#[test]
fn a_damaged_snapshot_with_a_good_copy_starts_from_the_copy() {
    let mock = start_mock(&[]);
    let state = TempDir::new("state");
    stay_in_one_window(3600, Duration::from_secs(30));
    let now = unix_now() as u64;
    let hour = now - now % 3600;
    // The copy says four of the five requests of this hour are used.
    let prev = format!(
        r#"{{"format":1,"taken_at":{taken},"keys":{{"p5":{{"rate_tat":0,
        "windows":[{{"id":0,"used":0}},{{"id":{hour},"used":4}},{{"id":0,"used":0}},{{"id":0,"used":0}}],
        "tokens_tat":0,"tokens_day":{{"id":0,"used":0}}}}}},"tenants":{{}}}}"#,
        taken = now * 1_000_000_000
    );
    let damaged = state.0.join("quota-shard-0.json");
    std::fs::write(&damaged, b"\0\0garbage").unwrap();
    std::fs::write(state.0.join("quota-shard-0.json.prev"), prev).unwrap();

    let gateway = Gateway::start(&config(mock.addr, &state.0, ""));
    let log = gateway.process.log_lines();
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains(&damaged.display().to_string())),
        "no warning naming the file: {log:#?}"
    );
    assert_eq!(use_key(&gateway, 2), [200, 429]);
}
