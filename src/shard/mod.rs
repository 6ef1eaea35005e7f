//! Thread-per-core shards: one thread per core, each running a monoio runtime with its own
//! SO_REUSEPORT listener, connection pools and counters.
//!
//! Shards share nothing mutable. A shard's state lives in `Cell`s and `RefCell`s that only its
//! own thread touches; the control plane reaches it with messages ([`Control`], and the
//! shutdown signal) and hands it new immutable snapshots ([`Current`]).

mod control;
mod current;
mod drain;
mod handoff;
mod listener;
mod plane;
mod runtime;
mod start;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::accesslog::{RequestIds, ShardLog};
use crate::config::Config;
use crate::keys::{owner_of, KeyTable};
use crate::metrics::{PoolGauge, ShardMetrics, Slots};
use crate::proxy::{self, BufferPool, Router};
use crate::quota::journal::{Restored, WriterHandle};
use crate::quota::{Clock, QuotaBook};
use crate::upstream::{KeyPool, Upstream};

pub use control::{Control, Controls, Usage};
pub use current::Current;
pub use drain::{Drain, Draining};
pub use handoff::{adopt, detach, Handoff, Inboxes};
pub use plane::{ControlPlane, ReloadError};
pub use runtime::Driver;
pub use start::{start, Gateway, StartError};

/// The limits every connection on a shard applies, copied out of the config.
#[derive(Debug, Clone, Copy)]
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
    /// Tokens reserved for a completion when the request names no maximum.
    pub default_max_tokens: u64,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        Limits {
            max_header_bytes: config.gateway.max_header_bytes,
            max_body_bytes: config.gateway.max_body_bytes,
            header_timeout: config.gateway.header_timeout,
            idle_timeout: config.gateway.idle_timeout,
            read_buffer: config.tuning.read_buffer,
            max_connections: config.gateway.max_connections,
            default_max_tokens: config.gateway.default_max_tokens,
        }
    }
}

/// The routes and the upstreams they lead to, built by a shard from the config and replaced
/// whole on reload. An exchange takes it once and keeps it, so the route and upstream
/// positions it records stay meaningful to its end.
pub struct Routing {
    /// The route table.
    pub router: Router,
    /// Upstream groups, in config order, with this shard's pools and endpoint health.
    pub upstreams: Vec<Upstream>,
    /// The metric label slots of the routes and upstreams, by config position.
    pub slots: Slots,
}

impl Routing {
    /// Builds the routing of `config`; `pools` are the upstreams' provider key pools, in
    /// config order, shared by all shards; `slots` their metric label slots.
    pub fn new(config: &Config, pools: &[Option<Arc<KeyPool>>], slots: Slots) -> Routing {
        Routing {
            slots,
            router: Router::new(config),
            upstreams: config
                .upstreams
                .iter()
                .zip(pools)
                .map(|(u, pool)| {
                    Upstream::new(Arc::new(u.clone()), pool.clone(), &config.upstreams)
                })
                .collect(),
        }
    }
}

/// One shard's state, shared by the tasks of its thread.
pub struct Shard {
    /// The shard's number, from 0.
    pub id: usize,
    /// Connection limits; a reload replaces them.
    limits: Cell<Limits>,
    /// Routes and upstreams; a reload replaces them.
    pub routing: Current<Routing>,
    /// The control plane's shutdown message; the accept loop turns it into `drain`.
    shutdown: watch::Receiver<bool>,
    /// Whether this shard drains: read per request, waited on by idle connections.
    pub drain: Drain,
    /// Client connections open on this shard.
    pub connections: Cell<usize>,
    /// Every client key and tenant: an immutable table the control plane replaces.
    pub keys: Current<Arc<KeyTable>>,
    /// Counters of the keys and tenants this shard owns.
    pub quota: RefCell<QuotaBook>,
    /// Wall time for limits.
    pub clock: Clock,
    /// Every shard's inbox for handed-off connections.
    pub inboxes: Inboxes,
    state: Option<WriterHandle>,
    persist_interval: Duration,
    /// This shard's side of the access log, when one is configured.
    pub access: Option<RefCell<ShardLog>>,
    /// Ids for this shard's requests.
    pub request_ids: RequestIds,
    /// Request counts and durations, handed to the admin listener once a second.
    pub metrics: ShardMetrics,
    /// Spare buffers of `read_buffer` bytes that responses are written from.
    pub out_buffers: BufferPool,
}

