//! `[[route]]`: which upstream serves a request, and where the route is in its life
//! (published, deprecated, retired).
//!
//! Holds the typed route values and their validation. Lifecycle dates are read here into
//! whole seconds since the Unix epoch; the header fields they become are encoded once, when
//! the router is built (`proxy::Router::new`), never per request.

use std::time::UNIX_EPOCH;

use toml::value::Datetime;
use toml::Spanned;

use super::client_key::to_system_time;
use super::raw::{RawRoute, Text};
use super::validate::{Ctx, Seen};

/// The first instant past the years an IMF-fixdate (RFC 9110 section 5.6.7) can write:
/// 10000-01-01T00:00:00Z, in seconds since the Unix epoch.
const YEAR_10000: u64 = 253_402_300_800;

/// Longest `deprecation_link` accepted, in bytes.
const MAX_LINK_BYTES: usize = 2048;

/// `[[route]]`: which upstream serves a request, by path prefix and optionally host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Requests whose path starts with this are routed here. Starts with `/`.
    pub path_prefix: String,
    /// Only requests for this host (lowercase, without port) match. Default: any host.
    pub host: Option<String>,
    /// Name of the [`Upstream`](super::Upstream) that serves the route; always defined.
    pub upstream: String,
    /// Where the route is in its life. Default [`RouteState::Published`].
    pub state: RouteState,
    /// When the route was or will be deprecated, in whole seconds since the Unix epoch
    /// (UTC), sent as `Deprecation: @SECONDS` (RFC 9745). A loaded config has it on every
    /// deprecated route, may have it on a retired one, and never on a published one.
    pub deprecation: Option<u64>,
    /// When the route stops (or stopped) answering, in whole seconds since the Unix epoch,
    /// sent as `Sunset: IMF-fixdate` (RFC 8594). Never earlier than `deprecation`; never on a
    /// published route. Default: none.
    pub sunset: Option<u64>,
    /// An `http://` or `https://` URL about the deprecation, sent as
    /// `Link: <URL>; rel="deprecation"` (RFC 9745 section 3). Only RFC 3986 characters, at
    /// most 2048 bytes; never on a published route. Default: none.
    pub deprecation_link: Option<String>,
}

/// Where a route is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteState {
    /// Served normally, with no lifecycle fields (`"published"`, the default).
    Published,
    /// Served normally; every answer carries the route's `Deprecation`, `Sunset` and `Link`
    /// fields (`"deprecated"`).
    Deprecated,
    /// Answered by the gateway with 410 `route_retired`; no upstream is contacted
    /// (`"retired"`).
    Retired,
}

impl RouteState {
    /// The state as written in the config: `"published"`, `"deprecated"` or `"retired"`.
    pub fn name(self) -> &'static str {
        match self {
            RouteState::Published => "published",
            RouteState::Deprecated => "deprecated",
            RouteState::Retired => "retired",
        }
    }
}

/// Validates every `[[route]]` table. `upstreams` are the defined upstream names.
pub(crate) fn routes(
    raw: &[Spanned<RawRoute>],
    upstreams: &[&str],
    cx: &mut Ctx<'_, '_>,
) -> Vec<Route> {
    let mut seen = Seen::default();
    let mut routes = Vec::with_capacity(raw.len());
    for route in raw {
        let route = route.get_ref();
        let path_prefix = &route.path_prefix;
        let prefix = path_prefix.get_ref();
        if !prefix.starts_with('/')
            || prefix.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            cx.problems.at(
                path_prefix.span(),
                format!(
                    "path_prefix {prefix:?} must start with '/' and hold no spaces, '?' or '#'"
                ),
            );
        }

        let host = route.host.as_ref().map(|v| route_host(v, cx));
        let upstream = &route.upstream;
        if !upstreams.contains(&upstream.get_ref().as_str()) {
            cx.problems.at(
                upstream.span(),
                format!(
                    "route names upstream {:?}, which is not defined",
                    upstream.get_ref()
                ),
            );
        }

        // Two routes with the same host and prefix: the second could never be chosen.
        let key = format!("{} {prefix}", host.as_deref().unwrap_or("*"));
        seen.unique_key(
            key,
            path_prefix.span(),
            "route for host and path_prefix",
            cx,
        );

        let lifecycle = lifecycle(route, cx);
        routes.push(Route {
            path_prefix: prefix.clone(),
            host,
            upstream: upstream.get_ref().clone(),
            state: lifecycle.state,
            deprecation: lifecycle.deprecation,
            sunset: lifecycle.sunset,
            deprecation_link: lifecycle.link,
        });
    }
    routes
}

/// A route's lifecycle keys, read and checked against each other.
struct Lifecycle {
    state: RouteState,
    deprecation: Option<u64>,
    sunset: Option<u64>,
    link: Option<String>,
}

