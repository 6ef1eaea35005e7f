//! Provider key states on disk: `state_dir/provider-keys.json`, so that a key cooling down or
//! disabled before a restart (or a crash) is still resting, or still out, after it.
//!
//! A thread off the request path looks at the pools once a second and writes the file when a
//! persisted state changed; the gateway's shutdown writes it a last time. The file names keys
//! by upstream and id with a fingerprint of the secret, never the secret.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{KeyPool, KeyRecord};
use super::Pools;
use crate::quota::journal::write_atomically;
use crate::quota::Clock;

/// The file's name in `state_dir`.
pub const FILE: &str = "provider-keys.json";

/// Format of the file, bumped when its meaning changes.
const FORMAT: u32 = 1;

/// How often the pools are looked at for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyStates {
    format: u32,
    /// Records by upstream name.
    upstreams: HashMap<String, Vec<KeyRecord>>,
}

/// Restores the states saved in `dir` into `pools`. A missing file is a first start; a
/// damaged one falls back to its `.prev`, and failing that is ignored with a warning: key
/// states are learned again from the providers' answers, unlike quota counters.
pub fn restore(dir: &Path, pools: &[Arc<KeyPool>], now: u64) {
    let path = dir.join(FILE);
    let states = match read(&path) {
        Ok(Some(states)) => states,
        Ok(None) => return,
        Err(reason) => match read(&path.with_extension("json.prev")) {
            Ok(Some(states)) => {
                tracing::warn!(path = %path.display(), %reason,
                    "provider key states damaged; using the previous file (.prev)");
                states
            }
            _ => {
                tracing::warn!(path = %path.display(), %reason,
                    "provider key states damaged; every key starts ready");
                return;
            }
        },
    };
    for pool in pools {
        if let Some(records) = states.upstreams.get(&*pool.upstream) {
            for key in pool.restore(records, now) {
                tracing::warn!(upstream = %pool.upstream, key,
                    "provider key restored disabled; enable it through the admin API");
            }
        }
    }
}

fn read(path: &Path) -> Result<Option<KeyStates>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let states: KeyStates = serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
    if states.format != FORMAT {
        return Err(format!("unknown format {}", states.format));
    }
    Ok(Some(states))
}

/// The thread that saves key states.
pub struct Saver {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts saving the states of the pools in `pools` (a list a reload may replace) to
    /// `dir`.
    pub fn start(dir: PathBuf, pools: Pools) -> std::io::Result<Saver> {
        let (stop, stopped) = mpsc::channel::<()>();
        let path = dir.join(FILE);
        let thread = std::thread::Builder::new()
            .name("keygate-key-states".into())
            .spawn(move || {
                let mut saved = versions(&current(&pools));
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(CHECK_EVERY),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    let list = current(&pools);
                    let now = versions(&list);
                    let any = !list.is_empty() || !saved.is_empty();
                    if any && (now != saved || last) {
                        save(&path, &list);
                        saved = now;
                    }
                    if last {
                        return;
                    }
                }
            })?;
        Ok(Saver {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes the states a last time and stops.
    pub fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pools in use now.
pub fn current(pools: &Pools) -> Vec<Arc<KeyPool>> {
    pools
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Each pool's identity and version: a replaced pool counts as a change.
fn versions(pools: &[Arc<KeyPool>]) -> Vec<(usize, u64)> {
    pools
        .iter()
        .map(|pool| (Arc::as_ptr(pool) as usize, pool.version()))
        .collect()
}

fn save(path: &Path, pools: &[Arc<KeyPool>]) {
    let states = KeyStates {
        format: FORMAT,
        upstreams: pools
            .iter()
            .map(|pool| (pool.upstream.to_string(), pool.records()))
            .collect(),
    };
    if let Err(err) = write_atomically(path, &states) {
        tracing::error!(path = %path.display(), error = %err,
            "cannot persist provider key states; they survive only in memory");
    }
}

/// Wall-clock now, for restoring at start.
pub fn now() -> u64 {
    Clock::default().now()
}
