//! `[gateway]`: the listeners, client limits and timeouts, and the tuning file it names.
//!
//! Holds the typed gateway values and their validation. Paths here are joined to the config
//! file's directory; the tuning file is read here, at load, and its problems are reported
//! against its own name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{IntOrText, RawGateway, Text};
use super::tuning::{Tuning, TUNING_FILE_LIMIT};
use super::validate::{
    byte_size, duration, duration_in, duration_or_zero, int, read_limited, relative_to, Ctx,
};

/// Default `access_log_max_bytes`: 100 MiB.
const DEFAULT_ACCESS_LOG_BYTES: u64 = 100 << 20;
/// The smallest nonzero `access_log_max_bytes`: 64 KiB, one shard batch.
const MIN_ACCESS_LOG_BYTES: u64 = 64 << 10;

/// `[gateway]`: how the gateway listens and what it accepts from clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Address for client traffic (plain HTTP). Required; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address for `/metrics`, `/healthz`, `/readyz` and `/admin/*`. Default: none (no
    /// admin listener).
    pub admin_listen: Option<SocketAddr>,
    /// Name of the environment variable holding the admin bearer token. Only the name is
    /// kept; the variable is read when the admin listener starts. Default: none.
    pub admin_token_env: Option<String>,
    /// How many shards (one thread each) to run. Default: [`Workers::Auto`].
    pub workers: Workers,
    /// Directory for quota counters and key states. Default `./state`, relative to the
    /// config file's directory (already joined here).
    pub state_dir: PathBuf,
    /// Access log file, relative to the config file's directory (already joined here).
    /// Default: none (no access log).
    pub access_log: Option<PathBuf>,
    /// Size in bytes past which the access log is rotated to `PATH.1`; 0 never rotates (for
    /// logrotate with SIGUSR1). Default 100 MiB; otherwise at least 64 KiB.
    pub access_log_max_bytes: u64,
    /// Rotated access log files kept, `PATH.1` (newest) to `PATH.N`. Default 5, range
    /// 1..=1000.
    pub access_log_keep: u32,
    /// The tuning file that was loaded into [`Config::tuning`](super::Config::tuning), if one
    /// was named.
    pub tuning_file: Option<PathBuf>,
    /// Largest request head accepted, in bytes; larger gets 431. Default 16384, range
    /// 1024..=1048576.
    pub max_header_bytes: usize,
    /// Largest request body accepted, in bytes; larger gets 413. Default 10 MiB.
    pub max_body_bytes: u64,
    /// The whole request head must arrive within this. Default 10 s.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// On SIGTERM, in-flight requests get this long to finish. Default 30 s; 0 allowed.
    pub drain_timeout: Duration,
    /// Client connections each shard accepts at once. Default 10000.
    pub max_connections: usize,
    /// How often each shard writes its quota counters to `state_dir`: the most usage a crash
    /// (`kill -9`) can lose. Default 1 s, range 100 ms..=60 s.
    pub persist_interval: Duration,
    /// LLM tokens reserved for a request's completion when the request names no
    /// `max_tokens`. Default 4096, at least 1.
    pub default_max_tokens: u64,
}

/// How many shards to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One shard per available core (`"auto"`).
    Auto,
    /// Exactly this many shards, 1..=1024.
    Count(usize),
}

