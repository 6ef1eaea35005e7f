//! The client connection driver: the keep-alive loop, request heads, and answers the gateway
//! gives itself.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::net::TcpStream;
use monoio::time::Instant;
use tokio::sync::watch;

use super::io::{self, ReadOutcome};
use super::{has_dot_segment, write_error_response, Error};
use crate::http::{Field, Framing, Method, RequestHead};
use crate::shard::Shard;

/// Serves one accepted client connection until it closes, fails, or the shard drains.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shard: Rc<Shard>) {
    let mut conn = ClientConn::new(stream, peer, &shard);
    let mut shutdown = shard.shutdown.clone();
    let mut fields = Vec::new();

    loop {
        let head = match conn.read_head(&mut shutdown, fields).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(shard = shard.id, %peer, %error, "bad request head");
                conn.answer_error(&error, true).await;
                break;
            }
        };

        let result = conn.exchange(&head).await;
        let keep_alive = match result {
            Ok(keep_alive) => keep_alive,
            Err(error) => {
                tracing::debug!(shard = shard.id, %peer, %error, side = ?error.side(), "request failed");
                // Once a response byte is out, or the body was left unread, the connection
                // cannot carry another exchange.
                let reusable = !conn.response_started && conn.body_done && head.keep_alive;
                if !conn.response_started {
                    conn.answer_error(&error, !reusable).await;
                }
                reusable
            }
        };
        if !keep_alive || *shutdown.borrow() {
            break;
        }
        fields = head.into_fields();
    }
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
}

impl ClientConn {
    fn new(stream: TcpStream, peer: SocketAddr, shard: &Rc<Shard>) -> Self {
        let capacity = shard.limits.read_buffer;
        ClientConn {
            stream,
            buf: BytesMut::with_capacity(capacity),
            out: BytesMut::with_capacity(capacity),
            peer_ip: peer.ip().to_string().into_boxed_str(),
            shard: Rc::clone(shard),
            response_started: false,
            body_done: true,
        }
    }

    /// Reads the next request head. `Ok(None)` means the connection ended cleanly: closed by
    /// the client, idle too long, or asked to drain while idle.
    async fn read_head(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        mut fields: Vec<Field>,
    ) -> Result<Option<RequestHead>, Error> {
        let limits = &self.shard.limits;
        let idle_deadline = Instant::now() + limits.idle_timeout;
        let mut head_deadline = None;

        loop {
            if !self.buf.is_empty() {
                match RequestHead::parse(&mut self.buf, limits.max_header_bytes, fields)? {
                    Some(head) => return Ok(Some(head)),
                    None => fields = Vec::new(),
                }
                // The whole head must arrive within the header timeout of its first byte, so
                // a client trickling bytes cannot hold the connection.
                head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
            } else if *shutdown.borrow() {
                return Ok(None);
            }

            let deadline = head_deadline.unwrap_or(idle_deadline);
            let read = io::read_into(&mut self.stream, &mut self.buf, 4096, deadline);
            let outcome = if head_deadline.is_none() {
                // Idle between requests: a drain may end the wait.
                monoio::select! {
                    outcome = read => outcome,
                    _ = shutdown.changed() => return Ok(None),
                }
            } else {
                read.await
            };
            match outcome.map_err(Error::ClientGone)? {
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

    /// Runs one exchange: checks, routing, forwarding and relaying. Returns whether the
    /// connection may carry another request.
    async fn exchange(&mut self, head: &RequestHead) -> Result<bool, Error> {
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
        let route = shard
            .router
            .route(head.host(), path)
            .ok_or(Error::NoRoute)?;
        if let Framing::Length(length) = head.framing {
            if length > shard.limits.max_body_bytes {
                return Err(Error::BodyTooLarge);
            }
        }

        let upstream = &shard.upstreams[route.upstream];
        let body = self.prepare_body(head).await?;
        let sent = self.send_upstream(upstream, head, &body).await?;
        self.relay_response(upstream, head, sent).await
    }

    /// Answers `error` with the contract's JSON body, best effort: the client may be gone.
    pub(super) async fn answer_error(&mut self, error: &Error, close: bool) {
        self.out.clear();
        write_error_response(&mut self.out, error, close);
        if self.out.is_empty() {
            return;
        }
        let timeout = self.shard.limits.idle_timeout;
        if let Err(err) = io::flush(&mut self.stream, &mut self.out, timeout).await {
            tracing::debug!(shard = self.shard.id, error = %err, "error response not delivered");
        }
    }
}
