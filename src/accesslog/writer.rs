//! The access log's control plane: the file, the writer thread that alone touches it, size
//! rotation, reopening on SIGUSR1, and the final sync.
//!
//! All file I/O happens on the writer thread; shards only hand it buffers (see `shard`).
//! Lines are never split: a batch is cut only at line ends, and a line goes whole into one
//! file, so each file holds complete records.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::shard::{Batch, Message, ShardLog, Stats};
use crate::config::Gateway;

/// Default [`Options::max_bytes`]: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
/// Default [`Options::keep`].
pub const DEFAULT_KEEP: u32 = 5;
/// Default [`Options::batch_bytes`]: 64 KiB.
pub const DEFAULT_BATCH_BYTES: usize = 64 << 10;
/// Default [`Options::queue_batches`].
pub const DEFAULT_QUEUE_BATCHES: usize = 256;
/// Default [`Options::write_behind`]: 1 MiB.
pub const DEFAULT_WRITE_BEHIND: u64 = 1 << 20;

/// Where and how the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The file; created with mode 0640 (less the umask) if missing, appended to if not.
    pub path: PathBuf,
    /// Size in bytes past which the file is rotated; 0 never rotates (for logrotate with
    /// SIGUSR1). Default [`DEFAULT_MAX_BYTES`].
    pub max_bytes: u64,
    /// Rotated files kept, as `PATH.1` (newest) to `PATH.N`; at least 1. Default
    /// [`DEFAULT_KEEP`].
    pub keep: u32,
    /// Bytes a shard gathers before handing them to the writer. Default
    /// [`DEFAULT_BATCH_BYTES`].
    pub batch_bytes: usize,
    /// Batches waiting for the writer, across all shards, before shards drop records.
    /// Default [`DEFAULT_QUEUE_BATCHES`] (16 MiB of records at the default batch size).
    pub queue_batches: usize,
    /// Written bytes handed to the disk at a time: each such step is sent on its way as soon
    /// as it is whole, and an earlier one, on disk by then, leaves the page cache. 0
    /// leaves writing back to the kernel, which lets dirty pages pile up and then writes them
    /// in bursts that take a core for tens of milliseconds. Default [`DEFAULT_WRITE_BEHIND`].
    pub write_behind: u64,
}

impl Options {
    /// Options for `path` with every default.
    pub fn new(path: impl Into<PathBuf>) -> Options {
        Options {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            batch_bytes: DEFAULT_BATCH_BYTES,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            write_behind: DEFAULT_WRITE_BEHIND,
        }
    }

    /// The options `[gateway]` sets; `None` when it names no access log.
    pub fn from_gateway(gateway: &Gateway) -> Option<Options> {
        let path = gateway.access_log.as_ref()?;
        Some(Options {
            max_bytes: gateway.access_log_max_bytes,
            keep: gateway.access_log_keep,
            ..Options::new(path)
        })
    }
}

