//! Getting a request answered by an upstream that has a provider key pool: choosing a key,
//! sending, learning from the answer, moving a refused request to a sibling key, falling
//! back to other upstreams, and saying when to come back when no key can serve.
//!
//! A request is sent again only while nothing of the response reached the client, only with
//! a body the gateway still holds, within the upstream's attempts per request and its retry
//! budget, and only after a 429, a provider refusing the key itself (401/403: the request
//! was never looked at), or a failure before any response head. Any other status, 5xx
//! included, goes to the client as it is.

use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use monoio::time::Instant;

use super::conn::ClientConn;
use super::io::{self, ReadOutcome};
use super::request_body::RequestBody;
use super::upstream::Sent;
use super::{Error, Side};
use crate::http::{Framing, RequestHead};
use crate::quota::SECOND;
use crate::shard::Shard;
use crate::upstream::keys::Verdict;
use crate::upstream::learn::Learned;
use crate::upstream::{Lease, Upstream};

/// The largest refused response body read to learn from it and keep its connection; a larger
/// one closes the connection instead.
const REFUSAL_BODY_BYTES: u64 = 64 * 1024;

/// A response on its way to the client, from the upstream that gave it.
pub(super) struct Forwarded<'s> {
    /// The upstream that answered (the routed one, or a fallback).
    pub(super) upstream: &'s Upstream,
    pub(super) sent: Sent,
    /// The pool key that carried the request, to settle its tokens once usage is known.
    pub(super) lease: Option<Lease<'s>>,
}

/// Why an upstream gave no response to pass on.
enum Unserved {
    /// No key was ready: the soonest is ready at this time (ns since the epoch), or never
    /// on its own (`None`: all disabled).
    Exhausted(Option<u64>),
    /// The upstream failed, or refused every key it tried.
    Failed(Error),
}

