//! The admin listener with the real binary: health and readiness, provider key metrics, the
//! admin token, and enabling and disabling provider keys at runtime.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "admin-token-for-tests-0123456789";

/// A gateway with an admin listener in front of the mock at `mock`, keys `sk-a` (id a) and
/// `sk-b` (id b); returns it with its admin address.
fn start(mock: SocketAddr, token_env: bool) -> (Gateway, SocketAddr) {
    let env_line = if token_env {
        "admin_token_env = \"KEYGATE_TEST_ADMIN_TOKEN\""
    } else {
        ""
    };
    let config = format!(
        "{}[[upstream]]\nname = \"pool\"\nprovider = \"openai\"\nendpoints = [\"http://{mock}\"]\n\
         strategy = \"round_robin\"\n\n\
         [[upstream.key]]\nid = \"a\"\nsecret = \"sk-a\"\n\n\
         [[upstream.key]]\nid = \"b\"\nsecret = \"sk-b\"\n\n{}",
        gateway_section(2, &format!("admin_listen = \"127.0.0.1:0\"\n{env_line}")),
        route_section("/", None, "pool")
    );
    let gateway = Gateway::start_with_env(&config, &[("KEYGATE_TEST_ADMIN_TOKEN", TOKEN)]);
    let admin = gateway.admin_addr();
    (gateway, admin)
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}\r\n");
    roundtrip(addr, request.as_bytes())
}

fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("POST {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\n\r\n");
    roundtrip(addr, request.as_bytes())
}

fn chat(addr: SocketAddr) -> Response {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(addr, request.as_bytes())
}

/// Which provider key the mock saw on each of `count` requests.
fn keys_used(gateway: &Gateway, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let response = chat(gateway.addr());
            assert_eq!(response.status, 200, "{}", response.body_text());
            response
                .header("x-mock-saw-authorization")
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_string()
        })
        .collect()
}

