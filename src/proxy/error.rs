//! Everything that can end a request inside the gateway, which side caused it, and the one
//! place where each maps to a status code and the contract's JSON error body.

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::http::{ChunkError, HeadWriter, ParseError};
use crate::keys::AuthError;
use crate::quota::{Refusal, SECOND};

/// Why the gateway answered a request itself, or could not answer it at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client sent a head that cannot be accepted.
    #[error("bad request head: {0}")]
    BadHead(#[from] ParseError),
    /// The client's chunked body is broken.
    #[error("bad chunked request body: {0}")]
    BadChunk(ChunkError),
    /// The request target is unusable (dot segments, CONNECT's authority-form).
    #[error("bad request target: {0}")]
    BadTarget(&'static str),
    /// The request carries no valid client key.
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The client key may not use this route or model.
    #[error("this client key may not use {0}")]
    Forbidden(&'static str),
    /// A limit of the client key or its tenant refused the request.
    #[error(
        "{} limit of this client key exceeded; retry in {} ms",
        .0.exceeded.reason(),
        .0.retry_after.div_ceil(1_000_000)
    )]
    Limited(Refusal),
    /// CONNECT: the gateway offers no tunnels.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No route matches the request.
    #[error("no route matches")]
    NoRoute,
    /// The request's route is retired; the message names it (built with the router).
    #[error("{0}")]
    RouteRetired(Arc<str>),
    /// The request body is over the configured limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request head did not arrive within the header timeout, or the body stalled.
    #[error("request timed out")]
    ClientTimeout,
    /// The client closed the connection or failed mid-request; nobody is left to answer.
    #[error("client went away: {0}")]
    ClientGone(io::Error),
    /// No connection to any endpoint could be opened.
    #[error("cannot connect upstream: {0}")]
    UpstreamConnect(io::Error),
    /// Connecting, or waiting for the response head, took too long.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream sent something that is not a valid HTTP/1.1 response.
    #[error("invalid upstream response: {0}")]
    UpstreamProtocol(&'static str),
    /// The upstream connection failed or closed before the exchange completed.
    #[error("upstream connection failed: {0}")]
    UpstreamIo(io::Error),
    /// Every provider key of the upstream (and of its fallbacks) is cooling down or paced
    /// out; the soonest is ready in this many nanoseconds.
    #[error(
        "every provider key of this upstream is temporarily exhausted; retry in {} ms",
        .0.div_ceil(1_000_000).max(1)
    )]
    KeysExhausted(u64),
    /// Every provider key of the upstream is disabled: refused by the provider, or taken out
    /// of use by an operator.
    #[error(
        "every provider key of this upstream is disabled (refused by the provider or by an \
         operator)"
    )]
    KeysDisabled,
    /// The provider refused the gateway's key with this status (401 or 403), and no other
    /// key could be tried; the key is now disabled.
    #[error("the provider refused the gateway's key for this upstream ({0}); it is disabled")]
    ProviderKeyRefused(u16),
    /// The connection was handed to the shard that owns its client key, and that shard is
    /// at `max_connections`.
    #[error(
        "the gateway is at its connection limit for this client key (max_connections); \
         retry in a moment"
    )]
    OwnerFull,
}

/// Which side of the gateway an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or went away.
    Client,
    /// The upstream failed.
    Upstream,
}

impl Error {
    /// The side to blame.
    pub fn side(&self) -> Side {
        match self {
            Error::UpstreamConnect(_)
            | Error::UpstreamTimeout
            | Error::UpstreamProtocol(_)
            | Error::UpstreamIo(_)
            | Error::KeysExhausted(_)
            | Error::KeysDisabled
            | Error::ProviderKeyRefused(_) => Side::Upstream,
            _ => Side::Client,
        }
    }

    /// Status code, `code` and `type` of the JSON body; `None` when nobody can be answered.
    pub fn status(&self) -> Option<(u16, &'static str, &'static str)> {
        const INVALID: &str = "invalid_request_error";
        Some(match self {
            Error::BadHead(ParseError::HeadTooLarge) => (431, "headers_too_large", INVALID),
            Error::BadHead(ParseError::UnsupportedTransferEncoding) => {
                (501, "not_implemented", INVALID)
            }
            Error::BadHead(ParseError::UnsupportedExpectation) => {
                (417, "expectation_failed", INVALID)
            }
            Error::BadHead(_) | Error::BadChunk(_) | Error::BadTarget(_) => {
                (400, "bad_request", INVALID)
            }
            Error::Unauthorized(_) => (401, "invalid_api_key", "authentication_error"),
            Error::Forbidden(_) => (403, "forbidden", "permission_error"),
            Error::Limited(refusal) => (429, refusal.exceeded.code(), "rate_limit_error"),
            Error::MethodNotAllowed => (405, "method_not_allowed", INVALID),
            Error::NoRoute => (404, "not_found", INVALID),
            Error::RouteRetired(_) => (410, "route_retired", INVALID),
            Error::BodyTooLarge => (413, "request_too_large", INVALID),
            Error::ClientTimeout => (408, "request_timeout", INVALID),
            Error::ClientGone(_) => return None,
            Error::UpstreamConnect(_) | Error::UpstreamProtocol(_) | Error::UpstreamIo(_) => {
                (502, "upstream_error", "upstream_error")
            }
            Error::UpstreamTimeout => (504, "upstream_timeout", "upstream_error"),
            Error::KeysExhausted(_) => (429, "keys_temporarily_exhausted", "rate_limit_error"),
            Error::KeysDisabled => (503, "upstream_unavailable", "upstream_error"),
            Error::ProviderKeyRefused(_) => (502, "upstream_error", "upstream_error"),
            Error::OwnerFull => (503, "overloaded", "server_error"),
        })
    }
}

