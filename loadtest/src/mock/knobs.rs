//! Per-request behaviour: the command line's defaults, overridden by `x-mock-*` request headers,
//! read in one pass over the head's fields together with the `Authorization` value to echo.
//!
//! | header | value | effect |
//! | --- | --- | --- |
//! | `x-mock-latency-ms` | ms | delay before the response head |
//! | `x-mock-token-delay-ms` | ms | delay between streamed events |
//! | `x-mock-tokens` | count | completion tokens (still capped by `max_tokens`) |
//! | `x-mock-status` | 400-599 | answer that status with an OpenAI error (200: no change) |
//! | `x-mock-retry-after` | any | `retry-after` of a 429, copied verbatim (default 1) |
//! | `x-mock-header` | `Name: value` | add that response field verbatim (repeatable) |
//! | `x-mock-close` | `1` | `Connection: close`, then close |
//! | `x-mock-chunked` | `1` | frame a whole body as chunked |
//! | `x-mock-no-length` | `1` | body delimited by closing the connection |

use std::time::Duration;

use keygate::http::RequestHead;

/// Behaviour that applies when a request does not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Delay before each response head.
    pub latency: Duration,
    /// Delay between the events of a streamed reply.
    pub token_delay: Duration,
    /// Completion tokens per reply.
    pub tokens: u32,
}

/// How one request is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs<'a> {
    /// Delay before the response head.
    pub latency: Duration,
    /// Delay between streamed events.
    pub token_delay: Duration,
    /// Completion tokens wanted.
    pub tokens: u32,
    /// An error status to answer instead of the endpoint's reply.
    pub status: Option<u16>,
    /// The `retry-after` value of a 429, verbatim; without it the mock picks one.
    pub retry_after: Option<&'a [u8]>,
    /// Whether the request has `x-mock-header` fields, all valid (see [`mock_headers`]).
    pub extra_fields: bool,
    /// Close the connection after the response.
    pub close: bool,
    /// Frame a whole body as chunked.
    pub chunked: bool,
    /// Delimit the body by closing the connection.
    pub no_length: bool,
    /// The `Authorization` value received, echoed back in `x-mock-saw-authorization`.
    pub authorization: Option<&'a [u8]>,
}

/// A knob header whose value could not be used; names the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKnob(pub &'static str);

impl<'a> Knobs<'a> {
    /// The knobs of a request without `x-mock-*` headers or `Authorization`.
    pub fn new(defaults: &Defaults) -> Knobs<'a> {
        Knobs {
            latency: defaults.latency,
            token_delay: defaults.token_delay,
            tokens: defaults.tokens,
            status: None,
            retry_after: None,
            extra_fields: false,
            close: false,
            chunked: false,
            no_length: false,
            authorization: None,
        }
    }

    /// Reads the knobs of `head`, starting from `defaults`.
    pub fn read(head: &'a RequestHead, defaults: &Defaults) -> Result<Knobs<'a>, BadKnob> {
        let mut knobs = Knobs::new(defaults);
        for field in &head.fields {
            let name = head.name(field);
            let value = head.value(field);
            if name.eq_ignore_ascii_case(b"authorization") {
                knobs.authorization.get_or_insert(value);
                continue;
            }
            let Some(knob) = strip_prefix_ignore_case(name, b"x-mock-") else {
                continue;
            };
            knobs.set(knob, value)?;
        }
        Ok(knobs)
    }

    /// Applies one `x-mock-` header; unknown names are ignored, as any other header is.
    fn set(&mut self, knob: &[u8], value: &'a [u8]) -> Result<(), BadKnob> {
        let is = |name: &str| knob.eq_ignore_ascii_case(name.as_bytes());
        if is("latency-ms") {
            self.latency =
                Duration::from_millis(number(value).ok_or(BadKnob("x-mock-latency-ms"))?);
        } else if is("token-delay-ms") {
            let ms = number(value).ok_or(BadKnob("x-mock-token-delay-ms"))?;
            self.token_delay = Duration::from_millis(ms);
        } else if is("tokens") {
            let tokens = number(value).and_then(|n| u32::try_from(n).ok());
            self.tokens = tokens.ok_or(BadKnob("x-mock-tokens"))?;
        } else if is("status") {
            self.status = match number(value) {
                Some(200) => None,
                Some(status @ 400..=599) => Some(status as u16),
                _ => return Err(BadKnob("x-mock-status")),
            };
        } else if is("retry-after") {
            let valid = !value.is_empty() && field_value(value);
            self.retry_after = Some(value).filter(|_| valid);
            self.retry_after.ok_or(BadKnob("x-mock-retry-after"))?;
        } else if is("header") {
            split_mock_header(value).ok_or(BadKnob("x-mock-header"))?;
            self.extra_fields = true;
        } else if is("close") {
            self.close = flag(value).ok_or(BadKnob("x-mock-close"))?;
        } else if is("chunked") {
            self.chunked = flag(value).ok_or(BadKnob("x-mock-chunked"))?;
        } else if is("no-length") {
            self.no_length = flag(value).ok_or(BadKnob("x-mock-no-length"))?;
        }
        Ok(())
    }
}

