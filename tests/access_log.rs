//! The access log with the real binary: one well-formed line per call of every kind, no
//! secret in it, the provider key and retries of each call, reopening on SIGUSR1, and
//! `keygate report` on the log the gateway wrote.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FIELDS: [&str; 18] = [
    "ts",
    "request_id",
    "tenant",
    "key_id",
    "method",
    "path",
    "route",
    "upstream",
    "upstream_key",
    "status",
    "latency_us",
    "upstream_latency_us",
    "bytes_in",
    "bytes_out",
    "prompt_tokens",
    "completion_tokens",
    "retries",
    "error_code",
];

/// A gateway logging to `access.log` in its directory: the mock at `mock` behind a pool of
/// two provider keys, a dead upstream on `/dead/`, tenant acme with key `kg-app-secret` (2
/// requests, then 429), and key `kg-batch` without limits.
fn start(mock: SocketAddr) -> Gateway {
    let config = format!(
        "{}[[upstream]]\nname = \"pool\"\nprovider = \"openai\"\nendpoints = [\"http://{mock}\"]\n\
         strategy = \"round_robin\"\n\n\
         [[upstream.key]]\nid = \"bad\"\nsecret = \"sk-bad\"\n\n\
         [[upstream.key]]\nid = \"good\"\nsecret = \"sk-good\"\n\n\
         [[upstream]]\nname = \"dead\"\nprovider = \"openai\"\nendpoints = [\"http://{}\"]\n\
         retry_attempts = 1\n\n{}{}\
         [[tenant]]\nname = \"acme\"\n\n\
         [[client_key]]\nid = \"app\"\ntenant = \"acme\"\nsecret = \"kg-app-secret\"\n\
         rate = \"1/m\"\nburst = 2\n\n\
         [[client_key]]\nid = \"batch\"\nsecret = \"kg-batch\"\n",
        gateway_section(2, "access_log = \"access.log\""),
        dead_addr(),
        route_section("/dead/", None, "dead"),
        route_section("/v1/", None, "pool"),
    );
    Gateway::start(&config)
}

fn chat(path: &str, key: &str) -> Vec<u8> {
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":5}"#;
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Stops the gateway (the log is finished on the way out) and reads its lines.
fn stop_and_read(mut gateway: Gateway) -> Vec<Value> {
    gateway.process.signal("TERM");
    assert!(gateway.process.wait_exit(Duration::from_secs(20)).is_some());
    read_log(&gateway.dir.0.join("access.log"))
}

fn read_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let keys: Vec<&str> = value
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            for field in FIELDS {
                assert!(keys.contains(&field), "{field} missing in {line}");
            }
            value
        })
        .collect()
}

/// The one line whose `path` is `path`.
fn line<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(found.len(), 1, "lines for {path}: {found:#?}");
    found[0]
}

#[test]
fn every_kind_of_call_leaves_exactly_one_line_and_no_secret() {
    let mock = start_mock(&["--key", "sk-bad:status=401", "--key", "sk-good"]);
    let gateway = start(mock.addr);
    let addr = gateway.addr();

    // Served, after the refused key was tried first: the log names the key that served it.
    let ok = roundtrip(
        addr,
        &chat("/v1/chat/completions?key=AIza-secret", "kg-app-secret"),
    );
    assert_eq!(ok.status, 200, "{}", ok.body_text());
    let second = roundtrip(addr, &chat("/v1/second", "kg-app-secret"));
    assert_eq!(second.status, 404, "the mock has no /v1/second");
    let limited = roundtrip(addr, &chat("/v1/limited", "kg-app-secret"));
    assert_eq!(limited.status, 429);
    assert_eq!(roundtrip(addr, &chat("/v1/nokey", "kg-wrong")).status, 401);
    assert_eq!(
        roundtrip(addr, &chat("/nothing-here", "kg-app-secret")).status,
        404
    );
    // A malformed head: the log has a line without a method or path.
    let bad = roundtrip(
        addr,
        b"GET /bad HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(bad.status, 400);
    // A client that leaves while its request is on its way.
    let mut client = Client::connect(addr);
    client.send(&chat("/v1/chat/completions", "kg-app-secret")[..60]);
    drop(client);
    // Each shard hands its records over every 100 ms.
    let path = gateway.dir.0.join("access.log");
    wait_for(|| read_log(&path).len() == 7, "seven lines");

    let lines = stop_and_read(gateway);
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let text = serde_json::to_string(&lines).unwrap();
    for secret in [
        "kg-app-secret",
        "sk-bad",
        "sk-good",
        "AIza-secret",
        "kg-wrong",
    ] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }

    let ok = line(&lines, "/v1/chat/completions");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["tenant"], "acme");
    assert_eq!(ok["key_id"], "app");
    assert_eq!(ok["route"], "/v1/");
    assert_eq!(ok["upstream"], "pool");
    assert_eq!(ok["upstream_key"], "good");
    assert_eq!(ok["retries"], 1, "sent to bad first, then to good");
    assert!(ok["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(ok["completion_tokens"], 5);
    assert!(ok["bytes_in"].as_u64().unwrap() > 50);
    assert!(ok["bytes_out"].as_u64().unwrap() > 100);
    assert!(ok["upstream_latency_us"].as_u64().is_some());
    assert!(ok["latency_us"].as_u64().unwrap() >= ok["upstream_latency_us"].as_u64().unwrap());
    assert_eq!(ok["error_code"], Value::Null);
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 32);

    let passed_on = line(&lines, "/v1/second");
    assert_eq!(passed_on["status"], 404);
    assert_eq!(
        passed_on["error_code"],
        Value::Null,
        "an upstream's 404 is not the gateway's"
    );

    let limited = line(&lines, "/v1/limited");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["error_code"], "rate_limit_exceeded");
    assert_eq!(limited["upstream_latency_us"], Value::Null);

    let nokey = line(&lines, "/v1/nokey");
    assert_eq!(
        (nokey["status"].as_u64(), nokey["key_id"].clone()),
        (Some(401), Value::Null)
    );
    assert_eq!(nokey["error_code"], "invalid_api_key");

    let noroute = line(&lines, "/nothing-here");
    assert_eq!(noroute["error_code"], "not_found");
    assert_eq!(noroute["route"], Value::Null);

    let bad: Vec<&Value> = lines.iter().filter(|l| l["status"] == 400).collect();
    assert_eq!(bad.len(), 1, "{lines:#?}");
    assert_eq!(
        (bad[0]["error_code"].as_str(), bad[0]["path"].as_str()),
        (Some("bad_request"), Some(""))
    );

    let gone: Vec<&Value> = lines.iter().filter(|l| l["status"] == 499).collect();
    assert_eq!(gone.len(), 1, "{lines:#?}");
    assert_eq!(gone[0]["error_code"], "client_closed");

    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "request ids are unique");
}

