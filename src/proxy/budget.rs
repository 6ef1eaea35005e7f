//! The client's own budget in response headers: OpenAI's `x-ratelimit-*` fields and the IETF
//! httpapi `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! Written straight into the head being encoded, through small stack buffers: no allocation,
//! and no `core::fmt` (numbers go through `itoa`, as `HeadWriter::field_u64` does).

use crate::http::HeadWriter;
use crate::keys::ClientKey;
use crate::quota::{Budget, QuotaBook, SECOND};

/// The most request budgets a key has: its rate and one quota per window.
const MAX_BUDGETS: usize = 5;

/// Writes the budget fields of `key` as of `now`. A key without request or token limits
/// gets none: there is no budget to announce.
pub(super) fn write_budget(
    writer: &mut HeadWriter<'_>,
    quota: &QuotaBook,
    key: &ClientKey,
    now: u64,
) {
    let counters = quota.counters(key);
    // One pass over the counters gives both the list and the tightest of it.
    let mut budgets: [Option<Budget>; MAX_BUDGETS] = Default::default();
    for (slot, budget) in budgets.iter_mut().zip(counters.budgets(&key.limits, now)) {
        *slot = Some(budget);
    }
    let budgets = budgets.iter().map_while(Option::as_ref);
    // The first of the least remaining, then longest reset, as `Counters::tightest` picks.
    let tightest = budgets
        .clone()
        .min_by_key(|budget| (budget.remaining, std::cmp::Reverse(budget.reset)));

    if let Some(tightest) = tightest {
        writer.field_u64(b"x-ratelimit-limit-requests", tightest.limit);
        writer.field_u64(b"x-ratelimit-remaining-requests", tightest.remaining);
        writer.field(
            b"x-ratelimit-reset-requests",
            Reset::new(tightest.reset).as_bytes(),
        );

        let mut policy = Line::default();
        let mut current = Line::default();
        for budget in budgets {
            if policy.len > 0 {
                policy.push(b", ");
                current.push(b", ");
            }
            // "name";q=limit;w=window and "name";r=remaining;t=seconds to reset
            policy.push_name(budget.name);
            policy.push(b";q=");
            policy.push_u64(budget.limit);
            policy.push(b";w=");
            policy.push_u64(budget.window_secs);
            current.push_name(budget.name);
            current.push(b";r=");
            current.push_u64(budget.remaining);
            current.push(b";t=");
            current.push_u64(budget.reset.div_ceil(SECOND));
        }
        writer.field(b"RateLimit-Policy", policy.as_bytes());
        writer.field(b"RateLimit", current.as_bytes());
    }
    if let Some(tokens) = counters.tokens_budget(&key.limits, now) {
        writer.field_u64(b"x-ratelimit-limit-tokens", tokens.limit);
        writer.field_u64(b"x-ratelimit-remaining-tokens", tokens.remaining);
        writer.field(
            b"x-ratelimit-reset-tokens",
            Reset::new(tokens.reset).as_bytes(),
        );
    }
}

