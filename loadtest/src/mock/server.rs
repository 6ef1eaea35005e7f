//! Start-up of the mock: one worker thread per `--workers`, each a monoio runtime (see
//! [`crate::runtime`]) with its own SO_REUSEPORT listener.
//!
//! Workers share nothing mutable but the provider keys' table (see `keys`): each numbers its own
//! requests, interleaved with the other workers' so that ids stay unique in the process without
//! an atomic counter.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use monoio::net::{ListenerOpts, TcpListener};
use tracing::{info, warn};

use super::conn;
use super::keys::Keys;
use super::knobs::Defaults;

/// Connections waiting to be accepted, per listener (the kernel caps it at somaxconn).
const BACKLOG: i32 = 4096;

/// The state of one worker thread, shared by its connections.
#[derive(Debug)]
pub struct Worker {
    /// Behaviour when a request does not ask for another.
    pub defaults: Defaults,
    /// The provider keys, shared by all workers.
    pub keys: Arc<Keys>,
    next_id: Cell<u64>,
    stride: u64,
}

impl Worker {
    /// Worker `index` of `workers`.
    pub fn new(index: usize, workers: usize, defaults: Defaults, keys: Arc<Keys>) -> Self {
        Worker {
            defaults,
            keys,
            next_id: Cell::new(index as u64 + 1),
            stride: workers as u64,
        }
    }

    /// The next request id: worker `i` of `n` hands out `i + 1`, `i + 1 + n`, ...
    pub fn next_request_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + self.stride);
        id
    }
}

/// Binds `listen` on `workers` threads, logs the bound address, and serves until killed.
pub fn run(
    listen: SocketAddr,
    workers: usize,
    defaults: Defaults,
    keys: Keys,
) -> anyhow::Result<()> {
    // A plain bind (no SO_REUSEPORT) fails while another process, such as a stale mock, listens
    // on the port, which the workers' listeners would otherwise silently share. It also picks
    // the port when 0 is asked, so that every worker binds the same one.
    let addr = std::net::TcpListener::bind(listen)
        .and_then(|probe| probe.local_addr())
        .with_context(|| format!("cannot listen on {listen}"))?;

    let keys = Arc::new(keys);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let ready = ready_tx.clone();
        let worker = Worker::new(index, workers, defaults, Arc::clone(&keys));
        let thread = thread::Builder::new()
            .name(format!("mock-{index}"))
            .spawn(move || worker_thread(worker, addr, ready))
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut driver = "";
    for _ in 0..workers {
        let bound: io::Result<&str> = ready_rx.recv().context("a worker stopped before binding")?;
        driver = bound.with_context(|| format!("cannot listen on {addr}"))?;
    }
    info!(workers, driver, "listening on {addr}");

    for thread in threads {
        match thread.join() {
            Ok(result) => result?,
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    Ok(())
}

/// Runs one worker on its own runtime until the process ends.
fn worker_thread(
    worker: Worker,
    addr: SocketAddr,
    ready: mpsc::Sender<io::Result<&'static str>>,
) -> anyhow::Result<()> {
    crate::runtime::block_on(|driver| accept_loop(worker, addr, ready, driver))?
}

/// Binds this worker's listener, reports it and the `driver` on `ready`, then accepts until the
/// process ends.
async fn accept_loop(
    worker: Worker,
    addr: SocketAddr,
    ready: mpsc::Sender<io::Result<&'static str>>,
    driver: &'static str,
) -> anyhow::Result<()> {
    let opts = ListenerOpts::new().reuse_port(true).backlog(BACKLOG);
    let listener = match TcpListener::bind_with_config(addr, &opts) {
        Ok(listener) => listener,
        Err(err) => {
            // The main thread reports the failure and exits.
            let _ = ready.send(Err(err));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(driver));

    let worker = Rc::new(worker);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // Replies are written whole; waiting to fill a segment only adds latency.
                let _ = stream.set_nodelay(true);
                let worker = Rc::clone(&worker);
                monoio::spawn(async move { conn::serve(stream, &worker).await });
            }
            Err(err) => {
                // Out of descriptors, most likely: back off instead of spinning.
                warn!(error = %err, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