#[test]
fn an_exhausted_pool_and_a_dead_upstream_are_logged_with_their_codes() {
    let mock = start_mock(&["--key", "sk-bad:rpm=1", "--key", "sk-good:rpm=1"]);
    let gateway = start(mock.addr);
    let addr = gateway.addr();
    // Room for one call per key (as the mock announces), then none.
    let statuses: Vec<u16> = (0..3)
        .map(|_| roundtrip(addr, &chat("/v1/chat/completions", "kg-batch")).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(roundtrip(addr, &chat("/dead/x", "kg-batch")).status, 502);

    let lines = stop_and_read(gateway);
    let exhausted: Vec<&Value> = lines.iter().filter(|l| l["status"] == 429).collect();
    assert_eq!(exhausted.len(), 1, "{lines:#?}");
    let exhausted = exhausted[0];
    assert_eq!(exhausted["error_code"], "keys_temporarily_exhausted");
    assert_eq!(exhausted["upstream"], "pool");
    assert_eq!(exhausted["upstream_key"], Value::Null, "no key was chosen");
    assert_eq!(exhausted["key_id"], "batch");
    let dead = line(&lines, "/dead/x");
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["error_code"], "upstream_error");
    assert_eq!(dead["upstream"], "dead");
    assert_eq!(dead["upstream_latency_us"], Value::Null);
}

#[test]
fn sigusr1_starts_a_new_file_after_a_rotation() {
    let mock = start_mock(&["--key", "sk-bad", "--key", "sk-good"]);
    let gateway = start(mock.addr);
    let addr = gateway.addr();
    let path = gateway.dir.0.join("access.log");
    roundtrip(addr, &chat("/v1/before", "kg-app-secret"));
    // Wait for the shard's 100 ms flush, then move the file away as logrotate would.
    wait_for_line(&path, "/v1/before");
    let rotated = gateway.dir.0.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gateway.process.signal("USR1");
    wait_for(|| path.exists(), "a new access.log after SIGUSR1");
    roundtrip(addr, &chat("/v1/after", "kg-app-secret"));
    // The old file was closed whole by the reopen.
    let old = read_log(&rotated);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["path"], "/v1/before");
    let lines = stop_and_read(gateway);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["path"], "/v1/after");
}

#[test]
fn keygate_report_reads_the_log_the_gateway_wrote() {
    let mock = start_mock(&["--key", "sk-bad", "--key", "sk-good"]);
    let gateway = start(mock.addr);
    let addr = gateway.addr();
    assert_eq!(
        roundtrip(addr, &chat("/v1/chat/completions", "kg-app-secret")).status,
        200
    );
    assert_eq!(
        roundtrip(addr, &chat("/v1/chat/completions", "kg-app-secret")).status,
        200
    );
    assert_eq!(
        roundtrip(addr, &chat("/v1/chat/completions", "kg-app-secret")).status,
        429
    );
    let mut gateway = gateway;
    gateway.process.signal("TERM");
    assert!(gateway.process.wait_exit(Duration::from_secs(20)).is_some());
    let log: PathBuf = gateway.dir.0.join("access.log");
    let output = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["report", "--json", "--log", log.to_str().unwrap()])
        .output()
        .expect("keygate report");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let text = report.to_string();
    assert!(text.contains("\"acme\""), "{text}");
    assert!(text.contains("\"app\""), "{text}");
    assert!(!text.contains("kg-app-secret"), "{text}");
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_line(path: &Path, needle: &str) {
    wait_for(
        || std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)),
        needle,
    );
}

