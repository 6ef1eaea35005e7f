//! The open-files limit. Every connection holds a descriptor, and a shell's soft limit (often
//! 1024) is far below what a benchmark opens, while the hard limit usually allows much more.
//! Each tool raises its own soft limit to the hard one at start, and a run that needs more
//! descriptors than the hard limit allows is refused before it opens anything, rather than
//! failing connection by connection with EMFILE.

use anyhow::bail;
use rlimit::Resource;
use tracing::{debug, warn};

/// Descriptors a tool uses besides its connections: stdio, the io_uring ring, the probe
/// connection, files read at start, the runtime's own.
const SPARE: u64 = 64;

/// Raises the soft open-files limit to the hard limit; returns the soft limit in force after,
/// or `None` when it cannot be read.
pub fn raise() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            debug!(limit, "open files limit");
            Some(limit)
        }
        Err(err) => {
            warn!(error = %err, "cannot raise the open files limit");
            Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}

/// Raises the soft limit, then fails when `connections` connections and the tool's spare
/// descriptors do not fit under it.
pub fn ensure(connections: u64) -> anyhow::Result<()> {
    let Some(limit) = raise() else {
        return Ok(());
    };
    let needed = connections.saturating_add(SPARE);
    if needed > limit {
        bail!(
            "{connections} connections need about {needed} open files, and the limit is \
             {limit} (the hard limit; raise it, e.g. `ulimit -Hn {needed}` as root, or \
             LimitNOFILE= in a systemd unit)"
        );
    }
    Ok(())
}
