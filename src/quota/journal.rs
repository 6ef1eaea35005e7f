//! Persisting quota counters in `state_dir`, off the request path.
//!
//! Every `persist_interval` each shard hands a snapshot of the counters it owns (only when
//! they changed) to one writer thread, which writes `quota-shard-N.json` atomically: a
//! temporary file, fsync, the previous snapshot kept as `.prev`, rename, fsync of the
//! directory. A crash loses at most one interval; a clean stop writes a last snapshot after
//! the drain and loses nothing.
//!
//! At start every `quota-shard-*.json` is read, whatever shard count wrote it, and each
//! shard takes back the principals it now owns. A damaged snapshot is reported and its
//! `.prev` used instead; when both are damaged the gateway refuses to start rather than
//! silently zero the counters (docs/state.md says how to recover).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::Counters;
use crate::keys::KeyTable;

/// The snapshot format's version; a newer one is refused, not misread.
const FORMAT: u32 = 1;

/// One shard's counters as written to disk, by principal name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The format version.
    pub format: u32,
    /// When it was taken, in nanoseconds since the epoch.
    pub taken_at: u64,
    /// Counters by client key id.
    pub keys: HashMap<String, Counters>,
    /// Counters by tenant name.
    pub tenants: HashMap<String, Counters>,
}

/// Why persisted state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory cannot be created or read.
    #[error("state directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A snapshot and its `.prev` are both unreadable.
    #[error(
        "quota state {path} is damaged ({reason}) and so is its .prev copy; to start anyway \
         with zeroed counters for the keys it held, move both files aside (see docs/state.md)"
    )]
    Damaged {
        /// The damaged snapshot.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// All persisted counters, merged from every shard's snapshot.
#[derive(Debug, Default)]
pub struct Restored {
    /// Counters by client key id.
    pub keys: HashMap<String, Counters>,
    /// Counters by tenant name.
    pub tenants: HashMap<String, Counters>,
}

/// Reads every snapshot in `dir`, creating the directory if needed.
pub fn load(dir: &Path) -> Result<Restored, StateError> {
    let directory = |source| StateError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(directory)?;
    let mut restored = Restored::default();
    let mut taken: HashMap<String, u64> = HashMap::new();

    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| is_snapshot_name(path))
        .collect();
    paths.sort();

    for path in paths {
        let snapshot = match read_snapshot(&path) {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                let prev = path.with_extension("json.prev");
                match read_snapshot(&prev) {
                    Ok(snapshot) => {
                        tracing::warn!(path = %path.display(), %reason,
                            "quota state damaged; using the previous snapshot (.prev), which \
                             may be up to two persist intervals old");
                        snapshot
                    }
                    Err(_) => return Err(StateError::Damaged { path, reason }),
                }
            }
        };
        // A principal found in several snapshots (the shard count changed): the newest wins.
        for (tenant, entries) in [(false, snapshot.keys), (true, snapshot.tenants)] {
            for (name, counters) in entries {
                let slot = if tenant {
                    &mut restored.tenants
                } else {
                    &mut restored.keys
                };
                let seen = taken.entry(format!("{tenant}:{name}")).or_insert(0);
                if snapshot.taken_at >= *seen {
                    *seen = snapshot.taken_at;
                    slot.insert(name, counters);
                }
            }
        }
    }
    Ok(restored)
}

fn is_snapshot_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("quota-shard-") && name.ends_with(".json"))
}

fn read_snapshot(path: &Path) -> Result<Snapshot, String> {
    let bytes = fs::read(path).map_err(|err| err.to_string())?;
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
    if snapshot.format != FORMAT {
        return Err(format!("unknown format {}", snapshot.format));
    }
    Ok(snapshot)
}

/// A request to the writer thread.
enum Job {
    Write {
        shard: usize,
        update: Update,
        done: Option<mpsc::Sender<()>>,
    },
    /// Name positions with this table from now on (keys or tenants were added).
    Names(Arc<KeyTable>),
    Stop,
}

/// What a shard sends: a whole snapshot, or only the principals that changed, by table
/// position, for the writer to name and merge into the shard's snapshot.
enum Update {
    Whole(Snapshot),
    Changes {
        taken_at: u64,
        changes: Vec<(bool, u32, Counters)>,
    },
}

/// The thread that writes snapshots, so no shard ever blocks on the disk or spends its time
/// naming and serialising counters.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

