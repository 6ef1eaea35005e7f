//! The gateway's configuration: a TOML file read into typed, validated values.
//!
//! Loading goes in two steps. `raw` deserializes the file into structs that mirror it (unknown
//! keys and wrong types stop there, with their position); `validate` turns those into the
//! types below and collects every problem it finds, each pointing at the offending value as
//! `FILE:LINE:COL: message`. A config that loads is complete: defaults are filled in, names
//! refer to things that exist, secrets are read and endpoint names resolved.
//!
//! Loading reads files and the environment and may block on DNS, so it happens at startup
//! and on reload, never on a shard's request path. The reference for every key is
//! `docs/config.md`.

mod client_key;
mod endpoint;
mod error;
mod gateway;
mod limits;
mod raw;
mod route;
mod secret;
mod tuning;
mod upstream;
mod validate;
mod value;

use std::path::{Path, PathBuf};

pub use client_key::ClientKeyConfig;
pub use endpoint::{parse_endpoint, system_resolver, Endpoint, EndpointSpec, Resolver};
pub use error::{ConfigErrors, ConfigProblem};
pub use gateway::{Gateway, Workers};
pub use limits::{Limits, Quota, RateLimit};
pub use route::{Route, RouteState};
pub use secret::{KeySecretHash, Secret};
pub use tuning::{DriverChoice, Tuning};
pub use upstream::{Provider, ProviderKeyConfig, Strategy, Upstream};
pub use value::{parse_byte_size, parse_duration, parse_rate, Rate, ValueError};

/// Largest config file read, in bytes: room for a few million client keys.
const CONFIG_FILE_LIMIT: u64 = 1 << 30;

/// A loaded, validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[gateway]`: listeners, limits and timeouts.
    pub gateway: Gateway,
    /// The tuning file named by `gateway.tuning`, or built-in defaults.
    pub tuning: Tuning,
    /// `[[upstream]]` tables, in file order; names are unique.
    pub upstreams: Vec<Upstream>,
    /// `[[route]]` tables, in file order; each names an upstream in `upstreams`.
    pub routes: Vec<Route>,
    /// `[[tenant]]` tables, in file order; names are unique.
    pub tenants: Vec<Tenant>,
    /// `[[client_key]]` tables, in file order; ids and secrets are unique.
    pub client_keys: Vec<ClientKeyConfig>,
    /// The file this config was read from (the `origin` given to [`Config::parse`]).
    pub source: PathBuf,
}

/// `[[tenant]]`: a customer that client keys belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}`; used as a metrics label.
    pub name: String,
    /// What all the tenant's keys together may use, on top of each key's own limits: a
    /// request must fit both. Default: no limits.
    pub limits: Limits,
}

impl Config {
    /// Reads and validates `path` (and the tuning file it names). Relative paths in the file
    /// are taken from the file's directory. A file that cannot be read is one problem at 1:1.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = validate::read_limited(path, CONFIG_FILE_LIMIT)
            .map_err(|err| ConfigErrors::whole_file(path, format!("cannot read: {err}")))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Config::parse(&text, path, base_dir)
    }

    /// Validates TOML text; `origin` is the file name used in messages, `base_dir` resolves
    /// relative paths. Endpoint host names are resolved with [`system_resolver`].
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Config::parse_with_resolver(text, origin, base_dir, &system_resolver)
    }

    /// Like [`Config::parse`], resolving endpoint host names with `resolver`; for tests and
    /// fuzzing, which must not touch DNS. IP addresses never reach the resolver.
    pub fn parse_with_resolver(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        resolver: &Resolver<'_>,
    ) -> Result<Config, ConfigErrors> {
        let mut problems = error::Problems::new(origin, text);
        match toml::from_str::<raw::RawConfig>(text) {
            Ok(raw) => validate::config(raw, origin, base_dir, resolver, problems),
            Err(err) => {
                problems.toml(&err);
                Err(problems.into_errors())
            }
        }
    }

    /// A copy without the client keys (which may be millions, and which the key table holds
    /// once loaded).
    pub fn clone_without_keys(&self) -> Config {
        Config {
            gateway: self.gateway.clone(),
            tuning: self.tuning.clone(),
            upstreams: self.upstreams.clone(),
            routes: self.routes.clone(),
            tenants: self.tenants.clone(),
            client_keys: Vec::new(),
            source: self.source.clone(),
        }
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
#[cfg(test)]
mod tests;
