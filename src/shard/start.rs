//! Starting the shards: the port claimed, the open-files limit raised, one pinned thread per
//! shard with its runtime and listener, and a handle to stop them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

use super::runtime::{self, Driver};
use super::{listener, Control, ControlPlane, Controls, Handoff, Shard, Shared};
use crate::accesslog::{AccessLog, Options, ShardLog};
use crate::clients::{self, Clients, Overlay};
use crate::config::{Config, DriverChoice, Workers};
use crate::metrics::{Counts, Labels, ShardMetrics};
use crate::overrides::Overrides;
use crate::quota::journal::{self, StateError, Writer};
use crate::quota::Clock;
use crate::upstream::persist::{self, Saver};
use crate::upstream::{KeyPool, Pools};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be claimed.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// A shard's runtime could not start.
    #[error("shard {shard} could not start its runtime: {error}; {hint}")]
    Runtime {
        /// Which shard.
        shard: usize,
        /// What the kernel said.
        error: std::io::Error,
        /// What to change.
        hint: &'static str,
    },
    /// A shard could not bind its listener.
    #[error("shard {shard} cannot bind {addr}: {error}")]
    Bind {
        /// Which shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// A shard thread could not be spawned.
    #[error("cannot spawn shard thread: {0}")]
    Spawn(std::io::Error),
    /// Persisted quota state cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another running keygate uses the same state directory.
    #[error("state_dir {0} is in use by another running keygate; give each instance its own")]
    StateInUse(std::path::PathBuf),
    /// The admin API's route states and provider keys cannot be read.
    #[error(transparent)]
    Overrides(#[from] crate::overrides::OverridesError),
    /// The admin API's route states and provider keys no longer fit the config file.
    #[error(
        "the admin API's route states or provider keys (state_dir/overrides.json) do not \
             fit the config: {0}"
    )]
    OverridesInvalid(crate::clients::Invalid),
    /// The admin API's client key changes cannot be read.
    #[error(transparent)]
    Clients(#[from] crate::clients::OverlayError),
    /// The admin API's client key changes no longer fit the config file.
    #[error(
        "the admin API's client key changes (state_dir/clients.json) do not fit the \
             config: {0}"
    )]
    ClientsInvalid(crate::clients::Invalid),
    /// The access log cannot be opened.
    #[error("cannot open access_log {path}: {error}")]
    AccessLog {
        /// The configured path.
        path: std::path::PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
}

/// The running shards.
pub struct Gateway {
    /// The address the shards listen on (a concrete port even when port 0 was configured).
    pub local_addr: SocketAddr,
    /// The driver the shards run on.
    pub driver: Driver,
    /// How many shards run.
    pub shards: usize,

    /// Each shard's published metrics, for the admin listener.
    pub metrics: Vec<Arc<Mutex<Counts>>>,
    /// What the admin API and reloads change: client keys, routes, upstreams, limits.
    pub plane: Arc<ControlPlane>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    writer: Option<Writer>,
    saver: Option<Saver>,
    access_log: Option<AccessLog>,
    /// Held for the gateway's life: the lock that keeps a second instance off `state_dir`.
    _state_lock: std::fs::File,
}

impl Gateway {
    /// Tells every shard to stop accepting and drain its connections.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The access log's counters, when one is kept.
    pub fn access_log_stats(&self) -> Option<Arc<crate::accesslog::Stats>> {
        self.access_log.as_ref().map(AccessLog::stats)
    }

    /// Starts a new access log file at the configured path (after logrotate moved the old
    /// one away): for SIGUSR1.
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            match log.reopen() {
                Ok(()) => tracing::info!("access log reopened"),
                Err(err) => tracing::error!(error = %err,
                    "cannot reopen the access log; records keep going to the old file"),
            }
        }
    }

    /// Applies a reloaded, validated config (see [`ControlPlane::reload`]).
    pub fn reload(&self, config: Config) -> Result<String, super::ReloadError> {
        self.plane.reload(config)
    }

    /// Waits for every shard to finish draining and for their last snapshots to be written.
    pub fn join(mut self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
        if let Some(writer) = self.writer {
            writer.finish();
        }
        if let Some(saver) = self.saver {
            saver.finish();
        }
        if let Some(mut log) = self.access_log.take() {
            if let Err(err) = log.finish() {
                tracing::error!(error = %err, "the access log could not be finished");
            }
            let (written, dropped) = (log.written(), log.dropped());
            tracing::info!(written, dropped, "access log closed");
        }
    }
}

