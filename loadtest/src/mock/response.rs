//! Response heads and body framing, appended to the connection's output buffer.
//!
//! Every head carries `Content-Type`, the framing it announces, and the facts tests read to see
//! what a gateway forwarded: `x-mock-saw-authorization` and `x-mock-request-id`. Keyed replies
//! add their rate-limit fields, and fields asked by `x-mock-header` come last, replacing any
//! optional field of the mock's own with the same name.

use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use keygate::http::{chunk_header, HeadWriter, RequestHead};

use super::knobs;
use super::ratelimit::{FieldSink, LimitState};
use super::style::Style;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length` of this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked` (RFC 9112 §7.1).
    Chunked,
    /// Neither: the body ends when the connection closes (RFC 9112 §6.3 rule 8).
    Close,
}

/// The head of one response.
#[derive(Debug, Clone, Copy)]
pub struct ReplyHead<'a> {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection closes after this response.
    pub close: bool,
    /// Whether to confirm a persistent connection to an HTTP/1.0 client (RFC 9112 §9.3).
    pub keep_alive_http10: bool,
    /// The `Authorization` value the request carried.
    pub authorization: Option<&'a [u8]>,
    /// The request's number, unique in this process.
    pub request_id: u64,
    /// The `retry-after` to send.
    pub retry_after: Option<RetryAfter<'a>>,
    /// A keyed reply's limits, written as the style says.
    pub limits: Option<(Style, LimitState)>,
    /// The request whose `x-mock-header` fields are to be added, if it has any.
    pub extra_fields: Option<&'a RequestHead>,
}

/// The value of `retry-after` (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter<'a> {
    /// Whole seconds.
    Seconds(u64),
    /// A value a test gave, sent as it is.
    Verbatim(&'a [u8]),
}

impl ReplyHead<'_> {
    /// Appends the head, through the empty line.
    pub fn write(&self, out: &mut BytesMut) {
        let mut head = HeadWriter::new(out);
        head.status_line(self.status, reason(self.status).as_bytes());
        head.field(b"Content-Type", self.content_type.as_bytes());
        match self.framing {
            BodyFraming::Length(len) => head.field_u64(b"Content-Length", len as u64),
            BodyFraming::Chunked => head.field(b"Transfer-Encoding", b"chunked"),
            BodyFraming::Close => {}
        }
        if self.close {
            head.field(b"Connection", b"close");
        } else if self.keep_alive_http10 {
            head.field(b"Connection", b"keep-alive");
        }
        let mut optional = Optional {
            head: &mut head,
            replaced_by: self.extra_fields,
        };
        match self.retry_after {
            Some(RetryAfter::Seconds(seconds)) => optional.field(
                b"retry-after",
                itoa::Buffer::new().format(seconds).as_bytes(),
            ),
            Some(RetryAfter::Verbatim(value)) => optional.field(b"retry-after", value),
            None => {}
        }
        if let Some((style, limits)) = &self.limits {
            limits.write(*style, SystemTime::now(), &mut optional);
        }
        head.field(
            b"x-mock-saw-authorization",
            self.authorization.unwrap_or(b"-"),
        );
        head.field_u64(b"x-mock-request-id", self.request_id);
        if let Some(request) = self.extra_fields {
            for (name, value) in knobs::mock_headers(request) {
                head.field(name, value);
            }
        }
        head.finish();
    }
}

/// Writes the mock's optional fields, leaving out those an `x-mock-header` replaces.
struct Optional<'h, 'w> {
    head: &'h mut HeadWriter<'w>,
    replaced_by: Option<&'h RequestHead>,
}

impl FieldSink for Optional<'_, '_> {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        let replaced = self.replaced_by.is_some_and(|request| {
            knobs::mock_headers(request).any(|(extra, _)| extra.eq_ignore_ascii_case(name))
        });
        if !replaced {
            self.head.field(name, value);
        }
    }
}