/// Appends a complete error response in the contract's shape to `out`. With `close`, the
/// response says `Connection: close`; `extra` adds fields (a client's budget).
pub fn write_error_response(
    out: &mut BytesMut,
    error: &Error,
    close: bool,
    extra: impl FnOnce(&mut HeadWriter<'_>),
) {
    let Some((status, code, kind)) = error.status() else {
        return;
    };
    let message = error.to_string();
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "code": code } });
    let body = body.to_string();

    let mut head = HeadWriter::new(out);
    head.status_line(status, reason(status).as_bytes());
    head.field(b"Content-Type", b"application/json");
    head.field_u64(b"Content-Length", body.len() as u64);
    match error {
        Error::Limited(refusal) => {
            // Both carry the true wait, rounded up: a retry at that moment passes.
            let millis = refusal.retry_after.div_ceil(1_000_000).max(1);
            head.field_u64(b"Retry-After", refusal.retry_after.div_ceil(SECOND).max(1));
            head.field_u64(b"retry-after-ms", millis);
        }
        Error::KeysExhausted(wait) => {
            head.field_u64(b"Retry-After", wait.div_ceil(SECOND).max(1));
            head.field_u64(b"retry-after-ms", wait.div_ceil(1_000_000).max(1));
        }
        Error::Unauthorized(_) => head.field(b"WWW-Authenticate", b"Bearer realm=\"keygate\""),
        // Connections close as others end: a second is a fair guess, not a promise.
        Error::OwnerFull => head.field_u64(b"Retry-After", 1),
        _ => {}
    }
    extra(&mut head);
    if close {
        head.field(b"Connection", b"close");
    }
    head.finish();
    out.put_slice(body.as_bytes());
}

/// The reason phrase for the statuses the gateway produces itself.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let mut out = BytesMut::new();
        write_error_response(&mut out, &Error::NoRoute, false, |_| {});
        let text = std::str::from_utf8(&out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(json["error"]["message"].is_string());
    }

    #[test]
    fn status_table() {
        let table: Vec<(Error, Option<u16>)> = vec![
            (Error::BadHead(ParseError::HeadTooLarge), Some(431)),
            (Error::BadHead(ParseError::AmbiguousLength), Some(400)),
            (Error::BadChunk(ChunkError::BadLineEnding), Some(400)),
            (Error::BodyTooLarge, Some(413)),
            (Error::UpstreamTimeout, Some(504)),
            (Error::UpstreamProtocol("x"), Some(502)),
            (Error::ClientGone(io::ErrorKind::BrokenPipe.into()), None),
            (Error::Unauthorized(AuthError::Missing), Some(401)),
            (Error::Forbidden("this route"), Some(403)),
            (Error::RouteRetired("gone".into()), Some(410)),
            (Error::OwnerFull, Some(503)),
        ];
        for (error, status) in table {
            assert_eq!(error.status().map(|s| s.0), status, "{error}");
        }
    }
}

#[cfg(test)]
mod limited_tests {
    use super::*;
    use crate::quota::Exceeded;

    #[test]
    fn limited_carries_retry_after_rounded_up() {
        let refusal = Refusal {
            exceeded: Exceeded::Rate,
            retry_after: 1_200_000_001,
        };
        let mut out = BytesMut::new();
        write_error_response(&mut out, &Error::Limited(refusal), false, |_| {});
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("Retry-After: 2\r\n"), "{text}");
        assert!(text.contains("retry-after-ms: 1201\r\n"), "{text}");
        assert!(text.contains("\"code\":\"rate_limit_exceeded\""), "{text}");

        let quota = Refusal {
            exceeded: Exceeded::Quota(crate::quota::Window::Day),
            retry_after: 5,
        };
        out.clear();
        write_error_response(&mut out, &Error::Limited(quota), false, |_| {});
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Retry-After: 1\r\n") && text.contains("retry-after-ms: 1\r\n"));
        assert!(text.contains("\"code\":\"quota_exceeded\""));
    }
}
