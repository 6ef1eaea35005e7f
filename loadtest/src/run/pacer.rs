//! Waits finer than a millisecond, for the open loop.
//!
//! monoio's timers tick once a millisecond, so every connection due within one tick wakes on
//! it and sends at once: at 47,000 requests a second, bursts of 47 that the target has to
//! queue, which then shows as latency the target did not cause. A thread's [`Pacer`] keeps
//! its sleeping connections in a heap by due time and one timerfd armed for the earliest,
//! read through the ring by the pacer's task: a connection wakes at its due time, or at most
//! one `--tick` after it, since the timer expires at most once a tick.
//!
//! The tick bounds the cost: each expiry is a wake-up of the thread, which costs the kernel
//! (and a hypervisor) several microseconds, as does each response that arrives alone rather
//! than in a burst. With a tick of 1 ms, or on the legacy driver (where a timerfd
//! read would block the thread), the pacer uses monoio's timers instead.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tracing::debug;

/// A thread's timer for its sleeping connections.
#[derive(Debug)]
pub struct Pacer {
    /// The timerfd; `None` where monoio's timers do the waiting.
    timer: Option<OwnedFd>,
    /// The least time between two expiries.
    tick: Duration,
    /// Sleepers by due time, earliest first.
    sleepers: RefCell<BinaryHeap<Reverse<Sleeper>>>,
    /// When the timerfd is set to expire, if it is set.
    armed: Cell<Option<Instant>>,
    /// When the pacer last woke its sleepers.
    last_wake: Cell<Instant>,
    /// The pacer's task, while it waits for a first sleeper.
    idle: RefCell<Option<Waker>>,
}

/// A connection waiting for its next request's due time.
#[derive(Debug)]
struct Sleeper {
    due: Instant,
    waker: Waker,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Sleeper {}

impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

impl Pacer {
    /// A tick this long is left to monoio's timers, which tick once a millisecond.
    pub const COARSE: Duration = Duration::from_millis(1);

    /// A pacer for this thread that expires at most once a `tick`, and its task, to spawn on
    /// the thread's runtime. `driver` names the runtime's driver when the pacer should use a
    /// timerfd (`None`: monoio's timers); only an io_uring driver reads one without blocking.
    pub fn start(driver: Option<&str>, tick: Duration) -> (Rc<Pacer>, impl Future<Output = ()>) {
        let timer = match driver {
            Some(driver) if driver.starts_with("io_uring") => new_timer()
                .map_err(|err| debug!(error = %err, "no timerfd: pacing by monoio's timers"))
                .ok(),
            _ => None,
        };
        let pacer = Rc::new(Pacer {
            timer,
            tick,
            sleepers: RefCell::new(BinaryHeap::new()),
            armed: Cell::new(None),
            last_wake: Cell::new(Instant::now()),
            idle: RefCell::new(None),
        });
        let task = Rc::clone(&pacer).run();
        (pacer, task)
    }

    /// Waits until `due`, or up to a tick after it.
    pub async fn sleep_until(&self, due: Instant) {
        if self.timer.is_none() {
            monoio::time::sleep_until(due.into()).await;
            return;
        }
        poll_fn(|cx| {
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            // Polled again before its time, a sleeper is simply added again: the old entry
            // wakes it once more, early, and this check sends it back to sleep.
            self.sleepers.borrow_mut().push(Reverse(Sleeper {
                due,
                waker: cx.waker().clone(),
            }));
            let at = due.max(self.last_wake.get() + self.tick);
            if self.armed.get().is_none_or(|armed| at < armed) {
                self.arm(at);
            }
            if let Some(idle) = self.idle.borrow_mut().take() {
                idle.wake();
            }
            Poll::Pending
        })
        .await;
    }

    /// Sets the timerfd to expire at `at`; the pacer's pending read of it completes then.
    fn arm(&self, at: Instant) {
        let Some(timer) = &self.timer else { return };
        // Relative, since an `Instant` cannot be read as the clock's raw value; at least a
        // nanosecond, since zero would disarm the timer.
        let after = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs() as _,
                tv_nsec: after.subsec_nanos() as _,
            },
        };
        match timerfd_settime(timer, TimerfdTimerFlags::empty(), &value) {
            Ok(_) => self.armed.set(Some(at)),
            // Only a bad descriptor or value fails, neither of which this makes. Were it to,
            // no expiry would come: the sleepers are woken now rather than never.
            Err(err) => {
                debug!(error = %err, "timerfd_settime failed");
                self.wake_due(None);
            }
        }
    }

    /// Wakes every sleeper due by `now` (all of them for `None`), and returns when the
    /// earliest of the others is due.
    fn wake_due(&self, now: Option<Instant>) -> Option<Instant> {
        let mut sleepers = self.sleepers.borrow_mut();
        while let Some(Reverse(first)) = sleepers.peek() {
            if now.is_some_and(|now| first.due > now) {
                return Some(first.due);
            }
            if let Some(Reverse(sleeper)) = sleepers.pop() {
                sleeper.waker.wake();
            }
        }
        None
    }

    /// The pacer's task: waits for the timerfd to expire and wakes the sleepers then due, for
    /// as long as the thread's runtime runs.
    async fn run(self: Rc<Self>) {
        let Some(timer) = &self.timer else { return };
        // The runtime's file takes its descriptor; the pacer keeps the original to set.
        let reader = rustix::io::dup(timer)
            .map_err(io::Error::from)
            .and_then(|fd| monoio::fs::File::from_std(std::fs::File::from(fd)));
        let reader = match reader {
            Ok(reader) => reader,
            Err(err) => {
                debug!(error = %err, "cannot read the timerfd");
                return;
            }
        };
        let mut expirations = vec![0u8; 8];
        loop {
            let now = Instant::now();
            self.last_wake.set(now);
            let Some(next) = self.wake_due(Some(now)) else {
                self.wait_for_sleepers().await;
                continue;
            };
            let at = next.max(now + self.tick);
            if self.armed.get() != Some(at) {
                self.arm(at);
            }
            let (result, buffer) = reader.read_at(expirations, 0).await;
            expirations = buffer;
            self.armed.set(None);
            if let Err(err) = result {
                // Not expected of a timerfd; the sleepers then wait by monoio's timers.
                debug!(error = %err, "timerfd read failed");
                monoio::time::sleep_until(at.into()).await;
            }
        }
    }

    /// Waits until a connection sleeps.
    async fn wait_for_sleepers(&self) {
        poll_fn(|cx| {
            if self.sleepers.borrow().is_empty() {
                *self.idle.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// A timerfd on the clock `Instant` reads.
fn new_timer() -> io::Result<OwnedFd> {
    let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
    Ok(timerfd_create(TimerfdClockId::Monotonic, flags)?)
}
