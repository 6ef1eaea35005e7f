//! The upstream side: pooled connections the upstream closed, connect failures and timeouts,
//! round-robin and ejection over endpoints, interim responses, and broken responses.

mod common;

use std::io::Write;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
    )
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    let (closed, wait_closed) = mpsc::channel();
    let closed = Mutex::new(closed);
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let upstream = ScriptedUpstream::start(move |mut stream, n| {
        let mut carry = Vec::new();
        while let Some(request) = read_seen(&mut stream, &mut carry) {
            let body = if n == 0 { "first" } else { "fresh" };
            record.lock().unwrap().push(request);
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{body}");
            if stream.write_all(response.as_bytes()).is_err() || n == 0 {
                break;
            }
        }
        // The first connection says keep-alive, then closes silently.
        drop(stream);
        let _ = closed.lock().unwrap().send(n);
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).body_text(), "first");
    assert_eq!(wait_closed.recv_timeout(Duration::from_secs(10)), Ok(0));
    client.send(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let response = client.read_response(false);

    assert_eq!(
        (response.status, response.body_text()),
        (200, "fresh".to_owned())
    );
    assert_eq!(upstream.settled_connections(), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (seen[1].target(), seen[1].body.as_slice()),
        ("/2", &b"hello"[..])
    );
}

#[test]
fn an_endpoint_that_refuses_connections_gets_502() {
    let gateway = Gateway::start(&basic_config(dead_addr(), 1, ""));

    assert_error(&get(gateway.addr(), "/"), 502, "upstream_error");
}

#[test]
fn an_upstream_slower_than_response_timeout_gets_504() {
    let upstream = ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        if read_seen(&mut stream, &mut carry).is_some() {
            thread::sleep(Duration::from_secs(3));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
        }
    });
    let config = gateway_section(1, "")
        + &upstream_section("slow", &[upstream.addr], "response_timeout = \"1s\"")
        + &route_section("/", None, "slow");
    let gateway = Gateway::start(&config);

    assert_error(&get(gateway.addr(), "/"), 504, "upstream_timeout");
}

#[test]
fn requests_are_spread_round_robin_over_endpoints() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let config = gateway_section(1, "")
        + &upstream_section("both", &[a.addr(), b.addr()], "")
        + &route_section("/", None, "both");
    let gateway = Gateway::start(&config);

    for i in 0..4 {
        assert_eq!(get(gateway.addr(), &format!("/{i}")).status, 200);
    }
    assert!(
        !a.seen().is_empty() && !b.seen().is_empty(),
        "a: {}, b: {}",
        a.seen().len(),
        b.seen().len()
    );
    assert_eq!(a.seen().len() + b.seen().len(), 4);
}

#[test]
fn a_dead_endpoint_is_ejected_then_tried_again_after_eject_for() {
    let dead = dead_addr();
    let alive = Echo::start("alive");
    let config = gateway_section(1, "")
        + &upstream_section(
            "pair",
            &[dead, alive.addr()],
            "eject_after = 2\neject_for = \"1s\"",
        )
        + &route_section("/", None, "pair");
    let gateway = Gateway::start(&config);

    // Requests that pick the dead endpoint move on to the other one: none fails.
    let first_try = Instant::now();
    for i in 0..4 {
        assert_eq!(
            get(gateway.addr(), &format!("/{i}")).body_text(),
            format!("alive /{i}")
        );
    }
    let ejected = |g: &Gateway| {
        g.process
            .log_lines()
            .iter()
            .any(|l| l.contains("endpoint ejected") && l.contains(&dead.to_string()))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ejected(&gateway) {
        assert!(
            Instant::now() < deadline,
            "no ejection logged: {:#?}",
            gateway.process.log_lines()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let ejected_by = Instant::now();

    // The endpoint comes back at once, but rests until eject_for has passed: the ejection
    // happened after `first_try`, so it lasts at least until `first_try` + 1 s.
    let revived = Echo::start_on("revived", dead);
    let mut during_rest = 0;
    while first_try.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            get(gateway.addr(), "/resting").body_text(),
            "alive /resting"
        );
        during_rest += 1;
    }
    assert!(
        during_rest > 0,
        "no request was sent while the endpoint rested"
    );
    assert!(revived.seen().is_empty(), "an ejected endpoint got traffic");

    thread::sleep(
        (ejected_by + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
    );
    for _ in 0..4 {
        assert_eq!(get(gateway.addr(), "/back").status, 200);
    }
    assert!(
        !revived.seen().is_empty(),
        "the endpoint was not tried again after eject_for"
    );
}

#[test]
fn an_interim_100_from_the_upstream_is_skipped() {
    let upstream = ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        if read_seen(&mut stream, &mut carry).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            thread::sleep(Duration::from_millis(20));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
        }
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));

    let response = get(gateway.addr(), "/");

    assert_eq!(
        (response.status, response.body_text()),
        (200, "final".to_owned())
    );
}

fn assert_bad_upstream_response(response: &'static [u8]) {
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        if read_seen(&mut stream, &mut carry).is_some() {
            let _ = stream.write_all(response);
        }
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));

    assert_error(&get(gateway.addr(), "/"), 502, "upstream_error");
}

#[test]
fn a_malformed_upstream_status_line_gets_502() {
    assert_bad_upstream_response(b"HTTP/1.1 2x0 Nope\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn an_upstream_response_that_is_not_http_gets_502() {
    assert_bad_upstream_response(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
}

#[test]
fn an_ambiguously_framed_upstream_response_gets_502() {
    assert_bad_upstream_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
}
