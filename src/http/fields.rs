//! Header fields as spans of the head buffer, and the framing facts read from them.

use std::ops::Range;

use super::ParseError;

/// What a field's name makes of it. Fields a proxy must not forward (RFC 9110 §7.6.1, besides
/// those named in `Connection`) are hop-by-hop; so are `Content-Length` and
/// `Transfer-Encoding`, because the encoder writes the framing it decided itself, and `Expect`,
/// which the gateway answers. Credentials are the fields in which clients present their client
/// key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    Expect,
    /// Another hop-by-hop field.
    HopByHop,
    /// `Authorization`, `x-api-key`, `api-key` or `x-goog-api-key`.
    Credential,
    Other,
}

impl Name {
    /// Classifies a field name, case-insensitively: one comparison or two, chosen by length,
    /// since every head's fields are classified on the request path.
    fn of(name: &[u8]) -> Name {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Name::HopByHop,
            4 if is(b"host") => Name::Host,
            6 if is(b"expect") => Name::Expect,
            7 if is(b"upgrade") || is(b"trailer") => Name::HopByHop,
            7 if is(b"api-key") => Name::Credential,
            9 if is(b"x-api-key") => Name::Credential,
            10 if is(b"connection") => Name::Connection,
            10 if is(b"keep-alive") => Name::HopByHop,
            13 if is(b"authorization") => Name::Credential,
            14 if is(b"content-length") => Name::ContentLength,
            14 if is(b"x-goog-api-key") => Name::Credential,
            16 if is(b"proxy-connection") => Name::HopByHop,
            17 if is(b"transfer-encoding") => Name::TransferEncoding,
            18 if is(b"proxy-authenticate") => Name::HopByHop,
            19 if is(b"proxy-authorization") => Name::HopByHop,
            _ => Name::Other,
        }
    }
}

/// One header field: where its name and value sit in the head's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name's bytes, case kept as received.
    pub name: Range<u32>,
    /// The value's bytes, without surrounding whitespace.
    pub value: Range<u32>,
    /// What the proxy must do with this field.
    pub flags: FieldFlags,
}

/// Facts about a field that decide whether and how it is forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldFlags(u8);

impl FieldFlags {
    /// Not forwarded to the next hop.
    pub const HOP_BY_HOP: FieldFlags = FieldFlags(1);
    /// The `Host` field (replaced by the upstream's authority).
    pub const HOST: FieldFlags = FieldFlags(2);
    /// A field that may carry a client key (`Authorization`, `x-api-key`, `api-key`): removed
    /// before the request goes upstream when client keys are in use.
    pub const CREDENTIAL: FieldFlags = FieldFlags(4);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: FieldFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: FieldFlags) {
        self.0 |= other.0;
    }
}

/// What the framing-related fields of a head say, checked for ambiguity.
#[derive(Debug, Default)]
pub(super) struct FieldFacts {
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
    pub chunked: bool,
    pub chunked_last: bool,
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub connection_options: bool,
    pub host_count: u32,
    pub expect_continue: bool,
    pub expect_other: bool,
}

/// Turns httparse's fields into spans of `base` and collects the facts the framing rules need.
pub(super) fn collect(
    base: &[u8],
    headers: &[httparse::Header<'_>],
    fields: &mut Vec<Field>,
) -> Result<FieldFacts, ParseError> {
    let mut facts = FieldFacts::default();
    fields.clear();

    for header in headers {
        let name = header.name.as_bytes();
        let value = trim(header.value);
        let mut flags = FieldFlags::default();

        match Name::of(name) {
            Name::ContentLength => {
                flags.insert(FieldFlags::HOP_BY_HOP);
                let length = parse_content_length(value)?;
                // Repeated identical values may be merged; differing ones are fatal (§6.3
                // rule 5).
                if facts.content_length.is_some_and(|seen| seen != length) {
                    return Err(ParseError::BadContentLength);
                }
                facts.content_length = Some(length);
            }
            Name::TransferEncoding => {
                flags.insert(FieldFlags::HOP_BY_HOP);
                if facts.transfer_encoding {
                    // Several Transfer-Encoding lines form one list; only a lone `chunked` is
                    // accepted, so a second line always names a second coding.
                    return Err(ParseError::UnsupportedTransferEncoding);
                }
                facts.transfer_encoding = true;
                facts.chunked = value.eq_ignore_ascii_case(b"chunked");
                let last = value.rsplit(|&b| b == b',').next().map_or(value, trim);
                facts.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
            Name::Connection => {
                flags.insert(FieldFlags::HOP_BY_HOP);
                for token in value.split(|&b| b == b',').map(trim) {
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    let close = token.eq_ignore_ascii_case(b"close");
                    facts.connection_close |= close;
                    facts.connection_keep_alive |= keep_alive;
                    facts.connection_options |= !close && !keep_alive && !token.is_empty();
                }
            }
            Name::Host => {
                if !value.iter().all(|&b| is_host_byte(b)) {
                    return Err(ParseError::BadHost);
                }
                facts.host_count += 1;
                flags.insert(FieldFlags::HOST);
            }
            Name::Expect => {
                flags.insert(FieldFlags::HOP_BY_HOP);
                if value.eq_ignore_ascii_case(b"100-continue") {
                    facts.expect_continue = true;
                } else {
                    facts.expect_other = true;
                }
            }
            Name::HopByHop => flags.insert(FieldFlags::HOP_BY_HOP),
            Name::Credential => flags.insert(FieldFlags::CREDENTIAL),
            Name::Other => {}
        }
        fields.push(Field {
            name: span(base, name),
            value: span(base, value),
            flags,
        });
    }

    if facts.connection_options {
        mark_connection_options(base, fields);
    }
    Ok(facts)
}

/// Marks every field named in a `Connection` field as hop-by-hop (RFC 9110 §7.6.1).
fn mark_connection_options(base: &[u8], fields: &mut [Field]) {
    let named = |name: &[u8]| {
        fields.iter().any(|field| {
            let field_name = &base[field.name.start as usize..field.name.end as usize];
            field_name.eq_ignore_ascii_case(b"connection")
                && base[field.value.start as usize..field.value.end as usize]
                    .split(|&b| b == b',')
                    .any(|token| trim(token).eq_ignore_ascii_case(name))
        })
    };
    let mut hop = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let name = &base[field.name.start as usize..field.name.end as usize];
        if !field.flags.contains(FieldFlags::HOP_BY_HOP) && named(name) {
            hop.push(index);
        }
    }
    for index in hop {
        fields[index].flags.insert(FieldFlags::HOP_BY_HOP);
    }
}

/// Bytes a Host value may hold: an IP literal, IPv4 address or registered name (RFC 3986
/// §3.2.2, percent-encoding included) and a port (RFC 9112 §3.2).
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&byte)
}

