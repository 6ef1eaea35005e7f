//! Client-key limits end to end: exact counts when many connections land on both shards,
//! no double burst at a window edge, calendar windows that reopen on the minute, waits right
//! to the millisecond, refused requests that cost nothing, concurrency, token budgets
//! settled by reported usage (streamed too), tenant-wide quotas, and the budget headers.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::keys::*;
use common::*;

/// A quota is exact however the connections spread over the shards: 40 connections fire at
/// once until refused, about half of them handed to the owning shard, and exactly 50 pass.
#[test]
fn a_quota_is_exact_across_shards() {
    let mock = start_mock(&[]);
    let keys = client_key("q50", "quota = { per_hour = 50 }");
    let gateway = Gateway::start_with_env(&keyed_config(2, mock.addr, "", &keys), DEBUG_LOG);
    stay_in_one_window(3600, Duration::from_secs(30));

    let burst = fire_until_refused(gateway.addr(), 40, &get_models("kg-q50"));

    assert_eq!(burst.admitted, 50);
    assert_eq!(burst.refused.len(), 40);
    for refused in &burst.refused {
        assert_error(refused, 429, "quota_exceeded");
        assert_eq!(header_u64(refused, "x-ratelimit-remaining-requests"), 0);
    }
    assert!(
        handoffs_at_least(&gateway, 1) > 0,
        "no connection was handed over"
    );
}

/// A burst is exact across shards: with 20 a minute and a bucket of 20, a burst from 40
/// connections admits 20, and one more only for each 3 s the burst lasted.
#[test]
fn a_burst_is_exact_across_shards() {
    let mock = start_mock(&[]);
    let keys = client_key("r20", "rate = \"20/m\"\nburst = 20");
    let gateway = Gateway::start_with_env(&keyed_config(2, mock.addr, "", &keys), DEBUG_LOG);

    let burst = fire_until_refused(gateway.addr(), 40, &get_models("kg-r20"));

    let refills = (burst.elapsed.as_secs_f64() / 3.0) as usize;
    assert!(
        (20..=20 + refills).contains(&burst.admitted),
        "{} admitted in {:?}",
        burst.admitted,
        burst.elapsed
    );
    for refused in &burst.refused {
        assert_error(refused, 429, "rate_limit_exceeded");
    }
    assert!(
        handoffs_at_least(&gateway, 1) > 0,
        "no connection was handed over"
    );
}

/// A full bucket spent at once cannot be spent again a moment later: over any stretch of
/// time, at most burst + rate × its length pass (plus one for the edges).
#[test]
fn a_burst_at_a_window_edge_cannot_pass_twice_the_limit() {
    let mock = start_mock(&[]);
    let keys = client_key("r10", "rate = \"10/s\"\nburst = 10");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    let (connections, run) = (4, Duration::from_millis(1500));
    let start = Arc::new(Barrier::new(connections + 1));
    let t0 = Instant::now();

    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let start = Arc::clone(&start);
            let addr = gateway.addr();
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut admitted = Vec::new();
                start.wait();
                while t0.elapsed() < run {
                    let sent = t0.elapsed().as_secs_f64();
                    client.send(&get_models("kg-r10"));
                    let response = client.read_response(false);
                    let received = t0.elapsed().as_secs_f64();
                    match response.status {
                        200 => admitted.push((sent, received)),
                        429 => thread::sleep(Duration::from_millis(5)),
                        _ => panic!("{}", response.raw_head),
                    }
                }
                admitted
            })
        })
        .collect();
    start.wait();
    let mut admitted: Vec<(f64, f64)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let elapsed = t0.elapsed().as_secs_f64();
    admitted.sort_by(|a, b| a.0.total_cmp(&b.0));

    let bound = |span: f64| 10.0 + 10.0 * span + 1.0;
    assert!(
        admitted.len() >= 10,
        "not even the burst passed: {admitted:?}"
    );
    assert!(
        admitted.len() as f64 <= bound(elapsed),
        "{} admitted in {elapsed:.3} s",
        admitted.len()
    );
    // Every request sent after `a` was sent and answered before `b` was answered passed
    // within that stretch.
    for a in &admitted {
        for b in &admitted {
            let inside = admitted.iter().filter(|r| r.0 >= a.0 && r.1 <= b.1).count();
            let span = b.1 - a.0;
            assert!(
                inside as f64 <= bound(span.max(0.0)),
                "{inside} admitted within {span:.3} s: {admitted:?}"
            );
        }
    }
}

