//! Black-box tests of `loadtest idle`: the real binary against small std TCP servers written
//! here, which count how many connections are open at once and what arrives on them, and
//! against the real mock. Runs are checked through `--json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::Mock;

/// How long any one `loadtest idle` may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `command`, failing the test past `RUN_LIMIT`.
fn finish(command: Command) -> Output {
    wait(spawn(command))
}

/// Starts `command` with its output piped.
fn spawn(mut command: Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadtest idle")
}

/// Waits for `child` to end, failing the test past `RUN_LIMIT`.
fn wait(child: Child) -> Output {
    support::finish(child, RUN_LIMIT)
}

/// Runs `loadtest idle --target TARGET ARGS --json` and returns the summary.
fn idle(target: SocketAddr, args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command
        .args(["idle", "--target", &target.to_string(), "--json"])
        .args(args);
    summary_of(&finish(command))
}

fn summary_of(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest idle failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        panic!("stdout is not JSON ({err}): {stdout}")
    })
}

/// What a [`Server`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// Connections answered and open now, and the most open at once.
    open: usize,
    peak: usize,
    /// Requests answered, with the `Authorization` value of each.
    requests: Vec<String>,
    /// Bytes that arrived after a connection's one request.
    extra_bytes: usize,
}

/// A server that answers one request per connection and then keeps the connection open until
/// the client closes it, or, with `close_after_all`, until it has answered that many
/// requests. Every `close_every`-th response (from the first) says `Connection: close`.
struct Server {
    addr: SocketAddr,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl Server {
    fn start(close_every: Option<usize>, close_after_all: Option<usize>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                let close = close_every.is_some_and(|every| index % every == 0);
                thread::spawn(move || serve(stream, &shared, close, close_after_all));
            }
        });
        Server { addr, seen }
    }

    /// Waits (at most `RUN_LIMIT`) until no connection is open, then returns what was seen.
    fn when_all_closed(&self) -> std::sync::MutexGuard<'_, Seen> {
        let (seen, changed) = &*self.seen;
        let (seen, _) = changed
            .wait_timeout_while(seen.lock().unwrap(), RUN_LIMIT, |seen| seen.open > 0)
            .unwrap();
        assert_eq!(seen.open, 0, "connections still open");
        seen
    }
}

fn serve(
    stream: TcpStream,
    shared: &(Mutex<Seen>, Condvar),
    close: bool,
    close_after_all: Option<usize>,
) {
    let (seen, changed) = shared;
    let mut reader = BufReader::new(stream);
    let mut authorization = String::new();
    let mut length = 0;
    let mut lines = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            // The load generator's probe of the address connects and sends nothing.
            if lines == 0 {
                return;
            }
            break;
        }
        lines += 1;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let field = if close { "Connection: close\r\n" } else { "" };
    let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{field}\r\nok");
    let _ = reader.get_mut().write_all(response.as_bytes());
    {
        let mut seen = seen.lock().unwrap();
        seen.requests.push(authorization);
        seen.open += 1;
        seen.peak = seen.peak.max(seen.open);
        changed.notify_all();
    }

    if !close {
        match close_after_all {
            Some(all) => {
                let seen = seen.lock().unwrap();
                let _ = changed
                    .wait_timeout_while(seen, RUN_LIMIT, |seen| seen.requests.len() < all)
                    .unwrap();
            }
            None => {
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                seen.lock().unwrap().extra_bytes += rest.len();
            }
        }
    }
    drop(reader);
    let mut seen = seen.lock().unwrap();
    seen.open -= 1;
    changed.notify_all();
}

#[test]
fn holds_every_connection_open_at_once_after_one_request() {
    let server = Server::start(None, None);
    let summary = idle(
        server.addr,
        &[
            "--connections",
            "50",
            "--hold",
            "500ms",
            "--keys",
            "3",
            "--keys-prefix",
            "k-",
        ],
    );

    assert_eq!(summary["connections"], 50);
    assert_eq!(summary["held"], 50);
    assert_eq!(summary["closed"], 0);
    assert_eq!(summary["errors"]["total"], 0);
    assert_eq!(summary["status"], serde_json::json!({"200": 50}));
    assert!(summary["hold_s"].as_f64().unwrap() >= 0.5);

    // The server saw all 50 open together, one request on each, nothing after it, and all
    // closed once the run ended.
    let seen = server.when_all_closed();
    assert_eq!(seen.peak, 50);
    assert_eq!(seen.requests.len(), 50);
    assert_eq!(seen.extra_bytes, 0);
    let mut keys = BTreeMap::new();
    for key in &seen.requests {
        *keys.entry(key.as_str()).or_insert(0) += 1;
    }
    let expected = BTreeMap::from([("Bearer k-0", 17), ("Bearer k-1", 17), ("Bearer k-2", 16)]);
    assert_eq!(keys, expected);
}

