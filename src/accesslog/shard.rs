//! A shard's end of the access log: records are appended to a shard-local buffer, and full
//! buffers are handed to the writer thread without ever blocking the shard.
//!
//! The shard never waits for the writer. When the writer's queue is full, the batch is
//! dropped and its records are counted in [`ShardLog::dropped`]; a warning is logged at most
//! once per [`WARN_EVERY_MS`] across all shards. Buffers travel to the writer and back, so
//! once every buffer in circulation exists, logging allocates nothing.

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use super::record::Record;

/// The most buffers a shard keeps ready for reuse; the writer drops any beyond.
const SPARE_BUFFERS: usize = 4;

/// Room in each buffer beyond the batch size, so the record that crosses the threshold
/// rarely makes the buffer grow.
const SLACK_BYTES: usize = 16 << 10;

/// The shortest time between two warnings about lost records, in milliseconds.
pub const WARN_EVERY_MS: u64 = 10_000;

/// A shard's access log handle: cheap to call per request, owned by one shard.
///
/// Made by [`AccessLog::shard_log`](super::AccessLog::shard_log). Dropping it flushes what
/// it holds.
#[derive(Debug)]
pub struct ShardLog {
    buf: Vec<u8>,
    records: u64,
    batch_bytes: usize,
    queue: SyncSender<Message>,
    spare: Receiver<Vec<u8>>,
    home: SyncSender<Vec<u8>>,
    stats: Arc<Stats>,
}

impl ShardLog {
    /// A handle sending batches of about `batch_bytes` to `queue`.
    pub(super) fn new(queue: SyncSender<Message>, stats: Arc<Stats>, batch_bytes: usize) -> Self {
        let (home, spare) = mpsc::sync_channel(SPARE_BUFFERS);
        ShardLog {
            buf: Vec::with_capacity(batch_bytes + SLACK_BYTES),
            records: 0,
            batch_bytes,
            queue,
            spare,
            home,
            stats,
        }
    }

    /// Appends `record` to the shard's buffer, and hands the buffer to the writer once it
    /// holds the batch size. Never blocks.
    pub fn record(&mut self, record: &Record<'_>) {
        record.write_to(&mut self.buf);
        self.records += 1;
        if self.buf.len() >= self.batch_bytes {
            self.flush();
        }
    }

    /// Hands whatever the buffer holds to the writer. Never blocks: with the writer's queue
    /// full (or the writer stopped) the records are dropped and counted instead. Call it on
    /// a timer (every 100 ms bounds how stale the file is) and when the shard stops.
    pub fn flush(&mut self) {
        if self.records == 0 {
            return;
        }
        let batch = Batch {
            buf: mem::take(&mut self.buf),
            records: mem::take(&mut self.records),
            home: self.home.clone(),
        };
        match self.queue.try_send(Message::Batch(batch)) {
            Ok(()) => {
                self.buf = self
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(self.batch_bytes + SLACK_BYTES));
            }
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                if let Message::Batch(batch) = message {
                    self.stats
                        .lost(batch.records, "the access log writer is behind");
                    self.buf = batch.buf;
                    self.buf.clear();
                }
            }
        }
    }

    /// Records dropped so far by every shard and the writer together (see
    /// [`AccessLog::dropped`](super::AccessLog::dropped)).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped()
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the writer thread receives, in order.
#[derive(Debug)]
pub(super) enum Message {
    /// Lines to append.
    Batch(Batch),
    /// Open the path again (after logrotate moved the file); the result goes back.
    Reopen(SyncSender<std::io::Result<()>>),
    /// Write nothing more: sync the file, send the result back, and stop.
    Finish(SyncSender<std::io::Result<()>>),
}

/// Whole lines from one shard, and the way home for the buffer once written.
#[derive(Debug)]
pub(super) struct Batch {
    /// Complete lines, each ending in `\n`.
    pub buf: Vec<u8>,
    /// How many records (lines) `buf` holds.
    pub records: u64,
    /// The shard's spare-buffer queue.
    pub home: SyncSender<Vec<u8>>,
}

impl Batch {
    /// Gives the emptied buffer back to its shard; dropped if the shard has enough spares
    /// or is gone.
    pub fn recycle(self) {
        let mut buf = self.buf;
        buf.clear();
        let _ = self.home.try_send(buf);
    }
}

/// Counters shared by the shards and the writer: records written and dropped.
#[derive(Debug)]
pub struct Stats {
    dropped: AtomicU64,
    written: AtomicU64,
    next_warning_ms: AtomicU64,
    started: Instant,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            next_warning_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Counts `records` that will never reach the file, and says so, rate-limited.
    pub(super) fn lost(&self, records: u64, why: &'static str) {
        let dropped = self.dropped.fetch_add(records, Ordering::Relaxed) + records;
        let now_ms = self.started.elapsed().as_millis() as u64;
        if self.warning_due(now_ms) {
            tracing::warn!(records, dropped, why, "access log records dropped");
        }
    }

