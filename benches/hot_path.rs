//! Hot-path benchmarks: request and response head parsing, chunked decoding, routing, client
//! key authentication and the admit decision.
//!
//! Run with `cargo bench --bench hot_path`; figures go to docs/benchmarks.md.

use std::path::Path;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keygate::config::Config;
use keygate::http::{ChunkedDecoder, RequestHead, ResponseHead};
use keygate::keys::KeyTable;
use keygate::proxy::Router;
use keygate::quota::QuotaBook;

const CHAT_REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: api.openai.com\r\n\
Authorization: Bearer kg-acme-dev-0001\r\n\
Content-Type: application/json\r\n\
Content-Length: 96\r\n\
User-Agent: OpenAI/Python 1.54.0\r\n\
Accept: application/json\r\n\
X-Stainless-Lang: python\r\n\r\n";

/// An upstream's answer to a chat completion, as the gateway reads it before relaying it.
const CHAT_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Fri, 04 Dec 2026 10:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 310\r\n\
Connection: keep-alive\r\n\
openai-processing-ms: 412\r\n\
x-request-id: req_8f2c1a9b4d7e4f0a\r\n\
x-ratelimit-remaining-requests: 9999\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request_head_8_fields", |b| {
        let mut fields = Vec::with_capacity(16);
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(CHAT_REQUEST);
            let head = RequestHead::parse(&mut buf, 16 * 1024, &mut fields)
                .expect("valid head")
                .expect("complete head");
            black_box(head.framing);
            fields = head.into_fields();
        })
    });

    group.bench_function("response_head_7_fields", |b| {
        let mut fields = Vec::with_capacity(16);
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(CHAT_RESPONSE);
            let head = ResponseHead::parse(&buf, false, 16 * 1024, &mut fields)
                .expect("valid head")
                .expect("complete head");
            black_box(head.framing);
            fields = head.fields;
        })
    });

    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"40\r\n");
        body.extend_from_slice(&[b'x'; 64]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chunked_64x64", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new();
            let mut pos = 0;
            while !decoder.is_done() {
                pos += decoder
                    .decode(black_box(&body[pos..]))
                    .expect("valid")
                    .consumed;
            }
            black_box(pos)
        })
    });
    group.finish();
}

fn route(c: &mut Criterion) {
    let mut text = String::from(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"u\"\nprovider = \"openai\"\n\
         endpoints = [\"http://127.0.0.1:9\"]\n",
    );
    for i in 0..20 {
        text.push_str(&format!(
            "\n[[route]]\npath_prefix = \"/api{i}/v1/\"\nupstream = \"u\"\n"
        ));
    }
    text.push_str("\n[[route]]\npath_prefix = \"/v1/\"\nupstream = \"u\"\n");
    let config = Config::parse(&text, Path::new("bench.toml"), Path::new(".")).expect("valid");
    let router = Router::new(&config);

    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    group.bench_function("21_routes_last_match", |b| {
        b.iter(|| {
            black_box(router.route(Some(b"api.openai.com"), black_box(b"/v1/chat/completions")))
        })
    });
    group.finish();
}

/// A config with `count` client keys, each with a rate limit and an hourly and daily quota.
fn keyed_config(count: usize) -> Config {
    let mut text = String::from(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"u\"\nprovider = \"openai\"\n\
         endpoints = [\"http://127.0.0.1:9\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"u\"\n",
    );
    for i in 0..count {
        text.push_str(&format!(
            "\n[[client_key]]\nid = \"k{i}\"\nsecret = \"kg-bench-{i}\"\nrate = \"1000000/s\"\n\
             burst = 1000\nquota = {{ per_hour = 1000000000, per_day = 1000000000 }}\n"
        ));
    }
    Config::parse(&text, Path::new("bench.toml"), Path::new(".")).expect("valid")
}

fn admit(c: &mut Criterion) {
    let config = keyed_config(10_000);
    let table = KeyTable::new(&config, 1);
    let mut book = QuotaBook::default();
    let now = 1_800_000_000_000_000_000_u64;
    // A fixed pseudo-random walk over the keys, so the book holds many entries.
    let order: Vec<u32> = (0..4096u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % 10_000)
        .collect();

    let mut group = c.benchmark_group("admit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rate_and_two_quotas_10k_keys", |b| {
        let mut i = 0;
        let mut tick = now;
        b.iter(|| {
            let key = table.key(order[i % order.len()]);
            i += 1;
            tick += 1_000;
            if let Ok(reservation) = book.admit(&table, key, tick, 0) {
                book.settle(&table, key, tick, reservation, 0);
            }
        })
    });
    group.bench_function("authenticate_sha256_lookup", |b| {
        b.iter(|| black_box(table.authenticate(black_box(b"kg-bench-4321"), now).is_ok()))
    });
    group.finish();
}

/// What a shard's periodic snapshot costs it: the counters changed by 45,000 requests (a
/// second at half of one shard's rate) over 200,000 keys, taken for the journal.
fn persist(c: &mut Criterion) {
    let config = keyed_config(200_000);
    let table = KeyTable::new(&config, 1);
    let now = 1_800_000_000_000_000_000_u64;
    let mut group = c.benchmark_group("persist");
    group.sample_size(20);
    group.bench_function("take_changes_45k_requests_200k_keys", |b| {
        b.iter_batched(
            || {
                let mut book = QuotaBook::default();
                for i in 0..45_000u32 {
                    let key = table.key(i.wrapping_mul(2_654_435_761) % 200_000);
                    let tick = now + u64::from(i) * 1_000;
                    if let Ok(reservation) = book.admit(&table, key, tick, 0) {
                        book.settle(&table, key, tick, reservation, 0);
                    }
                }
                book
            },
            |mut book| black_box(book.take_changes().len()),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse, route, admit, persist);
criterion_main!(benches);