#[test]
fn connections_the_server_closes_are_counted_and_end_the_hold_early() {
    // Every 4th response closes its connection; the rest are closed by the server once all
    // 20 are answered. The hold (far beyond RUN_LIMIT) ends when none is left open.
    let server = Server::start(Some(4), Some(20));
    let summary = idle(
        server.addr,
        &[
            "--connections",
            "20",
            "--hold",
            "10m",
            "--concurrency",
            "20",
        ],
    );

    assert_eq!(summary["status"], serde_json::json!({"200": 20}));
    assert_eq!(summary["closed"], 20);
    assert_eq!(summary["held"], 0);
    assert_eq!(summary["errors"]["total"], 0);
    assert_eq!(server.when_all_closed().requests.len(), 20);
}

#[test]
fn sigterm_ends_the_hold_and_closes_the_connections() {
    let server = Server::start(None, None);
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command.args([
        "idle",
        "--target",
        &server.addr.to_string(),
        "--json",
        "--connections",
        "30",
        "--hold",
        "10m",
    ]);
    let idle = spawn(command);
    {
        let (seen, changed) = &*server.seen;
        let seen = changed
            .wait_timeout_while(seen.lock().unwrap(), RUN_LIMIT, |seen| seen.open < 30)
            .unwrap();
        assert_eq!(seen.0.open, 30, "connections open before the signal");
    }
    support::signal(idle.id(), "TERM");
    let output = wait(idle);

    let summary = support::interrupted_summary(&output, "TERM");
    assert_eq!(summary["held"], 30);
    assert!(summary["hold_s"].as_f64().unwrap() < 60.0);
    assert_eq!(server.when_all_closed().requests.len(), 30);
}

#[test]
fn a_signal_while_opening_counts_what_was_not_opened() {
    // A server that answers its first 10 connections and then stops answering: with 4
    // openers, 4 connections wait for an answer and 16 are never begun. (The first connection
    // it accepts is the start's check that the target can be reached.)
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new((Mutex::new(0usize), Condvar::new()));
    let counter = Arc::clone(&accepted);
    thread::spawn(move || {
        let mut silent = Vec::new();
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            if index <= 10 {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
            silent.push(stream);
            let (count, changed) = &*counter;
            *count.lock().unwrap() += 1;
            changed.notify_all();
        }
    });

    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command.args(["idle", "--target", &addr.to_string(), "--connections", "30"]);
    command.args(["--concurrency", "4", "--hold", "10m"]);
    let idle = spawn(command);
    {
        let (count, changed) = &*accepted;
        let count = changed
            .wait_timeout_while(count.lock().unwrap(), RUN_LIMIT, |count| *count < 15)
            .unwrap();
        assert_eq!(*count.0, 15, "connections accepted before the signal");
    }
    support::signal(idle.id(), "INT");
    let output = support::finish(idle, RUN_LIMIT);

    assert_eq!(output.status.code(), Some(130));
    let text = String::from_utf8_lossy(&output.stdout);
    for line in [
        "opened      10 of 30 connections, one request each, in ",
        "status      200: 10\n",
        "errors      0 ",
        "held        10 for 0.000 s\n",
        "interrupted by SIGINT\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // No hold began, so none is announced or ended on stderr.
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("interrupted while opening"), "{log}");
    assert!(
        !log.contains("holding") && !log.contains("hold over"),
        "{log}"
    );
}

#[test]
fn failures_are_counted_by_kind() {
    // A server that closes every connection without answering.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0; 1024];
            let _ = stream.read(&mut head);
        }
    });

    let summary = idle(addr, &["--connections", "5", "--hold", "0s"]);
    assert_eq!(summary["errors"]["closed"], 5);
    assert_eq!(summary["errors"]["total"], 5);
    assert_eq!(summary["held"], 0);
    assert_eq!(summary["status"], serde_json::json!({}));
}

/// The hard open-files limit of a shell started here, or `None` when unlimited.
fn hard_open_files_limit() -> Option<u64> {
    let output = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("run sh");
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

#[test]
fn raises_its_own_soft_open_files_limit() {
    const CONNECTIONS: u64 = 300;
    if hard_open_files_limit().is_some_and(|hard| hard < CONNECTIONS + 128) {
        eprintln!(
            "skipped: the hard open-files limit is below {}",
            CONNECTIONS + 128
        );
        return;
    }
    let mock = Mock::start(&[]);
    // A soft limit far below the connections asked for, as a login shell's 1024 is below
    // 10,000.
    let script = format!(
        "ulimit -Sn 64 && exec \"$0\" idle --target {} --connections {CONNECTIONS} \
         --hold 0s --json",
        mock.addr
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script, env!("CARGO_BIN_EXE_loadtest")]);
    let summary = summary_of(&finish(command));
    assert_eq!(summary["held"], CONNECTIONS);
    assert_eq!(summary["errors"]["total"], 0);
}

#[test]
fn refuses_more_connections_than_the_hard_limit_allows() {
    let mock = Mock::start(&[]);
    let script = format!(
        "ulimit -n 128 && exec \"$0\" idle --target {} --connections 1000",
        mock.addr
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script, env!("CARGO_BIN_EXE_loadtest")]);
    let output = finish(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1000 connections need") && stderr.contains("the limit is 128"),
        "{stderr}"
    );
}
