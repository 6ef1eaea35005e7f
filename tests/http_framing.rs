//! HTTP/1.1 message framing through the gateway: persistent connections, pipelining, request
//! bodies of each framing, `Expect: 100-continue`, bodiless responses, and response bodies
//! relayed with the framing the client can read.

mod common;

use std::io::Write;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use common::*;

#[test]
fn keep_alive_carries_two_requests_and_reuses_the_upstream_connection() {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    let first = client.read_response(false);
    client.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    let second = client.read_response(false);

    assert_eq!(
        (first.status, first.body_text()),
        (200, "echo /first".to_owned())
    );
    assert_eq!(
        (second.status, second.body_text()),
        (200, "echo /second".to_owned())
    );
    assert!(first.header("connection").is_none(), "{}", first.raw_head);
    let targets: Vec<String> = echo.seen().iter().map(|s| s.target().to_owned()).collect();
    assert_eq!(targets, ["/first", "/second"]);
    assert_eq!(
        echo.upstream.settled_connections(),
        1,
        "the upstream connection was not reused"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let bodies: Vec<String> = (0..3)
        .map(|_| client.read_response(false).body_text())
        .collect();

    assert_eq!(bodies, ["echo /one", "echo /two", "echo /three"]);
    assert_eq!(echo.seen()[1].body, b"abc");
}

#[test]
fn content_length_bodies_arrive_intact() {
    let (echo, gateway) = echo_gateway("", "");
    // Larger than the 64 KiB replay buffer, so it is streamed rather than read whole.
    let large: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut client = Client::connect(gateway.addr());

    let head = format!(
        "POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        large.len()
    );
    client.send(head.as_bytes());
    client.send(&large);
    let response = client.read_response(false);
    assert_eq!(response.status, 200);
    client.send(b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.read_response(false).body_text(), "echo /small");

    let seen = echo.seen();
    assert_eq!(seen[0].values("content-length"), [large.len().to_string()]);
    assert!(
        seen[0].body == large,
        "the 1 MiB body was altered on the way"
    );
    assert_eq!(seen[1].body, b"hello");
}

#[test]
fn requests_larger_than_an_idle_connections_first_read_arrive_intact() {
    // Between requests a connection reads into a small buffer (2 KiB); each request here
    // outgrows it in a different way, on one keep-alive connection.
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());
    let body = |len: usize| -> Vec<u8> { (0..len).map(|i| b'a' + (i % 26) as u8).collect() };
    let pad = "p".repeat(6000);

    client.send(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).body_text(), "echo /small");

    // A 6 KB head and a 10 KB body in one write.
    let large = body(10_000);
    let head = format!(
        "POST /large-head HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\nContent-Length: {}\r\n\r\n",
        large.len()
    );
    client.send(&[head.as_bytes(), &large].concat());
    assert_eq!(client.read_response(false).body_text(), "echo /large-head");

    // A 3 KB head whose first part ends inside the idle buffer, then the rest and its body.
    let medium = body(3000);
    let head = format!(
        "POST /split-head HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nContent-Length: {}\r\n\r\n",
        &pad[..3000],
        medium.len()
    );
    let (first, rest) = head.as_bytes().split_at(1500);
    client.send(first);
    client.send(&[rest, &medium].concat());
    assert_eq!(client.read_response(false).body_text(), "echo /split-head");

    // A small request pipelined with a 5 KB one.
    let five = body(5000);
    let pipelined = format!(
        "POST /pipelined-small HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
         POST /pipelined-large HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        five.len()
    );
    client.send(&[pipelined.as_bytes(), &five].concat());
    assert_eq!(
        client.read_response(false).body_text(),
        "echo /pipelined-small"
    );
    assert_eq!(
        client.read_response(false).body_text(),
        "echo /pipelined-large"
    );

    let seen = echo.seen();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[1].values("x-pad"), [pad.as_str()]);
    assert!(seen[1].body == large, "the 10 KB body was altered");
    assert_eq!(seen[2].values("x-pad"), [&pad[..3000]]);
    assert!(seen[2].body == medium, "the 3 KB body was altered");
    assert_eq!(seen[3].body, b"abc");
    assert!(seen[4].body == five, "the pipelined 5 KB body was altered");
}

