//! The provider a reply imitates, and its error bodies. The chat completion itself is always
//! OpenAI's; a style changes only error bodies and rate-limit fields (see `ratelimit`).
//!
//! Sans-IO: bodies are appended to a caller's buffer.

use super::json;
use super::openai;

/// Which provider's conventions a reply follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Style {
    /// `Authorization: Bearer KEY`; `x-ratelimit-*` fields; `{"error": {"message", "type",
    /// "param", "code"}}`.
    #[default]
    #[value(name = "openai")]
    OpenAi,
    /// `x-api-key: KEY`; `anthropic-ratelimit-*` fields; `{"type": "error", "error": {"type",
    /// "message"}}`.
    Anthropic,
    /// `x-goog-api-key: KEY`; no rate-limit fields; `{"error": {"code", "message", "status"}}`.
    Gemini,
}

/// Why a request was refused, when it is for a reason a provider describes in its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Nothing more than the status says.
    Plain,
    /// Over the requests-per-minute limit; Gemini says when to retry, in whole seconds.
    Requests { retry_seconds: u64 },
    /// Over the tokens-per-minute limit; Gemini says when to retry, in whole seconds.
    Tokens { retry_seconds: u64 },
}

impl Style {
    /// Appends the error body for `status` in this style.
    pub fn write_error(self, out: &mut Vec<u8>, status: u16, message: &str, cause: Cause) {
        match self {
            Style::OpenAi => {
                let (kind, code) = match cause {
                    Cause::Plain => openai::error_kind(status),
                    Cause::Requests { .. } => ("requests", "rate_limit_exceeded"),
                    Cause::Tokens { .. } => ("tokens", "rate_limit_exceeded"),
                };
                openai::write_error_as(out, message, kind, code);
            }
            Style::Anthropic => anthropic_error(out, status, message),
            Style::Gemini => gemini_error(out, status, message, cause),
        }
    }
}

/// `{"type":"error","error":{"type":...,"message":...}}`
fn anthropic_error(out: &mut Vec<u8>, status: u16, message: &str) {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    out.extend_from_slice(br#"{"type":"error","error":{"type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","message":"#);
    json::string(out, message);
    out.extend_from_slice(b"}}");
}

/// `{"error":{"code":...,"message":...,"status":...}}`, with a `RetryInfo` detail on a 429.
fn gemini_error(out: &mut Vec<u8>, status: u16, message: &str, cause: Cause) {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        402..=498 => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    };
    out.extend_from_slice(br#"{"error":{"code":"#);
    json::number(out, u64::from(status));
    out.extend_from_slice(br#","message":"#);
    json::string(out, message);
    out.extend_from_slice(br#","status":""#);
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    if let Cause::Requests { retry_seconds } | Cause::Tokens { retry_seconds } = cause {
        out.extend_from_slice(
            br#","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":""#,
        );
        json::number(out, retry_seconds);
        out.extend_from_slice(br#"s"}]"#);
    }
    out.extend_from_slice(b"}}");
}

/// A key as OpenAI names it in a 401: its first four and last three characters around `***`
/// (`sk-a***xyz`); a key of fewer than eight characters keeps only its first half.
pub fn masked_key(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    let chars: Vec<char> = key.chars().collect();
    let (head, tail) = if chars.len() >= 8 {
        (4, 3)
    } else {
        (chars.len() / 2, 0)
    };
    let mut masked: String = chars[..head].iter().collect();
    masked.push_str("***");
    masked.extend(&chars[chars.len() - tail..]);
    masked
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn error(style: Style, status: u16, cause: Cause) -> Value {
        let mut out = Vec::new();
        style.write_error(&mut out, status, "say \"why\"", cause);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn openai_errors() {
        let limited = error(Style::OpenAi, 429, Cause::Tokens { retry_seconds: 3 });
        assert_eq!(
            limited,
            json!({"error": {"message": "say \"why\"", "type": "tokens", "param": null,
                "code": "rate_limit_exceeded"}})
        );
        let limited = error(Style::OpenAi, 429, Cause::Requests { retry_seconds: 3 });
        assert_eq!(limited["error"]["type"], "requests");
        let denied = error(Style::OpenAi, 401, Cause::Plain);
        assert_eq!(denied["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn anthropic_errors() {
        for (status, kind) in [
            (401, "authentication_error"),
            (403, "permission_error"),
            (429, "rate_limit_error"),
            (400, "invalid_request_error"),
            (529, "overloaded_error"),
            (500, "api_error"),
        ] {
            assert_eq!(
                error(Style::Anthropic, status, Cause::Plain),
                json!({"type": "error", "error": {"type": kind, "message": "say \"why\""}}),
                "{status}"
            );
        }
    }

    #[test]
    fn gemini_errors() {
        assert_eq!(
            error(Style::Gemini, 429, Cause::Requests { retry_seconds: 2 }),
            json!({"error": {"code": 429, "message": "say \"why\"", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "2s"}]}})
        );
        for (status, name) in [
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (503, "UNAVAILABLE"),
        ] {
            let value = error(Style::Gemini, status, Cause::Plain);
            assert_eq!(value["error"]["status"], name);
            assert_eq!(value["error"]["code"], status);
            assert!(value["error"].get("details").is_none());
        }
    }

    #[test]
    fn masked_keys() {
        let table: [(&[u8], &str); 5] = [
            (b"sk-abcdefxyz", "sk-a***xyz"),
            (b"sk-proj-0123456789", "sk-p***789"),
            (b"sk-abcd", "sk-***"),
            (b"", "***"),
            (b"\xffsk-\xfe1234567", "\u{fffd}sk-***567"),
        ];
        for (key, expected) in table {
            assert_eq!(masked_key(key), expected);
        }
    }
}
