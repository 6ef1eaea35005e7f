//! Client keys at the door: 401 for a missing, unknown or expired key, every accepted way of
//! presenting one, the key never forwarded upstream, and 403 outside a key's routes and
//! models. Each test runs its own gateway with two shards, so some connections are handed
//! to the shard owning their key.

mod common;

use common::keys::*;
use common::*;

const KEYS: &str = "[[client_key]]\nid = \"live\"\nsecret = \"kg-live-0001\"\n\n\
                    [[client_key]]\nid = \"gone\"\nsecret = \"kg-gone-0001\"\n\
                    expires = 2020-01-01T00:00:00Z\n\n";

fn get(fields: &str) -> Vec<u8> {
    format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{fields}\r\n").into_bytes()
}

#[test]
fn missing_unknown_and_expired_keys_get_401() {
    let echo = Echo::start("echo");
    let gateway = Gateway::start(&keyed_config(2, echo.addr(), "", KEYS));
    let cases = [
        ("missing", ""),
        ("empty bearer", "Authorization: Bearer \r\n"),
        (
            "another scheme",
            "Authorization: Basic a2ctbGl2ZS0wMDAx\r\n",
        ),
        ("unknown", "Authorization: Bearer kg-nobody\r\n"),
        ("unknown x-api-key", "x-api-key: kg-nobody\r\n"),
        ("wrong case", "Authorization: Bearer KG-LIVE-0001\r\n"),
        ("expired", "Authorization: Bearer kg-gone-0001\r\n"),
        ("expired api-key", "api-key: kg-gone-0001\r\n"),
    ];
    for (case, fields) in cases {
        let response = roundtrip(gateway.addr(), &get(fields));
        assert_error(&response, 401, "invalid_api_key");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{case}: {}",
            response.raw_head
        );
        assert!(
            response.header("x-ratelimit-limit-requests").is_none(),
            "{case}: no budget without a key: {}",
            response.raw_head
        );
    }
    assert!(echo.seen().is_empty(), "{:#?}", echo.seen());
}

#[test]
fn the_key_is_accepted_in_every_form_and_never_forwarded() {
    let echo = Echo::start("echo");
    let gateway = Gateway::start(&keyed_config(2, echo.addr(), "", KEYS));
    let forms = [
        "Authorization: Bearer kg-live-0001\r\n",
        "authorization: bearer kg-live-0001\r\n",
        "AUTHORIZATION: BEARER kg-live-0001\r\n",
        "x-api-key: kg-live-0001\r\n",
        "X-API-Key: kg-live-0001\r\n",
        "api-key: kg-live-0001\r\n",
        // Every place at once: none of them travels on.
        "Authorization: Bearer kg-live-0001\r\nx-api-key: kg-live-0001\r\n\
         api-key: kg-live-0001\r\n",
    ];
    for fields in forms {
        // A fresh connection each: about half land on the shard that does not own the key.
        let response = roundtrip(gateway.addr(), &get(fields));
        assert_eq!(
            (response.status, response.body_text()),
            (200, "echo /v1/models".to_owned()),
            "{fields:?}: {}",
            response.raw_head
        );
    }

    // And several requests on one connection, the key in a different field each time.
    let mut client = Client::connect(gateway.addr());
    for fields in &forms[..3] {
        client.send(&get(fields));
        assert_eq!(client.read_response(false).status, 200, "{fields:?}");
    }

    let seen = echo.seen();
    assert_eq!(seen.len(), forms.len() + 3);
    for request in &seen {
        assert!(!request.head.contains("kg-live"), "{}", request.head);
        for name in ["authorization", "x-api-key", "api-key"] {
            assert!(!request.has(name), "{name} forwarded: {}", request.head);
        }
    }
}

#[test]
fn a_connection_that_changes_its_key_is_checked_every_time() {
    let echo = Echo::start("echo");
    let gateway = Gateway::start(&keyed_config(2, echo.addr(), "", KEYS));
    let mut client = Client::connect(gateway.addr());
    // The gateway remembers the last valid key of a connection: a near miss, an expired key
    // and a missing one in between must still be refused, and the valid one accepted again.
    let sequence = [
        ("Authorization: Bearer kg-live-0001\r\n", 200),
        ("Authorization: Bearer kg-live-0001\r\n", 200),
        ("Authorization: Bearer kg-live-0002\r\n", 401),
        ("Authorization: Bearer kg-live-0001\r\n", 200),
        ("Authorization: Bearer kg-live-000\r\n", 401),
        ("Authorization: Bearer kg-gone-0001\r\n", 401),
        ("", 401),
        ("x-api-key: kg-live-0001\r\n", 200),
    ];
    for (fields, status) in sequence {
        client.send(&get(fields));
        let response = client.read_response(false);
        assert_eq!(response.status, status, "{fields:?}: {}", response.raw_head);
    }
    assert_eq!(echo.seen().len(), 4);
}

#[test]
fn the_mock_never_sees_the_client_key() {
    let mock = start_mock(&[]);
    let gateway = Gateway::start(&keyed_config(2, mock.addr, "", KEYS));
    for fields in [
        "Authorization: Bearer kg-live-0001\r\n",
        "x-api-key: kg-live-0001\r\n",
        "api-key: kg-live-0001\r\n",
    ] {
        let request = format!("GET /echo HTTP/1.1\r\nHost: gw\r\n{fields}\r\n");
        let response = roundtrip(gateway.addr(), request.as_bytes());
        assert_eq!(response.status, 200, "{}", response.raw_head);
        assert_eq!(response.header("x-mock-saw-authorization"), Some("-"));
        let echoed = response.json();
        let headers = echoed["headers"].as_array().expect("headers");
        for pair in headers {
            let name = pair[0].as_str().unwrap().to_ascii_lowercase();
            let value = pair[1].as_str().unwrap();
            assert!(
                !value.contains("kg-live") && !["x-api-key", "api-key"].contains(&name.as_str()),
                "{fields:?} reached the upstream: {echoed}"
            );
        }
    }
}

