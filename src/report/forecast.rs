//! When a client key's calendar quota runs out, at the rate it has been used lately.
//!
//! Sans-IO: from the times of a key's charged requests (as the access log shows them) and
//! the instant the forecast is made for, it counts the usage in the quota's current window
//! and projects the recent rate forward. "Recent" is [`RECENT_MS`]: the last hour of the
//! log, or all of it when it covers less.

use serde::Serialize;

use crate::accesslog::format_timestamp;
use crate::quota::Window;

/// How far back the recent rate looks: one hour, in milliseconds.
pub const RECENT_MS: u64 = 3_600_000;

/// The forecast for one quota window of one client key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// The client key's id.
    pub key_id: String,
    /// The key's tenant, if any.
    pub tenant: Option<String>,
    /// `minute`, `hour`, `day` or `month` (UTC calendar windows).
    pub window: &'static str,
    /// The quota: requests allowed in the window.
    pub limit: u64,
    /// Charged requests in the current window, counted from the log.
    pub used: u64,
    /// `limit - used`, at least 0.
    pub remaining: u64,
    /// When the current window ends and the quota is whole again (RFC 3339).
    pub resets_at: String,
    /// Charged requests per hour over the recent span.
    pub recent_per_hour: f64,
    /// What happens before the window ends at that rate.
    pub outcome: Outcome,
    /// When the quota runs out (`runs_out`) or ran out (`exhausted`), RFC 3339.
    pub runs_out_at: Option<String>,
}

/// What a quota's window holds, at the recent rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already used up in this window.
    Exhausted,
    /// Used up before the window ends.
    RunsOut,
    /// Lasts until the window ends (including when the key was idle).
    Lasts,
}

/// The facts a forecast starts from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Basis<'a> {
    /// The key's charged requests, ms since the epoch, sorted.
    pub charged_ms: &'a [u64],
    /// The instant forecast for: the last record in the logs.
    pub as_of_ms: u64,
    /// The first record in the logs, which bounds how far back "recent" can look.
    pub log_start_ms: u64,
}

impl Basis<'_> {
    /// Charged requests per millisecond lately, as (requests, span in ms); `None` when the
    /// logs span no time at all.
    fn recent(&self) -> Option<(u64, u64)> {
        let since = self.as_of_ms.saturating_sub(RECENT_MS);
        let (count, span) = if self.log_start_ms > since {
            // Less than an hour of log: all of it, from its first record.
            (
                self.count_from(self.log_start_ms),
                self.as_of_ms - self.log_start_ms,
            )
        } else {
            (self.count_from(since + 1), RECENT_MS)
        };
        (span > 0).then_some((count, span))
    }

    /// Charged requests from `start_ms` up to the forecast's instant, both included.
    fn count_from(&self, start_ms: u64) -> u64 {
        let after_start = self.charged_ms.partition_point(|&t| t < start_ms);
        let up_to_now = self.charged_ms.partition_point(|&t| t <= self.as_of_ms);
        up_to_now.saturating_sub(after_start) as u64
    }

    /// The forecast of a quota of `limit` requests per `window`.
    pub fn forecast(
        &self,
        key_id: &str,
        tenant: Option<&str>,
        window: Window,
        limit: u64,
    ) -> Forecast {
        let (start_s, end_ns) = window.bounds(self.as_of_ms.saturating_mul(1_000_000));
        let window_start_ms = start_s.saturating_mul(1000);
        let window_end_ms = end_ns / 1_000_000;
        let used = self.count_from(window_start_ms);
        let remaining = limit.saturating_sub(used);
        let recent = self.recent();

        let (outcome, runs_out_ms) = if remaining == 0 {
            // The request that used the last of the quota.
            let first_in_window = self.charged_ms.partition_point(|&t| t < window_start_ms);
            let nth = first_in_window
                .saturating_add(limit as usize)
                .saturating_sub(1);
            let last = self.charged_ms.get(nth).copied();
            (Outcome::Exhausted, last)
        } else {
            match recent {
                Some((count, span)) if count > 0 => {
                    let wait = u128::from(remaining) * u128::from(span) / u128::from(count);
                    let at = u128::from(self.as_of_ms) + wait;
                    if at < u128::from(window_end_ms) {
                        (Outcome::RunsOut, Some(at as u64))
                    } else {
                        (Outcome::Lasts, None)
                    }
                }
                _ => (Outcome::Lasts, None),
            }
        };

        Forecast {
            key_id: key_id.to_owned(),
            tenant: tenant.map(str::to_owned),
            window: window.name(),
            limit,
            used,
            remaining,
            resets_at: timestamp(window_end_ms),
            recent_per_hour: recent.map_or(0.0, |(count, span)| {
                count as f64 * RECENT_MS as f64 / span as f64
            }),
            outcome,
            runs_out_at: runs_out_ms.map(timestamp),
        }
    }
}

