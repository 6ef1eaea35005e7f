//! Client keys: finding the key a request presents, checking it, and knowing which shard
//! owns its counters.
//!
//! Keys are stored only as SHA-256 digests. A presented key is hashed, looked up by digest
//! and compared in constant time; the clear key never leaves the request head and is never
//! logged. The table is immutable and shared by all shards; counters live elsewhere
//! ([`crate::quota`]), on the owning shard only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Limits};
use crate::http::RequestHead;

/// Why a request is not authenticated. All map to 401 `invalid_api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key in `Authorization: Bearer`, `x-api-key` or `api-key`.
    #[error("missing client key: send it as Authorization: Bearer KEY, x-api-key or api-key")]
    Missing,
    /// The key is not one of the configured client keys.
    #[error("invalid client key")]
    Unknown,
    /// The key is past its `expires` time.
    #[error("client key expired")]
    Expired,
}

/// A configured client key, ready for the request path.
///
/// Kept small, since a gateway may hold millions: limits and access lists are shared
/// between keys that have the same ones, and the secret's digest lives only in the table's
/// index.
#[derive(Debug)]
pub struct ClientKey {
    /// The key's id from the config (never its secret).
    pub id: Box<str>,
    /// Its position in the table.
    pub index: u32,
    /// Its tenant's position in the table.
    pub tenant: Option<u32>,
    /// The shard that owns its counters (and its tenant's).
    pub owner: usize,
    /// Its own limits.
    pub limits: Arc<Limits>,
    /// Expiry, in nanoseconds since the epoch.
    pub expires: Option<u64>,
    /// Routes and models it may use; `None` allows all.
    access: Option<Arc<Access>>,
}

/// What a key may use, when restricted.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Access {
    /// Path prefixes; `None` allows all.
    routes: Option<Box<[Box<[u8]>]>>,
    /// Model names; `None` allows all.
    models: Option<Box<[Box<str>]>>,
}

impl ClientKey {
    /// Whether the key may use a request path.
    pub fn allows_path(&self, path: &[u8]) -> bool {
        let routes = self
            .access
            .as_ref()
            .and_then(|access| access.routes.as_ref());
        routes.is_none_or(|routes| routes.iter().any(|p| path.starts_with(p)))
    }

    /// Whether the key is limited to some models.
    pub fn restricts_models(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|access| access.models.is_some())
    }

    /// Whether the key may ask for `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        let models = self
            .access
            .as_ref()
            .and_then(|access| access.models.as_ref());
        models.is_none_or(|models| models.iter().any(|m| &**m == model))
    }
}

/// A tenant: limits shared by all of its keys.
#[derive(Debug)]
pub struct Tenant {
    /// The tenant's name.
    pub name: Box<str>,
    /// Limits across all of its keys.
    pub limits: Limits,
}

/// Every client key and tenant, looked up by secret digest.
#[derive(Debug, Default)]
pub struct KeyTable {
    keys: Vec<ClientKey>,
    tenants: Vec<Tenant>,
    by_digest: HashMap<[u8; 32], u32>,
}

impl KeyTable {
    /// The keys of `config`, each owned by one of `shards` shards. Keys of one tenant share
    /// an owner, so tenant counters are as local as key counters.
    pub fn new(config: &Config, shards: usize) -> Self {
        let tenants: Vec<Tenant> = config
            .tenants
            .iter()
            .map(|t| Tenant {
                name: t.name.as_str().into(),
                limits: t.limits,
            })
            .collect();
        let mut by_digest = HashMap::with_capacity(config.client_keys.len());
        // Keys with the same limits (or access lists) share one copy.
        let mut shared_limits: HashMap<Limits, Arc<Limits>> = HashMap::new();
        let mut shared_access: HashMap<Arc<Access>, Arc<Access>> = HashMap::new();
        let keys = config
            .client_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let tenant = key.tenant.as_ref().and_then(|name| {
                    tenants
                        .iter()
                        .position(|t| *t.name == **name)
                        .map(|i| i as u32)
                });
                let owner_name = key.tenant.as_deref().unwrap_or(&key.id);
                by_digest.insert(*key.secret.as_bytes(), index as u32);
                let limits = shared_limits
                    .entry(key.limits)
                    .or_insert_with(|| Arc::new(key.limits))
                    .clone();
                let access = (key.routes.is_some() || key.models.is_some()).then(|| {
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
                    Arc::clone(
                        shared_access
                            .entry(Arc::new(access))
                            .or_insert_with_key(Arc::clone),
                    )
                });
                ClientKey {
                    id: key.id.as_str().into(),
                    index: index as u32,
                    tenant,
                    owner: owner_of(owner_name, shards),
                    limits,
                    expires: key
                        .expires
                        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)),
                    access,
                }
            })
            .collect();
        KeyTable {
            keys,
            tenants,
            by_digest,
        }
    }

    /// Whether no client keys are configured: then requests pass unauthenticated.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose secret is `presented`, if it is valid at `now` (ns since the epoch).
    pub fn authenticate(&self, presented: &[u8], now: u64) -> Result<&ClientKey, AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let (stored, &index) = self
            .by_digest
            .get_key_value(&digest)
            .ok_or(AuthError::Unknown)?;
        // The map lookup compares digests, which reveal nothing usable about the secret; the
        // constant-time comparison keeps the final decision free of timing differences too.
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(AuthError::Unknown);
        }
        let key = &self.keys[index as usize];
        if key.expires.is_some_and(|expires| now >= expires) {
            return Err(AuthError::Expired);
        }
        Ok(key)
    }

    /// A key by its table position.
    pub fn key(&self, index: u32) -> &ClientKey {
        &self.keys[index as usize]
    }

    /// A tenant by its table position.
    pub fn tenant(&self, index: u32) -> &Tenant {
        &self.tenants[index as usize]
    }

    /// Every key, in config order.
    pub fn keys(&self) -> &[ClientKey] {
        &self.keys
    }

    /// Every tenant, in config order.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }
}

/// The client key a request presents: `Authorization: Bearer KEY` (scheme in any case),
/// else `x-api-key`, else `api-key`.
pub fn presented(head: &RequestHead) -> Result<&[u8], AuthError> {
    if let Some(value) = head.header("authorization") {
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            let key = crate::http::trim(&value[7..]);
            if !key.is_empty() {
                return Ok(key);
            }
        }
    }
    ["x-api-key", "api-key"]
        .into_iter()
        .find_map(|name| head.header(name).filter(|value| !value.is_empty()))
        .ok_or(AuthError::Missing)
}

/// The shard owning the counters of `name` (a tenant name or key id): FNV-1a, stable across
/// runs and builds.
pub fn owner_of(name: &str, shards: usize) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}
