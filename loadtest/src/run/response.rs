//! Responses read off a connection's input one after another, framed as RFC 9112 §6.3 says
//! (length, chunked, or until the close), their bodies skipped as they arrive: nothing is kept
//! but the status and whether the connection may carry another exchange.
//!
//! Sans-IO: bytes in, responses out. The reader consumes what it has used from the input and
//! keeps its place across reads, so a response may arrive in any number of pieces.

use std::fmt;

use bytes::{Buf, BytesMut};
use keygate::http::{ChunkError, ChunkedDecoder, Field, Framing, ParseError, ResponseHead};

/// The largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether the connection may carry another exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
}

/// Bytes that are not a response this reader can frame; the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// The head is not a valid response head.
    Head(ParseError),
    /// The chunked body is broken.
    Chunk(ChunkError),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Head(err) => err.fmt(f),
            Malformed::Chunk(err) => err.fmt(f),
        }
    }
}

/// What the end of a connection means for the response being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It came between responses.
    Between,
    /// It completes a response whose body is delimited by the close (RFC 9112 §6.3 rule 8).
    Completes(Response),
    /// It cut a response short.
    Cut,
}

/// Where the reader is in the current response.
#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a head.
    Head,
    /// Skipping a body.
    Body { response: Response, body: Body },
}

/// The part of a body still to skip.
#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Reads the responses on one connection, in order.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    /// Field storage reused from one head to the next.
    fields: Vec<Field>,
    /// Whether the requests are HEAD requests, whose responses have no body.
    head_requests: bool,
}

impl ResponseReader {
    /// A reader at the start of a connection.
    pub fn new(head_requests: bool) -> Self {
        ResponseReader {
            state: State::Head,
            fields: Vec::new(),
            head_requests,
        }
    }

    /// Starts over, for a new connection.
    pub fn reset(&mut self) {
        self.state = State::Head;
    }

    /// Reads from the start of `input` up to the end of the next response, removing what it
    /// used. Returns `Ok(None)` when `input` ran out first; all of it is used then but the
    /// start of a head, which stays to be parsed with the bytes that complete it.
    pub fn read(&mut self, input: &mut BytesMut) -> Result<Option<Response>, Malformed> {
        loop {
            match &mut self.state {
                State::Head => {
                    let parsed = ResponseHead::parse(
                        input,
                        self.head_requests,
                        MAX_HEAD_BYTES,
                        &mut self.fields,
                    )
                    .map_err(Malformed::Head)?;
                    let Some(head) = parsed else {
                        return Ok(None);
                    };
                    input.advance(head.head_len);
                    let response = Response {
                        status: head.status,
                        keep_alive: head.keep_alive,
                    };
                    let interim = head.is_interim();
                    let framing = head.framing;
                    self.fields = head.fields;
                    // An interim response is followed by the final one (RFC 9110 §15.2).
                    if interim {
                        continue;
                    }
                    let body = match framing {
                        Framing::Empty | Framing::Length(0) => return Ok(Some(response)),
                        Framing::Length(len) => Body::Length(len),
                        Framing::Chunked => Body::Chunked(ChunkedDecoder::new()),
                        Framing::CloseDelimited => Body::UntilClose,
                    };
                    self.state = State::Body { response, body };
                }
                State::Body { response, body } => {
                    let response = *response;
                    if !skip(body, input)? {
                        return Ok(None);
                    }
                    self.state = State::Head;
                    return Ok(Some(response));
                }
            }
        }
    }

    /// The connection ended, with `input` (what [`ResponseReader::read`] left) unread: says
    /// what that end means for the response in progress.
    pub fn finish(&mut self, input: &BytesMut) -> End {
        let state = std::mem::replace(&mut self.state, State::Head);
        match state {
            State::Head if input.is_empty() => End::Between,
            State::Body {
                response,
                body: Body::UntilClose,
            } => End::Completes(response),
            _ => End::Cut,
        }
    }
}

/// Skips body bytes from `input`; true when the body is complete.
fn skip(body: &mut Body, input: &mut BytesMut) -> Result<bool, Malformed> {
    match body {
        Body::Length(remaining) => {
            let take = (*remaining).min(input.len() as u64);
            input.advance(take as usize);
            *remaining -= take;
            Ok(*remaining == 0)
        }
        Body::Chunked(decoder) => {
            while !input.is_empty() && !decoder.is_done() {
                let step = decoder.decode(input).map_err(Malformed::Chunk)?;
                input.advance(step.consumed);
            }
            Ok(decoder.is_done())
        }
        Body::UntilClose => {
            input.clear();
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    const CHUNKED: &[u8] =
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    const CLOSE: &[u8] =
        b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

    /// Feeds `input` in pieces of `piece` bytes and collects every response.
    fn read_in_pieces(input: &[u8], piece: usize) -> Result<Vec<Response>, Malformed> {
        let mut reader = ResponseReader::new(false);
        let mut buf = BytesMut::new();
        let mut responses = Vec::new();
        for part in input.chunks(piece) {
            buf.extend_from_slice(part);
            while let Some(response) = reader.read(&mut buf)? {
                responses.push(response);
            }
        }
        assert!(buf.is_empty(), "input left unread");
        if let End::Completes(response) = reader.finish(&buf) {
            responses.push(response);
        }
        Ok(responses)
    }

    fn ok(status: u16, keep_alive: bool) -> Response {
        Response { status, keep_alive }
    }

    #[test]
    fn pipelined_responses_in_every_split() {
        let input = [LENGTH, CHUNKED, CLOSE].concat();
        let expected = [ok(200, true), ok(429, true), ok(503, false)];
        for piece in 1..=input.len() {
            assert_eq!(
                read_in_pieces(&input, piece).unwrap(),
                expected,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let input = [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], LENGTH].concat();
        assert_eq!(read_in_pieces(&input, 7).unwrap(), [ok(200, true)]);
    }

    #[test]
    fn a_close_delimited_body_ends_with_the_connection() {
        let input = b"HTTP/1.1 200 OK\r\n\r\nall of this is body";
        for piece in [1, 5, input.len()] {
            assert_eq!(read_in_pieces(input, piece).unwrap(), [ok(200, false)]);
        }
    }

    #[test]
    fn head_requests_have_no_body() {
        let mut reader = ResponseReader::new(true);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]);
        assert_eq!(reader.read(&mut buf), Ok(Some(ok(200, true))));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_cut_response_is_an_error_at_the_end() {
        for cut in [10, LENGTH.len() - 1] {
            let mut reader = ResponseReader::new(false);
            let mut buf = BytesMut::from(&LENGTH[..cut]);
            assert_eq!(reader.read(&mut buf), Ok(None));
            assert_eq!(reader.finish(&buf), End::Cut, "cut at {cut}");
        }
        let mut reader = ResponseReader::new(false);
        assert_eq!(reader.finish(&BytesMut::new()), End::Between);
    }

    #[test]
    fn malformed_responses() {
        let table: &[&[u8]] = &[
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ];
        for input in table {
            let result = read_in_pieces(input, input.len());
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn reset_forgets_a_response_in_progress() {
        let mut reader = ResponseReader::new(false);
        let mut buf = BytesMut::from(&LENGTH[..LENGTH.len() - 2]);
        assert_eq!(reader.read(&mut buf), Ok(None));
        reader.reset();
        let mut buf = BytesMut::from(CLOSE);
        assert_eq!(reader.read(&mut buf), Ok(Some(ok(503, false))));
    }
}
