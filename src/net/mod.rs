//! Upstream connections and the per-shard keep-alive pools that hold them.
//!
//! Everything here belongs to one shard: pools are plain `Vec`s behind no lock, and a
//! connection never moves between shards.

mod pool;

pub use pool::{OpenCount, Pool, UpstreamConn};
