//! Running out of file descriptors: the accept loop backs off and warns instead of spinning
//! or dying, and serves again as soon as descriptors are free.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn accept_survives_descriptor_exhaustion_and_recovers() {
    let mock = start_mock(&[]);
    let dir = TempDir::new("fd-exhaustion");
    let config = dir.0.join("keygate.toml");
    std::fs::write(&config, basic_config(mock.addr, 1, "")).expect("write config");

    // 64 descriptors in all: the runtime, listener and logs take some, a few dozen clients
    // take the rest.
    let gateway = Process::start(
        Path::new("prlimit"),
        &[
            "--nofile=64:64",
            env!("CARGO_BIN_EXE_keygate"),
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        &dir.0,
        &[],
    );

    let hoard: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(gateway.addr).ok())
        .collect();
    // The gateway notices when it tries to accept past its limit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway
        .log_lines()
        .iter()
        .any(|line| line.contains("out of file descriptors"))
    {
        assert!(
            Instant::now() < deadline,
            "no warning: {:#?}",
            gateway.log_lines()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let warnings = gateway
        .log_lines()
        .iter()
        .filter(|l| l.contains("out of file descriptors"))
        .count();
    drop(hoard);

    // Once the hoarded connections are gone, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(gateway.addr);
        client.send(b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        match client.try_read_response(false) {
            Some(response) if response.status == 200 => break,
            _ => assert!(
                Instant::now() < deadline,
                "not serving again: {:#?}",
                gateway.log_lines()
            ),
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Warnings are rate-limited: a storm of failed accepts logs a handful of lines, not one
    // per attempt.
    assert!(warnings < 20, "{warnings} warnings");
}
