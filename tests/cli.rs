//! The `keygate key new` command: the key it prints is accepted by a gateway configured with
//! the `secret_sha256` line it prints, and never appears in that config.

mod common;

use std::process::Command;

use common::*;

#[test]
fn key_new_prints_a_key_and_its_digest_line_that_a_gateway_accepts() {
    let output = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["key", "new"])
        .output()
        .expect("run keygate key new");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    let key = lines.next().expect("a key line").to_owned();
    let digest_line = lines.next().expect("a secret_sha256 line").to_owned();
    assert!(key.starts_with("kg-") && key.len() == 3 + 64, "{key}");
    assert!(
        digest_line.starts_with("secret_sha256 = \""),
        "{digest_line}"
    );
    assert!(!digest_line.contains(&key));

    // Two calls never print the same key.
    let again = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["key", "new"])
        .output();
    assert!(!String::from_utf8_lossy(&again.expect("run").stdout).contains(&key));

    let mock = start_mock(&[]);
    let config = format!(
        "{}\n[[client_key]]\nid = \"app\"\n{digest_line}\n",
        basic_config(mock.addr, 1, "")
    );
    let gateway = Gateway::start(&config);
    let request = |auth: &str| {
        roundtrip(
            gateway.addr(),
            format!("GET /v1/models HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    assert_eq!(
        request(&format!("Authorization: Bearer {key}\r\n")).status,
        200
    );
    assert_eq!(
        request("Authorization: Bearer kg-not-this-one\r\n").status,
        401
    );
}
