//! Per-request behaviour: the command line's defaults, overridden by `x-mock-*` request headers,
//! read in one pass over the head's fields together with the `Authorization` value to echo.
//!
//! | header | value | effect |
//! | --- | --- | --- |
//! | `x-mock-latency-ms` | ms | delay before the response head |
//! | `x-mock-token-delay-ms` | ms | delay between streamed events |
//! | `x-mock-tokens` | count | completion tokens (still capped by `max_tokens`) |
//! | `x-mock-status` | 400-599 | answer that status with an OpenAI error (200: no change) |
//! | `x-mock-retry-after` | seconds | `retry-after` of a 429 (default 1) |
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
    /// Seconds for the `retry-after` of a 429.
    pub retry_after: u64,
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
            retry_after: 1,
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
    fn set(&mut self, knob: &[u8], value: &[u8]) -> Result<(), BadKnob> {
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
            self.retry_after = number(value).ok_or(BadKnob("x-mock-retry-after"))?;
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
        assert_eq!(knobs.retry_after, 1);
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
        assert_eq!(knobs.retry_after, 7);
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
            ("x-mock-retry-after: soon", "x-mock-retry-after"),
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
}
