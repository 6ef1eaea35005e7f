//! Idle pooled upstream connections are closed once they pass `pool_idle_timeout`, without
//! waiting for another request.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn an_idle_pooled_connection_is_closed_after_pool_idle_timeout() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let closed_tx = std::sync::Mutex::new(closed_tx);
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        if read_request(&mut stream, &mut carry).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let answered = Instant::now();
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte);
            let _ = closed_tx.lock().unwrap().send(answered.elapsed());
        }
    });
    let config = basic_config(upstream.addr, 1, "")
        .replace("[[route]]", "pool_idle_timeout = \"1s\"\n\n[[route]]");
    let gateway = Gateway::start(&config);

    let response = roundtrip(gateway.addr(), b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200);

    let idle = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("pooled connection closed");
    assert!(
        idle >= Duration::from_millis(900),
        "closed after only {idle:?}"
    );
}
