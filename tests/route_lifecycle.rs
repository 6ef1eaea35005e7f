//! Route lifecycle with the real binary: a deprecated route's `Deprecation`, `Sunset` and
//! `Link` fields on every answer (passed on, streamed, or the gateway's own error), a retired
//! route's 410 after authentication with no upstream contacted, its access log line and
//! metrics, and `keygate check` on lifecycle mistakes.

mod common;

use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `Deprecation` of 2026-01-01T00:00:00Z (RFC 9745 section 2.1).
const DEPRECATION: &str = "@1767225600";
/// `Sunset` of 2026-07-01T00:00:00Z (RFC 8594).
const SUNSET: &str = "Wed, 01 Jul 2026 00:00:00 GMT";
/// The `Link` a route with `deprecation_link = "https://docs.example/v1"` sends.
const LINK: &str = "<https://docs.example/v1>; rel=\"deprecation\"";

/// Lifecycle keys of a deprecated route with a date, a sunset and a link.
const DEPRECATED: &str = "state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\n\
                          sunset = 2026-07-01T00:00:00Z\n\
                          deprecation_link = \"https://docs.example/v1\"\n";

/// A `[[route]]` table with lifecycle keys.
fn route(prefix: &str, upstream: &str, lifecycle: &str) -> String {
    format!("[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{lifecycle}\n")
}

/// Every value of the field `name` in `response`.
fn values<'a>(response: &'a Response, name: &str) -> Vec<&'a str> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Asserts `response` carries no lifecycle field at all.
fn assert_unmarked(response: &Response) {
    for name in ["deprecation", "sunset", "link"] {
        assert!(values(response, name).is_empty(), "{}", response.raw_head);
    }
}

