//! What an access log record costs a shard: its JSON line written into a reused buffer by
//! keygate's own serializer, against serde_json's `to_writer` on the same buffer; and a
//! whole `ShardLog::record`, batch handoff included, with the writer on /dev/null.
//!
//! Run with `cargo bench --bench accesslog`; figures go to docs/benchmarks.md.

use std::borrow::Cow;
use std::time::SystemTime;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keygate::accesslog::{format_timestamp, AccessLog, Options, Record, RequestIds};
use serde::Serialize;

/// The same line for serde_json: its fields as serde sees them.
#[derive(Serialize)]
struct SerdeRecord<'a> {
    ts: &'a str,
    request_id: &'a str,
    tenant: Option<&'a str>,
    key_id: Option<&'a str>,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    upstream_key: Option<&'a str>,
    status: u16,
    latency_us: u64,
    upstream_latency_us: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    retries: u32,
    error_code: Option<&'a str>,
}

fn record<'a>(ids: &RequestIds, path: &'a [u8]) -> Record<'a> {
    Record {
        ts: 1_796_400_148_005_000_000,
        request_id: ids.next_id(),
        tenant: Some("acme"),
        key_id: Some("acme-prod-7"),
        method: b"POST",
        path,
        route: Some("/v1/"),
        upstream: Some("openai"),
        upstream_key: Some("org-main-2"),
        status: 200,
        latency_us: 812_345,
        upstream_latency_us: Some(798_001),
        bytes_in: 1834,
        bytes_out: 5120,
        prompt_tokens: Some(412),
        completion_tokens: Some(1066),
        retries: 0,
        error_code: None,
    }
}

/// The serde_json way: convert what is not a `str` yet, then serialize.
fn write_with_serde(record: &Record<'_>, out: &mut Vec<u8>) {
    let ts = format_timestamp(record.ts);
    let id = record.request_id.to_hex();
    let line = SerdeRecord {
        ts: std::str::from_utf8(&ts).unwrap_or_default(),
        request_id: std::str::from_utf8(&id).unwrap_or_default(),
        tenant: record.tenant,
        key_id: record.key_id,
        method: String::from_utf8_lossy(record.method),
        path: String::from_utf8_lossy(record.path),
        route: record.route,
        upstream: record.upstream,
        upstream_key: record.upstream_key,
        status: record.status,
        latency_us: record.latency_us,
        upstream_latency_us: record.upstream_latency_us,
        bytes_in: record.bytes_in,
        bytes_out: record.bytes_out,
        prompt_tokens: record.prompt_tokens,
        completion_tokens: record.completion_tokens,
        retries: record.retries,
        error_code: record.error_code,
    };
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

fn serialize(c: &mut Criterion) {
    let ids = RequestIds::new(3, SystemTime::now());
    let escapes = b"/v1/files/\"quoted\"/back\\slash/tab\there/\x01\x02\x03/".repeat(4);
    let paths: [(&str, &[u8]); 2] = [
        ("plain_path", b"/v1/chat/completions"),
        ("escaped_path", &escapes),
    ];

    let mut group = c.benchmark_group("accesslog");
    group.throughput(Throughput::Elements(1));
    for (name, path) in paths {
        let record = record(&ids, path);
        let mut out = Vec::with_capacity(64 << 10);
        group.bench_function(format!("{name}/keygate"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&record).write_to(&mut out);
                black_box(out.len())
            })
        });
        group.bench_function(format!("{name}/serde_json"), |b| {
            b.iter(|| {
                out.clear();
                write_with_serde(black_box(&record), &mut out);
                black_box(out.len())
            })
        });
    }

    let mut log = AccessLog::open(Options {
        max_bytes: 0,
        ..Options::new("/dev/null")
    })
    .expect("open /dev/null");
    let mut shard = log.shard_log();
    group.bench_function("shard_log_record", |b| {
        b.iter(|| shard.record(black_box(&record(&ids, b"/v1/chat/completions"))))
    });
    group.finish();
    drop(shard);
    let _ = log.finish();
    eprintln!("records dropped while measuring: {}", log.dropped());
}

criterion_group!(benches, serialize);
criterion_main!(benches);
