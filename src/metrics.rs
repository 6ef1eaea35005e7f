//! Request metrics. Each shard counts into plain cells on its own thread (no lock, no
//! atomic on the request path) and once a second adds what it counted to a snapshot it
//! shares with the admin listener, behind a mutex that only that hand-over and a scrape
//! take. A scrape therefore sees counts up to a second old.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::quota::Exceeded;

/// The upper bounds, in seconds, of the request duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every reason a client key's limits refuse a request, as `Exceeded::reason` names it.
pub const REJECTION_REASONS: [&str; 8] = [
    "rate",
    "quota_minute",
    "quota_hour",
    "quota_day",
    "quota_month",
    "tokens_per_minute",
    "tokens_per_day",
    "concurrency",
];

/// The longest duration the histogram tells apart: an hour, in microseconds.
const MAX_DURATION_US: u64 = 3_600_000_000;

/// What one shard counted (or, published, what every hand-over added up to).
#[derive(Debug, Clone)]
pub struct Counts {
    /// Per route (config order, then one for requests no route matched), per status class
    /// (1xx to 5xx): requests answered.
    pub requests: Vec<[u64; 5]>,
    /// Per route, as `requests`: durations in microseconds.
    pub durations: Vec<Histogram<u64>>,
    /// Per [`REJECTION_REASONS`]: requests a client key's limits refused.
    pub rejections: [u64; 8],
    /// Per tenant (config order, then one for keys without a tenant or no key): prompt and
    /// completion tokens the providers reported.
    pub tokens: Vec<[u64; 2]>,
    /// Client connections open on the shard at the last hand-over.
    pub connections: u64,
}

impl Counts {
    /// Empty counts for `routes` routes and `tenants` tenants.
    pub fn new(routes: usize, tenants: usize) -> Counts {
        let histogram = Histogram::new_with_max(MAX_DURATION_US, 2).expect("valid bounds");
        Counts {
            requests: vec![[0; 5]; routes + 1],
            durations: vec![histogram; routes + 1],
            rejections: [0; 8],
            tokens: vec![[0; 2]; tenants + 1],
            connections: 0,
        }
    }

    /// Adds `other` (of the same shape) to these counts; `connections` is replaced.
    pub fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        for (mine, theirs) in self.durations.iter_mut().zip(&other.durations) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(theirs);
        }
        for (a, b) in self.rejections.iter_mut().zip(&other.rejections) {
            *a += b;
        }
        for (mine, theirs) in self.tokens.iter_mut().zip(&other.tokens) {
            mine[0] += theirs[0];
            mine[1] += theirs[1];
        }
        self.connections = other.connections;
    }

    fn clear(&mut self) {
        self.requests.iter_mut().for_each(|r| *r = [0; 5]);
        self.durations.iter_mut().for_each(Histogram::reset);
        self.rejections = [0; 8];
        self.tokens.iter_mut().for_each(|t| *t = [0; 2]);
    }
}

/// One finished exchange, as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The route's position in the config, if one matched.
    pub route: Option<usize>,
    /// The status sent (or logged, as 499 for a client that left).
    pub status: u16,
    pub duration_us: u64,
    /// The limit that refused the request, if one did.
    pub rejected: Option<Exceeded>,
    /// The tenant's position in the config, if the key has one.
    pub tenant: Option<u32>,
    /// Prompt and completion tokens the provider reported.
    pub tokens: Option<(u64, u64)>,
}

/// A shard's metrics: counted locally, handed over once a second.
pub struct ShardMetrics {
    local: RefCell<Counts>,
    published: Arc<Mutex<Counts>>,
}

impl ShardMetrics {
    /// Metrics for `routes` routes and `tenants` tenants, and the snapshot a scrape reads.
    pub fn new(routes: usize, tenants: usize) -> (ShardMetrics, Arc<Mutex<Counts>>) {
        let published = Arc::new(Mutex::new(Counts::new(routes, tenants)));
        let metrics = ShardMetrics {
            local: RefCell::new(Counts::new(routes, tenants)),
            published: Arc::clone(&published),
        };
        (metrics, published)
    }

    /// Counts one exchange.
    pub fn record(&self, exchange: &Exchange) {
        let mut counts = self.local.borrow_mut();
        let routes = counts.requests.len() - 1;
        let route = exchange.route.filter(|&r| r < routes).unwrap_or(routes);
        if let Some(class) = (exchange.status / 100).checked_sub(1).filter(|&c| c < 5) {
            counts.requests[route][class as usize] += 1;
        }
        let duration = exchange.duration_us.clamp(1, MAX_DURATION_US);
        let _ = counts.durations[route].record(duration);
        if let Some(exceeded) = exchange.rejected {
            if let Some(i) = REJECTION_REASONS
                .iter()
                .position(|&r| r == exceeded.reason())
            {
                counts.rejections[i] += 1;
            }
        }
        if let Some((prompt, completion)) = exchange.tokens {
            let tenants = counts.tokens.len() - 1;
            let tenant = exchange
                .tenant
                .map(|t| t as usize)
                .filter(|&t| t < tenants)
                .unwrap_or(tenants);
            counts.tokens[tenant][0] += prompt;
            counts.tokens[tenant][1] += completion;
        }
    }

    /// Adds what was counted since the last hand-over to the published snapshot, with the
    /// shard's open connections.
    pub fn publish(&self, connections: usize) {
        let mut local = self.local.borrow_mut();
        local.connections = connections as u64;
        // Only this hand-over and a scrape take the lock; a poisoned one still holds counts.
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        published.add(&local);
        drop(published);
        local.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_by_route_and_class_and_published_once() {
        let (metrics, published) = ShardMetrics::new(2, 1);
        let exchange = |route, status, duration_us| Exchange {
            route,
            status,
            duration_us,
            rejected: None,
            tenant: Some(0),
            tokens: Some((3, 4)),
        };
        metrics.record(&exchange(Some(1), 200, 800));
        metrics.record(&exchange(Some(1), 503, 20_000));
        metrics.record(&exchange(None, 404, 50));
        metrics.record(&Exchange {
            rejected: Some(Exceeded::Concurrency),
            tokens: None,
            ..exchange(Some(0), 429, 40)
        });
        metrics.record(&exchange(Some(7), 0, 1));
        metrics.publish(5);
        metrics.publish(6);
        let counts = published.lock().unwrap();
        assert_eq!(counts.requests[1], [0, 1, 0, 0, 1]);
        assert_eq!(counts.requests[0], [0, 0, 0, 1, 0]);
        // An unknown route counts as none matched; a status 0 has no class.
        assert_eq!(counts.requests[2], [0, 0, 0, 1, 0]);
        assert_eq!(counts.durations[1].len(), 2);
        assert_eq!(counts.durations[2].len(), 2);
        assert_eq!(counts.rejections[7], 1);
        assert_eq!(counts.tokens[0], [12, 16]);
        assert_eq!(counts.connections, 6);
    }
}
