//! The control plane's view of the running config: reloading it on SIGHUP, and the admin
//! API's changes to routes and provider keys, all without dropping a connection or a request.
//!
//! A new config is validated whole before anything changes. Client keys and tenants go to
//! [`crate::clients`], which composes them with the admin API's changes; route states and
//! added provider keys ([`crate::overrides`]) are laid over the file; limits, routes and
//! upstreams then go to every shard as one [`Control::Routing`] message, from which each
//! shard builds its own routing and swaps it in. Exchanges already running keep the routing
//! they started with to their end; connections stay open throughout. Provider key pools of
//! upstreams whose definition did not change are kept as they are; a changed upstream gets a
//! new pool that takes over the old one's key states (cooldowns, disabled keys) by key id and
//! secret.
//!
//! Settings that shape the process itself (listen addresses, workers, state_dir, the access
//! log's file, the tuning file) take a restart; a reload that changes them applies the rest
//! and logs each one it left.

use std::path::PathBuf;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Control, Controls};
use crate::clients::{Clients, ClientsError, Definition, Invalid};
use crate::config::{Config, Route};
use crate::metrics::SharedLabels;
use crate::overrides::{self, Overrides};
use crate::upstream::persist;
use crate::upstream::{KeyPool, Pools};

/// How long a shard may take to switch before the change is reported late.
const SHARD_ANSWER: Duration = Duration::from_secs(5);

/// Why a reload or an admin change was not applied, or not everywhere.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Client keys, tenants or the change itself do not fit; nothing changed.
    #[error(transparent)]
    Clients(#[from] ClientsError),
    /// A shard did not switch in time; it will when it gets to the message.
    #[error("shard {0} did not take the new routing in time")]
    ShardLate(usize),
}

impl From<Invalid> for ReloadError {
    fn from(invalid: Invalid) -> Self {
        ReloadError::Clients(ClientsError::Invalid(invalid))
    }
}

/// What the control plane changes, and the handles it changes it through.
pub struct ControlPlane {
    state: Mutex<State>,
    /// The config the process started with: what restart-only settings still are.
    started: Arc<Config>,
    /// Provider key pools in use.
    pub pools: Pools,
    /// Metric labels of routes and upstreams.
    pub labels: SharedLabels,
    /// Client keys and tenants.
    pub clients: Arc<Clients>,
    controls: Controls,
    state_dir: PathBuf,
}

struct State {
    /// The config file as last read (without client keys).
    file: Arc<Config>,
    /// What the admin API set over it.
    overrides: Overrides,
    /// The file with the overrides: what the shards run.
    effective: Arc<Config>,
}

