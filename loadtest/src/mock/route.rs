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
//! | any | anything else | 404 (405 for a known path) in the OpenAI error shape |

use keygate::http::{Method, RequestHead};

use super::json;
use super::knobs::Knobs;
use super::openai::{self, ChatRequest, ChatStream, Completion};

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

/// Answers `exchange`, writing a whole body to `body` or the streamed model name to `model`.
/// Both buffers are cleared first.
pub fn route(exchange: &Exchange<'_>, body: &mut Vec<u8>, model: &mut String) -> Reply {
    body.clear();
    model.clear();
    let head = exchange.head;
    if let Some(status) = exchange.knobs.status {
        return error(body, status, "mock error asked by x-mock-status");
    }

    let get = matches!(head.method, Method::Get | Method::Head);
    match head.path_only() {
        b"/v1/chat/completions" if head.method == Method::Post => chat(exchange, body, model),
        b"/v1/models" if get => {
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
        b"/v1/chat/completions" | b"/v1/models" | b"/" | b"/healthz" | b"/echo" => {
            error(body, 405, "method not allowed for this path")
        }
        _ => {
            let mut message = Vec::with_capacity(64);
            message.extend_from_slice(b"Invalid URL (");
            message.extend_from_slice(head.method_bytes());
            message.push(b' ');
            message.extend_from_slice(head.target());
            message.push(b')');
            error(body, 404, &String::from_utf8_lossy(&message))
        }
    }
}

fn chat(exchange: &Exchange<'_>, body: &mut Vec<u8>, model: &mut String) -> Reply {
    let request = match ChatRequest::parse(exchange.body) {
        Ok(request) => request,
        Err(err) => {
            let message = format!("We could not parse the JSON body of your request: {err}");
            return error(body, 400, &message);
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

/// Writes an OpenAI error body for `status`.
pub fn error(body: &mut Vec<u8>, status: u16, message: &str) -> Reply {
    body.clear();
    openai::write_error(body, status, message);
    whole(status, JSON)
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
    use crate::mock::knobs::Defaults;

    const DEFAULTS: Defaults = Defaults {
        latency: Duration::ZERO,
        token_delay: Duration::ZERO,
        tokens: 16,
    };

    /// Routes a request given as its head text and body.
    fn answer(head: &str, request_body: &[u8]) -> (Reply, Vec<u8>, String) {
        let head = RequestHead::parse(&mut BytesMut::from(head.as_bytes()), 8192, &mut Vec::new())
            .unwrap()
            .unwrap();
        let knobs = Knobs::read(&head, &DEFAULTS).unwrap();
        let exchange = Exchange {
            head: &head,
            body: request_body,
            knobs: &knobs,
            id: 9,
            created: 1,
        };
        let (mut body, mut model) = (b"stale".to_vec(), "stale".to_owned());
        let reply = route(&exchange, &mut body, &mut model);
        (reply, body, model)
    }

    fn status(reply: &Reply) -> u16 {
        match reply {
            Reply::Whole { status, .. } => *status,
            Reply::Stream(_) => 200,
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