/// A minute quota refuses with the wait until the UTC minute turns, and the next minute
/// admits again. (The one test here that waits for the clock: up to a minute.)
#[test]
fn a_minute_quota_reopens_when_the_utc_minute_turns() {
    let mock = start_mock(&[]);
    let keys = client_key("m3", "quota = { per_minute = 3 }");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    stay_in_one_window(60, Duration::from_secs(3));

    for remaining in [2, 1, 0] {
        let response = roundtrip(gateway.addr(), &get_models("kg-m3"));
        assert_eq!(response.status, 200, "{}", response.raw_head);
        assert_eq!(
            header_u64(&response, "x-ratelimit-remaining-requests"),
            remaining
        );
    }
    let refused = roundtrip(gateway.addr(), &get_models("kg-m3"));
    let left = left_in_window(60);
    assert_error(&refused, 429, "quota_exceeded");
    let retry_after = header_u64(&refused, "retry-after");
    let retry_ms = header_u64(&refused, "retry-after-ms");
    assert!(
        (retry_after as f64 - left.ceil()).abs() <= 1.0,
        "Retry-After {retry_after} with {left:.3} s left in the minute"
    );
    assert!(
        (retry_ms as f64 - left * 1000.0).abs() <= 1000.0,
        "retry-after-ms {retry_ms} with {left:.3} s left in the minute"
    );
    assert_eq!(retry_after, retry_ms.div_ceil(1000));

    thread::sleep(Duration::from_millis(retry_ms + 50));
    let response = roundtrip(gateway.addr(), &get_models("kg-m3"));
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 2);
}

/// Retry-After and retry-after-ms carry the true wait: a minute for 1/m, at most 500 ms for
/// 2/s, and a retry after that wait passes.
#[test]
fn retry_after_is_right_to_the_millisecond() {
    let mock = start_mock(&[]);
    let keys = client_key("slow", "rate = \"1/m\"\nburst = 1")
        + &client_key("fast", "rate = \"2/s\"\nburst = 1");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));

    let mut client = Client::connect(gateway.addr());
    client.send(&get_models("kg-slow"));
    assert_eq!(client.read_response(false).status, 200);
    client.send(&get_models("kg-slow"));
    let refused = client.read_response(false);
    assert_error(&refused, 429, "rate_limit_exceeded");
    let retry_after = header_u64(&refused, "retry-after");
    let retry_ms = header_u64(&refused, "retry-after-ms");
    assert!((59..=60).contains(&retry_after), "{}", refused.raw_head);
    assert!(
        retry_ms > 59_000 && retry_ms <= 60_000,
        "{}",
        refused.raw_head
    );

    let mut client = Client::connect(gateway.addr());
    client.send(&get_models("kg-fast"));
    assert_eq!(client.read_response(false).status, 200);
    for _ in 0..3 {
        client.send(&get_models("kg-fast"));
        let refused = client.read_response(false);
        assert_error(&refused, 429, "rate_limit_exceeded");
        assert_eq!(header_u64(&refused, "retry-after"), 1);
        let retry_ms = header_u64(&refused, "retry-after-ms");
        assert!(retry_ms > 0 && retry_ms <= 500, "{}", refused.raw_head);

        thread::sleep(Duration::from_millis(retry_ms));
        client.send(&get_models("kg-fast"));
        let response = client.read_response(false);
        assert_eq!(response.status, 200, "{}", response.raw_head);
    }
}

/// Requests the rate refuses take nothing from the hourly quota.
#[test]
fn refused_requests_consume_nothing() {
    let mock = start_mock(&[]);
    let keys = client_key(
        "spare",
        "rate = \"1/s\"\nburst = 1\nquota = { per_hour = 5 }",
    );
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    stay_in_one_window(3600, Duration::from_secs(30));

    let mut client = Client::connect(gateway.addr());
    let (mut admitted, mut last) = (0, None);
    for _ in 0..20 {
        client.send(&get_models("kg-spare"));
        let response = client.read_response(false);
        match response.status {
            200 => admitted += 1,
            _ => assert_error(&response, 429, "rate_limit_exceeded"),
        }
        last = Some(response);
    }
    let last = last.unwrap();
    assert!((1..5).contains(&admitted), "{admitted} admitted");
    assert_eq!(ratelimit_remaining(&last, "hour"), 5 - admitted);
    assert_eq!(ratelimit_remaining(&last, "rate"), 0);

    // A second later one more passes, and it is the only one more counted.
    thread::sleep(Duration::from_millis(1000));
    client.send(&get_models("kg-spare"));
    let response = client.read_response(false);
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert_eq!(ratelimit_remaining(&response, "hour"), 4 - admitted);
}