/// The access log: owns the writer thread. Made once at start-up; each shard gets a
/// [`ShardLog`] from it.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Message>,
    stats: Arc<Stats>,
    batch_bytes: usize,
    writer: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Opens (or creates) the file and starts the writer thread. Fails if the file cannot
    /// be opened, so a wrong path stops start-up instead of losing every record.
    pub fn open(options: Options) -> io::Result<AccessLog> {
        let file = open_append(&options.path)?;
        let size = file.metadata()?.len();
        let stats = Arc::new(Stats::new());
        let (queue, inbox) = mpsc::sync_channel(options.queue_batches.max(1));
        let writer = Writer {
            path: options.path,
            file,
            size,
            behind: WriteBehind::new(options.write_behind, size),
            max_bytes: options.max_bytes,
            keep: options.keep.max(1),
            stats: Arc::clone(&stats),
            cut_line: false,
        };
        let handle = std::thread::Builder::new()
            .name("keygate-accesslog".into())
            .spawn(move || writer.run(inbox))?;
        Ok(AccessLog {
            queue,
            stats,
            batch_bytes: options.batch_bytes.max(1),
            writer: Some(handle),
        })
    }

    /// The log's counters, for metrics: readable from any thread.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// A handle for one shard. Each shard needs its own; they all feed this log.
    pub fn shard_log(&self) -> ShardLog {
        ShardLog::new(
            self.queue.clone(),
            Arc::clone(&self.stats),
            self.batch_bytes,
        )
    }

    /// Closes the file and opens the same path again, after everything queued before the
    /// call is written: after logrotate (or an operator) renamed the file, new records go
    /// to a new file at the configured path. For SIGUSR1. Blocks until done; if the path
    /// cannot be opened, records keep going to the old file and the error is returned.
    pub fn reopen(&self) -> io::Result<()> {
        self.ask(Message::Reopen)
    }

    /// Writes every batch queued before the call, syncs the file to disk and stops the
    /// writer. Call it after every shard has flushed its [`ShardLog`] for the last time;
    /// records handed over later are counted as dropped. The counters stay readable; a
    /// second call does nothing.
    pub fn finish(&mut self) -> io::Result<()> {
        self.stop()
    }

    /// Records lost so far: dropped because the writer was behind or stopped, or not
    /// written because the file failed. For metrics.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped()
    }

    /// Records written to the file so far.
    pub fn written(&self) -> u64 {
        self.stats.written()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let result = self.ask(Message::Finish);
        if writer.join().is_err() {
            return Err(io::Error::other("the access log writer panicked"));
        }
        result
    }

    /// Sends a control message (waiting for room in the queue: the caller is the control
    /// plane, never a shard) and waits for the writer's answer.
    fn ask(&self, message: fn(SyncSender<io::Result<()>>) -> Message) -> io::Result<()> {
        let stopped = || io::Error::other("the access log writer has stopped");
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue.send(message(reply)).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::warn!(%err, "access log not finished cleanly");
        }
    }
}

/// The writer thread's state: the only owner of the file.
struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    behind: WriteBehind,
    max_bytes: u64,
    keep: u32,
    stats: Arc<Stats>,
    /// A failed write left a line without its end; the next write ends it first, so the
    /// fragment spoils only itself.
    cut_line: bool,
}

impl Writer {
    fn run(mut self, inbox: Receiver<Message>) {
        for message in inbox {
            match message {
                Message::Batch(batch) => {
                    self.write_batch(&batch);
                    batch.recycle();
                }
                Message::Reopen(reply) => {
                    let _ = reply.send(self.reopen());
                }
                Message::Finish(reply) => {
                    let _ = reply.send(self.file.sync_all());
                    return;
                }
            }
        }
    }

    /// Appends a batch, rotating between lines when the file would pass its size.
    fn write_batch(&mut self, batch: &Batch) {
        let mut rest = &batch.buf[..];
        while !rest.is_empty() {
            let len = self.chunk_len(rest);
            if let Err(written) = self.write_chunk(&rest[..len]) {
                // The disk refused (full, gone): the rest of the batch is lost, and counted.
                let lost = memchr::memchr_iter(b'\n', &rest[written..]).count() as u64;
                self.stats.wrote(batch.records.saturating_sub(lost));
                self.stats
                    .lost(lost, "the access log file cannot be written");
                return;
            }
            rest = &rest[len..];
        }
        self.stats.wrote(batch.records);
        self.behind.advance(&self.file, self.size);
    }

    /// How much of `rest` goes into the current file: the whole lines that fit, after a
    /// rotation if none do. An empty file takes at least one line, however long.
    fn chunk_len(&mut self, rest: &[u8]) -> usize {
        if self.max_bytes == 0 {
            return rest.len();
        }
        let mut fit = lines_within(rest, self.max_bytes.saturating_sub(self.size));
        if fit == 0 && self.size > 0 && self.rotate() {
            fit = lines_within(rest, self.max_bytes);
        }
        if fit == 0 {
            fit = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        }
        fit
    }

