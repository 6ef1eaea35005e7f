//! `[[client_key]]`: the keys clients present, what they may reach, and when they expire.
//!
//! Holds the typed client key values and their validation; the limits a key carries are
//! validated in `limits`. A client key's secret is hashed as soon as it is read and only the
//! SHA-256 is kept, so a loaded config can be logged or dumped without leaking a client key.
//! Expiry timestamps are converted to `SystemTime` here, with a small calendar routine rather
//! than a date crate.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::value::{Datetime, Offset};
use toml::Spanned;

use super::limits::{self, Limits};
use super::raw::{RawClientKey, TextList};
use super::secret::{self, KeySecretHash, SecretForm};
use super::validate::{check_name, Ctx, Seen};

/// `[[client_key]]`: one key a client may present, with its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyConfig {
    /// Unique id, `[A-Za-z0-9_.-]{1,64}`; used in logs, metrics and the admin API.
    pub id: String,
    /// The tenant the key belongs to; always a defined tenant. Default: none.
    pub tenant: Option<String>,
    /// SHA-256 of the key's secret; unique among client keys.
    pub secret: KeySecretHash,
    /// What this key alone may use; its tenant's limits apply as well. Default: no limits.
    pub limits: Limits,
    /// After this instant the key is rejected as expired. Default: never expires.
    pub expires: Option<SystemTime>,
    /// Path prefixes the key may use. Default `None`: every route.
    pub routes: Option<Vec<String>>,
    /// Model names the key may ask for. Default `None`: every model.
    pub models: Option<Vec<String>>,
}

/// Validates every `[[client_key]]` table. `tenants` are the defined tenant names.
pub(crate) fn client_keys(
    raw: &[Spanned<RawClientKey>],
    tenants: &[&str],
    cx: &mut Ctx<'_, '_>,
) -> Vec<ClientKeyConfig> {
    let mut ids = Seen::default();
    let mut hashes: HashMap<KeySecretHash, String> = HashMap::new();
    let mut keys = Vec::with_capacity(raw.len());
    for key in raw {
        let key = key.get_ref();
        if check_name(&key.id, "client key id", cx) {
            ids.unique(&key.id, "client key id", cx);
        }

        if let Some(tenant) = &key.tenant {
            if !tenants.contains(&tenant.get_ref().as_str()) {
                let msg = format!("tenant {:?} is not defined", tenant.get_ref());
                cx.problems.at(tenant.span(), msg);
            }
        }

        // Two keys with one secret could not be told apart when presented.
        let secret = secret_hash(key, cx);
        if let Some((hash, span)) = &secret {
            if let Some(other) = hashes.insert(*hash, key.id.get_ref().clone()) {
                let msg = format!("client key has the same secret as client key {other:?}");
                cx.problems.at(span.clone(), msg);
            }
        }

        keys.push(ClientKeyConfig {
            id: key.id.get_ref().clone(),
            tenant: key.tenant.as_ref().map(|t| t.get_ref().clone()),
            secret: secret.map_or(KeySecretHash::of(b""), |(hash, _)| hash),
            limits: limits::limits(key.limits(), cx),
            expires: key.expires.as_ref().and_then(|v| expires(v, cx)),
            routes: key.routes.as_ref().map(|v| list(v, "routes", true, cx)),
            models: key.models.as_ref().map(|v| list(v, "models", false, cx)),
        });
    }
    keys
}

/// The key's secret hash and the span of the value it came from.
fn secret_hash(
    key: &RawClientKey,
    cx: &mut Ctx<'_, '_>,
) -> Option<(KeySecretHash, std::ops::Range<usize>)> {
    let what = format!("client key {:?}", key.id.get_ref());
    let forms = [
        (SecretForm::Inline, key.secret.as_ref()),
        (SecretForm::Env, key.secret_env.as_ref()),
        (SecretForm::Sha256, key.secret_sha256.as_ref()),
        (SecretForm::File, key.secret_file.as_ref()),
    ];
    let (form, v) = secret::choose_form(&forms, &what, key.id.span(), cx.problems)?;

    let hash = if form == SecretForm::Sha256 {
        let hash = KeySecretHash::from_hex(v.get_ref());
        if hash.is_none() {
            cx.problems
                .at(v.span(), "secret_sha256 must be 64 hex digits (a SHA-256)");
        }
        hash
    } else {
        secret::read_secret(form, v, cx.base_dir, cx.problems)
            .map(|clear| KeySecretHash::of(clear.as_bytes()))
    };
    hash.map(|hash| (hash, v.span()))
}

/// A non-empty list of non-empty strings; `paths` ones must start with `/`.
fn list(v: &TextList, key: &str, paths: bool, cx: &mut Ctx<'_, '_>) -> Vec<String> {
    if v.get_ref().is_empty() {
        let msg = format!("{key} is empty, which allows nothing; leave it out to allow all");
        cx.problems.at(v.span(), msg);
    }
    for item in v.get_ref() {
        let text = item.get_ref();
        if text.is_empty() || (paths && !text.starts_with('/')) {
            let want = if paths {
                "a path starting with '/'"
            } else {
                "a name"
            };
            cx.problems
                .at(item.span(), format!("{key}: {text:?} is not {want}"));
        }
    }
    v.get_ref().iter().map(|s| s.get_ref().clone()).collect()
}

