//! The OpenAI wire format as the mock speaks it: chat completion requests read with serde,
//! and replies (whole, streamed as server-sent events, model list, errors) written by hand.
//!
//! Sans-IO: bytes in, bytes appended to a caller's buffer out. Reading a request allocates
//! nothing unless its strings hold escapes (serde_json then decodes them into scratch space);
//! message text is counted while it is parsed, never collected.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::json;

/// The model named in replies when a request names none.
pub const DEFAULT_MODEL: &str = "mock-model";

/// The most completion tokens one reply may hold, whatever a request or knob asks for.
pub const MAX_COMPLETION_TOKENS: u32 = 1_000_000;

/// The body of `GET /v1/models`.
pub const MODEL_LIST: &[u8] = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"mock"},"#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"mock"},"#,
    r#"{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#
)
.as_bytes();

/// The words completions are made of, used in turn; each counts as one token.
const WORDS: [&str; 16] = [
    "The", "quick", "mock", "model", "answers", "every", "prompt", "with", "calm", "and", "steady",
    "words", "until", "its", "budget", "ends.",
];

/// What the mock needs from a chat completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    /// The model asked for, echoed in the reply.
    pub model: Cow<'a, str>,
    /// Characters of message text (string contents and text parts).
    pub prompt_chars: u64,
    /// `max_completion_tokens`, else `max_tokens`, if given.
    pub max_tokens: Option<u64>,
    /// Whether the reply is streamed as server-sent events.
    pub stream: bool,
    /// Whether a streamed reply ends with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl<'a> ChatRequest<'a> {
    /// Reads a chat completion request body. `messages` is required, as upstream.
    pub fn parse(body: &'a [u8]) -> Result<ChatRequest<'a>, serde_json::Error> {
        let wire: WireRequest<'a> = serde_json::from_slice(body)?;
        Ok(ChatRequest {
            model: wire
                .model
                .map_or(Cow::Borrowed(DEFAULT_MODEL), |model| model.0),
            prompt_chars: wire.messages.0,
            max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
            stream: wire.stream.unwrap_or(false),
            include_usage: wire
                .stream_options
                .and_then(|options| options.include_usage)
                .unwrap_or(false),
        })
    }

    /// The prompt's size in tokens: about four characters a token, and at least one.
    pub fn prompt_tokens(&self) -> u32 {
        (self.prompt_chars / 4).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// How many tokens to answer when `wanted` are asked for (by knob or default), and why the
    /// answer stops: a smaller `max_tokens` cuts it short with `length`, as upstream does.
    pub fn completion_tokens(&self, wanted: u32) -> (u32, FinishReason) {
        let wanted = wanted.min(MAX_COMPLETION_TOKENS);
        match self.max_tokens {
            Some(max) if max < u64::from(wanted) => (max as u32, FinishReason::Length),
            _ => (wanted, FinishReason::Stop),
        }
    }
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The answer hit `max_tokens`.
    Length,
}

impl FinishReason {
    fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The facts a chat completion reply is written from.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The number in the reply id `chatcmpl-mock-N`.
    pub id: u64,
    /// Unix time in seconds.
    pub created: u64,
    /// The model echoed from the request.
    pub model: &'a str,
    /// Prompt size in tokens.
    pub prompt_tokens: u32,
    /// Answer size in tokens (words).
    pub completion_tokens: u32,
    /// Why the answer ends.
    pub finish: FinishReason,
}

impl Completion<'_> {
    /// Appends a whole `chat.completion` object.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.preamble(out, "chat.completion");
        out.extend_from_slice(
            br#","choices":[{"index":0,"message":{"role":"assistant","content":""#,
        );
        for token in 0..self.completion_tokens {
            word(out, token);
        }
        out.extend_from_slice(br#"","refusal":null},"logprobs":null,"finish_reason":""#);
        out.extend_from_slice(self.finish.as_str().as_bytes());
        out.extend_from_slice(br#""}],"#);
        self.usage(out);
        out.push(b'}');
    }

    /// `{"id":...,"object":...,"created":...,"model":...,"system_fingerprint":...`
    fn preamble(&self, out: &mut Vec<u8>, object: &str) {
        out.extend_from_slice(br#"{"id":"chatcmpl-mock-"#);
        json::number(out, self.id);
        out.extend_from_slice(br#"","object":""#);
        out.extend_from_slice(object.as_bytes());
        out.extend_from_slice(br#"","created":"#);
        json::number(out, self.created);
        out.extend_from_slice(br#","model":"#);
        json::string(out, self.model);
        out.extend_from_slice(br#","system_fingerprint":"fp_mock""#);
    }

    /// `"usage":{...}`
    fn usage(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#""usage":{"prompt_tokens":"#);
        json::number(out, u64::from(self.prompt_tokens));
        out.extend_from_slice(br#","completion_tokens":"#);
        json::number(out, u64::from(self.completion_tokens));
        out.extend_from_slice(br#","total_tokens":"#);
        json::number(
            out,
            u64::from(self.prompt_tokens) + u64::from(self.completion_tokens),
        );
        out.push(b'}');
    }
}

/// A streamed completion: yields its server-sent events one at a time, as upstream sends them
/// (a role chunk, one chunk per token, a finish chunk, the usage chunk if asked, `[DONE]`).
#[derive(Debug, Clone)]
pub struct ChatStream {
    /// The reply being streamed; its model is not kept here, so the caller passes it back in.
    id: u64,
    created: u64,
    prompt_tokens: u32,
    completion_tokens: u32,
    finish: FinishReason,
    include_usage: bool,
    next: Event,
}

/// The events of a stream, in the order they are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Role,
    Token(u32),
    Finish,
    Usage,
    Done,
    Ended,
}

impl ChatStream {
    /// A stream for `completion`.
    pub fn new(completion: &Completion<'_>, include_usage: bool) -> Self {
        ChatStream {
            id: completion.id,
            created: completion.created,
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            finish: completion.finish,
            include_usage,
            next: Event::Role,
        }
    }

    /// Appends the next event (`data: ...\n\n`) to `out`; false once the stream has ended.
    pub fn next_event(&mut self, model: &str, out: &mut Vec<u8>) -> bool {
        let event = self.next;
        self.next = match event {
            Event::Role if self.completion_tokens > 0 => Event::Token(0),
            Event::Token(index) if index + 1 < self.completion_tokens => Event::Token(index + 1),
            Event::Role | Event::Token(_) => Event::Finish,
            Event::Finish if self.include_usage => Event::Usage,
            Event::Finish | Event::Usage => Event::Done,
            Event::Done | Event::Ended => Event::Ended,
        };

        let completion = Completion {
            id: self.id,
            created: self.created,
            model,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            finish: self.finish,
        };
        match event {
            Event::Ended => return false,
            Event::Done => {
                out.extend_from_slice(b"data: [DONE]\n\n");
                return true;
            }
            Event::Usage => {
                out.extend_from_slice(b"data: ");
                completion.preamble(out, "chat.completion.chunk");
                out.extend_from_slice(br#","choices":[],"#);
                completion.usage(out);
                out.extend_from_slice(b"}\n\n");
                return true;
            }
            Event::Role | Event::Token(_) | Event::Finish => {}
        }

        out.extend_from_slice(b"data: ");
        completion.preamble(out, "chat.completion.chunk");
        out.extend_from_slice(br#","choices":[{"index":0,"delta":{"#);
        match event {
            Event::Role => {
                out.extend_from_slice(br#""role":"assistant","content":"","refusal":null"#)
            }
            Event::Token(index) => {
                out.extend_from_slice(br#""content":""#);
                word(out, index);
                out.push(b'"');
            }
            _ => {}
        }
        out.extend_from_slice(br#"},"logprobs":null,"finish_reason":"#);
        if event == Event::Finish {
            out.push(b'"');
            out.extend_from_slice(self.finish.as_str().as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            // Upstream marks every chunk but the last with a null usage when usage is asked.
            out.extend_from_slice(br#","usage":null"#);
        }
        out.extend_from_slice(b"}\n\n");
        true
    }
}

/// Appends an error object in the OpenAI shape with `message` (escaped here) and the given
/// `type` and `code` (see [`error_kind`]).
pub fn write_error_as(out: &mut Vec<u8>, message: &str, kind: &str, code: &str) {
    out.extend_from_slice(br#"{"error":{"message":"#);
    json::string(out, message);
    out.extend_from_slice(br#","type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","param":null,"code":""#);
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(br#""}}"#);
}

/// The `type` and `code` upstream uses for an error status.
pub fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "bad_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        405 => ("invalid_request_error", "method_not_allowed"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("requests", "rate_limit_exceeded"),
        431 => ("invalid_request_error", "headers_too_large"),
        500 => ("server_error", "internal_error"),
        502 | 504 => ("server_error", "upstream_error"),
        503 => ("server_error", "overloaded"),
        _ => ("mock_error", "mock_status"),
    }
}

/// Appends the word for token `index`, with a leading space after the first, so the text of a
/// stream's deltas joins to the text of the same answer given whole.
fn word(out: &mut Vec<u8>, index: u32) {
    if index > 0 {
        out.push(b' ');
    }
    out.extend_from_slice(WORDS[index as usize % WORDS.len()].as_bytes());
}

/// A chat completion request as sent; unknown fields are skipped without being kept.
#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    messages: MessageChars,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The characters of text in a `messages` array, counted while it is read.
struct MessageChars(u64);

/// One message; only its content counts.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: TextChars,
}

/// One part of an array content; only text parts count.
#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: TextChars,
}

/// The characters of a content value: a string, `null`, or an array of parts.
#[derive(Default)]
struct TextChars(u64);

/// A string borrowed from the body unless it holds escapes. (serde's own `Cow` always copies
/// when it sits inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Borrowing;
        impl<'de> Visitor<'de> for Borrowing {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Borrowing)
    }
}

impl<'de> Deserialize<'de> for MessageChars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Messages;
        impl<'de> Visitor<'de> for Messages {
            type Value = MessageChars;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageChars, A::Error> {
                let mut chars = 0;
                while let Some(message) = seq.next_element::<Message>()? {
                    chars += message.content.0;
                }
                Ok(MessageChars(chars))
            }
        }
        deserializer.deserialize_seq(Messages)
    }
}

impl<'de> Deserialize<'de> for TextChars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = TextChars;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, null or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<TextChars, E> {
                Ok(TextChars(text.chars().count() as u64))
            }

            fn visit_unit<E: de::Error>(self) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }

            fn visit_none<E: de::Error>(self) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextChars, A::Error> {
                let mut chars = 0;
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    chars += part.text.0;
                }
                Ok(TextChars(chars))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<TextChars, A::Error> {
                // Not a content shape upstream accepts; skipped rather than refused.
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TextChars(0))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(tokens: u32, finish: FinishReason) -> Completion<'static> {
        Completion {
            id: 7,
            created: 1_700_000_000,
            model: "gpt-\"q\"",
            prompt_tokens: 3,
            completion_tokens: tokens,
            finish,
        }
    }

    #[test]
    fn prompt_characters_are_counted_in_every_content_shape() {
        let table: &[(&str, u64, u32)] = &[
            (r#"{"messages":[]}"#, 0, 1),
            (r#"{"messages":[{"role":"user","content":"abcd"}]}"#, 4, 1),
            (
                r#"{"messages":[{"role":"system","content":"12345678"},{"role":"user","content":"ab\ncd"}]}"#,
                13,
                3,
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"héllo"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                5,
                1,
            ),
            (
                r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[]},{"role":"tool"}]}"#,
                0,
                1,
            ),
        ];
        for (body, chars, tokens) in table {
            let request = ChatRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(request.prompt_chars, *chars, "{body}");
            assert_eq!(request.prompt_tokens(), *tokens, "{body}");
        }
    }

    #[test]
    fn request_fields() {
        let body = br#"{"model":"gpt-4o","messages":[],"max_tokens":5,"stream":true,
            "stream_options":{"include_usage":true},"temperature":0.2,"tools":[{"x":[1,{}]}]}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert_eq!(request.model, "gpt-4o");
        assert!(matches!(request.model, Cow::Borrowed(_)));
        assert_eq!(request.max_tokens, Some(5));
        assert!(request.stream && request.include_usage);

        let body = br#"{"messages":[],"max_tokens":5,"max_completion_tokens":9,"stream":null}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert_eq!(request.model, DEFAULT_MODEL);
        assert_eq!(request.max_tokens, Some(9));
        assert!(!request.stream && !request.include_usage);
    }

    #[test]
    fn bad_requests_are_errors() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{}",
            br#"{"messages":"hi"}"#,
            br#"{"messages":[{"content":5}]}"#,
            br#"{"messages":[],"max_tokens":-1}"#,
        ] {
            assert!(
                ChatRequest::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn completion_tokens_follow_the_smaller_limit() {
        let mut request = ChatRequest::parse(br#"{"messages":[]}"#).unwrap();
        assert_eq!(request.completion_tokens(16), (16, FinishReason::Stop));
        assert_eq!(
            request.completion_tokens(u32::MAX),
            (MAX_COMPLETION_TOKENS, FinishReason::Stop)
        );
        request.max_tokens = Some(4);
        assert_eq!(request.completion_tokens(16), (4, FinishReason::Length));
        assert_eq!(request.completion_tokens(3), (3, FinishReason::Stop));
        request.max_tokens = Some(0);
        assert_eq!(request.completion_tokens(16), (0, FinishReason::Length));
    }

    #[test]
    fn whole_completion_is_valid_json_with_usage() {
        let mut out = Vec::new();
        completion(18, FinishReason::Stop).write(&mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["id"], "chatcmpl-mock-7");
        assert_eq!(value["object"], "chat.completion");
        assert_eq!(value["model"], "gpt-\"q\"");
        assert_eq!(value["created"], 1_700_000_000);
        let choice = &value["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["finish_reason"], "stop");
        let content = choice["message"]["content"].as_str().unwrap();
        assert_eq!(content.split(' ').count(), 18);
        assert!(content.starts_with("The quick mock"));
        assert_eq!(value["usage"]["prompt_tokens"], 3);
        assert_eq!(value["usage"]["completion_tokens"], 18);
        assert_eq!(value["usage"]["total_tokens"], 21);
    }

    #[test]
    fn empty_completion() {
        let mut out = Vec::new();
        completion(0, FinishReason::Length).write(&mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["choices"][0]["message"]["content"], "");
        assert_eq!(value["choices"][0]["finish_reason"], "length");
    }

    /// Runs a stream to its end and returns the payload of each event.
    fn events(tokens: u32, include_usage: bool) -> Vec<String> {
        let mut stream = ChatStream::new(&completion(tokens, FinishReason::Stop), include_usage);
        let mut events = Vec::new();
        let mut out = Vec::new();
        while stream.next_event("m", &mut out) {
            let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
            let payload = text.strip_prefix("data: ").unwrap();
            events.push(payload.strip_suffix("\n\n").unwrap().to_owned());
            assert!(events.len() < 100, "stream does not end");
        }
        assert!(!stream.next_event("m", &mut out) && out.is_empty());
        events
    }

    #[test]
    fn stream_events_in_order() {
        let events = events(3, true);
        assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|event| serde_json::from_str(event).unwrap())
            .collect();
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["id"], "chatcmpl-mock-7");
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[1..4]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "The quick mock");
        assert!(chunks[..4]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null() && c["usage"].is_null()));
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(chunks[5]["choices"], serde_json::json!([]));
        assert_eq!(chunks[5]["usage"]["total_tokens"], 6);
    }

    #[test]
    fn stream_without_usage_has_no_usage_fields() {
        let events = events(2, false);
        assert_eq!(events.len(), 1 + 2 + 1 + 1);
        assert!(events.iter().all(|event| !event.contains("usage")));
        assert_eq!(events.last().unwrap(), "[DONE]");
    }

    #[test]
    fn errors_have_the_openai_shape() {
        for (status, kind, code) in [
            (429, "requests", "rate_limit_exceeded"),
            (400, "invalid_request_error", "bad_request"),
            (500, "server_error", "internal_error"),
            (418, "mock_error", "mock_status"),
        ] {
            let mut out = Vec::new();
            let (error_type, error_code) = error_kind(status);
            write_error_as(&mut out, "no \"luck\"", error_type, error_code);
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value["error"]["message"], "no \"luck\"");
            assert_eq!(value["error"]["type"], kind);
            assert_eq!(value["error"]["code"], code);
        }
    }

    #[test]
    fn model_list_is_valid_json() {
        let value: serde_json::Value = serde_json::from_slice(MODEL_LIST).unwrap();
        assert_eq!(value["object"], "list");
        assert!(value["data"].as_array().unwrap().len() >= 2);
    }
}
