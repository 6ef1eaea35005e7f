//! Sans-IO HTTP/1.1 (RFC 9112): request and response heads parsed in place with httparse,
//! body framing, chunked decoding and head encoding.
//!
//! Nothing here performs I/O, allocates per byte or blocks: functions take bytes and return
//! values, so every rule is tested as a table of bytes in, values out. "Need more bytes" is
//! `Ok(None)`, never an error.

mod chunked;
mod encode;
mod fields;
mod request;
mod response;

pub use chunked::{ChunkError, ChunkStep, ChunkedDecoder};
pub use encode::{chunk_header, HeadWriter};
pub use fields::{trim, Field, FieldFlags};
pub use request::{Method, RequestHead};
pub use response::ResponseHead;

/// The most header fields a head may carry; more is answered with 431.
pub const MAX_HEADERS: usize = 100;

/// The protocol version of a message (RFC 9112 §2.3). Only HTTP/1.x reaches this parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: connections close after each exchange unless asked otherwise.
    Http10,
    /// HTTP/1.1: persistent connections by default.
    Http11,
}

/// How the length of a message body is determined (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (a request without framing headers, HEAD, 1xx, 204 and 304 responses).
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body (RFC 9112 §7.1).
    Chunked,
    /// The body ends when the sender closes the connection (responses only).
    CloseDelimited,
}

/// Why a message head could not be accepted. Each variant knows its side and status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not an HTTP/1.x message (bad token, bad line, obs-fold, ...).
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    /// The head is larger than the configured limit, or has too many fields.
    #[error("message head exceeds the configured limit")]
    HeadTooLarge,
    /// Content-Length is malformed, or several values differ (RFC 9112 §6.3 rule 5).
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding were sent (RFC 9112 §6.1).
    #[error("both Content-Length and Transfer-Encoding are present")]
    AmbiguousLength,
    /// A transfer coding other than a single final `chunked` (RFC 9112 §6.1).
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// An HTTP/1.1 request without exactly one Host field (RFC 9112 §3.2).
    #[error("missing or repeated Host header")]
    BadHost,
    /// An Expect value other than 100-continue (RFC 9110 §10.1.1).
    #[error("unsupported Expect value")]
    UnsupportedExpectation,
}

impl From<httparse::Error> for ParseError {
    fn from(err: httparse::Error) -> Self {
        match err {
            httparse::Error::TooManyHeaders => ParseError::HeadTooLarge,
            httparse::Error::HeaderName => ParseError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => ParseError::Malformed("invalid header value"),
            httparse::Error::NewLine => ParseError::Malformed("invalid line ending"),
            httparse::Error::Status => ParseError::Malformed("invalid status line"),
            httparse::Error::Token => ParseError::Malformed("invalid token"),
            httparse::Error::Version => ParseError::Malformed("unsupported HTTP version"),
        }
    }
}

/// The length of a complete head from httparse's answer, or `None` while more bytes are
/// needed; a head (or the part of one buffered so far) over `max` is too large.
fn head_length(
    status: httparse::Result<usize>,
    buffered: usize,
    max: usize,
) -> Result<Option<usize>, ParseError> {
    match status? {
        httparse::Status::Complete(len) if len > max => Err(ParseError::HeadTooLarge),
        httparse::Status::Complete(len) => Ok(Some(len)),
        httparse::Status::Partial if buffered > max => Err(ParseError::HeadTooLarge),
        httparse::Status::Partial => Ok(None),
    }
}

fn version_of(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    }
}
