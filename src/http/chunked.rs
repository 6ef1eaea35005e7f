//! The chunked transfer coding (RFC 9112 §7.1), decoded as a byte-at-a-time state machine for
//! framing and in bulk for data. It never copies: it reports which input bytes are data.
//!
//! Strict on purpose: chunk-size and every line must end in CRLF (a bare LF is an error, as a
//! lenient peer may frame it differently), sizes may not overflow, and extension and trailer
//! bytes are bounded.

use std::ops::Range;

/// The most bytes of chunk extensions accepted on one size line.
const MAX_EXTENSION_BYTES: u32 = 4096;
/// The most bytes of trailer section accepted after the last chunk.
const MAX_TRAILER_BYTES: u32 = 16 * 1024;

/// A broken chunked body. The stream cannot be resynchronised after one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size is missing, not hexadecimal or too large.
    #[error("invalid chunk size")]
    BadSize,
    /// A line did not end in CRLF.
    #[error("chunk line not terminated by CRLF")]
    BadLineEnding,
    /// Chunk data was not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingDataEnd,
    /// Chunk extensions or trailers exceed their bounds or hold control characters.
    #[error("chunk extension or trailer too large or malformed")]
    BadExtension,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkStep {
    /// Input bytes used, framing and data; the caller resumes after them.
    pub consumed: usize,
    /// The data bytes among them (possibly empty), as a range of the input.
    pub data: Range<usize>,
    /// The last chunk and the trailer section have been read: the body is complete.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeStart,
    Size,
    Extension { seen: u32 },
    SizeLf,
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerLineStart { seen: u32 },
    TrailerLine { seen: u32 },
    TrailerLineLf { seen: u32 },
    EndLf,
    Done,
}

/// Decodes a chunked body incrementally across any split of its bytes.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size of the chunk whose size line is being read.
    size: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
        }
    }

    /// Whether the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads framing from `input` up to the next run of data, and that run. Call again with the
    /// bytes after `consumed` until `done`, or until the input is used up.
    pub fn decode(&mut self, input: &[u8]) -> Result<ChunkStep, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            if let State::Data { remaining } = self.state {
                let take = remaining.min((input.len() - pos) as u64);
                self.state = match remaining - take {
                    0 => State::DataCr,
                    left => State::Data { remaining: left },
                };
                let end = pos + take as usize;
                return Ok(ChunkStep {
                    consumed: end,
                    data: pos..end,
                    done: false,
                });
            }
            self.state = self.step(input[pos])?;
            pos += 1;
            if self.state == State::Done {
                break;
            }
        }
        Ok(ChunkStep {
            consumed: pos,
            data: pos..pos,
            done: self.state == State::Done,
        })
    }

    /// Advances the framing state by one byte.
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        let next = match self.state {
            State::SizeStart => {
                self.size = u64::from(hex(byte).ok_or(ChunkError::BadSize)?);
                State::Size
            }
            State::Size => match (hex(byte), byte) {
                (Some(_), _) if self.size >> 60 != 0 => return Err(ChunkError::BadSize),
                (Some(digit), _) => {
                    self.size = self.size << 4 | u64::from(digit);
                    State::Size
                }
                (None, b';' | b' ' | b'\t') => State::Extension { seen: 1 },
                (None, b'\r') => State::SizeLf,
                (None, b'\n') => return Err(ChunkError::BadLineEnding),
                (None, _) => return Err(ChunkError::BadSize),
            },
            State::Extension { seen } => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(ChunkError::BadLineEnding),
                _ if seen >= MAX_EXTENSION_BYTES || !is_text(byte) => {
                    return Err(ChunkError::BadExtension)
                }
                _ => State::Extension { seen: seen + 1 },
            },
            State::SizeLf if byte != b'\n' => return Err(ChunkError::BadLineEnding),
            State::SizeLf if self.size == 0 => State::TrailerLineStart { seen: 0 },
            State::SizeLf => State::Data {
                remaining: self.size,
            },
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::SizeStart,
            State::DataCr | State::DataLf => return Err(ChunkError::MissingDataEnd),
            State::TrailerLineStart { .. } if byte == b'\r' => State::EndLf,
            State::TrailerLineStart { seen } | State::TrailerLine { seen } => match byte {
                b'\r' => State::TrailerLineLf { seen },
                b'\n' => return Err(ChunkError::BadLineEnding),
                _ if seen >= MAX_TRAILER_BYTES || !is_text(byte) => {
                    return Err(ChunkError::BadExtension)
                }
                _ => State::TrailerLine { seen: seen + 1 },
            },
            State::TrailerLineLf { seen } if byte == b'\n' => State::TrailerLineStart { seen },
            State::EndLf if byte == b'\n' => State::Done,
            State::TrailerLineLf { .. } | State::EndLf => return Err(ChunkError::BadLineEnding),
            // `decode` handles data in bulk and stops at Done; neither reaches here.
            State::Data { .. } | State::Done => self.state,
        };
        Ok(next)
    }
}

