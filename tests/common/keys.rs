//! Helpers for client-key tests: configs with keys and tenants, requests that present a key,
//! many connections firing at once, and waits that keep a test inside one UTC window.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

/// A gateway config: `workers` shards, an `openai` upstream at `upstream` on route `/`, then
/// `rest` (tenants and client keys). `extra` goes into `[gateway]`.
pub fn keyed_config(workers: usize, upstream: SocketAddr, extra: &str, rest: &str) -> String {
    gateway_section(workers, extra)
        + &format!(
            "[[upstream]]\nname = \"llm\"\nprovider = \"openai\"\n\
             endpoints = [\"http://{upstream}\"]\n\n"
        )
        + &route_section("/", None, "llm")
        + rest
}

/// A `[[client_key]]` table with secret `kg-{id}` and `limits` (TOML lines).
pub fn client_key(id: &str, limits: &str) -> String {
    format!("[[client_key]]\nid = \"{id}\"\nsecret = \"kg-{id}\"\n{limits}\n\n")
}

/// `GET /v1/models` presenting `secret` as a bearer token.
pub fn get_models(secret: &str) -> Vec<u8> {
    format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {secret}\r\n\r\n")
        .into_bytes()
}

/// `POST /v1/chat/completions` presenting `secret`, with a JSON `body` and extra header lines.
pub fn chat(secret: &str, body: &str, headers: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {secret}\r\n\
         Content-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A header's value as a number.
pub fn header_u64(response: &Response, name: &str) -> u64 {
    let value = response
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {}", response.raw_head));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {value:?} is not a number"))
}

/// The remaining count of policy `name` in the `RateLimit` field (`"hour";r=3;t=1200, ...`).
pub fn ratelimit_remaining(response: &Response, name: &str) -> u64 {
    let field = response
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit: {}", response.raw_head));
    let prefix = format!("\"{name}\";r=");
    field
        .split(", ")
        .find_map(|item| item.strip_prefix(&prefix)?.split(';').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in RateLimit: {field}"))
}

/// Wall time in seconds since the epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds left in the UTC window of `window_secs` (60, 3600) holding now.
pub fn left_in_window(window_secs: u64) -> f64 {
    let now = unix_now();
    window_secs as f64 - now % window_secs as f64
}

/// Waits, if need be, for the next UTC window of `window_secs` so that at least `needed` of
/// it remains: a test counting against a calendar quota then never sees it reset midway.
pub fn stay_in_one_window(window_secs: u64, needed: Duration) {
    let left = left_in_window(window_secs);
    if left < needed.as_secs_f64() {
        thread::sleep(Duration::from_secs_f64(left + 0.1));
    }
}

/// What a burst of requests from many connections got.
pub struct Burst {
    /// Responses with status 200.
    pub admitted: usize,
    /// The 429 responses (one per connection, each of which stops at its first).
    pub refused: Vec<Response>,
    /// From the first request sent to the last response read.
    pub elapsed: Duration,
}

/// Opens `connections` connections, each on its own thread, and on each sends `request`
/// again and again, all starting together, until the gateway answers 429. Any status other
/// than 200 and 429 fails the test.
pub fn fire_until_refused(addr: SocketAddr, connections: usize, request: &[u8]) -> Burst {
    let start = Arc::new(Barrier::new(connections + 1));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (start, request) = (Arc::clone(&start), request.to_vec());
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                start.wait();
                let mut admitted = 0;
                loop {
                    client.send(&request);
                    let response = client.read_response(false);
                    match response.status {
                        200 => admitted += 1,
                        429 => return (admitted, response),
                        _ => panic!("{}{}", response.raw_head, response.body_text()),
                    }
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut burst = Burst {
        admitted: 0,
        refused: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for thread in threads {
        let (admitted, refused) = thread.join().expect("client thread");
        burst.admitted += admitted;
        burst.refused.push(refused);
    }
    burst.elapsed = began.elapsed();
    burst
}

/// Log lines of a gateway started with `KEYGATE_LOG=info,keygate=debug` that record a
/// connection handed to its key's owner shard.
pub fn handoffs(gateway: &Gateway) -> usize {
    gateway
        .process
        .log_lines()
        .iter()
        .filter(|line| line.contains("handing connection to the key's owner"))
        .count()
}

/// The handoffs logged, once at least `wanted` are or 5 s have passed: the log is read by
/// another thread, and its last lines may still be on their way.
pub fn handoffs_at_least(gateway: &Gateway, wanted: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let seen = handoffs(gateway);
        if seen >= wanted || std::time::Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The environment that makes the gateway log each handoff.
pub const DEBUG_LOG: &[(&str, &str)] = &[("KEYGATE_LOG", "info,keygate=debug")];