#[test]
fn chunked_request_body_is_reframed_without_extensions_or_trailers() {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(50));
    client.send(b"6\r\n world\r\n0\r\nX-Trailer: secret\r\n\r\n");
    let response = client.read_response(false);

    assert_eq!(response.status, 200);
    let seen = echo.only();
    assert_eq!(seen.values("transfer-encoding"), ["chunked"]);
    assert!(!seen.has("content-length"), "{}", seen.head);
    assert_eq!(seen.body, b"hello world");
    let raw = String::from_utf8_lossy(&seen.raw_body);
    assert!(
        !raw.contains(';') && !raw.contains("ext"),
        "a chunk extension went upstream: {raw:?}"
    );
    assert!(
        !raw.contains("X-Trailer") && !raw.contains("secret"),
        "a trailer went upstream: {raw:?}"
    );
    assert!(raw.ends_with("0\r\n\r\n"), "{raw:?}");
}

#[test]
fn expect_continue_is_answered_before_the_body_and_not_forwarded() {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.read_response(false);
    assert_eq!(interim.status, 100);
    assert!(
        interim.raw_head.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{}",
        interim.raw_head
    );
    client.send(b"hello");
    let response = client.read_response(false);

    assert_eq!(
        (response.status, response.body_text()),
        (200, "echo /upload".to_owned())
    );
    let seen = echo.only();
    assert!(!seen.has("expect"), "Expect went upstream: {}", seen.head);
    assert_eq!(seen.body, b"hello");
}

#[test]
fn head_204_and_304_responses_have_no_body_and_keep_the_connection() {
    let upstream = ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        while let Some(request) = read_seen(&mut stream, &mut carry) {
            let response: &[u8] = match request.target() {
                "/head" => {
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 42\r\n\r\n"
                }
                "/204" => b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n",
                "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
            };
            if stream.write_all(response).is_err() {
                return;
            }
        }
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    client.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = client.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("42"),
        "{}",
        head.raw_head
    );
    for (target, status) in [("/204", 204), ("/304", 304)] {
        // A body byte after the previous response would break the parse of this one.
        client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(client.read_response(false).body_text(), "next");
        client.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let response = client.read_response(false);
        assert_eq!(response.status, status);
        assert!(
            response.header("transfer-encoding").is_none(),
            "{}",
            response.raw_head
        );
    }
    client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).body_text(), "next");
    assert_eq!(upstream.settled_connections(), 1);
}

#[test]
fn chunked_response_is_streamed_as_it_arrives() {
    let (go, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        read_seen(&mut stream, &mut carry).expect("request");
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
        // The rest is held back until the client has seen the first chunk.
        let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(10));
        let _ = stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n");
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut raw = Vec::new();
    assert!(
        read_until(&mut client.stream, &mut raw, b"first\r\n"),
        "first chunk did not arrive"
    );
    go.send(()).unwrap();
    assert!(
        read_until(&mut client.stream, &mut raw, b"0\r\n\r\n"),
        "body did not end"
    );

    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        head_values(&format!("{head}\r\n"), "transfer-encoding"),
        ["chunked"]
    );
    assert_eq!(body, "5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n");
}

/// An upstream that answers every request with a body that ends when it closes.
fn close_delimited_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        if read_seen(&mut stream, &mut carry).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
            let _ = stream.write_all(b"close");
        }
    })
}

#[test]
fn close_delimited_response_is_rechunked_for_an_http11_client() {
    let upstream = close_delimited_upstream();
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    for _ in 0..2 {
        client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        let response = client.read_response(false);
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("transfer-encoding"),
            Some("chunked"),
            "{}",
            response.raw_head
        );
        assert!(
            response.header("connection").is_none(),
            "{}",
            response.raw_head
        );
        assert_eq!(response.body_text(), "until close");
    }
    assert_eq!(upstream.settled_connections(), 2);
}

#[test]
fn close_delimited_response_stays_close_delimited_for_an_http10_client() {
    let upstream = close_delimited_upstream();
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /a HTTP/1.0\r\n\r\n");
    let response = client.read_response(false);

    assert_eq!(response.status, 200);
    assert!(
        response.header("transfer-encoding").is_none(),
        "{}",
        response.raw_head
    );
    assert!(
        response.header("content-length").is_none(),
        "{}",
        response.raw_head
    );
    assert_eq!(response.body_text(), "until close");
    assert!(client.is_closed());
}
