//! Client limits: head and body sizes, the header and idle timeouts, and the per-shard
//! connection cap.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_head_over_max_header_bytes_gets_431() {
    let (echo, gateway) = echo_gateway("max_header_bytes = 1024", "");

    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(900)
    );
    assert_eq!(roundtrip(gateway.addr(), fits.as_bytes()).status, 200);

    let mut client = Client::connect(gateway.addr());
    client.send(
        format!(
            "GET /big HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(2000)
        )
        .as_bytes(),
    );
    let response = client.read_response(false);

    assert_error(&response, 431, "headers_too_large");
    assert!(client.is_closed());
    let targets: Vec<String> = echo.seen().iter().map(|s| s.target().to_owned()).collect();
    assert_eq!(targets, ["/fits"]);
}

#[test]
fn a_content_length_over_max_body_bytes_gets_413_without_upstream_contact() {
    let (echo, gateway) = echo_gateway("max_body_bytes = 1000", "");

    let mut client = Client::connect(gateway.addr());
    client.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n");
    let response = client.read_response(false);

    assert_error(&response, 413, "request_too_large");
    assert!(client.is_closed());
    assert_eq!(
        echo.upstream.settled_connections(),
        0,
        "the upstream was contacted"
    );

    let mut request = b"POST /fits HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 1000]);
    assert_eq!(roundtrip(gateway.addr(), &request).status, 200);
}

#[test]
fn a_chunked_body_growing_past_max_body_bytes_gets_413() {
    let (echo, gateway) = echo_gateway("max_body_bytes = 1000", "");
    let chunk = format!("190\r\n{}\r\n", "x".repeat(400));

    let mut client = Client::connect(gateway.addr());
    client.send(b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    client.send(chunk.repeat(3).as_bytes());
    let response = client.read_response(false);

    assert_error(&response, 413, "request_too_large");
    assert!(client.is_closed());
    assert!(echo.seen().is_empty(), "a request completed upstream");
}

#[test]
fn a_head_trickling_past_header_timeout_gets_408() {
    let (echo, gateway) = echo_gateway("header_timeout = \"1s\"", "");
    let mut client = Client::connect(gateway.addr());
    let stop = Arc::new(AtomicBool::new(false));

    // One byte every 200 ms: each byte is well within any idle limit, the whole head is not.
    let mut writer = client.stream.try_clone().unwrap();
    let stopped = Arc::clone(&stop);
    let trickle = std::thread::spawn(move || {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: {}\r\n\r\n",
            "z".repeat(40)
        );
        for byte in head.bytes() {
            if stopped.load(Ordering::SeqCst) || writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let response = client.read_response(false);
    stop.store(true, Ordering::SeqCst);

    assert_error(&response, 408, "request_timeout");
    assert!(client.is_closed());
    trickle.join().unwrap();
    assert!(echo.seen().is_empty());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_echo, gateway) = echo_gateway("idle_timeout = \"1s\"", "");
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).status, 200);
    let idle_since = Instant::now();

    // The read waits for the close; the harness read timeout (15 s) fails the test without it.
    assert!(client.is_closed());
    assert!(
        idle_since.elapsed() >= Duration::from_millis(500),
        "closed before the idle timeout"
    );
}

#[test]
fn a_connection_that_never_sends_is_closed_after_header_timeout() {
    let (_echo, gateway) = echo_gateway("header_timeout = \"1s\"\nidle_timeout = \"60s\"", "");
    let mut silent = Client::connect(gateway.addr());
    let opened = Instant::now();

    // Closed without an answer (there was no request to answer), long before the idle
    // timeout; the harness read timeout (15 s) fails the test otherwise.
    assert!(silent.is_closed());
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "closed before the header timeout"
    );

    // Once a connection has carried a request, it may stay idle for `idle_timeout`.
    let mut used = Client::connect(gateway.addr());
    used.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(used.read_response(false).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    used.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(used.read_response(false).status, 200);
}

#[test]
fn connections_over_max_connections_are_closed_at_once() {
    let (_echo, gateway) = echo_gateway("max_connections = 2", "");
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut first = Client::connect(gateway.addr());
    let mut second = Client::connect(gateway.addr());
    // An answer on each shows both are accepted and counted.
    for client in [&mut first, &mut second] {
        client.send(request);
        assert_eq!(client.read_response(false).status, 200);
    }

    let mut third = Client::connect(gateway.addr());
    third
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.stream.write_all(request);
    assert!(third.is_closed(), "a third connection was served");

    for client in [&mut first, &mut second] {
        client.send(request);
        assert_eq!(client.read_response(false).status, 200);
    }
}

#[test]
fn an_open_files_limit_below_max_connections_is_warned_of() {
    let warned = |gateway: &Gateway| {
        gateway
            .process
            .log_lines()
            .iter()
            .any(|line| line.contains("WARN") && line.contains("open-files limit is below"))
    };
    // No open-files limit reaches a billion descriptors.
    let (_echo, huge) = echo_gateway("max_connections = 1000000000", "");
    assert!(warned(&huge), "{:#?}", huge.process.log_lines());
    let (_echo, small) = echo_gateway("max_connections = 16", "");
    assert!(!warned(&small), "{:#?}", small.process.log_lines());
}

#[test]
fn a_large_answer_that_comes_after_idle_timeout_reaches_the_client_whole() {
    // The mock answers after 1.5 s, past the 1 s idle_timeout (the wait for an answer is
    // bounded by response_timeout), with a body of about 115 KB, more than a socket takes in
    // one write: the writes to the client wait from when the answer came, not from the
    // request's start.
    let mock = start_mock(&[]);
    let gateway = Gateway::start(&basic_config(mock.addr, 1, "idle_timeout = \"1s\""));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
         x-mock-latency-ms: 1500\r\nx-mock-tokens: 20000\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = roundtrip(gateway.addr(), request.as_bytes());
    assert_eq!(response.status, 200);
    assert!(
        response.body.len() > 100_000,
        "{} bytes",
        response.body.len()
    );
}
