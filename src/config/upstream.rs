//! `[[upstream]]` and `[[upstream.key]]`: the providers requests go to, and their keys.
//!
//! Holds the typed upstream values and their validation. Endpoint host names are resolved
//! here, once, through the resolver the loader was given; provider key secrets are read
//! from the environment or files here too. Both block, which is why this runs only at load.

use std::time::Duration;

use toml::Spanned;

use super::endpoint::{self, Endpoint};
use super::raw::{IntOrText, RawProviderKey, RawUpstream, Text};
use super::secret::{self, Secret, SecretForm};
use super::validate::{byte_size, check_name, duration, duration_in, int, opt_int, Ctx, Seen};

/// `[[upstream]]`: a provider and the endpoints and keys used to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}`; routes refer to it and metrics label by it.
    pub name: String,
    /// Which wire format and key header the upstream speaks.
    pub provider: Provider,
    /// Where to connect; at least one, addresses resolved at load.
    pub endpoints: Vec<Endpoint>,
    /// Limit for establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Limit from sending the request until the response head arrives. Default 120 s.
    pub response_timeout: Duration,
    /// Idle connections kept per shard per endpoint. Default 64; 0 disables pooling.
    pub pool_max_idle: usize,
    /// An idle pooled connection is closed after this. Default 30 s.
    pub pool_idle_timeout: Duration,
    /// Consecutive failures that eject an endpoint. Default 3, at least 1.
    pub eject_after: u32,
    /// How long an ejected endpoint rests before it is tried again. Default 10 s.
    pub eject_for: Duration,
    /// For [`Provider::Http`] only: the header that carries the provider key, lowercase.
    /// Default `authorization` for `http`; always `None` for the other providers, whose
    /// header is fixed by their API.
    pub key_header: Option<String>,
    /// Provider keys, in file order; ids unique within the upstream. May be empty, and then
    /// requests go upstream with whatever credentials the client sent (none, when client
    /// keys are in use).
    pub keys: Vec<ProviderKeyConfig>,
    /// How the next provider key is chosen. Default [`Strategy::QuotaAware`].
    pub strategy: Strategy,
    /// The most times one request is sent, the first included. Default 3, from 1 to 10.
    pub retry_attempts: u32,
    /// Retries allowed per 100 requests on each shard, beyond a small reserve. Default 20.
    pub retry_budget_percent: u32,
    /// Request bodies up to this size are kept so the request can be sent again; larger
    /// ones stream and are never retried. Default 1 MiB, at most 64 MiB.
    pub retry_body_max: u64,
    /// How long a request may wait for a provider key to come back when all are resting,
    /// instead of failing at once. Default zero: no wait.
    pub key_wait: Duration,
    /// The first cooldown of a key refused with 429 without being told for how long;
    /// doubled at each refusal in a row, with jitter. Default 1 s.
    pub cooldown_initial: Duration,
    /// The longest such cooldown. Default 60 s.
    pub cooldown_max: Duration,
    /// Upstreams tried in order when this one has no ready key or is failing.
    pub fallbacks: Vec<String>,
}

/// How an upstream chooses among its ready provider keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In turn, each key as often as its weight says (`round_robin`).
    RoundRobin,
    /// The key with the fewest requests in flight per unit of weight (`least_loaded`).
    LeastLoaded,
    /// The key with the most headroom under its known limits, times its weight
    /// (`quota_aware`).
    QuotaAware,
}

