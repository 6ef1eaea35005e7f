//! SIGINT and SIGTERM end `loadtest run` and `loadtest idle` early, with their summary of what
//! was recorded so far, as Ctrl-C does with wrk. The first signal raises a flag that every
//! load thread looks at a few times a second; a second one ends the process at once, for a run
//! that cannot stop by itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

/// How often a load thread looks at the flag: late enough to cost nothing, soon enough that
/// an interrupted run ends before its user wonders.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The flag a signal raises, and which signal it was.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    raised: Arc<AtomicBool>,
    /// The number of the last signal that came, or 0.
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers of SIGINT and SIGTERM, which from now on raise this flag instead
    /// of ending the process, unless it is raised already.
    pub fn install() -> anyhow::Result<Interrupt> {
        let interrupt = Interrupt::default();
        for signal in [SIGINT, SIGTERM] {
            // Handlers run in the order registered: the shutdown sees the flag as an earlier
            // signal left it.
            let raised = Arc::clone(&interrupt.raised);
            let number = Arc::clone(&interrupt.signal);
            signal_hook::flag::register_conditional_shutdown(
                signal,
                exit_status(signal),
                Arc::clone(&raised),
            )
            .and_then(|_| signal_hook::flag::register_usize(signal, number, signal as usize))
            .and_then(|_| signal_hook::flag::register(signal, raised))
            .context("cannot install the handlers of SIGINT and SIGTERM")?;
        }
        Ok(interrupt)
    }

    /// The signal that raised the flag, if one did.
    pub fn signal(&self) -> Option<i32> {
        if !self.raised.load(Ordering::Acquire) {
            return None;
        }
        i32::try_from(self.signal.load(Ordering::Relaxed)).ok()
    }

    /// Returns once the flag is raised; for a `select!` beside the work it ends.
    pub async fn raised(&self) {
        while self.signal().is_none() {
            monoio::time::sleep(LOOK_EVERY).await;
        }
    }
}

/// The exit status of a process ended by `signal`, as a shell reports it.
pub fn exit_status(signal: i32) -> i32 {
    128 + signal
}

/// The name of `signal`, for a summary.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
