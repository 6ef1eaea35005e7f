//! The client connection driver: the keep-alive loop, request heads, and answers the gateway
//! gives itself.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::admit;
use super::budget::write_budget;
use super::forward::Forwarded;
use super::io::{self, ReadOutcome};
use super::trace::Trace;
use super::{has_dot_segment, write_error_response, Error};
use crate::accesslog::RequestId;
use crate::ai::{Usage, UsageScanner};
use crate::http::{Field, Framing, Method, RequestHead};
use crate::keys;
use crate::shard::{Handoff, Routing, Shard};

/// The read buffer a connection keeps between requests, in bytes (`read_buffer` when that is
/// smaller): room for a typical request head and a small body in one read. A head that does
/// not fit grows it to `read_buffer`; the exchange's end lets the larger buffer go again, so
/// that ten thousand idle connections hold about 20 MB of buffers rather than 330 MB (two
/// buffers of `read_buffer` each).
const IDLE_READ_BUFFER: usize = 2048;

/// The least room a read of the rest of a head is given, in bytes.
const HEAD_READ_MIN: usize = 4096;

/// Serves one accepted client connection until it closes, fails, or the shard drains.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shard: Rc<Shard>) {
    serve_with(stream, peer, shard, BytesMut::new()).await
}

/// Serves a connection whose first bytes were already read (`pending`), as when another
/// shard hands it over.
pub async fn serve_with(stream: TcpStream, peer: SocketAddr, shard: Rc<Shard>, pending: BytesMut) {
    let mut conn = ClientConn::new(stream, peer, &shard);
    if !pending.is_empty() {
        conn.buf = pending;
    }
    let mut fields = Vec::new();
    let mut fresh = true;

    loop {
        let head = match conn.read_head(&mut fields, fresh).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(shard = shard.id, %peer, %error, "bad request head");
                conn.begin_trace();
                conn.answer_error(&error, true).await;
                conn.trace.failed(&error, true);
                conn.finish_exchange(None);
                break;
            }
        };

        fresh = false;
        conn.begin_trace();
        let result = conn.exchange(&head).await;
        let keep_alive = match result {
            Ok(Flow::Continue(keep_alive)) => {
                conn.finish_exchange(Some(&head));
                keep_alive
            }
            Ok(Flow::HandOff(owner)) => {
                // The owner serves the request from its start, and logs it.
                conn.hand_off(owner, &head);
                return;
            }
            Err(error) => {
                let side = error.side();
                tracing::debug!(shard = shard.id, %peer, %error, ?side, "request failed");
                // Once a response byte is out, or the body was left unread, the connection
                // cannot carry another exchange.
                let reusable = !conn.response_started && conn.body_done && head.keep_alive;
                let answered = !conn.response_started;
                if answered {
                    conn.answer_error(&error, !reusable).await;
                }
                conn.trace.failed(&error, answered);
                conn.finish_exchange(Some(&head));
                reusable
            }
        };
        if !keep_alive || shard.drain.is_draining() {
            break;
        }
        fields = head.into_fields();
        conn.rest();
    }
}

/// Answers a connection handed over to a shard that is at `max_connections`: its request,
/// already read (`pending`), gets a 503 and the connection closes. The request is logged
/// like any other, under the key that brought it here.
pub async fn refuse_with(stream: TcpStream, peer: SocketAddr, shard: Rc<Shard>, pending: BytesMut) {
    let mut conn = ClientConn::new(stream, peer, &shard);
    conn.buf = pending;
    let mut fields = Vec::new();
    // The head is whole in `pending` (the shard that handed it over parsed it): no read.
    let head = conn.read_head(&mut fields, true).await.ok().flatten();
    tracing::debug!(shard = shard.id, %peer, "at max_connections: refusing a handed-over request");
    conn.begin_trace();
    // The key was recognised on the shard that handed the connection over (that is how it
    // came here): the record and the key's counts name it.
    if let Some(head) = &head {
        let table = shard.keys.get();
        let key = keys::presented(head)
            .ok()
            .and_then(|presented| table.authenticate(presented, shard.clock.now()).ok());
        conn.key = key.map(|key| key.index);
    }
    let error = Error::OwnerFull;
    conn.answer_error(&error, true).await;
    conn.trace.failed(&error, true);
    conn.finish_exchange(head.as_ref());
}

