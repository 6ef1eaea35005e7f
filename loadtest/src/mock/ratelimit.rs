//! The rate-limit fields a keyed reply carries, in the style of the provider it imitates, and
//! the two time formats they use: Go's duration strings (OpenAI) and RFC 3339 UTC timestamps
//! (Anthropic). Gemini sends none; its wait is in the error body.
//!
//! Sans-IO: the state and the clock come in, fields go out through a [`FieldSink`]. Only keyed
//! requests get here, so formatting through a small `String` is acceptable.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::style::Style;

/// Where header fields are written; lets the response skip the fields a test overrides.
pub trait FieldSink {
    /// Adds `name: value`.
    fn field(&mut self, name: &[u8], value: &[u8]);
}

/// One limit of a key as it stands after the request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimension {
    /// The limit per minute, which is also the bucket's capacity.
    pub limit: u64,
    /// Whole units left in the bucket.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub until_full: Duration,
}

/// A key's limits after a request: the dimensions it has, and for a refused request, how long
/// until it would fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitState {
    /// Requests per minute, if the key has that limit.
    pub requests: Option<Dimension>,
    /// Tokens per minute, if the key has that limit.
    pub tokens: Option<Dimension>,
    /// For a request refused by the limits: the wait until it would fit (the time to fill the
    /// bucket when it never can).
    pub retry: Option<Duration>,
}

impl LimitState {
    /// Writes the fields of `style` for this state; `now` dates Anthropic's reset times.
    /// `retry-after` itself is not written here: the response head picks it.
    pub fn write(&self, style: Style, now: SystemTime, out: &mut dyn FieldSink) {
        match style {
            Style::OpenAi => self.write_openai(out),
            Style::Anthropic => self.write_anthropic(now, out),
            Style::Gemini => {}
        }
    }

    fn write_openai(&self, out: &mut dyn FieldSink) {
        let mut text = String::new();
        let dimensions = [("requests", self.requests), ("tokens", self.tokens)];
        for (name, dimension) in dimensions {
            let Some(dimension) = dimension else {
                continue;
            };
            let mut field = |suffix: &str, value: &str| {
                let name = format!("x-ratelimit-{suffix}-{name}");
                out.field(name.as_bytes(), value.as_bytes());
            };
            field("limit", itoa::Buffer::new().format(dimension.limit));
            field("remaining", itoa::Buffer::new().format(dimension.remaining));
            text.clear();
            go_duration(&mut text, round_up_to_millis(dimension.until_full));
            field("reset", &text);
        }
        if let Some(retry) = self.retry {
            let millis = round_up_to_millis(retry).as_millis() as u64;
            out.field(
                b"retry-after-ms",
                itoa::Buffer::new().format(millis).as_bytes(),
            );
        }
    }

    fn write_anthropic(&self, now: SystemTime, out: &mut dyn FieldSink) {
        let mut text = String::new();
        let dimensions = [("requests", self.requests), ("tokens", self.tokens)];
        for (name, dimension) in dimensions {
            let Some(dimension) = dimension else {
                continue;
            };
            let mut field = |suffix: &str, value: &str| {
                let name = format!("anthropic-ratelimit-{name}-{suffix}");
                out.field(name.as_bytes(), value.as_bytes());
            };
            field("limit", itoa::Buffer::new().format(dimension.limit));
            field("remaining", itoa::Buffer::new().format(dimension.remaining));
            text.clear();
            rfc3339(&mut text, now + dimension.until_full);
            field("reset", &text);
        }
    }
}

/// Whole seconds of `wait`, rounded up, as `retry-after` wants them (RFC 9110 §10.2.3).
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Appends `duration` as Go's `time.Duration` prints it: `0s`, `120ms`, `1.5µs`, `1s`,
/// `1m30.5s`, `6m0s`, `1h0m0s`.
pub fn go_duration(out: &mut String, duration: Duration) {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        out.push_str("0s");
        return;
    }

    // Under a second, the largest unit that keeps a whole part, with an exact fraction.
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        decimal(out, nanos, scale);
        out.push_str(unit);
        return;
    }

    let seconds = duration.as_secs();
    let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let in_minute = u128::from(seconds % 60) * 1_000_000_000 + u128::from(duration.subsec_nanos());
    decimal(out, in_minute, 1_000_000_000);
    out.push('s');
}

