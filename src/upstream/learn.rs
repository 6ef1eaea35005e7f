//! What a provider says about the key that carried a request: how long to wait after a 429,
//! and how much of the key's request and token windows is left. This module is the reference
//! of which fields keygate understands; docs/limits.md lists them for operators.
//!
//! Fields read, per provider:
//!
//! - every provider: `retry-after-ms`, then `retry-after`, on a 429 or a 5xx;
//! - `openai` and `http`: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets
//!   as Go durations (`6m0s`);
//! - `anthropic`: `anthropic-ratelimit-{W}-{limit,remaining,reset}` for each window `W` of
//!   `requests`, `tokens`, `input-tokens` and `output-tokens`, resets as RFC 3339 times;
//! - `gemini`: nothing more in the head; a 429 body's `RetryInfo.retryDelay`, read by
//!   [`Learned::retry_delay_from_body`] (for any provider).
//!
//! Sans-IO: heads in, values out. [`Learned::from_head`] runs on every upstream response, so
//! it must never allocate, and a head without any of these fields costs one pass over its
//! field names: a length and first-byte check each, and a short prefix comparison for the few
//! that pass it. Values it cannot read are skipped, never errors; no input can make it panic.
//! Every learned duration is capped at [`MAX_WAIT`].

mod value;

use std::time::{Duration, SystemTime};

use memchr::memmem;
use serde_json::Value;

use crate::config::Provider;
use crate::http::{trim, ResponseHead};

/// The longest wait or reset any field may announce; longer values are taken as this. A
/// provider asking for more than a day is wrong or broken, and a key should not be parked on
/// its word for longer.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Bodies longer than this are not searched for a retry delay. A Gemini 429 body is about
/// 1 KiB; the bound keeps a hostile body from costing a large JSON parse.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What one response said about the provider key that carried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// How long the provider asked us to wait, read on a 429 or a 5xx only: from
    /// `retry-after-ms` (fractional milliseconds), else `retry-after` as delay-seconds or an
    /// HTTP-date in any of the three forms RFC 9110 §5.6.7 accepts, relative to `now` (zero
    /// once passed). RFC 9110 §10.2.3 defines the field for 503 and 3xx, RFC 6585 §4 adds
    /// 429; providers also send it with other overload statuses (Anthropic's 529). On a 3xx
    /// it is about a redirect, not the key, and on a 2xx it means nothing, so both are
    /// ignored.
    pub retry_after: Option<Duration>,
    /// The request-count window, if announced.
    pub requests: Option<Window>,
    /// The token window, if announced. When several are (Anthropic's `tokens`,
    /// `input-tokens` and `output-tokens`), the most constraining one: the lowest
    /// `remaining`, and of equal ones the latest reset.
    pub tokens: Option<Window>,
}

/// One rate-limit window as the provider announced it; any part may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// How many requests or tokens the window holds.
    pub limit: Option<u64>,
    /// How many are left in it.
    pub remaining: Option<u64>,
    /// How long until it is full again, measured from the response's arrival.
    pub reset_in: Option<Duration>,
}

impl Learned {
    /// Reads what `head`, parsed from `buf` and answered by a `provider` upstream, says about
    /// its key; `now` is when the head arrived, the reference for absolute times. Repeated
    /// fields: the first valid value counts. Field names match in any case.
    pub fn from_head(
        provider: Provider,
        head: &ResponseHead,
        buf: &[u8],
        now: SystemTime,
    ) -> Learned {
        let mut scan = Scan::default();
        for field in &head.fields {
            let name_range = field.name.start as usize..field.name.end as usize;
            let Some(name) = buf.get(name_range) else {
                continue;
            };
            let Some(header) = Header::classify(provider, name) else {
                continue;
            };
            let value_range = field.value.start as usize..field.value.end as usize;
            if let Some(value) = buf.get(value_range) {
                scan.take(header, trim(value), now);
            }
        }
        scan.finish(head.status)
    }

