//! The value formats providers use in rate-limit fields: counts, Go-style durations,
//! delay-seconds, fractional milliseconds, protobuf JSON durations and RFC 3339 timestamps.
//!
//! Every parser takes trimmed bytes and answers `None` on anything it does not fully
//! understand: a provider's garbage is ignored, never an error and never a panic. Arithmetic
//! is done in `u128` nanoseconds and saturates, so no input can overflow; every duration is
//! capped at [`MAX_WAIT`]. Nothing here allocates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MAX_WAIT;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Fraction digits kept; later ones are below 10⁻¹⁸ of the unit and are dropped.
const MAX_FRACTION_DIGITS: u32 = 18;

/// A count: `1*DIGIT` that fits in a `u64`.
pub(super) fn count(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// A Go `time.Duration` string as OpenAI sends it in `x-ratelimit-reset-*`: `0`, or one or
/// more decimal numbers each with a unit (`1s`, `6m0s`, `1m30.5s`, `20ms`, `1h2m3s`). Units
/// are `h`, `m`, `s`, `ms`, `us`, `µs` (micro sign or Greek mu) and `ns`, case-sensitive as
/// Go writes them. Signs are refused: a negative reset means nothing to wait for.
pub(super) fn go_duration(value: &[u8]) -> Option<Duration> {
    if value == b"0" {
        return Some(Duration::ZERO);
    }
    if value.is_empty() {
        return None;
    }

    let mut rest = value;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, after_number) = Decimal::parse(rest)?;
        let (unit_nanos, after_unit) = go_unit(after_number)?;
        total = total.saturating_add(number.nanos(unit_nanos));
        rest = after_unit;
    }
    Some(capped(total))
}

/// `delay-seconds` of `Retry-After` (RFC 9110 §10.2.3): `1*DIGIT`. Any number of digits is
/// accepted and capped.
pub(super) fn delay_seconds(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = value.iter().fold(0u64, |n, &digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    });
    Some(capped(u128::from(seconds) * u128::from(NANOS_PER_SECOND)))
}

/// `retry-after-ms` as OpenAI sends it: milliseconds, possibly fractional (`1500.5`).
pub(super) fn millis(value: &[u8]) -> Option<Duration> {
    let (number, rest) = Decimal::parse(value)?;
    rest.is_empty().then(|| capped(number.nanos(1_000_000)))
}

/// A protobuf `Duration` in its JSON form, as in Google's `RetryInfo.retryDelay`: decimal
/// seconds followed by `s` (`30s`, `1.5s`, `0.000000001s`).
pub(super) fn proto_duration(value: &[u8]) -> Option<Duration> {
    let seconds = value.strip_suffix(b"s")?;
    let (number, rest) = Decimal::parse(seconds)?;
    rest.is_empty()
        .then(|| capped(number.nanos(NANOS_PER_SECOND)))
}

/// An RFC 3339 `date-time` (§5.6) as Anthropic sends it in `anthropic-ratelimit-*-reset`:
/// `2024-05-01T12:00:30Z`, `2024-05-01T12:00:30.250Z`, `2024-05-01T14:00:30+02:00`. `T` may
/// also be `t` or a space and `Z` may be `z`, as §5.6 allows. Returns how long from `now`
/// until that instant, zero when it has passed.
///
/// Hand-written rather than taken from a date crate: the format is fixed-width, the parse is
/// some forty lines, and the crates that do it (chrono, time) are far larger than the one
/// conversion needed here, while httpdate and humantime do not accept offsets.
pub(super) fn rfc3339_until(value: &[u8], now: SystemTime) -> Option<Duration> {
    let instant = Timestamp::parse(value)?;
    let now_nanos: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    let left = instant.unix_nanos() - now_nanos;
    Some(if left <= 0 {
        Duration::ZERO
    } else {
        capped(left as u128)
    })
}

/// A non-negative decimal number: `digits ["." digits]` or `"." digits`, at least one digit.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    /// The whole part, saturated at `u64::MAX`.
    whole: u64,
    /// The first [`MAX_FRACTION_DIGITS`] fraction digits as an integer.
    fraction: u64,
    /// How many digits `fraction` holds.
    fraction_digits: u32,
}