fn lifecycle(raw: &RawRoute, cx: &mut Ctx<'_, '_>) -> Lifecycle {
    // `None` when the state is misspelled: the keys below are then not held against it.
    let state = match &raw.state {
        None => Some(RouteState::Published),
        Some(v) => state(v, cx),
    };
    let deprecation = raw
        .deprecation
        .as_ref()
        .and_then(|v| instant(v, "deprecation", cx));
    let sunset = raw.sunset.as_ref().and_then(|v| instant(v, "sunset", cx));
    let link = raw.deprecation_link.as_ref().and_then(|v| link(v, cx));

    if state == Some(RouteState::Published) {
        let given = [
            ("deprecation", raw.deprecation.as_ref().map(Spanned::span)),
            ("sunset", raw.sunset.as_ref().map(Spanned::span)),
            (
                "deprecation_link",
                raw.deprecation_link.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in given {
            if let Some(span) = span {
                let msg = format!(
                    "{key} is only for a deprecated or retired route; this one is published \
                     (set state = \"deprecated\" or remove {key})"
                );
                cx.problems.at(span, msg);
            }
        }
    }

    // RFC 9745 gives the Deprecation field no form without a date, and inventing one (the
    // load time, say) would tell clients something untrue.
    if let (Some(RouteState::Deprecated), None, Some(v)) = (state, &raw.deprecation, &raw.state) {
        cx.problems.at(
            v.span(),
            "a deprecated route needs deprecation = DATE-TIME: when it was or will be deprecated",
        );
    }

    // RFC 9745 section 4: the sunset must not come before the deprecation.
    if let (Some(from), Some(to), Some(d), Some(s)) =
        (deprecation, sunset, &raw.deprecation, &raw.sunset)
    {
        if to < from {
            let msg = format!(
                "sunset {} is before deprecation {}; it must not be earlier (RFC 9745 section 4)",
                written(s.get_ref()),
                written(d.get_ref())
            );
            cx.problems.at(s.span(), msg);
        }
    }

    Lifecycle {
        state: state.unwrap_or(RouteState::Published),
        deprecation,
        sunset,
        link,
    }
}

fn state(v: &Text, cx: &mut Ctx<'_, '_>) -> Option<RouteState> {
    let state = [
        RouteState::Published,
        RouteState::Deprecated,
        RouteState::Retired,
    ]
    .into_iter()
    .find(|state| state.name() == v.get_ref());
    if state.is_none() {
        let msg = format!(
            "state must be \"published\", \"deprecated\" or \"retired\", not {:?}",
            v.get_ref()
        );
        cx.problems.at(v.span(), msg);
    }
    state
}

/// A TOML offset date-time (or an RFC 3339 string) as whole seconds since the Unix epoch;
/// a fraction of a second is dropped.
fn instant(v: &Spanned<toml::Value>, key: &str, cx: &mut Ctx<'_, '_>) -> Option<u64> {
    let datetime = match v.get_ref() {
        toml::Value::Datetime(dt) => Some(*dt),
        toml::Value::String(text) => text.parse::<Datetime>().ok(),
        _ => None,
    };
    let Some(at) = datetime.and_then(to_system_time) else {
        let msg = format!(
            "{key} must be an RFC 3339 date and time with an offset, like 2027-01-01T00:00:00Z"
        );
        cx.problems.at(v.span(), msg);
        return None;
    };
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => Some(since.as_secs()),
        _ => {
            let msg = format!("{key} must fall in the years 1970 to 9999 (UTC)");
            cx.problems.at(v.span(), msg);
            None
        }
    }
}

/// `deprecation_link`: an absolute `http(s)://` URL that can sit between `<` and `>` in a
/// `Link` field (RFC 8288 section 3) as it is written.
fn link(v: &Text, cx: &mut Ctx<'_, '_>) -> Option<String> {
    let url = v.get_ref();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && url.len() <= MAX_LINK_BYTES
        && url.bytes().all(is_uri_byte);
    if !ok {
        let msg = format!(
            "deprecation_link {url:?} must be an http:// or https:// URL of at most \
             {MAX_LINK_BYTES} bytes, with no spaces, quotes, angle brackets or non-ASCII \
             characters (percent-encode them)"
        );
        cx.problems.at(v.span(), msg);
        return None;
    }
    Some(url.clone())
}

/// Whether `b` may appear in a URI (RFC 3986 section 2: unreserved, reserved, `%`).
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

/// A date-time value as it was written, for messages.
fn written(v: &toml::Value) -> String {
    match v {
        toml::Value::String(text) => text.clone(),
        toml::Value::Datetime(dt) => dt.to_string(),
        other => other.to_string(),
    }
}

/// A route's host, lowercased, with any `:port` removed (the port is not matched). An IPv6
/// address keeps its brackets, as it appears in a `Host` header (RFC 9110 section 7.2).
fn route_host(v: &Text, cx: &mut Ctx<'_, '_>) -> String {
    let written = v.get_ref();
    let host = match written.rsplit_once(':') {
        Some((host, port))
            if (!host.contains(':') || host.ends_with(']'))
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => written.as_str(),
    };

    let valid = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    if !valid {
        cx.problems
            .at(v.span(), format!("host {written:?} is not a host name"));
    }
    // The fully qualified form's final dot is not part of the name (as the router compares
    // it), so `a.example.` and `a.example` are one host, for the duplicate check too.
    let host = host
        .strip_suffix('.')
        .filter(|name| !name.is_empty())
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_problems, parse, problems, GATEWAY, UPSTREAM};
    use super::*;

    /// A `[[route]]` table on lines 7 and on (after `GATEWAY` and `UPSTREAM`), with `extra`
    /// lines from line 9.
    fn route(prefix: &str, extra: &str, upstream: &str) -> String {
        format!("[[route]]\npath_prefix = \"{prefix}\"\n{extra}upstream = \"{upstream}\"\n")
    }

    /// A config whose one route "/v1/" carries `extra` from line 9.
    fn with(extra: &str) -> String {
        format!("{GATEWAY}{UPSTREAM}{}", route("/v1/", extra, "up"))
    }

    #[test]
    fn route_problems() {
        assert_problems(&[
            (
                format!("{GATEWAY}{}", route("/v1/", "", "nope")),
                "c.toml:5:12: route names upstream \"nope\", which is not defined",
            ),
            (
                format!("{GATEWAY}{UPSTREAM}{}", route("v1/", "", "up")),
                "c.toml:8:15: path_prefix \"v1/\" must start with '/'",
            ),
            (
                with("host = \"a b\"\n"),
                "c.toml:9:8: host \"a b\" is not a host name",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}{}",
                    route("/v1/", "host = \"A.test\"\n", "up"),
                    route("/v1/", "host = \"a.test:80\"\n", "up")
                ),
                "c.toml:12:15: duplicate route for host and path_prefix \"a.test /v1/\"; \
                 first defined on line 8",
            ),
            (
                format!(
                    "{GATEWAY}{UPSTREAM}{}{}",
                    route("/v1/", "host = \"a.test\"\n", "up"),
                    route("/v1/", "host = \"a.test.\"\n", "up")
                ),
                "c.toml:12:15: duplicate route for host and path_prefix \"a.test /v1/\"; \
                 first defined on line 8",
            ),
        ]);

        let hosts = [
            ("Api.Example.COM", "api.example.com"),
            ("api.example.com:8443", "api.example.com"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("api.example.com.", "api.example.com"),
            ("Api.Example.COM.:8443", "api.example.com"),
        ];
        for (written, want) in hosts {
            let text = with(&format!("host = \"{written}\"\n"));
            let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.routes[0].host.as_deref(), Some(want), "{written}");
        }
        for bad in ["a.test:", "a:b:c", "[::1", "[nope]", ""] {
            let text = with(&format!("host = \"{bad}\"\n"));
            let want = format!("c.toml:9:8: host \"{bad}\" is not a host name");
            assert_eq!(problems(&text), want);
        }

        // The same prefix on different hosts, or with and without a host, is fine.
        let text = format!(
            "{GATEWAY}{UPSTREAM}{}{}",
            route("/v1/", "host = \"a.test\"\n", "up"),
            route("/v1/", "", "up")
        );
        assert_eq!(problems(&text), "ok");
    }

    #[test]
    fn lifecycle_keys_are_read() {
        let read = |extra: &str| {
            let config = parse(&with(extra)).unwrap_or_else(|e| panic!("{extra}: {e}"));
            let route = config.routes.into_iter().next().expect("one route");
            (
                route.state,
                route.deprecation,
                route.sunset,
                route.deprecation_link,
            )
        };
        assert_eq!(read(""), (RouteState::Published, None, None, None));
        assert_eq!(
            read("state = \"published\"\n"),
            (RouteState::Published, None, None, None)
        );

        let link = "https://example.com/docs/v1-sunset?lang=en#migrate";
        let deprecated = format!(
            "state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\n\
             sunset = \"2026-07-01T00:00:00+02:00\"\ndeprecation_link = \"{link}\"\n"
        );
        assert_eq!(
            read(&deprecated),
            (
                RouteState::Deprecated,
                Some(1_767_225_600),
                Some(1_782_856_800),
                Some(link.to_string())
            )
        );

        // A fraction of a second is dropped; a sunset at the deprecation itself is allowed.
        let same = "state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00.999Z\n\
                    sunset = 2026-01-01T00:00:00Z\n";
        let (_, deprecation, sunset, _) = read(same);
        assert_eq!(
            (deprecation, sunset),
            (Some(1_767_225_600), Some(1_767_225_600))
        );

        // A retired route needs no date; the latest instant an HTTP date can hold is fine.
        assert_eq!(
            read("state = \"retired\"\n"),
            (RouteState::Retired, None, None, None)
        );
        let last = read("state = \"retired\"\nsunset = 9999-12-31T23:59:59Z\n");
        assert_eq!(last.2, Some(YEAR_10000 - 1));
        let plain = read("state = \"retired\"\ndeprecation_link = \"http://docs.example\"\n");
        assert_eq!(plain.3.as_deref(), Some("http://docs.example"));
    }

    #[test]
    fn lifecycle_problems_point_at_the_value() {
        let deprecated = "state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\n";
        assert_problems(&[
            (
                with("state = \"sunset\"\n"),
                "c.toml:9:9: state must be \"published\", \"deprecated\" or \"retired\", \
                 not \"sunset\"",
            ),
            (
                with("sunset = 2026-06-01T00:00:00Z\n"),
                "c.toml:9:10: sunset is only for a deprecated or retired route; this one is \
                 published (set state = \"deprecated\" or remove sunset)",
            ),
            (
                with("state = \"published\"\ndeprecation_link = \"https://a.example\"\n"),
                "c.toml:10:20: deprecation_link is only for a deprecated or retired route",
            ),
            (
                with("deprecation = 2026-06-01T00:00:00Z\n"),
                "c.toml:9:15: deprecation is only for a deprecated or retired route",
            ),
            (
                with("state = \"deprecated\"\n"),
                "c.toml:9:9: a deprecated route needs deprecation = DATE-TIME: when it was or \
                 will be deprecated",
            ),
            (
                with("state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00\n"),
                "c.toml:10:15: deprecation must be an RFC 3339 date and time with an offset, \
                 like 2027-01-01T00:00:00Z",
            ),
            (
                with("state = \"retired\"\nsunset = 2026-01-01\n"),
                "c.toml:10:10: sunset must be an RFC 3339 date and time with an offset",
            ),
            (
                with("state = \"retired\"\nsunset = \"next spring\"\n"),
                "c.toml:10:10: sunset must be an RFC 3339 date and time with an offset",
            ),
            (
                with("state = \"retired\"\nsunset = 1700000000\n"),
                "c.toml:10:10: sunset must be an RFC 3339 date and time with an offset",
            ),
            (
                with("state = \"deprecated\"\ndeprecation = 1969-12-31T23:59:59Z\n"),
                "c.toml:10:15: deprecation must fall in the years 1970 to 9999 (UTC)",
            ),
            (
                with("state = \"retired\"\nsunset = 9999-12-31T23:59:59-00:01\n"),
                "c.toml:10:10: sunset must fall in the years 1970 to 9999 (UTC)",
            ),
            (
                with(&format!("{deprecated}sunset = 2025-12-31T23:59:59Z\n")),
                "c.toml:11:10: sunset 2025-12-31T23:59:59Z is before deprecation \
                 2026-01-01T00:00:00Z; it must not be earlier (RFC 9745 section 4)",
            ),
            (
                with(&format!(
                    "{deprecated}sunset = \"2026-01-01T00:59:59+01:00\"\n"
                )),
                "c.toml:11:10: sunset 2026-01-01T00:59:59+01:00 is before deprecation",
            ),
            (
                with("state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\nsunset = 1\n"),
                "c.toml:11:10: sunset must be an RFC 3339 date and time",
            ),
            (
                with("stat = \"retired\"\n"),
                "c.toml:9:1: unknown field `stat`, expected one of `path_prefix`, `host`,",
            ),
        ]);

        // A misspelled state is the one problem: the keys it would allow are not held
        // against it.
        let text = with("state = \"deprecatd\"\nsunset = 2026-06-01T00:00:00Z\n");
        assert_eq!(
            problems(&text),
            "c.toml:9:9: state must be \"published\", \"deprecated\" or \"retired\", not \
             \"deprecatd\""
        );

        let long = format!("https://a.example/{}", "x".repeat(MAX_LINK_BYTES));
        let bad_links = [
            "ftp://a.example",
            "https://",
            "https:///path",
            "a.example/docs",
            "https://a.example/a b",
            "https://a.example/\\\"q\\\"",
            "https://a.example/<x>",
            "https://exämple.com",
            long.as_str(),
        ];
        for url in bad_links {
            let text = with(&format!(
                "state = \"retired\"\ndeprecation_link = \"{url}\"\n"
            ));
            let got = problems(&text);
            assert!(
                got.starts_with("c.toml:10:20: deprecation_link ")
                    && got.contains("must be an http:// or https:// URL")
                    && got.lines().count() == 1,
                "{url}: {got}"
            );
        }
    }
}
