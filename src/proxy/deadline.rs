//! Deadlines for socket operations without a timer-wheel entry per operation.
//!
//! Every read and write of a connection is bounded by a deadline, and nearly every one of them
//! completes long before it. Wrapping each in the runtime's `timeout_at` armed and cancelled a
//! cache-padded entry in the timer wheel four or five times per request, about 4.5% of the
//! proxy's CPU. Here an operation that has to wait writes its deadline and its task's waker
//! into a slot of a shard-local table instead, and one sweeper task per shard sleeps until the
//! earliest deadline in the table, marks the slots whose deadline passed and wakes their
//! tasks. The operation then ends as timed out; dropping it cancels the I/O, as before.
//!
//! A shard is one thread, so the table is thread-local: no lock, no atomic. Arming a deadline
//! allocates nothing once the table has grown to the shard's peak of waiting operations, and
//! reads no clock; only the sweeper does, when it wakes.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::time::Instant;

/// The sweeper never sleeps less than this, so a burst of deadlines cannot make it spin.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Runs `future` until it completes or `deadline` passes; `None` means the deadline passed
/// first (and `future` was dropped).
///
/// As with `monoio::time::timeout_at`, a future that is ready when polled wins over a
/// deadline that passed meanwhile.
///
/// A future of its own rather than an `async fn`: the operation is built in place and moved
/// once with it, where an `async fn` moved it into its state and again into its pinned local,
/// a copy of every I/O operation's state on the request path.
pub(super) fn within<F: Future>(deadline: Instant, future: F) -> Within<F> {
    Within {
        future,
        armed: Armed::new(deadline),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    pub(super) struct Within<F> {
        #[pin]
        future: F,
        armed: Armed,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        match this.armed.poll_expired(cx) {
            true => Poll::Ready(None),
            false => Poll::Pending,
        }
    }
}

/// One operation's deadline, in the table from its first wait until it is dropped.
struct Armed {
    deadline: Instant,
    /// The slot, and the table's epoch when it was taken.
    slot: Option<(usize, u64)>,
}

impl Armed {
    fn new(deadline: Instant) -> Self {
        Armed {
            deadline,
            slot: None,
        }
    }

    /// Whether the sweeper found the deadline passed. The first call puts the deadline in
    /// the table (starting the sweeper if none runs); every call keeps the waker current.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let step = TABLE.with(|table| {
            let mut table = table.borrow_mut();
            match self.slot {
                Some((slot, epoch)) => Step::Checked(table.check(slot, epoch, cx.waker())),
                None => {
                    let (slot, step) = table.arm(self.deadline, cx.waker());
                    self.slot = Some((slot, table.epoch));
                    step
                }
            }
        });
        match step {
            Step::Checked(expired) => expired,
            Step::Armed => false,
            Step::Replan(sweeper) => {
                sweeper.wake();
                false
            }
            Step::StartSweeper => {
                monoio::spawn(sweep());
                false
            }
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some((slot, epoch)) = self.slot {
            // The table is gone only while the thread exits; nothing is left to clear then.
            let _ = TABLE.try_with(|table| {
                if let Ok(mut table) = table.try_borrow_mut() {
                    table.disarm(slot, epoch);
                }
            });
        }
    }
}

/// What arming or checking a deadline asks of the caller, once the table is released.
enum Step {
    /// An armed deadline was checked: whether it passed.
    Checked(bool),
    /// The deadline is in the table and the sweeper will see it in time.
    Armed,
    /// The deadline is earlier than the sweeper's next wake: wake it to plan again.
    Replan(Waker),
    /// No sweeper runs on this shard: start one.
    StartSweeper,
}

/// A slot of the table.
enum Slot {
    /// Unused; the index of the next free slot (`usize::MAX` ends the list).
    Free(usize),
    /// An operation waiting, its deadline, and whether the sweeper found it passed.
    Armed {
        deadline: Instant,
        waker: Waker,
        expired: bool,
    },
}