/// The response fields the `x-mock-header` fields of `head` ask for, as `(name, value)`, in
/// order; invalid ones are skipped ([`Knobs::read`] refuses a request that has one).
pub fn mock_headers(head: &RequestHead) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.fields
        .iter()
        .filter(|field| head.name(field).eq_ignore_ascii_case(b"x-mock-header"))
        .filter_map(|field| split_mock_header(head.value(field)))
}

/// Splits `Name: value`. The name must be a token (RFC 9110 §5.1) other than the fields that
/// frame the message, which the mock must write itself; the value may hold no CR, LF or NUL
/// (RFC 9110 §5.5).
fn split_mock_header(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = text.iter().position(|&byte| byte == b':')?;
    let (name, value) = (&text[..colon], text[colon + 1..].trim_ascii());
    let framing = [&b"content-length"[..], b"transfer-encoding", b"connection"];
    let valid = !name.is_empty()
        && name.iter().all(|&byte| is_token_byte(byte))
        && !framing.iter().any(|known| name.eq_ignore_ascii_case(known))
        && field_value(value);
    valid.then_some((name, value))
}

/// A byte allowed in a field name (`tchar`, RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `value` may be sent as a field value: no CR, LF or NUL, nor other controls but tab.
fn field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

fn strip_prefix_ignore_case<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = name.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// A decimal number of at most 18 digits (so it cannot overflow).
fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `1`/`true` or `0`/`false`.
fn flag(value: &[u8]) -> Option<bool> {
    match value {
        b"1" => Some(true),
        b"0" => Some(false),
        _ if value.eq_ignore_ascii_case(b"true") => Some(true),
        _ if value.eq_ignore_ascii_case(b"false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    const DEFAULTS: Defaults = Defaults {
        latency: Duration::from_millis(5),
        token_delay: Duration::ZERO,
        tokens: 16,
    };

    fn head(fields: &str) -> RequestHead {
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        RequestHead::parse(&mut BytesMut::from(text.as_bytes()), 8192, &mut Vec::new())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn defaults_without_headers() {
        let head = head("");
        let knobs = Knobs::read(&head, &DEFAULTS).unwrap();
        assert_eq!(knobs.latency, DEFAULTS.latency);
        assert_eq!(knobs.tokens, 16);
        assert_eq!(knobs.status, None);
        assert_eq!(knobs.retry_after, None);
        assert!(!knobs.extra_fields);
        assert!(!knobs.close && !knobs.chunked && !knobs.no_length);
        assert_eq!(knobs.authorization, None);
    }

    #[test]
    fn headers_override_in_any_case() {
        let head = head(
            "X-Mock-Latency-Ms: 20\r\nx-mock-token-delay-ms: 3\r\nX-MOCK-TOKENS: 4\r\n\
             x-mock-status: 429\r\nx-mock-retry-after: 7\r\nx-mock-close: 1\r\n\
             x-mock-chunked: true\r\nx-mock-no-length: 0\r\nAuthorization: Bearer sk-1\r\n\
             authorization: Bearer second\r\nx-mock-unknown: whatever\r\n",
        );
        let knobs = Knobs::read(&head, &DEFAULTS).unwrap();
        assert_eq!(knobs.latency, Duration::from_millis(20));
        assert_eq!(knobs.token_delay, Duration::from_millis(3));
        assert_eq!(knobs.tokens, 4);
        assert_eq!(knobs.status, Some(429));
        assert_eq!(knobs.retry_after, Some(&b"7"[..]));
        assert!(knobs.close && knobs.chunked && !knobs.no_length);
        assert_eq!(knobs.authorization, Some(&b"Bearer sk-1"[..]));
    }

    #[test]
    fn status_200_means_no_error() {
        let head = head("x-mock-status: 200\r\n");
        assert_eq!(Knobs::read(&head, &DEFAULTS).unwrap().status, None);
    }

    #[test]
    fn bad_values_name_their_header() {
        let table = [
            ("x-mock-latency-ms: -1", "x-mock-latency-ms"),
            ("x-mock-token-delay-ms: 1.5", "x-mock-token-delay-ms"),
            ("x-mock-tokens: 99999999999", "x-mock-tokens"),
            ("x-mock-status: 302", "x-mock-status"),
            ("x-mock-status: 600", "x-mock-status"),
            ("x-mock-retry-after:", "x-mock-retry-after"),
            ("x-mock-header: no-colon", "x-mock-header"),
            ("x-mock-header: : empty name", "x-mock-header"),
            ("x-mock-header: bad name: v", "x-mock-header"),
            ("x-mock-header: Content-Length: 5", "x-mock-header"),
            ("x-mock-header: connection: close", "x-mock-header"),
            ("x-mock-close: yes", "x-mock-close"),
            ("x-mock-chunked: 2", "x-mock-chunked"),
            ("x-mock-no-length:", "x-mock-no-length"),
            (
                "x-mock-latency-ms: 9999999999999999999",
                "x-mock-latency-ms",
            ),
        ];
        for (field, name) in table {
            let head = head(&format!("{field}\r\n"));
            assert_eq!(Knobs::read(&head, &DEFAULTS), Err(BadKnob(name)), "{field}");
        }
    }

    #[test]
    fn controls_are_refused_in_extra_fields() {
        // The head parser already refuses these; the knobs do not rely on it.
        for value in [&b"x-a: 1\r\nx-b: 2"[..], b"x-a: \x00", b"x-a: \x7f"] {
            assert_eq!(split_mock_header(value), None, "{value:?}");
        }
        assert!(!field_value(b"a\nb"));
        assert_eq!(
            split_mock_header(b"X-A:\tv 1\t"),
            Some((&b"X-A"[..], &b"v 1"[..]))
        );
    }

    #[test]
    fn retry_after_is_kept_verbatim() {
        let head = head("x-mock-retry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n");
        let knobs = Knobs::read(&head, &DEFAULTS).unwrap();
        assert_eq!(
            knobs.retry_after,
            Some(&b"Wed, 21 Oct 2015 07:28:00 GMT"[..])
        );
    }

    #[test]
    fn extra_fields_are_split_in_order() {
        let head = head(
            "x-mock-header: retry-after-ms: 250\r\nX-Other: 1\r\n\
             X-Mock-Header: x-ratelimit-reset-requests:2s\r\n",
        );
        assert!(Knobs::read(&head, &DEFAULTS).unwrap().extra_fields);
        let fields: Vec<_> = mock_headers(&head).collect();
        assert_eq!(
            fields,
            [
                (&b"retry-after-ms"[..], &b"250"[..]),
                (b"x-ratelimit-reset-requests", b"2s")
            ]
        );
    }
}
