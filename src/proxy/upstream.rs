//! The upstream side of an exchange: choosing an endpoint, taking a pooled connection or
//! opening one, sending the request head and body, and reading the response head.

use bytes::{Buf, BytesMut};
use monoio::time::Instant;

use super::conn::ClientConn;
use super::deadline;
use super::io::{self, ReadOutcome};
use super::request_body::RequestBody;
use super::{Error, MAX_UPSTREAM_HEAD_BYTES};
use crate::config::Provider;
use crate::http::{FieldFlags, HeadWriter, Method, RequestHead, ResponseHead, Version};
use crate::net::UpstreamConn;
use crate::upstream::{Lease, Outcome, Upstream};

/// How long after an exchange starts the gateway begins watching for the client leaving,
/// when it is still waiting (for a response head, or for a key).
const WATCH_CLIENT_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// A request delivered upstream, and the head of its response.
pub(super) struct Sent {
    pub(super) conn: Box<UpstreamConn>,
    pub(super) endpoint: usize,
    pub(super) head: ResponseHead,
    /// Whether the request carried a key of the upstream's pool.
    pub(super) keyed: bool,
}

/// Why no response head was read.
enum HeadFailure {
    /// The connection closed or reset before any response byte: safe to replay on a fresh
    /// connection when the request can be sent again.
    ClosedEarly(std::io::Error),
    /// The exchange failed in a way that is not worth retrying.
    Failed(Error),
}

impl ClientConn {
    /// Sends the request to an endpoint of `upstream` and reads the response head. A pooled
    /// connection found closed before any response byte is replaced by a fresh one, once;
    /// an endpoint that cannot be reached is passed over for another, if there is one.
    pub(super) async fn send_upstream(
        &mut self,
        upstream: &Upstream,
        head: &RequestHead,
        body: &RequestBody,
        key: Option<&Lease<'_>>,
    ) -> Result<Sent, Error> {
        let config = &upstream.config;
        let mut connect_attempts = 0;
        let mut replayed = false;
        let mut avoid = None;

        loop {
            let now = self.started;
            let index = upstream.pick(now, avoid);
            let endpoint = &upstream.endpoints[index];
            let pooled = if replayed {
                None
            } else {
                endpoint.pool.borrow_mut().take(now)
            };
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let addr = endpoint.config.addr;
                    let buffer = self.shard.limits().read_buffer;
                    let timeout = config.connect_timeout;
                    match UpstreamConn::connect(addr, timeout, buffer, &upstream.open).await {
                        Ok(conn) => conn,
                        Err(err) => {
                            self.report(upstream, index, Outcome::Failed);
                            connect_attempts += 1;
                            if connect_attempts < upstream.endpoints.len() {
                                avoid = Some(index);
                                continue;
                            }
                            return Err(match err.kind() {
                                std::io::ErrorKind::TimedOut => Error::UpstreamTimeout,
                                _ => Error::UpstreamConnect(err),
                            });
                        }
                    }
                }
            };

