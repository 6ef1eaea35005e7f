//! keygate: a thread-per-core API gateway for AI and HTTP API providers.
//!
//! Map of the crate:
//!
//! - [`config`]: the TOML config and tuning file, read into typed, validated values.
//! - [`http`]: sans-IO HTTP/1.1 (RFC 9112): head parsing, body framing, encoding.
//! - [`shard`]: thread-per-core start-up, pinning, io_uring runtimes, listeners, drain.
//! - [`net`]: upstream connections and the per-shard keep-alive pools.
//! - [`upstream`]: upstream groups on a shard: endpoint choice and health; provider key
//!   pools shared by all shards, what responses say about a key, key states on disk.
//! - [`admin`]: the admin listener: health, readiness, metrics, the admin API.
//! - [`overrides`]: route states and provider keys the admin API set, kept in `state_dir`
//!   and laid over the config file at start and reload.
//! - [`metrics`]: request counts and durations, upstream latency, usage per client key and
//!   tenant, upstream connections; counted per shard, published once a second.
//! - [`keys`]: client keys: presented, hashed, checked, and the shard that owns each.
//! - [`clients`]: the control plane's client keys and tenants: the config file's, the admin
//!   API's changes kept in `state_dir`, and new key tables sent to every shard.
//! - [`quota`]: rate, calendar quotas, concurrency and token budgets; their journal.
//! - [`proxy`]: one client connection's path: read, authenticate, admit, route, forward,
//!   stream back.
//! - [`ai`]: sans-IO provider wire formats: request facts and response token usage.
//! - [`accesslog`]: the access log: a JSON line per exchange, batched per shard, written
//!   and rotated by its own thread.
//! - [`report`]: `keygate report`: totals, latency and quota forecasts from access logs.
#![deny(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod ai;
pub mod clients;
pub mod config;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod overrides;
pub mod proxy;
pub mod quota;
pub mod report;
pub mod shard;
pub mod upstream;
