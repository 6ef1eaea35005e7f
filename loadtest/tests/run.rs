//! Black-box tests of `loadtest run`: the real binary against the real mock on 127.0.0.1 port
//! 0, and against small std TCP servers written here that record what they receive or
//! misbehave on purpose. Every run is bounded by `--requests` and checked through `--json`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::Mock;

/// How long any one `loadtest run` may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Starts `loadtest run --target TARGET --warmup 0s ARGS`.
fn start(target: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--target", target, "--warmup", "0s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadtest run")
}

/// Waits for `child` to end, failing the test past `RUN_LIMIT`.
fn finish(child: Child) -> Output {
    support::finish(child, RUN_LIMIT)
}

/// Runs `loadtest run --target TARGET --warmup 0s ARGS`, failing the test past `RUN_LIMIT`.
fn loadtest(target: &str, args: &[&str]) -> Output {
    finish(start(target, args))
}

/// Runs with `--json` and returns the summary.
fn summary(target: &str, args: &[&str]) -> Value {
    let output = loadtest(target, &[args, &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest run failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        panic!("stdout is not JSON ({err}): {stdout}")
    })
}

fn statuses(summary: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(summary["status"].clone()).expect("status counts")
}

#[test]
fn two_thousand_requests_to_the_mock() {
    let mock = Mock::start(&[]);
    let summary = summary(
        &mock.addr.to_string(),
        &["--requests", "2000", "--connections", "16"],
    );

    assert_eq!(summary["requests"], 2000);
    assert_eq!(
        statuses(&summary),
        BTreeMap::from([("200".to_owned(), 2000)])
    );
    assert_eq!(summary["errors"]["total"], 0);
    assert!(summary["requests_per_second"].as_f64().unwrap() > 0.0);
    assert!(summary["duration_s"].as_f64().unwrap() > 0.0);

    let latency = &summary["latency_us"];
    let order = ["min", "p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let values: Vec<u64> = order
        .iter()
        .map(|name| {
            latency[name]
                .as_u64()
                .unwrap_or_else(|| panic!("latency {name}"))
        })
        .collect();
    assert!(values[0] >= 1, "{latency}");
    assert!(
        values.windows(2).all(|pair| pair[0] <= pair[1]),
        "{latency}"
    );
}

#[test]
fn pipelines_closes_chunks_and_statuses() {
    let mock = Mock::start(&[]);
    let cases: &[(&[&str], &str)] = &[
        // Every response closes: pipelined requests behind it are sent again elsewhere.
        (&["--pipeline", "4", "--header", "x-mock-close: 1"], "200"),
        (&["--pipeline", "8", "--header", "x-mock-chunked: 1"], "200"),
        (&["--header", "x-mock-no-length: 1"], "200"),
        (&["--threads", "2", "--header", "x-mock-status: 429"], "429"),
        (&["--method", "GET", "--path", "/v1/models"], "200"),
    ];
    for (args, status) in cases {
        let args = [&["--requests", "600", "--connections", "6"], *args].concat();
        let summary = summary(&mock.addr.to_string(), &args);
        assert_eq!(summary["requests"], 600, "{args:?}: {summary}");
        assert_eq!(
            statuses(&summary),
            BTreeMap::from([(status.to_string(), 600)]),
            "{args:?}"
        );
        assert_eq!(summary["errors"]["total"], 0, "{args:?}: {summary}");
    }
}

#[test]
fn a_duration_run_records_after_the_warmup() {
    let mock = Mock::start(&[]);
    let output = loadtest(
        &mock.addr.to_string(),
        &["--duration", "600ms", "--connections", "4", "--json"],
    );
    assert!(output.status.success());
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let duration = summary["duration_s"].as_f64().unwrap();
    assert!((0.55..=0.65).contains(&duration), "{duration}");
    assert!(summary["requests"].as_u64().unwrap() > 0);
    // The progress line is on stderr, never on stdout.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("requests_per_second"));
}

#[test]
fn sigint_ends_a_run_early_with_the_summary_of_what_was_recorded() {
    let mock = Mock::start(&[]);
    let mut run = start(
        &mock.addr.to_string(),
        &[
            "--duration",
            "10m",
            "--connections",
            "4",
            "--json",
            "--progress",
        ],
    );
    // The first progress line comes after a second of load.
    support::wait_for_line(&mut BufReader::new(run.stderr.take().unwrap()), "req/s");
    support::signal(run.id(), "INT");
    let output = finish(run);

    let summary = support::interrupted_summary(&output, "INT");
    let duration = summary["duration_s"].as_f64().unwrap();
    assert!((1.0..60.0).contains(&duration), "{duration}");
    let requests = summary["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(
        statuses(&summary),
        BTreeMap::from([("200".to_owned(), requests)])
    );
    // Requests in flight at the signal are dropped, not counted as failed.
    assert_eq!(summary["errors"]["total"], 0);
}

#[test]
fn the_text_summary() {
    let mock = Mock::start(&[]);
    let output = loadtest(
        &mock.addr.to_string(),
        &["--requests", "100", "--keys", "5"],
    );
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for line in [
        "load        64 connections on 1 thread, pipeline 1, closed loop\n",
        "keys        5 (uniform), drawn per connection\n",
        "status      200: 100\n",
        "errors      0\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(text.contains("latency µs  p50 "), "{text}");
}

/// What a [`Recorder`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers 200 with a small body.
    Answer,
    /// Closes the connection without answering.
    Close,
    /// Never answers.
    Silent,
}

/// A tiny HTTP/1.1 server that records the `Authorization` of every request, with the number
/// of the connection it came on.
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Recorder {
    fn start(behaviour: Behaviour) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for (number, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                thread::spawn(move || serve(stream, number, behaviour, &log));
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves one connection of a [`Recorder`].
fn serve(
    stream: TcpStream,
    number: usize,
    behaviour: Behaviour,
    seen: &Mutex<Vec<(usize, String)>>,
) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut authorization = String::from("-");
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let field = line.trim_end();
            if field.is_empty() {
                break;
            }
            if let Some((name, value)) = field.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = value.trim().to_owned();
                } else if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a numeric Content-Length");
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push((number, authorization));
        match behaviour {
            Behaviour::Answer => {
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if writer.write_all(reply).is_err() {
                    return;
                }
            }
            Behaviour::Close => return,
            Behaviour::Silent => {}
        }
    }
}

