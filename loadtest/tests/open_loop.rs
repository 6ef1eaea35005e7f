//! Black-box tests of `loadtest run --rate` (the open loop), `--mix` and the progress line:
//! the real binary against small std TCP servers written here that answer after a fixed
//! delay, and stall once on purpose, and against the real mock.
//!
//! Timing bounds are generous: each is far from where a working tester lands and still far
//! from where a broken one would (a closed loop instead of the rate, latency measured from
//! the write instead of the due time).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::Mock;

/// How long any one `loadtest run` may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Starts `loadtest run --target TARGET --warmup 0s ARGS` (ARGS may give a `--warmup` of
/// their own).
fn start(target: &str, args: &[&str]) -> Child {
    let warmup: &[&str] = if args.contains(&"--warmup") {
        &[]
    } else {
        &["--warmup", "0s"]
    };
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--target", target])
        .args(warmup)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadtest run")
}

/// Runs `loadtest run` as [`start`] does, failing the test past `RUN_LIMIT`.
fn loadtest(target: &str, args: &[&str]) -> Output {
    support::finish(start(target, args), RUN_LIMIT)
}

/// Runs with `--json` and returns the summary.
fn summary(target: &str, args: &[&str]) -> Value {
    let output = loadtest(target, &[args, &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest run failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("the summary is JSON")
}

/// A latency figure of `summary`, in milliseconds.
fn ms(summary: &Value, group: &str, name: &str) -> f64 {
    let micros = summary[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{group}.{name} in {summary}"));
    micros as f64 / 1000.0
}

/// An HTTP/1.1 server that answers every request `delay` after reading it, one thread per
/// connection. With a stall, request number `after` (counted over all connections from 1)
/// makes every response, on every connection, wait until `length` after it arrived.
struct SlowServer {
    addr: String,
    requests: Arc<AtomicU64>,
    /// When each request had arrived, in the order they were counted.
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// A one-time stall of a [`SlowServer`].
#[derive(Debug, Clone, Copy)]
struct Stall {
    after: u64,
    length: Duration,
}

impl SlowServer {
    fn start(delay: Duration, stall: Option<Stall>) -> SlowServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the server");
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stalled_until = Arc::new(Mutex::new(None::<Instant>));
        let (counter, seen) = (Arc::clone(&requests), Arc::clone(&arrivals));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (counter, seen) = (Arc::clone(&counter), Arc::clone(&seen));
                let stalled_until = Arc::clone(&stalled_until);
                thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let counted = Counted {
                        requests: &counter,
                        arrivals: &seen,
                    };
                    serve(stream, delay, stall, counted, &stalled_until);
                });
            }
        });
        SlowServer {
            addr,
            requests,
            arrivals,
        }
    }
}

/// Where a [`SlowServer`] counts its requests.
#[derive(Clone, Copy)]
struct Counted<'a> {
    requests: &'a AtomicU64,
    arrivals: &'a Mutex<Vec<Instant>>,
}

/// Serves one connection of a [`SlowServer`] until the client closes it.
fn serve(
    stream: TcpStream,
    delay: Duration,
    stall: Option<Stall>,
    counted: Counted,
    stalled_until: &Mutex<Option<Instant>>,
) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    while let Some(length) = read_head(&mut reader) {
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let arrived = Instant::now();
        counted.arrivals.lock().unwrap().push(arrived);
        let number = counted.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut until = arrived + delay;
        {
            let mut stalled = stalled_until.lock().unwrap();
            if let Some(stall) = stall.filter(|stall| stall.after == number) {
                *stalled = Some(arrived + stall.length);
            }
            if let Some(end) = *stalled {
                until = until.max(end);
            }
        }
        thread::sleep(until.saturating_duration_since(Instant::now()));
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

/// Reads a request head; returns its Content-Length, or `None` at the end of the stream.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<usize> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let field = line.trim_end();
        if field.is_empty() {
            return Some(length);
        }
        if let Some((name, value)) = field.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
}

