//! Routing: the longest `path_prefix` that matches wins; at equal length a route naming the
//! request's host beats one that names none.
//!
//! A [`Router`] is compiled from a config by [`Router::new`] alone and never changes: each
//! route carries its lifecycle (published, deprecated, retired) with the header bytes and
//! the 410 message that go with it, encoded here once. Changing a route's state means
//! building a new `Router` from an edited config; a route keeps its config position as its
//! id, so logs and metrics go on naming it the same way.

use std::sync::Arc;

use super::lifecycle::Lifecycle;
use super::Error;
use crate::config::{Config, RouteState};

/// A compiled route table, immutable once built.
pub struct Router {
    /// Routes in matching order: longest prefix first, host-bound before host-less.
    routes: Vec<Route>,
    /// For each config position, the route's place in `routes`.
    positions: Box<[usize]>,
}

/// One route, as the router matches it.
#[derive(Debug)]
pub struct Route {
    /// The route's position in the config, used as its id in logs and metrics.
    pub index: usize,
    /// The index of its upstream in the config.
    pub upstream: usize,
    prefix: Box<[u8]>,
    host: Option<Box<[u8]>>,
    state: RouteState,
    /// Header field lines every answer on the route carries, and a retired route's message.
    lifecycle: Lifecycle,
}

impl Route {
    /// Where the route is in its life.
    pub fn state(&self) -> RouteState {
        self.state
    }

    /// The `Deprecation`, `Sunset` and `Link` field lines (each ending in CRLF) that every
    /// answer on this route carries; empty for a published route.
    pub fn lifecycle_fields(&self) -> &[u8] {
        &self.lifecycle.fields
    }

    /// The error a retired route answers every request with; `None` for a route in service.
    pub fn retired(&self) -> Option<Error> {
        self.lifecycle
            .retired
            .as_ref()
            .map(|message| Error::RouteRetired(Arc::clone(message)))
    }
}

impl Router {
    /// Compiles the routes of `config`, lifecycle fields included.
    pub fn new(config: &Config) -> Self {
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| Route {
                index,
                upstream: config
                    .upstreams
                    .iter()
                    .position(|upstream| upstream.name == route.upstream)
                    .unwrap_or(0),
                prefix: route.path_prefix.as_bytes().into(),
                // Stored lowercase, without a final dot (the config's `route_host`).
                host: route.host.as_ref().map(|host| host.as_bytes().into()),
                state: route.state,
                lifecycle: Lifecycle::new(route),
            })
            .collect();
        routes.sort_by_key(|route| {
            (
                std::cmp::Reverse(route.prefix.len()),
                route.host.is_none(),
                route.index,
            )
        });
        let mut positions = vec![0; routes.len()].into_boxed_slice();
        for (position, route) in routes.iter().enumerate() {
            positions[route.index] = position;
        }
        Router { routes, positions }
    }

    /// The route at `index` in the config.
    pub fn at(&self, index: usize) -> Option<&Route> {
        let position = *self.positions.get(index)?;
        self.routes.get(position)
    }

    /// The `path_prefix` of the route at `index` in the config (empty if there is none).
    pub fn prefix(&self, index: usize) -> &[u8] {
        self.at(index).map_or(&[][..], |route| &route.prefix)
    }

    /// The route for a request to `path` on `host` (which may carry a port, and a DNS
    /// name's final dot).
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<&Route> {
        let host = host.map(|host| name_of(strip_port(host)));
        self.routes.iter().find(|route| {
            path.starts_with(&route.prefix)
                && route
                    .host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|host| host.eq_ignore_ascii_case(want)))
        })
    }
}

/// A host name without the final dot of its fully qualified form: `api.example.` and
/// `api.example` name the same host, and a route for one serves the other.
fn name_of(host: &[u8]) -> &[u8] {
    host.strip_suffix(b".").unwrap_or(host)
}

/// The host without its `:port` (keeping IPv6 literals whole).
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end]);
    }
    host.iter()
        .rposition(|&b| b == b':')
        .map_or(host, |colon| &host[..colon])
}

