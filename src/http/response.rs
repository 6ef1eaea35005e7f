//! Response heads from upstreams (RFC 9112 §4), parsed in place and framed per §6.3.

use std::ops::Range;

use bytes::BytesMut;

use super::fields::{self, Field};
use super::{head_length, version_of, Framing, ParseError, Version, MAX_HEADERS};

/// A parsed response head. Spans point into the buffer it was parsed from, which the caller
/// must not change until it is done with the head (see [`ResponseHead::parse`]).
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    reason: Range<u32>,
    /// The protocol version of the status line.
    pub version: Version,
    /// The header fields in the order received.
    pub fields: Vec<Field>,
    /// How the response body is framed, given the request method.
    pub framing: Framing,
    /// Whether the upstream connection may carry another exchange after this one.
    pub keep_alive: bool,
    /// The length of the head in the buffer it was parsed from.
    pub head_len: usize,
}

impl ResponseHead {
    /// Parses a response head at the start of `buf`, answering a request whose method was HEAD
    /// when `head_request` is set. Returns `Ok(None)` when more bytes are needed. The head is
    /// not removed from `buf`: field spans stay valid until the caller advances past
    /// `head_len`. `fields` is reused storage, taken by the head on success.
    pub fn parse(
        buf: &BytesMut,
        head_request: bool,
        max_head_bytes: usize,
        fields: &mut Vec<Field>,
    ) -> Result<Option<ResponseHead>, ParseError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let Some(head_len) = head_length(response.parse(buf), buf.len(), max_head_bytes)? else {
            return Ok(None);
        };

        let base: &[u8] = buf;
        let facts = fields::collect(base, response.headers, fields)?;
        let status = response.code.unwrap_or_default();
        let version = version_of(response.version);
        let reason = fields::span(base, response.reason.unwrap_or_default().as_bytes());

        // RFC 9112 §6.3: the order of these rules matters.
        let framing =
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                Framing::Empty
            } else if facts.transfer_encoding {
                // Rule 3: a Transfer-Encoding whose final coding is not chunked reads to close.
                if facts.content_length.is_some() && facts.chunked {
                    return Err(ParseError::AmbiguousLength);
                }
                if facts.chunked {
                    Framing::Chunked
                } else if facts.chunked_last {
                    // A coding under chunked (`gzip, chunked`) would have to reach the client
                    // as it is; the gateway relays only plain chunked, and refuses the rest
                    // rather than pass the body on with its framing mangled.
                    return Err(ParseError::UnsupportedTransferEncoding);
                } else {
                    Framing::CloseDelimited
                }
            } else {
                match facts.content_length {
                    Some(length) => Framing::Length(length),
                    None => Framing::CloseDelimited,
                }
            };
        let keep_alive = framing != Framing::CloseDelimited
            && match version {
                Version::Http11 => !facts.connection_close,
                Version::Http10 => facts.connection_keep_alive && !facts.connection_close,
            };

        Ok(Some(ResponseHead {
            status,
            reason,
            version,
            fields: std::mem::take(fields),
            framing,
            keep_alive,
            head_len,
        }))
    }

    /// The reason phrase, from `buf`, the buffer the head was parsed from.
    pub fn reason<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.reason.start as usize..self.reason.end as usize]
    }

    /// Whether this is an interim (1xx) response, to be followed by the final one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8], head_request: bool) -> Result<Option<ResponseHead>, ParseError> {
        ResponseHead::parse(&BytesMut::from(input), head_request, 8192, &mut Vec::new())
    }

    #[test]
    fn framing_table() {
        let table: &[(&[u8], bool, Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::CloseDelimited,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                Framing::CloseDelimited,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                true,
            ),
        ];
        for (input, head_request, framing, keep_alive) in table {
            let head = parse(input, *head_request).unwrap().unwrap();
            let name = String::from_utf8_lossy(input);
            assert_eq!(head.framing, *framing, "{name:?}");
            assert_eq!(head.keep_alive, *keep_alive, "{name:?}");
            assert_eq!(head.head_len, input.len());
        }
    }

    #[test]
    fn errors_table() {
        let table: &[(&[u8], ParseError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::AmbiguousLength,
            ),
            (
                b"HTTP/1.1 2x0 OK\r\n\r\n",
                ParseError::Malformed("invalid status line"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
        ];
        for (input, expected) in table {
            let got = parse(input, false).map(|h| h.map(|h| h.status));
            assert_eq!(
                got,
                Err(expected.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partial_heads_need_more() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(parse(&full[..cut], false), Ok(None)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn reason_is_kept() {
        let buf =
            BytesMut::from(&b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"[..]);
        let head = ResponseHead::parse(&buf, false, 8192, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.reason(&buf), b"Too Many Requests");
    }
}
