//! Provider key pools against the bundled mock provider, which enforces per-key limits with
//! real 429s and rate-limit fields in each provider's style: the gateway learns a key's
//! limits from the provider's answers and paces it so the provider never has to refuse.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;

/// A gateway with 2 shards in front of the mock at `mock`, as upstream `up` of `provider`
/// holding one key per secret (ids k0, k1, …), nothing configured about their limits.
fn gateway(mock: SocketAddr, provider: &str, secrets: &[&str]) -> Gateway {
    let mut upstream = format!(
        "[[upstream]]\nname = \"up\"\nprovider = \"{provider}\"\nendpoints = [\"http://{mock}\"]\n\n"
    );
    for (i, secret) in secrets.iter().enumerate() {
        upstream += &format!("[[upstream.key]]\nid = \"k{i}\"\nsecret = \"{secret}\"\n\n");
    }
    let config = format!(
        "{}{upstream}{}",
        gateway_section(2, ""),
        route_section("/", None, "up")
    );
    Gateway::start(&config)
}

fn chat(addr: SocketAddr) -> Response {
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":4}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(addr, request.as_bytes())
}

/// The mock's counters and log (`GET /mock/stats`).
fn stats(mock: SocketAddr) -> serde_json::Value {
    let response = roundtrip(mock, b"GET /mock/stats HTTP/1.1\r\nHost: mock\r\n\r\n");
    assert_eq!(response.status, 200);
    response.json()
}

fn count(stats: &serde_json::Value, key: &str, what: &str) -> u64 {
    stats["keys"][key][what]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}.{what} in {stats}"))
}

fn total(stats: &serde_json::Value, keys: &[&str], what: &str) -> u64 {
    keys.iter().map(|key| count(stats, key, what)).sum()
}

/// Sends requests one after another until the gateway says every key is exhausted, checking
/// that every earlier one succeeded; returns that 429 and how many succeeded.
fn until_exhausted(addr: SocketAddr, most: usize) -> (Response, usize) {
    for served in 0..most {
        let response = chat(addr);
        match response.status {
            200 => continue,
            429 => return (response, served),
            other => panic!("status {other}: {}", response.body_text()),
        }
    }
    panic!("never exhausted after {most} requests");
}

/// Three keys of 6 requests a minute each, limits known only from the provider's answers:
/// the gateway serves exactly their 18, the provider never refuses one, the 19th gets the
/// gateway's own 429 naming the wait until a key refills (10 s at most, one request's worth),
/// and honouring it succeeds.
fn paced_from_announced_limits(provider: &str) {
    let keys = ["sk-pace-a", "sk-pace-b", "sk-pace-c"];
    let mock_args: Vec<String> = keys.iter().map(|k| format!("{k}:rpm=6")).collect();
    let mut args = Vec::new();
    for spec in &mock_args {
        args.extend(["--key", spec.as_str()]);
    }
    let mock = start_mock(&args);
    let gateway = gateway(mock.addr, provider, &keys);

    let (refused, served) = until_exhausted(gateway.addr(), 40);
    assert_eq!(served, 18, "three keys of 6 a minute serve 18");
    assert_error(&refused, 429, "keys_temporarily_exhausted");
    let seen = stats(mock.addr);
    assert_eq!(
        total(&seen, &keys, "limited"),
        0,
        "the provider refused: {seen}"
    );
    assert_eq!(total(&seen, &keys, "ok"), 18);
    for key in keys {
        assert_eq!(count(&seen, key, "ok"), 6, "{key} in {seen}");
    }
    let wait: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((1..=10_000).contains(&wait), "retry-after-ms {wait}");

    thread::sleep(Duration::from_millis(wait));
    let response = chat(gateway.addr());
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(total(&stats(mock.addr), &keys, "limited"), 0);
}

#[test]
fn openai_keys_are_paced_from_the_ratelimit_fields() {
    paced_from_announced_limits("openai");
}

#[test]
fn anthropic_keys_are_paced_from_the_ratelimit_fields() {
    paced_from_announced_limits("anthropic");
}

#[test]
fn a_refused_gemini_key_rests_for_the_retry_delay_in_the_body() {
    // Gemini announces nothing: the gateway learns a key is over its limit only from a 429,
    // whose body says how long to wait. The request moves to the sibling key.
    let mock = start_mock(&["--key", "g-small:rpm=2", "--key", "g-big:rpm=600"]);
    let gateway = gateway(mock.addr, "gemini", &["g-small", "g-big"]);
    for _ in 0..12 {
        let response = chat(gateway.addr());
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let stats = stats(mock.addr);
    // g-small served its 2, was refused once, and rested for its 30 s retry delay.
    assert_eq!(count(&stats, "g-small", "ok"), 2, "{stats}");
    assert_eq!(count(&stats, "g-small", "limited"), 1, "{stats}");
    assert_eq!(count(&stats, "g-big", "ok"), 10, "{stats}");
}

#[test]
fn a_key_the_provider_refuses_is_disabled_and_its_sibling_serves() {
    let mock = start_mock(&["--key", "sk-revoked:status=401", "--key", "sk-fine"]);
    let gateway = gateway(mock.addr, "openai", &["sk-revoked", "sk-fine"]);
    for _ in 0..10 {
        let response = chat(gateway.addr());
        assert_eq!(response.status, 200, "{}", response.body_text());
        assert!(!response.body_text().contains("sk-"));
    }
    let stats = stats(mock.addr);
    assert_eq!(count(&stats, "sk-revoked", "denied"), 1, "{stats}");
    assert_eq!(count(&stats, "sk-fine", "ok"), 10, "{stats}");
    let log = gateway.process.log_lines().join("\n");
    assert!(
        !log.contains("sk-revoked") && !log.contains("sk-fine"),
        "{log}"
    );
}
