//! Header fields through the gateway: hop-by-hop fields dropped both ways, forwarding fields
//! added, names kept exactly as received, and `Host` set to the endpoint's authority.

mod common;

use std::io::Write;

use common::*;

#[test]
fn hop_by_hop_request_fields_never_reach_the_upstream() {
    let (echo, gateway) = echo_gateway("", "");

    let response = roundtrip(
        gateway.addr(),
        b"GET /hop HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nUpgrade: websocket\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
          X-Secret: 1\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n",
    );

    assert_eq!(response.status, 200);
    let seen = echo.only();
    for name in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-secret",
        "proxy-connection",
    ] {
        assert!(
            !seen.has(name),
            "{name} reached the upstream:\n{}",
            seen.head
        );
    }
    assert_eq!(seen.values("x-kept"), ["yes"]);
}

#[test]
fn hop_by_hop_response_fields_never_reach_the_client() {
    let upstream = ScriptedUpstream::start(|mut stream, _| {
        let mut carry = Vec::new();
        while read_seen(&mut stream, &mut carry).is_some() {
            let response =
                b"HTTP/1.1 200 OK\r\nConnection: x-upstream-secret\r\nKeep-Alive: timeout=5\r\n\
                X-Upstream-Secret: 1\r\nProxy-Authenticate: Basic\r\nX-Upstream-Kept: 2\r\n\
                Content-Length: 2\r\n\r\nok";
            if stream.write_all(response).is_err() {
                return;
            }
        }
    });
    let gateway = Gateway::start(&basic_config(upstream.addr, 1, ""));

    let response = roundtrip(gateway.addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");

    assert_eq!(
        (response.status, response.body_text()),
        (200, "ok".to_owned())
    );
    for name in [
        "connection",
        "keep-alive",
        "x-upstream-secret",
        "proxy-authenticate",
    ] {
        assert!(
            response.header(name).is_none(),
            "{name} reached the client:\n{}",
            response.raw_head
        );
    }
    assert_eq!(response.header("x-upstream-kept"), Some("2"));
}

#[test]
fn forwarding_fields_are_added_and_appended() {
    let (echo, gateway) = echo_gateway("", "");

    let plain = roundtrip(
        gateway.addr(),
        b"GET /plain HTTP/1.1\r\nHost: client.example\r\n\r\n",
    );
    let proxied = roundtrip(
        gateway.addr(),
        b"GET /proxied HTTP/1.1\r\nHost: client.example:8443\r\nX-Forwarded-For: 203.0.113.7\r\n\
          Via: 1.1 edge\r\nX-Forwarded-Host: spoofed.example\r\n\r\n",
    );

    let seen = echo.seen();
    assert_eq!(seen[0].values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen[0].values("x-forwarded-host"), ["client.example"]);
    assert_eq!(seen[0].values("via"), ["1.1 keygate"]);
    assert_eq!(
        seen[1].values("x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(seen[1].values("x-forwarded-host"), ["client.example:8443"]);
    assert_eq!(seen[1].values("via"), ["1.1 edge, 1.1 keygate"]);
    for response in [plain, proxied] {
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("via"),
            Some("1.1 keygate"),
            "{}",
            response.raw_head
        );
    }
}

#[test]
fn field_names_keep_the_case_they_were_sent_in() {
    let (echo, gateway) = echo_gateway("", "");

    let response = roundtrip(
        gateway.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nX-MiXeD-CaSe: 1\r\nx-lower: 2\r\n\r\n",
    );

    assert_eq!(response.status, 200);
    let seen = echo.only();
    assert!(
        seen.head.contains("\r\nX-MiXeD-CaSe: 1\r\n"),
        "{}",
        seen.head
    );
    assert!(seen.head.contains("\r\nx-lower: 2\r\n"), "{}", seen.head);
}

#[test]
fn upstream_host_is_the_endpoint_authority() {
    let (echo, gateway) = echo_gateway("", "");

    let response = roundtrip(
        gateway.addr(),
        b"GET / HTTP/1.1\r\nHost: client.example\r\n\r\n",
    );

    assert_eq!(response.status, 200);
    let seen = echo.only();
    assert_eq!(
        seen.values("host"),
        [echo.addr().to_string()],
        "{}",
        seen.head
    );
}
