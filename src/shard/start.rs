//! Starting the shards: the port claimed, the open-files limit raised, one pinned thread per
//! shard with its runtime and listener, and a handle to stop them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::runtime::{self, Driver};
use super::{listener, Shard};
use crate::config::{Config, Workers};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be claimed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A shard's runtime could not start.
    #[error("shard {shard} could not start its runtime: {source}; {hint}")]
    Runtime {
        /// Which shard.
        shard: usize,
        /// What the kernel said.
        source: std::io::Error,
        /// What to change.
        hint: &'static str,
    },
    /// A shard could not bind its listener.
    #[error("shard {shard} cannot bind {addr}: {source}")]
    Bind {
        /// Which shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A shard thread could not be spawned.
    #[error("cannot spawn shard thread: {0}")]
    Spawn(std::io::Error),
}

/// The running shards.
pub struct Gateway {
    /// The address the shards listen on (a concrete port even when port 0 was configured).
    pub local_addr: SocketAddr,
    /// The driver the shards run on.
    pub driver: Driver,
    /// How many shards run.
    pub shards: usize,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Tells every shard to stop accepting and drain its connections.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for every shard to finish draining.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

/// Starts one shard per worker and returns once all of them listen.
pub fn start(config: Arc<Config>) -> Result<Gateway, StartError> {
    raise_open_files(config.tuning.nofile_limit);
    let configured = config.gateway.listen;
    let addr = listener::claim(configured).map_err(|source| StartError::Listen {
        addr: configured,
        source,
    })?;

    let shards = match config.gateway.workers {
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Workers::Count(count) => count,
    };
    let cores = if config.tuning.pin_cores {
        core_affinity::get_core_ids()
    } else {
        None
    };
    let preference: &'static [Driver] = if config.tuning.single_issuer {
        &[Driver::IoUringDeferTaskrun, Driver::IoUring]
    } else {
        &[Driver::IoUring]
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Driver, StartError>>();
    let mut threads = Vec::with_capacity(shards);
    for id in 0..shards {
        let core = cores
            .as_ref()
            .and_then(|cores| cores.get(id % cores.len().max(1)).copied());
        let (config, shutdown_rx, ready_tx) =
            (config.clone(), shutdown_rx.clone(), ready_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("keygate-shard-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(shard = id, core = core.id, "could not pin shard to core");
                    }
                }
                run_shard(id, addr, &config, preference, shutdown_rx, ready_tx);
            })
            .map_err(StartError::Spawn)?;
        threads.push(thread);
    }
    drop(ready_tx);

    let mut driver = Driver::IoUring;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(used)) => driver = used,
            Ok(Err(err)) => {
                let _ = shutdown.send(true);
                return Err(err);
            }
            Err(_) => break,
        }
    }
    Ok(Gateway {
        local_addr: addr,
        driver,
        shards,
        shutdown,
        threads,
    })
}

/// A shard thread's life: runtime, listener, accept loop, drain.
fn run_shard(
    id: usize,
    addr: SocketAddr,
    config: &Config,
    preference: &[Driver],
    shutdown: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<Driver, StartError>>,
) {
    let backlog = i32::try_from(config.tuning.listen_backlog).unwrap_or(i32::MAX);
    let drain_timeout = config.gateway.drain_timeout;
    let ran = runtime::block_on(preference, config.tuning.ring_entries, |driver| {
        let shard = Rc::new(Shard::new(id, config, shutdown.clone()));
        let ready = ready.clone();
        async move {
            let listener = match listener::bind(addr, backlog) {
                Ok(listener) => listener,
                Err(source) => {
                    let _ = ready.send(Err(StartError::Bind {
                        shard: id,
                        addr,
                        source,
                    }));
                    return;
                }
            };
            let _ = ready.send(Ok(driver));
            shard.run(listener, drain_timeout).await;
        }
    });
    if let Err(source) = ran {
        let hint = runtime::io_uring_hint(&source);
        let _ = ready.send(Err(StartError::Runtime {
            shard: id,
            source,
            hint,
        }));
    }
}

/// Raises the soft open-files limit toward `wanted` (capped by the hard limit): each client
/// and upstream connection holds a descriptor.
fn raise_open_files(wanted: u64) {
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open files limit"),
    }
}