/// Appends `value / scale` with the fraction's trailing zeros left out.
fn decimal(out: &mut String, value: u128, scale: u128) {
    let _ = write!(out, "{}", value / scale);
    let fraction = value % scale;
    if fraction == 0 {
        return;
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

/// Appends `time` as an RFC 3339 UTC timestamp, whole seconds rounded up
/// (`2024-06-04T18:30:05Z`); times before 1970 are written as the epoch.
pub fn rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = whole_seconds(since);
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_date(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01, counted in 400-year eras of 146,097
/// days, with years starting in March so that the leap day falls last.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// OpenAI's durations carry milliseconds at most; a wait is rounded up so that retrying after
/// it never comes early.
pub fn round_up_to_millis(duration: Duration) -> Duration {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects fields as text.
    #[derive(Default)]
    struct Collected(Vec<(String, String)>);

    impl FieldSink for Collected {
        fn field(&mut self, name: &[u8], value: &[u8]) {
            let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
            self.0.push((text(name), text(value)));
        }
    }

    fn fields(state: &LimitState, style: Style, now: SystemTime) -> Vec<(String, String)> {
        let mut out = Collected::default();
        state.write(style, now, &mut out);
        out.0
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn go_durations() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(120), "120ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(8_640), "8.64s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_nanos(3_723_000_000_001), "1h2m3.000000001s"),
        ];
        for (duration, expected) in table {
            let mut out = String::new();
            go_duration(&mut out, duration);
            assert_eq!(out, expected, "{duration:?}");
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_717_525_805, "2024-06-04T18:30:05Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (seconds, expected) in table {
            let mut out = String::new();
            rfc3339(&mut out, UNIX_EPOCH + Duration::from_secs(seconds));
            assert_eq!(out, expected, "{seconds}");
        }
        let mut out = String::new();
        rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(1_717_525_804_001),
        );
        assert_eq!(out, "2024-06-04T18:30:05Z", "a fraction rounds up");
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }

    const STATE: LimitState = LimitState {
        requests: Some(Dimension {
            limit: 60,
            remaining: 0,
            until_full: Duration::from_secs(60),
        }),
        tokens: Some(Dimension {
            limit: 20_000,
            remaining: 19_950,
            until_full: Duration::from_nanos(150_000_001),
        }),
        retry: Some(Duration::from_millis(999_500)),
    };

    #[test]
    fn openai_fields() {
        let now = UNIX_EPOCH;
        assert_eq!(
            fields(&STATE, Style::OpenAi, now),
            pairs(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1m0s"),
                ("x-ratelimit-limit-tokens", "20000"),
                ("x-ratelimit-remaining-tokens", "19950"),
                ("x-ratelimit-reset-tokens", "151ms"),
                ("retry-after-ms", "999500"),
            ])
        );
    }

    #[test]
    fn anthropic_fields() {
        let now = UNIX_EPOCH + Duration::from_secs(1_717_525_800);
        assert_eq!(
            fields(&STATE, Style::Anthropic, now),
            pairs(&[
                ("anthropic-ratelimit-requests-limit", "60"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2024-06-04T18:31:00Z"),
                ("anthropic-ratelimit-tokens-limit", "20000"),
                ("anthropic-ratelimit-tokens-remaining", "19950"),
                ("anthropic-ratelimit-tokens-reset", "2024-06-04T18:30:01Z"),
            ])
        );
    }

    #[test]
    fn gemini_and_missing_dimensions_have_no_fields() {
        assert!(fields(&STATE, Style::Gemini, UNIX_EPOCH).is_empty());
        let only_tokens = LimitState {
            requests: None,
            retry: None,
            ..STATE
        };
        let written = fields(&only_tokens, Style::OpenAi, UNIX_EPOCH);
        assert_eq!(written.len(), 3);
        assert!(written.iter().all(|(name, _)| name.ends_with("-tokens")));
        assert!(fields(&LimitState::default(), Style::Anthropic, UNIX_EPOCH).is_empty());
    }
}
