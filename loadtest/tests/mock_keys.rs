//! Black-box tests of `loadtest mock --key`: provider keys, their limits in each provider's
//! style, forced refusals, the `x-mock-retry-after` and `x-mock-header` knobs, and
//! `/mock/stats`. The real binary on 127.0.0.1 port 0, spoken to in raw bytes (see `support`).

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{exchange, post, Mock, Reader, Response};

/// A small chat completion: 1 prompt token ("abcd") and `tokens` completion tokens.
fn chat(key_field: &str, tokens: u32) -> String {
    let fields = format!("{key_field}\r\nx-mock-tokens: {tokens}\r\n");
    post(
        "/v1/chat/completions",
        &fields,
        r#"{"messages":[{"role":"user","content":"abcd"}]}"#,
    )
}

/// `GET /v1/models` with one more field: a request that costs no tokens.
fn models(key_field: &str) -> String {
    format!("GET /v1/models HTTP/1.1\r\nHost: mock\r\n{key_field}\r\n\r\n")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: mock\r\n\r\n")
}

/// Sends all `requests` on one connection and reads as many responses.
fn pipelined(mock: &Mock, requests: &[String]) -> Vec<Response> {
    let mut stream = mock.connect();
    stream.write_all(requests.concat().as_bytes()).unwrap();
    let mut reader = Reader::new(stream);
    requests.iter().map(|_| reader.response()).collect()
}

/// Parses the Go durations the mock writes (`1m0s`, `29.998s`, `120ms`).
fn go_duration(text: &str) -> Duration {
    let (minutes, rest) = match text.split_once('m') {
        Some((minutes, rest)) if !rest.is_empty() => (minutes.parse().unwrap(), rest),
        _ => (0, text),
    };
    let seconds: f64 = if let Some(ms) = rest.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else {
        rest.strip_suffix('s').unwrap().parse().unwrap()
    };
    Duration::from_secs(minutes * 60) + Duration::from_secs_f64(seconds)
}

fn number(response: &Response, name: &str) -> u64 {
    let value = response.header(name).unwrap_or_else(|| panic!("no {name}"));
    value.parse().unwrap_or_else(|_| panic!("{name}: {value}"))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp of this century (`2026-12-04T18:30:05Z`).
fn rfc3339_seconds(text: &str) -> u64 {
    assert!(text.len() == 20 && text.ends_with('Z'), "{text}");
    let part = |range: std::ops::Range<usize>| text[range].parse::<u64>().unwrap();
    let (year, month, day) = (part(0..4), part(5..7), part(8..10));
    // Days from 1970 to the start of `year`, then to the start of `month`.
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
    ];
    days += lengths[..month as usize - 1].iter().sum::<u64>() + day - 1;
    days * 86_400 + part(11..13) * 3600 + part(14..16) * 60 + part(17..19)
}

fn stats(mock: &Mock) -> Value {
    let response = exchange(mock, &get("/mock/stats"));
    assert_eq!(response.status, 200);
    response.json()
}

#[test]
fn requests_per_minute_in_openai_style() {
    let mock = Mock::start(&["--key", "sk-a:rpm=2", "--key", "sk-b"]);
    let key = "Authorization: Bearer sk-a";
    let replies = pipelined(&mock, &[chat(key, 2), chat(key, 2), chat(key, 2)]);

    assert_eq!(replies[0].status, 200);
    assert_eq!(number(&replies[0], "x-ratelimit-limit-requests"), 2);
    assert_eq!(number(&replies[0], "x-ratelimit-remaining-requests"), 1);
    // One request of two missing: full again in half a minute.
    let reset = go_duration(replies[0].header("x-ratelimit-reset-requests").unwrap());
    assert!(
        reset <= Duration::from_secs(30) && reset > Duration::from_secs(29),
        "{reset:?}"
    );
    assert_eq!(
        replies[0].header("x-ratelimit-limit-tokens"),
        None,
        "no tpm"
    );
    assert_eq!(replies[0].header("retry-after"), None);
    assert_eq!(number(&replies[1], "x-ratelimit-remaining-requests"), 0);

    let limited = &replies[2];
    assert_eq!(limited.status, 429);
    assert_eq!(number(limited, "x-ratelimit-remaining-requests"), 0);
    let reset = go_duration(limited.header("x-ratelimit-reset-requests").unwrap());
    assert!(reset > Duration::from_secs(59), "{reset:?}");
    // The next request fits in (just under) 30 s.
    assert_eq!(limited.header("retry-after"), Some("30"));
    let retry_ms = number(limited, "retry-after-ms");
    assert!((29_000..=30_000).contains(&retry_ms), "{retry_ms}");
    let error = &limited.json()["error"];
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["param"], Value::Null);
    assert!(error["message"].as_str().unwrap().contains("limit 2"));

    // A key without limits gets no rate-limit fields.
    let free = exchange(&mock, &chat("Authorization: Bearer sk-b", 2));
    assert_eq!(free.status, 200);
    assert!(free
        .fields
        .iter()
        .all(|(name, _)| !name.contains("ratelimit")));
}

