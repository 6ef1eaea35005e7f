//! One load thread: a monoio runtime driving its share of the connections, each a task, until
//! the run's end (its deadline, its share of `--requests` answered, or SIGINT or SIGTERM).
//!
//! The connections of a thread share its [`Thread`]: the request budget and the recorded
//! stats, in cells, since they run on this thread alone. Threads share only the read-only
//! [`Plan`] and the live progress counters.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::conn;
use super::keys::{KeyPicker, KeyScope};
use super::mix;
use super::pacer::Pacer;
use super::request::RequestTemplate;
use super::schedule::Schedule;
use super::stats::{Failure, Progress, Sample, Stats};
use crate::interrupt::Interrupt;

/// What every connection of a run does; read-only once the run starts.
#[derive(Debug)]
pub struct Plan {
    /// Where connections go.
    pub addr: SocketAddr,
    /// The requests sent: one template per kind of the mix, in the mix's order (one without
    /// `--mix`).
    pub templates: Vec<RequestTemplate>,
    /// The draw of a kind for each request, with several kinds.
    pub mix: Option<mix::Picker>,
    /// How keys are drawn, when requests carry keys.
    pub picker: Option<KeyPicker>,
    /// When keys are drawn.
    pub scope: KeyScope,
    /// Requests in flight per connection, at least 1.
    pub pipeline: usize,
    /// Requests after which a connection is closed and opened again, if any.
    pub reconnect_every: Option<u64>,
    /// How long a request may wait for its response, and a connect for its connection.
    pub timeout: Duration,
    /// Requests written before this are warm-up: sent, but neither recorded nor budgeted.
    pub warmup_end: Instant,
    /// No request is written after this, and responses after it are not recorded.
    pub deadline: Option<Instant>,
    /// The seed of every connection's random generator, mixed with the connection's number.
    pub seed: u64,
    /// Open loop: requests a second over all connections; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Open loop: the least time between two wake-ups of a thread's timer.
    pub tick: Duration,
    /// Connections in the run, over all threads.
    pub connections: u64,
    /// When the run (its warm-up) starts: the open loop's first request is due then.
    pub start: Instant,
    /// Raised by SIGINT or SIGTERM: the run ends at once.
    pub interrupt: Interrupt,
}

impl Plan {
    /// Whether the deadline has passed at `now`.
    pub fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }
}

/// What a thread's connections share.
#[derive(Debug)]
pub struct Thread {
    index: usize,
    stats: RefCell<Stats>,
    /// Requests still to send after the warm-up; `None` without `--requests`.
    budget: Cell<Option<u64>>,
    /// When the last recorded response ended.
    last_response: Cell<Option<Instant>>,
    /// When the warm-up ends.
    warmup_end: Instant,
    /// Open loop: the timetables of the connections still running, for an interrupted run
    /// to count what they never sent.
    timetables: RefCell<Vec<Rc<Schedule>>>,
    progress: Arc<Progress>,
}

impl Thread {
    /// Takes up to `want` requests from the budget; returns how many may be sent.
    pub fn take(&self, want: usize) -> usize {
        match self.budget.get() {
            None => want,
            Some(left) => {
                let taken = left.min(want as u64);
                self.budget.set(Some(left - taken));
                taken as usize
            }
        }
    }

    /// Gives back `count` requests taken but never answered nor failed, to be sent again.
    pub fn refund(&self, count: usize) {
        if let Some(left) = self.budget.get() {
            self.budget.set(Some(left + count as u64));
        }
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.budget.get() == Some(0)
    }

    /// Counts a response that ended at `at`, and records it when `recorded`.
    pub fn response(&self, status: u16, sample: Sample, at: Instant, recorded: bool) {
        self.progress.add_responses(self.index, 1);
        if recorded {
            self.stats.borrow_mut().response(status, sample);
            self.last_response.set(Some(at));
        }
    }

    /// Records `count` requests that fell due in the recorded period and were never sent,
    /// as far as the budget would have let them go (and takes them from it, so that the
    /// connections of a thread share what is left).
    pub fn unsent(&self, count: u64) {
        let count = self.take(count.try_into().unwrap_or(usize::MAX)) as u64;
        self.stats.borrow_mut().unsent += count;
    }

    /// Follows the timetable of a connection that starts.
    pub fn follow(&self, schedule: &Rc<Schedule>) {
        self.timetables.borrow_mut().push(Rc::clone(schedule));
    }

    /// The connection of `schedule` ends: the requests of its timetable due in the recorded
    /// period, up to `deadline`, that it never sent are unsent (none without a deadline: a
    /// run of `--requests` ends when they are answered).
    pub fn timetable_ends(&self, schedule: &Rc<Schedule>, deadline: Option<Instant>) {
        let mut timetables = self.timetables.borrow_mut();
        if let Some(position) = timetables.iter().position(|t| Rc::ptr_eq(t, schedule)) {
            timetables.swap_remove(position);
        }
        drop(timetables);
        if let Some(deadline) = deadline {
            self.unsent(schedule.due_between(self.warmup_end, deadline));
        }
    }