/// An upstream that answers every request with a chunked event stream of two events, and
/// lifecycle fields of its own.
fn event_stream_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        while read_seen(&mut stream, &mut carry).is_some() {
            let events = ["data: one\n\n", "data: two\n\n"];
            let mut response = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nDeprecation: @1\r\n\
                 Sunset: Thu, 01 Jan 1970 00:00:01 GMT\r\n\
                 Link: <https://upstream.example/next>; rel=\"next\"\r\n\
                 Transfer-Encoding: chunked\r\n\r\n",
            );
            for event in events {
                response.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
            }
            response.push_str("0\r\n\r\n");
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_deprecated_route_marks_every_answer_on_it() {
    let (events, echo) = (event_stream_upstream(), Echo::start("echo"));
    let config = gateway_section(1, "")
        + &upstream_section("events", &[events.addr], "")
        + &upstream_section("echo", &[echo.addr()], "")
        + &upstream_section("dead", &[dead_addr()], "")
        + &route("/v1/", "events", DEPRECATED)
        + &route(
            "/v1/broken/",
            "dead",
            "state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\n",
        )
        + &route("/v2/", "echo", "state = \"published\"\n");
    let gateway = Gateway::start(&config);
    let mut client = Client::connect(gateway.addr());

    // A streamed response: the route's fields replace the upstream's singletons, and the
    // upstream's own Link stays beside the route's.
    client.send(b"GET /v1/chat HTTP/1.1\r\nHost: gw\r\n\r\n");
    let streamed = client.read_response(false);
    assert_eq!(streamed.status, 200, "{}", streamed.raw_head);
    assert_eq!(values(&streamed, "deprecation"), [DEPRECATION]);
    assert_eq!(values(&streamed, "sunset"), [SUNSET]);
    assert_eq!(
        values(&streamed, "link"),
        ["<https://upstream.example/next>; rel=\"next\"", LINK]
    );
    assert_eq!(
        streamed.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        streamed.raw_head
    );
    assert_eq!(streamed.body_text(), "data: one\n\ndata: two\n\n");

    // The gateway's own error after routing carries the fields the route has, and no others.
    client.send(b"GET /v1/broken/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    let failed = client.read_response(false);
    assert_error(&failed, 502, "upstream_error");
    assert_eq!(values(&failed, "deprecation"), [DEPRECATION]);
    assert!(values(&failed, "sunset").is_empty() && values(&failed, "link").is_empty());

    // A published route, and a request no route matches, carry none.
    let published = roundtrip(gateway.addr(), b"GET /v2/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(published.body_text(), "echo /v2/x");
    assert_unmarked(&published);
    let unrouted = roundtrip(gateway.addr(), b"GET /v3/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_error(&unrouted, 404, "not_found");
    assert_unmarked(&unrouted);

    // A response passed on from the upstream for an HTTP/1.0 client (the chunks decoded,
    // the connection closed to end the body) is marked all the same.
    let old_client = roundtrip(gateway.addr(), b"GET /v1/chat HTTP/1.0\r\n\r\n");
    assert_eq!(old_client.status, 200, "{}", old_client.raw_head);
    assert_eq!(values(&old_client, "deprecation"), [DEPRECATION]);
    assert_eq!(values(&old_client, "sunset"), [SUNSET]);
    assert_eq!(old_client.body_text(), "data: one\n\ndata: two\n\n");
}

/// `GET path` presenting client key `secret`.
fn get(path: &str, secret: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {secret}\r\n\r\n")
        .into_bytes()
}

#[test]
fn a_retired_route_answers_410_after_authentication_and_contacts_no_upstream() {
    let echo = Echo::start("echo");
    let retired = "state = \"retired\"\nsunset = 2026-06-01T00:00:00Z\n\
                   deprecation_link = \"https://docs.example/migrate\"\n";
    let config = gateway_section(
        2,
        "access_log = \"access.log\"\nadmin_listen = \"127.0.0.1:0\"",
    ) + &upstream_section("echo", &[echo.addr()], "")
        + &route("/v1/", "echo", "")
        + &route("/v1/old/", "echo", retired)
        + &route("/v1/gone/", "echo", "state = \"retired\"\n")
        + &route("/v1/deprecated/", "echo", DEPRECATED)
        + "[[client_key]]\nid = \"app\"\nsecret = \"kg-app\"\n\n\
           [[client_key]]\nid = \"narrow\"\nsecret = \"kg-narrow\"\nroutes = [\"/v1/chat/\"]\n";
    let gateway = Gateway::start(&config);
    let admin = gateway.admin_addr();
    let mut client = Client::connect(gateway.addr());

    // An unknown key is refused as on any route: authentication comes first.
    client.send(&get("/v1/old/models", "kg-unknown"));
    let unknown = client.read_response(false);
    assert_error(&unknown, 401, "invalid_api_key");
    assert_unmarked(&unknown);

    client.send(&get("/v1/old/models", "kg-app"));
    let gone = client.read_response(false);
    assert_error(&gone, 410, "route_retired");
    let error = &gone.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(
        error["message"],
        "the route /v1/old/ is retired (sunset Mon, 01 Jun 2026 00:00:00 GMT); \
         see https://docs.example/migrate"
    );
    assert_eq!(values(&gone, "sunset"), ["Mon, 01 Jun 2026 00:00:00 GMT"]);
    assert_eq!(
        values(&gone, "link"),
        ["<https://docs.example/migrate>; rel=\"deprecation\""]
    );
    assert!(values(&gone, "deprecation").is_empty());

    // The connection stays open, and the routes around it still serve.
    client.send(&get("/v1/models", "kg-app"));
    assert_eq!(client.read_response(false).body_text(), "echo /v1/models");

    // A retired route is gone for every key, even one that may not use it.
    let bare = roundtrip(gateway.addr(), &get("/v1/gone/x", "kg-narrow"));
    assert_error(&bare, 410, "route_retired");
    assert_eq!(
        bare.json()["error"]["message"],
        "the route /v1/gone/ is retired"
    );
    assert_unmarked(&bare);

    // A refusal on a deprecated route carries the route's fields.
    let forbidden = roundtrip(gateway.addr(), &get("/v1/deprecated/x", "kg-narrow"));
    assert_error(&forbidden, 403, "forbidden");
    assert_eq!(values(&forbidden, "deprecation"), [DEPRECATION]);
    assert_eq!(values(&forbidden, "link"), [LINK]);

    let upstream_paths: Vec<String> = echo.seen().iter().map(|s| s.target().into()).collect();
    assert_eq!(upstream_paths, ["/v1/models"]);

    // The 410s count under their routes; shards hand their counts over once a second.
    let series =
        |route: &str| format!("keygate_requests_total{{route=\"{route}\",status_class=\"4xx\"}} ");
    let count = |text: &str, route: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(&series(route))?.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n";
        let text = roundtrip(admin, request.as_bytes()).body_text();
        if count(&text, "/v1/old/") == Some(1) && count(&text, "/v1/gone/") == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // The access log names the route and the error; the 401 has no route.
    let mut gateway = gateway;
    gateway.process.signal("TERM");
    assert!(gateway.process.wait_exit(Duration::from_secs(20)).is_some());
    let text = std::fs::read_to_string(gateway.dir.0.join("access.log")).expect("access log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let line = |path: &str, key: &str| -> &Value {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["path"] == path && l["key_id"] == key)
            .collect();
        assert_eq!(found.len(), 1, "{path} {key}: {text}");
        found[0]
    };
    let retired_line = line("/v1/old/models", "app");
    assert_eq!(retired_line["status"], 410);
    assert_eq!(retired_line["error_code"], "route_retired");
    assert_eq!(retired_line["route"], "/v1/old/");
    assert_eq!(retired_line["upstream"], Value::Null);
    assert_eq!(retired_line["upstream_latency_us"], Value::Null);
    assert_eq!(line("/v1/gone/x", "narrow")["error_code"], "route_retired");
    let unknown_line = lines
        .iter()
        .find(|l| l["status"] == 401)
        .expect("the 401 is logged");
    assert_eq!(unknown_line["route"], Value::Null);
    assert_eq!(unknown_line["error_code"], "invalid_api_key");
}

#[test]
fn without_client_keys_a_retired_route_answers_410_at_once() {
    let echo = Echo::start("echo");
    let config = gateway_section(1, "")
        + &upstream_section("echo", &[echo.addr()], "")
        + &route("/", "echo", "")
        + &route("/old/", "echo", "state = \"retired\"\n");
    let gateway = Gateway::start(&config);

    let gone = roundtrip(gateway.addr(), b"GET /old/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_error(&gone, 410, "route_retired");
    assert_eq!(echo.upstream.settled_connections(), 0);
    let served = roundtrip(gateway.addr(), b"GET /older HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(served.body_text(), "echo /older");
}

#[test]
fn check_reports_lifecycle_mistakes_with_their_positions() {
    let dir = TempDir::new("lifecycle-check");
    let path = dir.0.join("keygate.toml");
    let config = gateway_section(1, "")
        + &upstream_section("echo", &["127.0.0.1:9".parse().expect("address")], "")
        + "[[route]]\npath_prefix = \"/a/\"\nupstream = \"echo\"\n\
           sunset = 2026-06-01T00:00:00Z\n\n\
           [[route]]\npath_prefix = \"/b/\"\nupstream = \"echo\"\nstate = \"deprecated\"\n\n\
           [[route]]\npath_prefix = \"/c/\"\nupstream = \"echo\"\nstate = \"deprecated\"\n\
           deprecation = 2026-06-01T00:00:00Z\nsunset = 2026-05-01T00:00:00Z\n";
    std::fs::write(&path, &config).expect("write config");
    let line_of = |needle: &str, nth: usize| {
        config
            .lines()
            .enumerate()
            .filter(|(_, line)| line.starts_with(needle))
            .nth(nth)
            .map(|(index, _)| index + 1)
            .expect("the line")
    };

    let output = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run keygate check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    let file = path.display();
    let want = [
        format!(
            "{file}:{}:10: sunset is only for a deprecated or retired route",
            line_of("sunset", 0)
        ),
        format!(
            "{file}:{}:9: a deprecated route needs deprecation = DATE-TIME",
            line_of("state", 0)
        ),
        format!(
            "{file}:{}:10: sunset 2026-05-01T00:00:00Z is before deprecation \
             2026-06-01T00:00:00Z",
            line_of("sunset", 1)
        ),
    ];
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), want.len(), "{stdout}");
    for (got, want) in got.iter().zip(&want) {
        assert!(got.starts_with(want.as_str()), "got {got}\nwant {want}");
    }
}
