//! Admission: a client key's limits decide whether a request may go upstream, and a
//! [`Permit`] gives back what the request held (its concurrency slot, the tokens it reserved
//! beyond what it used) however the exchange ends.

use std::cell::Cell;
use std::rc::Rc;

use super::conn::ClientConn;
use super::request_body::RequestBody;
use super::Error;
use crate::ai::RequestFacts;
use crate::http::RequestHead;
use crate::keys::{ClientKey, KeyTable};
use crate::quota::Reservation;
use crate::shard::Shard;
use crate::upstream::Upstream;

/// An admitted request's hold on its key's counters, settled on drop.
pub(super) struct Permit {
    shard: Rc<Shard>,
    key: u32,
    reservation: Reservation,
    used: Cell<Option<u64>>,
}

impl Permit {
    /// Records the tokens the upstream reported, to settle the reservation against.
    pub(super) fn used(&self, tokens: u64) {
        self.used.set(Some(tokens));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Without a reported usage the reservation stands: an exchange that failed or was
        // cut off may still have cost tokens upstream.
        let used = self.used.get().unwrap_or(self.reservation.tokens());
        let shard = &self.shard;
        let table = shard.keys.get();
        shard.quota.borrow_mut().settle(
            &table,
            table.key(self.key),
            shard.clock.now(),
            self.reservation,
            used,
        );
    }
}

/// Whether a key's limits, or its tenant's, count tokens.
fn counts_tokens(table: &KeyTable, key: &ClientKey) -> bool {
    let limits = &key.limits;
    let tenant_counts_tokens = key.tenant.is_some_and(|index| {
        let tenant = &table.tenant(index).limits;
        tenant.tokens_per_minute.is_some() || tenant.tokens_per_day.is_some()
    });
    limits.tokens_per_minute.is_some() || limits.tokens_per_day.is_some() || tenant_counts_tokens
}

/// Whether admitting a request of `key` needs the facts of its body: a model list or a token
/// budget depends on them.
pub(super) fn needs_facts(table: &KeyTable, key: &ClientKey) -> bool {
    key.restricts_models() || counts_tokens(table, key)
}

/// Whether a request sends a body to be completed: every provider's completion call has
/// one; a request without (a model list, say) asks for no completion and reserves nothing.
/// Whatever usage it reports is still charged when it is settled.
pub(super) fn has_body(body: &RequestBody) -> bool {
    match body {
        RequestBody::Empty => false,
        RequestBody::Buffered(bytes) => !bytes.is_empty(),
        RequestBody::Streamed(_) | RequestBody::Chunked => true,
    }
}

/// The facts of a request's body, read only when something depends on them.
pub(super) fn facts(
    upstream: &Upstream,
    head: &RequestHead,
    body: &RequestBody,
    wanted: bool,
) -> RequestFacts {
    match body {
        RequestBody::Buffered(bytes) if wanted => {
            RequestFacts::inspect(upstream.config.provider, head.path(), bytes)
        }
        _ => RequestFacts::default(),
    }
}

impl ClientConn {
    /// Checks the key's model list and limits (and its tenant's) for this request, and
    /// takes what it needs from them. A refused request takes nothing.
    pub(super) fn admit(
        &mut self,
        table: &KeyTable,
        key: &ClientKey,
        facts: &RequestFacts,
        has_body: bool,
    ) -> Result<Permit, Error> {
        let shard = Rc::clone(&self.shard);
        let counts_tokens = counts_tokens(table, key);
        if key.restricts_models() {
            match &facts.model {
                Some(model) if key.allows_model(model) => {}
                Some(_) => return Err(Error::Forbidden("this model")),
                // A body too large to inspect cannot prove it asks for an allowed model.
                None => return Err(Error::Forbidden("a request whose model cannot be read")),
            }
        }

        let reserved = if counts_tokens && has_body {
            facts.reservation(shard.limits().default_max_tokens)
        } else {
            0
        };

        let now = shard.clock.now();
        let reservation = shard
            .quota
            .borrow_mut()
            .admit(table, key, now, reserved)
            .map_err(Error::Limited)?;
        self.count_tokens = counts_tokens;
        Ok(Permit {
            shard,
            key: key.index,
            reservation,
            used: Cell::new(None),
        })
    }
}
