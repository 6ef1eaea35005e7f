//! JSON string escaping for the access log (RFC 8259 section 7), written straight into the
//! caller's buffer: no allocation, one pass, and any bytes in, valid JSON out.

use bytes::BufMut;

/// What each byte of valid UTF-8 becomes inside a JSON string: 0 for itself, else the letter
/// of a short escape (`n` for `\n`), or `u` for a `\u00XX` escape.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    // DEL is legal in JSON, but escaping it keeps a log viewed in a terminal inert.
    table[0x7f] = b'u';
    table
};

/// The replacement character, written once for each invalid UTF-8 sequence.
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// Appends `bytes` as a quoted JSON string.
///
/// Quotes, backslashes, every control character (U+0000 to U+001F) and DEL are escaped; valid
/// UTF-8 is copied as it is; each maximal invalid UTF-8 sequence becomes one U+FFFD, as
/// `String::from_utf8_lossy` would make it, so the line stays valid JSON whatever a client
/// sent.
pub fn write_string<B: BufMut>(out: &mut B, bytes: &[u8]) {
    out.put_u8(b'"');
    for chunk in bytes.utf8_chunks() {
        write_valid(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.put_slice(REPLACEMENT);
        }
    }
    out.put_u8(b'"');
}

/// Escapes valid UTF-8. Bytes of multi-byte characters are all >= 0x80 and never escaped.
fn write_valid<B: BufMut>(out: &mut B, text: &[u8]) {
    let mut start = 0;
    for (at, &b) in text.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.put_slice(&text[start..at]);
        if escape == b'u' {
            out.put_slice(&unicode_escape(b));
        } else {
            out.put_slice(&[b'\\', escape]);
        }
        start = at + 1;
    }
    out.put_slice(&text[start..]);
}

/// `\u00XX` for a byte below 0x80.
fn unicode_escape(b: u8) -> [u8; 6] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [
        b'\\',
        b'u',
        b'0',
        b'0',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, bytes);
        String::from_utf8(out).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn every_control_character_is_escaped_and_reads_back() {
        let short = [
            (0x08, "\\b"),
            (0x09, "\\t"),
            (0x0a, "\\n"),
            (0x0c, "\\f"),
            (0x0d, "\\r"),
        ];
        for b in (0u8..0x20).chain([0x7f]) {
            let want = match short.iter().find(|(c, _)| *c == b) {
                Some((_, text)) => format!("\"{text}\""),
                None => format!("\"\\u{b:04x}\""),
            };
            let got = escaped(&[b]);
            assert_eq!(got, want, "byte {b:#04x}");
            let back: String = serde_json::from_str(&got).unwrap_or_default();
            assert_eq!(back.as_bytes(), [b], "byte {b:#04x}");
        }
    }

    #[test]
    fn quotes_backslashes_and_text_around_them() {
        let cases: &[(&[u8], &str)] = &[
            (b"", r#""""#),
            (b"/v1/chat", r#""/v1/chat""#),
            (br#"a"b"#, r#""a\"b""#),
            (br"a\b", r#""a\\b""#),
            (br#"\""#, r#""\\\"""#),
            (b"x\r\ny", r#""x\r\ny""#),
            (
                "/caf\u{e9}/\u{1f600}".as_bytes(),
                "\"/caf\u{e9}/\u{1f600}\"",
            ),
            (b"/\x1b[31mred", r#""/\u001b[31mred""#),
            ("\u{2028}".as_bytes(), "\"\u{2028}\""),
        ];
        for &(input, want) in cases {
            assert_eq!(escaped(input), want, "{input:?}");
        }
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let cases: &[(&[u8], &str)] = &[
            (b"/a\xffb", "\"/a\u{fffd}b\""),
            (b"\xc3", "\"\u{fffd}\""),
            (b"\xc3(", "\"\u{fffd}(\""),
            (b"\xed\xa0\x80", "\"\u{fffd}\u{fffd}\u{fffd}\""),
            (b"\xf0\x9f\x98", "\"\u{fffd}\""),
            (b"\x80\"\x80", "\"\u{fffd}\\\"\u{fffd}\""),
        ];
        for &(input, want) in cases {
            assert_eq!(escaped(input), want, "{input:?}");
            let lossy = String::from_utf8_lossy(input);
            let back: String = serde_json::from_str(want).unwrap_or_default();
            assert_eq!(back, lossy, "{input:?}");
        }
    }

    #[test]
    fn every_byte_pair_gives_valid_json_that_reads_back_lossily() {
        for a in 0..=255u8 {
            for b in [0u8, b'"', b'\\', b'a', 0x7f, 0x80, 0xbf, 0xc3, 0xff] {
                let input = [a, b];
                let got = escaped(&input);
                let back: Result<String, _> = serde_json::from_str(&got);
                assert_eq!(
                    back.ok().as_deref(),
                    Some(&*String::from_utf8_lossy(&input)),
                    "{input:?} -> {got}"
                );
            }
        }
    }
}
