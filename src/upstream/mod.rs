//! Upstream groups as one shard sees them: which endpoint takes the next request, and how
//! endpoint failures eject an endpoint for a while.
//!
//! State is per shard and changes only on its shard, so it lives in `Cell`s: no locks, no
//! atomics. A failing endpoint is learned separately by each shard.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use monoio::time::Instant;

use crate::config;
use crate::http::Field;
use crate::metrics::PoolGauge;
use crate::net::{OpenCount, Pool, UpstreamConn};

pub mod keys;
pub mod learn;
pub mod persist;

pub use keys::{Exhausted, KeyPool, KeyRecord, KeyStatus, Lease, Picker, PoolKey};

/// The provider key pools in use, for the control plane (admin API, metrics, the state saver):
/// a reload may replace the list. Shards never read it; they get pools with their routing.
pub type Pools = std::sync::Arc<std::sync::RwLock<Vec<std::sync::Arc<KeyPool>>>>;

/// What one exchange with an endpoint showed about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with a status below 500.
    Healthy,
    /// Connect failure or timeout, response timeout, broken response, or a 5xx status.
    Failed,
}

/// One endpoint of an upstream: its health and its connection pool on this shard.
pub struct Endpoint {
    /// The endpoint as configured.
    pub config: config::Endpoint,
    /// Idle keep-alive connections to it.
    pub pool: RefCell<Pool>,
    failures: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
}

/// An upstream group on one shard.
pub struct Upstream {
    /// The upstream as configured.
    pub config: Arc<config::Upstream>,
    /// Its endpoints, in configured order.
    pub endpoints: Vec<Endpoint>,
    /// Its provider keys, shared with every shard, and this shard's way of choosing them.
    pub keys: Option<(Arc<KeyPool>, Picker)>,
    /// Positions of the upstreams to try when this one has no ready key or fails.
    pub fallbacks: Vec<usize>,
    /// This shard's open connections to the upstream's endpoints, pooled or busy.
    pub open: OpenCount,
    cursor: Cell<usize>,
    /// Retries this shard may still send to this upstream: each request adds
    /// `retry_budget_percent / 100`, each retry takes one.
    retry_balance: Cell<f64>,
}

/// Retries an upstream allows beyond its budget's share of traffic, and the most its balance
/// holds: enough for a quiet upstream's occasional 429 to be retried.
const RETRY_RESERVE: f64 = 10.0;

impl Upstream {
    /// The shard-local state of a configured upstream, with its shared key pool and the
    /// positions of its fallbacks among `all` upstreams.
    pub fn new(
        config: Arc<config::Upstream>,
        pool: Option<Arc<KeyPool>>,
        all: &[config::Upstream],
    ) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| Endpoint {
                config: endpoint.clone(),
                pool: RefCell::new(Pool::new(config.pool_max_idle, config.pool_idle_timeout)),
                failures: Cell::new(0),
                ejected_until: Cell::new(None),
            })
            .collect();
        let fallbacks = config
            .fallbacks
            .iter()
            .filter_map(|name| all.iter().position(|u| &u.name == name))
            .collect();
        Upstream {
            config,
            endpoints,
            keys: pool.map(|pool| {
                let picker = Picker::new(&pool);
                (pool, picker)
            }),
            fallbacks,
            open: OpenCount::default(),
            cursor: Cell::new(0),
            retry_balance: Cell::new(RETRY_RESERVE),
        }
    }

    /// Whether requests to this upstream need a token estimate: a key of its pool paces
    /// tokens.
    pub fn counts_tokens(&self) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|(pool, _)| pool.counts_tokens())
    }

    /// Puts a connection whose exchange ended exactly where its framing said (at `now`) back
    /// in the pool of endpoint `endpoint`, with the response's field storage for the next one.
    pub fn keep_alive(
        &self,
        endpoint: usize,
        mut conn: Box<UpstreamConn>,
        fields: Vec<Field>,
        now: Instant,
    ) {
        conn.reused = true;
        conn.fields = fields;
        self.endpoints[endpoint].pool.borrow_mut().put(conn, now);
    }

    /// This shard's connections to the upstream now: idle in its pools, and busy carrying a
    /// request.
    pub fn pool_gauge(&self) -> PoolGauge {
        let idle: usize = self
            .endpoints
            .iter()
            .map(|endpoint| endpoint.pool.borrow().idle())
            .sum();
        PoolGauge {
            idle: idle as u64,
            busy: self.open.get().saturating_sub(idle) as u64,
        }
    }

    /// Counts a request in the retry budget.
    pub fn count_request(&self) {
        let share = f64::from(self.config.retry_budget_percent) / 100.0;
        let balance = self.retry_balance.get() + share;
        self.retry_balance
            .set(balance.min(RETRY_RESERVE.max(share)));
    }

    /// Takes one retry from the budget, if it has one.
    pub fn take_retry(&self) -> bool {
        let balance = self.retry_balance.get();
        let allowed = balance >= 1.0;
        if allowed {
            self.retry_balance.set(balance - 1.0);
        }
        allowed
    }

    /// The endpoint for the next attempt: round-robin over those not ejected, skipping
    /// `avoid` (an endpoint that just failed) when another is available. When every endpoint
    /// is ejected, the one whose rest ends first is tried anyway: a guess beats a certain
    /// failure.
    pub fn pick(&self, now: Instant, avoid: Option<usize>) -> usize {
        let count = self.endpoints.len();
        let start = self.cursor.get();
        self.cursor.set(start.wrapping_add(1));
        let usable = |index: usize| {
            Some(index) != avoid
                && self.endpoints[index]
                    .ejected_until
                    .get()
                    .is_none_or(|until| until <= now)
        };
        if let Some(index) = (0..count)
            .map(|step| (start + step) % count)
            .find(|&i| usable(i))
        {
            return index;
        }
        (0..count)
            .filter(|&index| Some(index) != avoid || count == 1)
            .min_by_key(|&index| self.endpoints[index].ejected_until.get())
            .unwrap_or(0)
    }

    /// Records the outcome of an exchange with endpoint `index`. Returns true when this
    /// failure ejected the endpoint.
    pub fn report(&self, index: usize, outcome: Outcome, now: Instant) -> bool {
        let endpoint = &self.endpoints[index];
        match outcome {
            Outcome::Healthy => {
                endpoint.failures.set(0);
                endpoint.ejected_until.set(None);
                false
            }
            Outcome::Failed => {
                let failures = endpoint.failures.get() + 1;
                endpoint.failures.set(failures);
                let eject = failures >= self.config.eject_after;
                if eject {
                    endpoint.failures.set(0);
                    endpoint
                        .ejected_until
                        .set(Some(now + self.config.eject_for));
                }
                eject
            }
        }
    }
}