/// Starts one shard per worker and returns once all of them listen.
///
/// The client keys move out of `config` into the shared key table: with a million keys,
/// keeping both would double the memory they take.
pub fn start(mut config: Config) -> Result<Gateway, StartError> {
    let open_files = raise_open_files(config.tuning.nofile_limit);
    let configured = config.gateway.listen;
    let addr = listener::claim(configured).map_err(|error| StartError::Listen {
        addr: configured,
        error,
    })?;

    let shards = match config.gateway.workers {
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Workers::Count(count) => count,
    };
    warn_if_open_files_short(open_files, shards, config.gateway.max_connections);
    let cores = if config.tuning.pin_cores {
        core_affinity::get_core_ids()
    } else {
        None
    };
    let preference: &'static [Driver] = match (config.tuning.driver, config.tuning.single_issuer) {
        (DriverChoice::Epoll, _) => &[Driver::Epoll],
        (DriverChoice::IoUring, true) => &[Driver::IoUringDeferTaskrun, Driver::IoUring],
        (DriverChoice::IoUring, false) => &[Driver::IoUring],
    };

    // Counters are restored before any shard starts, so no request sees them zeroed.
    let state_dir = config.gateway.state_dir.clone();
    let restored = Arc::new(journal::load(&state_dir)?);
    let overlay = Overlay::load(&state_dir)?;
    let fit = (shards, Clock::default().now(), clients::Fit::Lenient);
    let keys =
        clients::compose(None, &config, &overlay, fit).map_err(StartError::ClientsInvalid)?;
    let keys = Arc::new(keys);
    config.client_keys = Vec::new();
    // The shards run the file with the admin API's route states and provider keys on top.
    let overrides = Overrides::load(&state_dir)?;
    let file = Arc::new(config.clone_without_keys());
    overrides
        .apply(&mut config)
        .map_err(StartError::OverridesInvalid)?;
    let config = Arc::new(config);
    let state_lock = lock_state_dir(&state_dir)?;
    let access_log = match Options::from_gateway(&config.gateway) {
        Some(options) => {
            let path = options.path.clone();
            Some(AccessLog::open(options).map_err(|error| StartError::AccessLog { path, error })?)
        }
        None => None,
    };
    let mut shard_logs = (0..shards).map(|_| access_log.as_ref().map(AccessLog::shard_log));
    let (routes, upstreams) = (config.routes.len(), config.upstreams.len());
    let (shard_metrics, published): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| ShardMetrics::new(routes, upstreams))
        .unzip();
    let mut shard_metrics = shard_metrics.into_iter();
    let writer = Writer::start(state_dir.clone(), Arc::clone(&keys)).map_err(|source| {
        StateError::Directory {
            path: state_dir.clone(),
            source,
        }
    })?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| mpsc::unbounded_channel::<Handoff>())
        .unzip();
    let (controls, control_inboxes): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| mpsc::unbounded_channel::<Control>())
        .unzip();
    let mut control_inboxes = control_inboxes.into_iter();
    let pools: Vec<Option<Arc<KeyPool>>> = config
        .upstreams
        .iter()
        .map(|upstream| KeyPool::new(upstream).map(Arc::new))
        .collect();
    let present: Vec<Arc<KeyPool>> = pools.iter().flatten().cloned().collect();
    persist::restore(&state_dir, &present, persist::now());
    let present: Pools = Arc::new(std::sync::RwLock::new(present));
    let saver = Saver::start(state_dir, Arc::clone(&present)).map_err(StartError::Spawn)?;
    let controls: Controls = controls.into();
    let mut labels = Labels::default();
    let slots = labels.slots(&config);
    let shared = Arc::new(Shared {
        slots,
        keys: Arc::clone(&keys),
        inboxes: senders.into(),
        restored,
        state: Some(writer.handle()),
        pools,
        started: std::time::SystemTime::now(),
    });
    let mut receivers = receivers.into_iter();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Driver, StartError>>();
    let mut threads = Vec::with_capacity(shards);
    for id in 0..shards {
        let core = cores
            .as_ref()
            .and_then(|cores| cores.get(id % cores.len().max(1)).copied());
        let (config, shutdown_rx, ready_tx) =
            (config.clone(), shutdown_rx.clone(), ready_tx.clone());
        let (shared, inbox) = (
            Arc::clone(&shared),
            receivers.next().zip(control_inboxes.next()),
        );
        let access: Option<ShardLog> = shard_logs.next().flatten();
        let metrics = shard_metrics.next();
        let thread = std::thread::Builder::new()
            .name(format!("keygate-shard-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(shard = id, core = core.id, "could not pin shard to core");
                    }
                }
                let setup = ShardSetup {
                    id,
                    addr,
                    preference,
                    shutdown: shutdown_rx,
                    ready: ready_tx,
                };
                if let (Some(inbox), Some(metrics)) = (inbox, metrics) {
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_shard(setup, &config, &shared, inbox, (access, metrics))
                    }));
                    // A shard that died would leave its keys unserved while the process looks
                    // healthy; better to exit and let the service manager start it again
                    // (counters are at most `persist_interval` old on disk).
                    if ran.is_err() {
                        tracing::error!(shard = id, "a shard panicked; exiting");
                        std::process::exit(70);
                    }
                }
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
    let keys = Arc::clone(&shared.keys);
    drop(shared);
    Ok(Gateway {
        local_addr: addr,
        driver,
        shards,
        shutdown,
        threads,
        metrics: published,
        plane: Arc::new(ControlPlane::new(
            (file, overrides, Arc::clone(&config)),
            present,
            Arc::new(std::sync::RwLock::new(labels)),
            Arc::new(Clients::new(
                keys,
                overlay,
                Arc::clone(&controls),
                writer.handle(),
                &config.gateway.state_dir,
            )),
            controls,
        )),
        writer: Some(writer),
        saver: Some(saver),
        access_log,
        _state_lock: state_lock,
    })
}

