//! Client limits: request rate (GCRA), calendar quotas, concurrency and token budgets, kept
//! per client key and per tenant on the shard that owns them.
//!
//! Only the owning shard changes a principal's counters, so they are plain fields behind the
//! shard's own `RefCell`: no locks, no atomics. An admission checks every limit of the key
//! and of its tenant before changing anything, so a refused request consumes nothing.
//! Nothing here does I/O; [`journal`] persists counters off the request path.

mod clock;
mod counters;
mod gcra;
pub mod journal;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub use clock::{civil_from_days, days_from_civil, Clock, Window, SECOND};
pub use counters::{Budget, Counters, Exceeded, Grant, Hold, Refusal, WindowCount};
pub use gcra::Bucket;

use crate::keys::{ClientKey, KeyTable};

/// What an admitted request holds of its key's and its tenant's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// The key's part.
    pub key: Hold,
    /// The tenant's part (empty without a tenant).
    pub tenant: Hold,
}

impl Reservation {
    /// Tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.key.tokens
    }

    /// A reservation of `tokens` admitted at `at` of which nothing has drained, for tests.
    #[cfg(test)]
    pub fn fresh(at: u64, tokens: u64) -> Reservation {
        Reservation {
            key: Hold::fresh(at, tokens),
            tenant: Hold::fresh(at, tokens),
        }
    }
}

/// Counters of a principal never seen on this shard.
static FRESH: Counters = Counters {
    rate_tat: 0,
    windows: [WindowCount { id: 0, used: 0 }; 4],
    tokens_tat: 0,
    tokens_day: WindowCount { id: 0, used: 0 },
    in_flight: 0,
};

/// The counters one shard owns, by key and tenant position in the [`KeyTable`]. Entries
/// appear on first use, so idle keys cost nothing here.
#[derive(Debug, Default)]
pub struct QuotaBook {
    keys: HashMap<u32, Counters, Positions>,
    tenants: HashMap<u32, Counters, Positions>,
    /// Principals changed since the last [`QuotaBook::take_changes`], each once.
    changed: Vec<(bool, u32)>,
    /// A bit per position, keys then tenants: set while the principal is in `changed`, so
    /// that the list grows with the principals used, not with the requests.
    listed: [Vec<u64>; 2],
}

/// Hashes a key's or tenant's position in the [`KeyTable`] with one multiplication.
///
/// The positions are numbers the gateway assigned in config order, not values a client
/// makes up, so SipHash's defence against chosen keys buys nothing here, and the book is
/// looked up several times per request. Multiplying by an odd constant maps distinct low
/// bits to distinct low bits (the table's bucket index) and mixes the high bits (its tag).
#[derive(Debug, Default, Clone, Copy)]
pub struct PositionHasher(u64);

impl Hasher for PositionHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(MIX);
        }
    }

    fn write_u32(&mut self, position: u32) {
        self.0 = (self.0 ^ u64::from(position)).wrapping_mul(MIX);
    }
}

/// 2^64 divided by the golden ratio, odd: Fibonacci hashing's multiplier.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hashing for maps keyed by a key's or tenant's table position.
pub type Positions = BuildHasherDefault<PositionHasher>;

impl QuotaBook {
    /// Admits one request of `key` reserving `tokens` at `now`, or says why not and for how
    /// long. Must run on the key's owning shard.
    pub fn admit(
        &mut self,
        table: &KeyTable,
        key: &ClientKey,
        now: u64,
        tokens: u64,
    ) -> Result<Reservation, Refusal> {
        let tenant = key.tenant.map(|index| (index, &table.tenant(index).limits));
        let key_grant = self
            .keys
            .entry(key.index)
            .or_default()
            .check(&key.limits, now, tokens);
        let tenant_grant = tenant.map(|(index, limits)| {
            self.tenants
                .entry(index)
                .or_default()
                .check(limits, now, tokens)
        });

        let (key_grant, tenant_grant) = match (key_grant, tenant_grant) {
            (Ok(key_grant), None) => (key_grant, None),
            (Ok(key_grant), Some(Ok(tenant_grant))) => (key_grant, Some(tenant_grant)),
            (Err(a), Some(Err(b))) => {
                return Err(if b.retry_after > a.retry_after { b } else { a })
            }
            (Err(refusal), _) | (_, Some(Err(refusal))) => return Err(refusal),
        };
        let mut reservation = Reservation::default();
        if let Some(counters) = self.keys.get_mut(&key.index) {
            reservation.key = counters.commit(&key.limits, now, key_grant);
        }
        if let (Some((index, limits)), Some(grant)) = (tenant, tenant_grant) {
            if let Some(counters) = self.tenants.get_mut(&index) {
                reservation.tenant = counters.commit(limits, now, grant);
            }
        }
        self.touch(key);
        Ok(reservation)
    }