/// Content-Length is 1*DIGIT (RFC 9110 §8.6); a list of equal values is accepted.
fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    let mut result = None;
    for item in value.split(|&b| b == b',').map(trim) {
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadContentLength);
        }
        let length = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|seen| seen != length) {
            return Err(ParseError::BadContentLength);
        }
        result = Some(length);
    }
    result.ok_or(ParseError::BadContentLength)
}

/// Strips optional whitespace (SP and HTAB) from both ends of a field value.
pub fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The position of `part`, a subslice of `base`, as a range of offsets.
pub(super) fn span(base: &[u8], part: &[u8]) -> Range<u32> {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    // Heads are bounded far below 4 GiB by the configured limit.
    let start = start.min(base.len()) as u32;
    start..start + part.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        let table: &[(&[u8], Result<u64, ParseError>)] = &[
            (b"0", Ok(0)),
            (b"42", Ok(42)),
            (b"42, 42", Ok(42)),
            (b"42,43", Err(ParseError::BadContentLength)),
            (b"+42", Err(ParseError::BadContentLength)),
            (b"-1", Err(ParseError::BadContentLength)),
            (b"4 2", Err(ParseError::BadContentLength)),
            (b"0x10", Err(ParseError::BadContentLength)),
            (b"", Err(ParseError::BadContentLength)),
            (b"99999999999999999999", Err(ParseError::BadContentLength)),
        ];
        for (input, expected) in table {
            assert_eq!(&parse_content_length(input), expected, "{:?}", input);
        }
    }

    #[test]
    fn names_are_classified_whatever_their_case() {
        let hop_by_hop = [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "TE",
            "Transfer-Encoding",
            "upgrade",
            "Trailer",
            "proxy-authenticate",
            "Proxy-Authorization",
            "Content-Length",
            "expect",
        ];
        for name in hop_by_hop {
            for spelled in [name.to_owned(), name.to_ascii_uppercase()] {
                let class = Name::of(spelled.as_bytes());
                assert!(
                    !matches!(class, Name::Other | Name::Credential | Name::Host),
                    "{spelled}: {class:?}"
                );
            }
        }
        for name in ["Authorization", "X-API-Key", "api-key", "x-goog-api-key"] {
            assert_eq!(Name::of(name.as_bytes()), Name::Credential, "{name}");
        }
        assert_eq!(Name::of(b"HOST"), Name::Host);
        for other in [
            "Content-Type",
            "x-api-keys",
            "api-ke",
            "hostt",
            "tee",
            "",
            "connectio",
        ] {
            assert_eq!(Name::of(other.as_bytes()), Name::Other, "{other}");
        }
    }

    #[test]
    fn flags_follow_the_names() {
        let head: &[u8] = concat!(
            "Host: a\r\nAuthorization: x\r\nUpgrade: h2c\r\n",
            "Content-Length: 0\r\nX-Other: y\r\n\r\n"
        )
        .as_bytes();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let status = httparse::parse_headers(head, &mut headers).unwrap();
        let httparse::Status::Complete((_, parsed)) = status else {
            panic!("incomplete");
        };
        let mut fields = Vec::new();
        let facts = collect(head, parsed, &mut fields).unwrap();
        let flags: Vec<FieldFlags> = fields.iter().map(|field| field.flags).collect();
        assert_eq!(
            flags,
            [
                FieldFlags::HOST,
                FieldFlags::CREDENTIAL,
                FieldFlags::HOP_BY_HOP,
                FieldFlags::HOP_BY_HOP,
                FieldFlags::default(),
            ]
        );
        assert_eq!((facts.content_length, facts.host_count), (Some(0), 1));
    }

    #[test]
    fn trim_strips_only_optional_whitespace() {
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
