//! Tests of the whole loader: a config using every key, the shipped example and tuning
//! files, and truncated input. Shared helpers for the per-table problem tests live here too.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The start of most test configs: lines 1 and 2.
pub(crate) const GATEWAY: &str = "[gateway]\nlisten = \"127.0.0.1:8080\"\n";

/// A valid upstream "up" on lines 3 to 6, after [`GATEWAY`].
pub(crate) const UPSTREAM: &str = "[[upstream]]\nname = \"up\"\nprovider = \"openai\"\n\
                                   endpoints = [\"http://127.0.0.1:9001\"]\n";

/// Stands in for DNS: tests never resolve names for real.
pub(crate) fn fake_dns(host: &str, port: u16) -> io::Result<SocketAddr> {
    match host {
        "provider.test" => Ok(SocketAddr::from(([10, 0, 0, 7], port))),
        _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
    }
}

/// Parses `text` as `c.toml`, relative to a directory that does not exist.
pub(crate) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let base = Path::new("/nonexistent/keygate-config-test");
    Config::parse_with_resolver(text, Path::new("c.toml"), base, &fake_dns)
}

/// Parses `text` as `c.toml` and returns its problems, one per line, or "ok".
pub(crate) fn problems(text: &str) -> String {
    match parse(text) {
        Ok(_) => "ok".to_string(),
        Err(errors) => errors.to_string(),
    }
}