    /// The retry delay in a Google-style error body (Gemini's 429):
    /// `{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
    /// "retryDelay": "30s"}]}}`, also wrapped in a one-element array as some Gemini endpoints
    /// send it. Any provider's body is read the same way. `None` when there is no readable
    /// delay, or the body is longer than [`MAX_ERROR_BODY`]. Allocates only when the body
    /// contains `retryDelay` at all.
    pub fn retry_delay_from_body(body: &[u8]) -> Option<Duration> {
        if body.len() > MAX_ERROR_BODY || memmem::find(body, b"retryDelay").is_none() {
            return None;
        }
        let json: Value = serde_json::from_slice(body).ok()?;
        let envelope = match &json {
            Value::Array(items) => items.first()?,
            other => other,
        };
        let details = envelope.get("error")?.get("details")?.as_array()?;
        details
            .iter()
            .filter(|detail| is_retry_info(detail))
            .find_map(|detail| {
                value::proto_duration(detail.get("retryDelay")?.as_str()?.as_bytes())
            })
    }
}

// The windows a response may announce, as indexes into `Scan::windows`.
const REQUESTS: usize = 0;
const TOKENS: usize = 1;
const INPUT_TOKENS: usize = 2;
const OUTPUT_TOKENS: usize = 3;

/// Which part of a window a field gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Limit,
    Remaining,
    Reset,
}

/// A field this module understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    RetryAfterMs,
    RetryAfter,
    /// `x-ratelimit-*`: resets are Go durations.
    OpenAi {
        window: usize,
        part: Part,
    },
    /// `anthropic-ratelimit-*`: resets are RFC 3339 timestamps.
    Anthropic {
        window: usize,
        part: Part,
    },
}

impl Header {
    /// The field `name` stands for, if `provider` speaks it.
    fn classify(provider: Provider, name: &[u8]) -> Option<Header> {
        // Every understood name has at least 11 bytes and starts with r, x or a: most fields
        // of an ordinary response are rejected here.
        if name.len() < b"retry-after".len() {
            return None;
        }
        let (&first, _) = name.split_first()?;
        match first.to_ascii_lowercase() {
            b'r' => Header::retry(name),
            b'x' if matches!(provider, Provider::OpenAi | Provider::Http) => Header::openai(name),
            b'a' if provider == Provider::Anthropic => Header::anthropic(name),
            _ => None,
        }
    }

    fn retry(name: &[u8]) -> Option<Header> {
        if name.eq_ignore_ascii_case(b"retry-after-ms") {
            Some(Header::RetryAfterMs)
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            Some(Header::RetryAfter)
        } else {
            None
        }
    }

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    fn openai(name: &[u8]) -> Option<Header> {
        const PARTS: [(&[u8], Part); 3] = [
            (b"limit-", Part::Limit),
            (b"remaining-", Part::Remaining),
            (b"reset-", Part::Reset),
        ];
        const WINDOWS: [(&[u8], usize); 2] = [(b"requests", REQUESTS), (b"tokens", TOKENS)];

        let rest = strip_prefix_ignore_case(name, b"x-ratelimit-")?;
        let (part, rest) = PARTS.iter().find_map(|&(prefix, part)| {
            strip_prefix_ignore_case(rest, prefix).map(|rest| (part, rest))
        })?;
        let window = WINDOWS
            .iter()
            .find(|(suffix, _)| rest.eq_ignore_ascii_case(suffix))?
            .1;
        Some(Header::OpenAi { window, part })
    }