/// max_concurrent = 2: of five requests at once two pass, three are refused at once; once
/// the two are done, others pass.
#[test]
fn max_concurrent_refuses_what_does_not_fit() {
    let mock = start_mock(&[]);
    let keys = client_key("two", "max_concurrent = 2");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    let request = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nx-api-key: kg-two\r\n\
                    x-mock-latency-ms: 500\r\n\r\n";

    let at_once = |n: usize| -> Vec<(Response, Duration)> {
        let start = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (start, addr) = (Arc::clone(&start), gateway.addr());
                thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    start.wait();
                    let sent = Instant::now();
                    client.send(request);
                    let response = client.read_response(false);
                    (response, sent.elapsed())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    };

    let results = at_once(5);
    let passed: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.status != 200).collect();
    assert_eq!(passed.len(), 2, "{results:#?}");
    for (response, took) in &refused {
        assert_error(response, 429, "rate_limit_exceeded");
        assert_eq!(header_u64(response, "retry-after"), 1);
        assert!(*took < Duration::from_millis(500), "refused after {took:?}");
    }
    for (_, took) in &passed {
        assert!(*took >= Duration::from_millis(500));
    }

    let results = at_once(2);
    for (response, _) in &results {
        assert_eq!(response.status, 200, "{}", response.raw_head);
    }
}

fn chat_body(max_tokens: u64, stream: bool) -> String {
    let stream = match stream {
        true => r#","stream":true,"stream_options":{"include_usage":true}"#,
        false => "",
    };
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}{stream}}}"#
    )
}

/// tokens_per_minute = 100: each request reserves its prompt (1 token here) plus max_tokens,
/// and is settled with the usage the mock reports (1 + 5), streamed or not.
#[test]
fn token_budget_is_reserved_then_settled_with_reported_usage() {
    let mock = start_mock(&[]);
    let keys = client_key("tok", "tokens_per_minute = 100");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    let t0 = Instant::now();
    // One token refills every 600 ms: what may have come back since the start.
    let refilled = || (t0.elapsed().as_millis() / 600) as u64 + 1;
    let remaining = |r: &Response| header_u64(r, "x-ratelimit-remaining-tokens");
    let tokens = "x-mock-tokens: 5\r\n";
    let mut client = Client::connect(gateway.addr());

    // 91 reserved of 100.
    client.send(&chat("kg-tok", &chat_body(90, false), tokens));
    let response = client.read_response(false);
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert_eq!(response.json()["usage"]["total_tokens"], 6);
    assert_eq!(header_u64(&response, "x-ratelimit-limit-tokens"), 100);
    assert!(response.header("x-ratelimit-reset-tokens").is_some());
    assert_eq!(remaining(&response), 9);

    // It used 6: the 85 it did not use came back, so 91 fit again.
    client.send(&chat("kg-tok", &chat_body(90, false), tokens));
    let response = client.read_response(false);
    assert_eq!(response.status, 200, "{}", response.raw_head);
    let left = remaining(&response);
    assert!(
        (3..=3 + refilled()).contains(&left),
        "{}",
        response.raw_head
    );

    // 12 used: 88 left, and 100 do not fit.
    client.send(&chat("kg-tok", &chat_body(99, false), tokens));
    let refused = client.read_response(false);
    assert_error(&refused, 429, "rate_limit_exceeded");
    let left = remaining(&refused);
    assert!(
        (88..=88 + refilled()).contains(&left),
        "{}",
        refused.raw_head
    );
    let retry_ms = header_u64(&refused, "retry-after-ms");
    assert!(retry_ms > 0 && retry_ms <= 12 * 600, "{}", refused.raw_head);

    // A stream reserving 81 passes, and its usage chunk settles it at 6.
    client.send(&chat("kg-tok", &chat_body(80, true), tokens));
    let response = client.read_response(false);
    assert_eq!(response.status, 200, "{}", response.raw_head);
    let events = response.body_text();
    assert!(
        events.contains(r#""total_tokens":6"#),
        "no usage chunk: {events}"
    );

    // 18 used: 82 left, so 81 fit; had the stream kept its reservation only 7 would be.
    client.send(&chat("kg-tok", &chat_body(80, false), tokens));
    let response = client.read_response(false);
    assert_eq!(
        response.status,
        200,
        "the stream was not settled by its usage: {}{}",
        response.raw_head,
        response.body_text()
    );
    let left = remaining(&response);
    assert!(
        (1..=1 + refilled()).contains(&left),
        "{}",
        response.raw_head
    );
}

/// A tenant's quota counts all its keys together: 3 + 3 requests from two keys of a tenant
/// allowed 5 an hour, and exactly 5 pass.
#[test]
fn a_tenant_quota_is_shared_by_its_keys() {
    let mock = start_mock(&[]);
    let rest = "[[tenant]]\nname = \"acme\"\nquota = { per_hour = 5 }\n\n".to_owned()
        + &client_key("acme-1", "tenant = \"acme\"")
        + &client_key("acme-2", "tenant = \"acme\"");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &rest));
    stay_in_one_window(3600, Duration::from_secs(30));

    let mut statuses = Vec::new();
    for _ in 0..3 {
        for key in ["kg-acme-1", "kg-acme-2"] {
            let response = roundtrip(gateway.addr(), &get_models(key));
            if response.status != 200 {
                assert_error(&response, 429, "quota_exceeded");
            }
            statuses.push(response.status);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
}

/// The key's budget replaces whatever the upstream says about its own limits, on 200 and on
/// 429 alike; a key without limits gets no budget fields at all.
#[test]
fn budget_headers_are_the_keys_own() {
    let upstream = ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        while read_seen(&mut stream, &mut carry).is_some() {
            let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                            x-ratelimit-limit-requests: 1000\r\n\
                            x-ratelimit-remaining-requests: 999\r\n\
                            x-ratelimit-reset-requests: 999ms\r\n\
                            x-ratelimit-limit-tokens: 9999\r\n\
                            x-ratelimit-remaining-tokens: 9990\r\n\
                            RateLimit-Policy: \"up\";q=1000;w=60\r\n\
                            RateLimit: \"up\";r=999;t=1\r\n\
                            x-upstream-other: kept\r\n\r\nok";
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    });
    let keys =
        client_key("budget", "rate = \"10/s\"\nquota = { per_hour = 3 }") + &client_key("free", "");
    let gateway = Gateway::start(&keyed_config(2, upstream.addr, "", &keys));
    stay_in_one_window(3600, Duration::from_secs(30));
    let count = |r: &Response, name: &str| {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };

    let mut client = Client::connect(gateway.addr());
    for remaining in [2, 1, 0] {
        client.send(&get_models("kg-budget"));
        let response = client.read_response(false);
        assert_eq!(response.status, 200, "{}", response.raw_head);
        assert_eq!(response.header("x-upstream-other"), Some("kept"));
        assert!(!response.raw_head.contains("999"), "{}", response.raw_head);
        for name in [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "ratelimit-policy",
            "ratelimit",
        ] {
            assert_eq!(count(&response, name), 1, "{name}: {}", response.raw_head);
        }
        assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 3);
        assert_eq!(
            header_u64(&response, "x-ratelimit-remaining-requests"),
            remaining
        );
        let reset = response.header("x-ratelimit-reset-requests").unwrap();
        let secs = parse_reset(reset);
        let left = left_in_window(3600);
        assert!(
            (secs - left).abs() <= 2.0,
            "reset {reset} with {left:.0} s left"
        );
        assert_eq!(
            response.header("ratelimit-policy"),
            Some("\"rate\";q=10;w=1, \"hour\";q=3;w=3600")
        );
        assert_eq!(ratelimit_remaining(&response, "hour"), remaining);
        // No token limit: no token budget, and the upstream's is not passed on.
        assert_eq!(count(&response, "x-ratelimit-limit-tokens"), 0);
        assert_eq!(count(&response, "x-ratelimit-remaining-tokens"), 0);
    }
    client.send(&get_models("kg-budget"));
    let refused = client.read_response(false);
    assert_error(&refused, 429, "quota_exceeded");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit-requests"), 3);
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining-requests"), 0);
    assert!(refused.header("ratelimit-policy").is_some());
    assert_eq!(ratelimit_remaining(&refused, "hour"), 0);

    let response = roundtrip(gateway.addr(), &get_models("kg-free"));
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert_eq!(response.header("x-upstream-other"), Some("kept"));
    for (name, _) in &response.headers {
        let name = name.to_ascii_lowercase();
        assert!(
            !name.starts_with("x-ratelimit-") && !name.starts_with("ratelimit"),
            "{}",
            response.raw_head
        );
    }
}

