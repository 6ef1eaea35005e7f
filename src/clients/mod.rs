//! The control plane's client keys and tenants: what the config file defines, what the admin
//! API changed on top of it (kept in `state_dir/clients.json`), and the key table the shards
//! use, rebuilt and sent to every shard whenever either changes.
//!
//! Everything here runs off the request path, on the admin listener's threads and on the
//! thread that handles SIGHUP, one change at a time behind a mutex. A change is validated,
//! written to `state_dir`, then sent to every shard; it is answered once every shard uses it,
//! so when the admin API says a key is revoked, no shard accepts it any more.

mod overlay;
pub mod record;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use overlay::{Change, Overlay, OverlayError, Previous};
pub use record::{Definition, Invalid};

use crate::config::{ClientKeyConfig, Config, KeySecretHash, Tenant};
use crate::keys::{Amendment, KeyEntry, KeyTable};
use crate::quota::journal::WriterHandle;
use crate::quota::Clock;
use crate::shard::{Control, Controls, Usage};

/// The longest grace period a rotation gives the old secret.
const MAX_GRACE: Duration = Duration::from_secs(90 * 86_400);

/// How long a shard may take to act on a message before the admin call gives up waiting.
const SHARD_ANSWER: Duration = Duration::from_secs(5);

/// Why an admin change to keys or tenants was not made.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The definition is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No key has that id.
    #[error("no client key has id {0:?}")]
    NoKey(String),
    /// No tenant has that name.
    #[error("no tenant is named {0:?}")]
    NoTenant(String),
    /// No route, upstream or other named thing has that name.
    #[error("no {what} is named {name:?}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The change contradicts the state (an id in use, a revoked key, a tenant with keys).
    #[error("{0}")]
    Conflict(String),
    /// The change could not be saved; nothing changed.
    #[error("cannot save {path}: {source}; nothing was changed")]
    Save {
        /// The state file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A fresh secret could not be made.
    #[error("the OS random number generator failed: {0}")]
    Random(std::io::Error),
    /// A shard did not answer in time; the change is saved and reaches it when it catches up.
    #[error("shard {0} did not answer in time; the change is saved and in effect elsewhere")]
    ShardLate(usize),
}

/// The client keys and tenants in effect, and the changes the admin API made.
pub struct Clients {
    inner: Mutex<Inner>,
    controls: Controls,
    journal: WriterHandle,
    state_dir: PathBuf,
    shards: usize,
}

struct Inner {
    table: Arc<KeyTable>,
    overlay: Overlay,
}

/// A key as the admin API shows it.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// Its definition, without its secret's digest.
    pub definition: Definition,
    /// `config`, `admin` (created through the API) or `config+admin` (changed through it).
    pub source: &'static str,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When a rotated-out secret stops working, in ns since the epoch.
    pub previous_until: Option<u64>,
    /// Its position in the table.
    pub index: u32,
}

/// A key's counters and their limits, from its owning shard.
pub struct KeyUsage {
    /// The key, its limits among them.
    pub view: KeyView,
    /// The counters.
    pub usage: Usage,
    /// The table the counters go with.
    pub table: Arc<KeyTable>,
}

/// How [`compose`] treats an admin change that no longer fits the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Refuse the whole config (a reload: the running one stays, and the operator reads why).
    Strict,
    /// Start anyway, logging each misfit: a key that no longer fits is left out (refused,
    /// never loosened), a tenant whose change no longer fits keeps the file's definition.
    Lenient,
}

