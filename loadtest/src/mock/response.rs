//! Response heads and body framing, appended to the connection's output buffer.
//!
//! Every head carries `Content-Type`, the framing it announces, and the facts tests read to see
//! what a gateway forwarded: `x-mock-saw-authorization` and `x-mock-request-id`.

use bytes::{BufMut, BytesMut};
use keygate::http::{chunk_header, HeadWriter};

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
    /// Seconds to send in `retry-after`, for a 429.
    pub retry_after: Option<u64>,
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
        if let Some(seconds) = self.retry_after {
            head.field_u64(b"retry-after", seconds);
        }
        head.field(
            b"x-mock-saw-authorization",
            self.authorization.unwrap_or(b"-"),
        );
        head.field_u64(b"x-mock-request-id", self.request_id);
        head.finish();
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
            retry_after: Some(1),
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
