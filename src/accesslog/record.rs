//! One access log record and its line of JSON, and the request ids it carries.
//!
//! Sans-IO: a [`Record`] borrows what the exchange already holds and is written into the
//! caller's buffer with no allocation of its own (numbers through `itoa`, strings through
//! the escaper in `json`).

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BufMut;

use super::json::write_string;
use super::time::format_timestamp;

/// The most bytes of a request path written; a longer path is cut there (at a character
/// boundary) and the record gets `"path_truncated":true`.
pub const MAX_PATH_BYTES: usize = 2048;

/// One exchange, as the access log records it: one JSON object on one line.
///
/// Strings are borrowed from the exchange. Optional fields are written as `null` when absent.
/// No field may hold a secret: keys appear only by their configured ids.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When the request began (its head was read whole), in nanoseconds since the Unix
    /// epoch; written as RFC 3339 UTC with milliseconds (`2026-12-04T16:02:28.005Z`).
    pub ts: u64,
    /// The request's id (see [`RequestId`]).
    pub request_id: RequestId,
    /// The client key's tenant, when the key has one.
    pub tenant: Option<&'a str>,
    /// The client key's configured id, once the key was recognised. Never its secret.
    pub key_id: Option<&'a str>,
    /// The method token as received.
    pub method: &'a [u8],
    /// The request path as received. Only the part before `?` is written, since a query may
    /// carry credentials (Gemini's `?key=`); at most [`MAX_PATH_BYTES`] of it, escaped, with
    /// invalid UTF-8 replaced by U+FFFD.
    pub path: &'a [u8],
    /// The `path_prefix` of the route that matched, if one did.
    pub route: Option<&'a str>,
    /// The name of the upstream that served the request (after any fallback), if any.
    pub upstream: Option<&'a str>,
    /// The id of the provider key used for the last attempt, if one was chosen.
    pub upstream_key: Option<&'a str>,
    /// The status sent to the client; 0 when no response head was sent.
    pub status: u16,
    /// Microseconds from `ts` until the response's last byte was written (or the exchange
    /// ended).
    pub latency_us: u64,
    /// Microseconds from sending the request upstream until the upstream's response head
    /// arrived, for the last attempt; `None` when nothing was sent upstream.
    pub upstream_latency_us: Option<u64>,
    /// Request body bytes read from the client (not the head).
    pub bytes_in: u64,
    /// Response body bytes written to the client (not the head).
    pub bytes_out: u64,
    /// Prompt (input) tokens the provider reported; `None` when it reported none.
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens the provider reported; `None` when it reported none.
    pub completion_tokens: Option<u64>,
    /// Times the request was sent again (on a sibling key, another endpoint or a fallback).
    pub retries: u32,
    /// The gateway's error code (`docs/errors.md`) when it answered or ended the exchange
    /// with an error itself; `None` for a response passed on from the upstream.
    pub error_code: Option<&'a str>,
}

impl Record<'_> {
    /// Appends the record as one line of JSON, `\n` included. Never fails and never panics:
    /// every string is escaped, whatever bytes it holds.
    pub fn write_to<B: BufMut>(&self, out: &mut B) {
        out.put_slice(b"{\"ts\":\"");
        out.put_slice(&format_timestamp(self.ts));
        out.put_slice(b"\",\"request_id\":\"");
        out.put_slice(&self.request_id.to_hex());
        out.put_slice(b"\",\"tenant\":");
        optional_string(out, self.tenant);
        out.put_slice(b",\"key_id\":");
        optional_string(out, self.key_id);
        out.put_slice(b",\"method\":");
        write_string(out, self.method);

        let (path, truncated) = written_path(self.path);
        out.put_slice(b",\"path\":");
        write_string(out, path);
        if truncated {
            out.put_slice(b",\"path_truncated\":true");
        }

        out.put_slice(b",\"route\":");
        optional_string(out, self.route);
        out.put_slice(b",\"upstream\":");
        optional_string(out, self.upstream);
        out.put_slice(b",\"upstream_key\":");
        optional_string(out, self.upstream_key);

        number(out, b",\"status\":", u64::from(self.status));
        number(out, b",\"latency_us\":", self.latency_us);
        optional_number(out, b",\"upstream_latency_us\":", self.upstream_latency_us);
        number(out, b",\"bytes_in\":", self.bytes_in);
        number(out, b",\"bytes_out\":", self.bytes_out);
        optional_number(out, b",\"prompt_tokens\":", self.prompt_tokens);
        optional_number(out, b",\"completion_tokens\":", self.completion_tokens);
        number(out, b",\"retries\":", u64::from(self.retries));
        out.put_slice(b",\"error_code\":");
        optional_string(out, self.error_code);
        out.put_slice(b"}\n");
    }
}