impl Decimal {
    /// Reads a decimal number at the start of `bytes`; returns it and the bytes after it.
    fn parse(bytes: &[u8]) -> Option<(Decimal, &[u8])> {
        let whole_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let whole = bytes[..whole_len].iter().fold(0u64, |n, &digit| {
            n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        });
        let mut number = Decimal {
            whole,
            fraction: 0,
            fraction_digits: 0,
        };

        let mut rest = &bytes[whole_len..];
        let mut fraction_len = 0;
        if let Some(after_dot) = rest.strip_prefix(b".") {
            fraction_len = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
            for &digit in after_dot[..fraction_len]
                .iter()
                .take(MAX_FRACTION_DIGITS as usize)
            {
                number.fraction = number.fraction * 10 + u64::from(digit - b'0');
                number.fraction_digits += 1;
            }
            rest = &after_dot[fraction_len..];
        }

        (whole_len + fraction_len > 0).then_some((number, rest))
    }

    /// The number of nanoseconds this many units of `unit_nanos` make.
    fn nanos(self, unit_nanos: u64) -> u128 {
        let whole = u128::from(self.whole) * u128::from(unit_nanos);
        // Below 10^18 times at most 3.6 * 10^12: far inside u128.
        let fraction =
            u128::from(self.fraction) * u128::from(unit_nanos) / 10u128.pow(self.fraction_digits);
        whole.saturating_add(fraction)
    }
}

/// A Go duration unit at the start of `bytes`: its length in nanoseconds and the rest.
fn go_unit(bytes: &[u8]) -> Option<(u64, &[u8])> {
    // Longer spellings first, so `ms` is not read as `m` followed by garbage.
    const UNITS: &[(&[u8], u64)] = &[
        (b"ns", 1),
        (b"us", 1_000),
        ("\u{b5}s".as_bytes(), 1_000),
        ("\u{3bc}s".as_bytes(), 1_000),
        (b"ms", 1_000_000),
        (b"s", NANOS_PER_SECOND),
        (b"m", 60 * NANOS_PER_SECOND),
        (b"h", 3_600 * NANOS_PER_SECOND),
    ];
    UNITS
        .iter()
        .find_map(|&(unit, nanos)| bytes.strip_prefix(unit).map(|rest| (nanos, rest)))
}

/// A duration of `nanos` nanoseconds, at most [`MAX_WAIT`].
fn capped(nanos: u128) -> Duration {
    let max = MAX_WAIT.as_nanos();
    if nanos >= max {
        MAX_WAIT
    } else {
        // Below MAX_WAIT, so it fits in u64.
        Duration::from_nanos(nanos as u64)
    }
}

/// An RFC 3339 instant, split into the fields it was written with.
struct Timestamp {
    /// Days since 1970-01-01 of the written date, before the offset is applied.
    days: i64,
    /// Seconds into that day, up to 86 400 for a leap second.
    seconds: i64,
    nanos: i64,
    /// The offset east of UTC, in seconds.
    offset: i64,
}

impl Timestamp {
    /// `YYYY-MM-DD(T|t| )hh:mm:ss[.frac](Z|z|(+|-)hh:mm)`, every field range-checked.
    fn parse(value: &[u8]) -> Option<Timestamp> {
        let date = value.get(..10)?;
        let year = digits(date.get(0..4)?)?;
        let month = digits(date.get(5..7)?)?;
        let day = digits(date.get(8..10)?)?;
        if date[4] != b'-' || date[7] != b'-' || !(1..=12).contains(&month) {
            return None;
        }
        if day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if !matches!(value.get(10)?, b'T' | b't' | b' ') {
            return None;
        }

        let time = value.get(11..19)?;
        let (hour, minute, second) = (
            digits(&time[0..2])?,
            digits(&time[3..5])?,
            digits(&time[6..8])?,
        );
        // §5.6 allows second 60 for a leap second; it is read as the next second.
        if time[2] != b':' || time[5] != b':' || hour > 23 || minute > 59 || second > 60 {
            return None;
        }

        let (nanos, zone) = fraction(&value[19..])?;
        Some(Timestamp {
            days: days_from_civil(year, month, day),
            seconds: hour * 3_600 + minute * 60 + second,
            nanos,
            offset: offset(zone)?,
        })
    }

