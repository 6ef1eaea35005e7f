//! Upstream groups as one shard sees them: which endpoint takes the next request, and how
//! endpoint failures eject an endpoint for a while.
//!
//! State is per shard and changes only on its shard, so it lives in `Cell`s: no locks, no
//! atomics. A failing endpoint is learned separately by each shard.

pub mod learn;

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use monoio::time::Instant;

use crate::config;
use crate::net::Pool;

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
    cursor: Cell<usize>,
}

impl Upstream {
    /// The shard-local state of a configured upstream.
    pub fn new(config: Arc<config::Upstream>) -> Self {
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
        Upstream {
            config,
            endpoints,
            cursor: Cell::new(0),
        }
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
