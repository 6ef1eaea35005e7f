//! `/metrics` with the real binary: upstream latency, usage per client key and tenant, what
//! providers say is left of a provider key's budget, and upstream connections per shard.

mod common;

use std::thread;

use common::admin::{scrape, scrape_until, value};
use common::keys::{chat, client_key};
use common::*;

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;

/// A gateway with an admin listener: `workers` shards, the `upstreams` tables, route `/v1/`
/// to upstream `llm`, then `rest`.
fn start(workers: usize, upstreams: &str, rest: &str) -> Gateway {
    let config = gateway_section(workers, "admin_listen = \"127.0.0.1:0\"")
        + upstreams
        + &route_section("/v1/", None, "llm")
        + rest;
    Gateway::start(&config)
}

/// An `openai` upstream table named `name` in front of `addr`, with `extra` lines.
fn openai(name: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nprovider = \"openai\"\nendpoints = [\"http://{addr}\"]\n\
         {extra}\n\n"
    )
}

#[test]
fn upstream_latency_is_a_histogram_per_upstream() {
    let mock = start_mock(&["--latency-ms", "50"]);
    let upstreams = openai("llm", mock.addr, "") + &openai("spare", dead_addr(), "");
    let gateway = start(2, &upstreams, "");
    let admin = gateway.admin_addr();
    for _ in 0..3 {
        let response = roundtrip(gateway.addr(), &chat("none", BODY, ""));
        assert_eq!(response.status, 200, "{}", response.body_text());
    }

    let series = |tail: &str| format!("keygate_upstream_duration_seconds{tail}");
    let text = scrape_until(admin, &[(&series("_count{upstream=\"llm\"}"), 3.0)]);
    assert!(text.contains("# TYPE keygate_upstream_duration_seconds histogram"));
    // The mock waits 50 ms before every answer: none is in a bucket below that.
    let bucket = |le: &str| {
        value(
            &text,
            &series(&format!("_bucket{{upstream=\"llm\",le=\"{le}\"}}")),
        )
    };
    assert_eq!(bucket("0.025"), Some(0.0));
    assert_eq!(bucket("60"), Some(3.0));
    assert_eq!(bucket("+Inf"), Some(3.0));
    let sum = value(&text, &series("_sum{upstream=\"llm\"}")).unwrap();
    assert!(sum >= 3.0 * 0.05 * 0.99, "sum {sum}");
    // An upstream without traffic has its series, empty.
    assert_eq!(
        value(&text, &series("_count{upstream=\"spare\"}")),
        Some(0.0)
    );
    // The same buckets as the route histogram.
    let buckets = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}_bucket{{")))
            .filter_map(|line| Some(line.split("le=\"").nth(1)?.split('"').next()?.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        buckets("keygate_upstream_duration_seconds"),
        buckets("keygate_request_duration_seconds")
    );
}

#[test]
fn usage_is_counted_per_client_key_and_tenant_for_keys_with_traffic_only() {
    let mock = start_mock(&[]);
    let rest = "[[tenant]]\nname = \"acme\"\n\n".to_string()
        + &client_key("app", "tenant = \"acme\"\nrate = \"1/m\"\nburst = 2")
        + &client_key("idle", "tenant = \"acme\"")
        + &client_key("solo", "");
    let gateway = start(2, &openai("llm", mock.addr, ""), &rest);
    let admin = gateway.admin_addr();

    let statuses: Vec<u16> = (0..3)
        .map(|_| roundtrip(gateway.addr(), &chat("kg-app", BODY, "")).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(
        roundtrip(gateway.addr(), &chat("kg-solo", BODY, "")).status,
        200
    );
    assert_eq!(
        roundtrip(gateway.addr(), &chat("kg-unknown-secret", BODY, "")).status,
        401
    );

    let app = |tail: &str| {
        format!("keygate_client_key_requests_total{{key_id=\"app\",tenant=\"acme\",{tail}")
    };
    let text = scrape_until(
        admin,
        &[
            (&app("status_class=\"2xx\"}"), 2.0),
            (&app("status_class=\"4xx\"}"), 1.0),
            (
                "keygate_client_key_requests_total{key_id=\"solo\",tenant=\"\",status_class=\"2xx\"}",
                1.0,
            ),
        ],
    );
    // Only what happened shows: no zero classes, no key without traffic, nothing for a
    // secret that matched no key.
    assert_eq!(value(&text, &app("status_class=\"5xx\"}")), None);
    assert!(!text.contains("key_id=\"idle\""), "{text}");
    assert!(!text.contains("unknown-secret"), "{text}");
    let key_requests: f64 = text
        .lines()
        .filter(|line| line.starts_with("keygate_client_key_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(key_requests, 4.0);

    // Tokens: the mock answers max_tokens (4) completion tokens.
    let tokens = |key: &str, tenant: &str, kind: &str| {
        let series = format!(
            "keygate_client_key_tokens_total{{key_id=\"{key}\",tenant=\"{tenant}\",kind=\"{kind}\"}}"
        );
        value(&text, &series)
    };
    assert_eq!(tokens("app", "acme", "completion"), Some(8.0));
    assert_eq!(tokens("solo", "", "completion"), Some(4.0));
    let prompt = tokens("app", "acme", "prompt").expect("prompt tokens of app");
    assert!(prompt > 0.0);

    // Tenants: acme's keys, and the empty tenant for keys without one.
    let tenant = |tenant: &str, class: &str| {
        let series = format!(
            "keygate_tenant_requests_total{{tenant=\"{tenant}\",status_class=\"{class}\"}}"
        );
        value(&text, &series)
    };
    assert_eq!(tenant("acme", "2xx"), Some(2.0));
    assert_eq!(tenant("acme", "4xx"), Some(1.0));
    assert_eq!(tenant("", "2xx"), Some(1.0));
    assert_eq!(tenant("", "4xx"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "keygate_tenant_tokens_total{tenant=\"acme\",kind=\"prompt\"}"
        ),
        Some(prompt)
    );
}

#[test]
fn what_providers_say_is_left_of_a_key_shows_until_its_window_resets() {
    let mock = start_mock(&[]);
    let keys = "strategy = \"round_robin\"\n\n\
                [[upstream.key]]\nid = \"a\"\nsecret = \"sk-a\"\n\n\
                [[upstream.key]]\nid = \"b\"\nsecret = \"sk-b\"\nrpm = 100\n";
    let gateway = start(1, &openai("llm", mock.addr, keys), "");
    let admin = gateway.admin_addr();
    let gauge = |text: &str, name: &str, key: &str| {
        value(
            text,
            &format!("keygate_upstream_key_{name}{{upstream=\"llm\",key=\"{key}\"}}"),
        )
    };

    // Nothing announced yet: only b's configured limit is known.
    for _ in 0..2 {
        assert_eq!(roundtrip(gateway.addr(), &chat("-", BODY, "")).status, 200);
    }
    let text = scrape(admin);
    assert!(text.contains("# TYPE keygate_upstream_key_remaining_requests gauge"));
    assert!(
        !text.contains("keygate_upstream_key_remaining_requests{"),
        "{text}"
    );
    assert!(
        !text.contains("keygate_upstream_key_remaining_tokens{"),
        "{text}"
    );
    assert_eq!(gauge(&text, "limit_requests_per_minute", "a"), None);
    assert_eq!(gauge(&text, "limit_requests_per_minute", "b"), Some(100.0));
    assert_eq!(gauge(&text, "limit_tokens_per_minute", "b"), None);

    // The provider announces its windows (resets far off): both keys hear it.
    let announced = "x-mock-header: x-ratelimit-limit-requests: 500\r\n\
                     x-mock-header: x-ratelimit-remaining-requests: 123\r\n\
                     x-mock-header: x-ratelimit-reset-requests: 50m0s\r\n\
                     x-mock-header: x-ratelimit-limit-tokens: 90000\r\n\
                     x-mock-header: x-ratelimit-remaining-tokens: 45000\r\n\
                     x-mock-header: x-ratelimit-reset-tokens: 40m0s\r\n";
    for _ in 0..2 {
        let response = roundtrip(gateway.addr(), &chat("-", BODY, announced));
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let text = scrape(admin);
    for key in ["a", "b"] {
        assert_eq!(
            gauge(&text, "remaining_requests", key),
            Some(123.0),
            "{text}"
        );
        assert_eq!(gauge(&text, "remaining_tokens", key), Some(45000.0));
        assert_eq!(gauge(&text, "limit_tokens_per_minute", key), Some(90000.0));
    }
    // The limit a key is paced by: the lower of the configured and the announced one.
    assert_eq!(gauge(&text, "limit_requests_per_minute", "a"), Some(500.0));
    assert_eq!(gauge(&text, "limit_requests_per_minute", "b"), Some(100.0));
}

#[test]
fn upstream_connections_show_per_shard_idle_and_in_flight() {
    let mock = start_mock(&["--latency-ms", "3000"]);
    let upstreams = openai("llm", mock.addr, "") + &openai("spare", dead_addr(), "");
    let gateway = start(1, &upstreams, "");
    let admin = gateway.admin_addr();
    let in_flight = "keygate_upstream_in_flight_requests{shard=\"0\",upstream=\"llm\"}";
    let idle = "keygate_upstream_pool_idle_connections{shard=\"0\",upstream=\"llm\"}";
    let spare = "keygate_upstream_pool_idle_connections{shard=\"0\",upstream=\"spare\"}";
    scrape_until(admin, &[(in_flight, 0.0), (idle, 0.0), (spare, 0.0)]);

    let addr = gateway.addr();
    let slow = thread::spawn(move || roundtrip(addr, &chat("-", BODY, "")).status);
    scrape_until(admin, &[(in_flight, 1.0), (idle, 0.0)]);
    assert_eq!(slow.join().unwrap(), 200);
    // Its connection went back to the pool.
    scrape_until(admin, &[(in_flight, 0.0), (idle, 1.0), (spare, 0.0)]);
}
