//! Thread-per-core shards: one thread per core, each running a monoio runtime with its own
//! SO_REUSEPORT listener, connection pools and counters.
//!
//! Shards share nothing mutable. A shard's state lives in `Cell`s and `RefCell`s that only its
//! own thread touches; the control plane reaches it with messages (today: the shutdown
//! signal).

mod listener;
mod runtime;
mod start;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::{self, Router};
use crate::upstream::Upstream;

pub use runtime::Driver;
pub use start::{start, Gateway, StartError};

/// The limits every connection on a shard applies, copied out of the config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head, in bytes (431 past it).
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: u64,
    /// Time allowed for a whole request head from its first byte.
    pub header_timeout: Duration,
    /// Time a connection may sit idle, and the longest stall of a body or a write.
    pub idle_timeout: Duration,
    /// Initial size of each connection's read buffer, in bytes.
    pub read_buffer: usize,
    /// Client connections one shard holds at once.
    pub max_connections: usize,
}

impl Limits {
    fn new(config: &Config) -> Self {
        Limits {
            max_header_bytes: config.gateway.max_header_bytes,
            max_body_bytes: config.gateway.max_body_bytes,
            header_timeout: config.gateway.header_timeout,
            idle_timeout: config.gateway.idle_timeout,
            read_buffer: config.tuning.read_buffer,
            max_connections: config.gateway.max_connections,
        }
    }
}

/// One shard's state, shared by the tasks of its thread.
pub struct Shard {
    /// The shard's number, from 0.
    pub id: usize,
    /// Connection limits.
    pub limits: Limits,
    /// The route table.
    pub router: Router,
    /// Upstream groups, in config order, with this shard's pools and endpoint health.
    pub upstreams: Vec<Upstream>,
    /// Becomes true when the gateway starts to drain.
    pub shutdown: watch::Receiver<bool>,
    /// Client connections open on this shard.
    pub connections: Cell<usize>,
}

impl Shard {
    /// A shard's state for `config`.
    pub fn new(id: usize, config: &Config, shutdown: watch::Receiver<bool>) -> Self {
        Shard {
            id,
            limits: Limits::new(config),
            router: Router::new(config),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| Upstream::new(Arc::new(u.clone())))
                .collect(),
            shutdown,
            connections: Cell::new(0),
        }
    }

    /// Accepts connections until shutdown, then waits for open ones to finish, at most
    /// `drain_timeout`.
    pub async fn run(self: Rc<Self>, listener: TcpListener, drain_timeout: Duration) {
        let mut shutdown = self.shutdown.clone();
        let mut pressure = listener::Pressure::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let accepted = monoio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if self.connections.get() >= self.limits.max_connections {
                        // Over the limit: closing at once is cheaper than any answer, and the
                        // client sees a reset it can retry elsewhere.
                        pressure.refused(self.id);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.connections.set(self.connections.get() + 1);
                    let shard = Rc::clone(&self);
                    monoio::spawn(async move {
                        proxy::serve(stream, peer, Rc::clone(&shard)).await;
                        shard.connections.set(shard.connections.get() - 1);
                    });
                }
                Err(err) => pressure.accept_failed(self.id, &err).await,
            }
        }
        drop(listener);
        self.drain(drain_timeout).await;
    }

    async fn drain(&self, timeout: Duration) {
        let deadline = monoio::time::Instant::now() + timeout;
        let open = self.connections.get();
        if open > 0 {
            tracing::info!(shard = self.id, open, "draining connections");
        }
        while self.connections.get() > 0 && monoio::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.connections.get();
        if left > 0 {
            tracing::warn!(
                shard = self.id,
                left,
                "drain timeout: closing remaining connections"
            );
        }
    }
}
