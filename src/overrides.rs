//! Route lifecycles and provider keys set through the admin API, kept in
//! `state_dir/overrides.json` and applied over the config file at every start and reload.
//!
//! Like [`crate::clients`], the admin API never edits the config file: what it sets is kept
//! here, by route (its `path_prefix`, after its `host` when it has one) and by upstream name,
//! and laid over the file each time the file is read. An entry whose route or upstream the
//! file no longer has is kept, unused, and logged. The file holds provider secrets in the
//! clear (they must be sent upstream), so it is written readable by its owner only.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clients::{record, Definition, Invalid};
use crate::config::{Config, ProviderKeyConfig, Route};
use crate::quota::journal::{read_state, write_atomically};

/// The format version; a newer one is refused, not misread.
const FORMAT: u32 = 1;

/// The file's name in `state_dir`.
pub const FILE: &str = "overrides.json";

/// The route lifecycle fields the admin API may set.
const LIFECYCLE_FIELDS: &[&str] = &["state", "deprecation", "sunset", "deprecation_link"];

/// The provider key fields the admin API may set.
const PROVIDER_KEY_FIELDS: &[&str] = &["id", "secret", "rpm", "tpm", "weight"];

/// What the admin API set on routes and upstreams.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// The format version.
    pub format: u32,
    /// Lifecycle fields by route id, as the config writes them.
    #[serde(default)]
    pub routes: BTreeMap<String, Definition>,
    /// Provider keys added to each upstream, by upstream name, as the config writes them.
    #[serde(default)]
    pub provider_keys: BTreeMap<String, Vec<Definition>>,
}

/// Why the overrides file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    /// It cannot be read or is not what this version writes, nor is its `.prev` copy.
    #[error(
        "{path} is damaged ({reason}), and so is its .prev copy (or there is none); it holds \
         the admin API's route states and added provider keys: restore it from a backup, or \
         move it aside to start without them"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A route's id in the admin API and in this file: its `path_prefix`, after its `host`
/// when it has one (`api.example.com/v1/`).
pub fn route_id(route: &Route) -> String {
    match &route.host {
        Some(host) => format!("{host}{}", route.path_prefix),
        None => route.path_prefix.clone(),
    }
}

impl Overrides {
    /// Reads the overrides in `dir`; none yet is an empty set.
    pub fn load(dir: &Path) -> Result<Overrides, OverridesError> {
        let path = dir.join(FILE);
        let check = |overrides: &Overrides| match overrides.format {
            FORMAT => Ok(()),
            other => Err(format!("unknown format {other}")),
        };
        match read_state(&path, check) {
            Ok(Some(overrides)) => Ok(overrides),
            Ok(None) => Ok(Overrides {
                format: FORMAT,
                ..Overrides::default()
            }),
            Err(reason) => Err(OverridesError::Damaged { path, reason }),
        }
    }

    /// Writes the overrides to `dir`, atomically, readable by the owner only.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_atomically(&dir.join(FILE), self)
    }

    /// Lays the overrides over `config` (the file as read). Entries that no longer fit are
    /// skipped and logged; an entry the file now contradicts (a provider key id the file
    /// defines too) yields to the file.
    pub fn apply(&self, config: &mut Config) -> Result<(), Invalid> {
        let mut problems = Vec::new();
        for (id, lifecycle) in &self.routes {
            let Some(route) = config.routes.iter_mut().find(|r| route_id(r) == *id) else {
                tracing::warn!(route = %id, "the admin API set the state of a route the config \
                    no longer has; kept for it");
                continue;
            };
            match with_lifecycle(route, lifecycle) {
                Ok(changed) => *route = changed,
                Err(err) => problems.push(format!("route {id} (admin API): {err}")),
            }
        }
        for (name, keys) in &self.provider_keys {
            let Some(upstream) = config.upstreams.iter_mut().find(|u| u.name == *name) else {
                tracing::warn!(upstream = %name, "the admin API added provider keys to an \
                    upstream the config no longer has; kept for it");
                continue;
            };
            for definition in keys {
                match provider_key(upstream, definition) {
                    Ok(key) if upstream.keys.iter().any(|k| k.id == key.id) => {
                        tracing::warn!(upstream = %name, key = %key.id, "the config now \
                            defines a provider key the admin API added; the config's is used");
                    }
                    Ok(key) => upstream.keys.push(key),
                    Err(err) => problems.push(format!("upstream {name} key (admin API): {err}")),
                }
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Invalid(problems)),
        }
    }
}

/// `route` with the lifecycle fields of `lifecycle` in place of its own, validated as the
/// config validates them.
pub fn with_lifecycle(route: &Route, lifecycle: &Definition) -> Result<Route, Invalid> {
    check_fields(lifecycle, LIFECYCLE_FIELDS, "route")?;
    let mut table = lifecycle.clone();
    table.insert("path_prefix".into(), route.path_prefix.as_str().into());
    table.insert("upstream".into(), "u".into());
    if let Some(host) = &route.host {
        table.insert("host".into(), host.as_str().into());
    }
    let mut upstream = Map::new();
    upstream.insert("name".into(), "u".into());
    upstream.insert("provider".into(), "http".into());
    upstream.insert("endpoints".into(), vec!["http://127.0.0.1:1"].into());
    let config = parse(upstream, Some(table))?;
    let parsed = config
        .routes
        .into_iter()
        .next()
        .ok_or_else(|| Invalid(vec!["the route could not be read".into()]))?;
    Ok(Route {
        state: parsed.state,
        deprecation: parsed.deprecation,
        sunset: parsed.sunset,
        deprecation_link: parsed.deprecation_link,
        ..route.clone()
    })
}