/// `ms` since the epoch as RFC 3339 with milliseconds.
pub(super) fn timestamp(ms: u64) -> String {
    let text = format_timestamp(ms.saturating_mul(1_000_000));
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-04T16:00:00Z, in ms.
    const HOUR_START: u64 = 1_796_400_000_000;
    const MINUTE: u64 = 60_000;

    fn basis(charged_ms: &[u64], as_of_ms: u64, log_start_ms: u64) -> Basis<'_> {
        Basis {
            charged_ms,
            as_of_ms,
            log_start_ms,
        }
    }

    #[test]
    fn a_steady_key_runs_out_when_the_rate_says() {
        // One request a minute for the two hours before 16:30; a day quota of 1000.
        let charged: Vec<u64> = (1..=120)
            .map(|i| HOUR_START - 90 * MINUTE + i * MINUTE)
            .collect();
        let as_of = HOUR_START + 30 * MINUTE;
        let forecast =
            basis(&charged, as_of, charged[0]).forecast("k", Some("t"), Window::Day, 1000);
        // 2026-12-04 began at 00:00; every one of the 120 requests fell on the day.
        assert_eq!((forecast.used, forecast.remaining), (120, 880));
        assert_eq!(forecast.recent_per_hour, 60.0);
        // 880 more at 60 an hour: 14 h 40 min after 16:30, past the day's end.
        assert_eq!(forecast.outcome, Outcome::Lasts);
        assert_eq!(forecast.resets_at, "2026-12-05T00:00:00.000Z");

        // A 200 a day quota runs out 80 minutes after 16:30.
        let forecast = basis(&charged, as_of, charged[0]).forecast("k", None, Window::Day, 200);
        assert_eq!(forecast.outcome, Outcome::RunsOut);
        assert_eq!(
            forecast.runs_out_at.as_deref(),
            Some("2026-12-04T17:50:00.000Z")
        );
        assert_eq!(forecast.tenant, None);

        // The hour window holds the 31 requests from 16:00 on.
        let forecast = basis(&charged, as_of, charged[0]).forecast("k", None, Window::Hour, 40);
        assert_eq!((forecast.used, forecast.remaining), (31, 9));
        assert_eq!(
            forecast.runs_out_at.as_deref(),
            Some("2026-12-04T16:39:00.000Z")
        );
        assert_eq!(forecast.resets_at, "2026-12-04T17:00:00.000Z");
    }

    #[test]
    fn an_exhausted_quota_names_the_request_that_used_it_up() {
        let charged = [HOUR_START + 1000, HOUR_START + 2000, HOUR_START + 3000];
        let forecast =
            basis(&charged, HOUR_START + 5000, HOUR_START).forecast("k", None, Window::Minute, 2);
        assert_eq!((forecast.used, forecast.remaining), (3, 0));
        assert_eq!(forecast.outcome, Outcome::Exhausted);
        assert_eq!(
            forecast.runs_out_at.as_deref(),
            Some("2026-12-04T16:00:02.000Z")
        );
    }

    #[test]
    fn a_short_log_is_its_own_recent_span_and_an_idle_key_lasts() {
        // 10 requests in the log's first 10 minutes: 60 an hour.
        let charged: Vec<u64> = (0..10).map(|i| HOUR_START + i * MINUTE).collect();
        let as_of = HOUR_START + 10 * MINUTE;
        let forecast = basis(&charged, as_of, HOUR_START).forecast("k", None, Window::Hour, 20);
        assert_eq!(forecast.recent_per_hour, 60.0);
        assert_eq!(
            forecast.runs_out_at.as_deref(),
            Some("2026-12-04T16:20:00.000Z")
        );

        // Requests older than the last hour set no pace.
        let old = [HOUR_START - 3 * 3_600_000];
        let forecast = basis(&old, HOUR_START, old[0]).forecast("k", None, Window::Month, 5);
        assert_eq!((forecast.used, forecast.outcome), (1, Outcome::Lasts));
        assert_eq!(forecast.recent_per_hour, 0.0);
        assert_eq!(forecast.resets_at, "2027-01-01T00:00:00.000Z");

        // A log of one instant has no rate at all.
        let forecast =
            basis(&[HOUR_START], HOUR_START, HOUR_START).forecast("k", None, Window::Day, 5);
        assert_eq!((forecast.used, forecast.outcome), (1, Outcome::Lasts));
    }
}
