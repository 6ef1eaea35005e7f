//! Small value languages inside config strings: durations, rates, byte sizes, endpoints.
//!
//! Pure functions from text to values; no I/O, except that [`Endpoint::resolve`] calls the
//! resolver it is handed. The error messages name what was written and what would be
//! accepted, so the validator can show them as they are.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why a value string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A duration without a number, without a unit, or with an unknown unit.
    #[error("invalid duration {0:?}; write a whole number and a unit: ms, s, m or h (\"500ms\", \"10s\")")]
    Duration(String),
    /// A rate not of the form `n/s`, `n/m` or `n/h`.
    #[error("invalid rate {0:?}; write a count and a period: \"5/s\", \"100/m\" or \"1000/h\"")]
    Rate(String),
    /// A rate whose count is zero.
    #[error("rate {0:?} allows nothing; the count must be at least 1")]
    ZeroRate(String),
    /// A byte size without a number or with an unknown unit.
    #[error(
        "invalid size {0:?}; write bytes or a number and a unit: B, KB, MB, GB, KiB, MiB, GiB"
    )]
    ByteSize(String),
    /// A number too large for the value it describes.
    #[error("{0:?} is too large")]
    Overflow(String),
    /// An `https://` endpoint; TLS to upstreams does not exist yet.
    #[error("https endpoints are not supported yet; use http://")]
    Https,
    /// An endpoint that is not an `http://host[:port]` URL.
    #[error("invalid endpoint {0:?}; write http://HOST[:PORT]")]
    Endpoint(String),
    /// An endpoint with a path, query or fragment; requests keep their own path.
    #[error("endpoint {0:?} has a path; give only http://HOST[:PORT] (the request path is kept)")]
    EndpointPath(String),
    /// An endpoint host that resolved to nothing or failed to resolve.
    #[error("cannot resolve {host:?}: {reason}")]
    Resolve {
        /// The host as written.
        host: String,
        /// The resolver's error.
        reason: String,
    },
}

/// A number of events allowed per period, written `"5/s"`, `"100/m"` or `"1000/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period; at least 1.
    pub count: u64,
    /// The period: one second, one minute or one hour.
    pub per: Duration,
}

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

/// Reads a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let bad = || ValueError::Duration(text.to_string());
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| ValueError::Overflow(text.to_string()))?;
    Ok(Duration::from_millis(millis))
}

/// Reads a rate: `n/s`, `n/m`, `n/min`, `n/h` or `n/hour`, with `n >= 1`.
pub fn parse_rate(text: &str) -> Result<Rate, ValueError> {
    let bad = || ValueError::Rate(text.to_string());
    let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u64 = count
        .parse()
        .map_err(|_| ValueError::Overflow(text.to_string()))?;
    let per = match period.trim() {
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(ValueError::ZeroRate(text.to_string()));
    }
    Ok(Rate { count, per })
}

/// Reads a byte size: a whole number with an optional unit (`B`, `KB`, `MB`, `GB` are powers
/// of 1000; `KiB`, `MiB`, `GiB` powers of 1024), optionally separated by one space.
pub fn parse_byte_size(text: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::ByteSize(text.to_string());
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ValueError::Overflow(text.to_string()))
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

/// Splits leading ASCII digits from the rest: `"10ms"` gives `(10, "ms")`. `None` when there
/// are no digits or they overflow `u64`.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
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
    fn durations() {
        let good = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
        ];
        for (text, want) in good {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "s", "10", "10x", "1.5s", "-1s", "10 s", "10sec", "1h30m", "ms10",
        ];
        for text in bad {
            assert_eq!(
                parse_duration(text),
                Err(ValueError::Duration(text.to_string())),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(ValueError::Duration(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615h"),
            Err(ValueError::Overflow(_))
        ));
    }

    #[test]
    fn rates() {
        let good = [
            ("5/s", 5, 1),
            ("100/m", 100, 60),
            ("100/min", 100, 60),
            ("1000/h", 1000, 3600),
            ("1000/hour", 1000, 3600),
            (" 2 / s ", 2, 1),
        ];
        for (text, count, secs) in good {
            let want = Rate {
                count,
                per: Duration::from_secs(secs),
            };
            assert_eq!(parse_rate(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "5", "5/", "/s", "5/d", "5/sec", "-5/s", "1.5/s", "five/s", "5/s/s",
        ];
        for text in bad {
            assert_eq!(
                parse_rate(text),
                Err(ValueError::Rate(text.to_string())),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_rate("0/s"),
            Err(ValueError::ZeroRate("0/s".to_string()))
        );
        assert!(matches!(
            parse_rate("99999999999999999999/s"),
            Err(ValueError::Overflow(_))
        ));
    }

    #[test]
    fn byte_sizes() {
        let good = [
            ("0", 0),
            ("1024", 1024),
            ("1024B", 1024),
            ("10KB", 10_000),
            ("10 KiB", 10_240),
            ("10MiB", 10 << 20),
            ("3MB", 3_000_000),
            ("1GiB", 1 << 30),
            ("2GB", 2_000_000_000),
        ];
        for (text, want) in good {
            assert_eq!(parse_byte_size(text), Ok(want), "{text:?}");
        }

        let bad = [
            "", "MiB", "10mib", "10 TB", "1.5MiB", "-1", "10  MiB", "10Mb",
        ];
        for text in bad {
            assert_eq!(
                parse_byte_size(text),
                Err(ValueError::ByteSize(text.to_string())),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse_byte_size("18446744073709551615GiB"),
            Err(ValueError::Overflow(_))
        ));
    }

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