/// The lifecycle fields of `route`, as the config writes them.
pub fn lifecycle_definition(route: &Route) -> Definition {
    let date = |secs: u64| {
        let ts = crate::accesslog::format_timestamp(secs.saturating_mul(crate::quota::SECOND));
        Value::String(String::from_utf8_lossy(&ts).into_owned())
    };
    let mut out = Definition::new();
    out.insert("state".into(), route.state.name().into());
    if let Some(at) = route.deprecation {
        out.insert("deprecation".into(), date(at));
    }
    if let Some(at) = route.sunset {
        out.insert("sunset".into(), date(at));
    }
    if let Some(link) = &route.deprecation_link {
        out.insert("deprecation_link".into(), link.as_str().into());
    }
    out
}

/// The `id` of a provider key's definition ("" without one).
pub fn definition_id(definition: &Definition) -> &str {
    definition
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The provider key `definition` defines for `upstream`, validated as the config validates
/// provider keys. Only an inline `secret` is taken: the admin API reads no files or
/// variables on the gateway's host.
pub fn provider_key(
    upstream: &crate::config::Upstream,
    definition: &Definition,
) -> Result<ProviderKeyConfig, Invalid> {
    check_fields(definition, PROVIDER_KEY_FIELDS, "provider key")?;
    let mut table = Map::new();
    table.insert("name".into(), upstream.name.as_str().into());
    table.insert("provider".into(), upstream.provider.as_str().into());
    table.insert("endpoints".into(), vec!["http://127.0.0.1:1"].into());
    table.insert("key".into(), vec![Value::Object(definition.clone())].into());
    let config = parse(table, None)?;
    config
        .upstreams
        .into_iter()
        .next()
        .and_then(|upstream| upstream.keys.into_iter().next())
        .ok_or_else(|| Invalid(vec!["the provider key could not be read".into()]))
}

fn check_fields(definition: &Definition, allowed: &[&str], what: &str) -> Result<(), Invalid> {
    let unknown: Vec<String> = definition
        .keys()
        .filter(|field| !allowed.contains(&field.as_str()))
        .map(|field| {
            format!(
                "unknown {what} field {field:?}; expected one of {}",
                allowed.join(", ")
            )
        })
        .collect();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(Invalid(unknown)),
    }
}

/// Reads a config of one upstream (and one route) with the config loader.
fn parse(upstream: Definition, route: Option<Definition>) -> Result<Config, Invalid> {
    let mut tables = vec![("upstream", record::to_toml(upstream)?)];
    if let Some(route) = route {
        tables.push(("route", record::to_toml(route)?));
    }
    record::parse_tables(tables)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::RouteState;

    fn object(value: Value) -> Definition {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn config() -> Config {
        let text = "[gateway]\nlisten = \"127.0.0.1:0\"\n\
            [[upstream]]\nname = \"oa\"\nprovider = \"openai\"\n\
            endpoints = [\"http://127.0.0.1:9\"]\n\
            [[upstream.key]]\nid = \"k1\"\nsecret = \"sk-1\"\n\
            [[route]]\npath_prefix = \"/v1/\"\nupstream = \"oa\"\n\
            [[route]]\npath_prefix = \"/v1/\"\nhost = \"api.example.com\"\nupstream = \"oa\"\n";
        Config::parse(text, Path::new("t.toml"), Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lifecycles_and_keys_are_laid_over_the_file() {
        let mut overrides = Overrides::default();
        overrides.routes.insert(
            "api.example.com/v1/".into(),
            object(
                json!({"state": "deprecated", "deprecation": "2026-01-01T00:00:00Z",
                          "sunset": "2027-01-01T00:00:00Z"}),
            ),
        );
        overrides
            .routes
            .insert("/gone/".into(), object(json!({"state": "retired"})));
        overrides.provider_keys.insert(
            "oa".into(),
            vec![
                object(json!({"id": "k2", "secret": "sk-2", "rpm": 60})),
                object(json!({"id": "k1", "secret": "sk-other"})),
            ],
        );
        let mut config = config();
        overrides
            .apply(&mut config)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.routes[0].state, RouteState::Published);
        assert_eq!(config.routes[1].state, RouteState::Deprecated);
        assert_eq!(config.routes[1].sunset, Some(1_798_761_600));
        let keys: Vec<&str> = config.upstreams[0]
            .keys
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        // The file's k1 stands; k2 is added.
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(config.upstreams[0].keys[1].rpm, Some(60));
    }

    #[test]
    fn bad_entries_are_refused_in_the_loaders_words() {
        let config = config();
        let route = &config.routes[0];
        let cases = [
            (json!({"state": "sleeping"}), "state"),
            (json!({"state": "deprecated"}), "deprecation"),
            (
                json!({"state": "published", "sunset": "2027-01-01T00:00:00Z"}),
                "sunset",
            ),
            (
                json!({"state": "retired", "colour": 1}),
                "unknown route field",
            ),
        ];
        for (lifecycle, says) in cases {
            let err = with_lifecycle(route, &object(lifecycle.clone())).expect_err("refused");
            assert!(err.to_string().contains(says), "{lifecycle}: {err}");
        }
        let upstream = &config.upstreams[0];
        let cases = [
            (json!({"id": "k9"}), "secret"),
            (
                json!({"id": "k9", "secret_file": "/etc/passwd"}),
                "unknown provider key field",
            ),
            (json!({"id": "bad id", "secret": "s"}), "id"),
            (json!({"id": "k9", "secret": "s", "rpm": 0}), "rpm"),
        ];
        for (key, says) in cases {
            let err = provider_key(upstream, &object(key.clone())).expect_err("refused");
            assert!(err.to_string().contains(says), "{key}: {err}");
        }
    }
}
