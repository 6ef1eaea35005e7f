//! Streamed responses: server-sent events reach the client as they are produced, and a
//! client that goes away mid-stream ends the upstream exchange.

mod common;

use std::io::Write;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The data of a chunked body, framing removed.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut decoder = keygate::http::ChunkedDecoder::new();
    let (mut data, mut pos) = (Vec::new(), 0);
    while pos < raw.len() && !decoder.is_done() {
        let step = decoder.decode(&raw[pos..]).expect("valid chunked body");
        data.extend_from_slice(&raw[pos + step.data.start..pos + step.data.end]);
        pos += step.consumed;
    }
    assert!(decoder.is_done(), "the chunked body did not end");
    data
}

#[test]
fn server_sent_events_reach_the_client_as_they_are_produced() {
    let mock = start_mock(&[]);
    let gateway = Gateway::start(&basic_config(mock.addr, 1, ""));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"count"}],"stream":true}"#;
    let mut client = Client::connect(gateway.addr());

    client.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             x-mock-token-delay-ms: 200\r\nx-mock-tokens: 5\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let mut raw = Vec::new();
    assert!(
        read_until(&mut client.stream, &mut raw, b"\n\n"),
        "no first event"
    );
    let first_event = Instant::now();
    assert!(
        read_until(&mut client.stream, &mut raw, b"data: [DONE]"),
        "no end of stream"
    );
    let rest = first_event.elapsed();
    assert!(
        read_until(&mut client.stream, &mut raw, b"0\r\n\r\n"),
        "the chunked body did not end"
    );

    // Seven more events follow the first, 200 ms apart: had the gateway held the stream
    // back, they would all have arrived with the first.
    assert!(
        rest >= Duration::from_millis(400),
        "the rest came {rest:?} after the first event"
    );
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, chunked) = text.split_once("\r\n\r\n").unwrap();
    let head = format!("{head}\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head_values(&head, "content-type")[0].starts_with("text/event-stream"),
        "{head}"
    );
    assert_eq!(head_values(&head, "transfer-encoding"), ["chunked"]);
    let events = String::from_utf8(dechunk(chunked.as_bytes())).unwrap();
    let data: Vec<&str> = events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let tokens: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).expect("JSON event"))
        .filter(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .collect();
    assert_eq!(tokens.len(), 5, "{events}");
}

#[test]
fn a_client_leaving_mid_stream_ends_the_upstream_exchange() {
    let (write_failed, wait_write_failed) = mpsc::channel();
    let write_failed = Mutex::new(write_failed);
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        read_seen(&mut stream, &mut carry).expect("request");
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = stream.write_all(head);
        // An endless stream, bounded only so that a broken gateway cannot keep it forever.
        for _ in 0..600 {
            if stream.write_all(b"c\r\ndata: tick\n\n\r\n").is_err() {
                let _ = write_failed.lock().unwrap().send(Instant::now());
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut raw = Vec::new();
    assert!(
        read_until(&mut client.stream, &mut raw, b"data: tick\n\n"),
        "no event arrived"
    );
    let _ = client.stream.shutdown(std::net::Shutdown::Both);
    drop(client);
    let left_at = Instant::now();

    let failed_at = wait_write_failed
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream kept streaming to a client that left");
    assert!(
        failed_at >= left_at,
        "the upstream write failed before the client left"
    );
}