impl Strategy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::QuotaAware => "quota_aware",
        }
    }

    fn from_name(name: &str) -> Option<Strategy> {
        [
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
            Strategy::QuotaAware,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The kind of API behind an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI's API (`provider = "openai"`).
    OpenAi,
    /// Anthropic's API (`provider = "anthropic"`).
    Anthropic,
    /// Google's Gemini API (`provider = "gemini"`).
    Gemini,
    /// Any other HTTP API (`provider = "http"`); no token accounting.
    Http,
}

impl Provider {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Http => "http",
        }
    }

    fn from_name(name: &str) -> Option<Provider> {
        [
            Provider::OpenAi,
            Provider::Anthropic,
            Provider::Gemini,
            Provider::Http,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

/// `[[upstream.key]]`: one provider key the gateway may send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKeyConfig {
    /// Id unique within the upstream, `[A-Za-z0-9_.-]{1,64}`; used in logs and metrics.
    pub id: String,
    /// The key itself, read from `secret`, `secret_env` or `secret_file` at load.
    pub secret: Secret,
    /// Requests per minute the provider allows this key. Default: no limit known.
    pub rpm: Option<u64>,
    /// Tokens per minute the provider allows this key. Default: no limit known.
    pub tpm: Option<u64>,
    /// Share of traffic relative to the upstream's other keys. Default 1, at least 1.
    pub weight: u32,
}

/// Validates every `[[upstream]]` table.
pub(crate) fn upstreams(raw: &[Spanned<RawUpstream>], cx: &mut Ctx<'_, '_>) -> Vec<Upstream> {
    let mut names = Seen::default();
    let mut upstreams = Vec::with_capacity(raw.len());
    for upstream in raw {
        let upstream = upstream.get_ref();
        if check_name(&upstream.name, "upstream name", cx) {
            names.unique(&upstream.name, "upstream", cx);
        }
        upstreams.push(one(upstream, cx));
    }
    upstreams
}

fn one(raw: &RawUpstream, cx: &mut Ctx<'_, '_>) -> Upstream {
    let provider = Provider::from_name(raw.provider.get_ref()).unwrap_or_else(|| {
        let msg = format!(
            "unknown provider {:?}; use openai, anthropic, gemini or http",
            raw.provider.get_ref()
        );
        cx.problems.at(raw.provider.span(), msg);
        Provider::Http
    });

    let key_header = match (&raw.key_header, provider) {
        (Some(v), Provider::Http) => Some(header_name(v, cx)),
        (None, Provider::Http) => Some("authorization".to_string()),
        (Some(v), other) => {
            let msg = format!(
                "key_header applies only to provider \"http\"; {} sets its own",
                other.as_str()
            );
            cx.problems.at(v.span(), msg);
            None
        }
        (None, _) => None,
    };

    let mut ids = Seen::default();
    let keys = raw
        .key
        .iter()
        .map(|key| provider_key(key.get_ref(), &raw.name, &mut ids, cx))
        .collect();

    Upstream {
        name: raw.name.get_ref().clone(),
        provider,
        endpoints: endpoints(&raw.endpoints, cx),
        connect_timeout: duration(&raw.connect_timeout, "connect_timeout", 2, cx),
        response_timeout: duration(&raw.response_timeout, "response_timeout", 120, cx),
        pool_max_idle: int(&raw.pool_max_idle, "pool_max_idle", 0..=65_536, 64, cx),
        pool_idle_timeout: duration(&raw.pool_idle_timeout, "pool_idle_timeout", 30, cx),
        eject_after: int(&raw.eject_after, "eject_after", 1..=1_000_000, 3, cx),
        eject_for: duration(&raw.eject_for, "eject_for", 10, cx),
        key_header,
        keys,
        strategy: strategy(raw.strategy.as_ref(), cx),
        retry_attempts: int(&raw.retry_attempts, "retry_attempts", 1..=10, 3, cx),
        retry_budget_percent: int(
            &raw.retry_budget_percent,
            "retry_budget_percent",
            0..=100,
            20,
            cx,
        ),
        retry_body_max: retry_body_max(&raw.retry_body_max, cx),
        key_wait: duration_in(
            &raw.key_wait,
            "key_wait",
            Duration::ZERO..=MAX_KEY_WAIT,
            Duration::ZERO,
            cx,
        ),
        cooldown_initial: duration(&raw.cooldown_initial, "cooldown_initial", 1, cx),
        cooldown_max: duration(&raw.cooldown_max, "cooldown_max", 60, cx),
        fallbacks: raw.fallbacks.as_ref().map_or_else(Vec::new, |list| {
            list.get_ref().iter().map(|v| v.get_ref().clone()).collect()
        }),
    }
}

/// The longest `key_wait`: a client waits no longer than this for a key.
const MAX_KEY_WAIT: Duration = Duration::from_secs(300);

/// The largest `retry_body_max`.
const MAX_RETRY_BODY: u64 = 64 << 20;

fn strategy(v: Option<&Text>, cx: &mut Ctx<'_, '_>) -> Strategy {
    let Some(v) = v else {
        return Strategy::QuotaAware;
    };
    Strategy::from_name(v.get_ref()).unwrap_or_else(|| {
        let msg = format!(
            "unknown strategy {:?}; use round_robin, least_loaded or quota_aware",
            v.get_ref()
        );
        cx.problems.at(v.span(), msg);
        Strategy::QuotaAware
    })
}

fn retry_body_max(v: &Option<Spanned<IntOrText>>, cx: &mut Ctx<'_, '_>) -> u64 {
    let size = byte_size(v, "retry_body_max", 1 << 20, cx);
    if size > MAX_RETRY_BODY {
        if let Some(v) = v {
            cx.problems.at(
                v.span(),
                "retry_body_max must be at most 64 MiB".to_string(),
            );
        }
        return MAX_RETRY_BODY;
    }
    size
}

/// Checks that every fallback names another upstream of the same provider, once.
pub(crate) fn check_fallbacks(
    raw: &[Spanned<RawUpstream>],
    upstreams: &[Upstream],
    cx: &mut Ctx<'_, '_>,
) {
    for (raw, upstream) in raw.iter().zip(upstreams) {
        let Some(list) = &raw.get_ref().fallbacks else {
            continue;
        };
        let mut seen = Seen::default();
        for v in list.get_ref() {
            let name = v.get_ref();
            let msg = match upstreams.iter().find(|u| &u.name == name) {
                None => format!("fallback {name:?} is not an upstream"),
                Some(u) if u.name == upstream.name => {
                    format!("upstream {name:?} cannot be its own fallback")
                }
                Some(u) if u.provider != upstream.provider => format!(
                    "fallback {name:?} speaks {}, but {:?} speaks {}; a fallback must speak \
                     the same provider API",
                    u.provider.as_str(),
                    upstream.name,
                    upstream.provider.as_str()
                ),
                Some(_) => {
                    seen.unique(v, "fallback", cx);
                    continue;
                }
            };
            cx.problems.at(v.span(), msg);
        }
    }
}

fn endpoints(raw: &Spanned<Vec<Text>>, cx: &mut Ctx<'_, '_>) -> Vec<Endpoint> {
    if raw.get_ref().is_empty() {
        cx.problems
            .at(raw.span(), "endpoints must list at least one http:// URL");
    }

    let mut seen = Seen::default();
    let mut endpoints = Vec::with_capacity(raw.get_ref().len());
    for v in raw.get_ref() {
        let resolved = endpoint::parse_endpoint(v.get_ref())
            .and_then(|spec| Endpoint::resolve(spec, cx.resolver));
        match resolved {
            Ok(endpoint) => {
                seen.unique_key(endpoint.url.clone(), v.span(), "endpoint", cx);
                endpoints.push(endpoint);
            }
            Err(err) => cx.problems.at(v.span(), err.to_string()),
        }
    }
    endpoints
}

/// A header field name (RFC 9110 section 5.1: a token), lowercased.
fn header_name(v: &Text, cx: &mut Ctx<'_, '_>) -> String {
    let name = v.get_ref();
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        cx.problems.at(
            v.span(),
            format!("key_header {name:?} is not a header name"),
        );
    }
    name.to_ascii_lowercase()
}

