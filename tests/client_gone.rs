//! A client that leaves while the upstream is still working ends the exchange: the upstream
//! connection is closed and the key's concurrency slot is free again at once.

mod common;

use std::io::Read;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::keys::*;
use common::*;

#[test]
fn a_client_leaving_before_the_response_frees_its_slot_and_the_upstream() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let closed_tx = std::sync::Mutex::new(closed_tx);
    // Reads one request, then answers nothing: it only notices when the gateway hangs up.
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        if read_request(&mut stream, &mut carry).is_some() {
            let started = Instant::now();
            let mut byte = [0u8; 1];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = stream.read(&mut byte);
            let _ = closed_tx.lock().unwrap().send(started.elapsed());
        }
    });
    let config = keyed_config(
        1,
        upstream.addr,
        "",
        &client_key("app", "max_concurrent = 1"),
    );
    let gateway = Gateway::start(&config);

    let mut client = Client::connect(gateway.addr());
    client.send(&get_models("kg-app"));
    thread::sleep(Duration::from_millis(300));
    drop(client);

    // The upstream connection is closed soon after the client left, not at response_timeout.
    let waited = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("upstream hung up");
    assert!(
        waited < Duration::from_secs(5),
        "upstream closed only after {waited:?}"
    );

    // The slot is free: a new request is admitted rather than refused with 429.
    let mut next = Client::connect(gateway.addr());
    next.send(&get_models("kg-app"));
    next.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut head = [0u8; 12];
    // No answer within the timeout means it was admitted and waits on the silent upstream.
    if let Ok(n) = next.stream.read(&mut head) {
        assert!(!head[..n].starts_with(b"HTTP/1.1 429"), "still refused");
    }
}
