//! The open loop's timetable: when each request of a connection is meant to be sent, so that
//! all connections together send `--rate` requests a second, evenly spaced.
//!
//! Request `n` of the whole run is due `n / rate` seconds after the start, and connection `c`
//! of `C` sends requests `c`, `c + C`, `c + 2C`, ...: each connection runs at `rate / C`, the
//! connections' phases are staggered, and no error accumulates over a long run. Sans-IO: the
//! caller reads the clock.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// One connection's timetable. Its place moves on through a shared reference, so that the
/// thread can still read it when it abandons the connection (an interrupted run).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When the run's request 0 is due.
    start: Instant,
    /// Nanoseconds between two requests of the whole run.
    gap_ns: f64,
    /// The run's number of the next request of this connection.
    next: Cell<u64>,
    /// Connections in the run: the step between this connection's numbers.
    step: u64,
}

impl Schedule {
    /// The timetable of connection `id` of `connections`, at `rate` requests a second over
    /// all of them (a positive, finite rate), starting at `start`.
    pub fn new(start: Instant, rate: f64, id: u64, connections: u64) -> Schedule {
        Schedule {
            start,
            gap_ns: 1e9 / rate,
            next: Cell::new(id),
            step: connections.max(1),
        }
    }

    /// When this connection's next request is due.
    pub fn due(&self) -> Instant {
        // Float nanoseconds cover 104 days to the nanosecond; a run is far shorter.
        let offset = (self.next.get() as f64 * self.gap_ns).min(u64::MAX as f64);
        self.start + Duration::from_nanos(offset as u64)
    }

    /// How many of this connection's requests from the next one on fall due at or after
    /// `from` and before `until`.
    pub fn due_between(&self, from: Instant, until: Instant) -> u64 {
        // The first of the connection's numbers at or after the one due at `at`.
        let first_from = |at: Instant| -> u64 {
            let offset = at.saturating_duration_since(self.start).as_nanos() as f64;
            let number = (offset / self.gap_ns).ceil().min(u64::MAX as f64) as u64;
            let next = self.next.get();
            let number = number.max(next);
            // Round up to this connection's next number (`next` modulo `step`).
            let behind = (number - next) % self.step;
            if behind == 0 {
                number
            } else {
                number.saturating_add(self.step - behind)
            }
        };
        let (low, high) = (first_from(from), first_from(until));
        high.saturating_sub(low) / self.step
    }

    /// Takes the next request's slot: the one after it becomes due.
    pub fn advance(&self) {
        self.next.set(self.next.get().saturating_add(self.step));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_interleave_at_the_total_rate() {
        let start = Instant::now();
        let connections = 4;
        let mut schedules: Vec<Schedule> = (0..connections)
            .map(|id| Schedule::new(start, 1000.0, id, connections))
            .collect();
        let mut times = Vec::new();
        for _ in 0..25 {
            for schedule in &mut schedules {
                times.push(schedule.due() - start);
                schedule.advance();
            }
        }
        times.sort();
        // 100 requests, one every millisecond, from the start on.
        let expected: Vec<Duration> = (0..100).map(Duration::from_millis).collect();
        assert_eq!(times, expected);
    }

    #[test]
    fn counts_the_requests_due_in_a_period() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        // 1,000 a second over 4 connections: connection 1 sends requests 1, 5, 9, ..., due at
        // 1 ms, 5 ms, 9 ms, ...
        let schedule = Schedule::new(start, 1000.0, 1, 4);
        assert_eq!(schedule.due_between(start, start + ms(10)), 3); // 1, 5, 9
        assert_eq!(schedule.due_between(start + ms(2), start + ms(9)), 1); // 5
        assert_eq!(schedule.due_between(start + ms(5), start + ms(6)), 1); // 5
        assert_eq!(schedule.due_between(start + ms(6), start + ms(9)), 0);
        assert_eq!(schedule.due_between(start + ms(9), start + ms(2)), 0);
        // Only from the next request on: 1 and 5 taken, 9 and 13 left before 14 ms.
        schedule.advance();
        schedule.advance();
        assert_eq!(schedule.due_between(start, start + ms(14)), 2);
        assert_eq!(schedule.due_between(start, start + ms(1000)), 248);
    }

    #[test]
    fn a_long_run_does_not_drift() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 3.0, 0, 1);
        for _ in 0..3_000_000 {
            schedule.advance();
        }
        // Request 3,000,000 at 3 per second is due after exactly 1,000,000 s.
        let late = schedule.due() - start;
        let error = late.abs_diff(Duration::from_secs(1_000_000));
        assert!(error < Duration::from_micros(1), "{late:?}");
    }
}