/// The key in an `Authorization: Bearer KEY` value.
fn bearer(value: &str) -> &str {
    value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer credential: {value:?}"))
}

#[test]
fn keys_drawn_per_request_come_from_the_set() {
    let recorder = Recorder::start(Behaviour::Answer);
    let summary = summary(
        &recorder.addr,
        &[
            "--requests",
            "500",
            "--connections",
            "2",
            "--keys",
            "10",
            "--key-scope",
            "request",
        ],
    );
    assert_eq!(summary["requests"], 500);

    let seen = recorder.seen();
    assert_eq!(seen.len(), 500);
    let expected: HashSet<String> = (0..10).map(|index| format!("kg-bench-{index}")).collect();
    let used: HashSet<String> = seen
        .iter()
        .map(|(_, value)| bearer(value).to_owned())
        .collect();
    // 500 uniform draws over 10 keys miss one with a probability of about 1e-22.
    assert_eq!(used, expected);
    // Connection 0 is the start-up check, which sends nothing.
    let mut per_connection: BTreeMap<usize, HashSet<&str>> = BTreeMap::new();
    for (number, value) in &seen {
        per_connection
            .entry(*number)
            .or_default()
            .insert(bearer(value));
    }
    assert_eq!(per_connection.len(), 2, "{per_connection:?}");
    for (number, keys) in &per_connection {
        assert!(keys.len() > 1, "connection {number} used one key: {keys:?}");
    }
}

#[test]
fn keys_drawn_per_connection_stay_with_it_until_it_reconnects() {
    let recorder = Recorder::start(Behaviour::Answer);
    let summary = summary(
        &recorder.addr,
        &[
            "--requests",
            "300",
            "--connections",
            "3",
            "--keys",
            "1000",
            "--reconnect-every",
            "10",
        ],
    );
    assert_eq!(summary["requests"], 300);
    assert_eq!(summary["errors"]["total"], 0);

    let mut per_connection: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (number, value) in recorder.seen() {
        per_connection
            .entry(number)
            .or_default()
            .push(bearer(&value).to_owned());
    }
    // 10 requests per connection, but for the last of each of the three slots, which share
    // out the end of the run's 300 requests.
    let full = per_connection
        .values()
        .filter(|used| used.len() == 10)
        .count();
    assert!(full >= 27, "{per_connection:?}");
    let mut keys = HashSet::new();
    for (number, used) in &per_connection {
        assert!(used.len() <= 10, "connection {number}: {used:?}");
        assert!(
            used.iter().all(|key| key == &used[0]),
            "connection {number}: {used:?}"
        );
        keys.insert(used[0].clone());
    }
    // New connections draw new keys: 30 draws among 1000 keys rarely repeat much.
    assert!(keys.len() > 20, "{keys:?}");
}