/// Validates `[gateway]` and loads the tuning file it names.
pub(crate) fn gateway(raw: &RawGateway, cx: &mut Ctx<'_, '_>) -> (Gateway, Tuning) {
    let listen = socket_addr(&raw.listen, cx);
    let admin_listen = raw.admin_listen.as_ref().map(|v| socket_addr(v, cx));
    if let (Some(admin), Some(v)) = (admin_listen, &raw.admin_listen) {
        if admin == listen && admin.port() != 0 {
            cx.problems
                .at(v.span(), "admin_listen must differ from listen");
        }
    }

    let admin_token_env = raw.admin_token_env.as_ref().map(|v| {
        let name = v.get_ref();
        if name.is_empty() || name.contains(['=', '\0']) {
            cx.problems.at(
                v.span(),
                format!("{name:?} is not an environment variable name"),
            );
        }
        name.clone()
    });

    let workers = match raw.workers.as_ref() {
        None => Workers::Auto,
        Some(v) => match v.get_ref() {
            IntOrText::Text(text) if text == "auto" => Workers::Auto,
            IntOrText::Int(n) if (1..=1024).contains(n) => Workers::Count(*n as usize),
            _ => {
                cx.problems.at(
                    v.span(),
                    "workers must be \"auto\" or a number from 1 to 1024",
                );
                Workers::Auto
            }
        },
    };

    let max_body_bytes = byte_size(&raw.max_body_bytes, "max_body_bytes", 10 << 20, cx);

    let tuning_file = raw.tuning.as_ref().and_then(|v| path(v, "tuning", cx));
    let tuning = match (&tuning_file, &raw.tuning) {
        (Some(file), Some(v)) => tuning_from(file, v, cx),
        _ => Tuning::default(),
    };

    let gateway = Gateway {
        listen,
        admin_listen,
        admin_token_env,
        workers,
        state_dir: match &raw.state_dir {
            Some(v) => path(v, "state_dir", cx).unwrap_or_default(),
            None => relative_to(cx.base_dir, Path::new("state")),
        },
        access_log: raw
            .access_log
            .as_ref()
            .and_then(|v| path(v, "access_log", cx)),
        access_log_max_bytes: access_log_max_bytes(raw, cx),
        access_log_keep: int(&raw.access_log_keep, "access_log_keep", 1..=1000, 5, cx),
        tuning_file,
        max_header_bytes: int(
            &raw.max_header_bytes,
            "max_header_bytes",
            1024..=1 << 20,
            16384,
            cx,
        ),
        max_body_bytes,
        header_timeout: duration(&raw.header_timeout, "header_timeout", 10, cx),
        idle_timeout: duration(&raw.idle_timeout, "idle_timeout", 60, cx),
        drain_timeout: duration_or_zero(&raw.drain_timeout, "drain_timeout", 30, cx),
        max_connections: int(
            &raw.max_connections,
            "max_connections",
            1..=1 << 30,
            10_000,
            cx,
        ),
        persist_interval: duration_in(
            &raw.persist_interval,
            "persist_interval",
            Duration::from_millis(100)..=Duration::from_secs(60),
            Duration::from_secs(1),
            cx,
        ),
        default_max_tokens: int(
            &raw.default_max_tokens,
            "default_max_tokens",
            1..=i64::MAX,
            4096,
            cx,
        ),
    };
    (gateway, tuning)
}

/// `access_log_max_bytes`: 0, or at least [`MIN_ACCESS_LOG_BYTES`].
fn access_log_max_bytes(raw: &RawGateway, cx: &mut Ctx<'_, '_>) -> u64 {
    let key = "access_log_max_bytes";
    let bytes = byte_size(&raw.access_log_max_bytes, key, DEFAULT_ACCESS_LOG_BYTES, cx);
    if let (1..MIN_ACCESS_LOG_BYTES, Some(v)) = (bytes, &raw.access_log_max_bytes) {
        // Smaller files would be rotated on nearly every batch a shard hands over.
        let msg = format!("{key} must be 0 (never rotate) or at least 64KiB, not {bytes}");
        cx.problems.at(v.span(), msg);
        return DEFAULT_ACCESS_LOG_BYTES;
    }
    bytes
}

/// Reads and validates the tuning file; an unreadable file is a problem at `written`.
fn tuning_from(file: &Path, written: &Text, cx: &mut Ctx<'_, '_>) -> Tuning {
    match read_limited(file, TUNING_FILE_LIMIT) {
        Ok(text) => Tuning::parse(&text, file).unwrap_or_else(|errors| {
            cx.problems.extend(errors);
            Tuning::default()
        }),
        Err(err) => {
            let msg = format!("cannot read tuning file {}: {err}", file.display());
            cx.problems.at(written.span(), msg);
            Tuning::default()
        }
    }
}