    /// Writes `chunk` whole, or fails with how many of its bytes were written.
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), usize> {
        if self.cut_line {
            self.file.write_all(b"\n").map_err(|_| 0usize)?;
            self.size += 1;
            self.cut_line = false;
        }
        let mut done = 0;
        while done < chunk.len() {
            match self.file.write(&chunk[done..]) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    self.size += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if done == chunk.len() {
            return Ok(());
        }
        self.cut_line = done > 0 && chunk[done - 1] != b'\n';
        Err(done)
    }

    /// Moves `PATH.N-1` to `PATH.N` down to `PATH` to `PATH.1` and opens a new `PATH`.
    /// False (with a warning) if that failed; writing then goes on in the current file.
    fn rotate(&mut self) -> bool {
        match self.try_rotate() {
            Ok(()) => true,
            Err(err) => {
                let path = self.path.display();
                tracing::warn!(%path, %err, "cannot rotate the access log; it grows on");
                false
            }
        }
    }

    fn try_rotate(&mut self) -> io::Result<()> {
        // The full file is made durable before it leaves the name new records go to.
        self.file.sync_data()?;
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        self.behind.restart(0);
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        self.behind.restart(self.size);
        Ok(())
    }
}

/// Hands the file's written bytes to the disk a step at a time, the way a streaming writer
/// keeps the page cache from holding a backlog: when a step is whole its writeback starts
/// (`sync_file_range`, which does not wait), and the step [`STEPS_IN_FLIGHT`] back is waited
/// for (started that many steps earlier, it is normally done) and dropped from the page
/// cache (`POSIX_FADV_DONTNEED`). The disk then sees a steady trickle instead of the kernel's
/// periodic bursts, and the log's old pages do not crowd the memory. Best effort: a call that
/// fails changes nothing but the timing.
#[derive(Debug)]
struct WriteBehind {
    /// The step in bytes; 0 is off.
    step: u64,
    /// Where the next step starts: everything before it has been handed to the disk.
    next: u64,
}

impl WriteBehind {
    fn new(step: u64, size: u64) -> WriteBehind {
        let mut behind = WriteBehind { step, next: 0 };
        behind.restart(size);
        behind
    }

    /// Starts counting steps at the first step boundary from `size`, in a new or reopened
    /// file (what came before is the kernel's to write, as before).
    fn restart(&mut self, size: u64) {
        self.next = match self.step {
            0 => 0,
            step => size.div_ceil(step) * step,
        };
    }

    /// Hands over every step that the file, now `size` bytes long, holds whole.
    fn advance(&mut self, file: &File, size: u64) {
        if self.step == 0 {
            return;
        }
        while self.next + self.step <= size {
            hand_over(file, self.next, self.step);
            self.next += self.step;
        }
    }
}

/// Steps whose writeback may be under way at once: the writer waits only for the step this
/// many back, so a disk that falls behind for a moment is not waited for at once (the queue
/// in front of the writer, and then the drop count, are for a disk that stays behind).
const STEPS_IN_FLIGHT: u64 = 4;