#[test]
fn the_open_loop_keeps_the_rate_and_sees_the_delay() {
    let server = SlowServer::start(Duration::from_millis(20), None);
    let (count, rate) = (400.0, 200.0);
    // 8 connections at 25 requests a second each: every request finds its connection idle.
    let summary = summary(
        &server.addr,
        &["--rate", "200", "--requests", "400", "--connections", "8"],
    );
    assert_eq!(summary["requests"], 400, "{summary}");
    assert_eq!(summary["errors"]["total"], 0, "{summary}");
    assert_eq!(summary["rate"], 200.0);

    // The last of 400 requests is due 399 / 200 s after the first and answered 20 ms later.
    // A closed loop on 8 connections would run at 8 / 20 ms = 400 requests a second.
    let expected = count / ((count - 1.0) / rate + 0.020);
    let measured = summary["requests_per_second"].as_f64().unwrap();
    assert!(
        (expected * 0.93..=expected * 1.03).contains(&measured),
        "{measured} req/s, expected {expected:.1}"
    );
    let duration = summary["duration_s"].as_f64().unwrap();
    assert!((1.9..2.3).contains(&duration), "{duration}");

    // Latency is the server's delay plus a little: never under it, and not far over.
    let p50 = ms(&summary, "latency_us", "p50");
    let p90 = ms(&summary, "latency_us", "p90");
    let min = ms(&summary, "latency_us", "min");
    assert!(min >= 19.9, "min {min} ms");
    assert!((20.0..30.0).contains(&p50), "p50 {p50} ms");
    assert!(p90 < 45.0, "p90 {p90} ms");
    // Nothing queued, so the corrected latency is the service time.
    let service_p50 = ms(&summary, "service_time_us", "p50");
    assert!(
        (p50 - service_p50).abs() < 3.0,
        "{p50} against {service_p50}"
    );
}