#[test]
fn limits_in_anthropic_style() {
    let mock = Mock::start(&["--key", "ant-1:rpm=1,tpm=1000"]);
    let before = unix_seconds();
    let replies = pipelined(
        &mock,
        &[chat("x-api-key: ant-1", 9), chat("x-api-key: ant-1", 9)],
    );

    let ok = &replies[0];
    assert_eq!(ok.status, 200);
    assert_eq!(number(ok, "anthropic-ratelimit-requests-limit"), 1);
    assert_eq!(number(ok, "anthropic-ratelimit-requests-remaining"), 0);
    assert_eq!(number(ok, "anthropic-ratelimit-tokens-limit"), 1000);
    assert_eq!(number(ok, "anthropic-ratelimit-tokens-remaining"), 990);
    // Full again a minute later, rounded up to the second.
    let reset = rfc3339_seconds(ok.header("anthropic-ratelimit-requests-reset").unwrap());
    assert!(
        (before + 60..=unix_seconds() + 61).contains(&reset),
        "{reset}"
    );
    assert!(ok
        .fields
        .iter()
        .all(|(name, _)| !name.starts_with("x-ratelimit")));

    let limited = &replies[1];
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(limited.header("retry-after-ms"), None);
    assert_eq!(number(limited, "anthropic-ratelimit-tokens-remaining"), 990);
    let body = limited.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[test]
fn limits_in_gemini_style() {
    let mock = Mock::start(&["--key", "g-1:rpm=1"]);
    let key = "x-goog-api-key: g-1";
    let replies = pipelined(&mock, &[models(key), models(key)]);

    assert_eq!(replies[0].status, 200);
    assert!(replies[0]
        .fields
        .iter()
        .all(|(name, _)| !name.contains("ratelimit")));
    let limited = &replies[1];
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), None);
    assert_eq!(
        limited.json()["error"]["details"],
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "60s"}])
    );
    assert_eq!(limited.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(limited.json()["error"]["code"], 429);
}

#[test]
fn tokens_per_minute_and_a_429_takes_nothing() {
    let mock = Mock::start(&["--key", "sk-t:tpm=100"]);
    let key = "Authorization: Bearer sk-t";
    // 1 prompt token and 50, 50, then 40 completion tokens.
    let replies = pipelined(&mock, &[chat(key, 50), chat(key, 50), chat(key, 40)]);

    assert_eq!(replies[0].status, 200);
    assert_eq!(number(&replies[0], "x-ratelimit-limit-tokens"), 100);
    assert_eq!(number(&replies[0], "x-ratelimit-remaining-tokens"), 49);
    assert_eq!(
        replies[0].header("x-ratelimit-limit-requests"),
        None,
        "no rpm"
    );

    let limited = &replies[1];
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["type"], "tokens");
    // Nothing was taken: had the 51 tokens been, the 41 of the next request would not fit.
    assert_eq!(number(limited, "x-ratelimit-remaining-tokens"), 49);
    assert_eq!(replies[2].status, 200);
    assert_eq!(number(&replies[2], "x-ratelimit-remaining-tokens"), 8);

    let counts = &stats(&mock)["keys"]["sk-t"];
    assert_eq!(
        counts,
        &json!({"ok": 2, "limited": 1, "denied": 0, "tokens": 92})
    );

    // More than the limit can ever hold.
    let too_large = exchange(&mock, &chat(key, 200));
    assert_eq!(too_large.status, 429);
    let message = too_large.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("Request too large"), "{message}");
}

