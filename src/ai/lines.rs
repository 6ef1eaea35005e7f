//! Splits a byte stream into lines across arbitrary feed boundaries, for server-sent events.
//!
//! Owns one carry buffer, holding the start of a line that a feed cut in two. Complete lines
//! inside a feed are handed out in place, never copied. A line longer than the limit is dropped
//! whole, however it arrived, and the splitter resynchronises at the next LF; so the lines seen
//! do not depend on where the feeds were cut. It never allocates per byte and never blocks.
//!
//! Lines end in LF or CRLF (the only endings the providers send); a bare CR is kept as data,
//! which differs from the SSE grammar but cannot split a line the providers meant as one.

use memchr::memchr;

/// Cuts fed bytes into lines no longer than a limit.
#[derive(Debug)]
pub(super) struct LineSplitter {
    /// Bytes of the current line that arrived in earlier feeds, without its terminator.
    carry: Vec<u8>,
    /// The current line already exceeded the limit: drop bytes up to the next LF.
    skipping: bool,
    /// The most bytes a line may hold before its LF (a CR before the LF counts).
    limit: usize,
}

impl LineSplitter {
    /// A splitter at the start of a line, dropping lines longer than `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        LineSplitter {
            carry: Vec::new(),
            skipping: false,
            limit,
        }
    }

    /// Hands each line completed by `data` to `on_line`, without its LF or CRLF.
    pub(super) fn feed(&mut self, data: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = data;
        while let Some(end) = memchr(b'\n', rest) {
            let piece = &rest[..end];
            rest = &rest[end + 1..];

            if self.skipping {
                self.skipping = false;
            } else if self.carry.is_empty() {
                if piece.len() <= self.limit {
                    on_line(strip_cr(piece));
                }
            } else if self.carry.len() + piece.len() <= self.limit {
                self.carry.extend_from_slice(piece);
                on_line(strip_cr(&self.carry));
            }
            self.carry.clear();
        }

        // Keep the unfinished tail, unless it already makes the line too long.
        if self.skipping {
            return;
        }
        if self.carry.len() + rest.len() > self.limit {
            self.skipping = true;
            self.carry = Vec::new();
        } else {
            self.carry.extend_from_slice(rest);
        }
    }

    /// Ends the stream: a last line without a terminator is complete, so it is handed out.
    pub(super) fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.skipping && !self.carry.is_empty() {
            on_line(strip_cr(&self.carry));
        }
        self.carry = Vec::new();
        self.skipping = false;
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in the given pieces, then finishes; returns every line seen.
    fn lines_of(pieces: &[&[u8]], limit: usize) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::new(limit);
        let mut seen = Vec::new();
        for piece in pieces {
            splitter.feed(piece, |line| seen.push(line.to_vec()));
        }
        splitter.finish(|line| seen.push(line.to_vec()));
        seen
    }

    /// Input, line limit, and the lines it must yield.
    type Case = (&'static [u8], usize, &'static [&'static [u8]]);

    #[test]
    fn lines_are_the_same_at_every_split() {
        let table: &[Case] = &[
            (b"", 16, &[]),
            (b"a\nbb\n", 16, &[b"a", b"bb"]),
            (b"a\r\nbb\r\n", 16, &[b"a", b"bb"]),
            (b"a\n\nb", 16, &[b"a", b"", b"b"]),
            (b"\r\n\r\n", 16, &[b"", b""]),
            (b"x\ry\n", 16, &[b"x\ry"]),
            // Exactly at the limit is kept; one byte over is dropped, the CR counting.
            (b"abcd\nabcde\nok\n", 4, &[b"abcd", b"ok"]),
            (b"abc\r\nabcd\r\nok\r\n", 4, &[b"abc", b"ok"]),
            (b"toolongline\nok\ntoolongagain", 4, &[b"ok"]),
            (b"a\nb\n", 0, &[]),
            (b"\n\n", 0, &[b"", b""]),
        ];
        for &(input, limit, want) in table {
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                let got = lines_of(&[head, tail], limit);
                assert_eq!(got, want, "input {input:?} split at {split}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                lines_of(&bytes, limit),
                want,
                "input {input:?} byte by byte"
            );
        }
    }

    #[test]
    fn carry_never_exceeds_the_limit() {
        let mut splitter = LineSplitter::new(8);
        for _ in 0..1000 {
            splitter.feed(b"0123456789", |_| panic!("no line ends here"));
            assert!(splitter.carry.len() <= 8);
        }
        let mut seen = Vec::new();
        splitter.feed(b"\nnext\n", |line| seen.push(line.to_vec()));
        assert_eq!(seen, vec![b"next".to_vec()]);
    }
}