/// How often a shard hands its metrics over.
const METRICS_PUBLISH: Duration = Duration::from_secs(1);

/// The most 503 answers a shard at `max_connections` writes at once to connections handed to
/// it; each holds a descriptor beyond the limit while it is written.
const REFUSING_AT_ONCE: usize = 64;

/// How often a shard hands its buffered access log records to the writer.
const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(100);

/// What every shard shares at start: the key table, the inboxes, persisted counters.
pub struct Shared {
    /// The key table.
    pub keys: Arc<KeyTable>,
    /// Every shard's inbox.
    pub inboxes: Inboxes,
    /// Counters read from `state_dir` at start.
    pub restored: Arc<Restored>,
    /// Where snapshots go.
    pub state: Option<WriterHandle>,
    /// Each upstream's provider key pool, in config order.
    pub pools: Vec<Option<Arc<KeyPool>>>,
    /// The metric label slots of the config's routes and upstreams.
    pub slots: Slots,
    /// When the gateway started: part of every request id.
    pub started: std::time::SystemTime,
}

impl Shard {
    /// A shard's state for `config`, with the counters it owns restored.
    pub fn new(
        id: usize,
        config: &Config,
        shutdown: watch::Receiver<bool>,
        shared: &Shared,
        access: Option<ShardLog>,
        metrics: ShardMetrics,
    ) -> Self {
        Shard {
            id,
            limits: Cell::new(Limits::new(config)),
            routing: Current::new(Routing::new(config, &shared.pools, shared.slots.clone())),
            shutdown,
            drain: Drain::default(),
            connections: Cell::new(0),
            keys: Current::new(Arc::clone(&shared.keys)),
            quota: RefCell::new(restore(id, shared)),
            clock: Clock::default(),
            inboxes: Arc::clone(&shared.inboxes),
            state: shared.state.clone(),
            persist_interval: config.gateway.persist_interval,
            access: access.map(RefCell::new),
            request_ids: RequestIds::new(u16::try_from(id).unwrap_or(u16::MAX), shared.started),
            metrics,
            out_buffers: BufferPool::new(config.tuning.read_buffer),
        }
    }

    /// The connection limits in force.
    pub fn limits(&self) -> Limits {
        self.limits.get()
    }

    /// Puts reloaded limits in force, for open connections too.
    pub fn set_limits(&self, limits: Limits) {
        self.limits.set(limits);
    }

    /// Adopts connections other shards hand over, until the gateway drains.
    ///
    /// Adopted connections count against `max_connections` like accepted ones, so no key can
    /// crowd a shard by arriving through other shards. One past the limit has its request
    /// answered with a 503 and is closed; at most [`REFUSING_AT_ONCE`] such answers are
    /// written at a time, and past that a connection is closed unanswered, as an accept
    /// past the limit is.
    async fn adopt_connections(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<Handoff>) {
        let mut pressure = listener::Pressure::default();
        let refusing = Rc::new(Cell::new(0_usize));
        while let Some(Handoff {
            socket,
            peer,
            pending,
        }) = inbox.recv().await
        {
            let full = self.connections.get() >= self.limits().max_connections;
            if full {
                pressure.refused(self.id);
                if refusing.get() >= REFUSING_AT_ONCE {
                    continue;
                }
            }
            let stream = match adopt(socket) {
                Ok(stream) => stream,
                Err(err) => {
                    let shard = self.id;
                    tracing::warn!(shard, error = %err, "cannot adopt a handed-off connection");
                    continue;
                }
            };
            let shard = Rc::clone(&self);
            if full {
                refusing.set(refusing.get() + 1);
                let refusing = Rc::clone(&refusing);
                monoio::spawn(async move {
                    proxy::refuse_with(stream, peer, shard, pending).await;
                    refusing.set(refusing.get() - 1);
                });
                continue;
            }
            self.connections.set(self.connections.get() + 1);
            monoio::spawn(async move {
                proxy::serve_with(stream, peer, Rc::clone(&shard), pending).await;
                shard.connections.set(shard.connections.get() - 1);
            });
        }
    }