#[test]
fn metrics_count_the_records_written_and_dropped() {
    let mock = start_mock(&[]);
    let config =
        format!(
        "{}[[upstream]]\nname = \"mock\"\nprovider = \"openai\"\nendpoints = [\"http://{}\"]\n\n{}",
        gateway_section(1, "access_log = \"access.log\"\nadmin_listen = \"127.0.0.1:0\""),
        mock.addr,
        route_section("/", None, "mock")
    );
    let gateway = Gateway::start(&config);
    for _ in 0..3 {
        assert_eq!(
            roundtrip(gateway.addr(), &chat("/v1/chat/completions", "none")).status,
            200
        );
    }
    let admin: SocketAddr = gateway
        .process
        .log_lines()
        .iter()
        .find_map(|line| {
            line.split("admin API on ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the admin address in the log");
    let metric = |name: &str| -> Option<u64> {
        let text = roundtrip(admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").body_text();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
    };
    wait_for(
        || metric("keygate_access_log_records_total") == Some(3),
        "3 records written",
    );
    assert_eq!(metric("keygate_access_log_dropped_total"), Some(0));
}

/// Resets the connection on drop (SO_LINGER with a zero timeout), as a client that aborts
/// does, instead of closing it.
#[allow(unsafe_code)]
fn reset_on_drop(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket, and a pointer to a `linger` of the size passed.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt SO_LINGER");
}

#[test]
fn nothing_of_an_exchange_carries_over_to_the_next_on_its_connection() {
    let mock = start_mock(&["--key", "sk-bad:status=401", "--key", "sk-good"]);
    let gateway = start(mock.addr);
    let addr = gateway.addr();

    // A call with key app (limited, so its responses carry its budget), then a malformed head
    // on the same connection: the 400 is nobody's, so it carries no key, no budget and no
    // tokens.
    let mut client = Client::connect(addr);
    client.send(&chat("/v1/chat/completions", "kg-app-secret"));
    assert_eq!(client.read_response(false).status, 200);
    client.send(b"GET /bad HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    let bad = client.read_response(false);
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.header("x-ratelimit-remaining-requests"),
        None,
        "{}",
        bad.raw_head
    );

    // A keyed call, then a reset between requests; and a connection reset before it sent
    // anything. Neither reset is an exchange: no record, and the tokens counted once.
    let mut client = Client::connect(addr);
    client.send(&chat("/v1/chat/completions", "kg-app-secret"));
    assert_eq!(client.read_response(false).status, 200);
    reset_on_drop(&client.stream);
    drop(client);
    let silent = Client::connect(addr);
    reset_on_drop(&silent.stream);
    drop(silent);
    // The resets reach the gateway before it stops: give its reads a moment.
    thread::sleep(Duration::from_millis(300));

    let lines = stop_and_read(gateway);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let served: Vec<&Value> = lines.iter().filter(|l| l["status"] == 200).collect();
    assert_eq!(served.len(), 2, "{lines:#?}");
    for line in served {
        assert_eq!(line["key_id"], "app");
        assert_eq!(line["completion_tokens"], 5);
    }
    let bad = lines.iter().find(|l| l["status"] == 400).unwrap();
    assert_eq!(bad["key_id"], Value::Null, "{bad}");
    assert_eq!(bad["prompt_tokens"], Value::Null, "{bad}");
    assert_eq!(bad["completion_tokens"], Value::Null, "{bad}");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_logged_as_a_write_timeout() {
    let mock = start_mock(&[]);
    let config = format!(
        "{}[[upstream]]\nname = \"llm\"\nprovider = \"openai\"\nendpoints = [\"http://{}\"]\n\n{}",
        gateway_section(1, "access_log = \"access.log\"\nidle_timeout = \"1s\""),
        mock.addr,
        route_section("/", None, "llm"),
    );
    let gateway = Gateway::start(&config);

    // About 12 MB of answer, more than the sockets between the gateway and a client that
    // reads nothing can hold: a write waits, and gives up after idle_timeout.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let mut client = Client::connect(gateway.addr());
    client.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             x-mock-tokens: 2000000\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let path = gateway.dir.0.join("access.log");
    wait_for(|| !read_log(&path).is_empty(), "the cut exchange's line");
    drop(client);

    let lines = stop_and_read(gateway);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["error_code"], "client_write_timeout");
}
