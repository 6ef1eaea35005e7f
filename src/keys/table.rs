//! The key table: every client key and tenant, found by secret digest, at positions that
//! stay put while the gateway runs.
//!
//! A table is built once and never changed. When keys change (the admin API, a reload), the
//! control plane composes a new table from the old one and the new definitions: a key or
//! tenant that is still there keeps its position, a new one is appended, and one that went
//! away stays as a revoked entry that no secret finds. Positions are never reused, so a shard's
//! counters, kept by position, stay right across any number of tables, and a request admitted
//! under one table settles correctly under the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{owner_of, Access, AuthError, ClientKey, LastKey, Tenant};
use crate::config::{ClientKeyConfig, Config, KeySecretHash, Limits};

/// Every client key and tenant, looked up by secret digest.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    keys: Vec<ClientKey>,
    tenants: Vec<Tenant>,
    secrets: HashMap<[u8; 32], Secret>,
    /// Whether requests must present a key: the config or the admin API ever defined one.
    /// Revoking every key does not open the gateway.
    required: bool,
    /// Counts the tables composed since start; a connection's remembered key is checked
    /// again when it changes.
    generation: u64,
}

/// What a secret's digest leads to.
#[derive(Debug, Clone, Copy)]
struct Secret {
    /// The key's position.
    index: u32,
    /// For a rotated-out secret, the end of its grace period (ns since the epoch).
    until: Option<u64>,
}

/// What one admin API call changes in a table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Amendment<'a> {
    /// Tenants to add or change (by name).
    pub tenants: &'a [crate::config::Tenant],
    /// Tenants to delete, by position.
    pub delete_tenants: &'a [u32],
    /// Keys to add or change (by id), each with all its secrets.
    pub keys: &'a [KeyEntry<'a>],
    /// Keys to revoke, by position.
    pub revoke: &'a [u32],
}

/// One key to put in a table: its definition and, during a rotation's grace period, the
/// secret it had before and when that one stops working.
#[derive(Debug, Clone, Copy)]
pub struct KeyEntry<'a> {
    /// The key as defined (by the config file or the admin API).
    pub config: &'a ClientKeyConfig,
    /// The previous secret and the end of its grace period, in ns since the epoch.
    pub previous: Option<(KeySecretHash, u64)>,
}

impl KeyTable {
    /// The keys of `config`, each owned by one of `shards` shards. Keys of one tenant share
    /// an owner, so tenant counters are as local as key counters.
    pub fn new(config: &Config, shards: usize) -> Self {
        let entries = config.client_keys.iter().map(|config| KeyEntry {
            config,
            previous: None,
        });
        KeyTable::compose(None, &config.tenants, entries, shards)
    }

    /// Makes requests present a key even while no key is live (the admin API revoked or
    /// once created keys).
    pub fn require_keys(&mut self) {
        self.required = true;
    }

