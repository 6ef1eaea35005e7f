//! Hot-path benchmarks: request head parsing, chunked decoding and routing.
//!
//! Run with `cargo bench --bench hot_path`; figures go to docs/benchmarks.md.

use std::path::Path;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keygate::config::Config;
use keygate::http::{ChunkedDecoder, RequestHead};
use keygate::proxy::Router;

const CHAT_REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: api.openai.com\r\n\
Authorization: Bearer kg-acme-dev-0001\r\n\
Content-Type: application/json\r\n\
Content-Length: 96\r\n\
User-Agent: OpenAI/Python 1.54.0\r\n\
Accept: application/json\r\n\
X-Stainless-Lang: python\r\n\r\n";

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

criterion_group!(benches, parse, route);
criterion_main!(benches);