#[test]
fn the_open_loop_counts_a_stall_that_the_closed_loop_hides() {
    let stall = Stall {
        after: 300,
        length: Duration::from_millis(500),
    };
    let server = SlowServer::start(Duration::from_millis(1), Some(stall));
    // 2,000 requests at 500 a second: 4 s, of which the stall holds 500 ms. The 250 requests
    // due meanwhile (12.5%) wait for it: from up to 500 ms, evenly spread, down to nothing.
    let open = summary(
        &server.addr,
        &["--rate", "500", "--requests", "2000", "--connections", "2"],
    );
    assert_eq!(open["requests"], 2000, "{open}");
    assert_eq!(open["errors"]["total"], 0, "{open}");
    let (p90, p99, max) = (
        ms(&open, "latency_us", "p90"),
        ms(&open, "latency_us", "p99"),
        ms(&open, "latency_us", "max"),
    );
    // Expected about 100 ms, 460 ms and 500 ms.
    assert!(p90 > 40.0, "p90 {p90} ms: {open}");
    assert!(p99 > 300.0, "p99 {p99} ms: {open}");
    assert!(max > 450.0, "max {max} ms: {open}");

    // Timed from the actual writes, in the same run, only the 2 requests in flight when the
    // stall began were slow: 0.1% of them, under the p99.
    let service_p99 = ms(&open, "service_time_us", "p99");
    let service_max = ms(&open, "service_time_us", "max");
    assert!(service_p99 < 100.0, "service p99 {service_p99} ms: {open}");
    assert!(service_max > 450.0, "service max {service_max} ms: {open}");

    // A closed loop on a server that stalls again sees the same: one slow request per
    // connection, and a p99 that does not show the stall.
    let server = SlowServer::start(Duration::from_millis(1), Some(stall));
    let closed = summary(&server.addr, &["--requests", "2000", "--connections", "2"]);
    assert_eq!(closed["requests"], 2000, "{closed}");
    assert!(closed.get("service_time_us").is_none());
    let closed_p99 = ms(&closed, "latency_us", "p99");
    assert!(closed_p99 < 100.0, "closed p99 {closed_p99} ms: {closed}");
    assert!(ms(&closed, "latency_us", "max") > 450.0, "{closed}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2000);
}

/// The share of `arrivals`, in time order, that came within `within` of the one before.
fn bunched(arrivals: &Mutex<Vec<Instant>>, within: Duration) -> f64 {
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    let close = arrivals
        .windows(2)
        .filter(|pair| pair[1] - pair[0] < within)
        .count();
    close as f64 / (arrivals.len() - 1) as f64
}

#[test]
fn the_open_loop_spreads_its_requests_within_a_millisecond() {
    // 4,000 requests a second on 8 connections: 4 fall due in every millisecond, one every
    // 250 µs. monoio's timers (`--tick 1ms`) wake all four on the same tick, so three of
    // every four arrive right behind another; the default tick (250 µs) sends each alone.
    let spread = |tick: &str| {
        let server = SlowServer::start(Duration::ZERO, None);
        let args = ["--rate", "4000", "--requests", "2000", "--connections", "8"];
        let summary = summary(&server.addr, &[&args[..], &["--tick", tick]].concat());
        assert_eq!(summary["requests"], 2000, "{summary}");
        assert_eq!(summary["errors"]["total"], 0, "{summary}");
        bunched(&server.arrivals, Duration::from_micros(60))
    };
    let fine = spread("250us");
    let coarse = spread("1ms");
    assert!(
        fine < 0.45,
        "{fine:.2} of requests bunched with the default tick"
    );
    assert!(
        coarse > 0.6,
        "{coarse:.2} of requests bunched with a 1 ms tick"
    );
}

#[test]
fn a_target_slower_than_the_rate_is_charged_for_what_it_held_back() {
    // 4 connections to a server answering in 200 ms take 20 requests a second at most; the
    // run asks for 200 a second, after a warm-up of 1 s in which the backlog starts.
    let server = SlowServer::start(Duration::from_millis(200), None);
    let run = summary(
        &server.addr,
        &[
            "--rate",
            "200",
            "--connections",
            "4",
            "--warmup",
            "1s",
            "--duration",
            "2s",
        ],
    );
    // What was written after the warm-up is recorded, though it fell due during it, and its
    // latency runs from then: over a second.
    let requests = run["requests"].as_u64().unwrap();
    assert!((20..=48).contains(&requests), "{requests}: {run}");
    assert!(ms(&run, "latency_us", "p50") > 1000.0, "{run}");
    assert!(ms(&run, "service_time_us", "p50") < 400.0, "{run}");
    // None of the 400 requests due in the recorded 2 s was sent: each connection was still
    // working through the warm-up's backlog.
    assert_eq!(run["unsent"], 400, "{run}");
    assert_eq!(run["duration_s"], 2.0, "{run}");

    // With a budget of requests, what is unsent is what is left of it, shared by the
    // connections rather than counted by each.
    let server = SlowServer::start(Duration::from_millis(200), None);
    let args = ["--rate", "200", "--connections", "4", "--duration", "2s"];
    let budgeted = summary(&server.addr, &[&args[..], &["--requests", "100"]].concat());
    let requests = budgeted["requests"].as_u64().unwrap();
    let unsent = budgeted["unsent"].as_u64().unwrap();
    assert!((20..=48).contains(&requests), "{requests}: {budgeted}");
    assert!(requests + unsent <= 100, "{budgeted}");
    assert!(unsent >= 40, "{budgeted}");
}

#[test]
fn a_target_that_stops_answering_is_measured_to_the_deadline() {
    // The server answers 50 requests, then holds every response for a minute.
    let stall = Stall {
        after: 50,
        length: Duration::from_secs(60),
    };
    let server = SlowServer::start(Duration::from_millis(1), Some(stall));
    let summary = summary(
        &server.addr,
        &["--rate", "100", "--connections", "4", "--duration", "2s"],
    );
    // 49 answers came in the first half second; the rate is over the whole 2 s.
    let requests = summary["requests"].as_u64().unwrap();
    assert!((45..=50).contains(&requests), "{requests}: {summary}");
    assert_eq!(summary["duration_s"], 2.0, "{summary}");
    let rate = summary["requests_per_second"].as_f64().unwrap();
    assert!(rate <= 25.0, "{rate} req/s: {summary}");
    // The 4 connections each wait for a response; the rest of the 200 due is unsent.
    let unsent = summary["unsent"].as_u64().unwrap();
    assert!((140..=152).contains(&unsent), "{unsent}: {summary}");
}

#[test]
fn an_interrupted_open_loop_counts_what_it_never_sent() {
    // As above, 50 answers and then a stall; the run is interrupted after 2 s instead.
    let stall = Stall {
        after: 50,
        length: Duration::from_secs(60),
    };
    let server = SlowServer::start(Duration::from_millis(1), Some(stall));
    let args = ["--rate", "100", "--connections", "4", "--duration", "10m"];
    let mut run = start(
        &server.addr,
        &[&args[..], &["--json", "--progress"]].concat(),
    );
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    support::wait_for_line(&mut stderr, "req/s");
    support::wait_for_line(&mut stderr, "req/s");
    support::signal(run.id(), "INT");
    let output = support::finish(run, RUN_LIMIT);

    let summary = support::interrupted_summary(&output, "INT");
    let duration = summary["duration_s"].as_f64().unwrap();
    assert!((1.9..30.0).contains(&duration), "{summary}");
    // Of the 100 a second due until the signal, the 50 answered and the 4 held by the stall
    // were sent; every other one is unsent.
    let requests = summary["requests"].as_u64().unwrap();
    let unsent = summary["unsent"].as_u64().unwrap();
    assert!((45..=50).contains(&requests), "{summary}");
    let due = 100.0 * duration;
    let accounted = (requests + unsent + 4) as f64;
    assert!(
        (due - 6.0..=due + 2.0).contains(&accounted),
        "{due} due: {summary}"
    );
}

#[test]
fn a_target_that_goes_away_fails_the_requests_due_at_the_rate() {
    // A server that answers for half a second, then closes its connections and its port.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(500);
        let served: Vec<_> = (0..2)
            .filter_map(|_| listener.accept().ok())
            .map(|(stream, _)| {
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while Instant::now() < until {
                        match read_head(&mut reader) {
                            Some(length) => {
                                let mut body = vec![0; length];
                                if reader.read_exact(&mut body).is_err() {
                                    return;
                                }
                                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                                let _ = writer.write_all(reply);
                            }
                            None => continue,
                        }
                    }
                })
            })
            .collect();
        for server in served {
            let _ = server.join();
        }
        // The listener goes with this thread: connects are refused from now on.
    });
    let summary = summary(
        &addr,
        &["--rate", "100", "--connections", "2", "--duration", "2s"],
    );
    // Up to 50 answered; the rest of the 200 due fail to connect, one for each that fell due (not
    // one every 10 ms of retrying), and are not unsent as well.
    let requests = summary["requests"].as_u64().unwrap();
    let failed = summary["errors"]["total"].as_u64().unwrap();
    let unsent = summary["unsent"].as_u64().unwrap();
    assert!((10..=55).contains(&requests), "{requests}: {summary}");
    let accounted = requests + failed + unsent;
    assert!((190..=202).contains(&accounted), "{accounted}: {summary}");
    assert!(
        summary["errors"]["connect"].as_u64().unwrap() >= 100,
        "{summary}"
    );
}