fn expires(v: &Spanned<toml::Value>, cx: &mut Ctx<'_, '_>) -> Option<SystemTime> {
    let datetime = match v.get_ref() {
        toml::Value::Datetime(dt) => Some(*dt),
        toml::Value::String(text) => text.parse::<Datetime>().ok(),
        _ => None,
    };
    let instant = datetime.and_then(to_system_time);
    if instant.is_none() {
        cx.problems.at(
            v.span(),
            "expires must be an RFC 3339 date and time with an offset, like 2027-01-01T00:00:00Z",
        );
    }
    instant
}

/// The instant an offset date-time names; `None` without a date, time or offset.
pub(super) fn to_system_time(dt: Datetime) -> Option<SystemTime> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let offset_minutes = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(i64::from(date.year), date.month.into(), date.day.into());
    let seconds = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset_minutes * 60;

    let whole = Duration::from_secs(seconds.unsigned_abs());
    let at = if seconds >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    at.checked_add(Duration::from_nanos(time.nanosecond.into()))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
///
/// Counts from 0000-03-01 in 400-year eras (146097 days each), with March as the first
/// month so the leap day falls at the end of the counted year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_problems, GATEWAY};
    use super::*;

    #[test]
    fn problems_point_at_the_value() {
        let key = "[[client_key]]\nid = \"ck\"\n";
        assert_problems(&[
            (
                format!("{GATEWAY}{key}secret = \"a\"\n{key}secret = \"b\"\n"),
                "c.toml:7:6: duplicate client key id \"ck\"; first defined on line 4",
            ),
            (
                format!("{GATEWAY}{key}secret_env = \"X\"\nsecret = \"s\"\n"),
                "c.toml:6:10: client key \"ck\" has both secret_env and secret; give exactly one",
            ),
            (
                format!("{GATEWAY}{key}secret_env = \"KEYGATE_TEST_NEVER_SET_5D1C0F4B\"\n"),
                "c.toml:5:14: environment variable KEYGATE_TEST_NEVER_SET_5D1C0F4B is not set",
            ),
            (
                format!("{GATEWAY}{key}rate = \"1/s\"\n"),
                "c.toml:4:6: client key \"ck\" has no secret; give one of secret, secret_env, \
                 secret_sha256, secret_file",
            ),
            (
                format!("{GATEWAY}{key}secret_sha256 = \"abc\"\n"),
                "c.toml:5:17: secret_sha256 must be 64 hex digits (a SHA-256)",
            ),
            (
                format!(
                    "{GATEWAY}{key}secret = \"a\"\n[[client_key]]\nid = \"b\"\nsecret = \"a\"\n"
                ),
                "c.toml:8:10: client key has the same secret as client key \"ck\"",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\ntenant = \"ghost\"\n"),
                "c.toml:6:10: tenant \"ghost\" is not defined",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nburst = 3\n"),
                "c.toml:6:9: burst needs a rate",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nrate = \"5 per second\"\n"),
                "c.toml:6:8: rate: invalid rate \"5 per second\";",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nquota = {{ per_week = 1 }}\n"),
                "c.toml:6:11: unknown field `per_week`, expected one of `per_minute`,",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nexpires = 2027-01-01T00:00:00\n"),
                "c.toml:6:11: expires must be an RFC 3339 date and time with an offset, \
                 like 2027-01-01T00:00:00Z",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nexpires = \"next year\"\n"),
                "c.toml:6:11: expires must be an RFC 3339 date",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nmodels = [\"gpt\", \"\"]\n"),
                "c.toml:6:18: models: \"\" is not a name",
            ),
            (
                format!("{GATEWAY}{key}secret = \"a\"\nmax_concurrent = 0\n"),
                "c.toml:6:18: max_concurrent must be from 1 to 4294967295, not 0",
            ),
        ]);
    }

    #[test]
    fn civil_days() {
        let cases = [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 3, 1), 11_017),
            ((2024, 2, 29), 19_782),
            ((2027, 1, 1), 20_819),
            ((1, 1, 1), -719_162),
            ((9999, 12, 31), 2_932_896),
        ];
        for ((y, m, d), want) in cases {
            assert_eq!(days_from_civil(y, m, d), want, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn timestamps() {
        let secs = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        let cases = [
            ("2027-01-01T00:00:00Z", secs(1_798_761_600)),
            ("2027-01-01T01:00:00+01:00", secs(1_798_761_600)),
            ("2026-12-31T19:00:00-05:00", secs(1_798_761_600)),
            ("1970-01-01T00:00:00Z", secs(0)),
            (
                "1970-01-01T00:00:01.5Z",
                Some(UNIX_EPOCH + Duration::from_millis(1500)),
            ),
            (
                "1969-12-31T23:59:59Z",
                UNIX_EPOCH.checked_sub(Duration::from_secs(1)),
            ),
            ("2027-01-01T00:00:00", None),
            ("2027-01-01", None),
            ("00:00:00", None),
        ];
        for (text, want) in cases {
            let dt: Datetime = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(to_system_time(dt), want, "{text}");
        }
    }
}