/// A field value built on the stack; a piece that does not fit is dropped, never panicking.
struct Line {
    bytes: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            bytes: [0; 512],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, piece: &[u8]) {
        if let Some(rest) = self.bytes.get_mut(self.len..self.len + piece.len()) {
            rest.copy_from_slice(piece);
            self.len += piece.len();
        }
    }

    fn push_u64(&mut self, value: u64) {
        self.push(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A policy name as a quoted string (RFC 8941 §3.3.3); names are fixed ASCII words.
    fn push_name(&mut self, name: &str) {
        self.push(b"\"");
        self.push(name.as_bytes());
        self.push(b"\"");
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A wait in OpenAI's reset format: `250ms`, `12s`, `6m0s`, `1h2m3s`.
struct Reset(Line);

impl Reset {
    fn new(nanos: u64) -> Reset {
        let mut line = Line::default();
        let millis = nanos.div_ceil(1_000_000);
        let secs = nanos.div_ceil(SECOND);
        if millis < 1000 {
            line.push_u64(millis);
            line.push(b"ms");
        } else {
            let parts = [
                (secs / 3600, b'h'),
                (secs % 3600 / 60, b'm'),
                (secs % 60, b's'),
            ];
            // Hours only from an hour on, minutes only from a minute on; seconds always.
            let skip = match secs {
                0..60 => 2,
                60..3600 => 1,
                _ => 0,
            };
            for (value, unit) in &parts[skip..] {
                line.push_u64(*value);
                line.push(&[*unit]);
            }
        }
        Reset(line)
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::BytesMut;

    use super::*;
    use crate::config::Config;
    use crate::keys::KeyTable;

    /// 2026-12-04T16:02:28Z.
    const T0: u64 = 1_796_400_148 * SECOND;

    const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[[client_key]]
id = "all"
secret = "kg-all"
rate = "10/s"
burst = 20
quota = { per_minute = 100, per_hour = 1000, per_day = 5000, per_month = 90000 }
tokens_per_minute = 9000

[[client_key]]
id = "hourly"
secret = "kg-hourly"
quota = { per_hour = 3 }

[[client_key]]
id = "none"
secret = "kg-none"
"#;

    /// The fields as the gateway wrote them with `core::fmt` before: the format is public,
    /// so the faster writer must produce the same bytes.
    fn with_fmt(quota: &QuotaBook, key: &ClientKey, now: u64) -> String {
        fn reset(nanos: u64) -> String {
            let (millis, secs) = (nanos.div_ceil(1_000_000), nanos.div_ceil(SECOND));
            match secs {
                _ if millis < 1000 => format!("{millis}ms"),
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m{}s", secs / 60, secs % 60),
                _ => format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60),
            }
        }
        let counters = quota.counters(key);
        let mut out = String::new();
        if let Some(tight) = counters.tightest(&key.limits, now) {
            out += &format!("x-ratelimit-limit-requests: {}\r\n", tight.limit);
            out += &format!("x-ratelimit-remaining-requests: {}\r\n", tight.remaining);
            out += &format!("x-ratelimit-reset-requests: {}\r\n", reset(tight.reset));
            let budgets: Vec<_> = counters.budgets(&key.limits, now).collect();
            let policy: Vec<_> = budgets
                .iter()
                .map(|b| format!("\"{}\";q={};w={}", b.name, b.limit, b.window_secs))
                .collect();
            let current: Vec<_> = budgets
                .iter()
                .map(|b| {
                    let t = b.reset.div_ceil(SECOND);
                    format!("\"{}\";r={};t={t}", b.name, b.remaining)
                })
                .collect();
            out += &format!("RateLimit-Policy: {}\r\n", policy.join(", "));
            out += &format!("RateLimit: {}\r\n", current.join(", "));
        }
        if let Some(tokens) = counters.tokens_budget(&key.limits, now) {
            out += &format!("x-ratelimit-limit-tokens: {}\r\n", tokens.limit);
            out += &format!("x-ratelimit-remaining-tokens: {}\r\n", tokens.remaining);
            out += &format!("x-ratelimit-reset-tokens: {}\r\n", reset(tokens.reset));
        }
        out
    }

    fn written(quota: &QuotaBook, key: &ClientKey, now: u64) -> String {
        let mut out = BytesMut::new();
        write_budget(&mut HeadWriter::new(&mut out), quota, key, now);
        String::from_utf8(out.to_vec()).expect("ASCII")
    }

    #[test]
    fn fields_match_the_fmt_rendering_as_counters_move() {
        let config = Config::parse(CONFIG, Path::new("b.toml"), Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{e}"));
        let table = KeyTable::new(&config, 1);
        let mut book = QuotaBook::default();
        let steps = [
            0,
            1,
            250_000_000,
            SECOND,
            59 * SECOND,
            61 * SECOND,
            3700 * SECOND,
        ];
        for key in table.keys() {
            for (n, step) in steps.iter().enumerate() {
                let now = T0 + step;
                // Take some of each budget, with token reservations, so every figure moves.
                for _ in 0..n {
                    let _ = book.admit(&table, key, now, 40);
                }
                assert_eq!(
                    written(&book, key, now),
                    with_fmt(&book, key, now),
                    "{}",
                    key.id
                );
            }
        }
        let all = table
            .keys()
            .iter()
            .find(|key| &*key.id == "all")
            .expect("key");
        let text = written(&book, all, T0);
        assert!(text.contains("RateLimit-Policy: \"rate\";q=20;w=2, \"minute\";q=100;w=60"));
        let none = table
            .keys()
            .iter()
            .find(|key| &*key.id == "none")
            .expect("key");
        assert_eq!(written(&book, none, T0), "");
    }

    #[test]
    fn reset_formats() {
        let table = [
            (0, "0ms"),
            (1, "1ms"),
            (250_000_000, "250ms"),
            (999_000_001, "1s"),
            (SECOND, "1s"),
            (12 * SECOND, "12s"),
            (360 * SECOND, "6m0s"),
            (3723 * SECOND, "1h2m3s"),
        ];
        for (nanos, text) in table {
            assert_eq!(Reset::new(nanos).as_bytes(), text.as_bytes(), "{nanos}");
        }
    }

    #[test]
    fn line_drops_what_does_not_fit() {
        let mut line = Line::default();
        for _ in 0..100 {
            line.push(b"\"policy\";q=1;w=1, ");
        }
        // 28 pieces of 18 bytes fit; the rest were dropped whole, never cut.
        assert_eq!(line.len, 28 * 18);
        line.push(b"012345678");
        assert_eq!(line.len, 504);
        line.push(b"01234567");
        assert_eq!(line.len, 512);
        line.push(b"x");
        assert!(line.as_bytes().ends_with(b"w=1, 01234567"));
    }
}
