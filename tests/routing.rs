//! Routing: the longest matching path prefix wins, a route naming the request's host beats
//! one naming none, and a request no route matches gets 404.

mod common;

use common::*;

fn get(gateway: &Gateway, host: &str, path: &str) -> Response {
    roundtrip(
        gateway.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
}

#[test]
fn the_longest_matching_prefix_wins() {
    let (general, chat) = (Echo::start("general"), Echo::start("chat"));
    // The shorter prefix comes first, so config order cannot be what decides.
    let config = gateway_section(1, "")
        + &upstream_section("general", &[general.addr()], "")
        + &upstream_section("chat", &[chat.addr()], "")
        + &route_section("/v1/", None, "general")
        + &route_section("/v1/chat/", None, "chat");
    let gateway = Gateway::start(&config);

    assert_eq!(
        get(&gateway, "a", "/v1/chat/completions").body_text(),
        "chat /v1/chat/completions"
    );
    assert_eq!(
        get(&gateway, "a", "/v1/models").body_text(),
        "general /v1/models"
    );
    assert_eq!(
        get(&gateway, "a", "/v1/chat").body_text(),
        "general /v1/chat"
    );
}

#[test]
fn a_route_for_the_request_host_beats_a_host_less_one() {
    let (any, api) = (Echo::start("any"), Echo::start("api"));
    let config = gateway_section(1, "")
        + &upstream_section("any", &[any.addr()], "")
        + &upstream_section("api", &[api.addr()], "")
        + &route_section("/v1/", None, "any")
        + &route_section("/v1/", Some("api.example"), "api");
    let gateway = Gateway::start(&config);

    assert_eq!(
        get(&gateway, "api.example", "/v1/x").body_text(),
        "api /v1/x"
    );
    assert_eq!(
        get(&gateway, "API.Example:8080", "/v1/x").body_text(),
        "api /v1/x"
    );
    assert_eq!(
        get(&gateway, "other.example", "/v1/x").body_text(),
        "any /v1/x"
    );
}

#[test]
fn no_matching_route_gets_404() {
    let echo = Echo::start("echo");
    let config = gateway_section(1, "")
        + &upstream_section("echo", &[echo.addr()], "")
        + &route_section("/v1/", None, "echo")
        + &route_section("/v1/", Some("api.example"), "echo");
    let gateway = Gateway::start(&config);
    let mut client = Client::connect(gateway.addr());

    client.send(b"GET /v2/models HTTP/1.1\r\nHost: api.example\r\n\r\n");
    assert_error(&client.read_response(false), 404, "not_found");
    client.send(b"GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_error(&client.read_response(false), 404, "not_found");
    assert_eq!(echo.upstream.settled_connections(), 0);

    // A 404 leaves the connection usable.
    client.send(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).body_text(), "echo /v1/models");
}