    /// Nanoseconds since the Unix epoch (negative before it).
    fn unix_nanos(&self) -> i128 {
        let seconds = self.days * 86_400 + self.seconds - self.offset;
        i128::from(seconds) * i128::from(NANOS_PER_SECOND) + i128::from(self.nanos)
    }
}

/// An optional `.1*DIGIT` second fraction: its nanoseconds (further digits dropped) and the
/// bytes after it.
fn fraction(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let Some(after_dot) = bytes.strip_prefix(b".") else {
        return Some((0, bytes));
    };
    let len = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let mut nanos = 0;
    for position in 0..9 {
        let digit = after_dot.get(position).filter(|_| position < len);
        nanos = nanos * 10 + digit.map_or(0, |&d| i64::from(d - b'0'));
    }
    Some((nanos, &after_dot[len..]))
}

/// The time zone of an RFC 3339 timestamp, as seconds east of UTC: `Z`, `z` or `±hh:mm`
/// (`-00:00`, "offset unknown", counts as UTC).
fn offset(zone: &[u8]) -> Option<i64> {
    match zone {
        b"Z" | b"z" => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3_600 + minutes * 60;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => None,
    }
}

/// A fixed-width run of ASCII digits as a number.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date, for years 0 to 9999: the year is
/// counted from March, so the leap day falls at the end of it, and 400-year eras repeat.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    #[test]
    fn counts() {
        let table: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"60", Some(60)),
            (b"149984", Some(149_984)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"99999999999999999999999999", None),
            (b"", None),
            (b"-1", None),
            (b"+1", None),
            (b"1.0", None),
            (b"1 000", None),
            (b"12k", None),
        ];
        for (input, expected) in table {
            assert_eq!(
                count(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn go_durations() {
        let day = Some(MAX_WAIT);
        let table: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("0s", Some(Duration::ZERO)),
            ("1s", ms(1_000)),
            ("6m0s", ms(360_000)),
            ("1m30.5s", ms(90_500)),
            ("20ms", ms(20)),
            ("1h2m3s", ms(3_723_000)),
            ("1.5h", ms(5_400_000)),
            (".5s", ms(500)),
            ("5.s", ms(5_000)),
            ("500us", Some(Duration::from_micros(500))),
            ("500µs", Some(Duration::from_micros(500))),
            ("500μs", Some(Duration::from_micros(500))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("1.000000001s", Some(Duration::new(1, 1))),
            ("0.0000000000000000000001s", Some(Duration::ZERO)),
            ("1s1s", ms(2_000)),
            ("25h", day),
            ("99999999999999999999999h", day),
            ("18446744073709551615h18446744073709551615h", day),
            ("", None),
            ("s", None),
            (".s", None),
            ("1", None),
            ("10", None),
            ("1x", None),
            ("1S", None),
            ("1 s", None),
            ("-1s", None),
            ("+1s", None),
            ("1s ", None),
            ("1..5s", None),
            ("1m30", None),
            ("µ", None),
            ("1µ", None),
        ];
        for (input, expected) in table {
            assert_eq!(go_duration(input.as_bytes()), *expected, "{input:?}");
        }
    }

    #[test]
    fn delay_seconds_values() {
        let table: &[(&[u8], Option<Duration>)] = &[
            (b"0", Some(Duration::ZERO)),
            (b"120", ms(120_000)),
            (b"86400", Some(MAX_WAIT)),
            (b"86401", Some(MAX_WAIT)),
            (b"999999999999999999999999999999", Some(MAX_WAIT)),
            (b"", None),
            (b"-5", None),
            (b"1.5", None),
            (b"5s", None),
        ];
        for (input, expected) in table {
            assert_eq!(delay_seconds(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn millis_values() {
        let table: &[(&[u8], Option<Duration>)] = &[
            (b"0", Some(Duration::ZERO)),
            (b"1500", ms(1_500)),
            (b"1500.5", Some(Duration::from_micros(1_500_500))),
            (b"0.001", Some(Duration::from_nanos(1_000))),
            (b".5", Some(Duration::from_micros(500))),
            (b"1e3", None),
            (b"-1", None),
            (b"", None),
            (b".", None),
            (b"12ms", None),
            (b"99999999999999999999999999999.9", Some(MAX_WAIT)),
        ];
        for (input, expected) in table {
            assert_eq!(millis(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn proto_durations() {
        let table: &[(&[u8], Option<Duration>)] = &[
            (b"30s", ms(30_000)),
            (b"1.5s", ms(1_500)),
            (b"0s", Some(Duration::ZERO)),
            (b"0.000000001s", Some(Duration::from_nanos(1))),
            (b"-1.5s", None),
            (b"30", None),
            (b"s", None),
            (b"1m", None),
            (b"", None),
            (b"100000000000s", Some(MAX_WAIT)),
        ];
        for (input, expected) in table {
            assert_eq!(proto_duration(input), *expected, "{input:?}");
        }
    }

    /// 2024-05-01T12:00:00Z.
    const NOON: u64 = 1_714_564_800;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn rfc3339_timestamps() {
        let now = at(NOON);
        let table: &[(&str, Option<Duration>)] = &[
            ("2024-05-01T12:00:30Z", ms(30_000)),
            ("2024-05-01T12:00:30z", ms(30_000)),
            ("2024-05-01t12:00:30Z", ms(30_000)),
            ("2024-05-01 12:00:30Z", ms(30_000)),
            ("2024-05-01T12:00:30.25Z", ms(30_250)),
            (
                "2024-05-01T12:00:30.123456789123Z",
                Some(Duration::new(30, 123_456_789)),
            ),
            ("2024-05-01T14:00:30+02:00", ms(30_000)),
            ("2024-05-01T07:30:30-04:30", ms(30_000)),
            ("2024-05-01T12:00:30-00:00", ms(30_000)),
            ("2024-05-01T12:00:59Z", ms(59_000)),
            ("2024-05-01T12:00:60Z", ms(60_000)),
            ("2024-05-01T12:00:00Z", Some(Duration::ZERO)),
            ("2024-05-01T11:59:00Z", Some(Duration::ZERO)),
            ("1970-01-01T00:00:00Z", Some(Duration::ZERO)),
            ("0000-01-01T00:00:00Z", Some(Duration::ZERO)),
            ("9999-12-31T23:59:59Z", Some(MAX_WAIT)),
            ("2024-05-02T12:00:00Z", Some(MAX_WAIT)),
            ("2024-02-29T00:00:00Z", Some(Duration::ZERO)),
            ("2023-02-29T00:00:00Z", None),
            ("2024-04-31T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-00-01T00:00:00Z", None),
            ("2024-05-00T00:00:00Z", None),
            ("2024-05-01T24:00:00Z", None),
            ("2024-05-01T12:60:00Z", None),
            ("2024-05-01T12:00:61Z", None),
            ("2024-05-01T12:00:30", None),
            ("2024-05-01T12:00:30.Z", None),
            ("2024-05-01T12:00:30+0200", None),
            ("2024-05-01T12:00:30+24:00", None),
            ("2024-05-01T12:00:30Z ", None),
            ("2024-05-01", None),
            ("2024-5-1T12:00:30Z", None),
            ("+2024-05-01T12:00:30Z", None),
            ("2024/05/01T12:00:30Z", None),
            ("", None),
        ];
        for (input, expected) in table {
            assert_eq!(rfc3339_until(input.as_bytes(), now), *expected, "{input:?}");
        }
    }

    #[test]
    fn rfc3339_agrees_with_the_calendar() {
        // 2000-03-01 follows a leap day in a year divisible by 400; 2100-03-01 does not.
        let table: &[(&str, u64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("2100-03-01T00:00:00Z", 4_107_542_400),
            ("2038-01-19T03:14:08Z", 1 << 31),
        ];
        for (input, seconds) in table {
            let timestamp = Timestamp::parse(input.as_bytes()).expect(input);
            let nanos = i128::from(*seconds) * i128::from(NANOS_PER_SECOND);
            assert_eq!(timestamp.unix_nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn now_before_the_epoch_is_handled() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(
            rfc3339_until(b"1970-01-01T00:00:05Z", before),
            Some(Duration::from_secs(15))
        );
    }
}
