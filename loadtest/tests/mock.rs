//! Black-box tests of `loadtest mock`: the real binary on 127.0.0.1 port 0, spoken to in raw
//! bytes over std `TcpStream` (see `support`).

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{exchange, post, Mock, Reader, Response};

#[test]
fn non_streamed_completion() {
    let mock = Mock::start(&[]);
    let body = r#"{"model":"gpt-4o-mini","messages":[
        {"role":"system","content":"You are terse."},
        {"role":"user","content":"Say hello to the test."}]}"#;
    let response = exchange(
        &mock,
        &post(
            "/v1/chat/completions",
            "Authorization: Bearer sk-up-1\r\n",
            body,
        ),
    );

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("x-mock-saw-authorization"),
        Some("Bearer sk-up-1")
    );
    assert!(response.header("x-mock-request-id").is_some());
    let value = response.json();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["model"], "gpt-4o-mini");
    assert!(value["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    let message = &value["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"].as_str().unwrap().split(' ').count(), 16);
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    // 14 + 22 characters of message text, about 4 a token.
    assert_eq!(value["usage"]["prompt_tokens"], 9);
    assert_eq!(value["usage"]["completion_tokens"], 16);
    assert_eq!(value["usage"]["total_tokens"], 25);
}

#[test]
fn max_tokens_and_token_knob_set_the_completion_size() {
    let mock = Mock::start(&["--tokens", "8"]);
    let table = [
        ("", r#""max_tokens":3"#, 3, "length"),
        ("", r#""max_completion_tokens":20"#, 8, "stop"),
        ("x-mock-tokens: 30\r\n", r#""max_tokens":100"#, 30, "stop"),
    ];
    for (fields, limit, tokens, finish) in table {
        let body = format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],{limit}}}"#);
        let value = exchange(&mock, &post("/v1/chat/completions", fields, &body)).json();
        assert_eq!(
            value["usage"]["completion_tokens"], tokens,
            "{fields}{limit}"
        );
        assert_eq!(
            value["choices"][0]["finish_reason"], finish,
            "{fields}{limit}"
        );
    }
}

#[test]
fn streamed_completion() {
    let mock = Mock::start(&[]);
    let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":"Count to three."}]}"#;
    let fields = "x-mock-tokens: 3\r\nx-mock-token-delay-ms: 60\r\n";
    let mut stream = mock.connect();
    stream
        .write_all(post("/v1/chat/completions", fields, body).as_bytes())
        .unwrap();

    let started = Instant::now();
    let mut first_chunk_at = None;
    let response = Reader::new(stream).response_with(|_| {
        first_chunk_at.get_or_insert_with(|| started.elapsed());
    });
    let finished = started.elapsed();

    assert_eq!(response.status, 200);
    assert!(response.chunked, "a streamed reply is chunked");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let text = response.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("an SSE data line"))
        .collect();
    // Role, three tokens, finish, usage, [DONE].
    assert_eq!(events.len(), 7, "{text}");
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..4]
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content.split(' ').count(), 3);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], serde_json::json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 3);

    // Six waits of 60 ms separate seven events: the first arrived well before the end.
    let first = first_chunk_at.expect("at least one chunk");
    assert!(
        finished - first >= Duration::from_millis(300),
        "events did not arrive over time: first at {first:?}, end at {finished:?}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mock = Mock::start(&[]);
    let slow = post(
        "/v1/chat/completions",
        "x-mock-latency-ms: 100\r\nx-mock-tokens: 2\r\n",
        r#"{"messages":[]}"#,
    );
    let fast = "GET /healthz HTTP/1.1\r\nHost: mock\r\n\r\n";
    let mut stream = mock.connect();
    stream
        .write_all(format!("{slow}{fast}").as_bytes())
        .unwrap();

    let mut reader = Reader::new(stream);
    let first = reader.response();
    let second = reader.response();
    assert_eq!(first.json()["usage"]["completion_tokens"], 2);
    assert_eq!(second.text(), "ok");
    let id = |response: &Response| -> u64 {
        response
            .header("x-mock-request-id")
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(id(&first) < id(&second));

    // The connection stays open for more.
    reader.stream.write_all(fast.as_bytes()).unwrap();
    assert_eq!(reader.response().status, 200);
}

#[test]
fn echo_reports_fields_as_sent() {
    let mock = Mock::start(&[]);
    let request = "POST /echo?q=1 HTTP/1.1\r\nHost: mock\r\nX-Mixed-CASE: a b\r\n\
                   authorization: Bearer kg\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\nbody\r\n0\r\n\r\n";
    let response = exchange(&mock, request);

    assert_eq!(response.status, 200);
    assert!(response.header("content-length").is_some());
    let value = response.json();
    assert_eq!(value["method"], "POST");
    assert_eq!(value["path"], "/echo?q=1");
    assert_eq!(
        value["headers"],
        serde_json::json!([
            ["Host", "mock"],
            ["X-Mixed-CASE", "a b"],
            ["authorization", "Bearer kg"],
            ["Transfer-Encoding", "chunked"]
        ])
    );
    assert_eq!(value["body_len"], 4);
    assert_eq!(value["body"], "body");
    assert_eq!(
        response.header("x-mock-saw-authorization"),
        Some("Bearer kg")
    );
}

#[test]
fn status_knob_gives_openai_errors() {
    let mock = Mock::start(&[]);
    let mut stream = mock.connect();
    let body = r#"{"messages":[]}"#;
    let requests = [
        post("/v1/chat/completions", "x-mock-status: 429\r\n", body),
        post("/v1/chat/completions", "x-mock-status: 500\r\n", body),
    ];
    stream.write_all(requests.concat().as_bytes()).unwrap();
    let mut reader = Reader::new(stream);

    let limited = reader.response();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let failed = reader.response();
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("retry-after"), None);
    assert_eq!(failed.json()["error"]["type"], "server_error");
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let mock = Mock::start(&[]);
    for request in [
        "BAD REQUEST LINE\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut stream = mock.connect();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = Reader::new(stream);
        let response = reader.response();
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.json()["error"]["type"], "invalid_request_error");
        assert!(reader.at_eof(), "{request:?}: the connection closes");
    }
}

#[test]
fn bad_json_and_unknown_paths() {
    let mock = Mock::start(&[]);
    let bad = exchange(&mock, &post("/v1/chat/completions", "", "{not json"));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");

    let missing = exchange(&mock, "GET /v1/nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");

    let models = exchange(&mock, "GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(models.json()["object"], "list");
}

#[test]
fn framing_knobs() {
    let mock = Mock::start(&[]);

    let chunked = exchange(
        &mock,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nx-mock-chunked: 1\r\n\r\n",
    );
    assert!(chunked.chunked);
    assert_eq!(chunked.text(), "ok");

    let mut stream = mock.connect();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nx-mock-no-length: 1\r\n\r\n")
        .unwrap();
    let until_close = Reader::new(stream).response();
    assert_eq!(until_close.header("content-length"), None);
    assert_eq!(until_close.header("connection"), Some("close"));
    assert_eq!(until_close.text(), "ok");

    let mut stream = mock.connect();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nx-mock-close: 1\r\n\r\n")
        .unwrap();
    let mut reader = Reader::new(stream);
    let closing = reader.response();
    assert_eq!(closing.header("connection"), Some("close"));
    assert!(reader.at_eof());
}

#[test]
fn several_workers_share_a_picked_port() {
    let mock = Mock::start(&["--workers", "2"]);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let response = exchange(&mock, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(response.status, 200);
        ids.push(response.header("x-mock-request-id").unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "request ids are unique across workers");
}
