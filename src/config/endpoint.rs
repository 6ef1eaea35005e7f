//! Upstream endpoints: `http://host[:port]` URLs, taken apart and resolved once at load.
//!
//! Parsing is pure; resolving goes through a [`Resolver`] the caller passes in, so the loader
//! uses the system resolver while tests and fuzzing never touch DNS. The system resolver
//! blocks, which is fine at load and never allowed on the request path.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::value::ValueError;

/// An upstream address: where to connect and what to send as `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address to connect to, resolved once at load.
    pub addr: SocketAddr,
    /// `host[:port]` exactly as written, for the `Host` header (RFC 9110 section 7.2 lets
    /// the default port be left out).
    pub authority: String,
    /// The URL as written in the config, without a trailing `/`; for logs and messages.
    pub url: String,
}

/// An endpoint URL taken apart but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Host to resolve: a name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// Port to connect to; 80 when not written.
    pub port: u16,
    /// `host[:port]` as written.
    pub authority: String,
    /// The URL as written, without a trailing `/`.
    pub url: String,
}

/// Takes apart `http://host[:port][/]`. Anything else is an error, including a path.
pub fn parse_endpoint(text: &str) -> Result<EndpointSpec, ValueError> {
    let bad = || ValueError::Endpoint(text.to_string());
    let url = text.trim();

    // The scheme is case-insensitive (RFC 3986 section 3.1).
    let scheme_end = url.find("://").ok_or_else(bad)?;
    let scheme = &url[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(ValueError::Https);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad());
    }

    let rest = &url[scheme_end + 3..];
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(ValueError::EndpointPath(text.to_string()));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }

    let (host, port) = split_host_port(authority).ok_or_else(bad)?;
    Ok(EndpointSpec {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        url: url.trim_end_matches('/').to_string(),
    })
}

impl Endpoint {
    /// Resolves `spec` with `resolve` (given the host and port) unless the host is an IP
    /// address already.
    pub fn resolve(spec: EndpointSpec, resolve: &Resolver<'_>) -> Result<Endpoint, ValueError> {
        let addr = match spec.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, spec.port),
            Err(_) => resolve(&spec.host, spec.port).map_err(|err| ValueError::Resolve {
                host: spec.host.clone(),
                reason: err.to_string(),
            })?,
        };
        Ok(Endpoint {
            addr,
            authority: spec.authority,
            url: spec.url,
        })
    }
}

/// Turns a host name and port into one address. [`system_resolver`] is the real one.
pub type Resolver<'a> = dyn Fn(&str, u16) -> io::Result<SocketAddr> + 'a;

/// Resolves with the system resolver (`getaddrinfo`), taking the first address. Blocks; call
/// it only while loading a config, never on the request path.
pub fn system_resolver(host: &str, port: u16) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;

    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses"))
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 80 and may not
/// be 0.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };

    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    (port != 0).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let good = [
            ("http://127.0.0.1:9001", "127.0.0.1", 9001, "127.0.0.1:9001"),
            (
                "http://127.0.0.1:9001/",
                "127.0.0.1",
                9001,
                "127.0.0.1:9001",
            ),
            ("HTTP://10.0.0.1", "10.0.0.1", 80, "10.0.0.1"),
            ("http://api.local:8080", "api.local", 8080, "api.local:8080"),
            ("http://[::1]:9001", "::1", 9001, "[::1]:9001"),
            ("http://[::1]", "::1", 80, "[::1]"),
        ];
        for (text, host, port, authority) in good {
            let spec = parse_endpoint(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                (spec.host.as_str(), spec.port, spec.authority.as_str()),
                (host, port, authority),
                "{text:?}"
            );
            assert!(!spec.url.ends_with('/'), "{text:?}");
        }

        let bad = [
            ("https://api.openai.com", ValueError::Https),
            ("HTTPS://x:1", ValueError::Https),
            (
                "127.0.0.1:9001",
                ValueError::Endpoint("127.0.0.1:9001".into()),
            ),
            ("ftp://x", ValueError::Endpoint("ftp://x".into())),
            ("http://", ValueError::Endpoint("http://".into())),
            ("http://:80", ValueError::Endpoint("http://:80".into())),
            ("http://x:0", ValueError::Endpoint("http://x:0".into())),
            (
                "http://x:65536",
                ValueError::Endpoint("http://x:65536".into()),
            ),
            ("http://x:", ValueError::Endpoint("http://x:".into())),
            ("http://x:y", ValueError::Endpoint("http://x:y".into())),
            ("http://u@x", ValueError::Endpoint("http://u@x".into())),
            ("http://[::1", ValueError::Endpoint("http://[::1".into())),
            (
                "http://[::1]x",
                ValueError::Endpoint("http://[::1]x".into()),
            ),
            ("http://a b", ValueError::Endpoint("http://a b".into())),
            (
                "http://x/v1",
                ValueError::EndpointPath("http://x/v1".into()),
            ),
            ("http://x?q", ValueError::EndpointPath("http://x?q".into())),
            ("http://x//", ValueError::EndpointPath("http://x//".into())),
        ];
        for (text, want) in bad {
            assert_eq!(parse_endpoint(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn endpoints_resolve_names_only() {
        let resolver = |host: &str, port: u16| -> io::Result<SocketAddr> {
            match host {
                "upstream.test" => Ok(SocketAddr::from(([10, 1, 2, 3], port))),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "unknown host")),
            }
        };
        let resolve = |text: &str| {
            let spec = parse_endpoint(text).map_err(|e| e.to_string())?;
            Endpoint::resolve(spec, &resolver).map_err(|e| e.to_string())
        };

        let ip = resolve("http://127.0.0.1:9001").map(|e| e.addr);
        assert_eq!(ip, Ok(SocketAddr::from(([127, 0, 0, 1], 9001))));
        let v6 = resolve("http://[::1]:9").map(|e| e.addr.to_string());
        assert_eq!(v6, Ok("[::1]:9".to_string()));
        let name = resolve("http://upstream.test").map(|e| (e.addr, e.authority));
        assert_eq!(
            name,
            Ok((
                SocketAddr::from(([10, 1, 2, 3], 80)),
                "upstream.test".to_string()
            ))
        );
        assert_eq!(
            resolve("http://nowhere.test:1").map(|e| e.addr),
            Err("cannot resolve \"nowhere.test\": unknown host".to_string())
        );
    }
}