/// Where a shard thread starts from.
struct ShardSetup {
    id: usize,
    addr: SocketAddr,
    preference: &'static [Driver],
    shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<Driver, StartError>>,
}

/// A shard thread's life: runtime, listener, accept loop, drain, last snapshot.
fn run_shard(
    setup: ShardSetup,
    config: &Config,
    shared: &Shared,
    inbox: (
        mpsc::UnboundedReceiver<Handoff>,
        mpsc::UnboundedReceiver<Control>,
    ),
    (access, metrics): (Option<ShardLog>, ShardMetrics),
) {
    let ShardSetup {
        id,
        addr,
        preference,
        shutdown,
        ready,
    } = setup;
    let backlog = i32::try_from(config.tuning.listen_backlog).unwrap_or(i32::MAX);
    let drain_timeout = config.gateway.drain_timeout;
    let mut inbox = Some(inbox);
    let mut parts = Some((access, metrics));
    let ran = runtime::block_on(preference, config.tuning.ring_entries, |driver| {
        // The runtime that starts runs this once; the parts move into its shard.
        let shard = parts.take().map(|(access, metrics)| {
            Rc::new(Shard::new(
                id,
                config,
                shutdown.clone(),
                shared,
                access,
                metrics,
            ))
        });
        let ready = ready.clone();
        let inbox = inbox.take();
        async move {
            let Some(shard) = shard else { return };
            let listener = match listener::bind(addr, backlog) {
                Ok(listener) => listener,
                Err(error) => {
                    let _ = ready.send(Err(StartError::Bind {
                        shard: id,
                        addr,
                        error,
                    }));
                    return;
                }
            };
            let _ = ready.send(Ok(driver));
            if let Some(inbox) = inbox {
                shard.run(listener, inbox, drain_timeout).await;
            }
        }
    });
    if let Err(error) = ran {
        let hint = runtime::io_uring_hint(&error);
        let _ = ready.send(Err(StartError::Runtime {
            shard: id,
            error,
            hint,
        }));
    }
}

/// Takes the lock on `state_dir`: two instances writing the same snapshots would overwrite
/// each other's counters. The lock is released when the process ends, however it ends.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let directory = |source| StateError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|err| StartError::State(directory(err)))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::StateInUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(err)) => Err(StartError::State(directory(err))),
    }
}

/// Raises the soft open-files limit toward `wanted` (capped by the hard limit): each client
/// and upstream connection holds a descriptor. Returns the limit in force, if known.
fn raise_open_files(wanted: u64) -> Option<u64> {
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => {
            tracing::debug!(limit, "open files limit");
            Some(limit)
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not raise the open files limit");
            None
        }
    }
}

/// Descriptors kept free of client connections: listeners, the ring, logs, state files and
/// at least some upstream connections.
const OPEN_FILES_HEADROOM: u64 = 1024;

/// Warns when the open-files limit runs out before `max_connections` on every shard does:
/// accepts would then fail (and back off) while the connection limit still allows more,
/// and upstream connections would find no descriptor either.
fn warn_if_open_files_short(limit: Option<u64>, shards: usize, max_connections: usize) {
    let Some(limit) = limit else { return };
    let clients = (shards as u64).saturating_mul(max_connections as u64);
    if limit < clients.saturating_add(OPEN_FILES_HEADROOM) {
        tracing::warn!(
            limit,
            shards,
            max_connections,
            "the open-files limit is below max_connections on every shard (plus {} for \
             listeners, files and upstream connections): descriptors run out first; raise \
             the limit (the tuning's nofile_limit, up to the hard limit: systemd \
             LimitNOFILE, ulimit -Hn) or lower max_connections",
            OPEN_FILES_HEADROOM
        );
    }
}
