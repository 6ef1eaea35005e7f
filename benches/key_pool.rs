//! What a provider key pool costs per upstream attempt: choosing a key (every key's state
//! read), charging its pacing, learning from the response, and giving the lease back. The
//! pool is shared by every shard, so each of these is a handful of atomic operations.
//!
//! Run with `cargo bench --bench key_pool`.

use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate::config::Config;
use keygate::upstream::learn::{Learned, Window};
use keygate::upstream::{KeyPool, Picker};

/// A pool of `keys` keys of upstream `up` with `strategy`, each with `limits` (e.g.
/// `rpm = 10000000`).
fn pool(strategy: &str, keys: usize, limits: &str) -> KeyPool {
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"up\"\nprovider = \"openai\"\n\
         endpoints = [\"http://127.0.0.1:9\"]\nstrategy = \"{strategy}\"\n"
    );
    for i in 0..keys {
        text += &format!("[[upstream.key]]\nid = \"k{i}\"\nsecret = \"sk-{i}\"\n{limits}\n");
    }
    let config = Config::parse(&text, Path::new("bench.toml"), Path::new("/")).expect("config");
    KeyPool::new(&config.upstreams[0]).expect("a pool")
}

fn bench(c: &mut Criterion) {
    // Limits so high that pacing never refuses: the cost measured is the bookkeeping.
    let limits = "rpm = 1000000000\ntpm = 1000000000";
    let learned = Learned {
        requests: Some(Window {
            limit: Some(1_000_000_000),
            remaining: Some(999_999_000),
            reset_in: Some(Duration::from_millis(6)),
        }),
        tokens: Some(Window {
            limit: Some(1_000_000_000),
            remaining: Some(999_000_000),
            reset_in: Some(Duration::from_millis(60)),
        }),
        retry_after: None,
    };
    let mut group = c.benchmark_group("key_pool");
    for (strategy, keys) in [
        ("quota_aware", 3),
        ("quota_aware", 16),
        ("least_loaded", 3),
        ("round_robin", 3),
    ] {
        let pool = pool(strategy, keys, limits);
        let picker = Picker::new(&pool);
        let mut now = 1_800_000_000_000_000_000u64;
        group.bench_function(
            format!("{strategy}/{keys}_keys/acquire_report_release"),
            |b| {
                b.iter(|| {
                    now += 100_000;
                    let lease = pool.acquire(&picker, now, 500).expect("a key");
                    lease.report(200, black_box(&learned), now);
                    lease.used_tokens(black_box(400));
                    black_box(lease.index())
                })
            },
        );
    }
    // Keys without any known limit: selection and bookkeeping only.
    let pool = pool("quota_aware", 3, "");
    let picker = Picker::new(&pool);
    group.bench_function("quota_aware/3_keys_no_limits/acquire_report_release", |b| {
        b.iter(|| {
            let lease = pool.acquire(&picker, 1, 0).expect("a key");
            lease.report(200, &Learned::default(), 1);
            black_box(lease.index())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