    /// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
    fn anthropic(name: &[u8]) -> Option<Header> {
        const WINDOWS: [(&[u8], usize); 4] = [
            (b"requests-", REQUESTS),
            (b"tokens-", TOKENS),
            (b"input-tokens-", INPUT_TOKENS),
            (b"output-tokens-", OUTPUT_TOKENS),
        ];
        const PARTS: [(&[u8], Part); 3] = [
            (b"limit", Part::Limit),
            (b"remaining", Part::Remaining),
            (b"reset", Part::Reset),
        ];

        let rest = strip_prefix_ignore_case(name, b"anthropic-ratelimit-")?;
        let (window, rest) = WINDOWS.iter().find_map(|&(prefix, window)| {
            strip_prefix_ignore_case(rest, prefix).map(|rest| (window, rest))
        })?;
        let part = PARTS
            .iter()
            .find(|(suffix, _)| rest.eq_ignore_ascii_case(suffix))?
            .1;
        Some(Header::Anthropic { window, part })
    }
}

/// What the fields read so far said; each slot keeps the first valid value.
#[derive(Debug, Default)]
struct Scan {
    retry_after_ms: Option<Duration>,
    retry_after: Option<Duration>,
    windows: [Window; 4],
}

impl Scan {
    /// Reads one understood field's value into its slot, unless the slot is already set.
    fn take(&mut self, header: Header, value: &[u8], now: SystemTime) {
        match header {
            Header::RetryAfterMs => fill(&mut self.retry_after_ms, || value::millis(value)),
            Header::RetryAfter => fill(&mut self.retry_after, || retry_after(value, now)),
            Header::OpenAi { window, part } => {
                self.window_part(window, part, value, || value::go_duration(value))
            }
            Header::Anthropic { window, part } => {
                self.window_part(window, part, value, || value::rfc3339_until(value, now))
            }
        }
    }

    fn window_part(
        &mut self,
        window: usize,
        part: Part,
        value: &[u8],
        reset: impl FnOnce() -> Option<Duration>,
    ) {
        let Some(window) = self.windows.get_mut(window) else {
            return;
        };
        match part {
            Part::Limit => fill(&mut window.limit, || value::count(value)),
            Part::Remaining => fill(&mut window.remaining, || value::count(value)),
            Part::Reset => fill(&mut window.reset_in, reset),
        }
    }

    /// The learned facts, given the response's status.
    fn finish(self, status: u16) -> Learned {
        let waits = status == 429 || (500..600).contains(&status);
        let [requests, tokens, input_tokens, output_tokens] = self.windows.map(announced);
        let most_constraining = [tokens, input_tokens, output_tokens]
            .into_iter()
            .flatten()
            .min_by_key(|window| {
                let remaining = window.remaining.unwrap_or(u64::MAX);
                let reset = window.reset_in.unwrap_or(Duration::ZERO);
                (remaining, std::cmp::Reverse(reset))
            });
        Learned {
            retry_after: self.retry_after_ms.or(self.retry_after).filter(|_| waits),
            requests,
            tokens: most_constraining,
        }
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, else an HTTP-date.
fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    if value.first().is_some_and(u8::is_ascii_digit) {
        return value::delay_seconds(value);
    }
    let date = httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()?;
    Some(
        date.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT),
    )
}

/// A window with at least one part announced.
fn announced(window: Window) -> Option<Window> {
    (window != Window::default()).then_some(window)
}

/// Sets `slot` from `parse` if nothing valid was there yet.
fn fill<T>(slot: &mut Option<T>, parse: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = parse();
    }
}

/// A `RetryInfo` detail, or one that names no type at all.
fn is_retry_info(detail: &Value) -> bool {
    match detail.get("@type") {
        None => true,
        Some(kind) => kind
            .as_str()
            .is_some_and(|kind| kind.ends_with("google.rpc.RetryInfo")),
    }
}

