//! Request metrics. Each shard counts into plain cells on its own thread (no lock, no
//! atomic on the request path) and once a second adds what it counted to a snapshot it
//! shares with the admin listener, behind a mutex that only that hand-over and a scrape
//! take. A scrape therefore sees counts up to a second old.
//!
//! Client keys and tenants are counted by their position in the key table, never by name:
//! names are resolved when a scrape renders them. Keys are counted in a map that holds only
//! those that had traffic, and tenants in a list grown when a position is first seen, so
//! neither depends on how many keys or tenants the table held at start. The request path
//! allocates only the first time a shard sees a key (or a tenant, or an upstream).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::quota::{Exceeded, Positions};

/// The upper bounds, in seconds, of the request and upstream duration histograms' buckets.
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

/// The longest duration the histograms tell apart: an hour, in microseconds.
const MAX_DURATION_US: u64 = 3_600_000_000;

/// What a client key, or a tenant's keys, were used for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests answered, per status class (1xx to 5xx).
    pub requests: [u64; 5],
    /// Prompt and completion tokens the providers reported.
    pub tokens: [u64; 2],
}

impl Usage {
    fn count(&mut self, class: Option<usize>, tokens: Option<(u64, u64)>) {
        if let Some(class) = class {
            self.requests[class] += 1;
        }
        if let Some((prompt, completion)) = tokens {
            self.tokens[0] += prompt;
            self.tokens[1] += completion;
        }
    }

    fn add(&mut self, other: &Usage) {
        for (a, b) in self.requests.iter_mut().zip(&other.requests) {
            *a += b;
        }
        self.tokens[0] += other.tokens[0];
        self.tokens[1] += other.tokens[1];
    }
}

/// The route and upstream labels metrics are kept under, by slot. Slots are handed out as
/// routes and upstreams first appear and are never taken back, so a reload that adds,
/// removes or reorders routes leaves every series with its own counts: a slot's label never
/// changes, and counters stay monotonic as Prometheus needs.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// Route labels (`path_prefix`) by slot.
    pub routes: Vec<String>,
    /// Upstream names by slot.
    pub upstreams: Vec<String>,
}

/// The labels, shared by the control plane (which adds to them) and the admin listener.
pub type SharedLabels = Arc<std::sync::RwLock<Labels>>;

/// For each route and upstream of a config, in config order, its label slot.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    /// Route slots by config position.
    pub routes: Vec<usize>,
    /// Upstream slots by config position.
    pub upstreams: Vec<usize>,
}

impl Labels {
    /// The slots of `config`'s routes and upstreams, adding labels first seen.
    pub fn slots(&mut self, config: &crate::config::Config) -> Slots {
        fn slot(labels: &mut Vec<String>, label: &str) -> usize {
            labels.iter().position(|l| l == label).unwrap_or_else(|| {
                labels.push(label.to_owned());
                labels.len() - 1
            })
        }
        Slots {
            routes: config
                .routes
                .iter()
                .map(|route| slot(&mut self.routes, &route.path_prefix))
                .collect(),
            upstreams: config
                .upstreams
                .iter()
                .map(|upstream| slot(&mut self.upstreams, &upstream.name))
                .collect(),
        }
    }
}

/// One shard's connections to one upstream, as of a hand-over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolGauge {
    /// Connections idle in the keep-alive pools of the upstream's endpoints.
    pub idle: u64,
    /// Connections carrying a request: one request in flight each (HTTP/1.1).
    pub busy: u64,
}

