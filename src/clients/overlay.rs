//! The admin API's changes to client keys and tenants, kept in `state_dir/clients.json`.
//!
//! The config file stays the operator's; the admin API never writes it. What the API changes
//! is recorded here instead, by key id and tenant name, and applied over the config file at
//! every start and reload (docs/admin.md says how the two combine). The file is replaced
//! atomically on every change, before the change is in effect anywhere.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::Definition;
use crate::quota::journal::{read_state, write_atomically};

/// The format version; a newer one is refused, not misread.
const FORMAT: u32 = 1;

/// The file's name in `state_dir`.
pub const FILE: &str = "clients.json";

/// Every change the admin API made, by key id and tenant name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The format version.
    pub format: u32,
    /// Changes to tenants, by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Change>,
    /// Changes to client keys, by id.
    #[serde(default)]
    pub keys: BTreeMap<String, Change>,
}

/// What the admin API did to one key or tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Created through the API: `patch` is its whole definition.
    #[serde(default, skip_serializing_if = "is_false")]
    pub created: bool,
    /// For one the config file defines: the fields changed over that definition, as a JSON
    /// merge patch. For a created one: its definition.
    #[serde(default, skip_serializing_if = "Definition::is_empty")]
    pub patch: Definition,
    /// Revoked (a key) or deleted (a tenant); it stays so whatever the config file says.
    #[serde(default, skip_serializing_if = "is_false")]
    pub removed: bool,
    /// The secret a rotation replaced, while it still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// When the API last changed it, RFC 3339.
    pub changed_at: String,
}

/// A rotated-out secret in its grace period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previous {
    /// Its SHA-256, in hex.
    pub secret_sha256: String,
    /// When it stops working, in nanoseconds since the epoch.
    pub until: u64,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// It cannot be read or is not what this version writes, nor is its `.prev` copy.
    #[error(
        "{path} is damaged ({reason}), and so is its .prev copy (or there is none); it holds the \
         admin API's client key changes: restore it from a backup. Moving it aside starts from \
         the config file alone, which brings back keys the admin API revoked"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl Overlay {
    /// Reads the overlay in `dir`; none yet is an empty one.
    pub fn load(dir: &Path) -> Result<Overlay, OverlayError> {
        let path = dir.join(FILE);
        let check = |overlay: &Overlay| match overlay.format {
            FORMAT => Ok(()),
            other => Err(format!("unknown format {other}")),
        };
        match read_state(&path, check) {
            Ok(Some(overlay)) => Ok(overlay),
            Ok(None) => Ok(Overlay {
                format: FORMAT,
                ..Overlay::default()
            }),
            Err(reason) => Err(OverlayError::Damaged { path, reason }),
        }
    }

    /// Writes the overlay to `dir`, atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_atomically(&dir.join(FILE), self)
    }
}
