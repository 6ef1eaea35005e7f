//! Head encoding: request and status lines, fields, and chunk-size lines, appended to a
//! reusable buffer. Field names are written as received, never re-cased.

use bytes::{BufMut, BytesMut};

/// Appends a message head to a buffer, one line at a time.
pub struct HeadWriter<'a> {
    out: &'a mut BytesMut,
}

impl<'a> HeadWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut BytesMut) -> Self {
        HeadWriter { out }
    }

    /// `METHOD TARGET HTTP/1.1`: the gateway always speaks HTTP/1.1 upstream.
    pub fn request_line(&mut self, method: &[u8], target: &[u8]) {
        let target: &[u8] = if target.is_empty() { b"/" } else { target };
        self.out.reserve(method.len() + target.len() + 12);
        self.out.put_slice(method);
        self.out.put_u8(b' ');
        self.out.put_slice(target);
        self.out.put_slice(b" HTTP/1.1\r\n");
    }

    /// `HTTP/1.1 STATUS REASON`.
    pub fn status_line(&mut self, status: u16, reason: &[u8]) {
        self.out.put_slice(b"HTTP/1.1 ");
        let mut digits = itoa::Buffer::new();
        self.out.put_slice(digits.format(status).as_bytes());
        self.out.put_u8(b' ');
        self.out.put_slice(reason);
        self.out.put_slice(b"\r\n");
    }

    /// `Name: value`.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.out.reserve(name.len() + value.len() + 4);
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
    }

    /// `Name: value, item`: a list field with one more member appended (RFC 9110 §5.6.1).
    pub fn field_list(&mut self, name: &[u8], value: &[u8], item: &[u8]) {
        if value.is_empty() {
            return self.field(name, item);
        }
        self.out.reserve(name.len() + value.len() + item.len() + 6);
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b", ");
        self.out.put_slice(item);
        self.out.put_slice(b"\r\n");
    }

    /// `Name: number`, without formatting through a string.
    pub fn field_u64(&mut self, name: &[u8], value: u64) {
        let mut digits = itoa::Buffer::new();
        self.field(name, digits.format(value).as_bytes());
    }

    /// Field lines encoded ahead of time, each `Name: value` and CRLF, appended as they are.
    pub fn encoded_fields(&mut self, lines: &[u8]) {
        self.out.put_slice(lines);
    }

    /// The empty line that ends the head.
    pub fn finish(self) {
        self.out.put_slice(b"\r\n");
    }
}

/// Appends the size line of a chunk of `len` bytes (`len` in hex, then CRLF).
pub fn chunk_header(out: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = HEX[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_lines() {
        let mut out = BytesMut::new();
        let mut head = HeadWriter::new(&mut out);
        head.request_line(b"POST", b"/v1/chat");
        head.field(b"X-Case-Kept", b"1");
        head.field_u64(b"Content-Length", 42);
        head.field_list(b"Via", b"1.0 a", b"1.1 keygate");
        head.field_list(b"X-Empty", b"", b"x");
        head.encoded_fields(b"");
        head.encoded_fields(b"A: 1\r\nB: 2\r\n");
        head.finish();
        assert_eq!(
            &out[..],
            &b"POST /v1/chat HTTP/1.1\r\nX-Case-Kept: 1\r\nContent-Length: 42\r\n\
               Via: 1.0 a, 1.1 keygate\r\nX-Empty: x\r\nA: 1\r\nB: 2\r\n\r\n"[..]
        );
    }

    #[test]
    fn empty_target_becomes_root() {
        let mut out = BytesMut::new();
        HeadWriter::new(&mut out).request_line(b"GET", b"");
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn status_line() {
        let mut out = BytesMut::new();
        HeadWriter::new(&mut out).status_line(429, b"Too Many Requests");
        assert_eq!(&out[..], b"HTTP/1.1 429 Too Many Requests\r\n");
    }

    #[test]
    fn chunk_headers() {
        for (len, expected) in [
            (0usize, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = BytesMut::new();
            chunk_header(&mut out, len);
            assert_eq!(&out[..], expected.as_bytes());
        }
    }
}
