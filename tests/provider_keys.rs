//! Provider key pools, end to end with the real binary: where keys go, cooldowns for as long
//! as the provider says (in each form it says it), retries on a sibling key, what is never
//! retried, all keys resting, waiting for a key, fallbacks, and states across a restart.
//!
//! The provider here is scripted, so each rule can be pinned to one exact answer; the mock
//! provider's own per-key limits are exercised in `provider_keys_mock.rs`.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// One request as the scripted provider received it.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    key: String,
    seen: Seen,
}

/// A provider's answer: status, extra fields, body.
type Answer = (u16, Vec<(String, String)>, String);

/// A provider scripted per key: `answer(key, n, request)` answers the `n`-th request (from 0)
/// that carried `key`.
struct FakeProvider {
    upstream: ScriptedUpstream,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeProvider {
    fn start<F>(answer: F) -> FakeProvider
    where
        F: Fn(&str, usize, &Seen) -> Answer + Send + Sync + 'static,
    {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let record = Arc::clone(&calls);
        let upstream = ScriptedUpstream::start(move |mut stream: TcpStream, _| {
            use std::io::Write;
            let mut carry = Vec::new();
            while let Some(seen) = read_seen(&mut stream, &mut carry) {
                let key = key_of(&seen);
                let n = {
                    let mut counts = counts.lock().unwrap();
                    let n = counts.entry(key.clone()).or_insert(0);
                    *n += 1;
                    *n - 1
                };
                let (status, fields, body) = answer(&key, n, &seen);
                record.lock().unwrap().push(Call {
                    at: Instant::now(),
                    key,
                    seen,
                });
                let mut response =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (name, value) in fields {
                    response += &format!("{name}: {value}\r\n");
                }
                response += "\r\n";
                response += &body;
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
        FakeProvider { upstream, calls }
    }

    fn addr(&self) -> SocketAddr {
        self.upstream.addr
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// When each request carrying `key` arrived.
    fn times_of(&self, key: &str) -> Vec<Instant> {
        self.calls()
            .iter()
            .filter(|call| call.key == key)
            .map(|call| call.at)
            .collect()
    }
}

/// The provider key a request carried, in any provider's header.
fn key_of(seen: &Seen) -> String {
    if let Some(auth) = seen.values("authorization").first() {
        return auth.strip_prefix("Bearer ").unwrap_or(auth).to_string();
    }
    for name in ["x-api-key", "x-goog-api-key", "x-key"] {
        if let Some(key) = seen.values(name).first() {
            return key.to_string();
        }
    }
    String::new()
}

fn ok() -> Answer {
    (200, vec![], "{\"ok\":true}".into())
}

fn throttled(fields: &[(&str, &str)]) -> Answer {
    let fields = fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (
        429,
        fields,
        "{\"error\":{\"code\":\"rate_limit_exceeded\"}}".into(),
    )
}

/// An `[[upstream]]` called `name` of `provider` at `addr`, with `extra` settings and one key
/// `id = secret` per pair.
fn pool_upstream(
    name: &str,
    provider: &str,
    addr: SocketAddr,
    extra: &str,
    keys: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "[[upstream]]\nname = \"{name}\"\nprovider = \"{provider}\"\n\
         endpoints = [\"http://{addr}\"]\n{extra}\n"
    );
    for (id, secret) in keys {
        text += &format!("[[upstream.key]]\nid = \"{id}\"\nsecret = \"{secret}\"\n");
    }
    text + "\n"
}

/// A gateway with `workers` shards routing everything to the upstream `up`, defined by
/// `upstreams` (with any fallbacks), and `extra` gateway settings.
fn start(workers: usize, extra: &str, upstreams: &str) -> Gateway {
    let config = format!(
        "{}{upstreams}{}",
        gateway_section(workers, extra),
        route_section("/", None, "up")
    );
    Gateway::start(&config)
}

fn post(addr: SocketAddr) -> Response {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(addr, request.as_bytes())
}

/// Sends `count` requests over `connections` parallel connections; returns the statuses.
fn burst(addr: SocketAddr, connections: usize, count: usize) -> Vec<u16> {
    let per = count / connections;
    let threads: Vec<_> = (0..connections)
        .map(|_| thread::spawn(move || (0..per).map(|_| post(addr).status).collect::<Vec<_>>()))
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn keys_go_in_the_header_each_provider_expects_and_never_into_a_log() {
    let provider = FakeProvider::start(|_, _, _| ok());
    let cases = [
        ("openai", "", "authorization", "Bearer sk-openai-secret"),
        ("anthropic", "", "x-api-key", "sk-openai-secret"),
        ("gemini", "", "x-goog-api-key", "sk-openai-secret"),
        (
            "http",
            "key_header = \"X-Key\"",
            "x-key",
            "sk-openai-secret",
        ),
    ];
    for (kind, extra, field, value) in cases {
        let upstream = pool_upstream(
            "up",
            kind,
            provider.addr(),
            extra,
            &[("main", "sk-openai-secret")],
        );
        let gateway = start(1, "", &upstream);
        // The client's own credentials never reach the provider next to the pool's key.
        let request = "POST /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer client-own\r\n\
                       x-api-key: client-own\r\nContent-Length: 2\r\n\r\n{}";
        let response = roundtrip(gateway.addr(), request.as_bytes());
        assert_eq!(response.status, 200, "{kind}");
        let seen = provider.calls().pop().expect("a call").seen;
        assert_eq!(seen.values(field), vec![value], "{kind}: {}", seen.head);
        assert!(!seen.head.contains("client-own"), "{kind}: {}", seen.head);
        if kind == "anthropic" {
            assert_eq!(seen.values("anthropic-version"), vec!["2023-06-01"]);
        }
        drop(gateway);
    }

    // A client that names its Anthropic version keeps it.
    let upstream = pool_upstream("up", "anthropic", provider.addr(), "", &[("main", "sk-a")]);
    let gateway = start(1, "", &upstream);
    let request = "POST /v1/messages HTTP/1.1\r\nHost: gw\r\nanthropic-version: 2099-01-01\r\n\
                   Content-Length: 2\r\n\r\n{}";
    assert_eq!(roundtrip(gateway.addr(), request.as_bytes()).status, 200);
    let seen = provider.calls().pop().expect("a call").seen;
    assert_eq!(seen.values("anthropic-version"), vec!["2099-01-01"]);
}

/// Checks that once the first request with `key` was refused, no request with it arrived
/// until `rest` later (less `slack` for clock granularity). Requests other shards had
/// already sent when the refusal came back (within `IN_FLIGHT` of it) are not retries.
/// Returns when the key was first tried after its rest.
fn assert_rested(provider: &FakeProvider, key: &str, rest: Duration, slack: Duration) -> Duration {
    const IN_FLIGHT: Duration = Duration::from_millis(100);
    let times = provider.times_of(key);
    let first = times[0];
    let later: Vec<Duration> = times
        .iter()
        .map(|&t| t - first)
        .filter(|&since| since > IN_FLIGHT)
        .collect();
    assert!(!later.is_empty(), "{key} was not tried again: {times:?}");
    assert!(
        later[0] + slack >= rest,
        "{key} was tried again after {:?}, before its {rest:?} rest",
        later[0]
    );
    later[0]
}

/// Runs traffic through a gateway whose key `a` is always answered with `refusal` and `b`
/// with 200, for `during`, and checks every client got 200 (the sibling took over) and that
/// `a` rested at least `rest` between tries on every shard.
fn cools_for(
    refusal: impl Fn() -> Answer + Send + Sync + 'static,
    rest: Duration,
    during: Duration,
) {
    cools_for_provider("openai", refusal, rest, during)
}

fn cools_for_provider(
    kind: &str,
    refusal: impl Fn() -> Answer + Send + Sync + 'static,
    rest: Duration,
    during: Duration,
) {
    let provider =
        FakeProvider::start(move |key, _, _| if key == "sk-a" { refusal() } else { ok() });
    let upstream = pool_upstream(
        "up",
        kind,
        provider.addr(),
        "strategy = \"round_robin\"",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(2, "", &upstream);
    let until = Instant::now() + during;
    let mut statuses = Vec::new();
    while Instant::now() < until {
        statuses.extend(burst(gateway.addr(), 4, 8));
        thread::sleep(Duration::from_millis(50));
    }
    assert!(statuses.iter().all(|&s| s == 200), "statuses: {statuses:?}");
    let back = assert_rested(&provider, "sk-a", rest, Duration::from_millis(20));
    // And it was tried again once the rest was over, without waiting much longer.
    assert!(
        back < rest + Duration::from_millis(1_500),
        "back after {back:?}"
    );
}

#[test]
fn a_key_rests_for_retry_after_seconds_on_every_shard_and_comes_back() {
    cools_for(
        || throttled(&[("retry-after", "2")]),
        Duration::from_secs(2),
        Duration::from_secs(4),
    );
}

#[test]
fn a_key_rests_until_a_retry_after_date() {
    // An HTTP-date has whole seconds: the rest ends at the next second boundary at least
    // two seconds on, so it lasts more than one second.
    cools_for(
        || {
            let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
            throttled(&[("retry-after", &date)])
        },
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
}

#[test]
fn a_key_rests_for_retry_after_ms() {
    cools_for(
        || throttled(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
        Duration::from_millis(1_500),
        Duration::from_secs(3),
    );
}

#[test]
fn a_key_rests_until_the_openai_reset_of_its_exhausted_window() {
    cools_for(
        || {
            throttled(&[
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1.8s"),
            ])
        },
        Duration::from_millis(1_800),
        Duration::from_secs(4),
    );
}

#[test]
fn a_key_rests_until_the_anthropic_reset_of_its_exhausted_window() {
    // The reset timestamp has whole seconds, like Anthropic's.
    cools_for_provider(
        "anthropic",
        || {
            let at = SystemTime::now() + Duration::from_secs(3);
            let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            let reset = rfc3339(secs);
            throttled(&[
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", &reset),
            ])
        },
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp.
fn rfc3339(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[test]
fn all_keys_resting_gives_the_soonest_wait_and_honouring_it_succeeds() {
    let provider = FakeProvider::start(|key, n, _| match (key, n) {
        ("sk-a", _) => throttled(&[("retry-after", "30")]),
        ("sk-b", 0) => throttled(&[("retry-after", "2")]),
        _ => ok(),
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(1, "", &upstream);

    // Both keys are tried and refused: the provider's 429 would name 30 s or 2 s; the
    // client hears of the sooner, from the gateway, in the contract's shape.
    let refused = post(gateway.addr());
    assert_error(&refused, 429, "keys_temporarily_exhausted");
    let seconds: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let millis: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    assert_eq!(seconds, 2, "{}", refused.raw_head);
    assert!((1_900..=2_000).contains(&millis), "retry-after-ms {millis}");
    assert_eq!(provider.calls().len(), 2);

    // Until then nothing is sent upstream at all.
    let again = post(gateway.addr());
    assert_error(&again, 429, "keys_temporarily_exhausted");
    assert_eq!(provider.calls().len(), 2);

    thread::sleep(Duration::from_millis(millis));
    assert_eq!(post(gateway.addr()).status, 200);
    assert_eq!(provider.times_of("sk-b").len(), 2);
}

#[test]
fn a_400_from_upstream_is_returned_not_retried() {
    let provider = FakeProvider::start(|_, _, _| {
        (
            400,
            vec![],
            "{\"error\":{\"message\":\"bad model\"}}".into(),
        )
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(1, "", &upstream);
    let response = post(gateway.addr());
    assert_eq!(response.status, 400);
    assert!(response.body_text().contains("bad model"));
    assert_eq!(provider.calls().len(), 1);
    // The key stays in use: a 400 is about the request, not the key.
    assert_eq!(post(gateway.addr()).status, 400);
    assert_eq!(provider.calls().len(), 2);
}

#[test]
fn a_5xx_from_upstream_is_returned_not_retried() {
    let provider = FakeProvider::start(|_, _, _| (503, vec![], "overloaded".into()));
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(1, "", &upstream);
    assert_eq!(post(gateway.addr()).status, 503);
    assert_eq!(provider.calls().len(), 1);
}

#[test]
fn a_refused_key_is_disabled_and_its_request_goes_to_a_sibling() {
    let provider = FakeProvider::start(|key, _, _| match key {
        "sk-revoked" => (
            401,
            vec![],
            "{\"error\":{\"message\":\"Incorrect API key provided: sk-re***ked\"}}".into(),
        ),
        _ => ok(),
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "strategy = \"round_robin\"",
        &[("revoked", "sk-revoked"), ("good", "sk-good")],
    );
    let gateway = start(2, "", &upstream);
    let statuses = burst(gateway.addr(), 4, 40);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // Disabled for every shard by its first refusal: only requests already on their way
    // when it came back used it, none after.
    let times = provider.times_of("sk-revoked");
    assert!(
        times
            .iter()
            .all(|&t| t - times[0] < Duration::from_millis(100)),
        "revoked key tried later: {times:?}"
    );
    let before = times.len();
    burst(gateway.addr(), 2, 10);
    assert_eq!(provider.times_of("sk-revoked").len(), before);

    let log = gateway.process.log_lines().join("\n");
    assert!(log.contains("provider refused a key"), "{log}");
    assert!(log.contains("revoked"), "the key id is named: {log}");
    assert!(
        !log.contains("sk-revoked") && !log.contains("sk-good"),
        "a secret was logged: {log}"
    );
}

#[test]
fn a_request_every_key_refuses_disables_none_and_gets_a_gateway_error() {
    // The provider forbids one kind of request (a model the account may not use, say) for
    // every key; a client sending it must not take the pool down.
    let provider = FakeProvider::start(|_, _, seen| match seen.has("x-forbidden") {
        true => (
            403,
            vec![],
            "{\"error\":{\"message\":\"key sk-on***ly may not use this model\"}}".into(),
        ),
        false => ok(),
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "",
        &[("one", "sk-one"), ("two", "sk-two")],
    );
    let gateway = start(2, "", &upstream);
    let body = r#"{"model":"forbidden"}"#;
    let forbidden = format!(
        "POST /v1/x HTTP/1.1\r\nHost: gw\r\nx-forbidden: 1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..5 {
        let refused = roundtrip(gateway.addr(), forbidden.as_bytes());
        // The provider's body, which may quote part of a key, is not passed on.
        assert_error(&refused, 502, "upstream_error");
        assert!(
            !refused.body_text().contains("sk-"),
            "{}",
            refused.body_text()
        );
    }
    // Each was tried on both keys, and neither was disabled.
    assert_eq!(provider.times_of("sk-one").len(), 5);
    assert_eq!(provider.times_of("sk-two").len(), 5);
    let statuses = burst(gateway.addr(), 2, 10);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(provider.times_of("sk-one").len() > 5 && provider.times_of("sk-two").len() > 5);

    // A pool of one key cannot tell, so it never disables its key either.
    let upstream = pool_upstream("up", "openai", provider.addr(), "", &[("only", "sk-only")]);
    let gateway = start(1, "", &upstream);
    assert_error(
        &roundtrip(gateway.addr(), forbidden.as_bytes()),
        502,
        "upstream_error",
    );
    assert_eq!(post(gateway.addr()).status, 200);
}

#[test]
fn without_a_retry_a_refused_key_gets_a_gateway_error() {
    let provider = FakeProvider::start(|_, _, _| {
        (
            401,
            vec![],
            "{\"error\":{\"message\":\"Incorrect API key provided: sk-on***ly\"}}".into(),
        )
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "retry_attempts = 1",
        &[("one", "sk-one"), ("two", "sk-two")],
    );
    let gateway = start(1, "", &upstream);
    let refused = post(gateway.addr());
    assert_error(&refused, 502, "upstream_error");
    assert!(
        !refused.body_text().contains("sk-"),
        "{}",
        refused.body_text()
    );
    assert_eq!(provider.calls().len(), 1);
}

#[test]
fn without_retries_left_the_providers_429_is_passed_through() {
    let provider = FakeProvider::start(|_, _, _| throttled(&[("retry-after", "7")]));
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "retry_attempts = 1",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(1, "", &upstream);
    let response = post(gateway.addr());
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert!(response.body_text().contains("rate_limit_exceeded"));
    assert_eq!(provider.calls().len(), 1);
}

#[test]
fn a_body_larger_than_retry_body_max_is_not_retried() {
    let provider = FakeProvider::start(|key, _, _| match key {
        "sk-a" => throttled(&[("retry-after", "60")]),
        _ => ok(),
    });
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "strategy = \"round_robin\"\nretry_body_max = 16",
        &[("a", "sk-a"), ("b", "sk-b")],
    );
    let gateway = start(1, "", &upstream);
    // Round robin starts with a: the 429 cannot be retried with a streamed body.
    let response = post(gateway.addr());
    assert_eq!(response.status, 429);
    assert_eq!(provider.calls().len(), 1);
    // The next goes to b, and the key a rests.
    assert_eq!(post(gateway.addr()).status, 200);
    assert_eq!(post(gateway.addr()).status, 200);
    assert_eq!(provider.times_of("sk-a").len(), 1);
}

/// A pool of one key that the provider refuses the first time for `retry_after` seconds and
/// accepts from then on, in front of a gateway whose requests wait up to `key_wait`.
fn waiting_for_one_key(retry_after: &'static str, key_wait: &str) -> (FakeProvider, Gateway) {
    let provider = FakeProvider::start(move |_, n, _| match n {
        0 => throttled(&[("retry-after", retry_after)]),
        _ => ok(),
    });
    let extra = format!("key_wait = \"{key_wait}\"");
    let upstream = pool_upstream("up", "openai", provider.addr(), &extra, &[("a", "sk-a")]);
    let gateway = start(1, "", &upstream);
    (provider, gateway)
}

#[test]
fn a_request_may_wait_for_a_key_to_come_back() {
    let (provider, gateway) = waiting_for_one_key("1", "3s");
    let started = Instant::now();
    let response = post(gateway.addr());
    assert_eq!(response.status, 200, "{}", response.raw_head);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(provider.calls().len(), 2);

    // A wait longer than key_wait fails at once.
    let provider = FakeProvider::start(|_, _, _| throttled(&[("retry-after", "20")]));
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "key_wait = \"1s\"",
        &[("a", "sk-a")],
    );
    let gateway = start(1, "", &upstream);
    let started = Instant::now();
    assert_error(&post(gateway.addr()), 429, "keys_temporarily_exhausted");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_exhausted_or_failing_upstream_falls_back_in_order() {
    let primary = FakeProvider::start(|_, _, _| throttled(&[("retry-after", "30")]));
    let second = FakeProvider::start(|_, _, _| ok());
    let upstreams = pool_upstream(
        "up",
        "openai",
        primary.addr(),
        "fallbacks = [\"dead\", \"second\"]",
        &[("a", "sk-a")],
    ) + &pool_upstream("dead", "openai", dead_addr(), "", &[("d", "sk-d")])
        + &pool_upstream("second", "openai", second.addr(), "", &[("s", "sk-s")]);
    let gateway = start(1, "", &upstreams);
    for _ in 0..3 {
        assert_eq!(post(gateway.addr()).status, 200);
    }
    assert_eq!(primary.calls().len(), 1, "the resting primary is skipped");
    assert_eq!(second.calls().len(), 3);
    assert_eq!(second.calls()[0].key, "sk-s");
}

#[test]
fn a_failure_before_any_response_byte_is_retried_on_another_endpoint() {
    // One endpoint accepts and closes every connection without answering.
    let closer = ScriptedUpstream::start(|stream, _| drop(stream));
    let good = FakeProvider::start(|_, _, _| ok());
    let upstream = format!(
        "[[upstream]]\nname = \"up\"\nprovider = \"openai\"\n\
         endpoints = [\"http://{}\", \"http://{}\"]\n\n\
         [[upstream.key]]\nid = \"a\"\nsecret = \"sk-a\"\n\n",
        closer.addr,
        good.addr()
    );
    let gateway = start(1, "", &upstream);
    for _ in 0..4 {
        assert_eq!(post(gateway.addr()).status, 200);
    }
    assert_eq!(good.calls().len(), 4);
}

#[test]
fn key_states_survive_a_restart() {
    let provider = FakeProvider::start(|key, _, _| match key {
        "sk-a" => throttled(&[("retry-after", "120")]),
        "sk-bad" => (403, vec![], "{}".into()),
        _ => ok(),
    });
    let state = TempDir::new("key-states");
    let extra = format!("state_dir = {:?}", state.0.display().to_string());
    let upstream = pool_upstream(
        "up",
        "openai",
        provider.addr(),
        "strategy = \"round_robin\"",
        &[("a", "sk-a"), ("bad", "sk-bad"), ("c", "sk-c")],
    );
    let mut gateway = start(1, &extra, &upstream);
    for _ in 0..4 {
        assert_eq!(post(gateway.addr()).status, 200);
    }
    assert_eq!(provider.times_of("sk-a").len(), 1);
    assert_eq!(provider.times_of("sk-bad").len(), 1);
    // Saved within a second of the change, so even a kill -9 keeps it.
    thread::sleep(Duration::from_millis(1_500));
    let saved = std::fs::read_to_string(state.0.join("provider-keys.json")).unwrap();
    assert!(!saved.contains("sk-"), "a secret was saved: {saved}");
    gateway.process.signal("KILL");
    gateway.process.wait_exit(Duration::from_secs(10));

    let gateway = start(1, &extra, &upstream);
    for _ in 0..4 {
        assert_eq!(post(gateway.addr()).status, 200);
    }
    assert_eq!(
        provider.times_of("sk-a").len(),
        1,
        "a cooling key rested on"
    );
    assert_eq!(
        provider.times_of("sk-bad").len(),
        1,
        "a disabled key stayed out"
    );
    assert_eq!(provider.times_of("sk-c").len(), 8);
}

#[test]
fn a_client_that_leaves_while_waiting_for_a_key_is_not_sent_upstream() {
    let (provider, gateway) = waiting_for_one_key("2", "5s");
    // The first request cools the only key and then waits for it.
    let body = r#"{"model":"m"}"#;
    let request = format!(
        "POST /v1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = Client::connect(gateway.addr());
    client.send(request.as_bytes());
    thread::sleep(Duration::from_millis(500));
    drop(client);
    // Well after the key is back, nothing more was sent for the client that left.
    thread::sleep(Duration::from_millis(2_500));
    assert_eq!(provider.calls().len(), 1);
    // The key itself is fine.
    assert_eq!(post(gateway.addr()).status, 200);
}