#[test]
fn zipf_keys_favour_the_first_ranks() {
    let recorder = Recorder::start(Behaviour::Answer);
    let args = [
        "--requests",
        "4000",
        "--connections",
        "4",
        "--keys",
        "10",
        "--key-scope",
        "request",
        "--key-dist",
        "zipf",
        "--seed",
        "11",
    ];
    summary(&recorder.addr, &args);

    let mut counts = [0u32; 10];
    for (_, value) in recorder.seen() {
        let index: usize = bearer(&value)["kg-bench-".len()..].parse().unwrap();
        counts[index] += 1;
    }
    // With s = 1 the first key has weight 1 / H(10), about 34%; the second half as much.
    assert!(counts.iter().all(|&count| count <= counts[0]), "{counts:?}");
    assert!((1150..1600).contains(&counts[0]), "{counts:?}");
    let ratio = f64::from(counts[0]) / f64::from(counts[1]);
    assert!((1.6..2.5).contains(&ratio), "{counts:?}");
}

#[test]
fn keys_from_a_file() {
    let dir = std::env::temp_dir().join(format!("loadtest-run-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "alpha\nbeta\n\ngamma\n").unwrap();

    let recorder = Recorder::start(Behaviour::Answer);
    let file_arg = file.to_str().unwrap();
    summary(
        &recorder.addr,
        &[
            "--requests",
            "200",
            "--connections",
            "2",
            "--keys-file",
            file_arg,
            "--key-scope",
            "request",
        ],
    );
    let used: HashSet<String> = recorder
        .seen()
        .iter()
        .map(|(_, value)| bearer(value).to_owned())
        .collect();
    let expected: HashSet<String> = ["alpha", "beta", "gamma"].map(String::from).into();
    assert_eq!(used, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn requests_without_keys_carry_no_authorization() {
    let recorder = Recorder::start(Behaviour::Answer);
    summary(&recorder.addr, &["--requests", "20", "--connections", "2"]);
    assert!(recorder.seen().iter().all(|(_, value)| value == "-"));
}

#[test]
fn a_server_that_closes_without_answering() {
    let recorder = Recorder::start(Behaviour::Close);
    let summary = summary(&recorder.addr, &["--requests", "50", "--connections", "2"]);
    assert_eq!(summary["requests"], 0);
    assert_eq!(summary["errors"]["closed"], 50);
    assert_eq!(summary["errors"]["total"], 50);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let recorder = Recorder::start(Behaviour::Silent);
    let args = [
        "--requests",
        "4",
        "--connections",
        "2",
        "--timeout",
        "200ms",
    ];
    let summary = summary(&recorder.addr, &args);
    assert_eq!(summary["requests"], 0);
    assert_eq!(summary["errors"]["timeout"], 4);
}

#[test]
fn an_unreachable_target_fails_at_once() {
    // A port that was just free is almost surely still free.
    let addr: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let output = loadtest(&addr.to_string(), &["--requests", "10"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn bad_options_are_refused() {
    let recorder = Recorder::start(Behaviour::Answer);
    let cases: &[&[&str]] = &[
        &["--header", "no colon"],
        &["--header", "Content-Length: 5"],
        &["--keys", "3", "--header", "Authorization: Bearer x"],
        &["--duration", "10 parsecs"],
        &["--connections", "1", "--threads", "2"],
        &["--keys", "0"],
        &["--keys-file", "/nonexistent/keys"],
        &["--timeout", "0s"],
        &["--keys-prefix", "kg-"],
    ];
    for args in cases {
        let output = loadtest(&recorder.addr, &[&["--requests", "1"], *args].concat());
        assert!(!output.status.success(), "{args:?} was accepted");
    }
}