/// A shard's handle to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer for snapshots in `dir`; `names` turns table positions into the key
    /// ids and tenant names the files use.
    pub fn start(dir: PathBuf, names: Arc<KeyTable>) -> io::Result<Writer> {
        fs::create_dir_all(&dir)?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("keygate-state".into())
            .spawn(move || {
                let mut snapshots: HashMap<usize, Snapshot> = HashMap::new();
                let mut names = names;
                loop {
                    let (shard, update, done) = match inbox.recv() {
                        Ok(Job::Write {
                            shard,
                            update,
                            done,
                        }) => (shard, update, done),
                        Ok(Job::Names(table)) => {
                            names = table;
                            continue;
                        }
                        Ok(Job::Stop) | Err(_) => break,
                    };
                    let snapshot = snapshots.entry(shard).or_insert_with(|| Snapshot::new(0));
                    merge(snapshot, update, &names);
                    let path = dir.join(format!("quota-shard-{shard}.json"));
                    if let Err(err) = write_atomically(&path, snapshot) {
                        tracing::error!(path = %path.display(), error = %err,
                            "cannot persist quota counters; they survive only in memory");
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(Writer {
            jobs,
            thread: Some(thread),
        })
    }

    /// A handle for a shard.
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            jobs: self.jobs.clone(),
        }
    }

    /// Writes every snapshot queued so far, then stops the writer. Call after every shard
    /// has stopped; later snapshots are not written.
    pub fn finish(mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Brings a shard's snapshot up to date.
fn merge(snapshot: &mut Snapshot, update: Update, names: &KeyTable) {
    match update {
        Update::Whole(whole) => *snapshot = whole,
        Update::Changes { taken_at, changes } => {
            snapshot.taken_at = taken_at;
            for (tenant, index, counters) in changes {
                if tenant {
                    let name = names.tenant(index).name.to_string();
                    snapshot.tenants.insert(name, counters);
                } else {
                    snapshot
                        .keys
                        .insert(names.key(index).id.to_string(), counters);
                }
            }
        }
    }
}

impl WriterHandle {
    /// Hands the writer a newer key table. Positions never change meaning, so a newer table
    /// names every position an older one did; send it before any shard uses it.
    pub fn names(&self, table: Arc<KeyTable>) {
        let _ = self.jobs.send(Job::Names(table));
    }

    /// Queues a whole snapshot; never blocks.
    pub fn write(&self, shard: usize, snapshot: Snapshot) {
        self.send(shard, Update::Whole(snapshot), None);
    }

    /// Queues the principals that changed; never blocks. With `confirm`, the receiver hears
    /// when the snapshot holding them is on disk.
    pub fn update(
        &self,
        shard: usize,
        taken_at: u64,
        changes: Vec<(bool, u32, Counters)>,
        confirm: bool,
    ) -> Option<mpsc::Receiver<()>> {
        let (done, confirmed) = if confirm {
            let (done, confirmed) = mpsc::channel();
            (Some(done), Some(confirmed))
        } else {
            (None, None)
        };
        self.send(shard, Update::Changes { taken_at, changes }, done);
        confirmed
    }

    fn send(&self, shard: usize, update: Update, done: Option<mpsc::Sender<()>>) {
        let _ = self.jobs.send(Job::Write {
            shard,
            update,
            done,
        });
    }
}

impl Snapshot {
    /// An empty snapshot taken at `now`.
    pub fn new(taken_at: u64) -> Snapshot {
        Snapshot {
            format: FORMAT,
            taken_at,
            ..Snapshot::default()
        }
    }
}

/// Reads the JSON state file `path`, or its `.prev` copy when it is missing or damaged
/// (`check` says what else makes it unusable, such as an unknown format). `Ok(None)`:
/// neither exists. `Err`: what is wrong with `path`, when no copy could stand in.
pub(crate) fn read_state<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<Option<T>, String> {
    let read = |path: &Path| -> Result<Option<T>, String> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.to_string()),
        };
        let value: T = serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
        check(&value)?;
        Ok(Some(value))
    };
    let prev = path.with_extension("json.prev");
    match read(path) {
        Ok(Some(value)) => Ok(Some(value)),
        Ok(None) => {
            let value = read(&prev)
                .map_err(|reason| format!("missing, and its .prev copy is damaged ({reason})"))?;
            if value.is_some() {
                tracing::warn!(path = %path.display(), "state file missing; using its .prev copy");
            }
            Ok(value)
        }
        Err(reason) => match read(&prev) {
            Ok(Some(value)) => {
                tracing::warn!(path = %path.display(), %reason,
                    "state file damaged; using its .prev copy, one change older");
                Ok(Some(value))
            }
            _ => Err(reason),
        },
    }
}