/// Checks that each text has exactly one problem, starting with the expected line.
pub(crate) fn assert_problems(cases: &[(String, &str)]) {
    for (text, want) in cases {
        let got = problems(text);
        assert!(got.starts_with(want), "{text}\n got: {got}\nwant: {want}");
        assert_eq!(got.lines().count(), 1, "{text}\n got: {got}");
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("keygate-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).expect("write temp file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Some variable that is set in this process, to exercise `secret_env` without
/// `set_var` (which races with other test threads reading the environment).
fn some_env_var() -> (String, String) {
    std::env::vars()
        .find(|(name, value)| {
            let plain_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            !name.is_empty()
                && plain_name
                && !value.is_empty()
                && !value.chars().any(char::is_control)
        })
        .expect("the test process has some environment variable")
}

#[test]
fn full_config_reads_every_key() {
    let dir = TempDir::new("full");
    dir.write("provider.key", "sk-from-file\n");
    dir.write("client.key", "kg-from-file\r\n");
    dir.write("tuning.toml", "pin_cores = false\nring_entries = 2048\n");
    let (env_name, env_value) = some_env_var();
    let digest = KeySecretHash::of(b"kg-hashed").to_hex();

    let text = format!(
        r#"
[gateway]
listen = "0.0.0.0:0"
admin_listen = "127.0.0.1:9901"
admin_token_env = "KEYGATE_ADMIN_TOKEN"
workers = 8
state_dir = "./var/state"
access_log = "logs/access.log"
access_log_max_bytes = "1GiB"
access_log_keep = 10
tuning = "tuning.toml"
max_header_bytes = 32768
max_body_bytes = "1MiB"
header_timeout = "5s"
idle_timeout = "90s"
drain_timeout = "0s"
max_connections = 500
persist_interval = "250ms"
default_max_tokens = 8192

[[upstream]]
name = "llm.main"
provider = "http"
endpoints = ["http://provider.test:8000/", "http://[::1]:9001"]
connect_timeout = "500ms"
response_timeout = "3m"
pool_max_idle = 0
pool_idle_timeout = "1m"
eject_after = 5
eject_for = "1h"
key_header = "X-Api-Key"

[[upstream.key]]
id = "inline"
secret = "sk-inline"
rpm = 500
tpm = 100000
weight = 3

[[upstream.key]]
id = "env"
secret_env = "{env_name}"

[[upstream.key]]
id = "file"
secret_file = "provider.key"

[[route]]
path_prefix = "/v1/"
host = "API.Example.com:443"
upstream = "llm.main"

[[route]]
path_prefix = "/v0/"
upstream = "llm.main"
state = "deprecated"
deprecation = 2026-01-01T00:00:00Z
sunset = "2026-07-01T00:00:00Z"
deprecation_link = "https://docs.example.com/v0"

[[tenant]]
name = "acme"
rate = "50/s"
burst = 100
quota = {{ per_day = 100000 }}
tokens_per_minute = 500000
tokens_per_day = 50000000
max_concurrent = 64

[[client_key]]
id = "a"
tenant = "acme"
secret_sha256 = "{digest}"
rate = "100/m"
quota = {{ per_minute = 1, per_hour = 2, per_day = 3, per_month = 4 }}
tokens_per_minute = 20000
tokens_per_day = 1000000
max_concurrent = 4
expires = 2027-01-01T00:00:00Z
routes = ["/v1/chat/"]
models = ["gpt-4o-mini"]

[[client_key]]
id = "b"
secret_file = "client.key"
rate = "5/s"
expires = "2027-01-01T01:00:00+01:00"

[[client_key]]
id = "c"
secret = "kg-inline"
"#
    );
    let config = Config::parse_with_resolver(&text, Path::new("full.toml"), &dir.0, &fake_dns)
        .unwrap_or_else(|e| panic!("{e}"));

    let gw = &config.gateway;
    assert_eq!(gw.listen, SocketAddr::from(([0, 0, 0, 0], 0)));
    assert_eq!(
        gw.admin_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9901)))
    );
    assert_eq!(gw.admin_token_env.as_deref(), Some("KEYGATE_ADMIN_TOKEN"));
    assert_eq!(gw.workers, Workers::Count(8));
    assert_eq!(gw.state_dir, dir.0.join("var/state"));
    assert_eq!(gw.access_log, Some(dir.0.join("logs/access.log")));
    assert_eq!((gw.access_log_max_bytes, gw.access_log_keep), (1 << 30, 10));
    assert_eq!(gw.tuning_file, Some(dir.0.join("tuning.toml")));
    assert_eq!(gw.max_header_bytes, 32768);
    assert_eq!(gw.max_body_bytes, 1 << 20);
    assert_eq!(gw.header_timeout, Duration::from_secs(5));
    assert_eq!(gw.idle_timeout, Duration::from_secs(90));
    assert_eq!(gw.drain_timeout, Duration::ZERO);
    assert_eq!(gw.max_connections, 500);
    assert_eq!(gw.persist_interval, Duration::from_millis(250));
    assert_eq!(gw.default_max_tokens, 8192);
    let tuning = Tuning {
        pin_cores: false,
        ring_entries: 2048,
        ..Tuning::default()
    };
    assert_eq!(config.tuning, tuning);

    let up = &config.upstreams[0];
    assert_eq!(
        (up.name.as_str(), up.provider),
        ("llm.main", Provider::Http)
    );
    let endpoints: Vec<(String, &str, &str)> = up
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.authority.as_str(), e.url.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [
            (
                "10.0.0.7:8000".into(),
                "provider.test:8000",
                "http://provider.test:8000"
            ),
            ("[::1]:9001".into(), "[::1]:9001", "http://[::1]:9001"),
        ]
    );
    assert_eq!(up.connect_timeout, Duration::from_millis(500));
    assert_eq!(up.response_timeout, Duration::from_secs(180));
    assert_eq!(up.pool_max_idle, 0);
    assert_eq!(up.pool_idle_timeout, Duration::from_secs(60));
    assert_eq!(
        (up.eject_after, up.eject_for),
        (5, Duration::from_secs(3600))
    );
    assert_eq!(up.key_header.as_deref(), Some("x-api-key"));
    let key = |id: &str, secret: &str, rpm, tpm, weight| ProviderKeyConfig {
        id: id.into(),
        secret: Secret::new(secret),
        rpm,
        tpm,
        weight,
    };
    let keys = [
        key("inline", "sk-inline", Some(500), Some(100_000), 3),
        key("env", &env_value, None, None, 1),
        key("file", "sk-from-file", None, None, 1),
    ];
    assert_eq!(up.keys, keys);

    let route = Route {
        path_prefix: "/v1/".into(),
        host: Some("api.example.com".into()),
        upstream: "llm.main".into(),
        state: RouteState::Published,
        deprecation: None,
        sunset: None,
        deprecation_link: None,
    };
    let old = Route {
        path_prefix: "/v0/".into(),
        host: None,
        upstream: "llm.main".into(),
        state: RouteState::Deprecated,
        deprecation: Some(1_767_225_600),
        sunset: Some(1_782_864_000),
        deprecation_link: Some("https://docs.example.com/v0".into()),
    };
    assert_eq!(config.routes, [route, old]);
    let acme = Limits {
        rate: Some(RateLimit {
            rate: Rate {
                count: 50,
                per: Duration::from_secs(1),
            },
            burst: 100,
        }),
        quota: Quota {
            per_day: Some(100_000),
            ..Quota::default()
        },
        tokens_per_minute: Some(500_000),
        tokens_per_day: Some(50_000_000),
        max_concurrent: Some(64),
    };
    assert_eq!(
        config.tenants,
        [Tenant {
            name: "acme".into(),
            limits: acme,
        }]
    );

    let expires = std::time::UNIX_EPOCH + Duration::from_secs(1_798_761_600);
    let a = &config.client_keys[0];
    let want_a = ClientKeyConfig {
        id: "a".into(),
        tenant: Some("acme".into()),
        secret: KeySecretHash::of(b"kg-hashed"),
        limits: Limits {
            rate: Some(RateLimit {
                rate: Rate {
                    count: 100,
                    per: Duration::from_secs(60),
                },
                burst: 1,
            }),
            quota: Quota {
                per_minute: Some(1),
                per_hour: Some(2),
                per_day: Some(3),
                per_month: Some(4),
            },
            tokens_per_minute: Some(20000),
            tokens_per_day: Some(1_000_000),
            max_concurrent: Some(4),
        },
        expires: Some(expires),
        routes: Some(vec!["/v1/chat/".into()]),
        models: Some(vec!["gpt-4o-mini".into()]),
    };
    assert_eq!(a, &want_a);

    let b = &config.client_keys[1];
    assert_eq!(b.secret, KeySecretHash::of(b"kg-from-file"));
    assert_eq!(b.limits.rate.map(|r| r.burst), Some(5));
    assert_eq!(b.expires, Some(expires));
    let c = &config.client_keys[2];
    assert_eq!(c.secret, KeySecretHash::of(b"kg-inline"));
    assert!(c.limits.is_unlimited());
    assert_eq!(c.routes, None);
}

