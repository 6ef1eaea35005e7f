//! Moving a client connection to the shard that owns its client key.
//!
//! A key's counters change only on its owning shard. When a connection's request names a key
//! owned elsewhere, the connection itself moves there, once, with the bytes already read:
//! one one-way message per connection (or per change of key), never a round trip per
//! request. The owner then serves it as if it had accepted it.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use bytes::BytesMut;
use monoio::net::TcpStream;
use tokio::sync::mpsc;

/// A connection on its way to another shard.
pub struct Handoff {
    /// The socket, detached from the sending shard's runtime.
    pub socket: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Bytes read but not yet served: the request head that named the key, and whatever
    /// followed it.
    pub pending: BytesMut,
}

/// Every shard's inbox for connections handed to it, indexed by shard.
pub type Inboxes = std::sync::Arc<[mpsc::UnboundedSender<Handoff>]>;

/// Detaches `stream` from this shard's runtime so another shard can adopt it.
///
/// Must be called with no operation in flight on the stream; the caller only hands off
/// between requests, after its reads and writes completed.
#[allow(unsafe_code)]
pub fn detach(stream: TcpStream) -> std::net::TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gives up the runtime's ownership of `fd` without closing it
    // (monoio deregisters it and skips its close), so this is the only owner from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    std::net::TcpStream::from(owned)
}

/// Adopts a detached socket into the current shard's runtime.
pub fn adopt(socket: std::net::TcpStream) -> std::io::Result<TcpStream> {
    socket.set_nonblocking(true)?;
    TcpStream::from_std(socket)
}