/// What to do with the connection after an exchange.
pub(super) enum Flow {
    /// Serve the next request here when `true`, close when `false`.
    Continue(bool),
    /// The request's client key belongs to this shard: move the connection there.
    HandOff(usize),
}

/// A client connection and the buffers it reuses across requests.
pub(super) struct ClientConn {
    pub(super) stream: TcpStream,
    /// Bytes read from the client not yet consumed: the rest of a body, pipelined requests.
    pub(super) buf: BytesMut,
    /// Scratch space for encoding heads and small bodies on their way out.
    pub(super) out: BytesMut,
    /// The client's address, as written into `X-Forwarded-For`.
    pub(super) peer_ip: Box<str>,
    pub(super) shard: Rc<Shard>,
    /// Whether any byte of the current response reached the client.
    pub(super) response_started: bool,
    /// Whether the current request body has been read to its end.
    pub(super) body_done: bool,
    /// The authenticated client key of the current request (table position).
    pub(super) key: Option<u32>,
    /// The secret the last request authenticated with: a keep-alive connection presents the
    /// same one every time, and is then not hashed again.
    last_key: keys::LastKey,
    /// When the current exchange started: the one clock reading the single-write steps of a
    /// small exchange share, instead of reading the clock for each of them.
    pub(super) started: Instant,
    /// When the current exchange's response head came from the upstream (its start until
    /// then): the first write to the client waits from here.
    pub(super) answered_at: Instant,
    /// When the current exchange's response ended, when that was read already (as the moment
    /// its upstream connection went back to the pool), for its duration.
    pub(super) ended: Option<Instant>,
    /// When the connection last fell idle: when it opened, or when its last exchange ended.
    /// The wait for the next request runs from here (the exchange's end is read once).
    pub(super) idle_since: Instant,
    /// Whether the current request's tokens count against a budget.
    pub(super) count_tokens: bool,
    /// The tokens the upstream reported for the current response.
    pub(super) usage: Option<Usage>,
    /// Reads the token usage out of the response body while it streams through.
    pub(super) scanner: Option<UsageScanner>,
    /// What the current exchange's access log record will say.
    pub(super) trace: Trace,
    /// The routes and upstreams of the current exchange, taken as it began and let go when
    /// it ends, so an idle connection keeps no replaced routing (and its pools) alive.
    pub(super) routing: Option<Rc<Routing>>,
}

impl ClientConn {
    fn new(stream: TcpStream, peer: SocketAddr, shard: &Rc<Shard>) -> Self {
        // Both buffers are allocated when first needed: the first read makes `buf`, a
        // response `out`.
        let opened = Instant::now();
        ClientConn {
            stream,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            peer_ip: peer.ip().to_string().into_boxed_str(),
            shard: Rc::clone(shard),
            response_started: false,
            body_done: true,
            key: None,
            last_key: keys::LastKey::default(),
            started: opened,
            answered_at: opened,
            ended: None,
            idle_since: opened,
            count_tokens: false,
            usage: None,
            scanner: None,
            trace: Trace::new(RequestId::new(0, 0, 0), 0),
            routing: None,
        }
    }

