//! Small value languages inside config strings: durations, rates and byte sizes, and the
//! error type they share with endpoint URLs.
//!
//! Pure functions from text to values, with no I/O. The error messages name what was written
//! and what would be accepted, so the validator can show them as they are.

use std::time::Duration;

/// Why a value string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A duration without a number, without a unit, or with an unknown unit.
    #[error(
        "invalid duration {0:?}; write a whole number and a unit: ms, s, m or h \
         (\"500ms\", \"10s\")"
    )]
    Duration(String),
    /// A rate not of the form `n/s`, `n/m` or `n/h`.
    #[error("invalid rate {0:?}; write a count and a period: \"5/s\", \"100/m\" or \"1000/h\"")]
    Rate(String),
    /// A rate whose count is zero.
    #[error("rate {0:?} allows nothing; the count must be at least 1")]
    ZeroRate(String),
    /// A byte size without a number or with an unknown unit.
    #[error(
        "invalid size {0:?}; write bytes or a number and a unit: B, KB, MB, GB, KiB, MiB, GiB"
    )]
    ByteSize(String),
    /// A number too large for the value it describes.
    #[error("{0:?} is too large")]
    Overflow(String),
    /// An `https://` endpoint; TLS to upstreams does not exist yet.
    #[error("https endpoints are not supported yet; use http://")]
    Https,
    /// An endpoint that is not an `http://host[:port]` URL.
    #[error("invalid endpoint {0:?}; write http://HOST[:PORT]")]
    Endpoint(String),
    /// An endpoint with a path, query or fragment; requests keep their own path.
    #[error("endpoint {0:?} has a path; give only http://HOST[:PORT] (the request path is kept)")]
    EndpointPath(String),
    /// An endpoint host that resolved to nothing or failed to resolve.
    #[error("cannot resolve {host:?}: {reason}")]
    Resolve {
        /// The host as written.
        host: String,
        /// The resolver's error.
        reason: String,
    },
}

/// A number of events allowed per period, written `"5/s"`, `"100/m"` or `"1000/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events per period; at least 1.
    pub count: u64,
    /// The period: one second, one minute or one hour.
    pub per: Duration,
}

/// Reads a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let bad = || ValueError::Duration(text.to_string());
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| ValueError::Overflow(text.to_string()))?;
    Ok(Duration::from_millis(millis))
}

/// Reads a rate: `n/s`, `n/m`, `n/min`, `n/h` or `n/hour`, with `n >= 1`.
pub fn parse_rate(text: &str) -> Result<Rate, ValueError> {
    let bad = || ValueError::Rate(text.to_string());
    let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u64 = count
        .parse()
        .map_err(|_| ValueError::Overflow(text.to_string()))?;
    let per = match period.trim() {
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(ValueError::ZeroRate(text.to_string()));
    }
    Ok(Rate { count, per })
}

/// Reads a byte size: a whole number with an optional unit (`B`, `KB`, `MB`, `GB` are powers
/// of 1000; `KiB`, `MiB`, `GiB` powers of 1024), optionally separated by one space.
pub fn parse_byte_size(text: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::ByteSize(text.to_string());
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ValueError::Overflow(text.to_string()))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest unit that divides
/// it evenly (`"100ms"`, `"60s"`, `"2m"`); for messages. Sub-millisecond parts are dropped.
pub(crate) fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    let units = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    match units
        .iter()
        .find(|(per, _)| millis > 0 && millis.is_multiple_of(*per))
    {
        Some((per, unit)) => format!("{}{unit}", millis / per),
        None if millis == 0 => "0s".to_string(),
        None => format!("{millis}ms"),
    }
}

/// Splits leading ASCII digits from the rest: `"10ms"` gives `(10, "ms")`. `None` when there
/// are no digits or they overflow `u64`.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let good = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
        ];
        for (text, want) in good {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "s", "10", "10x", "1.5s", "-1s", "10 s", "10sec", "1h30m", "ms10",
        ];
        for text in bad {
            assert_eq!(
                parse_duration(text),
                Err(ValueError::Duration(text.to_string())),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(ValueError::Duration(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615h"),
            Err(ValueError::Overflow(_))
        ));
    }

    #[test]
    fn durations_are_written_back_in_their_largest_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want), Ok(d), "{want} reads back");
        }
    }

    #[test]
    fn rates() {
        let good = [
            ("5/s", 5, 1),
            ("100/m", 100, 60),
            ("100/min", 100, 60),
            ("1000/h", 1000, 3600),
            ("1000/hour", 1000, 3600),
            (" 2 / s ", 2, 1),
        ];
        for (text, count, secs) in good {
            let want = Rate {
                count,
                per: Duration::from_secs(secs),
            };
            assert_eq!(parse_rate(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "5", "5/", "/s", "5/d", "5/sec", "-5/s", "1.5/s", "five/s", "5/s/s",
        ];
        for text in bad {
            assert_eq!(
                parse_rate(text),
                Err(ValueError::Rate(text.to_string())),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_rate("0/s"),
            Err(ValueError::ZeroRate("0/s".to_string()))
        );
        assert!(matches!(
            parse_rate("99999999999999999999/s"),
            Err(ValueError::Overflow(_))
        ));
    }

    #[test]
    fn byte_sizes() {
        let good = [
            ("0", 0),
            ("1024", 1024),
            ("1024B", 1024),
            ("10KB", 10_000),
            ("10 KiB", 10_240),
            ("10MiB", 10 << 20),
            ("3MB", 3_000_000),
            ("1GiB", 1 << 30),
            ("2GB", 2_000_000_000),
        ];
        for (text, want) in good {
            assert_eq!(parse_byte_size(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "MiB", "10mib", "10 TB", "1.5MiB", "-1", "10  MiB", "10Mb",
        ];
        for text in bad {
            assert_eq!(
                parse_byte_size(text),
                Err(ValueError::ByteSize(text.to_string())),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse_byte_size("18446744073709551615GiB"),
            Err(ValueError::Overflow(_))
        ));
    }
}
