//! What a run counts: per thread, a latency histogram (and, when asked for, one of service
//! times and one per kind of request in the mix), responses by status and failures by kind,
//! merged at the end; and live counters the progress line reads while the run goes on.
//!
//! A thread's [`Stats`] is only touched by that thread. The live counters are one cache line
//! per thread, written by it alone, so recording never contends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency the histogram tells apart, in microseconds; longer ones count as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Status codes are three digits (RFC 9110 §15).
const STATUS_CODES: usize = 1000;

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened (each failed attempt counts once).
    Connect,
    /// Reading or writing failed.
    Io,
    /// No response within `--timeout`.
    Timeout,
    /// The server closed the connection before answering.
    Closed,
    /// The response could not be parsed.
    Malformed,
}

/// Failures by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Failures {
    /// Connections that could not be opened.
    pub connect: u64,
    /// Reads or writes that failed.
    pub io: u64,
    /// Requests without a response within the timeout.
    pub timeout: u64,
    /// Requests whose connection the server closed before answering.
    pub closed: u64,
    /// Responses that could not be parsed.
    pub malformed: u64,
}

impl Failures {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.timeout + self.closed + self.malformed
    }

    /// Counts `count` failures of kind `failure`.
    pub fn count(&mut self, failure: Failure, count: u64) {
        let counter = match failure {
            Failure::Connect => &mut self.connect,
            Failure::Io => &mut self.io,
            Failure::Timeout => &mut self.timeout,
            Failure::Closed => &mut self.closed,
            Failure::Malformed => &mut self.malformed,
        };
        *counter += count;
    }

    fn add(&mut self, other: &Failures) {
        self.connect += other.connect;
        self.io += other.io;
        self.timeout += other.timeout;
        self.closed += other.closed;
        self.malformed += other.malformed;
    }
}

/// One recorded response's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// From when the request was due (open loop) or written (closed loop) to the response's
    /// end.
    pub latency: Duration,
    /// From the request's write to the response's end.
    pub service: Duration,
    /// The request's kind, by index in the mix.
    pub kind: usize,
}

/// The recorded part of a run on one thread, or on all of them once merged.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of each response, in microseconds, from the write of its request (closed loop)
    /// or from when it was due (open loop) to its end.
    pub latency: Histogram<u64>,
    /// Open loop only: each response's service time in microseconds, from the actual write of
    /// its request, as a measurement without coordinated-omission correction would see it.
    pub service: Option<Histogram<u64>>,
    /// With a mix of several kinds: each kind's latency, by index in the mix.
    pub by_kind: Vec<Histogram<u64>>,
    /// Responses by status code.
    statuses: Box<[u64]>,
    /// Requests that got no response, by reason.
    pub failures: Failures,
    /// Open loop: requests due after the warm-up and before the deadline that were never
    /// sent, because their connection was still waiting for earlier responses.
    pub unsent: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Nothing recorded yet; latency only.
    pub fn new() -> Self {
        Self::with(1, false)
    }

    /// Nothing recorded yet; a histogram per kind when there are several `kinds`, and one of
    /// service times when `service`.
    pub fn with(kinds: usize, service: bool) -> Self {
        let kinds = if kinds > 1 { kinds } else { 0 };
        Stats {
            latency: histogram(),
            service: service.then(histogram),
            by_kind: (0..kinds).map(|_| histogram()).collect(),
            statuses: vec![0; STATUS_CODES].into_boxed_slice(),
            failures: Failures::default(),
            unsent: 0,
        }
    }

    /// Records a response with `status` and the times of `sample`.
    pub fn response(&mut self, status: u16, sample: Sample) {
        record(&mut self.latency, sample.latency);
        if let Some(service) = &mut self.service {
            record(service, sample.service);
        }
        if let Some(kind) = self.by_kind.get_mut(sample.kind) {
            record(kind, sample.latency);
        }
        if let Some(count) = self.statuses.get_mut(usize::from(status)) {
            *count += 1;
        }
    }

    /// Records `count` requests that failed for `failure`.
    pub fn failure(&mut self, failure: Failure, count: u64) {
        self.failures.count(failure, count);
    }

    /// Responses recorded.
    pub fn responses(&self) -> u64 {
        self.latency.len()
    }

    /// The status codes seen, in order, with their counts.
    pub fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.statuses
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(status, &count)| (status as u16, count))
    }

    /// Adds what `other` recorded.
    pub fn merge(&mut self, other: &Stats) {
        // All histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        if let (Some(mine), Some(theirs)) = (&mut self.service, &other.service) {
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.by_kind.iter_mut().zip(&other.by_kind) {
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.statuses.iter_mut().zip(other.statuses.iter()) {
            *mine += theirs;
        }
        self.failures.add(&other.failures);
        self.unsent += other.unsent;
    }
}

