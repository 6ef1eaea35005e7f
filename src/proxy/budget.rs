//! The client's own budget in response headers: OpenAI's `x-ratelimit-*` fields and the IETF
//! httpapi `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! Written straight into the head being encoded, through small stack buffers: no allocation.

use std::io::Write;

use crate::http::HeadWriter;
use crate::keys::ClientKey;
use crate::quota::{QuotaBook, SECOND};

/// Writes the budget fields of `key` as of `now`. A key without request or token limits
/// gets none: there is no budget to announce.
pub(super) fn write_budget(
    writer: &mut HeadWriter<'_>,
    quota: &QuotaBook,
    key: &ClientKey,
    now: u64,
) {
    if let Some(budget) = quota.tightest(key, now) {
        writer.field_u64(b"x-ratelimit-limit-requests", budget.limit);
        writer.field_u64(b"x-ratelimit-remaining-requests", budget.remaining);
        writer.field(
            b"x-ratelimit-reset-requests",
            Reset::new(budget.reset).as_bytes(),
        );

        let mut policy = Line::default();
        let mut current = Line::default();
        for budget in quota.budgets(key, now) {
            let separator = if policy.len == 0 { "" } else { ", " };
            let reset = budget.reset.div_ceil(SECOND);
            policy.push(format_args!(
                "{separator}\"{}\";q={};w={}",
                budget.name, budget.limit, budget.window_secs
            ));
            current.push(format_args!(
                "{separator}\"{}\";r={};t={reset}",
                budget.name, budget.remaining
            ));
        }
        writer.field(b"RateLimit-Policy", policy.as_bytes());
        writer.field(b"RateLimit", current.as_bytes());
    }
    if let Some(tokens) = quota.tokens_budget(key, now) {
        writer.field_u64(b"x-ratelimit-limit-tokens", tokens.limit);
        writer.field_u64(b"x-ratelimit-remaining-tokens", tokens.remaining);
        writer.field(
            b"x-ratelimit-reset-tokens",
            Reset::new(tokens.reset).as_bytes(),
        );
    }
}

/// A field value built on the stack; what does not fit is dropped, never panicking.
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
    fn push(&mut self, args: std::fmt::Arguments<'_>) {
        let mut rest = &mut self.bytes[self.len..];
        let before = rest.len();
        if rest.write_fmt(args).is_ok() {
            self.len += before - rest.len();
        }
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
            line.push(format_args!("{millis}ms"));
        } else if secs < 60 {
            line.push(format_args!("{secs}s"));
        } else if secs < 3600 {
            line.push(format_args!("{}m{}s", secs / 60, secs % 60));
        } else {
            line.push(format_args!(
                "{}h{}m{}s",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            ));
        }
        Reset(line)
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            line.push(format_args!("\"policy\";q=1;w=1, "));
        }
        assert!(line.len <= 512);
    }
}
