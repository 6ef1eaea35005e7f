//! Usage scanning must never panic, whatever the body, and must not depend on where the
//! network cut it: the same bytes fed whole or in two pieces report the same usage.
//!
//! Run with `cargo +nightly fuzz run usage_scan` from the repository root. The first input
//! byte picks the split point (as a fraction of the rest) and the line limit; the rest is the
//! body, scanned for every provider, streamed and not. The same bytes are also inspected as
//! a request body, which must not panic either.
#![no_main]

use keygate::ai::{RequestFacts, UsageScanner};
use keygate::config::Provider;
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [Provider; 4] = [
    Provider::OpenAi,
    Provider::Anthropic,
    Provider::Gemini,
    Provider::Http,
];

fn scan(provider: Provider, streaming: bool, limit: usize, pieces: &[&[u8]]) -> Option<u64> {
    let mut scanner = UsageScanner::new(provider, streaming, limit);
    for piece in pieces {
        scanner.feed(piece);
    }
    scanner.finish().map(|usage| usage.total())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let split = body.len() * usize::from(first) / 255;
    let (head, tail) = body.split_at(split);
    // Small limits exercise the over-long paths; odd bytes keep the ordinary 1 MiB.
    let limit = if first % 2 == 0 {
        usize::from(first)
    } else {
        1 << 20
    };

    for provider in PROVIDERS {
        for streaming in [false, true] {
            let whole = scan(provider, streaming, limit, &[body]);
            let split = scan(provider, streaming, limit, &[head, tail]);
            assert_eq!(whole, split, "usage depends on the split");
        }
        let facts =
            RequestFacts::inspect(provider, b"/v1beta/models/m:streamGenerateContent", body);
        let _ = facts.reservation(u64::MAX);
    }
});
