//! Helpers for the admin listener: reading `/metrics` series. (Its address is
//! [`super::Gateway::admin_addr`].)

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// `GET /metrics` on the admin listener at `admin`: the exposition text.
pub fn scrape(admin: SocketAddr) -> String {
    let response = roundtrip(admin, b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.body_text()
}

/// The value of `series` (a metric name with its labels, as written) in `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(series, value)` of `wanted` shows (shards hand their counts over
/// once a second), at most 10 s; returns the text that showed them.
pub fn scrape_until(admin: SocketAddr, wanted: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(admin);
        if wanted.iter().all(|&(s, v)| value(&text, s) == Some(v)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {wanted:?}:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
