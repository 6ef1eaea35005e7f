//! The few JSON writing primitives the mock's replies need, appended to a reusable `Vec<u8>`.
//!
//! Replies are written by hand rather than through `serde_json::to_writer` on a value tree, so
//! that building one allocates nothing once the buffer has grown. Strings are escaped per
//! RFC 8259 §7; bytes that are not UTF-8 are written as U+FFFD.

/// Appends `text` as a JSON string literal, quotes included.
pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escaped(out, text);
    out.push(b'"');
}

/// Appends `text` escaped for the inside of a JSON string literal, without quotes.
pub fn escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..at]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = at + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// Appends bytes received from the network as a JSON string literal, replacing invalid UTF-8.
pub fn lossy_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for piece in bytes.utf8_chunks() {
        escaped(out, piece.valid());
        if !piece.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends an unsigned integer.
pub fn number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_serde() {
        let table = [
            "",
            "plain",
            "quote \" and backslash \\",
            "lines\nand\r\ttabs",
            "control \u{1} \u{1f} end",
            "unicode é 你好 🦀",
        ];
        for text in table {
            let mut out = Vec::new();
            string(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text, "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn control_characters_use_unicode_escapes() {
        let mut out = Vec::new();
        string(&mut out, "a\u{1}b");
        assert_eq!(out, b"\"a\\u0001b\"");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut out = Vec::new();
        lossy_string(&mut out, b"ok\xff\"x");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "ok\u{fffd}\"x");
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        number(&mut out, 0);
        out.push(b',');
        number(&mut out, u64::MAX);
        assert_eq!(out, b"0,18446744073709551615");
    }
}
