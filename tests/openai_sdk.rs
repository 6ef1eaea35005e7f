//! The official OpenAI Python SDK against the gateway in front of the mock provider: a chat
//! completion and a streamed one, usage included, and a client key's 429 waited out and
//! retried as the gateway says.
//!
//! Needs `python3` with the `openai` package. Without it the test is skipped with a notice,
//! except on CI (the `CI` environment variable set), where a missing package is a failure.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::keys;
use common::*;

/// Whether `python3` can import `openai`; panics on CI when it cannot.
fn openai_available() -> bool {
    let import = Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let problem = match import {
        Ok(output) if output.status.success() => return true,
        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
        Err(err) => format!("cannot run python3: {err}"),
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI must provide python3 with the openai package (pip install openai): {problem}");
    }
    // Written to stderr directly, not through `eprintln!`, which the test harness captures and
    // shows only for a failing test: the notice must reach whoever runs `cargo test`.
    let _ = writeln!(
        std::io::stderr(),
        "note: the OpenAI SDK test is skipped: python3 cannot import openai (pip install \
         openai to run it): {}",
        problem.trim().lines().last().unwrap_or_default()
    );
    false
}

#[test]
fn the_openai_sdk_completes_and_streams_through_the_gateway() {
    if !openai_available() {
        return;
    }
    let mock = start_mock(&["--tokens", "5"]);
    let gateway = Gateway::start(&basic_config(mock.addr, 1, ""));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_chat.py");

    let output = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{}", gateway.addr()))
        .stdin(Stdio::null())
        .output()
        .expect("run python3");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {stderr}"));

    let chat = &report["chat"];
    let content = chat["content"].as_str().expect("content");
    assert_eq!(content.split_whitespace().count(), 5, "{report}");
    assert_eq!(chat["finish_reason"], "stop", "{report}");
    let usage = &chat["usage"];
    assert_eq!(usage["completion_tokens"], 5, "{report}");
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    assert!(prompt > 0, "{report}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + 5), "{report}");

    let stream = &report["stream"];
    let deltas: Vec<&str> = stream["deltas"]
        .as_array()
        .expect("deltas")
        .iter()
        .map(|d| d.as_str().expect("text delta"))
        .collect();
    assert_eq!(deltas.len(), 5, "one delta per token: {report}");
    assert_eq!(deltas.concat(), content, "{report}");
    assert_eq!(stream["finish_reason"], "stop", "{report}");
    assert_eq!(stream["usage"]["completion_tokens"], 5, "{report}");
    assert_eq!(
        stream["usage"]["prompt_tokens"].as_u64(),
        Some(prompt),
        "{report}"
    );
}

/// A key limited to one request a second: the SDK's second call meets a 429, waits as the
/// gateway says (Retry-After, retry-after-ms) and succeeds on its one retry.
#[test]
fn the_openai_sdk_waits_as_told_after_a_429_and_succeeds() {
    if !openai_available() {
        return;
    }
    let mock = start_mock(&["--tokens", "3"]);
    let keys = keys::client_key("sdk", "rate = \"1/s\"\nburst = 1");
    let gateway = Gateway::start(&keys::keyed_config(2, mock.addr, "", &keys));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_retry.py");

    let output = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{}", gateway.addr()))
        .arg("kg-sdk")
        .stdin(Stdio::null())
        .output()
        .expect("run python3");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {stderr}"));
    let calls = report["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "{report}");
    for call in calls {
        let content = call["content"].as_str().expect("content");
        assert_eq!(content.split_whitespace().count(), 3, "{report}");
    }
    // The first passes at once; the second waited out the rest of the second.
    assert_eq!(calls[0]["retries_taken"], 0, "{report}");
    let waited = calls[1]["seconds"].as_f64().expect("seconds");
    assert!(waited >= 0.5, "the second call took {waited} s: {report}");
    // One retry is enough only when the SDK waited the whole wait the gateway gave: its own
    // backoff (at most 0.5 s) would have met a second 429.
    if !calls[1]["retries_taken"].is_null() {
        assert_eq!(calls[1]["retries_taken"], 1, "{report}");
    }
}