/// What one shard counted (or, published, what every hand-over added up to).
#[derive(Debug, Clone)]
pub struct Counts {
    /// Per route label slot, after a first entry for requests no route matched, per status
    /// class (1xx to 5xx): requests answered.
    pub requests: Vec<[u64; 5]>,
    /// Per route, as `requests`: durations in microseconds.
    pub durations: Vec<Histogram<u64>>,
    /// Per upstream (config order): time from sending an attempt to its response head, in
    /// microseconds.
    pub upstream_durations: Vec<Histogram<u64>>,
    /// Per [`REJECTION_REASONS`]: requests a client key's limits refused.
    pub rejections: [u64; 8],
    /// Per tenant, by table position, for requests with a client key; as long as the
    /// highest position seen.
    pub tenants: Vec<Usage>,
    /// Requests with a client key that belongs to no tenant.
    pub untenanted: Usage,
    /// Per client key, by table position; only keys that had traffic.
    pub keys: HashMap<u32, Usage, Positions>,
    /// Client connections open on the shard at the last hand-over.
    pub connections: u64,
    /// Per upstream (config order): the shard's connections to it at the last hand-over.
    pub pools: Vec<PoolGauge>,
}

impl Counts {
    /// Empty counts for `routes` route slots and `upstreams` upstream slots (more are added
    /// as they are counted).
    pub fn new(routes: usize, upstreams: usize) -> Counts {
        Counts {
            requests: vec![[0; 5]; routes + 1],
            durations: vec![histogram(); routes + 1],
            upstream_durations: vec![histogram(); upstreams],
            rejections: [0; 8],
            tenants: Vec::new(),
            untenanted: Usage::default(),
            keys: HashMap::default(),
            connections: 0,
            pools: Vec::new(),
        }
    }

    /// Adds the counters of `other` (with the same routes) to these; the gauges
    /// (`connections`, `pools`) are replaced by the other's.
    pub fn add(&mut self, other: &Counts) {
        for (index, theirs) in other.requests.iter().enumerate() {
            let mine = slot(&mut self.requests, index, || [0; 5]);
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        for (index, theirs) in other.durations.iter().enumerate() {
            // Same bounds on both sides: adding cannot fail.
            let _ = slot(&mut self.durations, index, histogram).add(theirs);
        }
        for (index, theirs) in other.upstream_durations.iter().enumerate() {
            let _ = slot(&mut self.upstream_durations, index, histogram).add(theirs);
        }
        for (a, b) in self.rejections.iter_mut().zip(&other.rejections) {
            *a += b;
        }
        for (index, theirs) in other.tenants.iter().enumerate() {
            slot(&mut self.tenants, index, Usage::default).add(theirs);
        }
        self.untenanted.add(&other.untenanted);
        for (&key, theirs) in &other.keys {
            self.keys.entry(key).or_default().add(theirs);
        }
        self.connections = other.connections;
        self.pools.clone_from(&other.pools);
    }

    /// Zeroes the counters, keeping the room they took so that counting again allocates
    /// nothing (the key map keeps its capacity, not its entries).
    fn clear(&mut self) {
        self.requests.iter_mut().for_each(|r| *r = [0; 5]);
        self.durations.iter_mut().for_each(Histogram::reset);
        self.upstream_durations
            .iter_mut()
            .for_each(Histogram::reset);
        self.rejections = [0; 8];
        self.tenants.iter_mut().for_each(|t| *t = Usage::default());
        self.untenanted = Usage::default();
        self.keys.clear();
    }
}

/// One finished exchange, as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The route's label slot ([`Slots`]), if one matched.
    pub route: Option<usize>,
    /// The status sent (or logged, as 499 for a client that left).
    pub status: u16,
    /// From the request head to the response's last byte, in microseconds.
    pub duration_us: u64,
    /// The limit that refused the request, if one did.
    pub rejected: Option<Exceeded>,
    /// The client key's position in the key table, once the key was recognised.
    pub key: Option<u32>,
    /// The key's tenant's position in the key table, if it has one.
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
    /// Metrics for `routes` routes and `upstreams` upstreams, and the snapshot a scrape
    /// reads.
    pub fn new(routes: usize, upstreams: usize) -> (ShardMetrics, Arc<Mutex<Counts>>) {
        let published = Arc::new(Mutex::new(Counts::new(routes, upstreams)));
        let metrics = ShardMetrics {
            local: RefCell::new(Counts::new(routes, upstreams)),
            published: Arc::clone(&published),
        };
        (metrics, published)
    }