#[test]
fn requests_refill_over_time() {
    // 60 a minute: one more each second.
    let mock = Mock::start(&["--key", "sk-r:rpm=60"]);
    let key = "Authorization: Bearer sk-r";
    let requests = vec![models(key); 61];
    let replies = pipelined(&mock, &requests);
    assert!(replies[..60].iter().all(|reply| reply.status == 200));
    let limited = &replies[60];
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    let wait = number(limited, "retry-after-ms");
    assert!(wait <= 1000, "{wait}");

    thread::sleep(Duration::from_millis(wait + 50));
    let refilled = exchange(&mock, &models(key));
    assert_eq!(refilled.status, 200);
    assert_eq!(number(&refilled, "x-ratelimit-remaining-requests"), 0);
}

#[test]
fn refused_and_unknown_keys() {
    let mock = Mock::start(&[
        "--key",
        "sk-abcdefxyz:status=401",
        "--key",
        "ant-x:status=403,rpm=5",
        "--key",
        "sk-ok",
    ]);

    let refused = exchange(&mock, &chat("Authorization: Bearer sk-abcdefxyz", 1));
    assert_eq!(refused.status, 401);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "invalid_api_key");
    assert_eq!(error["message"], "Incorrect API key provided: sk-a***xyz.");
    assert!(!refused.text().contains("sk-abcdefxyz"));

    let forbidden = exchange(&mock, &chat("x-api-key: ant-x", 1));
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.json()["error"]["type"], "permission_error");
    assert!(forbidden
        .fields
        .iter()
        .all(|(name, _)| !name.contains("ratelimit")));
    let forbidden = exchange(&mock, &models("x-goog-api-key: ant-x"));
    assert_eq!(forbidden.json()["error"]["status"], "PERMISSION_DENIED");

    let unknown = exchange(&mock, &chat("Authorization: Bearer sk-unknown-1", 1));
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.json()["error"]["message"],
        "Incorrect API key provided: sk-u***n-1."
    );
    let missing = exchange(&mock, &chat("X-Other: 1", 1));
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    let unknown = exchange(&mock, &models("x-goog-api-key: nope"));
    assert_eq!(unknown.json()["error"]["status"], "UNAUTHENTICATED");
    let unknown = exchange(&mock, &models("x-api-key: nope"));
    assert_eq!(unknown.json()["error"]["type"], "authentication_error");

    // The mock's own endpoints need no key.
    assert_eq!(exchange(&mock, &get("/healthz")).status, 200);
    assert_eq!(
        exchange(&mock, &chat("Authorization: Bearer sk-ok", 1)).status,
        200
    );

    let report = stats(&mock);
    assert_eq!(report["unknown"], 4);
    assert_eq!(report["keys"]["sk-abcdefxyz"]["denied"], 1);
    assert_eq!(report["keys"]["ant-x"]["denied"], 2);
    assert_eq!(report["keys"]["sk-ok"]["ok"], 1);
}

#[test]
fn a_forced_style_applies_to_every_key_field() {
    let mock = Mock::start(&["--key", "k", "--style", "anthropic"]);
    let unknown = exchange(&mock, &chat("Authorization: Bearer other", 1));
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json()["error"]["type"], "authentication_error");
}

