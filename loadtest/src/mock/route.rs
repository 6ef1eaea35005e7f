//! Endpoint dispatch: which reply a request gets, its body written to a reusable buffer.
//!
//! Sans-IO: the connection driver has read the head and the whole body before this runs, and
//! frames, delays and writes what it returns.
//!
//! | method | path | reply |
//! | --- | --- | --- |
//! | POST | `/v1/chat/completions` | a chat completion, streamed if the body asks |
//! | GET | `/v1/models` | a small model list |
//! | GET | `/`, `/healthz` | `ok` |
//! | GET, POST | `/echo` | the request as received, as JSON |
//! | GET | `/mock/stats` | the keys' counters and request log |
//! | POST | `/mock/reset` | zeroes the counters, empties the log, fills the buckets |
//! | any | anything else | 404 (405 for a known path) in the style's error shape |
//!
//! An endpoint that costs something asks its [`Gate`] once it knows the cost: a chat
//! completion its prompt and completion tokens, the model list nothing but the request.

use std::time::Instant;

use keygate::http::{Method, RequestHead};

use super::json;
use super::keys::{Gate, Keys, Over, Refusal};
use super::knobs::Knobs;
use super::openai::{self, ChatRequest, ChatStream, Completion};
use super::ratelimit;
use super::style::{Cause, Style};

/// The content type of JSON replies.
pub const JSON: &str = "application/json";

/// The content type of streamed replies (server-sent events).
pub const EVENT_STREAM: &str = "text/event-stream";

/// One request, read in full.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// The request body, decoded from its framing.
    pub body: &'a [u8],
    /// The request's knobs.
    pub knobs: &'a Knobs<'a>,
    /// The request's number, unique in this process.
    pub id: u64,
    /// Unix time in seconds.
    pub created: u64,
    /// The provider whose errors the reply imitates.
    pub style: Style,
    /// The keys, for the `/mock/` endpoints.
    pub keys: &'a Keys,
}

/// What the driver is to send.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole body, written to the body buffer.
    Whole {
        /// The status code.
        status: u16,
        /// The `Content-Type` value.
        content_type: &'static str,
    },
    /// A streamed chat completion, status 200, `text/event-stream`; its model is in the model
    /// buffer.
    Stream(ChatStream),
}

impl Reply {
    /// The status the reply is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Whole { status, .. } => *status,
            Reply::Stream(_) => 200,
        }
    }
}

/// Answers `exchange`, writing a whole body to `body` or the streamed model name to `model`.
/// Both buffers are cleared first. Endpoints with a cost go ahead only if `gate` admits them.
pub fn route(
    exchange: &Exchange<'_>,
    body: &mut Vec<u8>,
    model: &mut String,
    gate: &mut impl Gate,
) -> Reply {
    body.clear();
    model.clear();
    let head = exchange.head;
    let style = exchange.style;
    if let Some(status) = exchange.knobs.status {
        return forced(exchange, body, status);
    }

    let get = matches!(head.method, Method::Get | Method::Head);
    match head.path_only() {
        b"/v1/chat/completions" if head.method == Method::Post => chat(exchange, body, model, gate),
        b"/v1/models" if get => {
            if let Err(refusal) = gate.admit(0) {
                return refused(body, style, &refusal);
            }
            body.extend_from_slice(openai::MODEL_LIST);
            whole(200, JSON)
        }
        b"/" | b"/healthz" if get => {
            body.extend_from_slice(b"ok");
            whole(200, "text/plain")
        }
        b"/echo" if get || head.method == Method::Post => {
            echo(exchange, body);
            whole(200, JSON)
        }
        b"/mock/stats" if get => {
            exchange.keys.write_stats(body);
            whole(200, JSON)
        }
        b"/mock/reset" if head.method == Method::Post => {
            exchange.keys.reset(Instant::now());
            body.extend_from_slice(b"{}");
            whole(200, JSON)
        }
        b"/v1/chat/completions"
        | b"/v1/models"
        | b"/"
        | b"/healthz"
        | b"/echo"
        | b"/mock/stats"
        | b"/mock/reset" => error(body, style, 405, "method not allowed for this path"),
        _ => {
            let mut message = Vec::with_capacity(64);
            message.extend_from_slice(b"Invalid URL (");
            message.extend_from_slice(head.method_bytes());
            message.push(b' ');
            message.extend_from_slice(head.target());
            message.push(b')');
            error(body, style, 404, &String::from_utf8_lossy(&message))
        }
    }
}

