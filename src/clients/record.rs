//! Client key and tenant definitions as JSON objects, for the admin API and its state file.
//!
//! A definition has the same fields as a `[[client_key]]` or `[[tenant]]` table of the config
//! file, with the same meaning, and is validated by the same code: it is written out as a
//! one-table TOML document and read by the config loader. So the API accepts exactly what the
//! file accepts and says so in the same words. Secrets are never part of a definition except
//! as `secret_sha256`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::accesslog::format_timestamp;
use crate::config::{ClientKeyConfig, Config, KeySecretHash, Limits, Rate, Tenant};

/// A definition: field name to value, as in the config file.
pub type Definition = Map<String, Value>;

/// The fields of a client key the admin API may set; `id` comes from the path.
const KEY_FIELDS: &[&str] = &[
    "tenant",
    "secret_sha256",
    "rate",
    "burst",
    "quota",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent",
    "expires",
    "routes",
    "models",
];

/// The fields of a tenant the admin API may set; `name` comes from the path.
const TENANT_FIELDS: &[&str] = &[
    "rate",
    "burst",
    "quota",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent",
];

/// What is wrong with a definition, one problem a line, in the config loader's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

impl Invalid {
    fn one(message: impl Into<String>) -> Invalid {
        Invalid(vec![message.into()])
    }
}

/// Checks that a patch or a new definition sets only fields an admin may set.
pub fn check_key_fields(patch: &Definition) -> Result<(), Invalid> {
    check_fields(patch, KEY_FIELDS, "client key")
}

/// Checks that a tenant patch sets only fields an admin may set.
pub fn check_tenant_fields(patch: &Definition) -> Result<(), Invalid> {
    check_fields(patch, TENANT_FIELDS, "tenant")
}

fn check_fields(patch: &Definition, allowed: &[&str], what: &str) -> Result<(), Invalid> {
    let unknown: Vec<String> = patch
        .keys()
        .filter(|field| !allowed.contains(&field.as_str()))
        .map(|field| match field.as_str() {
            "secret" | "secret_env" | "secret_file" => format!(
                "{field} cannot be sent to the admin API: leave the secret out to have one made, \
                 or send its secret_sha256"
            ),
            _ => format!(
                "unknown {what} field {field:?}; expected one of {}",
                allowed.join(", ")
            ),
        })
        .collect();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(Invalid(unknown)),
    }
}

/// Applies `patch` to `base` as a JSON merge patch (RFC 7396): a `null` removes a field, an
/// object is merged field by field, anything else replaces.
pub fn merge(base: &mut Definition, patch: &Definition) {
    for (field, value) in patch {
        match value {
            Value::Null => {
                base.remove(field);
            }
            Value::Object(inner) => {
                let slot = base
                    .entry(field.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge(slot, inner);
                    if slot.is_empty() {
                        base.remove(field);
                    }
                }
            }
            _ => {
                base.insert(field.clone(), value.clone());
            }
        }
    }
}

/// Folds the merge patch `patch` into the merge patch `into`, so that applying the result
/// does what applying both in turn does: unlike [`merge`], a `null` is kept, since it must
/// still remove the field from the base it is applied to later.
pub fn merge_patch(into: &mut Definition, patch: &Definition) {
    for (field, value) in patch {
        match (into.get_mut(field), value) {
            (Some(Value::Object(slot)), Value::Object(inner)) => merge_patch(slot, inner),
            _ => {
                into.insert(field.clone(), value.clone());
            }
        }
    }
}

/// The definition of a configured key.
pub fn key_definition(key: &ClientKeyConfig) -> Definition {
    let mut out = Definition::new();
    if let Some(tenant) = &key.tenant {
        out.insert("tenant".into(), tenant.as_str().into());
    }
    out.insert("secret_sha256".into(), key.secret.to_hex().into());
    limits_definition(&key.limits, &mut out);
    if let Some(expires) = key.expires {
        out.insert("expires".into(), rfc3339(expires).into());
    }
    if let Some(routes) = &key.routes {
        out.insert("routes".into(), routes.clone().into());
    }
    if let Some(models) = &key.models {
        out.insert("models".into(), models.clone().into());
    }
    out
}

/// The definition of a configured tenant.
pub fn tenant_definition(tenant: &Tenant) -> Definition {
    let mut out = Definition::new();
    limits_definition(&tenant.limits, &mut out);
    out
}