fn metric(text: &str, name: &str, key: &str) -> f64 {
    let prefix = format!("{name}{{upstream=\"pool\",key=\"{key}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} not in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn health_readiness_and_key_metrics_need_no_token() {
    let mock = start_mock(&["--key", "sk-a", "--key", "sk-b"]);
    let (gateway, admin) = start(mock.addr, true);
    assert_eq!(get(admin, "/healthz", None).status, 200);
    assert_eq!(get(admin, "/readyz", None).status, 200);
    keys_used(&gateway, 4);
    let metrics = get(admin, "/metrics", None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body_text();
    assert!(
        text.contains("# TYPE keygate_upstream_key_state gauge"),
        "{text}"
    );
    assert_eq!(metric(&text, "keygate_upstream_key_state", "a"), 0.0);
    assert_eq!(
        metric(&text, "keygate_upstream_key_cooldown_seconds", "b"),
        0.0
    );
    let sent = metric(&text, "keygate_upstream_key_requests_total", "a")
        + metric(&text, "keygate_upstream_key_requests_total", "b");
    assert_eq!(sent, 4.0);
    assert!(!text.contains("sk-"), "a secret in the metrics:\n{text}");
    assert_eq!(post(admin, "/metrics", None).status, 405);
    assert_eq!(get(admin, "/nope", None).status, 404);
}

#[test]
fn the_admin_api_needs_the_token() {
    let mock = start_mock(&[]);
    let (gateway, admin) = start(mock.addr, true);
    let missing = get(admin, "/admin/upstreams", None);
    assert_error(&missing, 401, "invalid_api_key");
    assert!(missing.header("www-authenticate").is_some());
    assert_error(
        &get(admin, "/admin/upstreams", Some("wrong")),
        401,
        "invalid_api_key",
    );
    let prefix = &TOKEN[..TOKEN.len() - 1];
    assert_error(
        &get(admin, "/admin/upstreams", Some(prefix)),
        401,
        "invalid_api_key",
    );
    let listed = get(admin, "/admin/upstreams", Some(TOKEN));
    assert_eq!(listed.status, 200);
    let body = listed.json();
    let keys = body["upstreams"][0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], "a");
    assert_eq!(keys[0]["state"], "ready");
    assert!(
        !listed.body_text().contains("sk-"),
        "{}",
        listed.body_text()
    );

    // Every refusal leaves a line (someone may be guessing the token), never the token.
    let put = format!(
        "PUT /admin/upstreams HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let wrong_method = roundtrip(admin, put.as_bytes());
    assert_eq!(wrong_method.status, 405);
    let big = format!(
        "POST /admin/keys HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 70000\r\n\r\n"
    );
    assert_eq!(roundtrip(admin, big.as_bytes()).status, 413);
    let refused = || {
        gateway
            .process
            .log_lines()
            .into_iter()
            .filter(|line| line.contains("admin request refused"))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused().len() < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let lines = refused();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("status=401")).count(), 3);
    assert!(lines[3].contains("status=405") && lines[3].contains("method=PUT"));
    assert!(lines[..4]
        .iter()
        .all(|l| l.contains("path=/admin/upstreams")));
    // Refused for its body, after the head was read: the line still names the request.
    assert!(
        lines[4].contains("status=413")
            && lines[4].contains("method=POST")
            && lines[4].contains("path=/admin/keys"),
        "{}",
        lines[4]
    );
    assert!(
        lines.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{lines:#?}"
    );
    let log = gateway.process.log_lines().join("\n");
    assert!(!log.contains(prefix), "the token in the log: {log}");
}

#[test]
fn without_a_token_configured_the_admin_api_is_off() {
    let mock = start_mock(&[]);
    let (_gateway, admin) = start(mock.addr, false);
    assert_error(
        &get(admin, "/admin/upstreams", Some(TOKEN)),
        403,
        "forbidden",
    );
    assert_eq!(get(admin, "/healthz", None).status, 200);
}

#[test]
fn provider_keys_are_disabled_and_enabled_at_runtime_on_every_shard() {
    let mock = start_mock(&["--key", "sk-a", "--key", "sk-b:status=401"]);
    let (gateway, admin) = start(mock.addr, true);
    // b is refused by the provider and disabled on the way; everything goes to a.
    assert!(keys_used(&gateway, 6).iter().all(|k| k == "sk-a"));
    let listed = get(admin, "/admin/upstreams", Some(TOKEN)).json();
    assert_eq!(listed["upstreams"][0]["keys"][1]["state"], "disabled");
    assert_eq!(listed["upstreams"][0]["keys"][1]["disabled_by"], 401);

    // The operator takes a out: nothing is left.
    let disabled = post(admin, "/admin/upstreams/pool/keys/a/disable", Some(TOKEN));
    assert_eq!(disabled.status, 200);
    assert_eq!(disabled.json()["disabled_by"], "operator");
    for _ in 0..4 {
        assert_error(&chat(gateway.addr()), 503, "upstream_unavailable");
    }
    let text = get(admin, "/metrics", None).body_text();
    assert_eq!(metric(&text, "keygate_upstream_key_state", "a"), 2.0);

    // And puts it back: every shard uses it at once.
    let enabled = post(admin, "/admin/upstreams/pool/keys/a/enable", Some(TOKEN));
    assert_eq!(enabled.json()["state"], "ready");
    assert!(keys_used(&gateway, 6).iter().all(|k| k == "sk-a"));

    assert_error(
        &post(admin, "/admin/upstreams/pool/keys/zz/enable", Some(TOKEN)),
        404,
        "not_found",
    );
    assert_error(
        &post(admin, "/admin/upstreams/none/keys/a/enable", Some(TOKEN)),
        404,
        "not_found",
    );
    assert_eq!(
        get(admin, "/admin/upstreams/pool/keys/a/enable", Some(TOKEN)).status,
        405
    );
}

#[test]
fn readiness_turns_503_while_draining() {
    let mock = start_mock(&["--latency-ms", "3000"]);
    let (mut gateway, admin) = start(mock.addr, true);
    let addr = gateway.addr();
    let slow = thread::spawn(move || chat(addr).status);
    thread::sleep(Duration::from_millis(500));
    gateway.process.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut drained = false;
    while Instant::now() < deadline && !drained {
        drained = get(admin, "/readyz", None).status == 503;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(drained, "/readyz never said 503 during the drain");
    // Metrics keep coming during the drain: the request still open shows.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen_open = false;
    while Instant::now() < deadline && !seen_open {
        let text = get(admin, "/metrics", None).body_text();
        seen_open = text
            .lines()
            .any(|line| line.starts_with("keygate_connections{") && line.ends_with(" 1"));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_open,
        "the open connection never showed in /metrics during the drain"
    );
    assert_eq!(slow.join().unwrap(), 200, "the in-flight request finished");
    assert!(gateway.process.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn request_metrics_move_as_traffic_flows() {
    let mock = start_mock(&[]);
    let config = format!(
        "{}[[upstream]]\nname = \"llm\"\nprovider = \"openai\"\nendpoints = [\"http://{}\"]\n\n{}\
         [[tenant]]\nname = \"acme\"\n\n\
         [[client_key]]\nid = \"app\"\ntenant = \"acme\"\nsecret = \"kg-app\"\n\
         rate = \"1/m\"\nburst = 3\n",
        gateway_section(2, "admin_listen = \"127.0.0.1:0\""),
        mock.addr,
        route_section("/v1/", None, "llm")
    );
    let gateway = Gateway::start(&config);
    let admin = gateway.admin_addr();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
    let chat = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-app\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| roundtrip(gateway.addr(), chat.as_bytes()).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let nowhere = "GET /elsewhere HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-app\r\n\r\n";
    assert_eq!(roundtrip(gateway.addr(), nowhere.as_bytes()).status, 404);

    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    // Shards hand their counts over once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get(admin, "/metrics", None).body_text();
        if value(
            &text,
            "keygate_requests_total{route=\"/v1/\",status_class=\"2xx\"}",
        ) == Some(3.0)
            && value(
                &text,
                "keygate_requests_total{route=\"none\",status_class=\"4xx\"}",
            ) == Some(1.0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        value(
            &text,
            "keygate_requests_total{route=\"/v1/\",status_class=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "keygate_quota_rejections_total{reason=\"rate\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "keygate_quota_rejections_total{reason=\"concurrency\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "keygate_request_duration_seconds_count{route=\"/v1/\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            "keygate_request_duration_seconds_bucket{route=\"/v1/\",le=\"+Inf\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            "keygate_tenant_tokens_total{tenant=\"acme\",kind=\"completion\"}"
        ),
        Some(12.0)
    );
    assert!(text.contains("# TYPE keygate_request_duration_seconds histogram"));
    assert!(!text.contains("kg-app\""), "a secret in the metrics");
    assert!(!text.contains("elsewhere"), "a raw path became a label");
}

#[test]
fn a_client_trickling_its_request_is_cut_off_after_five_seconds() {
    use std::io::{ErrorKind, Read, Write};
    let mock = start_mock(&[]);
    let (_gateway, admin) = start(mock.addr, true);
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
    let mut closed_after = None;
    for byte in request.iter().cycle().take(40) {
        if stream.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => panic!("answered a request that took longer than allowed"),
            // Nothing to read yet: keep trickling.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    let closed_after = closed_after.expect("the trickling connection was never closed");
    assert!(closed_after < Duration::from_secs(8), "{closed_after:?}");
}
