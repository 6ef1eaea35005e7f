//! Building a shard's runtime: io_uring with SINGLE_ISSUER and DEFER_TASKRUN where the
//! kernel has them, and errors that say what to change where io_uring cannot start.

use std::future::Future;
use std::io;

/// The I/O driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring with SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1 and later).
    IoUringDeferTaskrun,
    /// io_uring with default setup flags.
    IoUring,
    /// epoll, for hosts where io_uring is unavailable; slower.
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUringDeferTaskrun => "io_uring (single issuer, deferred task run)",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Runs `task` to completion on a new runtime of the first driver in `preference` that
/// starts. Returns the driver used, or why none could start.
pub(super) fn block_on<F, T>(
    preference: &[Driver],
    ring_entries: u32,
    mut task: impl FnMut(Driver) -> F,
) -> Result<(Driver, T), io::Error>
where
    F: Future<Output = T>,
{
    let mut last_error = None;
    for &driver in preference {
        let result = match driver {
            Driver::IoUringDeferTaskrun | Driver::IoUring => {
                let mut ring = io_uring::IoUring::builder();
                if driver == Driver::IoUringDeferTaskrun {
                    ring.setup_single_issuer().setup_defer_taskrun();
                }
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(ring_entries)
                    .uring_builder(ring)
                    .enable_timer()
                    .build()
                    .map(|mut runtime| finish(runtime.block_on(task(driver))))
            }
            Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(|mut runtime| finish(runtime.block_on(task(driver)))),
        };
        match result {
            Ok(output) => return Ok((driver, output)),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no driver configured")))
}

/// Lets go of the shard's waiting socket deadlines once its runtime stopped, so the tasks
/// still waiting go with the runtime.
fn finish<T>(output: T) -> T {
    crate::proxy::clear_deadlines();
    output
}

/// What to change when io_uring cannot start, given the error it gave.
pub(super) fn io_uring_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOMEM) => {
            "io_uring needs locked memory: raise RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity) \
             or lower `ring_entries` in the tuning file"
        }
        Some(libc::EPERM | libc::EACCES) => {
            "io_uring is forbidden here (kernel.io_uring_disabled, or a seccomp profile such as a \
             container runtime's): allow io_uring_setup/io_uring_enter, or set driver = \"epoll\" \
             in the tuning file"
        }
        Some(libc::ENOSYS) => {
            "this kernel has no io_uring (or seccomp hides it): use Linux 6.1 or later, or set \
             driver = \"epoll\" in the tuning file"
        }
        _ => "set driver = \"epoll\" in the tuning file to run without io_uring",
    }
}
