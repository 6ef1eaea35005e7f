//! Messages from the control plane (the admin API, a reload) to a shard, and how a shard
//! obeys them.
//!
//! Each shard has an unbounded inbox read by one task of its own, so a message never waits
//! on a request and a request never waits on a message. Every message carries a reply
//! channel; the control plane waits for every shard's reply before it answers, which is how
//! an admin change is in effect on all shards once its answer is sent.

use std::rc::Rc;
use std::sync::{mpsc as std_mpsc, Arc};

use tokio::sync::mpsc;

use super::{Limits, Routing, Shard};
use crate::config::Config;
use crate::keys::KeyTable;
use crate::metrics::Slots;
use crate::quota::Counters;
use crate::upstream::KeyPool;

/// A message to a shard.
pub enum Control {
    /// Use this key table from now on.
    Keys {
        /// The new table.
        table: Arc<KeyTable>,
        /// Answered once the shard uses it.
        done: std_mpsc::Sender<()>,
    },
    /// Use these limits, routes and upstreams from now on (a reload).
    Routing {
        /// The reloaded config (without its client keys, which travel in [`Control::Keys`]).
        config: Arc<Config>,
        /// Each upstream's provider key pool, in the config's order.
        pools: Arc<[Option<Arc<KeyPool>>]>,
        /// The routes' and upstreams' metric label slots.
        slots: Slots,
        /// Answered once the shard uses them.
        done: std_mpsc::Sender<()>,
    },
    /// Report the counters of the key at position `key` and of its tenant (sent to the
    /// shard that owns them).
    Usage {
        /// The key's position.
        key: u32,
        /// Answered with the counters; fresh ones when never used.
        reply: std_mpsc::Sender<Usage>,
    },
    /// Clear what a key (or a tenant) has used, then report like [`Control::Usage`].
    Reset {
        /// The key's position, or the tenant's with `tenant`.
        index: u32,
        /// Whether `index` is a tenant's.
        tenant: bool,
        /// Answered with the counters after the reset.
        reply: std_mpsc::Sender<Usage>,
    },
}

/// A principal's counters as its owning shard holds them.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The key's counters (or the tenant's, for a tenant reset).
    pub key: Counters,
    /// Its tenant's counters, for a key with a tenant.
    pub tenant: Option<Counters>,
}

/// The sending side of every shard's inbox, in shard order.
pub type Controls = Arc<[mpsc::UnboundedSender<Control>]>;

impl Shard {
    /// Obeys the control plane's messages until the runtime ends.
    pub(super) async fn obey(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<Control>) {
        while let Some(message) = inbox.recv().await {
            match message {
                Control::Keys { table, done } => {
                    let generation = table.generation();
                    self.keys.replace(table);
                    tracing::debug!(shard = self.id, generation, "new key table");
                    let _ = done.send(());
                }
                Control::Routing {
                    config,
                    pools,
                    slots,
                    done,
                } => {
                    self.set_limits(Limits::new(&config));
                    self.routing.replace(Routing::new(&config, &pools, slots));
                    let _ = done.send(());
                }
                Control::Usage { key, reply } => {
                    let _ = reply.send(self.usage(key));
                }
                Control::Reset {
                    index,
                    tenant,
                    reply,
                } => {
                    self.quota.borrow_mut().reset(tenant, index);
                    let usage = if tenant {
                        let quota = self.quota.borrow();
                        Usage {
                            key: quota.tenant_counters(index).cloned().unwrap_or_default(),
                            tenant: None,
                        }
                    } else {
                        self.usage(index)
                    };
                    let _ = reply.send(usage);
                }
            }
        }
    }

    fn usage(&self, key: u32) -> Usage {
        let keys = self.keys.get();
        let quota = self.quota.borrow();
        let tenant = keys.key(key).tenant;
        Usage {
            key: quota.key_counters(key).cloned().unwrap_or_default(),
            tenant: tenant.map(|index| quota.tenant_counters(index).cloned().unwrap_or_default()),
        }
    }
}