    /// Counts one exchange.
    pub fn record(&self, exchange: &Exchange) {
        let mut counts = self.local.borrow_mut();
        let route = exchange.route.map_or(0, |slot| slot + 1);
        let class = (exchange.status / 100)
            .checked_sub(1)
            .map(usize::from)
            .filter(|&c| c < 5);
        if let Some(class) = class {
            slot(&mut counts.requests, route, || [0; 5])[class] += 1;
        }
        let duration = exchange.duration_us.clamp(1, MAX_DURATION_US);
        let _ = slot(&mut counts.durations, route, histogram).record(duration);
        if let Some(exceeded) = exchange.rejected {
            if let Some(i) = REJECTION_REASONS
                .iter()
                .position(|&r| r == exceeded.reason())
            {
                counts.rejections[i] += 1;
            }
        }

        // Usage is counted for requests that presented a known key, by the key's and its
        // tenant's positions.
        let Some(key) = exchange.key else { return };
        counts
            .keys
            .entry(key)
            .or_default()
            .count(class, exchange.tokens);
        let tenant = match exchange.tenant {
            Some(tenant) => slot(&mut counts.tenants, tenant as usize, Usage::default),
            None => &mut counts.untenanted,
        };
        tenant.count(class, exchange.tokens);
    }

    /// Counts the time an attempt to upstream `upstream` (its label slot) took
    /// from being sent to its response head.
    pub fn upstream_answered(&self, upstream: usize, latency_us: u64) {
        let mut counts = self.local.borrow_mut();
        let latencies = slot(&mut counts.upstream_durations, upstream, histogram);
        let _ = latencies.record(latency_us.clamp(1, MAX_DURATION_US));
    }