/// Whether `path` is one of the mock's own endpoints, which answer without a provider key.
pub fn is_mock_own(path: &[u8]) -> bool {
    matches!(path, b"/" | b"/healthz" | b"/echo") || path.starts_with(b"/mock/")
}

/// The error `x-mock-status` asks for. Gemini's 429 says when to retry in its body: the
/// `x-mock-retry-after` seconds when they are a number, else 1.
fn forced(exchange: &Exchange<'_>, body: &mut Vec<u8>, status: u16) -> Reply {
    let retry_seconds = exchange
        .knobs
        .retry_after
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
        .unwrap_or(1);
    let cause = match status {
        429 => Cause::Requests { retry_seconds },
        _ => Cause::Plain,
    };
    body.clear();
    let message = "mock error asked by x-mock-status";
    exchange.style.write_error(body, status, message, cause);
    whole(status, JSON)
}

fn chat(
    exchange: &Exchange<'_>,
    body: &mut Vec<u8>,
    model: &mut String,
    gate: &mut impl Gate,
) -> Reply {
    let request = match ChatRequest::parse(exchange.body) {
        Ok(request) => request,
        Err(err) => {
            let message = format!("We could not parse the JSON body of your request: {err}");
            return error(body, exchange.style, 400, &message);
        }
    };
    let (completion_tokens, finish) = request.completion_tokens(exchange.knobs.tokens);
    let completion = Completion {
        id: exchange.id,
        created: exchange.created,
        model: &request.model,
        prompt_tokens: request.prompt_tokens(),
        completion_tokens,
        finish,
    };
    let cost = u64::from(completion.prompt_tokens) + u64::from(completion.completion_tokens);
    if let Err(refusal) = gate.admit(cost) {
        return refused(body, exchange.style, &refusal);
    }
    if request.stream {
        model.push_str(&request.model);
        return Reply::Stream(ChatStream::new(&completion, request.include_usage));
    }
    completion.write(body);
    whole(200, JSON)
}