/// Seconds in OpenAI's reset format: `250ms`, `12s`, `6m0s`, `1h2m3s`.
fn parse_reset(text: &str) -> f64 {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<f64>().unwrap() / 1000.0;
    }
    let (mut total, mut number) = (0.0, String::new());
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let unit = match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                total += number.parse::<f64>().unwrap() * unit;
                number.clear();
            }
            _ => panic!("bad reset {text:?}"),
        }
    }
    total
}

/// A request that asks for no completion (no body: `GET /v1/models`) reserves no tokens: it
/// must not take a key's token budget, which counts the upstream's reported usage.
#[test]
fn a_request_without_a_body_reserves_no_tokens() {
    let mock = start_mock(&[]);
    let keys = client_key("tok", "tokens_per_minute = 100");
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", &keys));
    let mut client = Client::connect(gateway.addr());

    for _ in 0..3 {
        client.send(&get_models("kg-tok"));
        let response = client.read_response(false);
        assert_eq!(response.status, 200, "{}", response.raw_head);
        assert_eq!(
            header_u64(&response, "x-ratelimit-remaining-tokens"),
            100,
            "{}",
            response.raw_head
        );
    }
    client.send(&chat(
        "kg-tok",
        &chat_body(90, false),
        "x-mock-tokens: 5\r\n",
    ));
    let response = client.read_response(false);
    assert_eq!(response.status, 200, "{}", response.raw_head);
}