/// Writes `value` as JSON to `path` so that a crash leaves either the old file or the new one:
/// through a synced temporary file renamed into place, the old one kept as `.prev`. `path`
/// exists at every instant once it was first written: the old file is linked to `.prev`
/// (not moved there), and the rename replaces it in one step. The file is readable by its
/// owner only: state files name keys, and one holds provider secrets.
pub(crate) fn write_atomically<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file keeps its mode through `open`; set it anyway.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        // serde_json writes token by token: unbuffered, a snapshot of a thousand keys took
        // tens of thousands of system calls.
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut file);
        serde_json::to_writer(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
    }
    if path.exists() {
        let prev = path.with_extension("json.prev");
        match fs::remove_file(&prev) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        fs::hard_link(path, &prev)?;
    }
    fs::rename(&tmp, path)?;
    // The new file is whole and in place; only the durability of the rename is in doubt if
    // the directory cannot be synced, which is no reason to report the write as failed.
    if let Some(dir) = path.parent() {
        if let Err(err) = fs::File::open(dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(path = %path.display(), error = %err,
                "cannot sync the state directory; the file is written but a power loss may undo it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("keygate-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn snapshot(taken_at: u64, key: &str, tat: u64) -> Snapshot {
        let mut snapshot = Snapshot::new(taken_at);
        snapshot.keys.insert(
            key.into(),
            Counters {
                rate_tat: tat,
                ..Counters::default()
            },
        );
        snapshot
    }

    #[test]
    fn snapshots_round_trip_and_newest_wins() {
        let dir = temp_dir("round-trip");
        let writer = Writer::start(dir.clone(), Arc::default()).unwrap();
        let handle = writer.handle();
        handle.write(0, snapshot(10, "a", 1));
        handle.write(1, snapshot(20, "a", 2));
        handle.write(1, snapshot(30, "b", 3));
        writer.finish();

        let restored = load(&dir).unwrap();
        // Shard 1's last snapshot no longer holds "a"; shard 0's does.
        assert_eq!(restored.keys["a"].rate_tat, 1);
        assert_eq!(restored.keys["b"].rate_tat, 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_atomic_write_keeps_the_file_in_place_and_the_old_one_as_prev() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("atomic");
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        write_atomically(&path, &1).expect("first");
        assert!(!path.with_extension("json.prev").exists());
        write_atomically(&path, &2).expect("second");
        write_atomically(&path, &3).expect("third");
        let read = |p: &Path| fs::read_to_string(p).expect("read");
        assert_eq!(read(&path), "3\n");
        assert_eq!(read(&path.with_extension("json.prev")), "2\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The reader takes the copy when the file is gone or damaged.
        let check = |_: &u32| Ok(());
        assert_eq!(read_state::<u32>(&path, check), Ok(Some(3)));
        fs::write(&path, "{garbage").expect("damage");
        assert_eq!(read_state::<u32>(&path, check), Ok(Some(2)));
        fs::remove_file(&path).expect("remove");
        assert_eq!(read_state::<u32>(&path, check), Ok(Some(2)));
        fs::write(path.with_extension("json.prev"), "x").expect("damage the copy");
        assert!(read_state::<u32>(&path, check).is_err());
        fs::write(&path, "y").expect("damage both");
        assert!(read_state::<u32>(&path, check).is_err());
        fs::remove_file(path.with_extension("json.prev")).expect("remove the copy");
        fs::remove_file(&path).expect("remove");
        assert_eq!(read_state::<u32>(&path, check), Ok(None));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_snapshot_falls_back_to_prev() {
        let dir = temp_dir("damaged");
        let writer = Writer::start(dir.clone(), Arc::default()).unwrap();
        writer.handle().write(0, snapshot(10, "a", 7));
        writer.handle().write(0, snapshot(20, "a", 8));
        writer.finish();
        fs::write(
            dir.join("quota-shard-0.json"),
            b"{\"format\":1,\"taken_at\":",
        )
        .unwrap();

        let restored = load(&dir).unwrap();
        assert_eq!(restored.keys["a"].rate_tat, 7);

        fs::write(dir.join("quota-shard-0.json.prev"), b"garbage").unwrap();
        assert!(matches!(load(&dir), Err(StateError::Damaged { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_is_created() {
        let dir = temp_dir("missing");
        let restored = load(&dir).unwrap();
        assert!(restored.keys.is_empty() && dir.is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }
}
