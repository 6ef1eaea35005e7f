//! Client keys: finding the key a request presents, checking it, and knowing which shard
//! owns its counters.
//!
//! Keys are stored only as SHA-256 digests. A presented key is hashed, looked up by digest
//! and compared in constant time; the clear key is never logged, and leaves the request head
//! only into the [`LastKey`] of its own connection, so that the connection's next request
//! presenting it again is recognised without hashing it again. A [`KeyTable`] is immutable
//! and shared by all shards; the control plane replaces it whole when keys change. Counters
//! live elsewhere ([`crate::quota`]), on the owning shard only, by the key's position, which
//! never changes while the gateway runs.

mod table;

use std::sync::Arc;

pub use table::{Amendment, KeyEntry, KeyTable};

use crate::config::Limits;
use crate::http::RequestHead;

/// Why a request is not authenticated. All map to 401 `invalid_api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key in `Authorization: Bearer`, `x-api-key`, `api-key` or `x-goog-api-key`.
    #[error(
        "missing client key: send it as Authorization: Bearer KEY, x-api-key, api-key or \
         x-goog-api-key"
    )]
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
#[derive(Debug, Clone)]
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
    /// Revoked, or gone from the config: no secret finds it any more. It keeps its position
    /// so that requests admitted before can still settle their counters.
    pub revoked: bool,
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
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The tenant's name.
    pub name: Box<str>,
    /// Limits across all of its keys.
    pub limits: Limits,
    /// Deleted, or gone from the config; kept at its position like a revoked key.
    pub deleted: bool,
}

/// The secret a connection's last request authenticated with, and the key's position, so
/// [`KeyTable::authenticate_again`] can recognise it on the next request without a SHA-256.
///
/// It holds a client's clear secret: it has no `Debug`, is never logged, lives no longer than
/// its connection, and is overwritten with zeros when forgotten or dropped.
#[derive(Default)]
pub struct LastKey {
    secret: Vec<u8>,
    index: Option<u32>,
    /// The generation of the table it was found in: a new table may have revoked it.
    generation: u64,
    /// When the secret stops working (a rotated-out secret's grace end), in ns.
    until: Option<u64>,
}

impl LastKey {
    fn remember(&mut self, secret: &[u8], index: u32, generation: u64, until: Option<u64>) {
        self.secret.extend_from_slice(secret);
        self.index = Some(index);
        self.generation = generation;
        self.until = until;
    }

    /// Zeroes and empties the kept secret.
    pub fn forget(&mut self) {
        self.secret.fill(0);
        // The zeros must be written although nothing reads them before the memory is reused.
        std::hint::black_box(&mut self.secret);
        self.secret.clear();
        self.index = None;
        self.until = None;
    }
}

impl Drop for LastKey {
    fn drop(&mut self) {
        self.forget();
    }
}