fn socket_addr(v: &Text, cx: &mut Ctx<'_, '_>) -> SocketAddr {
    v.get_ref().parse().unwrap_or_else(|_| {
        let msg = format!(
            "{:?} is not an IP address and port, like \"127.0.0.1:8080\"",
            v.get_ref()
        );
        cx.problems.at(v.span(), msg);
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A path from the config, joined to the config file's directory.
fn path(v: &Text, key: &str, cx: &mut Ctx<'_, '_>) -> Option<PathBuf> {
    if v.get_ref().is_empty() {
        cx.problems.at(v.span(), format!("{key} must not be empty"));
        return None;
    }
    Some(relative_to(cx.base_dir, Path::new(v.get_ref())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{assert_problems, parse, GATEWAY};

    #[test]
    fn persist_interval_and_default_max_tokens() {
        let read = |extra: &str| {
            let config = parse(&format!("{GATEWAY}{extra}")).unwrap_or_else(|e| panic!("{e}"));
            let gw = config.gateway;
            (gw.persist_interval, gw.default_max_tokens)
        };
        assert_eq!(read(""), (Duration::from_secs(1), 4096));
        let edges = "persist_interval = \"100ms\"\ndefault_max_tokens = 1\n";
        assert_eq!(read(edges), (Duration::from_millis(100), 1));
        let edges = "persist_interval = \"60s\"\ndefault_max_tokens = 200000\n";
        assert_eq!(read(edges), (Duration::from_secs(60), 200_000));
        assert_eq!(
            read("persist_interval = \"1m\"\n").0,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn access_log_rotation_settings() {
        let read = |extra: &str| {
            let config = parse(&format!("{GATEWAY}{extra}")).unwrap_or_else(|e| panic!("{e}"));
            let gw = config.gateway;
            (gw.access_log_max_bytes, gw.access_log_keep)
        };
        assert_eq!(read(""), (100 << 20, 5));
        assert_eq!(
            read(
                "access_log_max_bytes = 0
access_log_keep = 1
"
            ),
            (0, 1)
        );
        let edges = "access_log_max_bytes = \"64KiB\"\naccess_log_keep = 1000\n";
        assert_eq!(read(edges), (65_536, 1000));
    }

    #[test]
    fn problems_point_at_the_key_or_value() {
        assert_problems(&[
            (
                format!("{GATEWAY}lisen = 1\n"),
                "c.toml:3:1: unknown field `lisen`, expected one of `listen`,",
            ),
            (
                format!("{GATEWAY}max_connections = \"many\"\n"),
                "c.toml:3:19: invalid type: string \"many\", expected i64",
            ),
            (format!("{GATEWAY}idle_timeout = \"10s\n"), "c.toml:3:"),
            ("[gateway]\n".into(), "c.toml:1:1: missing field `listen`"),
            (String::new(), "c.toml:1:1: missing field `gateway`"),
            (
                format!("{GATEWAY}header_timeout = \"10x\"\n"),
                "c.toml:3:18: header_timeout: invalid duration \"10x\"; write a whole number \
                 and a unit: ms, s, m or h (\"500ms\", \"10s\")",
            ),
            (
                format!("{GATEWAY}idle_timeout = \"0s\"\n"),
                "c.toml:3:16: idle_timeout must be greater than zero",
            ),
            (
                format!("{GATEWAY}workers = \"4\"\n"),
                "c.toml:3:11: workers must be \"auto\" or a number from 1 to 1024",
            ),
            (
                format!("{GATEWAY}max_body_bytes = \"10 TB\"\n"),
                "c.toml:3:18: max_body_bytes: invalid size \"10 TB\";",
            ),
            (
                format!("{GATEWAY}admin_listen = \"127.0.0.1:8080\"\n"),
                "c.toml:3:16: admin_listen must differ from listen",
            ),
            (
                format!("{GATEWAY}state_dir = \"\"\n"),
                "c.toml:3:13: state_dir must not be empty",
            ),
            (
                format!("{GATEWAY}persist_interval = \"50ms\"\n"),
                "c.toml:3:20: persist_interval must be from 100ms to 1m, not 50ms",
            ),
            (
                format!("{GATEWAY}persist_interval = \"2m\"\n"),
                "c.toml:3:20: persist_interval must be from 100ms to 1m, not 2m",
            ),
            (
                format!("{GATEWAY}persist_interval = \"1 s\"\n"),
                "c.toml:3:20: persist_interval: invalid duration \"1 s\";",
            ),
            (
                format!("{GATEWAY}persist_interval = 1\n"),
                "c.toml:3:20: invalid type: integer `1`, expected a string",
            ),
            (
                format!("{GATEWAY}default_max_tokens = 0\n"),
                "c.toml:3:22: default_max_tokens must be at least 1, not 0",
            ),
            (
                format!("{GATEWAY}default_max_tokens = \"4k\"\n"),
                "c.toml:3:22: invalid type: string \"4k\", expected i64",
            ),
            (
                format!("{GATEWAY}access_log_max_bytes = 65535\n"),
                "c.toml:3:24: access_log_max_bytes must be 0 (never rotate) or at least 64KiB, \
                 not 65535",
            ),
            (
                format!("{GATEWAY}access_log_max_bytes = -1\n"),
                "c.toml:3:24: access_log_max_bytes: must not be negative",
            ),
            (
                format!("{GATEWAY}access_log_keep = 0\n"),
                "c.toml:3:19: access_log_keep must be from 1 to 1000, not 0",
            ),
            (
                format!("{GATEWAY}tuning = \"missing.toml\"\n"),
                "c.toml:3:10: cannot read tuning file \
                 /nonexistent/keygate-config-test/missing.toml: ",
            ),
        ]);
    }
}