/// Starts writeback of `len` bytes at `offset`, then waits for the `len` bytes
/// [`STEPS_IN_FLIGHT`] steps before them and drops those from the page cache.
#[allow(unsafe_code)]
fn hand_over(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let back = len.saturating_mul(STEPS_IN_FLIGHT);
    let (Ok(offset), Ok(len), Ok(back)) = (
        i64::try_from(offset),
        i64::try_from(len),
        i64::try_from(back),
    ) else {
        return;
    };
    // SAFETY: plain system calls on a descriptor this writer owns; no memory is passed.
    unsafe {
        libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE);
        if offset >= back {
            let before = offset - back;
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            if libc::sync_file_range(fd, before, len, wait) == 0 {
                libc::posix_fadvise(fd, before, len, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

/// `PATH.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens `path` for appending, creating it with mode 0640 (less the umask).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// The length of the longest run of whole lines at the start of `rest` within `room` bytes.
fn lines_within(rest: &[u8], room: u64) -> usize {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if rest.len() <= room {
        return rest.len();
    }
    memchr::memrchr(b'\n', &rest[..room]).map_or(0, |at| at + 1)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::accesslog::record::{Record, RequestId};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("keygate-accesslog-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Record `seq`; every such record's line has the same length.
    fn record(seq: u64) -> Record<'static> {
        Record {
            ts: 1_796_400_148_005_000_000,
            request_id: RequestId::new(1, 0, seq),
            tenant: Some("t"),
            key_id: Some("k"),
            method: b"POST",
            path: b"/v1/chat/completions",
            route: Some("/v1/"),
            upstream: Some("up"),
            upstream_key: Some("pk"),
            status: 200,
            latency_us: 1000,
            upstream_latency_us: Some(900),
            bytes_in: 100,
            bytes_out: 200,
            prompt_tokens: Some(10),
            completion_tokens: Some(20),
            retries: 0,
            error_code: None,
        }
    }

    fn line_len() -> u64 {
        let mut line = Vec::new();
        record(0).write_to(&mut line);
        line.len() as u64
    }

    /// The sequence numbers of the request ids in a file, in order; every line must parse.
    fn seqs(path: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let id = value["request_id"].as_str().unwrap_or_default();
                u64::from_str_radix(&id[16..], 16).unwrap_or(u64::MAX)
            })
            .collect()
    }

    #[test]
    fn records_from_many_shards_all_arrive_and_are_synced() {
        let dir = TempDir::new("many");
        let path = dir.0.join("access.log");
        let mut log = AccessLog::open(Options {
            batch_bytes: 4096,
            ..Options::new(&path)
        })
        .expect("open");
        std::thread::scope(|scope| {
            for shard in 0..3u64 {
                let mut shard_log = log.shard_log();
                scope.spawn(move || {
                    for i in 0..1000 {
                        shard_log.record(&record(shard * 1000 + i));
                    }
                    shard_log.flush();
                });
            }
        });
        log.finish().expect("finish");
        assert_eq!((log.written(), log.dropped()), (3000, 0));
        let mut got = seqs(&path);
        got.sort_unstable();
        assert_eq!(got, (0..3000).collect::<Vec<_>>());

        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok().map(|m| m & !0o640), Some(0), "at most rw-r-----");
    }

    /// The page size, and which of `path`'s pages are in the page cache, one flag per page.
    #[allow(unsafe_code)]
    fn resident_pages(path: &Path) -> (usize, Vec<bool>) {
        use std::os::fd::AsRawFd;
        let file = File::open(path).expect("open");
        let len = file.metadata().expect("metadata").len() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut flags = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of `len` bytes of an open file, unmapped before
        // return; mincore writes one byte per page into `flags`, which holds that many.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "mmap");
            let got = libc::mincore(map, len, flags.as_mut_ptr());
            libc::munmap(map, len);
            assert_eq!(got, 0, "mincore");
        }
        (page, flags.iter().map(|flag| flag & 1 == 1).collect())
    }

    /// Whether this file system drops a file's written pages from the page cache once they
    /// are on disk (tmpfs, for one, keeps them: they are the file).
    fn drops_written_pages(dir: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let path = dir.join("probe");
        let mut file = File::create(&path).expect("create probe");
        file.write_all(&[b'x'; 1 << 16]).expect("write probe");
        file.sync_all().expect("sync probe");
        #[allow(unsafe_code)]
        // SAFETY: a system call on an open descriptor; no memory is passed.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
        let dropped = !resident_pages(&path).1.iter().any(|&resident| resident);
        let _ = std::fs::remove_file(&path);
        dropped
    }

    #[test]
    fn written_steps_go_to_disk_and_leave_the_page_cache() {
        let dir = TempDir::new("behind");
        let path = dir.0.join("access.log");
        let step = 64 << 10;
        let mut log = AccessLog::open(Options {
            batch_bytes: 4096,
            write_behind: step,
            ..Options::new(&path)
        })
        .expect("open");
        let count = 10 * step / line_len();
        let mut shard_log = log.shard_log();
        for seq in 0..count {
            shard_log.record(&record(seq));
        }
        shard_log.flush();
        log.finish().expect("finish");

        if drops_written_pages(&dir.0) {
            // Every whole step but the last STEPS_IN_FLIGHT was waited for and dropped; those
            // were only started, and what follows them is the kernel's.
            let (page, resident) = resident_pages(&path);
            let handed = count * line_len() / step;
            let dropped = ((handed - STEPS_IN_FLIGHT) * step) as usize / page;
            assert!(handed >= 9, "{handed} steps");
            assert!(
                !resident[..dropped].iter().any(|&resident| resident),
                "pages still cached among the first {dropped}: {resident:?}"
            );
        } else {
            eprintln!("this file system keeps written pages cached: residency not checked");
        }
        // Nothing was lost on the way.
        assert_eq!(seqs(&path), (0..count).collect::<Vec<_>>());
    }

    #[test]
    fn rotation_keeps_whole_lines_and_the_newest_files() {
        let dir = TempDir::new("rotate");
        let path = dir.0.join("access.log");
        let len = line_len();
        // Room for three lines and a half: the fourth line goes to the next file, whole.
        let options = Options {
            max_bytes: 3 * len + len / 2,
            keep: 2,
            batch_bytes: 1,
            ..Options::new(&path)
        };
        let mut log = AccessLog::open(options).expect("open");
        let mut shard = log.shard_log();
        for seq in 0..10 {
            shard.record(&record(seq));
        }
        drop(shard);
        log.finish().expect("finish");

        // 0-2 were rotated out past keep = 2; 3-5 in .2, 6-8 in .1, 9 current.
        assert_eq!(seqs(&numbered(&path, 2)), [3, 4, 5]);
        assert_eq!(seqs(&numbered(&path, 1)), [6, 7, 8]);
        assert_eq!(seqs(&path), [9]);
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn one_batch_is_split_between_files_at_line_ends() {
        let dir = TempDir::new("split");
        let path = dir.0.join("access.log");
        let len = line_len();
        let options = Options {
            max_bytes: 2 * len,
            keep: 5,
            batch_bytes: 1 << 20,
            ..Options::new(&path)
        };
        let mut log = AccessLog::open(options).expect("open");
        let mut shard = log.shard_log();
        for seq in 0..5 {
            shard.record(&record(seq));
        }
        shard.flush();
        log.finish().expect("finish");
        assert_eq!(seqs(&numbered(&path, 2)), [0, 1]);
        assert_eq!(seqs(&numbered(&path, 1)), [2, 3]);
        assert_eq!(seqs(&path), [4]);
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
        let dir = TempDir::new("long");
        let path = dir.0.join("access.log");
        let options = Options {
            max_bytes: 100,
            batch_bytes: 1,
            ..Options::new(&path)
        };
        let mut log = AccessLog::open(options).expect("open");
        let mut shard = log.shard_log();
        for seq in 0..3 {
            shard.record(&record(seq));
        }
        drop(shard);
        log.finish().expect("finish");
        assert_eq!(seqs(&numbered(&path, 2)), [0]);
        assert_eq!(seqs(&numbered(&path, 1)), [1]);
        assert_eq!(seqs(&path), [2]);
    }

    #[test]
    fn zero_max_bytes_never_rotates_and_an_existing_file_is_appended_to() {
        let dir = TempDir::new("append");
        let path = dir.0.join("access.log");
        std::fs::write(&path, b"").expect("create");
        for round in 0..2 {
            let options = Options {
                max_bytes: 0,
                batch_bytes: 1,
                ..Options::new(&path)
            };
            let mut log = AccessLog::open(options).expect("open");
            let mut shard = log.shard_log();
            for seq in 0..50 {
                shard.record(&record(round * 50 + seq));
            }
            drop(shard);
            log.finish().expect("finish");
        }
        assert_eq!(seqs(&path), (0..100).collect::<Vec<_>>());
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn reopen_follows_a_renamed_file_like_logrotate() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("access.log");
        let moved = dir.0.join("access.log.old");
        let mut log = AccessLog::open(Options {
            batch_bytes: 1,
            ..Options::new(&path)
        })
        .expect("open");
        let mut shard = log.shard_log();
        shard.record(&record(0));

        // Until the reopen, records follow the renamed file; after it, the new one.
        std::fs::rename(&path, &moved).expect("rename");
        shard.record(&record(1));
        log.reopen().expect("reopen");
        shard.record(&record(2));
        drop(shard);
        log.finish().expect("finish");
        assert_eq!(seqs(&moved), [0, 1]);
        assert_eq!(seqs(&path), [2]);
    }

    #[test]
    fn a_path_that_cannot_be_opened_fails_at_open_and_at_reopen() {
        let dir = TempDir::new("bad");
        assert!(AccessLog::open(Options::new(dir.0.join("missing/access.log"))).is_err());

        let sub = dir.0.join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("access.log");
        let mut log = AccessLog::open(Options {
            batch_bytes: 1,
            ..Options::new(&path)
        })
        .expect("open");
        let mut shard = log.shard_log();
        std::fs::rename(&sub, dir.0.join("elsewhere")).expect("rename dir");
        assert!(log.reopen().is_err());

        // Records keep going to the file still open.
        shard.record(&record(7));
        drop(shard);
        log.finish().expect("finish");
        assert_eq!(seqs(&dir.0.join("elsewhere/access.log")), [7]);
    }

    #[test]
    fn records_after_finish_are_counted_as_dropped() {
        let dir = TempDir::new("late");
        let mut log = AccessLog::open(Options {
            batch_bytes: 1,
            ..Options::new(dir.0.join("access.log"))
        })
        .expect("open");
        let mut shard = log.shard_log();
        log.finish().expect("finish");
        shard.record(&record(0));
        shard.record(&record(1));
        assert_eq!(shard.dropped(), 2);
    }

    #[test]
    fn write_errors_count_the_lost_records() {
        // /dev/full refuses every write with ENOSPC.
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let stats = Arc::new(Stats::new());
        let mut writer = Writer {
            path: full.to_path_buf(),
            file: OpenOptions::new()
                .write(true)
                .open(full)
                .expect("open /dev/full"),
            size: 0,
            behind: WriteBehind::new(DEFAULT_WRITE_BEHIND, 0),
            max_bytes: 0,
            keep: 1,
            stats: Arc::clone(&stats),
            cut_line: false,
        };
        let (home, _spare) = mpsc::sync_channel(1);
        let mut buf = Vec::new();
        for seq in 0..3 {
            record(seq).write_to(&mut buf);
        }
        writer.write_batch(&Batch {
            buf,
            records: 3,
            home,
        });
        assert_eq!(stats.dropped(), 3);
        assert_eq!(stats.written(), 0);
    }

    #[test]
    fn lines_within_room() {
        let text = b"ab\ncd\nef\n";
        let cases = [
            (0, 0),
            (2, 0),
            (3, 3),
            (5, 3),
            (6, 6),
            (8, 6),
            (9, 9),
            (100, 9),
        ];
        for (room, want) in cases {
            assert_eq!(lines_within(text, room), want, "{room}");
        }
    }
}