    /// The run was interrupted at `at`: the connections still running are abandoned, and
    /// what their timetables held due in the recorded period before `at` is unsent.
    fn interrupted(&self, at: Instant) {
        for schedule in self.timetables.take() {
            self.unsent(schedule.due_between(self.warmup_end, at));
        }
    }

    /// Counts `count` failed requests, of which `recorded` are recorded.
    pub fn failure(&self, failure: Failure, count: usize, recorded: usize) {
        self.progress.add_failures(self.index, count as u64);
        if recorded > 0 {
            self.stats.borrow_mut().failure(failure, recorded as u64);
        }
    }
}

/// What a thread hands back.
#[derive(Debug)]
pub struct Outcome {
    /// What it recorded.
    pub stats: Stats,
    /// When its last recorded response ended, or else its last connection.
    pub finished: Instant,
}

/// Runs the connections numbered `ids` on this thread until the run ends. `budget` is this
/// thread's share of `--requests`.
pub fn run(
    plan: Arc<Plan>,
    index: usize,
    ids: Range<u64>,
    budget: Option<u64>,
    progress: Arc<Progress>,
) -> anyhow::Result<Outcome> {
    crate::runtime::block_on(|driver| async move {
        debug!(
            thread = index,
            driver,
            connections = ids.end - ids.start,
            "load thread"
        );
        let stats = Stats::with(plan.templates.len(), plan.rate.is_some());
        let thread = Rc::new(Thread {
            index,
            stats: RefCell::new(stats),
            budget: Cell::new(budget),
            last_response: Cell::new(None),
            warmup_end: plan.warmup_end,
            timetables: RefCell::new(Vec::new()),
            progress,
        });
        // Only the open loop sleeps; the pacer's task ends with the runtime.
        let fine = plan.rate.is_some() && plan.tick < Pacer::COARSE;
        let (pacer, pacing) = Pacer::start(fine.then_some(driver), plan.tick);
        monoio::spawn(pacing);
        let tasks: Vec<_> = ids
            .map(|id| {
                let plan = Arc::clone(&plan);
                let thread = Rc::clone(&thread);
                let pacer = Rc::clone(&pacer);
                monoio::spawn(async move { conn::drive(id, &plan, &thread, &pacer).await })
            })
            .collect();
        let connections = async {
            for task in tasks {
                task.await;
            }
        };
        let interrupted = monoio::select! {
            () = connections => false,
            // The connections are abandoned where they are, with the runtime: a request in
            // flight counts neither as answered nor as failed.
            () = plan.interrupt.raised() => true,
        };
        // An open-loop connection may sleep past the last response before it sees the run
        // is over: the recorded period ends with that response.
        let finished = match thread.last_response.get() {
            Some(at) if !interrupted => at,
            _ => Instant::now(),
        };
        if interrupted {
            thread.interrupted(plan.deadline.map_or(finished, |d| d.min(finished)));
        }
        Outcome {
            stats: thread.stats.take(),
            finished,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(budget: Option<u64>) -> Thread {
        Thread {
            index: 0,
            stats: RefCell::new(Stats::new()),
            budget: Cell::new(budget),
            last_response: Cell::new(None),
            warmup_end: Instant::now(),
            timetables: RefCell::new(Vec::new()),
            progress: Arc::new(Progress::new(1)),
        }
    }

    #[test]
    fn budget_is_taken_and_refunded() {
        let limited = thread(Some(5));
        assert_eq!(limited.take(3), 3);
        assert_eq!(limited.take(3), 2);
        assert!(limited.exhausted());
        assert_eq!(limited.take(1), 0);
        limited.refund(2);
        assert_eq!(limited.take(8), 2);

        let unlimited = thread(None);
        assert_eq!(unlimited.take(64), 64);
        assert!(!unlimited.exhausted());
    }

    #[test]
    fn only_recorded_responses_reach_the_stats() {
        let thread = thread(None);
        let sample = Sample {
            latency: Duration::from_micros(5),
            service: Duration::from_micros(5),
            kind: 0,
        };
        let at = Instant::now();
        thread.response(200, sample, at, false);
        assert_eq!(thread.last_response.get(), None);
        thread.response(200, sample, at, true);
        assert_eq!(thread.last_response.get(), Some(at));
        thread.failure(Failure::Io, 3, 1);
        assert_eq!(thread.progress.totals(), (2, 3));
        let stats = thread.stats.borrow();
        assert_eq!(stats.responses(), 1);
        assert_eq!(stats.failures.io, 1);
    }
}