    /// The table holding `tenants` and `keys`, keeping the positions `previous` gave the ones
    /// it held; those it held that are not given again stay, revoked or deleted.
    pub fn compose<'a>(
        previous: Option<&KeyTable>,
        tenants: &[crate::config::Tenant],
        keys: impl Iterator<Item = KeyEntry<'a>>,
        shards: usize,
    ) -> Self {
        let mut table = KeyTable {
            generation: previous.map_or(0, |p| p.generation + 1),
            // A gateway that required keys keeps requiring them: a reload that leaves no key
            // refuses every request rather than open the gateway (a restart would open it).
            required: previous.is_some_and(|p| p.required),
            ..KeyTable::default()
        };

        // Tenants first: keys name them by position.
        table.tenants = previous.map_or_else(Vec::new, |p| p.tenants.clone());
        table.tenants.iter_mut().for_each(|t| t.deleted = true);
        let mut tenant_at: HashMap<Box<str>, u32> = table
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect();
        for tenant in tenants {
            let defined = Tenant {
                name: tenant.name.as_str().into(),
                limits: tenant.limits,
                deleted: false,
            };
            match tenant_at.get(tenant.name.as_str()) {
                Some(&at) => table.tenants[at as usize] = defined,
                None => {
                    tenant_at.insert(defined.name.clone(), table.tenants.len() as u32);
                    table.tenants.push(defined);
                }
            }
        }

        // Without a previous table no map of old positions is needed, which matters at start
        // with a million keys.
        table.keys = previous.map_or_else(Vec::new, |p| p.keys.clone());
        table.keys.iter_mut().for_each(|k| k.revoked = true);
        let key_at: HashMap<&str, u32> = previous.map_or_else(HashMap::new, |p| {
            p.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (&*k.id, i as u32))
                .collect()
        });
        let expected = keys.size_hint().1.unwrap_or(0);
        table.keys.reserve(expected);
        table.secrets.reserve(expected);
        let mut shared = Sharing::default();
        for entry in keys {
            table.required = true;
            let at = key_at
                .get(entry.config.id.as_str())
                .copied()
                .unwrap_or(table.keys.len() as u32);
            let tenant = entry.config.tenant.as_deref();
            let tenant = tenant.and_then(|name| tenant_at.get(name).copied());
            table.put(at, &entry, tenant, &mut shared, shards);
        }
        table
    }

    /// This table with some keys and tenants added or changed, and some taken out: what one
    /// admin API call does. Everything else keeps its state, its secrets included.
    pub fn amend(&self, change: Amendment<'_>, shards: usize) -> KeyTable {
        let mut table = self.clone();
        table.generation += 1;
        table.required |= !change.keys.is_empty();
        for tenant in change.tenants {
            let defined = Tenant {
                name: tenant.name.as_str().into(),
                limits: tenant.limits,
                deleted: false,
            };
            match table.find_tenant(&tenant.name) {
                Some((at, _)) => table.tenants[at as usize] = defined,
                None => table.tenants.push(defined),
            }
        }
        for &at in change.delete_tenants {
            if let Some(tenant) = table.tenants.get_mut(at as usize) {
                tenant.deleted = true;
            }
        }

        // Every secret of a changed or revoked key goes; the changed ones get theirs back.
        let touched: std::collections::HashSet<u32> = change
            .keys
            .iter()
            .filter_map(|entry| table.find(&entry.config.id).map(|key| key.index))
            .chain(change.revoke.iter().copied())
            .collect();
        table
            .secrets
            .retain(|_, secret| !touched.contains(&secret.index));
        for &at in change.revoke {
            if let Some(key) = table.keys.get_mut(at as usize) {
                key.revoked = true;
            }
        }
        let mut shared = Sharing::default();
        for entry in change.keys {
            let at = table
                .find(&entry.config.id)
                .map_or(table.keys.len() as u32, |key| key.index);
            let tenant = entry.config.tenant.as_deref();
            let tenant = tenant.and_then(|name| table.find_tenant(name).map(|(index, _)| index));
            table.put(at, entry, tenant, &mut shared, shards);
        }
        table
    }

    /// The ids of keys live in both `previous` and this table whose tenant differs: their
    /// counters would stay behind on the old tenant's shard.
    pub fn moved_keys(&self, previous: &KeyTable) -> Vec<&str> {
        fn tenant<'t>(table: &'t KeyTable, key: &ClientKey) -> Option<&'t str> {
            key.tenant.map(|at| &*table.tenants[at as usize].name)
        }
        self.keys
            .iter()
            .zip(&previous.keys)
            .filter(|(now, before)| !now.revoked && !before.revoked)
            .filter(|(now, before)| tenant(self, now) != tenant(previous, before))
            .map(|(now, _)| &*now.id)
            .collect()
    }

    /// Adds a tenant that is deleted from the start (the admin API deleted it before this
    /// table), so it is listed and keeps a position. One already in the table is left.
    pub fn add_deleted_tenant(&mut self, name: &str) {
        if self.find_tenant(name).is_none() {
            self.tenants.push(Tenant {
                name: name.into(),
                limits: Limits::default(),
                deleted: true,
            });
        }
    }

    /// Adds a key that is revoked from the start (the admin API revoked it before this
    /// table), so it is listed and keeps a position; no secret finds it. One already in the
    /// table is left as it is.
    pub fn add_revoked(&mut self, config: &ClientKeyConfig, shards: usize) {
        if self.find(&config.id).is_some() {
            return;
        }
        let at = self.keys.len() as u32;
        let tenant = config.tenant.as_deref();
        let tenant = tenant.and_then(|name| self.find_tenant(name).map(|(index, _)| index));
        let entry = KeyEntry {
            config,
            previous: None,
        };
        self.put(at, &entry, tenant, &mut Sharing::default(), shards);
        self.secrets.retain(|_, secret| secret.index != at);
        self.keys[at as usize].revoked = true;
    }

    /// Puts the key of `entry` at position `at` (the next free one, or its own), with its
    /// secrets; `tenant` is its tenant's position.
    fn put(
        &mut self,
        at: u32,
        entry: &KeyEntry<'_>,
        tenant: Option<u32>,
        shared: &mut Sharing,
        shards: usize,
    ) {
        let config = entry.config;
        let owner_name = config.tenant.as_deref().unwrap_or(&config.id);
        let key = ClientKey {
            id: config.id.as_str().into(),
            index: at,
            tenant,
            owner: owner_of(owner_name, shards),
            limits: shared.limits(config.limits),
            expires: config.expires.map(nanos_since_epoch),
            access: shared.access(config),
            revoked: false,
        };
        match self.keys.get_mut(at as usize) {
            Some(slot) => *slot = key,
            None => self.keys.push(key),
        }
        let secret = Secret {
            index: at,
            until: None,
        };
        self.secrets.insert(*config.secret.as_bytes(), secret);
        if let Some((old, until)) = entry.previous {
            let grace = Secret {
                index: at,
                until: Some(until),
            };
            self.secrets.entry(*old.as_bytes()).or_insert(grace);
        }
    }

    /// The definition of the key at `index`, as the config would write it: for the admin API,
    /// which shows and changes definitions. A scan of the secrets: not for requests.
    pub fn config_of(&self, index: u32) -> ClientKeyConfig {
        let key = &self.keys[index as usize];
        let secret = self
            .secrets
            .iter()
            .find(|(_, secret)| secret.index == index && secret.until.is_none())
            .map_or(KeySecretHash::of(b""), |(digest, _)| {
                KeySecretHash::from_bytes(*digest)
            });
        let access = key.access.as_deref();
        let text = |items: &[Box<[u8]>]| {
            items
                .iter()
                .map(|item| String::from_utf8_lossy(item).into_owned())
                .collect()
        };
        ClientKeyConfig {
            id: key.id.to_string(),
            tenant: key.tenant.map(|at| self.tenant(at).name.to_string()),
            secret,
            limits: *key.limits,
            expires: key
                .expires
                .map(|ns| UNIX_EPOCH + std::time::Duration::from_nanos(ns)),
            routes: access.and_then(|a| a.routes.as_deref().map(text)),
            models: access.and_then(|a| {
                a.models
                    .as_ref()
                    .map(|models| models.iter().map(|m| m.to_string()).collect())
            }),
        }
    }

    /// When the secret a rotation replaced stops working, if it still does.
    pub fn grace_of(&self, index: u32) -> Option<u64> {
        self.secrets
            .values()
            .filter(|secret| secret.index == index)
            .find_map(|secret| secret.until)
    }

    /// Whether requests must present a client key: some key was ever defined, by the config
    /// or the admin API. Without, requests pass unauthenticated.
    pub fn requires_keys(&self) -> bool {
        self.required
    }

    /// Which table this is, counted from 0 at start.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key whose secret is `presented`, if it is valid at `now` (ns since the epoch).
    pub fn authenticate(&self, presented: &[u8], now: u64) -> Result<&ClientKey, AuthError> {
        self.find_secret(presented, now).map(|(key, _)| key)
    }

    /// The key of `presented` and when that secret stops working.
    fn find_secret(
        &self,
        presented: &[u8],
        now: u64,
    ) -> Result<(&ClientKey, Option<u64>), AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let (stored, secret) = self
            .secrets
            .get_key_value(&digest)
            .ok_or(AuthError::Unknown)?;
        // The map lookup compares digests, which reveal nothing usable about the secret; the
        // constant-time comparison keeps the final decision free of timing differences too.
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(AuthError::Unknown);
        }
        if secret.until.is_some_and(|until| now >= until) {
            return Err(AuthError::Unknown);
        }
        let key = &self.keys[secret.index as usize];
        check(key, now)?;
        Ok((key, secret.until))
    }

    /// Like [`KeyTable::authenticate`], for a connection that remembers in `last` the key its
    /// previous request authenticated with. When `presented` is that same secret (compared in
    /// constant time) and the table has not changed since, the SHA-256 and the lookup are
    /// skipped; expiry is checked at `now` either way, so the answer is always the one
    /// `authenticate` gives.
    pub fn authenticate_again(
        &self,
        presented: &[u8],
        now: u64,
        last: &mut LastKey,
    ) -> Result<&ClientKey, AuthError> {
        let remembered = last.index.filter(|_| {
            last.generation == self.generation
                && last.until.is_none_or(|until| now < until)
                && bool::from(last.secret.ct_eq(presented))
        });
        let key = match remembered {
            Some(index) => &self.keys[index as usize],
            None => {
                last.forget();
                let (key, until) = self.find_secret(presented, now)?;
                last.remember(presented, key.index, self.generation, until);
                key
            }
        };
        check(key, now)?;
        Ok(key)
    }

    /// Whether some key (revoked ones aside) has the secret whose digest is `secret`.
    pub fn has_secret(&self, secret: &KeySecretHash) -> bool {
        self.secrets.contains_key(secret.as_bytes())
    }

    /// A key by its table position.
    pub fn key(&self, index: u32) -> &ClientKey {
        &self.keys[index as usize]
    }

    /// The key called `id`, revoked or not. A scan: for the control plane, not for requests.
    pub fn find(&self, id: &str) -> Option<&ClientKey> {
        self.keys.iter().find(|key| &*key.id == id)
    }

    /// A tenant by its table position.
    pub fn tenant(&self, index: u32) -> &Tenant {
        &self.tenants[index as usize]
    }

    /// The tenant called `name`, deleted or not.
    pub fn find_tenant(&self, name: &str) -> Option<(u32, &Tenant)> {
        self.tenants
            .iter()
            .enumerate()
            .find(|(_, tenant)| &*tenant.name == name)
            .map(|(index, tenant)| (index as u32, tenant))
    }

    /// Every key by position, revoked ones included.
    pub fn keys(&self) -> &[ClientKey] {
        &self.keys
    }

    /// Every tenant by position, deleted ones included.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }
}

