//! Listening sockets: one SO_REUSEPORT listener per shard on a port no one else holds, and
//! an accept loop that stays calm when file descriptors run out.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener};
use monoio::time::Instant;

/// Finds the address the shards will share, refusing a port another process holds.
///
/// SO_REUSEPORT would let the shards bind next to a stale instance and silently receive only
/// part of the connections, so the port is first bound without it: that fails while anyone
/// else listens there. Port 0 becomes a concrete free port here, for all shards alike.
pub(super) fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = StdListener::bind(addr).map_err(|err| {
        if err.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{addr} is already in use by another process (stop it, or change `listen`)"
                ),
            )
        } else {
            err
        }
    })?;
    probe.local_addr()
}

/// Binds one shard's listener on the claimed address.
pub(super) fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(backlog);
    TcpListener::bind_with_config(addr, &opts)
}

/// Accept-side trouble: refused connections and failed accepts, logged at most once a second.
#[derive(Default)]
pub(super) struct Pressure {
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl Pressure {
    /// Counts a connection closed because the shard is at `max_connections`.
    pub(super) fn refused(&mut self, shard: usize) {
        self.warn(shard, "connection limit reached: closing new connections");
    }

    /// Handles a failed accept. Running out of descriptors or memory is waited out briefly
    /// instead of spinning on an accept that keeps failing.
    pub(super) async fn accept_failed(&mut self, shard: usize, err: &io::Error) {
        let exhausted = matches!(
            err.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if exhausted {
            self.warn(
                shard,
                "accept failed: out of file descriptors or memory; backing off",
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
        } else {
            tracing::debug!(shard, error = %err, "accept failed");
        }
    }

    fn warn(&mut self, shard: usize, message: &'static str) {
        let now = Instant::now();
        let due = self
            .last_warning
            .is_none_or(|last| now - last >= Duration::from_secs(1));
        if due {
            tracing::warn!(shard, suppressed = self.suppressed, "{message}");
            self.last_warning = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}