    /// Reads the next request head. `Ok(None)` means the connection ended cleanly: closed by
    /// the client, idle too long, or asked to drain while idle. On a `fresh` connection,
    /// which has not sent a request yet, idle means silent for `header_timeout`: a client has
    /// no reason to open a connection and say nothing, and a flood of silent connections
    /// should not hold the shard's connection slots for a keep-alive's `idle_timeout`.
    async fn read_head(
        &mut self,
        fields: &mut Vec<Field>,
        fresh: bool,
    ) -> Result<Option<RequestHead>, Error> {
        let limits = self.shard.limits();
        let idle_timeout = match fresh {
            true => limits.header_timeout.min(limits.idle_timeout),
            false => limits.idle_timeout,
        };
        // Every exchange ends with `finish_exchange`, which dates `idle_since`, before the
        // next head is read.
        let idle_deadline = self.idle_since + idle_timeout;
        let mut head_deadline = None;

        loop {
            if !self.buf.is_empty() {
                if let Some(head) =
                    RequestHead::parse(&mut self.buf, limits.max_header_bytes, fields)?
                {
                    return Ok(Some(head));
                }
                // The whole head must arrive within the header timeout of its first byte, so
                // a client trickling bytes cannot hold the connection.
                head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
            } else if self.shard.drain.is_draining() {
                return Ok(None);
            }

            let deadline = head_deadline.unwrap_or(idle_deadline);
            // Between requests the read goes into the small idle buffer; the rest of a head
            // that did not fit, into one of `read_buffer` bytes.
            let room = match self.buf.is_empty() {
                true => IDLE_READ_BUFFER.min(limits.read_buffer),
                false => limits
                    .read_buffer
                    .saturating_sub(self.buf.len())
                    .max(HEAD_READ_MIN),
            };
            let read = io::read_into(&mut self.stream, &mut self.buf, room, deadline);
            let outcome = if head_deadline.is_none() {
                // Idle between requests: a drain may end the wait.
                monoio::select! {
                    outcome = read => outcome,
                    _ = self.shard.drain.wait() => return Ok(None),
                }
            } else {
                read.await
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                // A reset between requests is the client leaving, as a close is: there is no
                // exchange to answer or log.
                Err(_) if self.buf.is_empty() => return Ok(None),
                Err(err) => return Err(Error::ClientGone(err)),
            };
            match outcome {
                ReadOutcome::Data => {}
                ReadOutcome::Closed if self.buf.is_empty() => return Ok(None),
                ReadOutcome::Closed => {
                    return Err(Error::ClientGone(std::io::ErrorKind::UnexpectedEof.into()))
                }
                ReadOutcome::TimedOut if head_deadline.is_none() => return Ok(None),
                ReadOutcome::TimedOut => return Err(Error::ClientTimeout),
            }
        }
    }

    /// Runs one exchange: checks, authentication, routing, admission, forwarding and
    /// relaying.
    async fn exchange(&mut self, head: &RequestHead) -> Result<Flow, Error> {
        self.response_started = false;
        self.body_done = matches!(head.framing, Framing::Empty | Framing::Length(0));

        if head.method == Method::Connect {
            return Err(Error::MethodNotAllowed);
        }
        let path = head.path_only();
        if has_dot_segment(path) {
            return Err(Error::BadTarget("the path holds dot segments"));
        }
        let shard = Rc::clone(&self.shard);
        // The table this exchange started with serves it to the end, whatever replaces it.
        let table = shard.keys.get();
        let key = match table.requires_keys() {
            false => None,
            true => {
                let presented = keys::presented(head).map_err(Error::Unauthorized)?;
                let now = shard.clock.now();
                let key = table.authenticate_again(presented, now, &mut self.last_key);
                let key = key.map_err(Error::Unauthorized)?;
                // Counters change only on the owner: the connection goes there, once.
                if key.owner != shard.id {
                    return Ok(Flow::HandOff(key.owner));
                }
                self.key = Some(key.index);
                Some(key)
            }
        };
        let routing = shard.routing.get();
        self.routing = Some(Rc::clone(&routing));
        let route = routing
            .router
            .route(head.host(), path)
            .ok_or(Error::NoRoute)?;
        self.trace.route = Some(route.index);
        // A retired route is gone for every key: it answers before the key's own route
        // permissions are looked at, and no upstream is contacted.
        if let Some(retired) = route.retired() {
            return Err(retired);
        }
        if key.is_some_and(|key| !key.allows_path(path)) {
            return Err(Error::Forbidden("this route"));
        }
        if let Framing::Length(length) = head.framing {
            if length > shard.limits().max_body_bytes {
                return Err(Error::BodyTooLarge);
            }
        }

        let upstream = &routing.upstreams[route.upstream];
        let body = self
            .prepare_body(head, upstream.config.retry_body_max)
            .await?;
        // The body's facts are read once, and only when a limit or a pool needs them.
        let pool_counts_tokens = std::iter::once(route.upstream)
            .chain(upstream.fallbacks.iter().copied())
            .any(|index| routing.upstreams[index].counts_tokens());
        let key_needs_facts = key.is_some_and(|key| admit::needs_facts(&table, key));
        let facts = admit::facts(upstream, head, &body, key_needs_facts || pool_counts_tokens);
        let has_body = admit::has_body(&body);
        let permit = match key {
            Some(key) => Some(self.admit(&table, key, &facts, has_body)?),
            None => None,
        };
        let tokens = match pool_counts_tokens && has_body {
            true => facts.reservation(shard.limits().default_max_tokens),
            false => 0,
        };
        // The usage is read whenever something reports it: a token budget (of the key or a
        // provider key), the access log, or the metrics of tokens per tenant, which count
        // every call with a client key.
        self.count_tokens |= pool_counts_tokens || shard.access.is_some() || key.is_some();

        // A key revoked while its request's body was arriving goes no further: the answer to
        // the revocation promised that no shard accepts it any more.
        if let Some(index) = self.key {
            let current = shard.keys.get();
            if current.generation() != table.generation() && current.key(index).revoked {
                return Err(Error::Unauthorized(keys::AuthError::Unknown));
            }
        }
        let forwarded = self
            .forward(&routing, route.upstream, head, &body, tokens)
            .await?;
        let Forwarded {
            upstream,
            sent,
            lease,
            ..
        } = forwarded;
        let keep_alive = self.relay_response(upstream, head, sent).await?;
        if let Some(usage) = self.usage {
            if let Some(permit) = &permit {
                permit.used(usage.total());
            }
            if let Some(lease) = &lease {
                lease.used_tokens(usage.total());
            }
        }
        Ok(Flow::Continue(keep_alive))
    }