/// A request's id: unique across the gateway's shards and its restarts, and cheap to make
/// (no clock read, no randomness, no shared state).
///
/// 128 bits, written as 32 lowercase hex digits (the shape of a W3C trace id): the
/// gateway's start time in milliseconds since the Unix epoch (48 bits), the shard's index
/// (16 bits), and a per-shard counter (64 bits). Two ids collide only if two gateways
/// started in the same millisecond, so ids from one host's consecutive runs never collide.
/// Ids sort by start, shard, then order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u128);

impl RequestId {
    /// The id made of its three parts; `start_ms` keeps its low 48 bits (until the year 10889).
    pub fn new(start_ms: u64, shard: u16, seq: u64) -> RequestId {
        let start = u128::from(start_ms & ((1 << 48) - 1));
        RequestId(start << 80 | u128::from(shard) << 64 | u128::from(seq))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (124 - 4 * i)) & 0xf;
            *slot = HEX[nibble as usize];
        }
        out
    }

    /// The shard that made the id.
    pub fn shard(self) -> u16 {
        (self.0 >> 64) as u16
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A shard's source of [`RequestId`]s; one per shard, not shared.
#[derive(Debug)]
pub struct RequestIds {
    start_ms: u64,
    shard: u16,
    next: Cell<u64>,
}

impl RequestIds {
    /// Ids for shard `shard` of a gateway started at `start` (read once, at start-up, and
    /// the same for every shard).
    pub fn new(shard: u16, start: SystemTime) -> RequestIds {
        let start_ms = start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        RequestIds {
            start_ms,
            shard,
            next: Cell::new(0),
        }
    }

    /// The next id: the counter, then one more.
    pub fn next_id(&self) -> RequestId {
        let seq = self.next.get();
        self.next.set(seq.wrapping_add(1));
        RequestId::new(self.start_ms, self.shard, seq)
    }
}

/// The part of `path` the log holds: before any `?`, cut to [`MAX_PATH_BYTES`] without
/// splitting a UTF-8 character; and whether it was cut.
fn written_path(path: &[u8]) -> (&[u8], bool) {
    let path = match memchr::memchr(b'?', path) {
        Some(at) => &path[..at],
        None => path,
    };
    if path.len() <= MAX_PATH_BYTES {
        return (path, false);
    }
    // Back up over at most three continuation bytes to the start of a character.
    let mut cut = MAX_PATH_BYTES;
    while cut > MAX_PATH_BYTES - 3 && path[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    (&path[..cut], true)
}

fn optional_string<B: BufMut>(out: &mut B, value: Option<&str>) {
    match value {
        Some(text) => write_string(out, text.as_bytes()),
        None => out.put_slice(b"null"),
    }
}

fn number<B: BufMut>(out: &mut B, name: &[u8], value: u64) {
    out.put_slice(name);
    out.put_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn optional_number<B: BufMut>(out: &mut B, name: &[u8], value: Option<u64>) {
    match value {
        Some(value) => number(out, name, value),
        None => {
            out.put_slice(name);
            out.put_slice(b"null");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A record with every field set, as a shard would fill it.
    pub(crate) fn full<'a>(path: &'a [u8]) -> Record<'a> {
        Record {
            ts: 1_796_400_148_005_000_000,
            request_id: RequestId::new(1_796_400_000_000, 3, 42),
            tenant: Some("acme"),
            key_id: Some("acme-prod"),
            method: b"POST",
            path,
            route: Some("/v1/"),
            upstream: Some("openai"),
            upstream_key: Some("org-1"),
            status: 200,
            latency_us: 15_321,
            upstream_latency_us: Some(14_000),
            bytes_in: 512,
            bytes_out: 2048,
            prompt_tokens: Some(12),
            completion_tokens: Some(34),
            retries: 1,
            error_code: None,
        }
    }

    fn line(record: &Record<'_>) -> String {
        let mut out = Vec::new();
        record.write_to(&mut out);
        String::from_utf8(out).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn a_full_record_is_one_exact_line() {
        let want = concat!(
            r#"{"ts":"2026-12-04T16:02:28.005Z","request_id":"01a241c8ac000003000000000000002a","#,
            r#""tenant":"acme","key_id":"acme-prod","method":"POST","path":"/v1/chat/completions","#,
            r#""route":"/v1/","upstream":"openai","upstream_key":"org-1","status":200,"#,
            r#""latency_us":15321,"upstream_latency_us":14000,"bytes_in":512,"bytes_out":2048,"#,
            r#""prompt_tokens":12,"completion_tokens":34,"retries":1,"error_code":null}"#,
            "\n"
        );
        assert_eq!(line(&full(b"/v1/chat/completions")), want);
    }

    #[test]
    fn absent_fields_are_null_and_the_line_is_valid_json() {
        let record = Record {
            tenant: None,
            key_id: None,
            route: None,
            upstream: None,
            upstream_key: None,
            status: 401,
            upstream_latency_us: None,
            prompt_tokens: None,
            completion_tokens: None,
            retries: 0,
            error_code: Some("invalid_api_key"),
            ..full(b"/v1/models")
        };
        let text = line(&record);
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for field in [
            "tenant",
            "key_id",
            "route",
            "upstream",
            "upstream_key",
            "upstream_latency_us",
            "prompt_tokens",
            "completion_tokens",
        ] {
            assert_eq!(value[field], serde_json::Value::Null, "{field}");
        }
        assert_eq!(value["error_code"], "invalid_api_key");
        assert_eq!(value["status"], 401);
        assert_eq!(value["retries"], 0);
        assert_eq!(value.as_object().map(|o| o.len()), Some(18));
    }

    #[test]
    fn hostile_paths_stay_inside_their_string() {
        let cases: &[(&[u8], &str)] = &[
            (b"/a\"}\n{\"x\":1", "/a\"}\n{\"x\":1"),
            (b"/a\\b", "/a\\b"),
            (b"/\x00\x1f\x7f", "/\u{0}\u{1f}\u{7f}"),
            (b"/bad\xff\xfeutf8", "/bad\u{fffd}\u{fffd}utf8"),
            (
                b"/v1beta/models/m:generate?key=AIzaSECRET",
                "/v1beta/models/m:generate",
            ),
            (b"?only=query", ""),
        ];
        for &(path, want) in cases {
            let text = line(&full(path));
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            assert_eq!(value["path"], want, "{text}");
            assert!(!text.contains("SECRET"));
            assert!(value.get("path_truncated").is_none());
        }
    }

    #[test]
    fn long_paths_are_cut_at_a_character_and_marked() {
        let read = |path: &[u8]| {
            let text = line(&full(path));
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let path = value["path"].as_str().unwrap_or_default().to_owned();
            (path, value["path_truncated"].clone())
        };

        let exact = vec![b'a'; MAX_PATH_BYTES];
        assert_eq!(
            read(&exact),
            ("a".repeat(MAX_PATH_BYTES), serde_json::Value::Null)
        );

        let mut long = vec![b'a'; MAX_PATH_BYTES + 100];
        long.extend_from_slice(b"?q=1");
        assert_eq!(
            read(&long),
            ("a".repeat(MAX_PATH_BYTES), serde_json::Value::Bool(true))
        );

        // A 4-byte character straddles the limit: it is left out whole, not split into
        // replacement characters.
        let mut straddling = vec![b'a'; MAX_PATH_BYTES - 2];
        straddling.extend_from_slice("\u{1f600}".as_bytes());
        let (path, truncated) = read(&straddling);
        assert_eq!(path, "a".repeat(MAX_PATH_BYTES - 2));
        assert_eq!(truncated, serde_json::Value::Bool(true));

        // Invalid bytes at the limit cannot make the cut loop past its bound.
        let continuation = vec![0x80; MAX_PATH_BYTES + 10];
        let (path, truncated) = read(&continuation);
        assert_eq!(path, "\u{fffd}".repeat(MAX_PATH_BYTES - 3));
        assert_eq!(truncated, serde_json::Value::Bool(true));
    }

    #[test]
    fn request_ids_are_unique_per_shard_and_sort_by_arrival() {
        let start = UNIX_EPOCH + Duration::from_millis(1_796_400_000_000);
        let (a, b) = (RequestIds::new(0, start), RequestIds::new(1, start));
        let first = a.next_id();
        let second = a.next_id();
        let other = b.next_id();
        assert!(first < second && second < other);
        assert_ne!(first, other);
        assert_eq!(other.shard(), 1);
        assert_eq!(first.to_string(), "01a241c8ac0000000000000000000000");
        assert_eq!(second.to_hex(), *b"01a241c8ac0000000000000000000001");
        let later_run = RequestIds::new(0, start + Duration::from_millis(1)).next_id();
        assert_ne!(later_run, first);
        assert_eq!(
            RequestId::new(u64::MAX, u16::MAX, u64::MAX).to_string(),
            "f".repeat(32)
        );
    }
}