    /// Closes pooled upstream connections that idled past their upstream's
    /// `pool_idle_timeout`, checking once a second, so idle sockets do not wait for the next
    /// request to that endpoint to be let go.
    async fn close_idle_upstreams(self: Rc<Self>) {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.drain.wait() => return,
            }
            let now = monoio::time::Instant::now();
            let routing = self.routing.get();
            for endpoint in routing
                .upstreams
                .iter()
                .flat_map(|upstream| &upstream.endpoints)
            {
                endpoint.pool.borrow_mut().evict_expired(now);
            }
        }
    }

    /// Persists the counters every `persist_interval` while they change.
    async fn persist_periodically(self: Rc<Self>) {
        if self.state.is_none() {
            return;
        }
        loop {
            monoio::select! {
                _ = monoio::time::sleep(self.persist_interval) => {}
                _ = self.drain.wait() => return,
            }
            self.persist(false);
        }
    }

    /// Hands the metrics over every [`METRICS_PUBLISH`], through the drain too (operators
    /// watch it), until the shard's runtime ends.
    async fn publish_metrics_periodically(self: Rc<Self>) {
        loop {
            monoio::time::sleep(METRICS_PUBLISH).await;
            self.publish_metrics();
        }
    }

    /// Hands the metrics over with the shard's gauges: client connections, and its
    /// connections to each upstream.
    fn publish_metrics(&self) {
        let routing = self.routing.get();
        // Gauges go by label slot; a slot no current upstream holds reads zero.
        let width = routing
            .slots
            .upstreams
            .iter()
            .max()
            .map_or(0, |&max| max + 1);
        let mut pools = vec![PoolGauge::default(); width];
        for (upstream, &slot) in routing.upstreams.iter().zip(&routing.slots.upstreams) {
            pools[slot] = upstream.pool_gauge();
        }
        self.metrics.publish(self.connections.get(), pools);
    }

    /// Hands the buffered access log records to the writer every [`ACCESS_LOG_FLUSH`], so a
    /// quiet shard's records do not wait for a full batch.
    async fn flush_access_log_periodically(self: Rc<Self>) {
        let Some(access) = &self.access else { return };
        loop {
            monoio::select! {
                _ = monoio::time::sleep(ACCESS_LOG_FLUSH) => {}
                _ = self.drain.wait() => return,
            }
            access.borrow_mut().flush();
        }
    }

    /// Hands the counters that changed to the writer; with `wait`, blocks until they are
    /// on disk (only at the end of a drain, when no request is left to delay).
    fn persist(&self, wait: bool) {
        let Some(state) = &self.state else { return };
        let changes = self.quota.borrow_mut().take_changes();
        if changes.is_empty() {
            return;
        }
        if let Some(written) = state.update(self.id, self.clock.now(), changes, wait) {
            let _ = written.recv();
        }
    }

    /// Accepts connections until shutdown, then waits for open ones to finish, at most
    /// `drain_timeout`.
    pub async fn run(
        self: Rc<Self>,
        listener: TcpListener,
        (inbox, control): (
            mpsc::UnboundedReceiver<Handoff>,
            mpsc::UnboundedReceiver<Control>,
        ),
        drain_timeout: Duration,
    ) {
        monoio::spawn(Rc::clone(&self).obey(control));
        monoio::spawn(Rc::clone(&self).adopt_connections(inbox));
        monoio::spawn(Rc::clone(&self).persist_periodically());
        monoio::spawn(Rc::clone(&self).close_idle_upstreams());
        monoio::spawn(Rc::clone(&self).flush_access_log_periodically());
        monoio::spawn(Rc::clone(&self).publish_metrics_periodically());
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
                    if self.connections.get() >= self.limits().max_connections {
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
        self.drain.start();
        self.wait_for_connections(drain_timeout).await;
        // Nothing is in flight any more: the last snapshot loses nothing.
        self.persist(true);
        if let Some(access) = &self.access {
            access.borrow_mut().flush();
        }
        self.publish_metrics();
    }

    async fn wait_for_connections(&self, timeout: Duration) {
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

/// The counters shard `id` owns, as persisted at the last stop.
fn restore(id: usize, shared: &Shared) -> QuotaBook {
    let shards = shared.inboxes.len();
    let mut quota = QuotaBook::default();
    for key in shared.keys.keys() {
        if let (true, Some(counters)) = (key.owner == id, shared.restored.keys.get(&*key.id)) {
            quota.restore(false, key.index, counters.clone());
        }
    }
    for (index, tenant) in shared.keys.tenants().iter().enumerate() {
        let owned = owner_of(&tenant.name, shards) == id;
        if let (true, Some(counters)) = (owned, shared.restored.tenants.get(&*tenant.name)) {
            quota.restore(true, index as u32, counters.clone());
        }
    }
    quota
}