#[test]
fn minimal_config_gets_defaults() {
    let text = "[gateway]\nlisten = \"127.0.0.1:8080\"\n";
    let config = Config::parse(text, Path::new("etc/keygate.toml"), Path::new("etc"))
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = config.gateway;
    assert_eq!(gw.workers, Workers::Auto);
    assert_eq!(gw.state_dir, Path::new("etc/state"));
    assert_eq!(
        (gw.admin_listen, gw.access_log, gw.tuning_file),
        (None, None, None)
    );
    assert_eq!((gw.max_header_bytes, gw.max_body_bytes), (16384, 10 << 20));
    let timeouts = [gw.header_timeout, gw.idle_timeout, gw.drain_timeout];
    assert_eq!(timeouts.map(|d| d.as_secs()), [10, 60, 30]);
    assert_eq!(gw.max_connections, 10_000);
    assert_eq!(gw.persist_interval, Duration::from_secs(1));
    assert_eq!(gw.default_max_tokens, 4096);
    assert_eq!(config.tuning, Tuning::default());
    assert_eq!(config.source, Path::new("etc/keygate.toml"));
    assert!(config.upstreams.is_empty() && config.client_keys.is_empty());
}

#[test]
fn quickstart_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        Config::load(&dir.join("examples/quickstart.toml")).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        config.gateway.listen,
        SocketAddr::from(([127, 0, 0, 1], 8080))
    );
    assert_eq!(config.gateway.workers, Workers::Count(2));
    assert_eq!(config.gateway.state_dir, dir.join("examples/../state"));
    assert!(
        !config.tuning.pin_cores,
        "local tuning leaves cores unpinned"
    );
    let openai = config.upstream("openai").expect("upstream openai");
    assert_eq!(openai.keys.len(), 2);
    assert_eq!(openai.keys[1].secret.expose(), "sk-mock-2");
    let key = &config.client_keys[0];
    assert_eq!(key.secret, KeySecretHash::of(b"kg-acme-dev-0001"));
    assert_eq!(
        key.limits.rate.map(|r| (r.rate.count, r.burst)),
        Some((2, 2))
    );
}

#[test]
fn shipped_tuning_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning");
    let dedicated = Tuning::load(&dir.join("dedicated.toml")).unwrap_or_else(|e| panic!("{e}"));
    let local = Tuning::load(&dir.join("local.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(dedicated.pin_cores);
    assert!(!local.pin_cores);
}

#[test]
fn unreadable_file_is_one_problem_at_1_1() {
    let path = Path::new("/nonexistent/keygate-config-test/keygate.toml");
    let err = Config::load(path).expect_err("no such file").to_string();
    assert!(
        err.starts_with("/nonexistent/keygate-config-test/keygate.toml:1:1: cannot read: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn truncated_config_never_panics() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let quickstart =
        std::fs::read_to_string(base.join("quickstart.toml")).expect("read quickstart");
    let text = format!(
        "{quickstart}\n[[client_key]]\nid = \"x\"\nsecret_sha256 = \"{}\"\n\
         expires = 2027-01-01T00:00:00Z\nquota = {{ per_day = 10 }}\n\
         routes = [\"/v1/\"]\nmodels = [\"é\"]\n",
        KeySecretHash::of(b"x").to_hex()
    );
    let parse =
        |text: &str| Config::parse_with_resolver(text, Path::new("q.toml"), &base, &fake_dns);
    assert!(parse(&text).is_ok(), "the whole text is valid");

    // Every prefix either loads or reports at least one problem; none panics.
    for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        if let Err(errors) = parse(&text[..end]) {
            assert!(
                !errors.0.is_empty(),
                "prefix {end} failed without a problem"
            );
        }
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_not_quoted_in_the_problem() {
    let cases = [
        "[[client_key]]\nid = \"x\"\nsecret = 12345678\n",
        "[[client_key]]\nid = \"x\"\nsecret_sha256 = 12345678\n",
        "[[upstream]]\nname = \"u\"\nprovider = \"openai\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
         key = [{ id = \"a\", \"secret\" = 12345678 }]\n",
    ];
    for case in cases {
        let text = format!("{GATEWAY}{case}");
        let problems = problems(&text);
        assert!(problems.contains("(hidden)"), "{problems}");
        assert!(!problems.contains("12345678"), "{problems}");
    }
    // Other values are quoted as they were written, to help find them.
    let problems = problems(&format!(
        "{GATEWAY}[[client_key]]\nid = 12345678\nsecret = \"s\"\n"
    ));
    assert!(problems.contains("12345678"), "{problems}");
}