    /// Adds what was counted since the last hand-over to the published snapshot, with the
    /// shard's open client connections and its connections to each upstream.
    pub fn publish(&self, connections: usize, pools: impl IntoIterator<Item = PoolGauge>) {
        let mut local = self.local.borrow_mut();
        local.connections = connections as u64;
        local.pools.clear();
        local.pools.extend(pools);
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

/// An empty duration histogram.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_DURATION_US, 2).expect("valid bounds")
}

/// The entry at `index`, growing `list` with `empty()` up to it first.
fn slot<T>(list: &mut Vec<T>, index: usize, empty: impl Fn() -> T) -> &mut T {
    if list.len() <= index {
        list.resize_with(index + 1, empty);
    }
    &mut list[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(route: Option<usize>, status: u16, duration_us: u64) -> Exchange {
        Exchange {
            route,
            status,
            duration_us,
            rejected: None,
            key: Some(4),
            tenant: Some(0),
            tokens: Some((3, 4)),
        }
    }

    #[test]
    fn counts_are_kept_by_route_and_class_and_published_once() {
        let (metrics, published) = ShardMetrics::new(2, 1);
        metrics.record(&exchange(Some(1), 200, 800));
        metrics.record(&exchange(Some(1), 503, 20_000));
        metrics.record(&exchange(None, 404, 50));
        metrics.record(&Exchange {
            rejected: Some(Exceeded::Concurrency),
            tokens: None,
            ..exchange(Some(0), 429, 40)
        });
        metrics.record(&exchange(Some(7), 200, 1));
        metrics.record(&exchange(None, 0, 1));
        metrics.publish(5, []);
        metrics.publish(6, []);
        let counts = published.lock().unwrap();
        // Entry 0 is for no route; route slot s is at s + 1.
        assert_eq!(counts.requests[2], [0, 1, 0, 0, 1]);
        assert_eq!(counts.requests[1], [0, 0, 0, 1, 0]);
        assert_eq!(counts.requests[0], [0, 0, 0, 1, 0]);
        // A slot past those known at start (a route added by a reload) gets its own entry;
        // a status 0 has no class but its duration counts.
        assert_eq!(counts.requests[8], [0, 1, 0, 0, 0]);
        assert_eq!(counts.durations[8].len(), 1);
        assert_eq!(counts.durations[2].len(), 2);
        assert_eq!(counts.durations[0].len(), 2);
        assert_eq!(counts.rejections[7], 1);
        assert_eq!(counts.tenants[0].tokens, [15, 20]);
        assert_eq!(counts.connections, 6);
    }

    #[test]
    fn usage_is_kept_per_key_and_tenant_position_however_many_there_are() {
        let (metrics, published) = ShardMetrics::new(1, 1);
        // Positions past anything seen at start (keys and tenants added at runtime).
        metrics.record(&Exchange {
            key: Some(1_000_000),
            tenant: Some(9),
            ..exchange(Some(0), 200, 10)
        });
        metrics.record(&Exchange {
            key: Some(1_000_000),
            tenant: Some(9),
            tokens: None,
            ..exchange(Some(0), 429, 10)
        });
        metrics.record(&Exchange {
            key: Some(2),
            tenant: None,
            ..exchange(Some(0), 200, 10)
        });
        // Without a key, nothing is counted as usage.
        metrics.record(&Exchange {
            key: None,
            tenant: None,
            ..exchange(Some(0), 401, 10)
        });
        metrics.publish(0, []);
        metrics.record(&Exchange {
            key: Some(2),
            tenant: None,
            ..exchange(Some(0), 500, 10)
        });
        metrics.publish(0, []);

        let counts = published.lock().unwrap();
        assert_eq!(counts.keys.len(), 2);
        let busy = counts.keys[&1_000_000];
        assert_eq!(busy.requests, [0, 1, 0, 1, 0]);
        assert_eq!(busy.tokens, [3, 4]);
        assert_eq!(counts.keys[&2].requests, [0, 1, 0, 0, 1]);
        assert_eq!(counts.keys[&2].tokens, [6, 8]);
        assert_eq!(counts.tenants.len(), 10);
        assert_eq!(counts.tenants[9].requests, [0, 1, 0, 1, 0]);
        assert_eq!(counts.tenants[3], Usage::default());
        assert_eq!(counts.untenanted.requests, [0, 1, 0, 0, 1]);
    }

    #[test]
    fn upstream_latencies_and_pool_gauges_are_handed_over_per_upstream() {
        let (metrics, published) = ShardMetrics::new(1, 2);
        metrics.upstream_answered(1, 2_000);
        metrics.upstream_answered(1, 0);
        metrics.upstream_answered(3, 70_000);
        let gauge = PoolGauge { idle: 3, busy: 1 };
        metrics.publish(0, [PoolGauge::default(), gauge]);
        metrics.upstream_answered(1, 500);
        metrics.publish(0, [gauge, gauge]);

        let counts = published.lock().unwrap();
        assert_eq!(counts.upstream_durations[0].len(), 0);
        assert_eq!(counts.upstream_durations[1].len(), 3);
        assert_eq!(counts.upstream_durations[1].count_between(0, 1_000), 2);
        assert_eq!(counts.upstream_durations[3].len(), 1);
        // Gauges are the last hand-over's, not a sum.
        assert_eq!(counts.pools, [gauge, gauge]);
    }

    #[test]
    fn adding_shards_sums_counters_of_every_shape() {
        let (one, first) = ShardMetrics::new(1, 1);
        let (two, second) = ShardMetrics::new(1, 1);
        one.record(&exchange(Some(0), 200, 10));
        two.record(&exchange(Some(0), 200, 10));
        two.record(&Exchange {
            key: Some(8),
            tenant: Some(2),
            ..exchange(Some(0), 200, 10)
        });
        one.publish(1, []);
        two.publish(2, []);

        let mut total = Counts::new(1, 1);
        total.add(&first.lock().unwrap());
        total.add(&second.lock().unwrap());
        assert_eq!(total.requests[1], [0, 3, 0, 0, 0]);
        assert_eq!(total.requests[0], [0; 5]);
        assert_eq!(total.keys[&4].requests, [0, 2, 0, 0, 0]);
        assert_eq!(total.keys[&8].requests, [0, 1, 0, 0, 0]);
        assert_eq!(total.tenants[0].requests, [0, 2, 0, 0, 0]);
        assert_eq!(total.tenants[2].requests, [0, 1, 0, 0, 0]);
    }
}
