//! A shard's spare response buffers. A client connection needs a buffer to write a response
//! from only while it has a response to write: it takes one here when a response starts and
//! gives it back when the exchange ends, so an idle connection holds none, and a busy one
//! reuses a buffer instead of allocating and freeing `read_buffer` bytes per request.
//!
//! A shard is one thread: the list sits in a `RefCell`, with no lock.

use std::cell::RefCell;

use bytes::BytesMut;

/// Spare buffers a shard keeps, at most (4 MiB with the default 16 KiB `read_buffer`): more
/// than the responses a shard writes at once in a closed-loop benchmark. Past it, buffers go
/// back to the allocator.
const KEEP: usize = 256;

/// A buffer grown past this many times the pool's size goes back to the allocator.
const MAX_GROWTH: usize = 4;

/// Spare buffers of at least one size.
pub struct BufferPool {
    free: RefCell<Vec<BytesMut>>,
    size: usize,
}

impl BufferPool {
    /// An empty pool of buffers of `size` bytes.
    pub fn new(size: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::new()),
            size,
        }
    }

    /// The size of the buffers handed out, in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty buffer of at least the pool's size.
    pub fn take(&self) -> BytesMut {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.size))
    }

    /// Gives `buf` back, to be handed out again when there is room for it and it is of the
    /// pool's size (not smaller, nor grown far past it).
    pub fn give(&self, mut buf: BytesMut) {
        let capacity = buf.capacity();
        if capacity < self.size || capacity > self.size * MAX_GROWTH {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < KEEP {
            buf.clear();
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_bounds() {
        let pool = BufferPool::new(1024);
        let mut buf = pool.take();
        assert!(buf.capacity() >= 1024);
        buf.extend_from_slice(b"response");
        let ptr = buf.as_ptr();
        pool.give(buf);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(
            again.as_ptr(),
            ptr,
            "the buffer given back is handed out again"
        );

        // Too small, or grown too large: not kept.
        pool.give(BytesMut::with_capacity(100));
        pool.give(BytesMut::with_capacity(1024 * MAX_GROWTH + 1));
        assert!(pool.free.borrow().is_empty());

        for _ in 0..KEEP + 10 {
            pool.give(BytesMut::with_capacity(1024));
        }
        assert_eq!(pool.free.borrow().len(), KEEP);
    }
}
