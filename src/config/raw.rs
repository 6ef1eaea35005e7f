//! The config file as written: serde structs that mirror the TOML, one per table.
//!
//! Only the shape is checked here: unknown keys (`deny_unknown_fields`), missing required
//! keys and wrong TOML types. Every value that validation may complain about is wrapped in
//! [`Spanned`] so the complaint can point at it. Integers are read as `i64` so that a negative
//! or out-of-range number becomes a validation problem (all of which are collected) rather
//! than a deserialization error (which stops at the first). Meaning is given in `validate`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A spanned string, the most common raw value.
pub(crate) type Text = Spanned<String>;
/// A spanned integer, range-checked during validation.
pub(crate) type Int = Spanned<i64>;
/// A spanned list of spanned strings.
pub(crate) type TextList = Spanned<Vec<Text>>;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub gateway: RawGateway,
    #[serde(default)]
    pub upstream: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub tenant: Vec<Spanned<RawTenant>>,
    #[serde(default)]
    pub client_key: Vec<Spanned<RawClientKey>>,
}

/// `[gateway]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub listen: Text,
    pub admin_listen: Option<Text>,
    pub admin_token_env: Option<Text>,
    pub workers: Option<Spanned<IntOrText>>,
    pub state_dir: Option<Text>,
    pub access_log: Option<Text>,
    pub access_log_max_bytes: Option<Spanned<IntOrText>>,
    pub access_log_keep: Option<Int>,
    pub tuning: Option<Text>,
    pub max_header_bytes: Option<Int>,
    pub max_body_bytes: Option<Spanned<IntOrText>>,
    pub header_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub drain_timeout: Option<Text>,
    pub max_connections: Option<Int>,
    pub persist_interval: Option<Text>,
    pub default_max_tokens: Option<Int>,
}

/// `[[upstream]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub name: Text,
    pub provider: Text,
    pub endpoints: TextList,
    pub connect_timeout: Option<Text>,
    pub response_timeout: Option<Text>,
    pub pool_max_idle: Option<Int>,
    pub pool_idle_timeout: Option<Text>,
    pub eject_after: Option<Int>,
    pub eject_for: Option<Text>,
    pub key_header: Option<Text>,
    pub strategy: Option<Text>,
    pub retry_attempts: Option<Int>,
    pub retry_budget_percent: Option<Int>,
    pub retry_body_max: Option<Spanned<IntOrText>>,
    pub key_wait: Option<Text>,
    pub cooldown_initial: Option<Text>,
    pub cooldown_max: Option<Text>,
    pub fallbacks: Option<TextList>,
    #[serde(default)]
    pub key: Vec<Spanned<RawProviderKey>>,
}

/// `[[upstream.key]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProviderKey {
    pub id: Text,
    pub secret: Option<Text>,
    pub secret_env: Option<Text>,
    pub secret_file: Option<Text>,
    pub rpm: Option<Int>,
    pub tpm: Option<Int>,
    pub weight: Option<Int>,
}

/// `[[route]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path_prefix: Text,
    pub host: Option<Text>,
    pub upstream: Text,
    pub state: Option<Text>,
    /// A TOML offset datetime or an RFC 3339 string; anything else is a problem.
    pub deprecation: Option<Spanned<toml::Value>>,
    /// As `deprecation`.
    pub sunset: Option<Spanned<toml::Value>>,
    pub deprecation_link: Option<Text>,
}

/// `[[tenant]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub name: Text,
    // The limit keys, as in `RawClientKey`; see `RawLimits`.
    pub rate: Option<Text>,
    pub burst: Option<Int>,
    pub quota: Option<RawQuota>,
    pub tokens_per_minute: Option<Int>,
    pub tokens_per_day: Option<Int>,
    pub max_concurrent: Option<Int>,
}

/// `[[client_key]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientKey {
    pub id: Text,
    pub tenant: Option<Text>,
    pub secret: Option<Text>,
    pub secret_env: Option<Text>,
    pub secret_sha256: Option<Text>,
    pub secret_file: Option<Text>,
    // The limit keys, as in `RawTenant`; see `RawLimits`.
    pub rate: Option<Text>,
    pub burst: Option<Int>,
    pub quota: Option<RawQuota>,
    pub tokens_per_minute: Option<Int>,
    pub tokens_per_day: Option<Int>,
    pub max_concurrent: Option<Int>,
    /// A TOML offset datetime or an RFC 3339 string; anything else is a problem.
    pub expires: Option<Spanned<toml::Value>>,
    pub routes: Option<TextList>,
    pub models: Option<TextList>,
}

/// `quota = { ... }` of a client key or a tenant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuota {
    pub per_minute: Option<Int>,
    pub per_hour: Option<Int>,
    pub per_day: Option<Int>,
    pub per_month: Option<Int>,
}

/// The limit keys of a `[[client_key]]` or `[[tenant]]`, borrowed from either.
///
/// Each table lists the keys itself rather than `#[serde(flatten)]`ing a shared struct:
/// serde cannot combine `flatten` with `deny_unknown_fields`, and flattened values lose
/// their spans.
pub(crate) struct RawLimits<'a> {
    pub rate: &'a Option<Text>,
    pub burst: &'a Option<Int>,
    pub quota: &'a Option<RawQuota>,
    pub tokens_per_minute: &'a Option<Int>,
    pub tokens_per_day: &'a Option<Int>,
    pub max_concurrent: &'a Option<Int>,
}

impl RawClientKey {
    pub(crate) fn limits(&self) -> RawLimits<'_> {
        RawLimits {
            rate: &self.rate,
            burst: &self.burst,
            quota: &self.quota,
            tokens_per_minute: &self.tokens_per_minute,
            tokens_per_day: &self.tokens_per_day,
            max_concurrent: &self.max_concurrent,
        }
    }
}

impl RawTenant {
    pub(crate) fn limits(&self) -> RawLimits<'_> {
        RawLimits {
            rate: &self.rate,
            burst: &self.burst,
            quota: &self.quota,
            tokens_per_minute: &self.tokens_per_minute,
            tokens_per_day: &self.tokens_per_day,
            max_concurrent: &self.max_concurrent,
        }
    }
}

/// A value that may be written as a TOML integer or a string (`workers`, `max_body_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrText {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IntOrText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntOrTextVisitor)
    }
}

struct IntOrTextVisitor;

impl Visitor<'_> for IntOrTextVisitor {
    type Value = IntOrText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrText, E> {
        Ok(IntOrText::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrText, E> {
        i64::try_from(v)
            .map(IntOrText::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrText, E> {
        Ok(IntOrText::Text(v.to_string()))
    }
}