/// The table `config` and `overlay` define together. `previous` keeps positions and the
/// state of keys a reload drops; `now` ends expired grace periods.
pub fn compose(
    previous: Option<&KeyTable>,
    config: &Config,
    overlay: &Overlay,
    (shards, now, fit): (usize, u64, Fit),
) -> Result<KeyTable, Invalid> {
    let mut problems = Vec::new();
    let mut misfit = |problem: String, consequence: &str| match fit {
        Fit::Strict => problems.push(problem),
        Fit::Lenient => tracing::error!(%problem, consequence, "an admin change no longer fits"),
    };

    // Tenants: the file's, changed or deleted by the API, then the API's own.
    let mut tenants: Vec<Tenant> = Vec::with_capacity(config.tenants.len());
    for tenant in &config.tenants {
        match overlay.tenants.get(&tenant.name) {
            // Deleted; or created through the API too, whose definition wins.
            Some(change) if change.removed || change.created => {}
            Some(change) => {
                let mut definition = record::tenant_definition(tenant);
                record::merge(&mut definition, &change.patch);
                match record::tenant(&tenant.name, &definition) {
                    Ok(tenant) => tenants.push(tenant),
                    Err(err) => {
                        let problem = format!(
                            "tenant {:?} as changed through the admin API: {err}",
                            tenant.name
                        );
                        misfit(problem, "the file's definition of the tenant is used");
                        tenants.push(tenant.clone());
                    }
                }
            }
            None => tenants.push(tenant.clone()),
        }
    }
    for (name, change) in &overlay.tenants {
        if change.created && !change.removed {
            match record::tenant(name, &change.patch) {
                Ok(tenant) => tenants.push(tenant),
                Err(err) => misfit(
                    format!("tenant {name:?} (admin API): {err}"),
                    "the tenant is left out, and its keys with it",
                ),
            }
        }
    }
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    // Revoked keys are checked against every tenant ever named, deleted ones too.
    let deleted: Vec<&str> = overlay
        .tenants
        .iter()
        .filter(|(_, change)| change.removed)
        .map(|(name, _)| name.as_str())
        .collect();
    let all_names: Vec<&str> = names.iter().chain(&deleted).copied().collect();

    // Keys the API changed, created or revoked; the file's others pass as they are.
    let mut defined: HashMap<&str, &ClientKeyConfig> = HashMap::new();
    for key in &config.client_keys {
        if overlay.keys.contains_key(&key.id) {
            defined.insert(&key.id, key);
        }
    }
    let mut changed: Vec<(ClientKeyConfig, Option<(KeySecretHash, u64)>)> = Vec::new();
    let mut revoked: Vec<ClientKeyConfig> = Vec::new();
    for (id, change) in &overlay.keys {
        let definition = match (change.created, defined.get(id.as_str())) {
            (true, _) => change.patch.clone(),
            (false, Some(key)) => {
                let mut definition = record::key_definition(key);
                if change.patch.contains_key("secret_sha256") && !change.removed {
                    let patched = change.patch.get("secret_sha256");
                    if patched != definition.get("secret_sha256") {
                        tracing::info!(key_id = %id, "the key's secret is the one the admin \
                            API rotated to; the config file's is not used");
                    }
                }
                record::merge(&mut definition, &change.patch);
                definition
            }
            (false, None) => {
                if !change.removed {
                    tracing::warn!(key_id = %id, "the admin API changed a client key the \
                        config file no longer defines; the change is kept for it");
                }
                continue;
            }
        };
        let tenants = if change.removed { &all_names } else { &names };
        match record::client_key(id, &definition, tenants) {
            Ok(key) if change.removed => revoked.push(key),
            Ok(key) => changed.push((key, previous_secret(change, now))),
            // A revoked key is listed if it can be; it can never stop a start or a reload.
            Err(_) if change.removed => {}
            Err(err) => misfit(
                format!("client key {id:?} as changed through the admin API: {err}"),
                "the key is left out: it is refused until the file or the key is fixed",
            ),
        }
    }
    let mut left_out: Vec<&str> = Vec::new();
    for key in &config.client_keys {
        if overlay.keys.contains_key(&key.id) {
            continue;
        }
        if let Some(tenant) = &key.tenant {
            if !names.contains(&tenant.as_str()) {
                let problem = format!(
                    "client key {:?} names tenant {tenant:?}, which was deleted through the \
                     admin API (or no longer fits)",
                    key.id
                );
                misfit(
                    problem,
                    "the key is left out: it is refused until the file is fixed",
                );
                left_out.push(&key.id);
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid(problems));
    }

    let file_keys = config
        .client_keys
        .iter()
        .filter(|key| !overlay.keys.contains_key(&key.id) && !left_out.contains(&&*key.id))
        .map(|config| KeyEntry {
            config,
            previous: None,
        });
    let api_keys = changed.iter().map(|(config, previous)| KeyEntry {
        config,
        previous: *previous,
    });
    let mut table = KeyTable::compose(previous, &tenants, file_keys.chain(api_keys), shards);
    for name in &deleted {
        table.add_deleted_tenant(name);
    }
    for key in &revoked {
        table.add_revoked(key, shards);
    }
    // A key the API revoked keeps the gateway closed, even when no key is left.
    if !overlay.keys.is_empty() {
        table.require_keys();
    }
    Ok(table)
}

/// The secret a rotation replaced, while its grace period lasts.
fn previous_secret(change: &Change, now: u64) -> Option<(KeySecretHash, u64)> {
    let previous = change.previous.as_ref()?;
    let digest = KeySecretHash::from_hex(&previous.secret_sha256)?;
    (previous.until > now).then_some((digest, previous.until))
}

impl Clients {
    /// The registry of a started gateway: `table` is what the shards use, built by
    /// [`compose`] from the config and `overlay`.
    pub fn new(
        table: Arc<KeyTable>,
        overlay: Overlay,
        controls: Controls,
        journal: WriterHandle,
        state_dir: &Path,
    ) -> Clients {
        Clients {
            inner: Mutex::new(Inner { table, overlay }),
            shards: controls.len(),
            controls,
            journal,
            state_dir: state_dir.to_path_buf(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock left `Inner` as it was before the change: the
        // table and overlay are replaced only once everything succeeded.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The table in effect.
    pub fn table(&self) -> Arc<KeyTable> {
        Arc::clone(&self.lock().table)
    }

    /// Applies a reloaded config: the file's keys and tenants with the API's changes on top.
    /// Nothing changes when the result is invalid.
    pub fn reload(&self, config: &Config) -> Result<(), ClientsError> {
        let mut inner = self.lock();
        let now = now();
        let table = compose(
            Some(&inner.table),
            config,
            &inner.overlay,
            (self.shards, now, Fit::Strict),
        )?;
        let moved = table.moved_keys(&inner.table);
        if !moved.is_empty() {
            return Err(ClientsError::Invalid(Invalid(vec![format!(
                "client keys {} would change tenant: their counters live on their tenant's \
                 shard and cannot move while keygate runs; restart keygate to apply this \
                 (counters are kept by key id), or give the moved keys new ids",
                moved.join(", ")
            )])));
        }
        let overlay = inner.overlay.clone();
        self.commit(&mut inner, table, overlay, false)
    }

    /// Every key from `offset`, at most `limit` of them, and how many there are.
    pub fn keys(&self, offset: usize, limit: usize) -> (Vec<(String, KeyView)>, usize) {
        let inner = self.lock();
        let keys = inner.table.keys();
        let page = keys
            .iter()
            .skip(offset)
            .take(limit)
            .map(|key| (key.id.to_string(), view(&inner, key.index)))
            .collect();
        (page, keys.len())
    }

    /// One key.
    pub fn key(&self, id: &str) -> Result<KeyView, ClientsError> {
        let inner = self.lock();
        let index = find(&inner.table, id)?;
        Ok(view(&inner, index))
    }

    /// Creates the key `id` from `definition`. Without a `secret_sha256` a secret is made
    /// and returned: the only time it is ever shown.
    pub fn create_key(
        &self,
        id: &str,
        mut definition: Definition,
    ) -> Result<(Option<String>, KeyView), ClientsError> {
        record::check_key_fields(&definition)?;
        let mut inner = self.lock();
        if inner.table.find(id).is_some() || inner.overlay.keys.contains_key(id) {
            return Err(ClientsError::Conflict(format!(
                "client key id {id:?} is in use (or was, by a revoked key); pick another"
            )));
        }
        let secret = match definition.contains_key("secret_sha256") {
            true => None,
            false => {
                let (secret, digest) = record::new_secret().map_err(ClientsError::Random)?;
                definition.insert("secret_sha256".into(), digest.to_hex().into());
                Some(secret)
            }
        };
        let config = record::client_key(id, &definition, &live_tenants(&inner.table))?;
        if inner.table.has_secret(&config.secret) {
            return Err(ClientsError::Conflict(
                "another client key has this secret".into(),
            ));
        }
        let table = self.with_key(&inner.table, &config, None);
        let mut overlay = inner.overlay.clone();
        overlay.keys.insert(
            id.to_owned(),
            Change {
                created: true,
                patch: definition,
                changed_at: self.timestamp(),
                ..Change::default()
            },
        );
        self.commit(&mut inner, table, overlay, true)?;
        let index = find(&inner.table, id)?;
        Ok((secret, view(&inner, index)))
    }

    /// Changes the key `id` by a JSON merge patch of its definition. Its tenant cannot change:
    /// its counters live on its tenant's shard.
    pub fn update_key(&self, id: &str, patch: &Definition) -> Result<KeyView, ClientsError> {
        record::check_key_fields(patch)?;
        let mut inner = self.lock();
        let index = find_live(&inner.table, id)?;
        let current = inner.table.config_of(index);
        let mut definition = record::key_definition(&current);
        record::merge(&mut definition, patch);
        let config = record::client_key(id, &definition, &live_tenants(&inner.table))?;
        if config.tenant != current.tenant {
            return Err(ClientsError::Conflict(
                "a key's tenant cannot change (its counters live with its tenant's); create a \
                 new key for the other tenant and revoke this one"
                    .into(),
            ));
        }
        if config.secret != current.secret && inner.table.has_secret(&config.secret) {
            return Err(ClientsError::Conflict(
                "another client key has this secret".into(),
            ));
        }
        let previous = inner.table.grace_of(index).and_then(|until| {
            let change = inner.overlay.keys.get(id)?;
            let digest = KeySecretHash::from_hex(&change.previous.as_ref()?.secret_sha256)?;
            Some((digest, until))
        });
        let table = self.with_key(&inner.table, &config, previous);
        let mut overlay = inner.overlay.clone();
        let change = overlay.keys.entry(id.to_owned()).or_default();
        match change.created {
            true => change.patch = definition,
            false => record::merge_patch(&mut change.patch, patch),
        }
        change.changed_at = self.timestamp();
        self.commit(&mut inner, table, overlay, true)?;
        Ok(view(&inner, index))
    }

    /// Revokes the key `id`: from the answer on, no shard accepts it, whatever the config
    /// file says at later reloads.
    pub fn revoke_key(&self, id: &str) -> Result<KeyView, ClientsError> {
        let mut inner = self.lock();
        let index = find_live(&inner.table, id)?;
        let table = inner.table.amend(
            Amendment {
                revoke: &[index],
                ..Amendment::default()
            },
            self.shards,
        );
        let mut overlay = inner.overlay.clone();
        let change = overlay.keys.entry(id.to_owned()).or_default();
        change.removed = true;
        change.previous = None;
        change.changed_at = self.timestamp();
        self.commit(&mut inner, table, overlay, true)?;
        Ok(view(&inner, index))
    }

    /// Gives the key `id` a fresh secret, returned once; its old secret keeps working for
    /// `grace` (not at all when zero). Counters and limits stay.
    pub fn rotate_key(&self, id: &str, grace: Duration) -> Result<(String, KeyView), ClientsError> {
        let mut inner = self.lock();
        let index = find_live(&inner.table, id)?;
        let (secret, digest) = record::new_secret().map_err(ClientsError::Random)?;
        let mut config = inner.table.config_of(index);
        let old = config.secret;
        config.secret = digest;
        if grace > MAX_GRACE {
            return Err(ClientsError::Invalid(Invalid(vec![format!(
                "grace is at most {} days",
                MAX_GRACE.as_secs() / 86_400
            )])));
        }
        let until = now().saturating_add(u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX));
        let previous = (!grace.is_zero()).then_some((old, until));
        let table = self.with_key(&inner.table, &config, previous);
        let mut overlay = inner.overlay.clone();
        let change = overlay.keys.entry(id.to_owned()).or_default();
        change
            .patch
            .insert("secret_sha256".into(), digest.to_hex().into());
        change.previous = previous.map(|(old, until)| Previous {
            secret_sha256: old.to_hex(),
            until,
        });
        change.changed_at = self.timestamp();
        self.commit(&mut inner, table, overlay, true)?;
        Ok((secret, view(&inner, index)))
    }

    /// The key's counters, from its owning shard.
    pub fn usage(&self, id: &str) -> Result<KeyUsage, ClientsError> {
        let (index, owner, table, key) = {
            let inner = self.lock();
            let index = find(&inner.table, id)?;
            let owner = inner.table.key(index).owner;
            (index, owner, Arc::clone(&inner.table), view(&inner, index))
        };
        let usage = self.ask(owner, |reply| Control::Usage { key: index, reply })?;
        Ok(KeyUsage {
            view: key,
            usage,
            table,
        })
    }

    /// Clears what the key `id` has used (rate, quotas, tokens) on its owning shard.
    pub fn reset_key(&self, id: &str) -> Result<KeyUsage, ClientsError> {
        let (index, owner, table, key) = {
            let inner = self.lock();
            let index = find(&inner.table, id)?;
            let owner = inner.table.key(index).owner;
            (index, owner, Arc::clone(&inner.table), view(&inner, index))
        };
        let usage = self.ask(owner, |reply| Control::Reset {
            index,
            tenant: false,
            reply,
        })?;
        tracing::info!(key_id = %id, "client key counters reset by the admin API");
        Ok(KeyUsage {
            view: key,
            usage,
            table,
        })
    }

    /// Every tenant, deleted ones included, with its definition and where it comes from.
    pub fn tenants(&self) -> Vec<(String, Definition, &'static str, bool)> {
        let inner = self.lock();
        inner
            .table
            .tenants()
            .iter()
            .map(|tenant| {
                let source = source(inner.overlay.tenants.get(&*tenant.name));
                let config = Tenant {
                    name: tenant.name.to_string(),
                    limits: tenant.limits,
                };
                let definition = record::tenant_definition(&config);
                (tenant.name.to_string(), definition, source, tenant.deleted)
            })
            .collect()
    }

    /// Creates or changes the tenant `name`: a new one from `patch` as its definition, an
    /// existing one by `patch` as a JSON merge patch.
    pub fn put_tenant(
        &self,
        name: &str,
        patch: &Definition,
        create: bool,
    ) -> Result<Definition, ClientsError> {
        record::check_tenant_fields(patch)?;
        let mut inner = self.lock();
        let existing = inner.table.find_tenant(name).filter(|(_, t)| !t.deleted);
        let was_deleted = inner.overlay.tenants.get(name).is_some_and(|c| c.removed);
        let mut definition = match (existing, create) {
            (Some(_), true) => {
                return Err(ClientsError::Conflict(format!(
                    "a tenant named {name:?} exists"
                )))
            }
            (None, true) if was_deleted => {
                return Err(ClientsError::Conflict(format!(
                    "tenant {name:?} was deleted; pick another name"
                )))
            }
            (None, false) => return Err(ClientsError::NoTenant(name.to_owned())),
            (Some((_, tenant)), false) => record::tenant_definition(&Tenant {
                name: name.to_owned(),
                limits: tenant.limits,
            }),
            (None, true) => Definition::new(),
        };
        record::merge(&mut definition, patch);
        let tenant = record::tenant(name, &definition)?;
        let table = inner.table.amend(
            Amendment {
                tenants: std::slice::from_ref(&tenant),
                ..Amendment::default()
            },
            self.shards,
        );
        let mut overlay = inner.overlay.clone();
        let change = overlay.tenants.entry(name.to_owned()).or_default();
        if create {
            change.created = true;
        }
        match change.created {
            true => change.patch = definition.clone(),
            false => record::merge_patch(&mut change.patch, patch),
        }
        change.changed_at = self.timestamp();
        self.commit(&mut inner, table, overlay, true)?;
        Ok(definition)
    }

    /// Deletes the tenant `name`, which must have no live keys.
    pub fn delete_tenant(&self, name: &str) -> Result<(), ClientsError> {
        let mut inner = self.lock();
        let Some((index, _)) = inner.table.find_tenant(name).filter(|(_, t)| !t.deleted) else {
            return Err(ClientsError::NoTenant(name.to_owned()));
        };
        let live = inner
            .table
            .keys()
            .iter()
            .filter(|key| key.tenant == Some(index) && !key.revoked)
            .count();
        if live > 0 {
            return Err(ClientsError::Conflict(format!(
                "tenant {name:?} still has {live} live client key{}; revoke {} first",
                if live == 1 { "" } else { "s" },
                if live == 1 { "it" } else { "them" }
            )));
        }
        let table = inner.table.amend(
            Amendment {
                delete_tenants: &[index],
                ..Amendment::default()
            },
            self.shards,
        );
        let mut overlay = inner.overlay.clone();
        let change = overlay.tenants.entry(name.to_owned()).or_default();
        change.removed = true;
        change.changed_at = self.timestamp();
        self.commit(&mut inner, table, overlay, true)
    }

    /// Clears what the tenant `name` has used, on its owning shard.
    pub fn reset_tenant(&self, name: &str) -> Result<Usage, ClientsError> {
        let index = {
            let inner = self.lock();
            let found = inner.table.find_tenant(name).filter(|(_, t)| !t.deleted);
            found
                .ok_or_else(|| ClientsError::NoTenant(name.to_owned()))?
                .0
        };
        let owner = crate::keys::owner_of(name, self.shards);
        let usage = self.ask(owner, |reply| Control::Reset {
            index,
            tenant: true,
            reply,
        })?;
        tracing::info!(tenant = %name, "tenant counters reset by the admin API");
        Ok(usage)
    }

    /// `table` with the key `config` added or changed, with its previous secret.
    fn with_key(
        &self,
        table: &KeyTable,
        config: &ClientKeyConfig,
        previous: Option<(KeySecretHash, u64)>,
    ) -> KeyTable {
        let entry = KeyEntry { config, previous };
        let change = Amendment {
            keys: &[entry],
            ..Amendment::default()
        };
        table.amend(change, self.shards)
    }

    /// Saves `overlay` (when `save`), then puts `table` in effect on every shard.
    fn commit(
        &self,
        inner: &mut Inner,
        table: KeyTable,
        overlay: Overlay,
        save: bool,
    ) -> Result<(), ClientsError> {
        if save {
            overlay
                .save(&self.state_dir)
                .map_err(|source| ClientsError::Save {
                    path: self.state_dir.join(overlay::FILE),
                    source,
                })?;
        }
        let table = Arc::new(table);
        // The journal must name the new positions before any shard can count them.
        self.journal.names(Arc::clone(&table));
        // The table being replaced is let go here, once every shard has switched, rather
        // than by the shard that happens to drop it last: freeing a table of a million keys
        // takes long enough to delay that shard's requests.
        let previous = std::mem::replace(&mut inner.table, Arc::clone(&table));
        inner.overlay = overlay;
        let (done, acks) = std_mpsc::channel();
        let mut sent = Vec::with_capacity(self.controls.len());
        for (shard, control) in self.controls.iter().enumerate() {
            let message = Control::Keys {
                table: Arc::clone(&table),
                done: done.clone(),
            };
            if control.send(message).is_ok() {
                sent.push(shard);
            }
        }
        drop(done);
        for &shard in &sent {
            if acks.recv_timeout(SHARD_ANSWER).is_err() {
                return Err(ClientsError::ShardLate(shard));
            }
        }
        drop(previous);
        Ok(())
    }

    /// Sends shard `owner` the message `make` builds and waits for its answer.
    fn ask(
        &self,
        owner: usize,
        make: impl FnOnce(std_mpsc::Sender<Usage>) -> Control,
    ) -> Result<Usage, ClientsError> {
        let (reply, answer) = std_mpsc::channel();
        let control = self
            .controls
            .get(owner)
            .ok_or(ClientsError::ShardLate(owner))?;
        control
            .send(make(reply))
            .map_err(|_| ClientsError::ShardLate(owner))?;
        answer
            .recv_timeout(SHARD_ANSWER)
            .map_err(|_| ClientsError::ShardLate(owner))
    }

    fn timestamp(&self) -> String {
        let ts = crate::accesslog::format_timestamp(now());
        String::from_utf8_lossy(&ts).into_owned()
    }
}

/// Wall time in ns since the epoch. The control plane reads it rarely; a fresh [`Clock`]
/// each time keeps `Clients` shareable between threads.
fn now() -> u64 {
    Clock::default().now()
}

fn find(table: &KeyTable, id: &str) -> Result<u32, ClientsError> {
    table
        .find(id)
        .map(|key| key.index)
        .ok_or_else(|| ClientsError::NoKey(id.to_owned()))
}

fn find_live(table: &KeyTable, id: &str) -> Result<u32, ClientsError> {
    let index = find(table, id)?;
    match table.key(index).revoked {
        true => Err(ClientsError::Conflict(format!(
            "client key {id:?} is revoked; a revoked key stays revoked"
        ))),
        false => Ok(index),
    }
}

fn live_tenants(table: &KeyTable) -> Vec<&str> {
    table
        .tenants()
        .iter()
        .filter(|t| !t.deleted)
        .map(|t| &*t.name)
        .collect()
}

fn source(change: Option<&Change>) -> &'static str {
    match change {
        None => "config",
        Some(change) if change.created => "admin",
        Some(_) => "config+admin",
    }
}

fn view(inner: &Inner, index: u32) -> KeyView {
    let key = inner.table.key(index);
    let mut definition = record::key_definition(&inner.table.config_of(index));
    // A digest of a weak secret could be searched for offline: never shown.
    definition.remove("secret_sha256");
    KeyView {
        definition,
        source: source(inner.overlay.keys.get(&*key.id)),
        revoked: key.revoked,
        previous_until: inner.table.grace_of(index),
        index,
    }
}
