//! A route's lifecycle on the wire: the `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and
//! `Link` fields a deprecated route adds to every answer, and the message of a retired
//! route's 410.
//!
//! Everything here runs once per route when a [`Router`](super::Router) is built; the request
//! path only copies the bytes made here. Sans-IO: config values in, bytes out.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{self, RouteState};

/// The last second an IMF-fixdate can write, 9999-12-31T23:59:59Z; later dates are written
/// as this one (a validated config never holds them).
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// What a route says about its lifecycle, encoded for the wire.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    /// Complete field lines, each ending in CRLF, added to every answer on the route; empty
    /// for a published route.
    pub(super) fields: Box<[u8]>,
    /// The message of the 410 a retired route answers with; `None` unless retired. Shared,
    /// so the error that carries it costs a reference count, not a copy.
    pub(super) retired: Option<Arc<str>>,
}

impl Lifecycle {
    /// Encodes the lifecycle of `route`. A published route says nothing, whatever dates an
    /// (edited) config gives it; a deprecated or retired one sends each field it has a value
    /// for.
    pub(super) fn new(route: &config::Route) -> Lifecycle {
        if route.state == RouteState::Published {
            return Lifecycle::default();
        }
        let retired = (route.state == RouteState::Retired).then(|| retired_message(route).into());
        Lifecycle {
            fields: fields(route).into_boxed_slice(),
            retired,
        }
    }
}

/// `Deprecation: @SECONDS`, `Sunset: IMF-fixdate` and `Link: <URL>; rel="deprecation"`, for
/// the values `route` has.
fn fields(route: &config::Route) -> Vec<u8> {
    let mut out = Vec::new();
    // RFC 9745 section 2.1: an sf-date, `@` and the seconds since the epoch.
    if let Some(at) = route.deprecation {
        out.extend_from_slice(b"Deprecation: @");
        out.extend_from_slice(itoa::Buffer::new().format(at).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 8594 section 3: an HTTP-date, written in its preferred IMF-fixdate form.
    if let Some(at) = route.sunset {
        out.extend_from_slice(b"Sunset: ");
        out.extend_from_slice(http_date(at).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9745 section 3: the `deprecation` relation. The URL holds only RFC 3986
    // characters (config validation sees to it), so it needs no escaping between < and >.
    if let Some(link) = &route.deprecation_link {
        out.extend_from_slice(b"Link: <");
        out.extend_from_slice(link.as_bytes());
        out.extend_from_slice(b">; rel=\"deprecation\"\r\n");
    }
    out
}

/// The message of a retired route's 410: its path prefix (and host), its sunset date and
/// its deprecation link, when it has them.
fn retired_message(route: &config::Route) -> String {
    let mut message = format!("the route {} ", route.path_prefix);
    if let Some(host) = &route.host {
        message.push_str(&format!("on host {host} "));
    }
    message.push_str("is retired");
    if let Some(at) = route.sunset {
        message.push_str(&format!(" (sunset {})", http_date(at)));
    }
    if let Some(link) = &route.deprecation_link {
        message.push_str(&format!("; see {link}"));
    }
    message
}

/// `secs` since the epoch as an IMF-fixdate (RFC 9110 section 5.6.7), such as
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs.min(LAST_HTTP_DATE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(state: RouteState) -> config::Route {
        config::Route {
            path_prefix: "/v1/legacy/".into(),
            host: None,
            upstream: "up".into(),
            state,
            deprecation: None,
            sunset: None,
            deprecation_link: None,
        }
    }

    fn text(lifecycle: &Lifecycle) -> &str {
        std::str::from_utf8(&lifecycle.fields).expect("ASCII fields")
    }

    #[test]
    fn fields_of_each_state() {
        let full = |state| config::Route {
            deprecation: Some(1_688_169_599),
            sunset: Some(1_719_791_999),
            deprecation_link: Some("https://docs.example/v1?x=1#y".into()),
            ..route(state)
        };
        let all = "Deprecation: @1688169599\r\n\
                   Sunset: Sun, 30 Jun 2024 23:59:59 GMT\r\n\
                   Link: <https://docs.example/v1?x=1#y>; rel=\"deprecation\"\r\n";

        let published = Lifecycle::new(&full(RouteState::Published));
        assert_eq!(text(&published), "");
        assert_eq!(published.retired, None);

        let deprecated = Lifecycle::new(&full(RouteState::Deprecated));
        assert_eq!(text(&deprecated), all);
        assert_eq!(deprecated.retired, None);

        let retired = Lifecycle::new(&full(RouteState::Retired));
        assert_eq!(text(&retired), all);
        assert_eq!(
            retired.retired.as_deref(),
            Some(
                "the route /v1/legacy/ is retired (sunset Sun, 30 Jun 2024 23:59:59 GMT); \
                 see https://docs.example/v1?x=1#y"
            )
        );
    }

    #[test]
    fn only_the_values_given_are_sent() {
        // Deprecation, sunset, link, and the fields they make.
        type Case = (Option<u64>, Option<u64>, Option<&'static str>, &'static str);
        let table: [Case; 5] = [
            (None, None, None, ""),
            (Some(0), None, None, "Deprecation: @0\r\n"),
            (
                None,
                Some(0),
                None,
                "Sunset: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
            ),
            (
                None,
                Some(LAST_HTTP_DATE + 1_000),
                None,
                "Sunset: Fri, 31 Dec 9999 23:59:59 GMT\r\n",
            ),
            (
                None,
                None,
                Some("http://a.example"),
                "Link: <http://a.example>; rel=\"deprecation\"\r\n",
            ),
        ];
        for (deprecation, sunset, link, want) in table {
            let route = config::Route {
                deprecation,
                sunset,
                deprecation_link: link.map(String::from),
                ..route(RouteState::Deprecated)
            };
            assert_eq!(text(&Lifecycle::new(&route)), want);
        }
    }

    #[test]
    fn a_retired_message_names_what_it_has() {
        let bare = Lifecycle::new(&route(RouteState::Retired));
        assert_eq!(text(&bare), "");
        assert_eq!(
            bare.retired.as_deref(),
            Some("the route /v1/legacy/ is retired")
        );

        let hosted = config::Route {
            host: Some("api.example".into()),
            sunset: Some(1_780_272_000),
            ..route(RouteState::Retired)
        };
        assert_eq!(
            Lifecycle::new(&hosted).retired.as_deref(),
            Some(
                "the route /v1/legacy/ on host api.example is retired \
                 (sunset Mon, 01 Jun 2026 00:00:00 GMT)"
            )
        );
    }
}
