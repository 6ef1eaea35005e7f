//! The drain signal inside one shard: a flag every connection can read for free, and a way
//! for idle connections to wait for it.
//!
//! Shard-local on purpose: reading it on every request takes no lock and no atomic, which a
//! cross-thread channel would. The shard's accept loop turns the control plane's shutdown
//! message into [`Drain::start`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Whether the shard drains, and who waits to hear it.
#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Drain {
    /// Whether the shard has started to drain.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts the drain and wakes everyone waiting for it.
    pub fn start(&self) {
        self.draining.set(true);
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Resolves once the shard drains.
    pub fn wait(&self) -> Draining<'_> {
        Draining {
            drain: self,
            slot: None,
        }
    }
}

/// A wait for the drain; leaves no trace once dropped.
pub struct Draining<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for Draining<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.is_draining() {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        let waker = Some(cx.waker().clone());
        match self.slot {
            Some(slot) => waiters.slots[slot] = waker,
            None => {
                let slot = match waiters.free.pop() {
                    Some(slot) => {
                        waiters.slots[slot] = waker;
                        slot
                    }
                    None => {
                        waiters.slots.push(waker);
                        waiters.slots.len() - 1
                    }
                };
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.drain.waiters.borrow_mut();
            waiters.slots[slot] = None;
            waiters.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_are_woken_once_and_slots_reused() {
        let drain = Drain::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);

        let mut first = Box::pin(drain.wait());
        let mut second = Box::pin(drain.wait());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(second);
        let mut third = Box::pin(drain.wait());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            drain.waiters.borrow().slots.len(),
            2,
            "the dropped slot is reused"
        );

        drain.start();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(first.as_mut().poll(&mut cx).is_ready());
        assert!(third.as_mut().poll(&mut cx).is_ready());
        assert!(
            ready_now(drain.wait()),
            "a wait that starts after the drain ends at once"
        );
    }

    fn ready_now(future: Draining<'_>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Box::pin(future).as_mut().poll(&mut cx).is_ready()
    }
}
