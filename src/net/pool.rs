//! Keep-alive pool of idle upstream connections for one endpoint on one shard.

use std::io;
use std::net::SocketAddr;
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
}

impl UpstreamConn {
    /// Opens a connection to `addr`, failing with `TimedOut` after `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration, buffer: usize) -> io::Result<Self> {
        let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        stream.set_nodelay(true)?;
        Ok(UpstreamConn {
            stream,
            buf: BytesMut::with_capacity(buffer),
            reused: false,
            fields: Vec::new(),
        })
    }
}

struct Idle {
    conn: UpstreamConn,
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
    pub fn take(&mut self, now: Instant) -> Option<UpstreamConn> {
        while let Some(Idle { mut conn, since }) = self.idle.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for a later exchange, unless the pool is full.
    pub fn put(&mut self, conn: UpstreamConn, now: Instant) {
        if self.idle.len() < self.max_idle && conn.buf.is_empty() {
            self.idle.push(Idle { conn, since: now });
        }
    }

    /// Closes connections that idled past the timeout.
    pub fn evict_expired(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.idle
            .retain(|idle| now.saturating_duration_since(idle.since) < timeout);
    }
}
