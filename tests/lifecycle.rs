//! The process around the proxy: draining on SIGTERM, refusing a port already in use, and
//! `keygate check`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn keygate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keygate"))
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let (received, wait_received) = mpsc::channel();
    let received = Mutex::new(received);
    let upstream = ScriptedUpstream::start(move |mut stream, _| {
        let mut carry = Vec::new();
        if read_seen(&mut stream, &mut carry).is_some() {
            let _ = received.lock().unwrap().send(());
            thread::sleep(Duration::from_secs(1));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
        }
    });
    let mut gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));
    let addr = gateway.addr();
    let mut client = Client::connect(addr);

    client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    wait_received
        .recv_timeout(Duration::from_secs(10))
        .expect("request reached the upstream");
    gateway.process.signal("TERM");

    // While the request is still in flight, the gateway stops accepting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let response = client.read_response(false);
    assert_eq!(
        (response.status, response.body_text()),
        (200, "slow".to_owned())
    );

    let status = gateway
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the gateway did not exit");
    assert_eq!(status.code(), Some(0), "{:#?}", gateway.process.log_lines());
    assert!(TcpStream::connect(addr).is_err());
}

/// Runs `keygate ARGS` to completion (at most 10 s); returns exit code, stdout and stderr.
fn run_keygate(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(keygate())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keygate");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate {args:?} did not exit: {}", err.join().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn a_second_gateway_on_a_port_in_use_refuses_to_start() {
    let echo = Echo::start("echo");
    let first = Gateway::start(&basic_config(echo.addr(), 1, ""));
    let taken = first.addr().to_string();
    let dir = TempDir::new("second");
    let path = dir.0.join("keygate.toml");
    let config = basic_config(echo.addr(), 1, "").replace("127.0.0.1:0", &taken);
    std::fs::write(&path, config).unwrap();

    let (code, _, stderr) = run_keygate(&["run", "--config", path.to_str().unwrap()]);

    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains(&taken) && stderr.contains("in use"),
        "{stderr}"
    );
    assert_eq!(
        roundtrip(first.addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = TempDir::new("check-valid");
    let path = dir.0.join("keygate.toml");
    let config = gateway_section(1, "")
        + &upstream_section("echo", &["127.0.0.1:9".parse().unwrap()], "")
        + &route_section("/", None, "echo");
    std::fs::write(&path, config).unwrap();

    let (code, stdout, stderr) = run_keygate(&["check", "--config", path.to_str().unwrap()]);

    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn check_reports_an_unknown_key_with_its_position_and_exits_2() {
    let dir = TempDir::new("check-invalid");
    let path = dir.0.join("keygate.toml");
    std::fs::write(
        &path,
        "[gateway]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n  colour = \"blue\"\n",
    )
    .unwrap();

    let (code, stdout, stderr) = run_keygate(&["check", "--config", path.to_str().unwrap()]);

    assert_eq!(code, Some(2), "{stdout}{stderr}");
    let prefix = format!("{}:4:3: ", path.display());
    assert!(stdout.starts_with(&prefix), "{stdout:?}");
    assert!(stdout.contains("colour"), "{stdout:?}");
    assert!(
        stdout.ends_with('\n'),
        "the last problem line is not terminated: {stdout:?}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
}
