//! Learning from responses must never panic, and nothing learned may exceed `MAX_WAIT`,
//! whatever the head or body.
//!
//! Run with `cargo +nightly fuzz run learn` from the repository root. The input is read three
//! ways: as a whole response head, as the value of every field `learn` understands (in a 429
//! head, so `retry-after` counts), and as an error body.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;
use keygate::config::Provider;
use keygate::http::ResponseHead;
use keygate::upstream::learn::{Learned, Window, MAX_WAIT};
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [Provider; 4] = [
    Provider::OpenAi,
    Provider::Anthropic,
    Provider::Gemini,
    Provider::Http,
];

const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-output-tokens-reset",
];

fn check_window(window: Option<Window>) {
    if let Some(reset) = window.and_then(|w| w.reset_in) {
        assert!(reset <= MAX_WAIT);
    }
}

fn learn_all(buf: &BytesMut) {
    let Ok(Some(head)) = ResponseHead::parse(buf, false, 16 * 1024, &mut Vec::new()) else {
        return;
    };
    // Around now, and before the epoch, where time arithmetic is easiest to get wrong.
    let times = [
        UNIX_EPOCH + Duration::from_secs(1_714_564_800),
        UNIX_EPOCH - Duration::from_secs(1),
    ];
    for provider in PROVIDERS {
        for now in times {
            let learned = Learned::from_head(provider, &head, buf, now);
            assert!(learned.retry_after.is_none_or(|wait| wait <= MAX_WAIT));
            check_window(learned.requests);
            check_window(learned.tokens);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    learn_all(&BytesMut::from(data));

    if !data.contains(&b'\r') && !data.contains(&b'\n') {
        for name in NAMES {
            let mut head = BytesMut::from(format!("HTTP/1.1 429 X\r\n{name}: ").as_bytes());
            head.extend_from_slice(data);
            head.extend_from_slice(b"\r\n\r\n");
            learn_all(&head);
        }
    }

    if let Some(wait) = Learned::retry_delay_from_body(data) {
        assert!(wait <= MAX_WAIT);
    }
});