/// The shard's waiting operations and the sweeper's plan.
struct Table {
    slots: Vec<Slot>,
    /// Head of the free list (`usize::MAX`: none free).
    free: usize,
    /// Whether a sweeper task runs on this shard.
    sweeper_running: bool,
    /// When the sweeper wakes next, while it sleeps.
    wake_at: Option<Instant>,
    /// Wakes the sleeping sweeper early.
    sweeper: Option<Waker>,
    /// Set when the sweeper must plan again before its wake time.
    replan: bool,
    /// The wakers of operations found expired, kept to be woken once the table is released.
    fired: Vec<Waker>,
    /// Counts the times the table was cleared, so that an operation from before a clear
    /// never touches a slot taken after it.
    epoch: u64,
}

thread_local! {
    static TABLE: RefCell<Table> = const { RefCell::new(Table::new()) };
}

impl Table {
    const fn new() -> Self {
        Table {
            slots: Vec::new(),
            free: usize::MAX,
            sweeper_running: false,
            wake_at: None,
            sweeper: None,
            replan: false,
            fired: Vec::new(),
            epoch: 0,
        }
    }

    /// Puts a deadline in a free slot and says what the sweeper needs to learn of it.
    fn arm(&mut self, deadline: Instant, waker: &Waker) -> (usize, Step) {
        let slot = Slot::Armed {
            deadline,
            waker: waker.clone(),
            expired: false,
        };
        let index = match self.slots.get(self.free) {
            Some(Slot::Free(next)) => {
                let index = self.free;
                self.free = *next;
                self.slots[index] = slot;
                index
            }
            _ => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };

        let step = if !self.sweeper_running {
            self.sweeper_running = true;
            Step::StartSweeper
        } else if self.wake_at.is_some_and(|at| deadline < at) && !self.replan {
            self.replan = true;
            match self.sweeper.take() {
                Some(sweeper) => Step::Replan(sweeper),
                None => Step::Armed,
            }
        } else {
            Step::Armed
        };
        (index, step)
    }

    /// Whether the deadline in `index` passed; keeps the slot's waker the task's current one.
    /// An operation whose slot was cleared away counts as timed out.
    fn check(&mut self, index: usize, epoch: u64, current: &Waker) -> bool {
        if epoch != self.epoch {
            return true;
        }
        match self.slots.get_mut(index) {
            Some(Slot::Armed { expired: true, .. }) => true,
            Some(Slot::Armed { waker, .. }) => {
                if !waker.will_wake(current) {
                    *waker = current.clone();
                }
                false
            }
            Some(Slot::Free(_)) | None => true,
        }
    }

    fn disarm(&mut self, index: usize, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Slot::Free(self.free);
            self.free = index;
        }
    }

    /// Marks every deadline at or before `now` as passed, keeping its waker in `fired`, and
    /// returns the earliest deadline still ahead.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            if let Slot::Armed {
                deadline,
                waker,
                expired: expired @ false,
            } = slot
            {
                if *deadline <= now {
                    *expired = true;
                    self.fired.push(waker.clone());
                } else if next.is_none_or(|next| *deadline < next) {
                    next = Some(*deadline);
                }
            }
        }
        next
    }
}

/// Empties this thread's table, dropping the wakers it holds. A shard calls it once its
/// runtime stopped running: the tasks still waiting are then dropped with the runtime, not
/// kept alive by the table until the thread exits, and a runtime started later on the thread
/// starts a sweeper of its own.
pub(crate) fn clear() {
    let _ = TABLE.try_with(|table| {
        let Ok(mut table) = table.try_borrow_mut() else {
            return;
        };
        let epoch = table.epoch.wrapping_add(1);
        let old = std::mem::replace(
            &mut *table,
            Table {
                epoch,
                ..Table::new()
            },
        );
        drop(table);
        // Dropping a waker may drop its task, whose `Armed` then reaches for the table.
        drop(old);
    });
}