fn provider_key(
    raw: &RawProviderKey,
    upstream: &Text,
    ids: &mut Seen,
    cx: &mut Ctx<'_, '_>,
) -> ProviderKeyConfig {
    if check_name(&raw.id, "key id", cx) {
        ids.unique(&raw.id, "key id", cx);
    }

    let what = format!(
        "key {:?} of upstream {:?}",
        raw.id.get_ref(),
        upstream.get_ref()
    );
    let forms = [
        (SecretForm::Inline, raw.secret.as_ref()),
        (SecretForm::Env, raw.secret_env.as_ref()),
        (SecretForm::File, raw.secret_file.as_ref()),
    ];
    let secret = secret::choose_form(&forms, &what, raw.id.span(), cx.problems)
        .and_then(|(form, v)| secret::read_secret(form, v, cx.base_dir, cx.problems));

    ProviderKeyConfig {
        id: raw.id.get_ref().clone(),
        secret: Secret::new(secret.unwrap_or_default()),
        rpm: opt_int(&raw.rpm, "rpm", 1..=i64::MAX, cx),
        tpm: opt_int(&raw.tpm, "tpm", 1..=i64::MAX, cx),
        weight: int(&raw.weight, "weight", 1..=1_000_000, 1, cx),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_problems, GATEWAY, UPSTREAM};

    #[test]
    fn problems_point_at_the_key_or_value() {
        let key = |id: &str, rest: &str| format!("[[upstream.key]]\nid = \"{id}\"\n{rest}");
        assert_problems(&[
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}",
                    key("k", "secret = \"s\"\n  rmp = 5\n")
                ),
                "c.toml:10:3: unknown field `rmp`, expected one of `id`,",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}{UPSTREAM}"),
                "c.toml:8:8: duplicate upstream \"up\"; first defined on line 4",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}{}",
                    key("k", "secret = \"a\"\n"),
                    key("k", "secret = \"b\"\n")
                ),
                "c.toml:11:6: duplicate key id \"k\"; first defined on line 8",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}{}", key("k", "")),
                "c.toml:8:6: key \"k\" of upstream \"up\" has no secret; give one of secret, \
                 secret_env, secret_file",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}",
                    key("k", "secret = \"a\"\nsecret_file = \"f\"\n")
                ),
                "c.toml:10:15: key \"k\" of upstream \"up\" has both secret and secret_file; \
                 give exactly one",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}",
                    key("k", "secret_file = \"nope.key\"\n")
                ),
                "c.toml:9:15: cannot read /nonexistent/keygate-config-test/nope.key: ",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}{}", key("k", "secret = \"a\\nb\"\n")),
                "c.toml:9:10: the secret from secret contains a control character",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}",
                    key("k", "secret = \"a\"\nweight = 0\n")
                ),
                "c.toml:10:10: weight must be from 1 to 1000000, not 0",
            ),
            (
                format!("{GATEWAY}{}", UPSTREAM.replace("http://127", "https://127")),
                "c.toml:6:14: https endpoints are not supported yet; use http://",
            ),
            (
                format!("{GATEWAY}{}", UPSTREAM.replace("9001", "9001/v1")),
                "c.toml:6:14: endpoint \"http://127.0.0.1:9001/v1\" has a path; give only \
                 http://HOST[:PORT] (the request path is kept)",
            ),
            (
                format!("{GATEWAY}{}", UPSTREAM.replace("127.0.0.1", "nowhere.test")),
                "c.toml:6:14: cannot resolve \"nowhere.test\": no such host",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}key_header = \"x-key\"\n"),
                "c.toml:7:14: key_header applies only to provider \"http\"; openai sets its own",
            ),
            (
                format!(
                    "{GATEWAY}{}key_header = \"x key\"\n",
                    UPSTREAM.replace("openai", "http")
                ),
                "c.toml:7:14: key_header \"x key\" is not a header name",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}connect_timeout = \"fast\"\n"),
                "c.toml:7:19: connect_timeout: invalid duration \"fast\";",
            ),
        ]);
    }
}
