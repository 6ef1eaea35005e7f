//! Routing: the longest `path_prefix` that matches wins; at equal length a route naming the
//! request's host beats one that names none.

use crate::config::Config;

/// A compiled route table, immutable once built.
pub struct Router {
    routes: Vec<Route>,
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
}

impl Router {
    /// Compiles the routes of `config`.
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
                host: route.host.as_ref().map(|host| host.as_bytes().into()),
            })
            .collect();
        routes.sort_by_key(|route| {
            (
                std::cmp::Reverse(route.prefix.len()),
                route.host.is_none(),
                route.index,
            )
        });
        Router { routes }
    }

    /// The `path_prefix` of the route at `index` in the config (empty if there is none).
    pub fn prefix(&self, index: usize) -> &[u8] {
        self.routes
            .iter()
            .find(|route| route.index == index)
            .map_or(&[][..], |route| &route.prefix)
    }

    /// The route for a request to `path` on `host` (which may carry a port).
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes.iter().find(|route| {
            path.starts_with(&route.prefix)
                && route
                    .host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|host| host.eq_ignore_ascii_case(want)))
        })
    }
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
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"api.example:8080"), b"api.example");
        assert_eq!(strip_port(b"api.example"), b"api.example");
        assert_eq!(strip_port(b"[::1]:8080"), b"[::1]");
    }
}
