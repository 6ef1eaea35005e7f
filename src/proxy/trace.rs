//! What an exchange leaves in the access log: the facts gathered along its way, and the one
//! record written when it ends, however it ends.

use monoio::time::Instant;

use super::conn::ClientConn;
use super::Error;
use crate::accesslog::{Record, RequestId};
use crate::http::RequestHead;
use crate::metrics;
use crate::quota::Exceeded;

/// The status logged for a client that left before any response head reached it (nginx's
/// convention; never sent).
pub(super) const CLIENT_CLOSED: u16 = 499;

/// Facts about the current exchange, for its access log record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Trace {
    pub(super) id: RequestId,
    /// Wall-clock start, ns since the epoch.
    pub(super) ts: u64,
    /// The matched route's position in the config.
    pub(super) route: Option<usize>,
    /// The upstream that answered, after any fallback.
    pub(super) upstream: Option<usize>,
    /// The provider key of the last attempt: (upstream, key) positions.
    pub(super) key: Option<(usize, usize)>,
    /// The status sent to the client; 0 before a response head went out.
    pub(super) status: u16,
    pub(super) upstream_latency_us: Option<u64>,
    pub(super) bytes_in: u64,
    /// Response bytes written to the client, head included, and how many of them the head
    /// took.
    pub(super) written: u64,
    pub(super) head_bytes: u64,
    pub(super) retries: u32,
    pub(super) error: Option<&'static str>,
    /// The client key's limit that refused the request, if one did.
    pub(super) rejected: Option<Exceeded>,
}

impl Trace {
    /// A fresh trace for an exchange starting at wall-clock `ts`.
    pub(super) fn new(id: RequestId, ts: u64) -> Trace {
        Trace {
            id,
            ts,
            route: None,
            upstream: None,
            key: None,
            status: 0,
            upstream_latency_us: None,
            bytes_in: 0,
            written: 0,
            head_bytes: 0,
            retries: 0,
            error: None,
            rejected: None,
        }
    }

    /// Notes the error that ended the exchange, and the status it was answered with.
    pub(super) fn failed(&mut self, error: &Error, answered: bool) {
        if let Error::Limited(refusal) = error {
            self.rejected = Some(refusal.exceeded);
        }
        match error.status() {
            Some((status, code, _)) => {
                self.error = Some(code);
                if answered && self.status == 0 {
                    self.status = status;
                }
            }
            // Nobody is left to answer: the client went away, or stopped reading until a
            // write to it gave up.
            None => {
                self.error = Some(match error {
                    Error::ClientGone(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                        "client_write_timeout"
                    }
                    _ => "client_closed",
                });
                if self.status == 0 {
                    self.status = CLIENT_CLOSED;
                }
            }
        }
    }
}

impl ClientConn {
    /// Starts the trace of a new exchange. Nothing of the previous exchange on the
    /// connection carries over: not its key (its budget fields, its record's `key_id`), not
    /// its token usage.
    pub(super) fn begin_trace(&mut self) {
        self.key = None;
        self.count_tokens = false;
        self.usage = None;
        let shard = &self.shard;
        self.started = Instant::now();
        self.answered_at = self.started;
        self.ended = None;
        // The wall clock is read only for a log that needs it.
        let ts = match shard.access {
            Some(_) => shard.clock.now(),
            None => 0,
        };
        self.trace = Trace::new(shard.request_ids.next_id(), ts);
    }

    /// Counts the current exchange in the shard's metrics and writes its access log record,
    /// when one is kept. `head` is `None` for a request whose head could not be read.
    pub(super) fn finish_exchange(&mut self, head: Option<&RequestHead>) {
        let routing = self.routing.take();
        let shard = &self.shard;
        let trace = &self.trace;
        let table = shard.keys.get();
        let key = self.key.map(|index| table.key(index));
        let ended = self.ended.take().unwrap_or_else(Instant::now);
        self.idle_since = ended;
        let duration_us = ended.saturating_duration_since(self.started).as_micros() as u64;
        let usage = self.usage;
        let route_slot = |index: usize| routing.as_ref()?.slots.routes.get(index).copied();
        shard.metrics.record(&metrics::Exchange {
            route: trace.route.and_then(route_slot),
            status: trace.status,
            duration_us,
            rejected: trace.rejected,
            key: self.key,
            tenant: key.and_then(|key| key.tenant),
            tokens: usage.map(|usage| (usage.prompt_tokens, usage.completion_tokens)),
        });
        let Some(access) = &shard.access else { return };
        let tenant = key
            .and_then(|key| key.tenant)
            .map(|index| &*table.tenant(index).name);
        let upstream = routing
            .as_ref()
            .zip(trace.upstream)
            .map(|(routing, index)| &routing.upstreams[index]);
        let upstream_key = trace.key.and_then(|(upstream, key)| {
            let (pool, _) = routing.as_ref()?.upstreams[upstream].keys.as_ref()?;
            Some(&*pool.keys()[key].id)
        });
        let route = trace
            .route
            .zip(routing.as_ref())
            .and_then(|(index, routing)| std::str::from_utf8(routing.router.prefix(index)).ok());
        let record = Record {
            ts: trace.ts,
            request_id: trace.id,
            tenant,
            key_id: key.map(|key| &*key.id),
            method: head.map_or(b"", RequestHead::method_bytes),
            path: head.map_or(b"", RequestHead::path),
            route,
            upstream: upstream.map(|upstream| upstream.config.name.as_str()),
            upstream_key,
            status: trace.status,
            latency_us: duration_us,
            upstream_latency_us: trace.upstream_latency_us,
            bytes_in: trace.bytes_in,
            bytes_out: trace.written.saturating_sub(trace.head_bytes),
            prompt_tokens: usage.map(|usage| usage.prompt_tokens),
            completion_tokens: usage.map(|usage| usage.completion_tokens),
            retries: trace.retries,
            error_code: trace.error,
        };
        access.borrow_mut().record(&record);
    }

    /// Notes the time from `sent` to a response head from upstream `upstream` (its position
    /// in the config): in the shard's metrics for every attempt answered, and in the trace,
    /// where the last attempt's stands.
    pub(super) fn upstream_answered(&mut self, upstream: usize, sent: Instant) {
        let now = Instant::now();
        self.answered_at = now;
        let latency_us = now.saturating_duration_since(sent).as_micros() as u64;
        let slot = self
            .routing
            .as_ref()
            .and_then(|routing| routing.slots.upstreams.get(upstream).copied());
        if let Some(slot) = slot {
            self.shard.metrics.upstream_answered(slot, latency_us);
        }
        self.trace.upstream_latency_us = Some(latency_us);
    }
}