#[test]
fn retry_after_and_extra_fields_are_sent_verbatim() {
    let mock = Mock::start(&[]);
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let fields = format!(
        "x-mock-status: 429\r\nx-mock-retry-after: {date}\r\n\
         x-mock-header: retry-after-ms: 250\r\n\
         x-mock-header: x-ratelimit-reset-requests:1m30.5s\r\n"
    );
    let limited = exchange(&mock, &post("/v1/chat/completions", &fields, "{}"));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some(date));
    assert_eq!(limited.header("retry-after-ms"), Some("250"));
    assert_eq!(
        limited.header("x-ratelimit-reset-requests"),
        Some("1m30.5s")
    );

    for bad in [
        "x-mock-header: no colon",
        "x-mock-header: Content-Length: 1",
    ] {
        let refused = exchange(
            &mock,
            &format!("GET / HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n"),
        );
        assert_eq!(refused.status, 400, "{bad}");
        assert_eq!(
            refused.json()["error"]["message"],
            "invalid value for x-mock-header"
        );
    }
}

#[test]
fn extra_fields_replace_a_keyed_replys_own() {
    let mock = Mock::start(&["--key", "sk-a:rpm=1"]);
    let key = "Authorization: Bearer sk-a\r\nx-mock-header: x-ratelimit-remaining-requests: 7";
    let reply = exchange(&mock, &models(key));
    assert_eq!(reply.status, 200);
    let remaining: Vec<_> = reply
        .fields
        .iter()
        .filter(|(name, _)| name == "x-ratelimit-remaining-requests")
        .collect();
    assert_eq!(
        remaining,
        [&("x-ratelimit-remaining-requests".to_owned(), "7".to_owned())]
    );
    assert_eq!(number(&reply, "x-ratelimit-limit-requests"), 1);
}

#[test]
fn stats_log_and_reset() {
    let mock = Mock::start(&["--key", "sk-1", "--key", "sk-2:rpm=1", "--workers", "2"]);
    let (one, two) = ("Authorization: Bearer sk-1", "Authorization: Bearer sk-2");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for request in [chat(one, 3), chat(two, 3), chat(two, 3), models(one)] {
        exchange(&mock, &request);
    }
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    let report = stats(&mock);
    assert_eq!(
        report["keys"],
        json!({
            "sk-1": {"ok": 2, "limited": 0, "denied": 0, "tokens": 4},
            "sk-2": {"ok": 1, "limited": 1, "denied": 0, "tokens": 4},
        })
    );
    assert_eq!(report["unknown"], 0);
    let log = report["log"].as_array().unwrap();
    let keys_and_statuses: Vec<(&str, u64)> = log
        .iter()
        .map(|entry| (entry[1].as_str().unwrap(), entry[2].as_u64().unwrap()))
        .collect();
    assert_eq!(
        keys_and_statuses,
        [("sk-1", 200), ("sk-2", 200), ("sk-2", 429), ("sk-1", 200)]
    );
    let times: Vec<u64> = log.iter().map(|entry| entry[0].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert!(times[0] >= before && times[3] <= after, "{times:?}");

    let reset = exchange(&mock, &post("/mock/reset", "", ""));
    assert_eq!(reset.status, 200);
    let cleared = stats(&mock);
    assert_eq!(cleared["log"], json!([]));
    assert_eq!(
        cleared["keys"]["sk-2"],
        json!({"ok": 0, "limited": 0, "denied": 0, "tokens": 0})
    );
    // The bucket is full again.
    assert_eq!(exchange(&mock, &chat(two, 3)).status, 200);
}

#[test]
fn workers_share_a_keys_limits() {
    let mock = Mock::start(&["--key", "k:rpm=3", "--workers", "2"]);
    let statuses: Vec<u16> = (0..6)
        .map(|_| exchange(&mock, &models("Authorization: Bearer k")).status)
        .collect();
    assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 3);
    assert_eq!(statuses.iter().filter(|&&status| status == 429).count(), 3);
}

#[test]
fn a_mock_without_keys_checks_none() {
    let mock = Mock::start(&[]);
    let reply = exchange(&mock, &chat("X-Other: 1", 1));
    assert_eq!(reply.status, 200);
    assert!(reply
        .fields
        .iter()
        .all(|(name, _)| !name.contains("ratelimit")));
    assert_eq!(stats(&mock), json!({"keys": {}, "unknown": 0, "log": []}));
}
