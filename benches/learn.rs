//! What learning from a response head costs: `Learned::from_head` on a typical OpenAI 200
//! with its six rate-limit fields, and on one without any, which is the path every plain
//! response takes.
//!
//! Run with `cargo bench --bench learn`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keygate::config::Provider;
use keygate::http::ResponseHead;
use keygate::upstream::learn::Learned;

const OPENAI_WITH_LIMITS: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Wed, 01 May 2024 12:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 812\r\n\
Connection: keep-alive\r\n\
openai-organization: user-abc123\r\n\
openai-processing-ms: 412\r\n\
openai-version: 2020-10-01\r\n\
x-ratelimit-limit-requests: 5000\r\n\
x-ratelimit-limit-tokens: 160000\r\n\
x-ratelimit-remaining-requests: 4999\r\n\
x-ratelimit-remaining-tokens: 159976\r\n\
x-ratelimit-reset-requests: 12ms\r\n\
x-ratelimit-reset-tokens: 6m0s\r\n\
x-request-id: req_0123456789abcdef\r\n\
strict-transport-security: max-age=31536000; includeSubDomains\r\n\r\n";

const PLAIN: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Wed, 01 May 2024 12:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 812\r\n\
Connection: keep-alive\r\n\
openai-organization: user-abc123\r\n\
openai-processing-ms: 412\r\n\
openai-version: 2020-10-01\r\n\
x-request-id: req_0123456789abcdef\r\n\
strict-transport-security: max-age=31536000; includeSubDomains\r\n\r\n";

fn learn(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let mut group = c.benchmark_group("learn");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in [
        ("openai_200_six_limits", OPENAI_WITH_LIMITS),
        ("openai_200_no_limits", PLAIN),
    ] {
        let buf = BytesMut::from(bytes);
        let head = ResponseHead::parse(&buf, false, 16 * 1024, &mut Vec::new())
            .expect("valid head")
            .expect("complete head");
        group.bench_function(name, |b| {
            b.iter(|| {
                let now: SystemTime = black_box(now);
                black_box(Learned::from_head(
                    Provider::OpenAi,
                    black_box(&head),
                    &buf,
                    now,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, learn);
criterion_main!(benches);