    /// Moves this connection to shard `owner`, with the request head it just read and every
    /// byte after it, so the owner serves it from that request on.
    fn hand_off(self, owner: usize, head: &RequestHead) {
        let ClientConn {
            stream, buf, shard, ..
        } = self;
        let mut pending = BytesMut::with_capacity(head.raw().len() + buf.len());
        pending.extend_from_slice(head.raw());
        pending.extend_from_slice(&buf);
        let Ok(peer) = stream.peer_addr() else { return };
        let socket = crate::shard::detach(stream);
        tracing::debug!(shard = shard.id, owner, %peer, "handing connection to the key's owner");
        if shard.inboxes[owner]
            .send(Handoff {
                socket,
                peer,
                pending,
            })
            .is_err()
        {
            tracing::debug!(
                shard = shard.id,
                owner,
                "owner shard is gone; connection dropped"
            );
        }
    }

    /// Between requests: lets go of the buffers an exchange grew, so that an idle connection
    /// holds at most its small read buffer ([`IDLE_READ_BUFFER`]): the response buffer goes
    /// back to the shard's pool. Bytes of a pipelined request keep their buffer.
    fn rest(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_READ_BUFFER {
            self.buf = BytesMut::new();
        }
        let out = std::mem::take(&mut self.out);
        self.shard.out_buffers.give(out);
    }

    /// Empties the outgoing buffer for the next message, taking one of the shard's pooled
    /// buffers first when it holds none (an idle connection gives its buffer back, see
    /// [`Self::rest`]): written into an empty `BytesMut`, a head would grow it field by field,
    /// reallocating on every request.
    pub(super) fn clear_out(&mut self) {
        if self.out.capacity() < self.shard.out_buffers.size() {
            self.out = self.shard.out_buffers.take();
        }
        self.out.clear();
    }

    /// Answers `error` with the contract's JSON body, best effort: the client may be gone.
    /// An authenticated client also gets its budget; an error after routing carries the
    /// route's lifecycle fields.
    pub(super) async fn answer_error(&mut self, error: &Error, close: bool) {
        self.clear_out();
        let shard = &self.shard;
        let table = shard.keys.get();
        let key = self.key.map(|index| table.key(index));
        let lifecycle = lifecycle_fields(self.routing.as_deref(), self.trace.route);
        write_error_response(&mut self.out, error, close, |writer| {
            if let Some(key) = key {
                write_budget(writer, &shard.quota.borrow(), key, shard.clock.now());
            }
            writer.encoded_fields(lifecycle);
        });
        if self.out.is_empty() {
            return;
        }
        let written = self.out.len() as u64;
        let head =
            memchr::memmem::find(&self.out, b"\r\n\r\n").map_or(written, |end| end as u64 + 4);
        let patience = io::Patience::from_now(self.shard.limits().idle_timeout);
        self.trace.written += written;
        self.trace.head_bytes += head;
        if let Err(err) = io::flush(&mut self.stream, &mut self.out, patience).await {
            tracing::debug!(shard = self.shard.id, error = %err, "error response not delivered");
        }
    }
}

/// The lifecycle fields of the route at config position `route` (empty before routing, and
/// for a published route).
pub(super) fn lifecycle_fields(routing: Option<&Routing>, route: Option<usize>) -> &[u8] {
    route
        .zip(routing)
        .and_then(|(index, routing)| routing.router.at(index))
        .map_or(&[][..], |route| route.lifecycle_fields())
}
