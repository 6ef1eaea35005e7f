//! The per-thread monoio runtime both tools run on: io_uring with a single issuer and deferred
//! task work where the kernel has it (Linux 6.1), plain io_uring, or the legacy epoll driver.

use std::future::Future;

use anyhow::Context;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::warn;

/// Runs `task` to completion on this thread, on the best driver this kernel allows. `task` is
/// given the name of the driver chosen, for logs.
pub fn block_on<T, F>(task: T) -> anyhow::Result<F::Output>
where
    T: FnOnce(&'static str) -> F,
    F: Future,
{
    // Completions are then processed only when this thread waits for them, instead of by the
    // other cores' network processing contending on the ring's lock.
    let mut deferred = io_uring::IoUring::builder();
    deferred.setup_single_issuer().setup_defer_taskrun();
    let runtime = RuntimeBuilder::<IoUringDriver>::new()
        .uring_builder(deferred)
        .enable_timer()
        .build()
        .map(|runtime| (runtime, "io_uring, deferred task work"))
        .or_else(|_| {
            let runtime = RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .build();
            runtime.map(|runtime| (runtime, "io_uring"))
        });
    match runtime {
        Ok((mut runtime, driver)) => Ok(runtime.block_on(task(driver))),
        Err(err) => {
            warn!(error = %err, "io_uring cannot start; using the legacy driver");
            let mut runtime = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()
                .context("cannot start a runtime")?;
            Ok(runtime.block_on(task("legacy")))
        }
    }
}
