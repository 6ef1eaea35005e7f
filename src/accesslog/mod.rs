//! The access log: one JSON line per exchange, written off the request path.
//!
//! A shard fills a [`Record`] from what the exchange already holds and hands it to its
//! [`ShardLog`], which appends the line to a shard-local buffer (no lock, no allocation once
//! warm, no I/O) and passes full buffers to the writer thread owned by [`AccessLog`]. Only
//! that thread touches the file: appending, rotating by size, reopening on SIGUSR1.
//!
//! The shard must never wait for the disk, so a record that cannot be queued is dropped
//! and counted ([`AccessLog::dropped`]), never silently lost and never a stall. A record
//! never holds a secret: client and provider keys appear only by their configured ids, and
//! the query string is left out of the path. `docs/operations.md` describes the fields.

mod json;
mod record;
mod shard;
mod time;
mod writer;

pub use record::{Record, RequestId, RequestIds, MAX_PATH_BYTES};
pub use shard::{ShardLog, Stats, WARN_EVERY_MS};
pub use time::{format_timestamp, parse_timestamp, TIMESTAMP_LEN};
pub use writer::{
    AccessLog, Options, DEFAULT_BATCH_BYTES, DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_QUEUE_BATCHES,
};
