//! Raw config to typed config: defaults, ranges, cross-references, and every problem found.
//!
//! Validation never stops early. Each check that fails records a problem at the value's
//! span and substitutes a default so later checks still run; the config is returned only
//! if no problem was recorded. This file holds the driver, `[[tenant]]` and the helpers the
//! per-table files share; `[gateway]`, `[[upstream]]`, `[[route]]` and `[[client_key]]` are
//! validated in their own files.

use std::collections::HashMap;
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::endpoint::Resolver;
use super::error::{ConfigErrors, Problems};
use super::raw::{Int, IntOrText, RawConfig, RawTenant, Text};
use super::value;
use super::{client_key, gateway, limits, route, upstream, Config, Tenant};

/// What every table's validation needs: where problems go and how to reach the outside.
pub(crate) struct Ctx<'a, 'p> {
    pub problems: &'p mut Problems<'a>,
    pub base_dir: &'p Path,
    pub resolver: &'p Resolver<'p>,
}

/// Validates a whole file. `problems` is empty and belongs to `origin`.
pub(crate) fn config(
    raw: RawConfig,
    origin: &Path,
    base_dir: &Path,
    resolver: &Resolver<'_>,
    mut problems: Problems<'_>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        problems: &mut problems,
        base_dir,
        resolver,
    };

    let (gateway, tuning) = gateway::gateway(&raw.gateway, &mut cx);
    let upstreams = upstream::upstreams(&raw.upstream, &mut cx);
    upstream::check_fallbacks(&raw.upstream, &upstreams, &mut cx);
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let routes = route::routes(&raw.route, &upstream_names, &mut cx);

    let tenants = tenants(&raw.tenant, &mut cx);
    let tenant_names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let client_keys = client_key::client_keys(&raw.client_key, &tenant_names, &mut cx);

    if !problems.is_empty() {
        return Err(problems.into_errors());
    }
    Ok(Config {
        gateway,
        tuning,
        upstreams,
        routes,
        tenants,
        client_keys,
        source: origin.to_path_buf(),
    })
}

fn tenants(raw: &[toml::Spanned<RawTenant>], cx: &mut Ctx<'_, '_>) -> Vec<Tenant> {
    let mut seen = Seen::default();
    let mut tenants = Vec::with_capacity(raw.len());
    for tenant in raw {
        let tenant = tenant.get_ref();
        if check_name(&tenant.name, "tenant name", cx) {
            seen.unique(&tenant.name, "tenant", cx);
        }
        tenants.push(Tenant {
            name: tenant.name.get_ref().clone(),
            limits: limits::limits(tenant.limits(), cx),
        });
    }
    tenants
}

/// Remembers where each name was first defined, to report duplicates.
#[derive(Default)]
pub(crate) struct Seen {
    first: HashMap<String, usize>,
}

impl Seen {
    /// Records `name`; a second time is a problem at it naming the first's line.
    pub(crate) fn unique(&mut self, name: &Text, what: &str, cx: &mut Ctx<'_, '_>) {
        self.unique_key(name.get_ref().clone(), name.span(), what, cx);
    }

    pub(crate) fn unique_key(
        &mut self,
        key: String,
        span: std::ops::Range<usize>,
        what: &str,
        cx: &mut Ctx<'_, '_>,
    ) {
        let line = cx.problems.line_of(span.start);
        if let Some(first) = self.first.get(&key) {
            let msg = format!("duplicate {what} {key:?}; first defined on line {first}");
            cx.problems.at(span, msg);
        } else {
            self.first.insert(key, line);
        }
    }
}

/// Checks an id or name: `[A-Za-z0-9_.-]{1,64}`, safe as a metrics label and in logs.
pub(crate) fn check_name(v: &Text, what: &str, cx: &mut Ctx<'_, '_>) -> bool {
    let name = v.get_ref();
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        let msg = format!("{what} {name:?} must be 1 to 64 of A-Z a-z 0-9 _ . -");
        cx.problems.at(v.span(), msg);
    }
    ok
}

/// An optional integer in `range`, or `default` when absent (or wrong, after a problem).
pub(crate) fn int<T: TryFrom<i64>>(
    v: &Option<Int>,
    key: &str,
    range: RangeInclusive<i64>,
    default: T,
    cx: &mut Ctx<'_, '_>,
) -> T {
    v.as_ref()
        .and_then(|v| checked(v, key, range, cx))
        .unwrap_or(default)
}

/// An optional integer in `range`; `None` when absent (or wrong, after a problem).
pub(crate) fn opt_int<T: TryFrom<i64>>(
    v: &Option<Int>,
    key: &str,
    range: RangeInclusive<i64>,
    cx: &mut Ctx<'_, '_>,
) -> Option<T> {
    checked(v.as_ref()?, key, range, cx)
}

fn checked<T: TryFrom<i64>>(
    v: &Int,
    key: &str,
    range: RangeInclusive<i64>,
    cx: &mut Ctx<'_, '_>,
) -> Option<T> {
    let n = *v.get_ref();
    if let Some(n) = range.contains(&n).then(|| T::try_from(n).ok()).flatten() {
        return Some(n);
    }
    let (lo, hi) = (range.start(), range.end());
    let msg = if *hi == i64::MAX {
        format!("{key} must be at least {lo}, not {n}")
    } else {
        format!("{key} must be from {lo} to {hi}, not {n}")
    };
    cx.problems.at(v.span(), msg);
    None
}