/// An empty latency histogram: 1 µs to an hour, three significant digits (0.1% resolution at
/// any latency).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Records `latency` in microseconds; under 1 µs counts as 1, over an hour as an hour.
fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// Live counts of responses and failures, warm-up included, one slot per thread.
#[derive(Debug)]
pub struct Progress {
    slots: Box<[Slot]>,
}

/// One thread's counters, alone on their cache line (two on CPUs that fetch lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    responses: AtomicU64,
    failures: AtomicU64,
}

impl Progress {
    /// Counters for `threads` threads.
    pub fn new(threads: usize) -> Self {
        Progress {
            slots: (0..threads).map(|_| Slot::default()).collect(),
        }
    }

    /// Counts `count` responses on thread `thread`.
    pub fn add_responses(&self, thread: usize, count: u64) {
        // Only this thread writes its slot: a load and a store suffice, without a locked add.
        let slot = &self.slots[thread].responses;
        slot.store(slot.load(Ordering::Relaxed) + count, Ordering::Relaxed);
    }

    /// Counts `count` failures on thread `thread`.
    pub fn add_failures(&self, thread: usize, count: u64) {
        let slot = &self.slots[thread].failures;
        slot.store(slot.load(Ordering::Relaxed) + count, Ordering::Relaxed);
    }

    /// Responses and failures so far, over all threads.
    pub fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .fold((0, 0), |(responses, failures), slot| {
                (
                    responses + slot.responses.load(Ordering::Relaxed),
                    failures + slot.failures.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(micros: u64) -> Sample {
        Sample {
            latency: Duration::from_micros(micros),
            service: Duration::from_micros(micros),
            kind: 0,
        }
    }

    #[test]
    fn records_and_merges() {
        let mut one = Stats::new();
        one.response(200, sample(100));
        one.response(429, sample(300));
        one.failure(Failure::Timeout, 2);
        let mut two = Stats::new();
        two.response(
            200,
            Sample {
                latency: Duration::from_nanos(10),
                ..sample(0)
            },
        );
        two.failure(Failure::Connect, 1);

        one.merge(&two);
        assert_eq!(one.responses(), 3);
        assert_eq!(one.statuses().collect::<Vec<_>>(), [(200, 2), (429, 1)]);
        assert_eq!(one.failures.timeout, 2);
        assert_eq!(one.failures.connect, 1);
        assert_eq!(one.failures.total(), 3);
        // Sub-microsecond latencies count as 1 µs rather than vanish.
        assert_eq!(one.latency.min(), 1);
        assert!(one.latency.max() >= 300);
    }

    #[test]
    fn service_times_and_kinds_are_kept_apart() {
        let mut one = Stats::with(2, true);
        let delayed = Sample {
            latency: Duration::from_millis(500),
            service: Duration::from_millis(2),
            kind: 1,
        };
        one.response(200, delayed);
        let mut two = Stats::with(2, true);
        two.response(200, sample(1000));
        one.merge(&two);

        assert_eq!(one.latency.max() / 1000, 500);
        let service = one.service.as_ref().unwrap();
        assert_eq!(service.len(), 2);
        assert!(service.max() < 2100, "{}", service.max());
        assert_eq!(one.by_kind[0].len(), 1);
        assert_eq!(one.by_kind[1].len(), 1);
        assert_eq!(one.by_kind[1].max() / 1000, 500);

        // One kind needs no histogram of its own, and the closed loop no service times.
        let plain = Stats::with(1, false);
        assert!(plain.by_kind.is_empty() && plain.service.is_none());
    }

    #[test]
    fn progress_sums_threads() {
        let progress = Progress::new(2);
        progress.add_responses(0, 5);
        progress.add_responses(1, 7);
        progress.add_failures(1, 1);
        assert_eq!(progress.totals(), (12, 1));
    }
}