            let result = self
                .deliver(&mut conn, upstream, index, head, body, key)
                .await;
            match result {
                Ok(response) => {
                    let outcome = if response.status >= 500 {
                        Outcome::Failed
                    } else {
                        Outcome::Healthy
                    };
                    self.report(upstream, index, outcome);
                    return Ok(Sent {
                        conn,
                        endpoint: index,
                        head: response,
                        keyed: key.is_some(),
                    });
                }
                Err(HeadFailure::ClosedEarly(err))
                    if conn.reused && !replayed && body.replayable() =>
                {
                    tracing::debug!(shard = self.shard.id, upstream = %config.name, error = %err,
                        "pooled connection was closed; replaying on a fresh one");
                    replayed = true;
                }
                Err(HeadFailure::ClosedEarly(err)) => {
                    self.report(upstream, index, Outcome::Failed);
                    return Err(Error::UpstreamIo(err));
                }
                Err(HeadFailure::Failed(error)) => {
                    if error.side() == super::Side::Upstream {
                        self.report(upstream, index, Outcome::Failed);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Writes head and body to `conn` and reads the final response head.
    async fn deliver(
        &mut self,
        conn: &mut UpstreamConn,
        upstream: &Upstream,
        index: usize,
        head: &RequestHead,
        body: &RequestBody,
        key: Option<&Lease<'_>>,
    ) -> Result<ResponseHead, HeadFailure> {
        let timeout = self.shard.limits().idle_timeout;
        self.clear_out();
        let authority = &upstream.endpoints[index].config.authority;
        let target = Target {
            authority,
            peer_ip: &self.peer_ip,
            strip_credentials: self.key.is_some() || key.is_some(),
            key: key.map(Lease::header),
            anthropic: upstream.config.provider == Provider::Anthropic,
        };
        encode_request_head(&mut self.out, head, &target, body);
        match body {
            RequestBody::Buffered(bytes) => self.out.extend_from_slice(bytes),
            // Small first pieces of a streamed body travel with the head.
            RequestBody::Streamed(_) | RequestBody::Chunked | RequestBody::Empty => {}
        }
        let patience = io::Patience {
            from: self.started,
            wait: timeout,
        };
        if let Err(err) = io::flush(&mut conn.stream, &mut self.out, patience).await {
            return Err(HeadFailure::ClosedEarly(err));
        }

        let streamed = match body {
            RequestBody::Streamed(length) => self.stream_length_body(conn, *length).await,
            RequestBody::Chunked => self.stream_chunked_body(conn).await,
            RequestBody::Empty | RequestBody::Buffered(_) => Ok(()),
        };
        streamed.map_err(HeadFailure::Failed)?;

        // The response is due response_timeout after the request went out: for a small body
        // that is when the exchange started; a streamed body may have taken a while.
        let sent_at = match body {
            RequestBody::Streamed(_) | RequestBody::Chunked => Instant::now(),
            RequestBody::Empty | RequestBody::Buffered(_) => self.started,
        };
        let deadline = sent_at + upstream.config.response_timeout;
        let response = read_response_head(conn, head.method == Method::Head, deadline);
        self.unless_client_leaves(response)
            .await
            .unwrap_or_else(|gone| Err(HeadFailure::Failed(gone)))
    }

    /// Waits for `work` while watching the client: a client that closes its connection
    /// meanwhile ends the wait at once with [`Error::ClientGone`], instead of leaving the
    /// upstream working (and the key's concurrency slot held) for nobody. Bytes the client
    /// sends meanwhile (a pipelined request) are kept, and end the watch.
    pub(super) async fn unless_client_leaves<F, T>(&mut self, work: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = T>,
    {
        let mut work = std::pin::pin!(work);
        // Most exchanges end within a few milliseconds: only a longer wait is worth a
        // readiness poll on the client socket, which costs an io_uring operation armed and
        // cancelled. The grace period runs from the exchange's start (no clock read), on the
        // shard's deadline table (no timer-wheel entry).
        let watch_from = self.started + WATCH_CLIENT_AFTER;
        if let Some(done) = deadline::within(watch_from, &mut work).await {
            return Ok(done);
        }
        // A client that already sent more is plainly still there.
        let mut watching = self.buf.is_empty();
        loop {
            if !watching {
                return Ok(work.await);
            }
            let readable = monoio::select! {
                done = &mut work => return Ok(done),
                ready = self.stream.readable(false) => ready,
            };
            readable.map_err(Error::ClientGone)?;
            // Readable means a read completes at once; the deadline only guards against a
            // spurious wake-up holding back the work.
            let deadline = Instant::now() + std::time::Duration::from_millis(50);
            match io::read_into(&mut self.stream, &mut self.buf, 4096, deadline).await {
                Ok(ReadOutcome::Data) => watching = false,
                Ok(ReadOutcome::Closed) => {
                    return Err(Error::ClientGone(
                        std::io::ErrorKind::ConnectionAborted.into(),
                    ))
                }
                // Readable but nothing to read: keep watching.
                Ok(ReadOutcome::TimedOut) => {}
                Err(err) => return Err(Error::ClientGone(err)),
            }
        }
    }

    fn report(&self, upstream: &Upstream, index: usize, outcome: Outcome) {
        if upstream.report(index, outcome, self.started) {
            tracing::warn!(
                shard = self.shard.id,
                upstream = %upstream.config.name,
                endpoint = %upstream.endpoints[index].config.url,
                rest_secs = upstream.config.eject_for.as_secs_f64(),
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

/// Reads the final response head, skipping interim 1xx responses (RFC 9110 §15.2).
async fn read_response_head(
    conn: &mut UpstreamConn,
    head_request: bool,
    deadline: Instant,
) -> Result<ResponseHead, HeadFailure> {
    let mut received_any = !conn.buf.is_empty();
    let mut fields = std::mem::take(&mut conn.fields);
    loop {
        if !conn.buf.is_empty() {
            let parsed = ResponseHead::parse(
                &conn.buf,
                head_request,
                MAX_UPSTREAM_HEAD_BYTES,
                &mut fields,
            )
            .map_err(|_| HeadFailure::Failed(Error::UpstreamProtocol("malformed response head")))?;
            match parsed {
                Some(head) if head.status == 101 => {
                    return Err(HeadFailure::Failed(Error::UpstreamProtocol(
                        "unexpected 101 Switching Protocols",
                    )))
                }
                Some(head) if head.is_interim() => {
                    conn.buf.advance(head.head_len);
                    fields = head.fields;
                    continue;
                }
                Some(head) => return Ok(head),
                None => {}
            }
        }
        match io::read_into(&mut conn.stream, &mut conn.buf, 4096, deadline).await {
            Ok(ReadOutcome::Data) => received_any = true,
            Ok(ReadOutcome::Closed) if !received_any => {
                return Err(HeadFailure::ClosedEarly(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(ReadOutcome::Closed) => {
                return Err(HeadFailure::Failed(Error::UpstreamProtocol(
                    "connection closed inside the response head",
                )))
            }
            Ok(ReadOutcome::TimedOut) => return Err(HeadFailure::Failed(Error::UpstreamTimeout)),
            Err(err) if !received_any => return Err(HeadFailure::ClosedEarly(err)),
            Err(err) => return Err(HeadFailure::Failed(Error::UpstreamIo(err))),
        }
    }
}

/// Where a request goes and what it must not carry there.
pub(super) struct Target<'a> {
    /// The endpoint's authority, sent as Host.
    pub(super) authority: &'a str,
    /// The client's address, for X-Forwarded-For.
    pub(super) peer_ip: &'a str,
    /// Whether fields that may hold a client key are removed (client keys are in use, or a
    /// pool key takes their place).
    pub(super) strip_credentials: bool,
    /// The pool key's field, name and value, when the upstream has a key pool.
    pub(super) key: Option<(&'a [u8], &'a [u8])>,
    /// Anthropic's API wants `anthropic-version`; one is added when the client sent none.
    pub(super) anthropic: bool,
}

/// The API version sent to Anthropic when the client names none.
const ANTHROPIC_VERSION: &[u8] = b"2023-06-01";

/// The request head as the upstream sees it: origin-form target, the endpoint's authority as
/// Host, no hop-by-hop fields and no client key, `X-Forwarded-*` and `Via` added, and the
/// framing the gateway chose.
pub(super) fn encode_request_head(
    out: &mut BytesMut,
    head: &RequestHead,
    target: &Target<'_>,
    body: &RequestBody,
) {
    let Target {
        authority,
        peer_ip,
        strip_credentials,
        key,
        anthropic,
    } = *target;
    let via: &[u8] = match head.version {
        Version::Http10 => b"1.0 keygate",
        Version::Http11 => b"1.1 keygate",
    };
    let mut writer = HeadWriter::new(out);
    writer.request_line(head.method_bytes(), head.path());
    writer.field(b"Host", authority.as_bytes());

    if let Some((name, value)) = key {
        writer.field(name, value);
    }

    let (mut forwarded_for, mut via_seen, mut versioned) = (false, false, false);
    for field in &head.fields {
        if field.flags.contains(FieldFlags::HOP_BY_HOP)
            || field.flags.contains(FieldFlags::HOST)
            || (strip_credentials && field.flags.contains(FieldFlags::CREDENTIAL))
        {
            continue;
        }
        let (name, value) = (head.name(field), head.value(field));
        if name.eq_ignore_ascii_case(b"x-forwarded-for") && !forwarded_for {
            forwarded_for = true;
            writer.field_list(name, value, peer_ip.as_bytes());
        } else if name.eq_ignore_ascii_case(b"via") && !via_seen {
            via_seen = true;
            writer.field_list(name, value, via);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            // The gateway states the host it was asked for; a client's claim is dropped.
        } else {
            versioned |= anthropic && name.eq_ignore_ascii_case(b"anthropic-version");
            writer.field(name, value);
        }
    }
    if anthropic && key.is_some() && !versioned {
        writer.field(b"anthropic-version", ANTHROPIC_VERSION);
    }
    if !forwarded_for {
        writer.field(b"X-Forwarded-For", peer_ip.as_bytes());
    }
    if let Some(host) = head.host() {
        writer.field(b"X-Forwarded-Host", host);
    }
    if !via_seen {
        writer.field(b"Via", via);
    }
    match body {
        RequestBody::Empty => {}
        RequestBody::Buffered(bytes) => writer.field_u64(b"Content-Length", bytes.len() as u64),
        RequestBody::Streamed(length) => writer.field_u64(b"Content-Length", *length),
        RequestBody::Chunked => writer.field(b"Transfer-Encoding", b"chunked"),
    }
    writer.finish();
}