#[test]
fn a_server_that_stops_reading_cannot_hold_the_run() {
    // Accepts and never reads: a large request body fills the socket buffers and the write
    // waits. The run still ends at its deadline, the stuck writes failing at their timeout.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let held: Vec<_> = listener.incoming().filter_map(Result::ok).collect();
        drop(held);
    });
    let started = Instant::now();
    let summary = summary(
        &addr,
        &[
            "--rate",
            "10",
            "--connections",
            "1",
            "--duration",
            "3s",
            "--timeout",
            "1s",
            "--mix",
            "body=1",
            "--body-bytes",
            "8000000",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{summary}");
    assert_eq!(summary["requests"], 0, "{summary}");
    assert!(
        summary["errors"]["timeout"].as_u64().unwrap() >= 1,
        "{summary}"
    );
}

#[test]
fn a_duration_bounded_open_loop_sends_rate_times_duration() {
    let server = SlowServer::start(Duration::from_millis(2), None);
    let summary = summary(
        &server.addr,
        &["--rate", "300", "--duration", "2s", "--connections", "4"],
    );
    // 600 requests are due in 2 s; those answered after the deadline (a few) are left out.
    let requests = summary["requests"].as_u64().unwrap();
    assert!((570..=601).contains(&requests), "{requests}: {summary}");
    let sent = server.requests.load(Ordering::SeqCst);
    assert!(
        (590..=601).contains(&sent),
        "{sent} requests reached the server"
    );
}

#[test]
fn a_mix_of_plain_streamed_and_large_requests_to_the_mock() {
    let mock = Mock::start(&[]);
    let args = [
        "--requests",
        "2000",
        "--connections",
        "4",
        "--mix",
        "plain=2,stream=1,body=1",
        "--body-bytes",
        "100000",
        "--seed",
        "5",
    ];
    let summary = summary(&mock.addr.to_string(), &args);
    // The mock answers a stream with chunked events: each is read to its last chunk, or the
    // next response on the connection would be malformed.
    assert_eq!(summary["requests"], 2000, "{summary}");
    assert_eq!(summary["status"]["200"], 2000, "{summary}");
    assert_eq!(summary["errors"]["total"], 0, "{summary}");
    assert_eq!(summary["body_bytes"], 100000);

    let kinds = summary["by_kind"].as_array().expect("by_kind");
    let counts: Vec<(String, u64)> = kinds
        .iter()
        .map(|kind| {
            let name = kind["kind"].as_str().unwrap().to_owned();
            (name, kind["requests"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.iter().map(|(_, count)| count).sum::<u64>(), 2000);
    // Expected 1000, 500 and 500; a standard deviation is about 22.
    let expected = [("plain", 1000), ("stream", 500), ("body", 500)];
    for ((name, count), (want_name, want)) in counts.iter().zip(expected) {
        assert_eq!(name, want_name);
        assert!(count.abs_diff(want) < 120, "{counts:?}");
    }
}

#[test]
fn mix_options_are_checked() {
    let server = SlowServer::start(Duration::ZERO, None);
    let cases: &[&[&str]] = &[
        &["--mix", "plain=1,video=1"],
        &["--mix", "plain=0"],
        &["--mix", "plain=1", "--body", "{}"],
        &["--mix", "plain=1", "--method", "GET"],
        &["--mix", "plain=1", "--body-bytes", "10"],
        &["--body-bytes", "10"],
        &["--rate", "0"],
        &["--quiet", "--progress"],
    ];
    for args in cases {
        let output = loadtest(&server.addr, &[&["--requests", "1"], *args].concat());
        assert!(!output.status.success(), "{args:?} was accepted");
    }
}

#[test]
fn the_progress_line_only_when_asked_for_off_a_terminal() {
    let server = SlowServer::start(Duration::ZERO, None);
    let args = [
        "--duration",
        "1500ms",
        "--rate",
        "100",
        "--connections",
        "2",
    ];
    // stderr is a pipe here, not a terminal: no progress line unless --progress.
    let quiet = loadtest(&server.addr, &args);
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("req/s"));

    let shown = loadtest(&server.addr, &[&args[..], &["--progress"]].concat());
    assert!(shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(stderr.contains("req/s  errors 0"), "{stderr}");
    // The summary alone goes to stdout.
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.starts_with("target ") && !stdout.contains("req/s  errors"),
        "{stdout}"
    );
}