/// An optional byte size, as an integer or text like `"1 MiB"`; `default` when absent (or
/// wrong, after a problem).
pub(crate) fn byte_size(
    v: &Option<Spanned<IntOrText>>,
    key: &str,
    default: u64,
    cx: &mut Ctx<'_, '_>,
) -> u64 {
    let Some(v) = v else { return default };
    let parsed = match v.get_ref() {
        IntOrText::Int(n) => u64::try_from(*n).map_err(|_| "must not be negative".to_string()),
        IntOrText::Text(text) => value::parse_byte_size(text).map_err(|e| e.to_string()),
    };
    parsed.unwrap_or_else(|msg| {
        cx.problems.at(v.span(), format!("{key}: {msg}"));
        default
    })
}

/// An optional duration greater than zero; `default_secs` when absent.
pub(crate) fn duration(
    v: &Option<Text>,
    key: &str,
    default_secs: u64,
    cx: &mut Ctx<'_, '_>,
) -> Duration {
    let d = duration_or_zero(v, key, default_secs, cx);
    if d.is_zero() {
        if let Some(v) = v {
            cx.problems
                .at(v.span(), format!("{key} must be greater than zero"));
        }
        return Duration::from_secs(default_secs);
    }
    d
}

/// An optional duration within `range`; `default` when absent (or wrong, after a problem).
pub(crate) fn duration_in(
    v: &Option<Text>,
    key: &str,
    range: RangeInclusive<Duration>,
    default: Duration,
    cx: &mut Ctx<'_, '_>,
) -> Duration {
    let Some(v) = v else { return default };
    let msg = match value::parse_duration(v.get_ref()) {
        Ok(d) if range.contains(&d) => return d,
        Ok(d) => format!(
            "{key} must be from {} to {}, not {}",
            value::format_duration(*range.start()),
            value::format_duration(*range.end()),
            value::format_duration(d),
        ),
        Err(err) => format!("{key}: {err}"),
    };
    cx.problems.at(v.span(), msg);
    default
}

/// An optional duration that may be zero; `default_secs` when absent.
pub(crate) fn duration_or_zero(
    v: &Option<Text>,
    key: &str,
    default_secs: u64,
    cx: &mut Ctx<'_, '_>,
) -> Duration {
    let default = Duration::from_secs(default_secs);
    let Some(v) = v else { return default };
    value::parse_duration(v.get_ref()).unwrap_or_else(|err| {
        cx.problems.at(v.span(), format!("{key}: {err}"));
        default
    })
}

/// Reads a UTF-8 file of at most `limit` bytes. No config file or secret needs more, and the
/// cap keeps a path like `/dev/zero` from stalling the load.
pub(crate) fn read_limited(path: &Path, limit: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let msg = format!("file is larger than {limit} bytes");
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file is not UTF-8"))
}

/// `base.join(path)` without `.` components, so `./state` reads as `BASE/state`.
pub(crate) fn relative_to(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_problems, problems, GATEWAY};

    #[test]
    fn tenant_problems() {
        assert_problems(&[
            (
                format!("{GATEWAY}[[tenant]]\nname = \"t\"\ncolour = \"red\"\n"),
                "c.toml:5:1: unknown field `colour`, expected one of `name`, `rate`,",
            ),
            (
                format!("{GATEWAY}[[tenant]]\nname = \"t\"\n[[tenant]]\nname = \"t\"\n"),
                "c.toml:6:8: duplicate tenant \"t\"; first defined on line 4",
            ),
            (
                format!("{GATEWAY}[[tenant]]\nname = \"\"\n"),
                "c.toml:4:8: tenant name \"\" must be 1 to 64 of A-Z a-z 0-9 _ . -",
            ),
        ]);
    }

    #[test]
    fn files_past_the_limit_are_refused() {
        use std::path::Path;

        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/local.toml");
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0);
        assert!(super::read_limited(&path, len).is_ok());
        let err = super::read_limited(&path, len - 1).expect_err("over the limit");
        assert_eq!(
            err.to_string(),
            format!("file is larger than {} bytes", len - 1)
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = "\
[gateway]
listen = \"localhost:8080\"
workers = 0
max_header_bytes = 10

[[upstream]]
name = \"bad name\"
provider = \"azure\"
endpoints = []
eject_after = 0

[[route]]
path_prefix = \"v1\"
upstream = \"missing\"

[[client_key]]
id = \"k\"
secret = \"kg\"
rate = \"0/s\"
quota = { per_day = 0 }
routes = []
";
        let want = "\
c.toml:2:10: \"localhost:8080\" is not an IP address and port, like \"127.0.0.1:8080\"
c.toml:3:11: workers must be \"auto\" or a number from 1 to 1024
c.toml:4:20: max_header_bytes must be from 1024 to 1048576, not 10
c.toml:7:8: upstream name \"bad name\" must be 1 to 64 of A-Z a-z 0-9 _ . -
c.toml:8:12: unknown provider \"azure\"; use openai, anthropic, gemini or http
c.toml:9:13: endpoints must list at least one http:// URL
c.toml:10:15: eject_after must be from 1 to 1000000, not 0
c.toml:13:15: path_prefix \"v1\" must start with '/' and hold no spaces, '?' or '#'
c.toml:14:12: route names upstream \"missing\", which is not defined
c.toml:19:8: rate: rate \"0/s\" allows nothing; the count must be at least 1
c.toml:20:21: per_day must be at least 1, not 0
c.toml:21:10: routes is empty, which allows nothing; leave it out to allow all";
        assert_eq!(problems(text), want);
    }
}