impl ControlPlane {
    /// The control plane of a gateway started from `file` and `overrides` (which gave
    /// `effective`).
    pub(super) fn new(
        (file, overrides, effective): (Arc<Config>, Overrides, Arc<Config>),
        pools: Pools,
        labels: SharedLabels,
        clients: Arc<Clients>,
        controls: Controls,
    ) -> ControlPlane {
        ControlPlane {
            state_dir: file.gateway.state_dir.clone(),
            started: Arc::clone(&effective),
            state: Mutex::new(State {
                file,
                overrides,
                effective,
            }),
            pools,
            labels,
            clients,
            controls,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a reloaded, validated config. Says what it did, or why nothing changed.
    pub fn reload(&self, mut file: Config) -> Result<String, ReloadError> {
        let mut state = self.lock();
        let kept = restart_only(&self.started, &file);
        for setting in &kept {
            tracing::warn!(
                setting,
                "reload: this setting takes a restart; the running value stays"
            );
        }
        // Everything is checked before anything changes: the overrides, then the keys.
        let mut effective = file.clone_without_keys();
        state.overrides.apply(&mut effective)?;
        self.clients.reload(&file)?;
        file.client_keys = Vec::new();

        let overrides = state.overrides.clone();
        self.push(&mut state, Arc::new(file), overrides, effective)?;
        let live = self
            .clients
            .table()
            .keys()
            .iter()
            .filter(|k| !k.revoked)
            .count();
        let effective = &state.effective;
        let mut summary = format!(
            "{} routes, {} upstreams, {live} client keys live",
            effective.routes.len(),
            effective.upstreams.len()
        );
        if !kept.is_empty() {
            summary.push_str(&format!("; restart to apply {}", kept.join(", ")));
        }
        Ok(summary)
    }

    /// Every route in effect with its id and whether the admin API set its state.
    pub fn routes(&self) -> Vec<(String, Route, bool)> {
        let state = self.lock();
        state
            .effective
            .routes
            .iter()
            .map(|route| {
                let id = overrides::route_id(route);
                let set = state.overrides.routes.contains_key(&id);
                (id, route.clone(), set)
            })
            .collect()
    }

    /// Changes the lifecycle of the route `id` by `patch`, a JSON merge patch of its fields
    /// (`state`, `deprecation`, `sunset`, `deprecation_link`, as the config writes them):
    /// fields not sent keep their values, so retiring a deprecated route keeps its dates.
    /// Publishing drops the other fields. `None` hands the route back to the file.
    pub fn set_route_lifecycle(
        &self,
        id: &str,
        patch: Option<Definition>,
    ) -> Result<Route, ReloadError> {
        let mut state = self.lock();
        let Some(route) = state
            .file
            .routes
            .iter()
            .find(|r| overrides::route_id(r) == id)
        else {
            return Err(ClientsError::NotFound {
                what: "route",
                name: id.to_owned(),
            }
            .into());
        };
        let mut overrides = state.overrides.clone();
        match patch {
            Some(patch) => {
                let current = (state.effective.routes.iter())
                    .find(|r| overrides::route_id(r) == id)
                    .unwrap_or(route);
                let mut lifecycle = overrides::lifecycle_definition(current);
                crate::clients::record::merge(&mut lifecycle, &patch);
                // Publishing drops the dates and link it had; any sent with it are checked.
                if lifecycle.get("state").and_then(|s| s.as_str()) == Some("published") {
                    lifecycle.retain(|field, _| field == "state" || patch.contains_key(field));
                }
                overrides::with_lifecycle(route, &lifecycle)?;
                overrides.routes.insert(id.to_owned(), lifecycle);
            }
            None => {
                overrides.routes.remove(id);
            }
        }
        self.apply_overrides(&mut state, overrides)?;
        let route = state
            .effective
            .routes
            .iter()
            .find(|r| overrides::route_id(r) == id)
            .cloned();
        route.ok_or_else(|| {
            ClientsError::NotFound {
                what: "route",
                name: id.to_owned(),
            }
            .into()
        })
    }

    /// Adds a provider key to the upstream `name`; it is used at once on every shard, and
    /// its secret is kept in `state_dir`.
    pub fn add_provider_key(&self, name: &str, key: Definition) -> Result<(), ReloadError> {
        let mut state = self.lock();
        let Some(upstream) = state.effective.upstream(name) else {
            return Err(ClientsError::NotFound {
                what: "upstream",
                name: name.to_owned(),
            }
            .into());
        };
        let config = overrides::provider_key(upstream, &key)?;
        if upstream.keys.iter().any(|k| k.id == config.id) {
            let message = format!("upstream {name} already has a provider key {:?}", config.id);
            return Err(ClientsError::Conflict(message).into());
        }
        let mut overrides = state.overrides.clone();
        overrides
            .provider_keys
            .entry(name.to_owned())
            .or_default()
            .push(key);
        self.apply_overrides(&mut state, overrides)
    }

    /// Removes the provider key `id`, added through the admin API, from the upstream `name`:
    /// no shard picks it from the answer on (an attempt already under way ends on it), and
    /// its secret leaves `state_dir`. A key of the config file is removed there (and the file
    /// reloaded); an upstream's last key cannot go, since an upstream without keys forwards
    /// its clients' own credentials: add another first, or disable it.
    pub fn remove_provider_key(&self, name: &str, id: &str) -> Result<(), ReloadError> {
        let mut state = self.lock();
        let mut overrides = state.overrides.clone();
        let added = overrides.provider_keys.get_mut(name);
        let position = added.as_ref().and_then(|added| {
            added
                .iter()
                .position(|key| overrides::definition_id(key) == id)
        });
        let in_file = state
            .file
            .upstream(name)
            .is_some_and(|file| file.keys.iter().any(|key| key.id == id));
        // An upstream the file no longer has keeps the keys added to it, unused, until they
        // are removed here: its secret must not be stuck in the state directory.
        let running_keys = state.effective.upstream(name).map(|upstream| {
            let has = upstream.keys.iter().any(|key| key.id == id);
            (has, upstream.keys.len())
        });
        match (running_keys, position) {
            (None, None) => {
                return Err(ClientsError::NotFound {
                    what: "upstream",
                    name: name.to_owned(),
                }
                .into())
            }
            (Some((false, _)), None) => {
                return Err(ClientsError::NotFound {
                    what: "provider key",
                    name: format!("{name}/{id}"),
                }
                .into())
            }
            (Some(_), None) => return Err(from_the_file(name, id)),
            (_, Some(_)) if in_file => return Err(from_the_file(name, id)),
            (Some((_, 1)), Some(_)) => {
                let message = format!(
                    "{id} is the last provider key of upstream {name}: without keys the \
                     upstream would forward its clients' own credentials; add another key \
                     first, or disable this one"
                );
                return Err(ClientsError::Conflict(message).into());
            }
            (_, Some(_)) => {}
        }
        if let (Some(added), Some(position)) = (added, position) {
            added.remove(position);
            if added.is_empty() {
                overrides.provider_keys.remove(name);
            }
        }
        self.apply_overrides(&mut state, overrides)
    }

    /// Saves `overrides` and puts the file with them in effect.
    fn apply_overrides(&self, state: &mut State, overrides: Overrides) -> Result<(), ReloadError> {
        let mut effective = state.file.clone_without_keys();
        overrides.apply(&mut effective)?;
        overrides
            .save(&self.state_dir)
            .map_err(|source| ClientsError::Save {
                path: self.state_dir.join(overrides::FILE),
                source,
            })?;
        let file = Arc::clone(&state.file);
        self.push(state, file, overrides, effective)
    }

    /// Sends `effective` to every shard and waits until each uses it.
    fn push(
        &self,
        state: &mut State,
        file: Arc<Config>,
        overrides: Overrides,
        effective: Config,
    ) -> Result<(), ReloadError> {
        let pools = self.pools_for(&state.effective, &effective);
        // Labels first: a shard may count under a new slot as soon as it switches.
        let slots = self
            .labels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .slots(&effective);
        let effective = Arc::new(effective);
        let pools: Arc<[Option<Arc<KeyPool>>]> = pools.into();
        let (done, acks) = std_mpsc::channel();
        let mut sent = Vec::new();
        for (shard, control) in self.controls.iter().enumerate() {
            let message = Control::Routing {
                config: Arc::clone(&effective),
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
        *state = State {
            file,
            overrides,
            effective,
        };
        for &shard in &sent {
            acks.recv_timeout(SHARD_ANSWER)
                .map_err(|_| ReloadError::ShardLate(shard))?;
        }
        Ok(())
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
                            pool.take_over(old, now);
                        }
                        Arc::new(pool)
                    }),
                }
            })
            .collect()
    }
}

/// The settings that differ between `running` (as the process started) and `config` but
/// take a restart.
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

/// The refusal to remove a provider key that the config file defines.
fn from_the_file(name: &str, id: &str) -> ReloadError {
    let message = format!(
        "provider key {id} of upstream {name} comes from the config file: remove it there and \
         reload (the admin API removes only the keys it added)"
    );
    ClientsError::Conflict(message).into()
}