    /// Ends an admitted request: frees its concurrency slot and settles its tokens.
    pub fn settle(
        &mut self,
        table: &KeyTable,
        key: &ClientKey,
        now: u64,
        reservation: Reservation,
        used: u64,
    ) {
        if let Some(counters) = self.keys.get_mut(&key.index) {
            counters.settle(&key.limits, now, reservation.key, used);
        }
        if let Some(index) = key.tenant {
            if let Some(counters) = self.tenants.get_mut(&index) {
                counters.settle(&table.tenant(index).limits, now, reservation.tenant, used);
            }
        }
        self.touch(key);
    }

    /// Notes that the counters of `key` and its tenant changed.
    fn touch(&mut self, key: &ClientKey) {
        self.note(false, key.index);
        if let Some(tenant) = key.tenant {
            self.note(true, tenant);
        }
    }

    /// Lists a principal as changed, unless it is listed already.
    fn note(&mut self, tenant: bool, index: u32) {
        let listed = &mut self.listed[usize::from(tenant)];
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        if word >= listed.len() {
            listed.resize(word + 1, 0);
        }
        if listed[word] & bit == 0 {
            listed[word] |= bit;
            self.changed.push((tenant, index));
        }
    }

    /// The counters changed since the last call, as (is tenant, position, counters): what
    /// the journal needs to bring its snapshot up to date. Costs a copy of each changed
    /// principal's counters, nothing per request.
    pub fn take_changes(&mut self) -> Vec<(bool, u32, Counters)> {
        let mut changed = std::mem::take(&mut self.changed);
        let changes = changed
            .iter()
            .filter_map(|&(tenant, index)| {
                let book = if tenant { &self.tenants } else { &self.keys };
                let counters = book.get(&index)?;
                Some((tenant, index, counters.clone()))
            })
            .collect();
        for &(tenant, index) in &changed {
            let listed = &mut self.listed[usize::from(tenant)];
            listed[index as usize / 64] &= !(1u64 << (index % 64));
        }
        changed.clear();
        self.changed = changed;
        changes
    }

    /// The key's counters as they stand, fresh ones when it was never used here: its
    /// budgets for response headers come from them.
    pub fn counters(&self, key: &ClientKey) -> &Counters {
        self.keys.get(&key.index).unwrap_or(&FRESH)
    }

    /// The counters of a key, if it was ever used here.
    pub fn key_counters(&self, index: u32) -> Option<&Counters> {
        self.keys.get(&index)
    }

    /// Counters worth persisting: (is tenant, position, counters).
    pub fn entries(&self) -> impl Iterator<Item = (bool, u32, &Counters)> {
        let keys = self
            .keys
            .iter()
            .map(|(&index, counters)| (false, index, counters));
        let tenants = self
            .tenants
            .iter()
            .map(|(&index, counters)| (true, index, counters));
        keys.chain(tenants)
            .filter(|(_, _, counters)| !counters.is_fresh())
    }

    /// Clears what a key (or, with `tenant`, a tenant) has used: rate, calendar quotas and
    /// tokens start afresh. Requests in flight keep their concurrency slots, which they give
    /// back as they end. The change is persisted like any other.
    pub fn reset(&mut self, tenant: bool, index: u32) {
        let book = if tenant {
            &mut self.tenants
        } else {
            &mut self.keys
        };
        if let Some(counters) = book.get_mut(&index) {
            *counters = Counters {
                in_flight: counters.in_flight,
                ..Counters::default()
            };
            self.note(tenant, index);
        }
    }

    /// The counters of a tenant, if it was ever used here.
    pub fn tenant_counters(&self, index: u32) -> Option<&Counters> {
        self.tenants.get(&index)
    }

