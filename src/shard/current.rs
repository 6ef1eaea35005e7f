//! [`Current`]: a snapshot the control plane replaces and a shard's tasks read.

use std::cell::RefCell;
use std::rc::Rc;

/// The shard's current copy of an immutable snapshot: a key table built by the control plane
/// (`Current<Arc<KeyTable>>`), or routing the shard built itself from a reloaded config.
///
/// A request takes the snapshot once, with [`Current::get`], and keeps it to its end, so a
/// replacement never changes the ground under a request half done. Taking it counts a
/// reference without atomics: a snapshot shared with other shards sits behind this shard's
/// own `Rc`, so its `Arc` count is not touched per request and no cache line moves between
/// cores.
pub struct Current<T>(RefCell<Rc<T>>);

impl<T> Current<T> {
    /// Starts with `snapshot`.
    pub fn new(snapshot: T) -> Self {
        Current(RefCell::new(Rc::new(snapshot)))
    }

    /// The snapshot in use now.
    pub fn get(&self) -> Rc<T> {
        Rc::clone(&self.0.borrow())
    }

    /// Uses `snapshot` from now on; requests that took the old one keep it until they end.
    pub fn replace(&self, snapshot: T) {
        *self.0.borrow_mut() = Rc::new(snapshot);
    }
}
