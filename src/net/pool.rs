//! Keep-alive pool of idle upstream connections for one endpoint on one shard, and the count
//! of a shard's open connections to an upstream (for metrics: open less idle is busy).
//!
//! Shard-local: plain `Cell`s and `Rc`s, never shared across threads.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::net::TcpStream;

use crate::http::Field;
use monoio::time::Instant;

/// An open connection to an upstream endpoint, with its own read buffer.
pub struct UpstreamConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the upstream and not yet consumed.
    pub buf: BytesMut,
    /// Whether this connection carried an earlier exchange (and so may have been closed by the
    /// upstream while it sat idle).
    pub reused: bool,
    /// Storage for the fields of the next response head, kept between exchanges.
    pub fields: Vec<Field>,
    /// This connection's place in its upstream's [`OpenCount`], given back when it closes.
    _open: OpenShare,
}

impl UpstreamConn {
    /// Opens a connection to `addr`, failing with `TimedOut` after `timeout`, and counts it
    /// in `open` for as long as it stays open. Boxed once here, it moves between the pool and
    /// the exchanges it carries as a pointer rather than as its few hundred bytes.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        buffer: usize,
        open: &OpenCount,
    ) -> io::Result<Box<Self>> {
        let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        stream.set_nodelay(true)?;
        Ok(Box::new(UpstreamConn {
            stream,
            buf: BytesMut::with_capacity(buffer),
            reused: false,
            fields: Vec::new(),
            _open: open.share(),
        }))
    }
}

/// How many connections a shard holds open to one upstream, pooled or carrying a request.
#[derive(Debug, Clone, Default)]
pub struct OpenCount(Rc<Cell<usize>>);

impl OpenCount {
    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.get()
    }

    fn share(&self) -> OpenShare {
        self.0.set(self.0.get() + 1);
        OpenShare(Rc::clone(&self.0))
    }
}

/// One open connection's part of an [`OpenCount`]; dropped with the connection, however it
/// closes (pool eviction, an error, a task cancelled mid-exchange).
#[derive(Debug)]
struct OpenShare(Rc<Cell<usize>>);

impl Drop for OpenShare {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

struct Idle {
    conn: Box<UpstreamConn>,
    since: Instant,
}

/// Idle connections to one endpoint, most recently used last (taken first).
pub struct Pool {
    idle: Vec<Idle>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// An empty pool keeping at most `max_idle` connections for at most `idle_timeout` each.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Vec::new(),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently returned connection that has not idled too long.
    pub fn take(&mut self, now: Instant) -> Option<Box<UpstreamConn>> {
        while let Some(Idle { mut conn, since }) = self.idle.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for a later exchange, unless the pool is full.
    pub fn put(&mut self, conn: Box<UpstreamConn>, now: Instant) {
        if self.idle.len() < self.max_idle && conn.buf.is_empty() {
            self.idle.push(Idle { conn, since: now });
        }
    }

    /// Connections idle in the pool, some perhaps past the timeout and not yet closed.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// Closes connections that idled past the timeout.
    pub fn evict_expired(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.idle
            .retain(|idle| now.saturating_duration_since(idle.since) < timeout);
    }
}