/// The request as received: method, target, fields with their names' case kept, and body.
fn echo(exchange: &Exchange<'_>, out: &mut Vec<u8>) {
    let head = exchange.head;
    out.extend_from_slice(br#"{"method":"#);
    json::lossy_string(out, head.method_bytes());
    out.extend_from_slice(br#","path":"#);
    json::lossy_string(out, head.target());
    out.extend_from_slice(br#","version":""#);
    out.extend_from_slice(match head.version {
        keygate::http::Version::Http10 => b"HTTP/1.0",
        keygate::http::Version::Http11 => b"HTTP/1.1",
    });
    out.extend_from_slice(br#"","headers":["#);
    for (index, field) in head.fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json::lossy_string(out, head.name(field));
        out.push(b',');
        json::lossy_string(out, head.value(field));
        out.push(b']');
    }
    out.extend_from_slice(br#"],"body_len":"#);
    json::number(out, exchange.body.len() as u64);
    out.extend_from_slice(br#","body":"#);
    json::lossy_string(out, exchange.body);
    out.push(b'}');
}

/// Writes an error body for `status` in `style`.
pub fn error(body: &mut Vec<u8>, style: Style, status: u16, message: &str) -> Reply {
    body.clear();
    style.write_error(body, status, message, Cause::Plain);
    whole(status, JSON)
}

/// Writes the 429 of a request over its key's limits.
fn refused(body: &mut Vec<u8>, style: Style, refusal: &Refusal) -> Reply {
    let what = match refusal.over {
        Over::Requests => "requests",
        Over::Tokens => "tokens",
    };
    let (limit, requested) = (refusal.limit, refusal.requested);
    let message = if refusal.too_large {
        format!("Request too large for {what} per minute: limit {limit}, requested {requested}.")
    } else {
        let mut text = format!(
            "Rate limit reached for {what} per minute: limit {limit}, requested {requested}. \
             Please try again in "
        );
        ratelimit::go_duration(&mut text, ratelimit::round_up_to_millis(refusal.retry));
        text.push('.');
        text
    };
    let retry_seconds = ratelimit::whole_seconds(refusal.retry);
    let cause = match refusal.over {
        Over::Requests => Cause::Requests { retry_seconds },
        Over::Tokens => Cause::Tokens { retry_seconds },
    };
    body.clear();
    style.write_error(body, 429, &message, cause);
    whole(429, JSON)
}

fn whole(status: u16, content_type: &'static str) -> Reply {
    Reply::Whole {
        status,
        content_type,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use serde_json::Value;

    use super::*;
    use crate::mock::keys::Open;
    use crate::mock::knobs::Defaults;

    const DEFAULTS: Defaults = Defaults {
        latency: Duration::ZERO,
        token_delay: Duration::ZERO,
        tokens: 16,
    };

    /// Routes a request given as its head text and body.
    fn answer(head: &str, request_body: &[u8]) -> (Reply, Vec<u8>, String) {
        answer_with(head, request_body, Style::OpenAi, &mut Open)
    }

    /// Routes a request in `style` through `gate`.
    fn answer_with(
        head: &str,
        request_body: &[u8],
        style: Style,
        gate: &mut impl Gate,
    ) -> (Reply, Vec<u8>, String) {
        let head = RequestHead::parse(&mut BytesMut::from(head.as_bytes()), 8192, &mut Vec::new())
            .unwrap()
            .unwrap();
        let knobs = Knobs::read(&head, &DEFAULTS).unwrap();
        let keys = Keys::default();
        let exchange = Exchange {
            head: &head,
            body: request_body,
            knobs: &knobs,
            id: 9,
            created: 1,
            style,
            keys: &keys,
        };
        let (mut body, mut model) = (b"stale".to_vec(), "stale".to_owned());
        let reply = route(&exchange, &mut body, &mut model, gate);
        (reply, body, model)
    }

    /// A gate that refuses with `refusal` and remembers the costs it was asked.
    struct Refusing {
        refusal: Option<Refusal>,
        asked: Vec<u64>,
    }

    impl Gate for Refusing {
        fn admit(&mut self, tokens: u64) -> Result<(), Refusal> {
            self.asked.push(tokens);
            self.refusal.map_or(Ok(()), Err)
        }
    }

    fn status(reply: &Reply) -> u16 {
        reply.status()
    }

    #[test]
    fn costs_are_asked_of_the_gate() {
        let mut gate = Refusing {
            refusal: None,
            asked: Vec::new(),
        };
        let chat = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nx-mock-tokens: 5\r\n\r\n";
        let request = br#"{"messages":[{"role":"user","content":"12345678"}]}"#;
        answer_with(chat, request, Style::OpenAi, &mut gate);
        answer_with(
            "GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
            b"",
            Style::OpenAi,
            &mut gate,
        );
        // Not asked: bad JSON, a forced status, the mock's own endpoints.
        answer_with(chat, b"{", Style::OpenAi, &mut gate);
        let forced = "GET /v1/models HTTP/1.1\r\nHost: a\r\nx-mock-status: 500\r\n\r\n";
        answer_with(forced, b"", Style::OpenAi, &mut gate);
        answer_with(
            "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
            b"",
            Style::OpenAi,
            &mut gate,
        );
        // 2 prompt tokens and 5 completion tokens, then one request with no tokens.
        assert_eq!(gate.asked, [7, 0]);
    }

    #[test]
    fn a_refused_request_gets_429_in_its_style() {
        let refusal = Refusal {
            over: Over::Tokens,
            limit: 100,
            requested: 7,
            too_large: false,
            retry: std::time::Duration::from_millis(1500),
        };
        let mut gate = Refusing {
            refusal: Some(refusal),
            asked: Vec::new(),
        };
        let chat = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n";
        let request = br#"{"messages":[]}"#;

        let (reply, body, _) = answer_with(chat, request, Style::OpenAi, &mut gate);
        assert_eq!(status(&reply), 429);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["type"], "tokens");
        assert_eq!(
            value["error"]["message"],
            "Rate limit reached for tokens per minute: limit 100, requested 7. \
             Please try again in 1.5s."
        );

        let (_, body, _) = answer_with(chat, request, Style::Gemini, &mut gate);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["details"][0]["retryDelay"], "2s");

        gate.refusal = Some(Refusal {
            too_large: true,
            ..refusal
        });
        let (_, body, _) = answer_with(chat, request, Style::Anthropic, &mut gate);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["type"], "rate_limit_error");
        assert_eq!(
            value["error"]["message"],
            "Request too large for tokens per minute: limit 100, requested 7."
        );
    }

    #[test]
    fn forced_errors_take_the_style() {
        let head = "GET /v1/models HTTP/1.1\r\nHost: a\r\nx-mock-status: 429\r\n\
                    x-mock-retry-after: 4\r\n\r\n";
        let (reply, body, _) = answer_with(head, b"", Style::Gemini, &mut Open);
        assert_eq!(status(&reply), 429);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(value["error"]["details"][0]["retryDelay"], "4s");
    }

    #[test]
    fn own_paths() {
        for (path, own) in [
            (&b"/"[..], true),
            (b"/healthz", true),
            (b"/echo", true),
            (b"/mock/stats", true),
            (b"/mock/anything", true),
            (b"/v1/models", false),
            (b"/mockery", false),
        ] {
            assert_eq!(is_mock_own(path), own, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn statuses_by_method_and_path() {
        let table = [
            ("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("GET /?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("HEAD /v1/models HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("GET /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("DELETE /echo HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("GET /v1/nothing HTTP/1.1\r\nHost: a\r\n\r\n", 404),
            (
                "GET /healthz HTTP/1.1\r\nHost: a\r\nx-mock-status: 503\r\n\r\n",
                503,
            ),
        ];
        for (head, expected) in table {
            assert_eq!(status(&answer(head, b"").0), expected, "{head}");
        }
    }

    #[test]
    fn not_found_names_the_request() {
        let (_, body, _) = answer("POST /v2/x?q=\"1\" HTTP/1.1\r\nHost: a\r\n\r\n", b"");
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["error"]["message"],
            "Invalid URL (POST /v2/x?q=\"1\")"
        );
        assert_eq!(value["error"]["code"], "not_found");
    }

    #[test]
    fn chat_completion_whole() {
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nx-mock-tokens: 5\r\n\r\n";
        let request = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"12345678"}]}"#;
        let (reply, body, _) = answer(head, request);
        assert!(matches!(
            reply,
            Reply::Whole {
                status: 200,
                content_type: JSON
            }
        ));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["id"], "chatcmpl-mock-9");
        assert_eq!(value["model"], "gpt-4o");
        assert_eq!(value["usage"]["prompt_tokens"], 2);
        assert_eq!(value["usage"]["completion_tokens"], 5);
    }

    #[test]
    fn chat_completion_streamed_keeps_the_model() {
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n";
        let (reply, body, model) = answer(head, br#"{"model":"m\"1","messages":[],"stream":true}"#);
        assert!(matches!(reply, Reply::Stream(_)));
        assert!(body.is_empty());
        assert_eq!(model, "m\"1");
    }

    #[test]
    fn bad_json_is_400() {
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n";
        let (reply, body, _) = answer(head, b"{\"messages\": [");
        assert_eq!(status(&reply), 400);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn echo_keeps_field_case_and_body() {
        let head =
            "POST /echo?a=b HTTP/1.1\r\nHost: a\r\nX-Odd-CASE: v 1\r\nauthorization: k\r\n\r\n";
        let (_, body, _) = answer(head, b"hi\n\xff");
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["method"], "POST");
        assert_eq!(value["path"], "/echo?a=b");
        assert_eq!(value["version"], "HTTP/1.1");
        assert_eq!(
            value["headers"],
            serde_json::json!([["Host", "a"], ["X-Odd-CASE", "v 1"], ["authorization", "k"]])
        );
        assert_eq!(value["body_len"], 4);
        assert_eq!(value["body"], "hi\n\u{fffd}");
    }
}