/// Appends `data` as one chunk; empty data is skipped, as a zero-size chunk ends the body.
pub fn chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len() + 20);
    chunk_header(out, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the last chunk, with no trailers.
pub fn last_chunk(out: &mut BytesMut) {
    out.put_slice(b"0\r\n\r\n");
}

/// Appends a whole body framed as `framing` says.
pub fn body(out: &mut BytesMut, framing: BodyFraming, data: &[u8]) {
    if framing == BodyFraming::Chunked {
        chunk(out, data);
        last_chunk(out);
    } else {
        out.extend_from_slice(data);
    }
}

/// The reason phrase of a status (RFC 9110 §15); clients ignore it, people read it.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Mock Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(framing: BodyFraming) -> ReplyHead<'static> {
        ReplyHead {
            status: 200,
            content_type: "application/json",
            framing,
            close: false,
            keep_alive_http10: false,
            authorization: None,
            request_id: 3,
            retry_after: None,
            limits: None,
            extra_fields: None,
        }
    }

    fn written(head: &ReplyHead<'_>) -> String {
        let mut out = BytesMut::new();
        head.write(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn length_framed_head() {
        assert_eq!(
            written(&head(BodyFraming::Length(12))),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\
             x-mock-saw-authorization: -\r\nx-mock-request-id: 3\r\n\r\n"
        );
    }

    #[test]
    fn chunked_closing_429_head() {
        let head = ReplyHead {
            status: 429,
            close: true,
            authorization: Some(b"Bearer k"),
            retry_after: Some(RetryAfter::Seconds(1)),
            ..head(BodyFraming::Chunked)
        };
        assert_eq!(
            written(&head),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\nretry-after: 1\r\n\
             x-mock-saw-authorization: Bearer k\r\nx-mock-request-id: 3\r\n\r\n"
        );
    }

    #[test]
    fn extra_fields_replace_the_mocks_own() {
        let request = RequestHead::parse(
            &mut BytesMut::from(
                &b"GET / HTTP/1.1\r\nHost: a\r\nx-mock-header: Retry-After: 0\r\n\
                   x-mock-header: x-ratelimit-reset-requests: 9s\r\n\r\n"[..],
            ),
            8192,
            &mut Vec::new(),
        )
        .unwrap()
        .unwrap();
        let limits = LimitState {
            requests: Some(crate::mock::ratelimit::Dimension {
                limit: 5,
                remaining: 0,
                until_full: std::time::Duration::from_secs(60),
            }),
            tokens: None,
            retry: None,
        };
        let text = written(&ReplyHead {
            status: 429,
            retry_after: Some(RetryAfter::Seconds(12)),
            limits: Some((Style::OpenAi, limits)),
            extra_fields: Some(&request),
            ..head(BodyFraming::Length(0))
        });
        assert_eq!(
            text,
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
             Content-Length: 0\r\nx-ratelimit-limit-requests: 5\r\n\
             x-ratelimit-remaining-requests: 0\r\nx-mock-saw-authorization: -\r\n\
             x-mock-request-id: 3\r\nRetry-After: 0\r\nx-ratelimit-reset-requests: 9s\r\n\r\n"
        );
    }

    #[test]
    fn verbatim_retry_after() {
        let text = written(&ReplyHead {
            retry_after: Some(RetryAfter::Verbatim(b"Wed, 21 Oct 2015 07:28:00 GMT")),
            ..head(BodyFraming::Length(0))
        });
        assert!(text.contains("\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n"));
    }

    #[test]
    fn close_delimited_head_has_no_framing_fields() {
        let text = written(&ReplyHead {
            close: true,
            ..head(BodyFraming::Close)
        });
        assert!(!text.contains("Content-Length") && !text.contains("Transfer-Encoding"));
        assert!(text.contains("Connection: close\r\n"));
    }

    #[test]
    fn http10_keep_alive_is_confirmed() {
        let text = written(&ReplyHead {
            keep_alive_http10: true,
            ..head(BodyFraming::Length(0))
        });
        assert!(text.contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn bodies_in_each_framing() {
        let table = [
            (BodyFraming::Length(5), &b"hello"[..], &b"hello"[..]),
            (BodyFraming::Close, b"hello", b"hello"),
            (BodyFraming::Chunked, b"hello", b"5\r\nhello\r\n0\r\n\r\n"),
            (BodyFraming::Chunked, b"", b"0\r\n\r\n"),
        ];
        for (framing, data, expected) in table {
            let mut out = BytesMut::new();
            body(&mut out, framing, data);
            assert_eq!(&out[..], expected, "{framing:?}");
        }
    }
}