    /// Restores persisted counters (in-flight counts start at zero). They count as changed,
    /// so the next snapshot carries them on.
    pub fn restore(&mut self, tenant: bool, index: u32, counters: Counters) {
        self.note(tenant, index);
        let book = if tenant {
            &mut self.tenants
        } else {
            &mut self.keys
        };
        book.insert(
            index,
            Counters {
                in_flight: 0,
                ..counters
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// 2026-12-04T16:02:28Z.
    const T0: u64 = 1_796_400_148 * SECOND;

    /// Tenant "acme" (3 an hour, 2 in flight) with keys "a" (its own rate 1/s) and "b" (its
    /// own hourly quota of 10, one in flight), and "solo" without a tenant.
    const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[[tenant]]
name = "acme"
quota = { per_hour = 3 }
max_concurrent = 2
tokens_per_minute = 1000

[[client_key]]
id = "a"
tenant = "acme"
secret = "kg-a"
rate = "1/s"
burst = 1

[[client_key]]
id = "b"
tenant = "acme"
secret = "kg-b"
quota = { per_hour = 10 }
max_concurrent = 1

[[client_key]]
id = "solo"
secret = "kg-solo"
quota = { per_hour = 2 }
"#;

    fn table() -> KeyTable {
        let config = Config::parse(CONFIG, Path::new("q.toml"), Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{e}"));
        KeyTable::new(&config, 1)
    }

    fn key<'a>(table: &'a KeyTable, id: &str) -> &'a ClientKey {
        table.keys().iter().find(|k| &*k.id == id).unwrap()
    }

    fn tenant_counters(book: &QuotaBook) -> Counters {
        book.entries()
            .find(|(tenant, _, _)| *tenant)
            .map(|(_, _, counters)| counters.clone())
            .unwrap_or_default()
    }

    fn key_counters(book: &QuotaBook, key: &ClientKey) -> Counters {
        book.key_counters(key.index).cloned().unwrap_or_default()
    }

    #[test]
    fn positions_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let hash = |position: u32| Positions::default().hash_one(position);
        // Consecutive positions never share a bucket of a table of 1024 or fewer...
        let buckets: std::collections::HashSet<u64> = (0..1024).map(|p| hash(p) & 1023).collect();
        assert_eq!(buckets.len(), 1024);
        // ...and the top 7 bits, which tell entries of one group apart, take every value.
        let tags: std::collections::HashSet<u64> = (0..1024).map(|p| hash(p) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn a_request_counts_against_its_key_and_its_tenant() {
        let table = table();
        let (a, b) = (key(&table, "a"), key(&table, "b"));
        let mut book = QuotaBook::default();
        book.admit(&table, a, T0, 0).unwrap();
        book.settle(&table, a, T0, Reservation::fresh(T0, 0), 0);
        book.admit(&table, b, T0, 0).unwrap();
        book.settle(&table, b, T0, Reservation::fresh(T0, 0), 0);
        assert_eq!(key_counters(&book, b).windows[1].used, 1);
        assert_eq!(tenant_counters(&book).windows[1].used, 2);

        // One left for the tenant; b's own quota has 9.
        book.admit(&table, b, T0, 0).unwrap();
        book.settle(&table, b, T0, Reservation::fresh(T0, 0), 0);
        let refused = book.admit(&table, b, T0, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Quota(Window::Hour));
        assert_eq!(tenant_counters(&book).windows[1].used, 3);
    }

    #[test]
    fn a_refusal_by_the_tenant_leaves_the_key_alone() {
        let table = table();
        let (a, b) = (key(&table, "a"), key(&table, "b"));
        let mut book = QuotaBook::default();
        for at in [T0, T0 + 2 * SECOND, T0 + 4 * SECOND] {
            book.admit(&table, a, at, 0).unwrap();
            book.settle(&table, a, at, Reservation::fresh(at, 0), 0);
        }
        let (key_before, tenant_before) = (key_counters(&book, b), tenant_counters(&book));
        let refused = book.admit(&table, b, T0 + 5 * SECOND, 10).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Quota(Window::Hour));
        assert_eq!(key_counters(&book, b), key_before);
        assert_eq!(tenant_counters(&book), tenant_before);
    }

    #[test]
    fn a_refusal_by_the_key_leaves_the_tenant_alone() {
        let table = table();
        let a = key(&table, "a");
        let mut book = QuotaBook::default();
        book.admit(&table, a, T0, 10).unwrap();
        let (key_before, tenant_before) = (key_counters(&book, a), tenant_counters(&book));
        // a's own rate (1/s) refuses; the tenant would have room.
        let refused = book.admit(&table, a, T0, 10).unwrap_err();
        assert_eq!(
            refused,
            Refusal {
                exceeded: Exceeded::Rate,
                retry_after: SECOND
            }
        );
        assert_eq!(key_counters(&book, a), key_before);
        assert_eq!(tenant_counters(&book), tenant_before);
        assert_eq!(tenant_before.in_flight, 1);
    }

    #[test]
    fn settling_frees_concurrency_of_key_and_tenant() {
        let table = table();
        let (a, b) = (key(&table, "a"), key(&table, "b"));
        let mut book = QuotaBook::default();
        book.admit(&table, b, T0, 0).unwrap();
        // b holds its one slot; the tenant has another.
        let refused = book.admit(&table, b, T0, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Concurrency);
        assert_eq!(tenant_counters(&book).in_flight, 1);
        book.admit(&table, a, T0, 0).unwrap();
        // The tenant's two slots are taken now: a is refused though its own limits have room.
        let refused = book.admit(&table, a, T0 + SECOND, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Concurrency);

        book.settle(
            &table,
            b,
            T0 + SECOND,
            Reservation::fresh(T0 + SECOND, 0),
            0,
        );
        assert_eq!(key_counters(&book, b).in_flight, 0);
        assert_eq!(tenant_counters(&book).in_flight, 1);
        book.admit(&table, a, T0 + SECOND, 0).unwrap();
        assert_eq!(tenant_counters(&book).in_flight, 2);
    }

    #[test]
    fn tokens_are_settled_on_the_tenant_too() {
        let table = table();
        let a = key(&table, "a");
        let mut book = QuotaBook::default();
        book.admit(&table, a, T0, 900).unwrap();
        assert!(book.admit(&table, a, T0 + SECOND, 200).is_err());
        book.settle(
            &table,
            a,
            T0 + SECOND,
            Reservation::fresh(T0 + SECOND, 900),
            100,
        );
        // 100 spent: 900 left, 200 fit.
        book.admit(&table, a, T0 + SECOND, 200).unwrap();
    }

    #[test]
    fn a_key_without_tenant_has_only_its_own_limits() {
        let table = table();
        let solo = key(&table, "solo");
        let mut book = QuotaBook::default();
        for _ in 0..2 {
            book.admit(&table, solo, T0, 0).unwrap();
        }
        let refused = book.admit(&table, solo, T0, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Quota(Window::Hour));
        assert!(book.entries().all(|(tenant, _, _)| !tenant));
        let budget = book.counters(solo).tightest(&solo.limits, T0).unwrap();
        assert_eq!(
            (budget.name, budget.limit, budget.remaining),
            ("hour", 2, 0)
        );
    }

    /// The principals `book` lists as changed, taken, in order.
    fn taken(book: &mut QuotaBook) -> Vec<(bool, u32)> {
        let mut changed: Vec<(bool, u32)> = book
            .take_changes()
            .into_iter()
            .map(|(tenant, index, _)| (tenant, index))
            .collect();
        changed.sort_unstable();
        changed
    }

    #[test]
    fn changes_name_each_changed_principal_once() {
        let table = table();
        let (a, b) = (key(&table, "a"), key(&table, "b"));
        let mut book = QuotaBook::default();
        // One admitted and two refused (the rate allows one a second): refusals change
        // nothing and are not reported.
        for _ in 0..3 {
            if let Ok(reservation) = book.admit(&table, a, T0, 0) {
                book.settle(&table, a, T0, reservation, 0);
            }
        }
        let changed = taken(&mut book);
        let tenant = a.tenant.expect("a has a tenant");
        assert_eq!(changed, vec![(false, a.index), (true, tenant)]);
        assert!(book.take_changes().is_empty(), "taken changes are gone");

        // However many requests a principal makes between two snapshots, it is listed once:
        // the list grows with the principals used, not with the requests.
        for hour in 0..5000 {
            let at = T0 + hour * 3600 * SECOND;
            let reservation = book.admit(&table, b, at, 0).unwrap();
            book.settle(&table, b, at, reservation, 0);
            assert!(book.changed.len() <= 2, "{} listed", book.changed.len());
        }
        let changed = taken(&mut book);
        let mut expected = vec![(false, b.index)];
        expected.extend(b.tenant.map(|tenant| (true, tenant)));
        expected.sort_unstable();
        assert_eq!(changed, expected);
        assert!(book.changed.is_empty());

        // Taken, it can be listed again.
        let at = T0 + 6000 * 3600 * SECOND;
        let reservation = book.admit(&table, b, at, 0).unwrap();
        book.settle(&table, b, at, reservation, 0);
        assert_eq!(book.take_changes().len(), expected.len());
    }

    #[test]
    fn restored_counters_start_with_nothing_in_flight() {
        let table = table();
        let b = key(&table, "b");
        let mut book = QuotaBook::default();
        assert_eq!(book.entries().count(), 0);
        book.restore(
            false,
            b.index,
            Counters {
                in_flight: 1,
                windows: [
                    WindowCount::default(),
                    WindowCount {
                        id: T0 / SECOND / 3600 * 3600,
                        used: 10,
                    },
                    WindowCount::default(),
                    WindowCount::default(),
                ],
                ..Counters::default()
            },
        );
        assert_eq!(key_counters(&book, b).in_flight, 0);
        let refused = book.admit(&table, b, T0, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Quota(Window::Hour));
    }
}