/// The limit fields of `limits`, as the config file writes them. A `burst` equal to its
/// rate's default is left out, so that it follows the rate when only the rate is changed.
pub fn limits_definition(limits: &Limits, out: &mut Definition) {
    if let Some(rate) = limits.rate {
        out.insert("rate".into(), rate_text(rate.rate).into());
        let default_burst = match rate.rate.per.as_secs() {
            1 => rate.rate.count.max(1),
            _ => 1,
        };
        if rate.burst != default_burst {
            out.insert("burst".into(), rate.burst.into());
        }
    }
    let quota = [
        ("per_minute", limits.quota.per_minute),
        ("per_hour", limits.quota.per_hour),
        ("per_day", limits.quota.per_day),
        ("per_month", limits.quota.per_month),
    ];
    let quota: Map<String, Value> = quota
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?.into())))
        .collect();
    if !quota.is_empty() {
        out.insert("quota".into(), quota.into());
    }
    let counts = [
        ("tokens_per_minute", limits.tokens_per_minute),
        ("tokens_per_day", limits.tokens_per_day),
        ("max_concurrent", limits.max_concurrent.map(u64::from)),
    ];
    for (name, value) in counts {
        if let Some(value) = value {
            out.insert(name.into(), value.into());
        }
    }
}

/// A rate as the config writes it: `5/s`, `100/m`, `2/h`.
fn rate_text(rate: Rate) -> String {
    let unit = match rate.per.as_secs() {
        1 => "s",
        60 => "m",
        _ => "h",
    };
    format!("{}/{unit}", rate.count)
}

fn rfc3339(at: SystemTime) -> String {
    let ns = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    String::from_utf8_lossy(&format_timestamp(ns)).into_owned()
}

/// Validates the client key `id` defined by `definition`, with `tenants` the tenants that
/// exist.
pub fn client_key(
    id: &str,
    definition: &Definition,
    tenants: &[&str],
) -> Result<ClientKeyConfig, Invalid> {
    let mut table = definition.clone();
    table.insert("id".into(), id.into());
    let config = parse(tenants, None, Some(table))?;
    config
        .client_keys
        .into_iter()
        .next()
        .ok_or_else(|| Invalid::one("the client key could not be read"))
}

/// Validates the tenant `name` defined by `definition`.
pub fn tenant(name: &str, definition: &Definition) -> Result<Tenant, Invalid> {
    let mut table = definition.clone();
    table.insert("name".into(), name.into());
    let config = parse(&[], Some(table), None)?;
    config
        .tenants
        .into_iter()
        .next()
        .ok_or_else(|| Invalid::one("the tenant could not be read"))
}

/// Reads a one-table config holding `tenant` or `key` (and the tenant names a key may name)
/// with the config loader.
fn parse(
    tenants: &[&str],
    tenant: Option<Definition>,
    key: Option<Definition>,
) -> Result<Config, Invalid> {
    let mut tables: Vec<(&str, toml::Value)> = tenants
        .iter()
        .map(|name| {
            let mut table = toml::Table::new();
            table.insert("name".into(), (*name).into());
            ("tenant", table.into())
        })
        .collect();
    if let Some(tenant) = tenant {
        tables.push(("tenant", to_toml(tenant)?));
    }
    if let Some(key) = key {
        tables.push(("client_key", to_toml(key)?));
    }
    parse_tables(tables)
}

/// Reads a config made of a minimal `[gateway]` and `tables` (each `[[name]]` with its
/// value) with the config loader: how the admin API checks a definition exactly as the
/// file's would be checked. The problems come without positions, which mean nothing here.
pub(crate) fn parse_tables(tables: Vec<(&str, toml::Value)>) -> Result<Config, Invalid> {
    let mut document = toml::Table::new();
    let mut gateway = toml::Table::new();
    gateway.insert("listen".into(), "127.0.0.1:1".into());
    document.insert("gateway".into(), gateway.into());
    for (name, table) in tables {
        let list = document
            .entry(name)
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(list) = list {
            list.push(table);
        }
    }
    let text = toml::to_string(&document).map_err(|err| Invalid::one(err.to_string()))?;
    Config::parse(&text, Path::new("admin"), Path::new("/nonexistent"))
        .map_err(|errors| Invalid(errors.0.into_iter().map(|p| p.message).collect()))
}

/// A JSON object as a TOML table: `null`s are dropped (TOML has none), numbers keep their
/// kind, so a fraction where a count belongs is refused by the loader.
pub(crate) fn to_toml(definition: Definition) -> Result<toml::Value, Invalid> {
    let json = Value::Object(strip_nulls(definition));
    toml::Value::try_from(json).map_err(|err| Invalid::one(format!("cannot be read: {err}")))
}

fn strip_nulls(definition: Definition) -> Definition {
    definition
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(field, value)| match value {
            Value::Object(inner) => (field, Value::Object(strip_nulls(inner))),
            other => (field, other),
        })
        .collect()
}