/// The shard's sweeper: sleeps until the earliest deadline, expires what passed, and ends
/// when no operation waits (the next one to wait starts it again).
async fn sweep() {
    let _running = SweeperRunning;
    loop {
        let now = Instant::now();
        let (next, mut fired) = TABLE.with(|table| {
            let mut table = table.borrow_mut();
            table.replan = false;
            let next = table.expire(now);
            table.wake_at = next;
            (next, std::mem::take(&mut table.fired))
        });
        for waker in fired.drain(..) {
            waker.wake();
        }
        TABLE.with(|table| table.borrow_mut().fired = fired);

        let Some(next) = next else { return };
        let sleep = monoio::time::sleep_until(next.max(now + GRANULARITY));
        monoio::select! {
            _ = sleep => {}
            _ = replan_requested() => {}
        }
    }
}

/// Completes when an earlier deadline than the sweeper's planned wake was armed.
async fn replan_requested() {
    poll_fn(|cx| {
        TABLE.with(|table| {
            let mut table = table.borrow_mut();
            if table.replan {
                return Poll::Ready(());
            }
            table.sweeper = Some(cx.waker().clone());
            Poll::Pending
        })
    })
    .await
}

/// Marks the sweeper stopped however its task ends, including when the runtime drops it.
struct SweeperRunning;

impl Drop for SweeperRunning {
    fn drop(&mut self) {
        let _ = TABLE.try_with(|table| {
            if let Ok(mut table) = table.try_borrow_mut() {
                table.sweeper_running = false;
                table.wake_at = None;
                table.sweeper = None;
                table.replan = false;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_pending_future_ends_at_its_deadline() {
        runtime().block_on(async {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(30);
            let result = within(deadline, std::future::pending::<()>()).await;
            assert!(result.is_none());
            assert!(Instant::now() >= deadline);
        });
    }

    #[test]
    fn a_future_that_finishes_first_gives_its_output() {
        runtime().block_on(async {
            let deadline = Instant::now() + Duration::from_secs(5);
            let sleep = monoio::time::sleep(Duration::from_millis(5));
            let result = within(deadline, async {
                sleep.await;
                7
            })
            .await;
            assert_eq!(result, Some(7));
        });
    }

    #[test]
    fn an_earlier_deadline_armed_later_is_still_kept() {
        runtime().block_on(async {
            let start = Instant::now();
            let late = monoio::spawn(within(
                start + Duration::from_secs(5),
                std::future::pending::<()>(),
            ));
            // Let the first deadline arm and the sweeper plan to sleep for 5 s.
            monoio::time::sleep(Duration::from_millis(5)).await;
            let early = start + Duration::from_millis(40);
            assert!(within(early, std::future::pending::<()>()).await.is_none());
            assert!(Instant::now() < start + Duration::from_secs(4));
            drop(late);
        });
    }

    #[test]
    fn slots_are_reused_and_the_sweeper_stops_when_nothing_waits() {
        runtime().block_on(async {
            for _ in 0..3 {
                let deadline = Instant::now() + Duration::from_secs(5);
                let sleep = monoio::time::sleep(Duration::from_millis(1));
                assert_eq!(within(deadline, sleep).await, Some(()));
            }
            TABLE.with(|table| {
                let table = table.borrow();
                assert_eq!(table.slots.len(), 1);
                assert!(matches!(table.slots[0], Slot::Free(_)));
                assert!(table.sweeper_running);
            });
        });
        // The sweeper still sleeps towards the 5 s deadline of a slot long gone.
        clear();
        TABLE.with(|table| assert!(!table.borrow().sweeper_running));

        // A new runtime on the same thread gets a sweeper of its own.
        runtime().block_on(async {
            let deadline = Instant::now() + Duration::from_millis(10);
            assert!(within(deadline, std::future::pending::<()>())
                .await
                .is_none());
        });
        clear();
    }
}
