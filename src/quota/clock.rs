//! Time for limits: wall-clock nanoseconds since the Unix epoch, and the UTC calendar windows
//! (minute, hour, day, month) that quotas count in.
//!
//! Wall-clock time, not a monotonic clock, because counters are persisted and must mean the
//! same after a restart; [`Clock`] keeps readings from going backwards within a run.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds in a second.
pub const SECOND: u64 = 1_000_000_000;

/// A shard's clock: wall time that never runs backwards within a run.
#[derive(Debug, Default)]
pub struct Clock {
    last: Cell<u64>,
}

impl Clock {
    /// Nanoseconds since the Unix epoch, at least the previous reading.
    pub fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos().min(u128::from(u64::MAX)) as u64);
        let now = wall.max(self.last.get());
        self.last.set(now);
        now
    }
}

/// A calendar window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// From :00 of a minute.
    Minute,
    /// From the top of an hour.
    Hour,
    /// From 00:00 UTC.
    Day,
    /// From 00:00 UTC on the 1st.
    Month,
}

impl Window {
    /// Every window, in the order quotas are kept.
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Month];

    /// The window's name in logs, metrics and headers.
    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window holding instant `now` (ns since the epoch), as `(id, end)`: the id is
    /// the window's start in seconds, the end is in nanoseconds.
    pub fn bounds(self, now: u64) -> (u64, u64) {
        let secs = now / SECOND;
        let (start, end) = match self {
            Window::Minute => (secs - secs % 60, secs - secs % 60 + 60),
            Window::Hour => (secs - secs % 3600, secs - secs % 3600 + 3600),
            Window::Day => (secs - secs % 86_400, secs - secs % 86_400 + 86_400),
            Window::Month => {
                let (year, month, _) = civil_from_days((secs / 86_400) as i64);
                let start = days_from_civil(year, month, 1) as u64 * 86_400;
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    start,
                    days_from_civil(next_year, next_month, 1) as u64 * 86_400,
                )
            }
        };
        (start, end * SECOND)
    }

    /// The window's nominal length in seconds (a 30-day month), for `RateLimit-Policy`.
    pub fn nominal_secs(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
            Window::Month => 30 * 86_400,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), in the proleptic Gregorian calendar.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01, in the proleptic Gregorian calendar; the
/// inverse of [`civil_from_days`] for valid dates.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND;

    #[test]
    fn civil_round_trip() {
        for days in [-1000, 0, 59, 365, 10_957, 19_782, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn window_bounds() {
        // 2026-12-04T16:02:28Z
        let now = 1_796_400_148 * S + 5;
        assert_eq!(
            Window::Minute.bounds(now),
            (1_796_400_120, 1_796_400_180 * S)
        );
        assert_eq!(Window::Hour.bounds(now), (1_796_400_000, 1_796_403_600 * S));
        assert_eq!(Window::Day.bounds(now), (1_796_342_400, 1_796_428_800 * S));
        // December 2026 runs to 2027-01-01T00:00:00Z.
        assert_eq!(
            Window::Month.bounds(now),
            (1_796_083_200, 1_798_761_600 * S)
        );
    }

    #[test]
    fn february_of_a_leap_year() {
        // 2028-02-10T00:00:00Z
        let now = 1_833_753_600 * S;
        let (start, end) = Window::Month.bounds(now);
        assert_eq!(start, 1_832_976_000); // 2028-02-01
        assert_eq!(end, 1_835_481_600 * S); // 2028-03-01
    }

    #[test]
    fn clock_never_goes_back() {
        let clock = Clock::default();
        let first = clock.now();
        clock.last.set(first + 10 * S);
        assert!(clock.now() >= first + 10 * S);
    }
}