/// `name` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use bytes::BytesMut;

    use super::*;

    /// 2024-05-01T12:00:00Z, a Wednesday.
    const NOON: u64 = 1_714_564_800;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOON)
    }

    fn secs(seconds: u64) -> Option<Duration> {
        Some(Duration::from_secs(seconds))
    }

    fn ms(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    /// What a `provider` response with this status and these fields teaches.
    fn learn(provider: Provider, status: u16, fields: &[(&str, &str)]) -> Learned {
        let mut text = format!("HTTP/1.1 {status} X\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let buf = BytesMut::from(text.as_bytes());
        let head = ResponseHead::parse(&buf, false, 16 * 1024, &mut Vec::new())
            .expect("valid head")
            .expect("complete head");
        Learned::from_head(provider, &head, &buf, now())
    }

    /// Header fields as name and value.
    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn window(limit: u64, remaining: u64, reset_in: Option<Duration>) -> Option<Window> {
        Some(Window {
            limit: Some(limit),
            remaining: Some(remaining),
            reset_in,
        })
    }

    const OPENAI_SIX: &[(&str, &str)] = &[
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-limit-tokens", "160000"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("x-ratelimit-remaining-tokens", "159976"),
        ("x-ratelimit-reset-requests", "12ms"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ];

    #[test]
    fn openai_windows() {
        let learned = learn(Provider::OpenAi, 200, OPENAI_SIX);
        assert_eq!(
            learned,
            Learned {
                retry_after: None,
                requests: window(5000, 4999, ms(12)),
                tokens: window(160_000, 159_976, secs(360)),
            }
        );
        // The generic provider reads the same fields.
        assert_eq!(learn(Provider::Http, 200, OPENAI_SIX), learned);
    }

    #[test]
    fn anthropic_windows_and_the_most_constraining_token_window() {
        let fields = [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:01Z"),
            ("anthropic-ratelimit-tokens-limit", "90000"),
            ("anthropic-ratelimit-tokens-remaining", "80000"),
            ("anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:07Z"),
            ("anthropic-ratelimit-input-tokens-limit", "50000"),
            ("anthropic-ratelimit-input-tokens-remaining", "45000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-05-01T12:00:06.5Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "10000"),
            ("anthropic-ratelimit-output-tokens-remaining", "500"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-05-01T14:00:30+02:00",
            ),
        ];
        let learned = learn(Provider::Anthropic, 200, &fields);
        assert_eq!(learned.requests, window(50, 49, secs(1)));
        assert_eq!(learned.tokens, window(10_000, 500, secs(30)));
        assert_eq!(learned.retry_after, None);
    }

    #[test]
    fn equal_remaining_picks_the_latest_reset() {
        let fields = [
            ("anthropic-ratelimit-tokens-remaining", "100"),
            ("anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:05Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "100"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-05-01T12:00:40Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "100"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-05-01T12:00:20Z",
            ),
        ];
        let tokens = learn(Provider::Anthropic, 200, &fields).tokens;
        assert_eq!(tokens.and_then(|w| w.reset_in), secs(40));

        // A window that does not say what remains constrains least.
        let fields = [
            ("anthropic-ratelimit-tokens-limit", "10"),
            ("anthropic-ratelimit-output-tokens-remaining", "7"),
        ];
        let tokens = learn(Provider::Anthropic, 200, &fields).tokens;
        assert_eq!(tokens.and_then(|w| w.remaining), Some(7));
    }

    #[test]
    fn past_anthropic_resets_are_zero() {
        let fields = [("anthropic-ratelimit-requests-reset", "2024-05-01T11:00:00Z")];
        let requests = learn(Provider::Anthropic, 200, &fields).requests;
        assert_eq!(requests.and_then(|w| w.reset_in), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_forms() {
        let table: &[(Fields, Option<Duration>)] = &[
            (&[("retry-after", "20")], secs(20)),
            (&[("retry-after", "0")], Some(Duration::ZERO)),
            (
                &[("Retry-After", "Wed, 01 May 2024 12:01:00 GMT")],
                secs(60),
            ),
            (
                &[("Retry-After", "Wednesday, 01-May-24 12:01:00 GMT")],
                secs(60),
            ),
            (&[("Retry-After", "Wed May  1 12:01:00 2024")], secs(60)),
            (
                &[("retry-after", "Wed, 01 May 2024 11:00:00 GMT")],
                Some(Duration::ZERO),
            ),
            (&[("retry-after", "Wed, 01 May 2099 11:00:00 GMT")], None),
            (
                &[("retry-after", "Fri, 01 May 2099 11:00:00 GMT")],
                Some(MAX_WAIT),
            ),
            (
                &[("retry-after", "99999999999999999999999")],
                Some(MAX_WAIT),
            ),
            (&[("retry-after", "-5")], None),
            (&[("retry-after", "1.5")], None),
            (&[("retry-after", "soon")], None),
            (&[("retry-after", "")], None),
            (&[("retry-after", "  7  ")], secs(7)),
            (
                &[("retry-after-ms", "1500.5")],
                Some(Duration::from_micros(1_500_500)),
            ),
            (
                &[("retry-after", "20"), ("retry-after-ms", "1500")],
                ms(1500),
            ),
            (&[("retry-after", "20"), ("retry-after-ms", "-1")], secs(20)),
            (&[("retry-after-ms", "1e9")], None),
            (&[("RETRY-AFTER-MS", "250")], ms(250)),
            (&[("retry-after", "garbage"), ("retry-after", "3")], secs(3)),
            (&[("retry-after", "3"), ("retry-after", "4")], secs(3)),
        ];
        for (fields, expected) in table {
            for provider in [
                Provider::OpenAi,
                Provider::Anthropic,
                Provider::Gemini,
                Provider::Http,
            ] {
                let learned = learn(provider, 429, fields);
                assert_eq!(learned.retry_after, *expected, "{provider:?} {fields:?}");
            }
        }
    }

    #[test]
    fn retry_after_counts_only_on_429_and_5xx() {
        let fields = [("retry-after", "20")];
        for (status, expected) in [
            (200, None),
            (301, None),
            (404, None),
            (429, secs(20)),
            (500, secs(20)),
            (503, secs(20)),
            (529, secs(20)),
        ] {
            let learned = learn(Provider::OpenAi, status, &fields);
            assert_eq!(learned.retry_after, expected, "{status}");
        }
    }

    #[test]
    fn names_match_in_any_case() {
        let fields = [
            ("X-RateLimit-Remaining-Requests", "3"),
            ("X-RATELIMIT-RESET-TOKENS", "1s"),
        ];
        let learned = learn(Provider::OpenAi, 200, &fields);
        assert_eq!(learned.requests.and_then(|w| w.remaining), Some(3));
        assert_eq!(learned.tokens.and_then(|w| w.reset_in), secs(1));

        let fields = [("Anthropic-RateLimit-Tokens-Remaining", "9")];
        let learned = learn(Provider::Anthropic, 200, &fields);
        assert_eq!(learned.tokens.and_then(|w| w.remaining), Some(9));
    }

    #[test]
    fn the_first_valid_repeat_counts() {
        let fields = [
            ("x-ratelimit-remaining-requests", "lots"),
            ("x-ratelimit-remaining-requests", "7"),
            ("x-ratelimit-remaining-requests", "8"),
            ("x-ratelimit-reset-requests", "-1s"),
            ("x-ratelimit-reset-requests", "2s"),
        ];
        let requests = learn(Provider::OpenAi, 200, &fields).requests;
        assert_eq!(
            requests,
            Some(Window {
                limit: None,
                remaining: Some(7),
                reset_in: secs(2),
            })
        );
    }

    #[test]
    fn garbage_and_near_misses_teach_nothing() {
        let fields = [
            ("x-ratelimit-limit-requests", "-1"),
            ("x-ratelimit-remaining-requests", "99999999999999999999999"),
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-remaining-tokens_usage_based", "5"),
            ("x-ratelimit-remaining-tokensx", "5"),
            ("x-ratelimit-remaining", "5"),
            ("x-ratelimit-", "5"),
            ("retry-after-msx", "5"),
            ("retry-afte", "5"),
            ("ratelimit-remaining", "5"),
            ("anthropic-ratelimit-tokens-remaining", "5"),
        ];
        assert_eq!(learn(Provider::OpenAi, 429, &fields), Learned::default());
    }

    #[test]
    fn each_provider_reads_only_its_own_windows() {
        let fields = [
            ("x-ratelimit-remaining-requests", "1"),
            ("anthropic-ratelimit-requests-remaining", "2"),
        ];
        let remaining = |provider| {
            learn(provider, 200, &fields)
                .requests
                .and_then(|w| w.remaining)
        };
        assert_eq!(remaining(Provider::OpenAi), Some(1));
        assert_eq!(remaining(Provider::Http), Some(1));
        assert_eq!(remaining(Provider::Anthropic), Some(2));
        assert_eq!(remaining(Provider::Gemini), None);
    }

    #[test]
    fn a_plain_response_teaches_nothing() {
        let fields = [
            ("Content-Type", "application/json"),
            ("Date", "Wed, 01 May 2024 12:00:00 GMT"),
            ("x-request-id", "req_123"),
            ("openai-processing-ms", "250"),
        ];
        assert_eq!(learn(Provider::OpenAi, 200, &fields), Learned::default());
        assert_eq!(learn(Provider::OpenAi, 200, &[]), Learned::default());
    }

    #[test]
    fn spans_outside_the_buffer_are_skipped() {
        let buf = BytesMut::from(&b"HTTP/1.1 429 X\r\nretry-after: 5\r\n\r\n"[..]);
        let head = ResponseHead::parse(&buf, false, 16 * 1024, &mut Vec::new())
            .expect("valid head")
            .expect("complete head");
        let learned = Learned::from_head(Provider::OpenAi, &head, &buf, now());
        assert_eq!(learned.retry_after, secs(5));
        for cut in 0..buf.len() {
            let _ = Learned::from_head(Provider::OpenAi, &head, &buf[..cut], now());
        }
        assert_eq!(
            Learned::from_head(Provider::OpenAi, &head, b"", now()),
            Learned::default()
        );
    }

    #[test]
    fn retry_delay_in_bodies() {
        let gemini = r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "22s"}]}}"#;
        let table: &[(&str, Option<Duration>)] = &[
            (gemini, secs(22)),
            (&format!("[{gemini}]"), secs(22)),
            (r#"{"error":{"details":[{"retryDelay":"1.5s"}]}}"#, ms(1500)),
            (
                r#"{"error":{"details":[{"retryDelay":"x"},{"retryDelay":"2s"}]}}"#,
                secs(2),
            ),
            (
                r#"{"error":{"details":[{"@type":"t/google.rpc.Other","retryDelay":"2s"}]}}"#,
                None,
            ),
            (r#"{"error":{"details":[{"retryDelay":"-1s"}]}}"#, None),
            (r#"{"error":{"details":[{"retryDelay":30}]}}"#, None),
            (r#"{"error":{"details":{"retryDelay":"30s"}}}"#, None),
            (r#"{"retryDelay":"30s"}"#, None),
            (r#"{"error":{"details":[{"retryDelay":"30s"}"#, None),
            (r#"{"error":{"message":"quota"}}"#, None),
            (r#"[]"#, None),
            ("", None),
            ("retryDelay", None),
            (
                r#"{"error":{"details":[{"retryDelay":"999999999s"}]}}"#,
                Some(MAX_WAIT),
            ),
        ];
        for (body, expected) in table {
            assert_eq!(
                Learned::retry_delay_from_body(body.as_bytes()),
                *expected,
                "{body}"
            );
        }
    }

    #[test]
    fn long_bodies_are_not_parsed() {
        let mut body = br#"{"error":{"details":[{"retryDelay":"3s"}]}}"#.to_vec();
        assert_eq!(Learned::retry_delay_from_body(&body), secs(3));
        body.resize(MAX_ERROR_BODY + 1, b' ');
        assert_eq!(Learned::retry_delay_from_body(&body), None);
    }
}
