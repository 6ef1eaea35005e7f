//! Reloading the config on SIGHUP, without dropping a connection or a request.
//!
//! The new config is validated whole before anything changes. Client keys and tenants go to
//! [`crate::clients`], which composes them with the admin API's changes; limits, routes and
//! upstreams go to every shard as one [`Control::Routing`] message, from which each shard
//! builds its own routing and swaps it in. Exchanges already running keep the routing they
//! started with to their end; connections stay open throughout. Provider key pools of
//! upstreams whose definition did not change are kept as they are; a changed upstream gets a
//! new pool that takes over the old one's key states (cooldowns, disabled keys, learned
//! limits) by key id and secret.
//!
//! Settings that shape the process itself (listen addresses, workers, state_dir, the access
//! log's file, the tuning file) take a restart; a reload that changes them applies the rest
//! and logs each one it left.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use super::{Control, Gateway};
use crate::clients::ClientsError;
use crate::config::Config;
use crate::upstream::persist;
use crate::upstream::KeyPool;

/// How long a shard may take to switch before the reload is reported late.
const SHARD_ANSWER: Duration = Duration::from_secs(5);

/// Why a reload was not applied, or not everywhere.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The client keys or tenants cannot be applied; nothing changed.
    #[error(transparent)]
    Clients(#[from] ClientsError),
    /// A shard did not switch in time; it will when it gets to the message.
    #[error("shard {0} did not take the new routing in time")]
    ShardLate(usize),
}

impl Gateway {
    /// Applies a reloaded, validated config. Says what it did, or why nothing changed.
    pub fn reload(&self, mut config: Config) -> Result<String, ReloadError> {
        let running = Arc::clone(&self.config.lock().unwrap_or_else(|p| p.into_inner()));
        let kept = restart_only(&running, &config);
        for setting in &kept {
            tracing::warn!(
                setting,
                "reload: this setting takes a restart; the running value stays"
            );
        }

        self.clients.reload(&config)?;
        config.client_keys = Vec::new();

        let pools = self.pools_for(&running, &config);
        // Labels first: a shard may count under a new slot as soon as it switches.
        let slots = self
            .labels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .slots(&config);
        let config = Arc::new(config);
        let pools: Arc<[Option<Arc<KeyPool>>]> = pools.into();
        let (done, acks) = std_mpsc::channel();
        let mut sent = Vec::new();
        for (shard, control) in self.controls.iter().enumerate() {
            let message = Control::Routing {
                config: Arc::clone(&config),
                pools: Arc::clone(&pools),
                slots: slots.clone(),
                done: done.clone(),
            };
            if control.send(message).is_ok() {
                sent.push(shard);
            }
        }
        drop(done);
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) =
            pools.iter().flatten().cloned().collect();
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&config);
        for &shard in &sent {
            acks.recv_timeout(SHARD_ANSWER)
                .map_err(|_| ReloadError::ShardLate(shard))?;
        }

        let live = self
            .clients
            .table()
            .keys()
            .iter()
            .filter(|k| !k.revoked)
            .count();
        let mut summary = format!(
            "{} routes, {} upstreams, {live} client keys live",
            config.routes.len(),
            config.upstreams.len()
        );
        if !kept.is_empty() {
            summary.push_str(&format!("; restart to apply {}", kept.join(", ")));
        }
        Ok(summary)
    }

    /// The provider key pools for `config`'s upstreams: an unchanged upstream keeps its pool;
    /// a changed or new one gets a fresh pool holding the states its keys had.
    fn pools_for(&self, running: &Config, config: &Config) -> Vec<Option<Arc<KeyPool>>> {
        let current = persist::current(&self.pools);
        let by_name = |name: &str| current.iter().find(|pool| &*pool.upstream == name);
        let now = persist::now();
        config
            .upstreams
            .iter()
            .map(|upstream| {
                let old = by_name(&upstream.name);
                let unchanged = running.upstream(&upstream.name) == Some(upstream);
                match (old, unchanged) {
                    (Some(old), true) => Some(Arc::clone(old)),
                    _ => KeyPool::new(upstream).map(|pool| {
                        if let Some(old) = old {
                            pool.restore(&old.records(), now);
                        }
                        Arc::new(pool)
                    }),
                }
            })
            .collect()
    }
}

/// The settings that differ between `running` and `config` but take a restart.
fn restart_only(running: &Config, config: &Config) -> Vec<&'static str> {
    let (old, new) = (&running.gateway, &config.gateway);
    let checks = [
        ("gateway.listen", old.listen != new.listen),
        ("gateway.admin_listen", old.admin_listen != new.admin_listen),
        (
            "gateway.admin_token_env",
            old.admin_token_env != new.admin_token_env,
        ),
        ("gateway.workers", old.workers != new.workers),
        ("gateway.state_dir", old.state_dir != new.state_dir),
        ("gateway.access_log", old.access_log != new.access_log),
        (
            "gateway.access_log_max_bytes",
            old.access_log_max_bytes != new.access_log_max_bytes,
        ),
        (
            "gateway.access_log_keep",
            old.access_log_keep != new.access_log_keep,
        ),
        (
            "gateway.persist_interval",
            old.persist_interval != new.persist_interval,
        ),
        (
            "gateway.drain_timeout",
            old.drain_timeout != new.drain_timeout,
        ),
        ("tuning", running.tuning != config.tuning),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}