/// Whether `key` may be used at `now`.
fn check(key: &ClientKey, now: u64) -> Result<(), AuthError> {
    if key.revoked {
        return Err(AuthError::Unknown);
    }
    if key.expires.is_some_and(|expires| now >= expires) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// One copy of each distinct set of limits and access lists, shared by the keys that have it.
#[derive(Default)]
struct Sharing {
    limits: HashMap<Limits, Arc<Limits>>,
    access: HashMap<Arc<Access>, Arc<Access>>,
}

impl Sharing {
    fn limits(&mut self, limits: Limits) -> Arc<Limits> {
        Arc::clone(
            self.limits
                .entry(limits)
                .or_insert_with(|| Arc::new(limits)),
        )
    }

    fn access(&mut self, key: &ClientKeyConfig) -> Option<Arc<Access>> {
        if key.routes.is_none() && key.models.is_none() {
            return None;
        }
        let access = Access {
            routes: key
                .routes
                .as_ref()
                .map(|routes| routes.iter().map(|r| r.as_bytes().into()).collect()),
            models: key
                .models
                .as_ref()
                .map(|models| models.iter().map(|m| m.as_str().into()).collect()),
        };
        Some(Arc::clone(
            self.access
                .entry(Arc::new(access))
                .or_insert_with_key(Arc::clone),
        ))
    }
}