/// Visible characters, space, tab and obs-text: what a chunk extension or trailer may hold.
fn is_text(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the data and whether it ended.
    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece.max(1)) {
            let mut pos = 0;
            while pos < part.len() && !decoder.is_done() {
                let step = decoder.decode(&part[pos..])?;
                data.extend_from_slice(&part[pos..][step.data.clone()]);
                pos += step.consumed;
            }
            used += pos;
            if decoder.is_done() {
                break;
            }
        }
        Ok((data, decoder.is_done(), used))
    }

    #[test]
    fn valid_bodies_in_every_split() {
        let table: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\n\r\n",
                b"hello world",
            ),
            (
                b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
                b"0123456789",
            ),
            (b"00000003\r\nabc\r\n0\r\n\r\n", b"abc"),
        ];
        for (input, expected) in table {
            for piece in 1..=input.len() {
                let (data, done, used) = decode_in_pieces(input, piece).unwrap();
                assert_eq!(
                    &data,
                    expected,
                    "{:?} piece {piece}",
                    String::from_utf8_lossy(input)
                );
                assert!(done);
                assert_eq!(used, input.len());
            }
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (data, done, used) = decode_in_pieces(input, input.len()).unwrap();
        assert_eq!((data.as_slice(), done, used), (&b"a"[..], true, 11));
    }

    #[test]
    fn invalid_bodies() {
        let table: &[(&[u8], ChunkError)] = &[
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadLineEnding),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"0\r\n\n", ChunkError::BadLineEnding),
            (b"0\r\nX: 1\n\r\n", ChunkError::BadLineEnding),
            (b"g\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"-1\r\n", ChunkError::BadSize),
            (b"0x5\r\n", ChunkError::BadSize),
            (b"10000000000000000\r\n", ChunkError::BadSize),
            (b"5;a\x00b\r\n", ChunkError::BadExtension),
            (b"5;a\nb\r\n", ChunkError::BadLineEnding),
            (b"5\r\r\n", ChunkError::BadLineEnding),
        ];
        for (input, expected) in table {
            for piece in 1..=input.len() {
                let got = decode_in_pieces(input, piece).map(|_| ());
                assert_eq!(
                    got,
                    Err(*expected),
                    "{:?} piece {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn largest_size_is_accepted_and_one_more_digit_is_not() {
        let mut decoder = ChunkedDecoder::new();
        assert!(decoder.decode(b"fffffffffffffff\r\n").is_ok());
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(b"10000000000000000\r\n"),
            Err(ChunkError::BadSize)
        );
    }

    #[test]
    fn extension_bound() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_EXTENSION_BYTES as usize));
        assert_eq!(
            ChunkedDecoder::new().decode(&input).map(|_| ()),
            Err(ChunkError::BadExtension)
        );
    }
}
