//! Two gateways never share a state directory: the second refuses to start, saying why.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_second_gateway_on_the_same_state_dir_refuses_to_start() {
    let mock = start_mock(&[]);
    let shared = TempDir::new("shared-state");
    let state = format!("state_dir = \"{}\"", shared.0.display());
    let first = Gateway::start(&basic_config(mock.addr, 1, &state));

    let dir = TempDir::new("second");
    let config = dir.0.join("keygate.toml");
    std::fs::write(&config, basic_config(mock.addr, 1, &state)).expect("write config");
    let second = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .output()
        .expect("run keygate");

    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another running keygate"),
        "{stderr}"
    );

    // The first one is unaffected.
    let response = roundtrip(first.addr(), b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200);
}