impl ClientConn {
    /// Sends the request to upstream `first` or, when it has no ready key or fails, to its
    /// fallbacks in order, and returns the first response to pass on.
    pub(super) async fn forward<'s>(
        &mut self,
        shard: &'s Shard,
        first: usize,
        head: &RequestHead,
        body: &RequestBody,
        tokens: u64,
    ) -> Result<Forwarded<'s>, Error> {
        let primary = &shard.upstreams[first];
        let chain = std::iter::once(first).chain(primary.fallbacks.iter().copied());
        let mut soonest: Option<u64> = None;
        let mut failure = None;

        for (hop, index) in chain.enumerate() {
            let upstream = &shard.upstreams[index];
            // A fallback needs the body again, and nobody left to disappoint.
            if hop > 0 && (!body.replayable() || self.response_started) {
                break;
            }
            if hop > 0 {
                tracing::info!(shard = shard.id, from = %primary.config.name,
                    to = %upstream.config.name, "falling back to the next upstream");
            }
            match self.try_upstream(upstream, head, body, tokens).await {
                Ok((sent, lease)) => {
                    return Ok(Forwarded {
                        upstream,
                        sent,
                        lease,
                    })
                }
                Err(Unserved::Exhausted(Some(at))) => {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
                Err(Unserved::Exhausted(None)) => {}
                Err(Unserved::Failed(error)) if error.side() == Side::Upstream => {
                    failure = Some(error);
                }
                Err(Unserved::Failed(error)) => return Err(error),
            }
        }

        // A key that will be back beats a failure: the client can come back then.
        if let Some(at) = soonest {
            let now = self.shard.clock.now();
            return Err(Error::KeysExhausted(at.saturating_sub(now).max(1_000_000)));
        }
        // Otherwise the last failure, or, when every key was refused, that.
        Err(failure.unwrap_or(Error::KeysDisabled))
    }

    /// One upstream's part: a key (when it has a pool), the exchange, and retries on other
    /// keys or endpoints while the rules allow.
    async fn try_upstream<'s>(
        &mut self,
        upstream: &'s Upstream,
        head: &RequestHead,
        body: &RequestBody,
        tokens: u64,
    ) -> Result<(Sent, Option<Lease<'s>>), Unserved> {
        upstream.count_request();
        let mut attempt = 1;
        loop {
            let lease = match &upstream.keys {
                Some((pool, picker)) => Some(self.lease_key(upstream, pool, picker, tokens).await?),
                None => None,
            };
            let result = self
                .send_upstream(upstream, head, body, lease.as_ref())
                .await;
            let retry_allowed = |conn: &ClientConn| {
                attempt < upstream.config.retry_attempts
                    && body.replayable()
                    && !conn.response_started
                    && upstream.take_retry()
            };
            let sent = match result {
                Ok(sent) => sent,
                Err(error) if error.side() == Side::Upstream && retry_allowed(self) => {
                    tracing::info!(shard = self.shard.id, upstream = %upstream.config.name,
                        %error, attempt, "upstream failed before answering; retrying");
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(Unserved::Failed(error)),
            };
            let Some(lease) = lease else {
                return Ok((sent, None));
            };

            let status = sent.head.status;
            let provider = upstream.config.provider;
            let mut learned =
                Learned::from_head(provider, &sent.head, &sent.conn.buf, SystemTime::now());
            let verdict = Verdict::of(status);
            if verdict == Verdict::Accepted {
                lease.report(status, &learned, self.shard.clock.now());
                return Ok((sent, Some(lease)));
            }

            let retry = retry_allowed(self);
            let now = self.shard.clock.now();
            // Without a retry, the provider's own 429 goes to the client, Retry-After and all.
            if verdict == Verdict::Throttled && !retry {
                let rest = lease.report(status, &learned, now);
                self.log_refusal(upstream, &lease, verdict, rest, retry);
                return Ok((sent, Some(lease)));
            }
            // The refusal is read when small, and its connection kept: Gemini says how long to
            // wait only in the body.
            if let Some(refusal) = self.take_refusal(upstream, sent).await {
                if learned.retry_after.is_none() {
                    learned.retry_after = Learned::retry_delay_from_body(&refusal);
                }
            }
            let rest = lease.report(status, &learned, now);
            self.log_refusal(upstream, &lease, verdict, rest, retry);
            if !retry {
                return Err(Unserved::Failed(Error::ProviderKeyRefused(status)));
            }
            attempt += 1;
        }
    }

    fn log_refusal(
        &self,
        upstream: &Upstream,
        lease: &Lease<'_>,
        verdict: Verdict,
        rest: Option<Duration>,
        retry: bool,
    ) {
        let (shard, name, key) = (self.shard.id, &upstream.config.name, lease.id());
        match verdict {
            Verdict::Throttled => {
                let rest_ms = rest.map_or(0, |rest| rest.as_millis() as u64);
                tracing::info!(shard, upstream = %name, key, rest_ms, retry,
                    "provider key throttled; cooling down");
            }
            Verdict::Refused(status) => {
                tracing::warn!(shard, upstream = %name, key, status, retry,
                    "provider refused the key; disabled until reload or enable");
            }
            Verdict::Accepted => {}
        }
    }

    /// A key for the next attempt. When none is ready, waits for the soonest one if it will
    /// be back within the upstream's `key_wait`.
    async fn lease_key<'s>(
        &mut self,
        upstream: &Upstream,
        pool: &'s crate::upstream::KeyPool,
        picker: &'s crate::upstream::Picker,
        tokens: u64,
    ) -> Result<Lease<'s>, Unserved> {
        let wait = upstream.config.key_wait;
        let give_up = self
            .shard
            .clock
            .now()
            .saturating_add(wait.as_nanos() as u64);
        loop {
            let now = self.shard.clock.now();
            match pool.acquire(picker, now, tokens) {
                Ok(lease) => return Ok(lease),
                Err(exhausted) => match exhausted.ready_at {
                    Some(at) if !wait.is_zero() && at <= give_up => {
                        let nap = Duration::from_nanos(at.saturating_sub(now).max(SECOND / 1000));
                        // A client that leaves while waiting is not worth a key.
                        self.unless_client_leaves(monoio::time::sleep(nap))
                            .await
                            .map_err(Unserved::Failed)?;
                    }
                    at => return Err(Unserved::Exhausted(at)),
                },
            }
        }
    }

    /// Reads a refused response's body when it is small, putting its connection back in the
    /// pool; otherwise drops the connection. Returns the body when it was read.
    async fn take_refusal(&mut self, upstream: &Upstream, sent: Sent) -> Option<BytesMut> {
        let Sent {
            mut conn,
            endpoint,
            head,
            ..
        } = sent;
        let length = match head.framing {
            Framing::Empty => 0,
            Framing::Length(length) if length <= REFUSAL_BODY_BYTES => length as usize,
            _ => return None,
        };
        conn.buf.advance(head.head_len);
        let deadline = Instant::now() + self.shard.limits.idle_timeout;
        while conn.buf.len() < length {
            let wanted = length - conn.buf.len();
            match io::read_into(&mut conn.stream, &mut conn.buf, wanted, deadline).await {
                Ok(ReadOutcome::Data) => {}
                _ => return None,
            }
        }
        let body = conn.buf.split_to(length);
        if head.keep_alive && conn.buf.is_empty() {
            conn.reused = true;
            conn.fields = head.fields;
            upstream.endpoints[endpoint]
                .pool
                .borrow_mut()
                .put(conn, Instant::now());
        }
        Some(body)
    }
}