/// A fresh client key: `kg-` and 32 random bytes in hex, and its digest.
pub fn new_secret() -> std::io::Result<(String, KeySecretHash)> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).map_err(std::io::Error::other)?;
    let secret = format!("kg-{}", hex::encode(random));
    let digest = KeySecretHash::of(secret.as_bytes());
    Ok((secret, digest))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Definition {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_key_reads_back_as_it_was_defined() {
        let digest = KeySecretHash::of(b"kg-x").to_hex();
        let definition = object(json!({
            "tenant": "acme", "secret_sha256": digest, "rate": "5/s", "burst": 7,
            "quota": {"per_day": 100, "per_month": 1000}, "tokens_per_minute": 2000,
            "max_concurrent": 3, "expires": "2030-01-01T00:00:00.000Z",
            "routes": ["/v1/"], "models": ["gpt-4o-mini"]
        }));
        let key = client_key("k1", &definition, &["acme"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.id, "k1");
        assert_eq!(key.tenant.as_deref(), Some("acme"));
        assert_eq!(key.limits.rate.map(|r| r.burst), Some(7));
        assert_eq!(key.limits.quota.per_day, Some(100));
        assert_eq!(key_definition(&key), definition);
    }

    #[test]
    fn a_default_burst_follows_the_rate() {
        let digest = KeySecretHash::of(b"kg-x").to_hex();
        let key = client_key(
            "k",
            &object(json!({"secret_sha256": digest, "rate": "5/s"})),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut definition = key_definition(&key);
        assert!(!definition.contains_key("burst"), "{definition:?}");
        merge(&mut definition, &object(json!({"rate": "2/m"})));
        let slower = client_key("k", &definition, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(slower.limits.rate.map(|r| r.burst), Some(1));
        // A burst set on purpose stays through a change of rate.
        merge(&mut definition, &object(json!({"burst": 4})));
        merge(&mut definition, &object(json!({"rate": "9/s"})));
        let set = client_key("k", &definition, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.limits.rate.map(|r| r.burst), Some(4));
    }

    #[test]
    fn problems_are_the_loaders() {
        let digest = KeySecretHash::of(b"kg-x").to_hex();
        let cases = [
            (json!({"secret_sha256": digest, "rate": "fast"}), "rate"),
            (
                json!({"secret_sha256": digest, "burst": 2}),
                "burst needs a rate",
            ),
            (
                json!({"secret_sha256": digest, "tenant": "nobody"}),
                "not defined",
            ),
            (
                json!({"secret_sha256": digest, "max_concurrent": 1.5}),
                "expected i64",
            ),
            (json!({"secret_sha256": "abc"}), "64 hex digits"),
            (
                json!({"secret_sha256": digest, "expires": "soon"}),
                "RFC 3339",
            ),
        ];
        for (definition, expected) in cases {
            let err = client_key("k1", &object(definition.clone()), &["acme"])
                .expect_err(&definition.to_string());
            assert!(err.to_string().contains(expected), "{definition}: {err}");
        }
        let bad_id = client_key("no spaces", &object(json!({"secret_sha256": digest})), &[]);
        assert!(bad_id.is_err());
    }

    #[test]
    fn only_admin_fields_pass() {
        let err = check_key_fields(&object(json!({"secret": "kg-clear", "colour": 1})))
            .expect_err("refused");
        assert_eq!(err.0.len(), 2);
        assert!(err.0[0].contains("secret_sha256"), "{err}");
        assert!(check_key_fields(&object(json!({"rate": "1/s", "tenant": null}))).is_ok());
        assert!(check_tenant_fields(&object(json!({"tenant": "x"}))).is_err());
    }

    #[test]
    fn merge_is_rfc_7396() {
        let mut base = object(json!({"rate": "5/s", "burst": 5, "quota": {"per_day": 9}}));
        merge(
            &mut base,
            &object(json!({"burst": null, "quota": {"per_day": null, "per_hour": 2}, "x": [1]})),
        );
        assert_eq!(
            Value::Object(base.clone()),
            json!({"rate": "5/s", "quota": {"per_hour": 2}, "x": [1]})
        );
        merge(&mut base, &object(json!({"quota": {"per_hour": null}})));
        assert_eq!(Value::Object(base), json!({"rate": "5/s", "x": [1]}));
    }

    #[test]
    fn folded_patches_do_what_both_do() {
        let base = object(json!({"rate": "5/s", "burst": 5, "quota": {"per_day": 9}}));
        let first = object(json!({"burst": null, "quota": {"per_hour": 2}}));
        let second = object(json!({"burst": 3, "quota": {"per_day": null}, "rate": null}));
        let mut in_turn = base.clone();
        merge(&mut in_turn, &first);
        merge(&mut in_turn, &second);
        let mut folded = first.clone();
        merge_patch(&mut folded, &second);
        let mut at_once = base;
        merge(&mut at_once, &folded);
        assert_eq!(in_turn, at_once);
        assert_eq!(
            Value::Object(at_once),
            json!({"burst": 3, "quota": {"per_hour": 2}})
        );
    }

    #[test]
    fn tenants_read_back() {
        let definition = object(json!({"rate": "10/m", "burst": 3, "tokens_per_day": 5}));
        let tenant = tenant("acme", &definition).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tenant_definition(&tenant), definition);
        assert!(super::tenant("acme", &object(json!({"rate": "x"}))).is_err());
    }
}
