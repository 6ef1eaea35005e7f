//! Requests whose framing or target is ambiguous or malformed: each is answered by the
//! gateway itself with the contract's JSON error and nothing of it reaches the upstream. After
//! a framing error the connection is closed, since where the next request starts is unknown.

mod common;

use common::*;

/// Sends `request` and checks the gateway refused it with `status` and `code`, closed the
/// connection, and never opened an upstream connection.
fn assert_refused(request: &[u8], status: u16, code: &str) {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(request);
    let response = client.read_response(false);

    assert_error(&response, status, code);
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{}",
        response.raw_head
    );
    assert!(client.is_closed(), "the connection stayed open");
    assert_eq!(
        echo.upstream.settled_connections(),
        0,
        "the upstream was contacted"
    );
}

#[test]
fn content_length_with_transfer_encoding() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn two_differing_content_lengths() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        "bad_request",
    );
}

#[test]
fn content_length_with_a_sign() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        400,
        "bad_request",
    );
}

#[test]
fn content_length_with_a_letter() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\nhello",
        400,
        "bad_request",
    );
}

#[test]
fn content_length_blank() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  \r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn bare_lf_in_a_chunk_size_line() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn obs_fold_header() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn space_before_the_colon() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Spaced : 1\r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn transfer_coding_other_than_chunked() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "not_implemented",
    );
}

#[test]
fn http10_with_transfer_encoding() {
    assert_refused(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    );
}

#[test]
fn http11_without_host() {
    assert_refused(b"GET / HTTP/1.1\r\nX-Other: 1\r\n\r\n", 400, "bad_request");
}

#[test]
fn two_host_headers() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "bad_request",
    );
}

/// A later chunk with broken framing: the head was already forwarded, but the upstream never
/// receives a complete request, and the client gets the 400.
#[test]
fn bare_lf_in_a_later_chunk_never_completes_a_request_upstream() {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    client.send(b"5\nworld\r\n0\r\n\r\n");
    let response = client.read_response(false);

    assert_error(&response, 400, "bad_request");
    assert!(client.is_closed(), "the connection stayed open");
    assert!(
        echo.seen().is_empty(),
        "a request completed upstream: {:#?}",
        echo.seen()
    );
}

/// A dot-segment target is refused before routing. Its framing is sound, so the connection
/// may carry the next request (unlike the framing errors above).
fn assert_target_refused(target: &str) {
    let (echo, gateway) = echo_gateway("", "");
    let mut client = Client::connect(gateway.addr());

    client.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let response = client.read_response(false);
    assert_error(&response, 400, "bad_request");
    assert_eq!(
        echo.upstream.settled_connections(),
        0,
        "the upstream was contacted"
    );

    client.send(b"GET /v1/next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.read_response(false).body_text(), "echo /v1/next");
    let targets: Vec<String> = echo.seen().iter().map(|s| s.target().to_owned()).collect();
    assert_eq!(targets, ["/v1/next"]);
}

#[test]
fn dot_segment_path() {
    assert_target_refused("/v1/../admin");
}

#[test]
fn percent_encoded_dot_segment_path() {
    assert_target_refused("/v1/%2e%2E/admin");
}
