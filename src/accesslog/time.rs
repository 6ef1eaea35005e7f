//! Timestamps of the access log: RFC 3339 in UTC with milliseconds, written without
//! allocating and read back by `keygate report`.

use crate::quota::{civil_from_days, days_from_civil, SECOND};

/// Length of a written timestamp: `2026-12-04T16:02:28.123Z`.
pub const TIMESTAMP_LEN: usize = 24;

/// `ns` (nanoseconds since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339 section
/// 5.6, UTC). Every `u64` fits: its last instant falls in the year 2554.
pub fn format_timestamp(ns: u64) -> [u8; TIMESTAMP_LEN] {
    let secs = ns / SECOND;
    let millis = (ns % SECOND) / 1_000_000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let in_day = secs % 86_400;

    let mut out = *b"0000-00-00T00:00:00.000Z";
    digits(&mut out[0..4], year as u64);
    digits(&mut out[5..7], u64::from(month));
    digits(&mut out[8..10], u64::from(day));
    digits(&mut out[11..13], in_day / 3600);
    digits(&mut out[14..16], in_day % 3600 / 60);
    digits(&mut out[17..19], in_day % 60);
    digits(&mut out[20..23], millis);
    out
}

/// Reads an RFC 3339 UTC timestamp as [`format_timestamp`] writes it, with any number of
/// fraction digits (or none), into milliseconds since the Unix epoch. Offsets other than `Z`
/// and instants before 1970 are refused: the access log never holds them.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !bytes.ends_with(b"Z") {
        return None;
    }
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(at, want)| bytes[at] != want) {
        return None;
    }

    let year = number(&bytes[0..4])?;
    let month = number(&bytes[5..7])?;
    let day = number(&bytes[8..10])?;
    let (hour, minute, second) = (
        number(&bytes[11..13])?,
        number(&bytes[14..16])?,
        number(&bytes[17..19])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // 60 is a leap second (RFC 3339 section 5.7); it is read as the next second's start.
    if second > 60 {
        return None;
    }
    let millis = fraction_millis(&bytes[19..bytes.len() - 1])?;

    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    // Later than 2262 would not fit the nanoseconds since the epoch that every clock of
    // keygate counts in: such a time is not one a gateway wrote.
    let millis = secs * 1000 + millis;
    (millis <= LATEST_MILLIS).then_some(millis)
}

/// The latest time read, in milliseconds since the epoch: `i64::MAX` nanoseconds, in 2262.
const LATEST_MILLIS: u64 = i64::MAX as u64 / 1_000_000;

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A run of ASCII digits as a number; `None` for anything else.
fn number(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, &b| n * 10 + u64::from(b - b'0')))
}

/// `.ddd…` (or nothing) as whole milliseconds, cut rather than rounded.
fn fraction_millis(bytes: &[u8]) -> Option<u64> {
    let Some(digits) = bytes.strip_prefix(b".") else {
        return bytes.is_empty().then_some(0);
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut millis = 0;
    for i in 0..3 {
        millis = millis * 10 + digits.get(i).map_or(0, |&b| u64::from(b - b'0'));
    }
    Some(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn formats_utc_with_milliseconds() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (999_999, "1970-01-01T00:00:00.000Z"),
            (
                1_796_400_148 * SECOND + 5 * MS + 1,
                "2026-12-04T16:02:28.005Z",
            ),
            (951_782_400 * SECOND + 999 * MS, "2000-02-29T00:00:00.999Z"),
            (u64::MAX, "2554-07-21T23:34:33.709Z"),
        ];
        for &(ns, want) in cases {
            assert_eq!(std::str::from_utf8(&format_timestamp(ns)), Ok(want), "{ns}");
        }
    }

    #[test]
    fn parses_what_it_formats_and_nothing_else() {
        for ms in [0, 1, 999, 951_782_400_999, 1_796_400_148_005, LATEST_MILLIS] {
            let text = format_timestamp(ms * MS);
            let text = std::str::from_utf8(&text).unwrap_or_default();
            assert_eq!(parse_timestamp(text), Some(ms), "{text}");
        }
        assert_eq!(
            parse_timestamp("2026-12-04T16:02:28Z"),
            Some(1_796_400_148_000)
        );
        // Beyond 2262 no clock of the gateway's can count.
        assert_eq!(parse_timestamp("2263-01-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("9999-12-31T23:59:59.999Z"), None);
        assert_eq!(
            parse_timestamp("2026-12-04T16:02:28.1234567Z"),
            Some(1_796_400_148_123)
        );
        for bad in [
            "",
            "2026-12-04T16:02:28",
            "2026-12-04 16:02:28Z",
            "2026-12-04T16:02:28+01:00",
            "2026-13-04T16:02:28Z",
            "2026-12-04T24:02:28Z",
            "2026-12-04T16:02:28.Z",
            "2026-12-04T16:02:28.1aZ",
            "20x6-12-04T16:02:28Z",
            "1969-12-31T23:59:59Z",
            "2026-12-04T16:02:2éZ",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