/// Whether a path holds a `.` or `..` segment, plainly or percent-encoded. Such paths are
/// refused: the upstream would resolve them (RFC 3986 §5.2.4) to a path the route check never
/// saw.
pub fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').skip(1).any(|segment| {
        let mut rest = segment;
        let mut dots = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        let table: &[(&[u8], bool)] = &[
            (b"/v1/chat", false),
            (b"/v1/../admin", true),
            (b"/v1/./x", true),
            (b"/v1/%2e%2E/admin", true),
            (b"/v1/.%2e", true),
            (b"/v1/...", false),
            (b"/v1/.well-known", false),
            (b"/v1/..", true),
            (b"/", false),
        ];
        for (path, expected) in table {
            assert_eq!(
                has_dot_segment(path),
                *expected,
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn a_host_route_serves_its_name_with_or_without_the_final_dot() {
        let router = router(
            "[[route]]\npath_prefix = \"/\"\nhost = \"internal.example\"\nupstream = \"up\"\n\
             [[route]]\npath_prefix = \"/\"\nhost = \"dotted.example.\"\nupstream = \"up\"\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"up\"\n",
        );
        let index = |host: &[u8]| router.route(Some(host), b"/v1/x").map(|route| route.index);
        for host in [
            &b"internal.example"[..],
            b"internal.example.",
            b"INTERNAL.example.:443",
        ] {
            assert_eq!(index(host), Some(0), "{}", String::from_utf8_lossy(host));
        }
        for host in [&b"dotted.example"[..], b"dotted.example.:8080"] {
            assert_eq!(index(host), Some(1), "{}", String::from_utf8_lossy(host));
        }
        // One dot is the fully qualified form; two are another name.
        assert_eq!(index(b"internal.example.."), Some(2));
        assert_eq!(index(b"other.example"), Some(2));
    }

    /// A config with the given `[[route]]` tables (TOML) in front of one upstream.
    fn router(routes: &str) -> Router {
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"up\"\n\
             provider = \"http\"\nendpoints = [\"http://127.0.0.1:9\"]\n{routes}"
        );
        let path = std::path::Path::new("r.toml");
        let config = Config::parse(&text, path, path).unwrap_or_else(|e| panic!("{e}"));
        Router::new(&config)
    }

    #[test]
    fn routes_carry_their_lifecycle() {
        let router = router(
            "[[route]]\npath_prefix = \"/\"\nupstream = \"up\"\n\
             [[route]]\npath_prefix = \"/v1/old/\"\nupstream = \"up\"\n\
             state = \"retired\"\nsunset = 2026-06-01T00:00:00Z\n\
             [[route]]\npath_prefix = \"/v1/\"\nupstream = \"up\"\n\
             state = \"deprecated\"\ndeprecation = 2026-01-01T00:00:00Z\n",
        );
        let published = router.route(None, b"/v2/x").expect("route /");
        assert_eq!(
            (published.index, published.state()),
            (0, RouteState::Published)
        );
        assert_eq!(published.lifecycle_fields(), b"");
        assert!(published.retired().is_none());

        let deprecated = router.route(None, b"/v1/chat").expect("route /v1/");
        assert_eq!(
            (deprecated.index, deprecated.state()),
            (2, RouteState::Deprecated)
        );
        assert_eq!(
            deprecated.lifecycle_fields(),
            b"Deprecation: @1767225600\r\n"
        );
        assert!(deprecated.retired().is_none());

        let retired = router.route(None, b"/v1/old/x").expect("route /v1/old/");
        assert_eq!((retired.index, retired.state()), (1, RouteState::Retired));
        assert_eq!(
            retired.lifecycle_fields(),
            b"Sunset: Mon, 01 Jun 2026 00:00:00 GMT\r\n"
        );
        let error = retired.retired().expect("a retired route answers 410");
        assert_eq!(
            error.status(),
            Some((410, "route_retired", "invalid_request_error"))
        );
        assert_eq!(
            error.to_string(),
            "the route /v1/old/ is retired (sunset Mon, 01 Jun 2026 00:00:00 GMT)"
        );

        // Config positions find the same routes, whatever order matching uses.
        for index in 0..3 {
            assert_eq!(router.at(index).map(|route| route.index), Some(index));
        }
        assert!(router.at(3).is_none());
        assert_eq!(router.prefix(1), b"/v1/old/");
        assert_eq!(router.prefix(3), b"");
    }

    #[test]
    fn a_router_can_be_built_elsewhere_and_sent_to_a_shard() {
        fn send_and_share<T: Send + Sync>() {}
        send_and_share::<Router>();
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"api.example:8080"), b"api.example");
        assert_eq!(strip_port(b"api.example"), b"api.example");
        assert_eq!(strip_port(b"[::1]:8080"), b"[::1]");
    }
}
