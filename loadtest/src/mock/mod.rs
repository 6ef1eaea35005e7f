//! `loadtest mock`: a mock AI provider speaking the OpenAI wire format, fast enough never to be
//! the bottleneck of a benchmark, with knobs (command-line defaults, per-request `x-mock-*`
//! headers) for latency, streaming pace, token counts, error statuses and response framing.
//! With `--key`, it checks provider keys and enforces their limits as OpenAI, Anthropic or
//! Gemini do, in their rate-limit fields and error shapes.
//!
//! - `server`: threads, runtimes, listeners.
//! - `conn`: one connection's I/O: reading requests, framing and writing replies, delays.
//! - `route`: which reply a request gets (sans-IO).
//! - `openai`: the OpenAI request and reply formats (sans-IO).
//! - `knobs`: per-request behaviour from headers.
//! - `response`: response heads and body framing.
//! - `json`: JSON string and number writing.
//! - `gate`: the key check of a keyed request, and its accounting.
//! - `keys`: the `--key` table: limits, counters, request log.
//! - `bucket`: a per-minute limit as a token bucket (sans-IO).
//! - `style`: the provider a reply imitates, and its error bodies (sans-IO).
//! - `ratelimit`: rate-limit fields and their time formats (sans-IO).

mod bucket;
mod conn;
mod gate;
mod json;
mod keys;
mod knobs;
mod openai;
mod ratelimit;
mod response;
mod route;
mod server;
mod style;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use keys::{KeySpec, Keys};
use knobs::Defaults;
use style::Style;

/// Options of `loadtest mock`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port (the log line says which).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Worker threads, each with its own runtime and listener.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Delay before each response head, in milliseconds (header `x-mock-latency-ms`).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between the events of a streamed reply, in milliseconds
    /// (header `x-mock-token-delay-ms`).
    #[arg(long, default_value_t = 0)]
    pub token_delay_ms: u64,
    /// Completion tokens per reply, capped by the request's max_tokens (header `x-mock-tokens`).
    #[arg(long, default_value_t = 16)]
    pub tokens: u32,
    /// A provider key, `SECRET[:OPTS]` with OPTS comma-separated from `rpm=N`, `tpm=N`,
    /// `status=401|403`, `latency-ms=N`; repeatable. With keys, requests to the provider
    /// endpoints need a known one.
    #[arg(long = "key", value_name = "SPEC")]
    pub keys: Vec<KeySpec>,
    /// The provider whose rate-limit fields and error bodies every reply uses, instead of the
    /// one whose key field the request used.
    #[arg(long, value_enum)]
    pub style: Option<Style>,
}

/// Runs the mock until the process is killed.
pub fn run(args: &MockArgs) -> anyhow::Result<()> {
    let defaults = Defaults {
        latency: Duration::from_millis(args.latency_ms),
        token_delay: Duration::from_millis(args.token_delay_ms),
        tokens: args.tokens,
    };
    let keys =
        Keys::new(args.keys.clone(), args.style, Instant::now()).map_err(|why| anyhow!(why))?;
    server::run(args.listen, usize::from(args.workers), defaults, keys)
}