/// The client key a request presents: `Authorization: Bearer KEY` (scheme in any case),
/// else `x-api-key`, else `api-key`, else `x-goog-api-key` (as Gemini clients send it).
pub fn presented(head: &RequestHead) -> Result<&[u8], AuthError> {
    if let Some(value) = head.header("authorization") {
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            let key = crate::http::trim(&value[7..]);
            if !key.is_empty() {
                return Ok(key);
            }
        }
    }
    ["x-api-key", "api-key", "x-goog-api-key"]
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::BytesMut;

    use super::*;
    use crate::config::Config;

    /// 2026-12-04T16:02:28Z, in nanoseconds.
    const T0: u64 = 1_796_400_148_000_000_000;
    /// 2030-01-01T00:00:00Z, in nanoseconds.
    const Y2030: u64 = 1_893_456_000_000_000_000;

    fn head(fields: &str) -> RequestHead {
        let text = format!("GET /v1/models HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        RequestHead::parse(&mut BytesMut::from(text.as_bytes()), 8192, &mut Vec::new())
            .unwrap()
            .unwrap()
    }

    fn config(text: &str) -> Config {
        let text = format!("[gateway]\nlisten = \"127.0.0.1:0\"\n{text}");
        Config::parse(&text, Path::new("k.toml"), Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn presented_key_table() {
        let missing = Err(AuthError::Missing);
        let table: &[(&str, Result<&[u8], AuthError>)] = &[
            ("Authorization: Bearer kg-1\r\n", Ok(b"kg-1")),
            ("authorization: bearer kg-1\r\n", Ok(b"kg-1")),
            ("AUTHORIZATION: BEARER kg-1\r\n", Ok(b"kg-1")),
            ("Authorization: bEaReR kg-1\r\n", Ok(b"kg-1")),
            ("Authorization: Bearer    kg-1   \r\n", Ok(b"kg-1")),
            ("x-api-key: kg-2\r\n", Ok(b"kg-2")),
            ("X-Api-Key: kg-2\r\n", Ok(b"kg-2")),
            ("api-key: kg-3\r\n", Ok(b"kg-3")),
            ("API-KEY: kg-3\r\n", Ok(b"kg-3")),
            // Bearer first, then x-api-key, then api-key.
            ("api-key: kg-3\r\nx-api-key: kg-2\r\n", Ok(b"kg-2")),
            (
                "x-api-key: kg-2\r\nAuthorization: Bearer kg-1\r\n",
                Ok(b"kg-1"),
            ),
            // Another scheme is not a client key; the other fields still count.
            ("Authorization: Basic a2c6MQ==\r\n", missing),
            (
                "Authorization: Basic a2c6MQ==\r\napi-key: kg-3\r\n",
                Ok(b"kg-3"),
            ),
            ("Authorization: Bearerkg-1\r\n", missing),
            // Empty values are no key at all.
            ("", missing),
            ("Authorization: Bearer\r\n", missing),
            ("Authorization: Bearer    \r\n", missing),
            ("x-api-key: \r\n", missing),
            ("x-api-key:\r\napi-key: kg-3\r\n", Ok(b"kg-3")),
            ("api-key: \r\n", missing),
        ];
        for (fields, expected) in table {
            let head = head(fields);
            assert_eq!(presented(&head), *expected, "{fields:?}");
        }
    }

    #[test]
    fn a_remembered_key_gives_what_authenticate_gives() {
        let table = KeyTable::new(
            &config(
                "[[client_key]]\nid = \"one\"\nsecret = \"kg-one\"\n\
                 [[client_key]]\nid = \"two\"\nsecret = \"kg-two\"\n\
                 [[client_key]]\nid = \"later\"\nsecret = \"kg-later\"\n\
                 expires = 2030-01-01T00:00:00Z\n",
            ),
            1,
        );
        let mut last = LastKey::default();
        // A connection's requests in turn: repeats, a switch, a miss, a prefix, an expiry.
        let sequence: &[(&[u8], u64)] = &[
            (b"kg-one", T0),
            (b"kg-one", T0),
            (b"kg-two", T0),
            (b"kg-two", T0),
            (b"kg-tw", T0),
            (b"kg-two", T0),
            (b"kg-unknown", T0),
            (b"kg-later", T0),
            (b"kg-later", Y2030 - 1),
            (b"kg-later", Y2030),
            (b"kg-later", T0),
            (b"", T0),
        ];
        for &(presented, now) in sequence {
            let again = table
                .authenticate_again(presented, now, &mut last)
                .map(|key| key.index);
            let fresh = table.authenticate(presented, now).map(|key| key.index);
            assert_eq!(again, fresh, "{}", String::from_utf8_lossy(presented));
            // A valid key is kept exactly as presented; an unknown one leaves nothing kept.
            match fresh {
                Ok(index) => {
                    assert_eq!(last.index, Some(index));
                    assert_eq!(last.secret, presented);
                }
                Err(AuthError::Unknown) => {
                    assert_eq!(last.index, None);
                    assert!(last.secret.is_empty());
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn authenticate_table() {
        let table = KeyTable::new(
            &config(
                "[[client_key]]\nid = \"valid\"\nsecret = \"kg-valid\"\n\
                 [[client_key]]\nid = \"old\"\nsecret = \"kg-old\"\nexpires = 2020-01-01T00:00:00Z\n\
                 [[client_key]]\nid = \"hashed\"\n\
                 secret_sha256 = \"3818212250247150773f11edf4640af4b3f96cd9a5747e55a7362b307e3e8924\"\n\
                 [[client_key]]\nid = \"later\"\nsecret = \"kg-later\"\nexpires = \"2030-01-01T09:00:00+09:00\"\n",
            ),
            2,
        );
        let id = |presented: &[u8], now| table.authenticate(presented, now).map(|k| &*k.id);
        let cases: &[(&[u8], u64, Result<&str, AuthError>)] = &[
            (b"kg-valid", T0, Ok("valid")),
            (b"kg-valid", u64::MAX, Ok("valid")),
            (b"KG-VALID", T0, Err(AuthError::Unknown)),
            (b"kg-valid ", T0, Err(AuthError::Unknown)),
            (b"kg-unknown", T0, Err(AuthError::Unknown)),
            (b"", T0, Err(AuthError::Unknown)),
            (b"kg-old", T0, Err(AuthError::Expired)),
            (b"kg-later", T0, Ok("later")),
            (b"kg-later", Y2030 - 1, Ok("later")),
            (b"kg-later", Y2030, Err(AuthError::Expired)),
            // Stored only as its digest, found all the same.
            (b"kg-hashed", T0, Ok("hashed")),
        ];
        for (presented, now, expected) in cases {
            assert_eq!(
                id(presented, *now),
                *expected,
                "{}",
                String::from_utf8_lossy(presented)
            );
        }
    }

    #[test]
    fn owner_of_is_stable_and_in_range() {
        // FNV-1a 64: fixed values, so a key keeps its shard across runs and builds.
        let table = [
            ("", 1000, 37),
            ("a", 1000, 996),
            ("acme", 1000, 87),
            ("acme-dev", 1000, 301),
            ("k1", 7, 0),
            ("k2", 7, 5),
            ("acme", 2, 1),
            ("a", 2, 0),
            ("anything", 1, 0),
            ("anything", 0, 0),
        ];
        for (name, shards, owner) in table {
            assert_eq!(owner_of(name, shards), owner, "{name:?} over {shards}");
        }
        for shards in 1..=16 {
            let mut seen = vec![0; shards];
            for i in 0..500 {
                let name = format!("key-{i}");
                let owner = owner_of(&name, shards);
                assert!(owner < shards);
                assert_eq!(owner, owner_of(&name, shards));
                seen[owner] += 1;
            }
            assert!(seen.iter().all(|&n| n > 0), "{shards} shards: {seen:?}");
        }
    }

    #[test]
    fn keys_of_one_tenant_share_its_owner() {
        let config = config(
            "[[tenant]]\nname = \"acme\"\n\
             [[client_key]]\nid = \"k1\"\ntenant = \"acme\"\nsecret = \"s1\"\n\
             [[client_key]]\nid = \"k2\"\ntenant = \"acme\"\nsecret = \"s2\"\n\
             [[client_key]]\nid = \"acme-dev\"\ntenant = \"acme\"\nsecret = \"s3\"\n\
             [[client_key]]\nid = \"alone\"\nsecret = \"s4\"\n",
        );
        for shards in 1..=8 {
            let table = KeyTable::new(&config, shards);
            let owners: Vec<usize> = table.keys().iter().map(|k| k.owner).collect();
            let acme = owner_of("acme", shards);
            assert_eq!(owners[..3], [acme; 3], "{shards} shards");
            assert_eq!(owners[3], owner_of("alone", shards));
            assert_eq!(table.keys()[0].tenant, Some(0));
            assert_eq!(table.keys()[3].tenant, None);
        }
        // Over 7 shards the keys would have spread alone (k1 on 0, k2 on 5).
        assert_eq!(KeyTable::new(&config, 7).keys()[1].owner, 3);
    }
}
