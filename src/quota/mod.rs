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

pub use clock::{Clock, Window, SECOND};
pub use counters::{Budget, Counters, Exceeded, Grant, Refusal, WindowCount};
pub use gcra::Bucket;

use crate::keys::{ClientKey, KeyTable};

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
    keys: HashMap<u32, Counters>,
    tenants: HashMap<u32, Counters>,
}

impl QuotaBook {
    /// Admits one request of `key` reserving `tokens` at `now`, or says why not and for how
    /// long. Must run on the key's owning shard.
    pub fn admit(
        &mut self,
        table: &KeyTable,
        key: &ClientKey,
        now: u64,
        tokens: u64,
    ) -> Result<(), Refusal> {
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
        if let Some(counters) = self.keys.get_mut(&key.index) {
            counters.commit(&key.limits, now, key_grant);
        }
        if let (Some((index, limits)), Some(grant)) = (tenant, tenant_grant) {
            if let Some(counters) = self.tenants.get_mut(&index) {
                counters.commit(limits, now, grant);
            }
        }
        Ok(())
    }

    /// Ends an admitted request: frees its concurrency slot and settles its tokens.
    pub fn settle(
        &mut self,
        table: &KeyTable,
        key: &ClientKey,
        now: u64,
        reserved: u64,
        used: u64,
    ) {
        if let Some(counters) = self.keys.get_mut(&key.index) {
            counters.settle(&key.limits, now, reserved, used);
        }
        if let Some(index) = key.tenant {
            if let Some(counters) = self.tenants.get_mut(&index) {
                counters.settle(&table.tenant(index).limits, now, reserved, used);
            }
        }
    }

    /// The key's tightest request budget, for response headers.
    pub fn tightest(&self, key: &ClientKey, now: u64) -> Option<Budget> {
        self.keys
            .get(&key.index)
            .unwrap_or(&FRESH)
            .tightest(&key.limits, now)
    }

    /// The key's tokens-per-minute budget, for response headers.
    pub fn tokens_budget(&self, key: &ClientKey, now: u64) -> Option<Budget> {
        self.keys
            .get(&key.index)
            .unwrap_or(&FRESH)
            .tokens_budget(&key.limits, now)
    }

    /// The counters of a key, if it was ever used here.
    pub fn key_counters(&self, index: u32) -> Option<&Counters> {
        self.keys.get(&index)
    }

    /// Every request budget of a key, for `RateLimit-Policy` and `RateLimit`.
    pub fn budgets<'a>(
        &'a self,
        key: &'a ClientKey,
        now: u64,
    ) -> impl Iterator<Item = Budget> + 'a {
        self.keys
            .get(&key.index)
            .unwrap_or(&FRESH)
            .budgets(&key.limits, now)
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

    /// Restores persisted counters (in-flight counts start at zero).
    pub fn restore(&mut self, tenant: bool, index: u32, counters: Counters) {
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