    /// Counts records that reached the file.
    pub(super) fn wrote(&self, records: u64) {
        self.written.fetch_add(records, Ordering::Relaxed);
    }

    /// Records that will never reach the file.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records that reached the file.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether a warning may be logged at `now_ms`; true at most once per
    /// [`WARN_EVERY_MS`], whichever thread asks.
    fn warning_due(&self, now_ms: u64) -> bool {
        let next = self.next_warning_ms.load(Ordering::Relaxed);
        now_ms >= next
            && self
                .next_warning_ms
                .compare_exchange(
                    next,
                    now_ms + WARN_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accesslog::record::RequestId;

    fn record(seq: u64) -> Record<'static> {
        Record {
            ts: 1_796_400_148_005_000_000,
            request_id: RequestId::new(1, 0, seq),
            tenant: None,
            key_id: Some("k"),
            method: b"GET",
            path: b"/v1/models",
            route: Some("/v1/"),
            upstream: Some("up"),
            upstream_key: None,
            status: 200,
            latency_us: 10,
            upstream_latency_us: Some(5),
            bytes_in: 0,
            bytes_out: 10,
            prompt_tokens: None,
            completion_tokens: None,
            retries: 0,
            error_code: None,
        }
    }

    /// The request ids in a batch, in order.
    fn ids(batch: &Batch) -> Vec<u64> {
        let text = String::from_utf8_lossy(&batch.buf);
        text.lines()
            .filter_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                let id = value["request_id"].as_str()?;
                u64::from_str_radix(&id[16..], 16).ok()
            })
            .collect()
    }

    fn batch(message: Message) -> Batch {
        match message {
            Message::Batch(batch) => batch,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_stuck_writer_costs_records_counted_never_a_wait() {
        // Nobody reads the queue: the writer is stuck. Every record fills a batch.
        let (queue, inbox) = mpsc::sync_channel(2);
        let stats = Arc::new(Stats::new());
        let mut log = ShardLog::new(queue, Arc::clone(&stats), 1);
        for seq in 0..5 {
            log.record(&record(seq));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(stats.dropped(), 3);

        // The two that fit are intact, in order; once the writer catches up, records flow.
        let queued: Vec<Batch> = inbox.try_iter().map(batch).collect();
        assert_eq!(queued.iter().map(ids).collect::<Vec<_>>(), [[0], [1]]);
        log.record(&record(5));
        assert_eq!(ids(&batch(inbox.try_recv().expect("a batch"))), [5]);
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn nothing_is_lost_while_the_writer_keeps_up() {
        let (queue, inbox) = mpsc::sync_channel(1);
        let stats = Arc::new(Stats::new());
        let mut log = ShardLog::new(queue, Arc::clone(&stats), 1000);
        let mut seen = Vec::new();
        for seq in 0..1000 {
            log.record(&record(seq));
            if let Ok(message) = inbox.try_recv() {
                seen.extend(ids(&batch(message)));
            }
        }
        // Below the batch size nothing leaves until a flush (or the handle is dropped).
        drop(log);
        seen.extend(inbox.try_iter().flat_map(|m| ids(&batch(m))));
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(stats.dropped(), 0);
    }

    #[test]
    fn buffers_come_back_and_are_reused() {
        let (queue, inbox) = mpsc::sync_channel(4);
        let mut log = ShardLog::new(queue, Arc::new(Stats::new()), 1 << 20);
        let mut send = |seq| {
            log.record(&record(seq));
            log.flush();
            batch(inbox.try_recv().expect("a batch"))
        };
        let first = send(0);
        let first_buffer = first.buf.as_ptr();
        first.recycle();
        let second = send(1);
        assert_ne!(second.buf.as_ptr(), first_buffer);
        // The recycled buffer became the shard's buffer when the second batch left.
        let third = send(2);
        assert_eq!(third.buf.as_ptr(), first_buffer);
        assert_eq!(ids(&third), [2]);
    }

    #[test]
    fn an_empty_flush_sends_nothing_and_a_stopped_writer_counts() {
        let (queue, inbox) = mpsc::sync_channel(4);
        let mut log = ShardLog::new(queue, Arc::new(Stats::new()), 1 << 20);
        log.flush();
        assert!(inbox.try_recv().is_err());

        drop(inbox);
        log.record(&record(0));
        log.record(&record(1));
        log.flush();
        assert_eq!(log.dropped(), 2);
    }

    #[test]
    fn warnings_are_spaced_across_threads() {
        let stats = Stats::new();
        assert!(stats.warning_due(5));
        assert!(!stats.warning_due(5));
        assert!(!stats.warning_due(5 + WARN_EVERY_MS - 1));
        assert!(stats.warning_due(5 + WARN_EVERY_MS));
        assert!(!stats.warning_due(6 + WARN_EVERY_MS));
    }
}
