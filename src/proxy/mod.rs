//! One client connection's path through the gateway: read a request head, route it, forward
//! it to an upstream endpoint, stream the response back, and do it again while the
//! connection is kept alive.
//!
//! Everything runs on the shard that accepted the connection. Nothing here blocks or takes a
//! lock; buffers are owned, handed to io_uring and taken back (monoio's rent model), and
//! reused across the requests of a connection.

mod admit;
mod budget;
mod buffers;
mod conn;
mod deadline;
mod error;
mod forward;
mod io;
mod lifecycle;
mod request_body;
mod response;
mod route;
mod trace;
mod upstream;

pub use buffers::BufferPool;
pub use conn::{refuse_with, serve, serve_with};
pub(crate) use deadline::clear as clear_deadlines;
pub use error::{write_error_response, Error, Side};
pub use route::{has_dot_segment, Route, Router};

/// The largest response head accepted from an upstream.
pub const MAX_UPSTREAM_HEAD_BYTES: usize = 64 * 1024;