#[test]
fn a_route_outside_the_keys_routes_is_forbidden() {
    let echo = Echo::start("echo");
    let keys = client_key("chat-only", "routes = [\"/v1/chat/\"]");
    let gateway = Gateway::start(&keyed_config(2, echo.addr(), "", &keys));

    let response = roundtrip(gateway.addr(), &get_models("kg-chat-only"));
    assert_error(&response, 403, "forbidden");
    assert!(echo.seen().is_empty());

    let allowed = chat("kg-chat-only", r#"{"model":"m","messages":[]}"#, "");
    let response = roundtrip(gateway.addr(), &allowed);
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert_eq!(echo.only().target(), "/v1/chat/completions");
}

#[test]
fn a_model_outside_the_keys_models_is_forbidden() {
    let echo = Echo::start("echo");
    let keys = client_key("mini", "models = [\"gpt-4o-mini\"]");
    let gateway = Gateway::start(&keyed_config(2, echo.addr(), "", &keys));
    let body = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    };

    for model in ["gpt-4o", "gpt-4o-mini-2024", "GPT-4O-MINI"] {
        let response = roundtrip(gateway.addr(), &chat("kg-mini", &body(model), ""));
        assert_error(&response, 403, "forbidden");
    }
    // A body without a model cannot prove it asks for an allowed one.
    let response = roundtrip(gateway.addr(), &chat("kg-mini", r#"{"messages":[]}"#, ""));
    assert_error(&response, 403, "forbidden");
    assert!(echo.seen().is_empty(), "{:#?}", echo.seen());

    let response = roundtrip(gateway.addr(), &chat("kg-mini", &body("gpt-4o-mini"), ""));
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert!(String::from_utf8_lossy(&echo.only().body).contains("\"gpt-4o-mini\""));
}

/// A connection handed to the key's owner takes along the bytes already read: bodies (small
/// and larger than one read), and requests pipelined behind the first, arrive whole and in
/// order.
#[test]
fn a_handed_over_connection_keeps_its_bytes() {
    let echo = Echo::start("echo");
    let gateway = Gateway::start_with_env(&keyed_config(2, echo.addr(), "", KEYS), DEBUG_LOG);
    let body = |n: usize, size: usize| -> Vec<u8> {
        (0..size).map(|i| b'a' + ((i * 7 + n) % 26) as u8).collect()
    };
    let post = |path: &str, body: &[u8]| {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nx-api-key: kg-live-0001\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };

    // Twelve connections, each a body sent with its head in one write.
    let sizes = [10, 5000, 40_000, 200_000];
    for n in 0..12 {
        let size = sizes[n % sizes.len()];
        let response = roundtrip(gateway.addr(), &post(&format!("/b/{n}"), &body(n, size)));
        assert_eq!(response.status, 200, "{}", response.raw_head);
        assert_eq!(response.body_text(), format!("echo /b/{n}"));
    }

    // Three requests in one write, on each of four connections.
    for c in 0..4 {
        let mut client = Client::connect(gateway.addr());
        let mut batch = Vec::new();
        for i in 0..3 {
            batch.extend(post(&format!("/p/{c}/{i}"), &body(i, 100 + i)));
        }
        client.send(&batch);
        for i in 0..3 {
            let response = client.read_response(false);
            assert_eq!(response.body_text(), format!("echo /p/{c}/{i}"));
        }
    }

    let seen = echo.seen();
    assert_eq!(seen.len(), 12 + 12);
    for request in &seen {
        let target = request.target();
        let expected = match target.split('/').collect::<Vec<_>>()[..] {
            ["", "b", n] => {
                let n: usize = n.parse().unwrap();
                body(n, sizes[n % sizes.len()])
            }
            ["", "p", _, i] => {
                let i: usize = i.parse().unwrap();
                body(i, 100 + i)
            }
            _ => panic!("unexpected target {target}"),
        };
        assert!(
            request.body == expected,
            "{target}: body changed on the way"
        );
    }
    assert!(
        handoffs_at_least(&gateway, 1) > 0,
        "no connection was handed over"
    );
}

/// One connection presenting, in turn, two keys owned by different shards is handed back and
/// forth, and each key's quota stays exact.
#[test]
fn keys_of_different_owners_share_one_connection() {
    let echo = Echo::start("echo");
    // Over two shards "k1" belongs to shard 1 and "k2" to shard 0 (FNV-1a).
    let keys = client_key("k1", "quota = { per_hour = 5 }")
        + &client_key("k2", "quota = { per_hour = 5 }");
    let gateway = Gateway::start_with_env(&keyed_config(2, echo.addr(), "", &keys), DEBUG_LOG);
    stay_in_one_window(3600, std::time::Duration::from_secs(30));

    let mut client = Client::connect(gateway.addr());
    let mut passed = [0, 0];
    for round in 0..8 {
        for (k, secret) in ["kg-k1", "kg-k2"].into_iter().enumerate() {
            client.send(&get_models(secret));
            let response = client.read_response(false);
            match response.status {
                200 => passed[k] += 1,
                _ => assert_error(&response, 429, "quota_exceeded"),
            }
            let expected = 5u64.saturating_sub(round + 1);
            assert_eq!(
                header_u64(&response, "x-ratelimit-remaining-requests"),
                expected
            );
        }
    }
    assert_eq!(passed, [5, 5]);
    // At least one switch of owner per round trip of keys.
    let seen = handoffs_at_least(&gateway, 8);
    assert!(seen >= 8, "{seen}");
}
