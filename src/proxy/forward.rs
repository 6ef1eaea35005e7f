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
use crate::shard::Routing;
use crate::upstream::keys::Verdict;
use crate::upstream::learn::Learned;
use crate::upstream::{KeyPool, Lease, Picker, Upstream};

/// The largest refused response body read to learn from it and keep its connection; a larger
/// one closes the connection instead.
const REFUSAL_BODY_BYTES: u64 = 64 * 1024;

/// How long a refused response's body may take to arrive before the gateway stops waiting
/// for it and retries without what it says.
const REFUSAL_READ_TIME: Duration = Duration::from_secs(1);

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
        routing: &'s Routing,
        first: usize,
        head: &RequestHead,
        body: &RequestBody,
        tokens: u64,
    ) -> Result<Forwarded<'s>, Error> {
        let primary = &routing.upstreams[first];
        self.trace.upstream = Some(first);
        let chain = std::iter::once(first).chain(primary.fallbacks.iter().copied());
        let mut soonest: Option<u64> = None;
        let mut failure = None;

        for (hop, index) in chain.enumerate() {
            let upstream = &routing.upstreams[index];
            // A fallback needs the body again, and nobody left to disappoint.
            if hop > 0 && (!body.replayable() || self.response_started) {
                break;
            }
            if hop > 0 {
                self.trace.retries += 1;
                tracing::debug!(shard = self.shard.id, from = %primary.config.name,
                    to = %upstream.config.name, "falling back to the next upstream");
            }
            match self.try_upstream(index, upstream, head, body, tokens).await {
                Ok((sent, lease)) => {
                    self.trace.upstream = Some(index);
                    return Ok(Forwarded {
                        upstream,
                        sent,
                        lease,
                    });
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
    ///
    /// A provider's 401 or 403 may be about the key or about the request (a model the
    /// account may not use, a scope the key lacks). So a refused key is only suspected: the
    /// request moves on to another key, and only when one accepts it are the keys that
    /// refused it disabled. A request every key refuses disables none, so no client can
    /// take the pool down with requests the provider forbids.
    async fn try_upstream<'s>(
        &mut self,
        position: usize,
        upstream: &'s Upstream,
        head: &RequestHead,
        body: &RequestBody,
        tokens: u64,
    ) -> Result<(Sent, Option<Lease<'s>>), Unserved> {
        upstream.count_request();
        let mut attempt = 1;
        // Keys that refused this request (position, status), until another accepts it.
        let mut suspects: Vec<(usize, u16)> = Vec::new();
        loop {
            let lease = match &upstream.keys {
                Some((pool, picker)) => {
                    let avoid: Vec<usize> = suspects.iter().map(|&(index, _)| index).collect();
                    match self.lease_key(upstream, pool, picker, tokens, &avoid).await {
                        Ok(lease) => Some(lease),
                        Err(unserved) => match suspects.last() {
                            Some(&(_, status)) => {
                                return Err(Unserved::Failed(Error::ProviderKeyRefused(status)))
                            }
                            None => return Err(unserved),
                        },
                    }
                }
                None => None,
            };
            if let Some(lease) = &lease {
                self.trace.key = Some((position, lease.index()));
            }
            let sending = Instant::now();
            let result = self
                .send_upstream(upstream, head, body, lease.as_ref())
                .await;
            if result.is_ok() {
                self.upstream_answered(position, sending);
            }
            let retry_allowed = |conn: &ClientConn| {
                attempt < upstream.config.retry_attempts
                    && body.replayable()
                    && !conn.response_started
                    && upstream.take_retry()
            };
            let sent = match result {
                Ok(sent) => sent,
                Err(error) if error.side() == Side::Upstream && retry_allowed(self) => {
                    tracing::debug!(shard = self.shard.id, upstream = %upstream.config.name,
                        %error, attempt, "upstream failed before answering; retrying");
                    attempt += 1;
                    self.trace.retries += 1;
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
                self.confirm_refusals(upstream, &suspects);
                return Ok((sent, Some(lease)));
            }

            let retry = retry_allowed(self);
            // Without a retry, the provider's own 429 goes to the client, Retry-After and all.
            if verdict == Verdict::Throttled && !retry {
                let rest = lease.report(status, &learned, self.shard.clock.now());
                self.log_refusal(upstream, &lease, verdict, rest);
                return Ok((sent, Some(lease)));
            }
            // Gemini says how long to wait only in a 429's body: that one is read, briefly.
            // Other refusals are not worth the wait; their connection is closed.
            let wants_body = verdict == Verdict::Throttled && learned.retry_after.is_none();
            if wants_body {
                if let Some(refusal) = self.take_refusal(upstream, sent).await? {
                    learned.retry_after = Learned::retry_delay_from_body(&refusal);
                }
            }
            let rest = lease.report(status, &learned, self.shard.clock.now());
            self.log_refusal(upstream, &lease, verdict, rest);
            if let Verdict::Refused(status) = verdict {
                suspects.push((lease.index(), status));
            }
            if !retry {
                return Err(Unserved::Failed(Error::ProviderKeyRefused(status)));
            }
            attempt += 1;
            self.trace.retries += 1;
        }
    }

    /// Disables the keys that refused a request another key then got accepted.
    fn confirm_refusals(&self, upstream: &Upstream, suspects: &[(usize, u16)]) {
        let Some((pool, _)) = &upstream.keys else {
            return;
        };
        for &(index, status) in suspects {
            pool.confirm_refused(index, status);
            tracing::warn!(shard = self.shard.id, upstream = %upstream.config.name,
                key = %pool.keys()[index].id, status,
                "provider refused a key that another key could use; disabled until enabled \
                 through the admin API");
        }
    }

    fn log_refusal(
        &self,
        upstream: &Upstream,
        lease: &Lease<'_>,
        verdict: Verdict,
        rest: Option<Duration>,
    ) {
        let (shard, name, key) = (self.shard.id, &upstream.config.name, lease.id());
        let rest_ms = rest.map_or(0, |rest| rest.as_millis() as u64);
        tracing::debug!(shard, upstream = %name, key, ?verdict, rest_ms,
            "provider refused a request with this key");
    }

    /// A key for the next attempt, other than those in `avoid`. When none is ready, waits
    /// for the soonest one if it will be back within the upstream's `key_wait`, and if fewer
    /// requests wait for this pool than it has keys (see [`KeyPool::wait_turn`]).
    async fn lease_key<'s>(
        &mut self,
        upstream: &Upstream,
        pool: &'s KeyPool,
        picker: &'s Picker,
        tokens: u64,
        avoid: &[usize],
    ) -> Result<Lease<'s>, Unserved> {
        let wait = upstream.config.key_wait;
        let give_up = self
            .shard
            .clock
            .now()
            .saturating_add(wait.as_nanos() as u64);
        let mut turn = None;
        loop {
            let now = self.shard.clock.now();
            let exhausted = match pool.acquire(picker, now, tokens, avoid) {
                Ok(lease) => return Ok(lease),
                Err(exhausted) => exhausted,
            };
            let Some(at) = exhausted
                .ready_at
                .filter(|&at| !wait.is_zero() && at <= give_up)
            else {
                return Err(Unserved::Exhausted(exhausted.ready_at));
            };
            if turn.is_none() {
                turn = pool.wait_turn();
                if turn.is_none() {
                    return Err(Unserved::Exhausted(Some(at)));
                }
            }
            let nap = Duration::from_nanos(at.saturating_sub(now).max(SECOND / 1000));
            // A client that leaves while waiting is not worth a key.
            self.unless_client_leaves(monoio::time::sleep(nap))
                .await
                .map_err(Unserved::Failed)?;
        }
    }

    /// Reads a refused response's body when it is small and arrives within
    /// [`REFUSAL_READ_TIME`], putting its connection back in the pool; otherwise drops the
    /// connection. Returns the body when it was read; fails only when the client left.
    async fn take_refusal(
        &mut self,
        upstream: &Upstream,
        sent: Sent,
    ) -> Result<Option<BytesMut>, Unserved> {
        let Sent {
            mut conn,
            endpoint,
            head,
            ..
        } = sent;
        let length = match head.framing {
            Framing::Empty => 0,
            Framing::Length(length) if length <= REFUSAL_BODY_BYTES => length as usize,
            _ => return Ok(None),
        };
        conn.buf.advance(head.head_len);
        let deadline = Instant::now() + REFUSAL_READ_TIME;
        let read = async {
            while conn.buf.len() < length {
                let wanted = length - conn.buf.len();
                match io::read_into(&mut conn.stream, &mut conn.buf, wanted, deadline).await {
                    Ok(ReadOutcome::Data) => {}
                    _ => return false,
                }
            }
            true
        };
        let complete = self
            .unless_client_leaves(read)
            .await
            .map_err(Unserved::Failed)?;
        if !complete {
            return Ok(None);
        }
        let body = conn.buf.split_to(length);
        if head.keep_alive && conn.buf.is_empty() {
            upstream.keep_alive(endpoint, conn, head.fields, Instant::now());
        }
        Ok(Some(body))
    }
}
