//! The response on its way back to the client: head rewritten, body streamed as it arrives.
//!
//! Bodies are never buffered whole. Bytes read from the upstream are written to the client
//! before the next read, so server-sent events reach the client as they are produced, and a
//! client that goes away ends the upstream exchange at the next write.

use bytes::{Buf, BufMut, BytesMut};
use monoio::time::Instant;

use super::budget::write_budget;
use super::conn::{lifecycle_fields, ClientConn};
use super::io::{self, ReadOutcome};
use super::upstream::Sent;
use super::Error;
use crate::ai::UsageScanner;
use crate::http::{chunk_header, ChunkedDecoder, FieldFlags, Framing, HeadWriter, Method};
use crate::http::{RequestHead, ResponseHead, Version};
use crate::keys::ClientKey;
use crate::net::UpstreamConn;
use crate::quota::QuotaBook;
use crate::upstream::Upstream;

/// The most bytes of a non-streamed response kept to read its token usage.
const USAGE_SCAN_BYTES: usize = 1 << 20;

/// How the body travels to the client, given the upstream framing and the client's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// No body.
    Empty,
    /// Exactly this many bytes, passed through.
    Length(u64),
    /// A chunked body passed through unchanged, its framing checked on the way.
    Chunked,
    /// A chunked body decoded for an HTTP/1.0 client, which then sees the connection close.
    Dechunk,
    /// A close-delimited body re-framed as chunked, so the client connection survives.
    Rechunk,
    /// A close-delimited body passed through to an HTTP/1.0 client.
    UntilClose,
}

impl Relay {
    fn choose(framing: Framing, client: Version) -> Relay {
        match (framing, client) {
            (Framing::Empty, _) => Relay::Empty,
            (Framing::Length(length), _) => Relay::Length(length),
            (Framing::Chunked, Version::Http11) => Relay::Chunked,
            (Framing::Chunked, Version::Http10) => Relay::Dechunk,
            (Framing::CloseDelimited, Version::Http11) => Relay::Rechunk,
            (Framing::CloseDelimited, Version::Http10) => Relay::UntilClose,
        }
    }

    /// Whether the client connection must close to mark the end of the body.
    fn closes_client(self) -> bool {
        matches!(self, Relay::Dechunk | Relay::UntilClose)
    }
}

impl ClientConn {
    /// Streams the response of `sent` to the client. Returns whether the client connection
    /// may carry another request; the upstream connection goes back to its pool when it can.
    pub(super) async fn relay_response(
        &mut self,
        upstream: &Upstream,
        request: &RequestHead,
        sent: Sent,
    ) -> Result<bool, Error> {
        let Sent {
            mut conn,
            endpoint,
            head,
            keyed,
        } = sent;
        let relay = Relay::choose(head.framing, request.version);
        let draining = self.shard.drain.is_draining();
        let keep_alive =
            request.keep_alive && self.body_done && !relay.closes_client() && !draining;

        // A pooled buffer of `read_buffer` bytes: room for the head and the body that came
        // with it.
        self.clear_out();
        {
            let shard = &self.shard;
            let quota = shard.quota.borrow();
            let table = shard.keys.get();
            let key = self.key.map(|index| table.key(index));
            let budget = key.map(|key| (&*quota, key, shard.clock.now()));
            let response = Response {
                head: &head,
                buf: &conn.buf,
                relay,
                keep_alive,
                keyed,
                lifecycle: lifecycle_fields(self.routing.as_deref(), self.trace.route),
            };
            encode_response_head(&mut self.out, &response, request, budget);
        }
        self.trace.status = head.status;
        self.trace.head_bytes = self.out.len() as u64;
        if self.count_tokens {
            let streaming = is_event_stream(&head, &conn.buf);
            let provider = upstream.config.provider;
            self.scanner = Some(UsageScanner::new(provider, streaming, USAGE_SCAN_BYTES));
        }
        conn.buf.advance(head.head_len);

        let complete = match relay {
            Relay::Empty => {
                self.send_out().await?;
                true
            }
            Relay::Length(length) => self.relay_length(&mut conn, upstream, length).await?,
            Relay::Chunked | Relay::Dechunk => {
                self.relay_chunked(&mut conn, upstream, relay == Relay::Dechunk)
                    .await?
            }
            Relay::Rechunk | Relay::UntilClose => {
                self.relay_until_close(&mut conn, upstream, relay == Relay::Rechunk)
                    .await?;
                false
            }
        };

        if let Some(scanner) = self.scanner.take() {
            self.usage = scanner.finish();
        }
        // Only a connection whose response ended exactly where its framing said can be reused.
        // The exchange ends with no further wait: one clock reading dates both.
        if complete && head.keep_alive && conn.buf.is_empty() {
            let now = Instant::now();
            upstream.keep_alive(endpoint, conn, head.fields, now);
            self.ended = Some(now);
        }
        Ok(keep_alive)
    }

    /// Passes through a body of `length` bytes; the head goes out with the first bytes.
    async fn relay_length(
        &mut self,
        conn: &mut UpstreamConn,
        upstream: &Upstream,
        length: u64,
    ) -> Result<bool, Error> {
        let take = length.min(conn.buf.len() as u64) as usize;
        self.scan(&conn.buf[..take]);
        self.out.put_slice(&conn.buf[..take]);
        conn.buf.advance(take);
        self.send_out().await?;

        let mut remaining = length - take as u64;
        while remaining > 0 {
            self.read_upstream(conn, upstream).await?;
            let take = remaining.min(conn.buf.len() as u64) as usize;
            remaining -= take as u64;
            self.scan(&conn.buf[..take]);
            self.send_upstream_bytes(conn, take).await?;
        }
        Ok(true)
    }

    /// Passes through a chunked body (or, for an HTTP/1.0 client, only its data), checking
    /// the framing so the client never sees a body that does not end where it should.
    async fn relay_chunked(
        &mut self,
        conn: &mut UpstreamConn,
        upstream: &Upstream,
        dechunk: bool,
    ) -> Result<bool, Error> {
        let mut decoder = ChunkedDecoder::new();
        loop {
            let mut pos = 0;
            while pos < conn.buf.len() && !decoder.is_done() {
                let step = decoder
                    .decode(&conn.buf[pos..])
                    .map_err(|_| Error::UpstreamProtocol("malformed chunked response body"))?;
                let data = pos + step.data.start..pos + step.data.end;
                // The scanner reads the body's data, framing removed, like any other body.
                self.scan(&conn.buf[data.clone()]);
                if dechunk {
                    self.out.put_slice(&conn.buf[data]);
                }
                pos += step.consumed;
            }
            if dechunk {
                conn.buf.advance(pos);
                self.send_out().await?;
            } else if !self.out.is_empty() {
                // The head and the first piece of body leave in one write.
                self.out.put_slice(&conn.buf[..pos]);
                conn.buf.advance(pos);
                self.send_out().await?;
            } else {
                self.send_upstream_bytes(conn, pos).await?;
            }
            if decoder.is_done() {
                return Ok(true);
            }
            self.read_upstream(conn, upstream).await?;
        }
    }

    /// Relays a body that ends when the upstream closes, as chunks for an HTTP/1.1 client.
    async fn relay_until_close(
        &mut self,
        conn: &mut UpstreamConn,
        upstream: &Upstream,
        rechunk: bool,
    ) -> Result<(), Error> {
        loop {
            if !conn.buf.is_empty() {
                self.scan(&conn.buf);
                if rechunk {
                    chunk_header(&mut self.out, conn.buf.len());
                    self.out.put_slice(&conn.buf);
                    self.out.put_slice(b"\r\n");
                } else {
                    self.out.put_slice(&conn.buf);
                }
                conn.buf.clear();
            }
            if !self.out.is_empty() {
                self.send_out().await?;
            }
            let deadline = Instant::now() + upstream.config.response_timeout;
            match io::read_into(&mut conn.stream, &mut conn.buf, 16 * 1024, deadline).await {
                Ok(ReadOutcome::Data) => {}
                Ok(ReadOutcome::Closed) => break,
                Ok(ReadOutcome::TimedOut) => return Err(Error::UpstreamTimeout),
                Err(err) => return Err(Error::UpstreamIo(err)),
            }
        }
        if rechunk {
            self.out.put_slice(b"0\r\n\r\n");
            self.send_out().await?;
        }
        Ok(())
    }

    /// Reads more of the response body; an upstream that stops early fails the exchange.
    async fn read_upstream(
        &mut self,
        conn: &mut UpstreamConn,
        upstream: &Upstream,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + upstream.config.response_timeout;
        match io::read_into(&mut conn.stream, &mut conn.buf, 16 * 1024, deadline).await {
            Ok(ReadOutcome::Data) => Ok(()),
            Ok(ReadOutcome::Closed) => {
                Err(Error::UpstreamIo(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(ReadOutcome::TimedOut) => Err(Error::UpstreamTimeout),
            Err(err) => Err(Error::UpstreamIo(err)),
        }
    }

    /// Writes the first `len` bytes of the upstream buffer to the client. The whole buffer
    /// is handed over as it is when it holds nothing else, so no bytes are copied.
    async fn send_upstream_bytes(
        &mut self,
        conn: &mut UpstreamConn,
        len: usize,
    ) -> Result<(), Error> {
        let patience = io::Patience::from_now(self.shard.limits().idle_timeout);
        self.response_started = true;
        self.trace.written += len as u64;
        if len == conn.buf.len() {
            let buf = std::mem::take(&mut conn.buf);
            let mut buf = io::write_all(&mut self.stream, buf, patience)
                .await
                .map_err(Error::ClientGone)?;
            buf.clear();
            conn.buf = buf;
        } else if len > 0 {
            let part = conn.buf.split_to(len).freeze();
            io::write_all(&mut self.stream, part, patience)
                .await
                .map_err(Error::ClientGone)?;
        }
        Ok(())
    }

    /// Shows body bytes to the usage scanner, when tokens are counted.
    fn scan(&mut self, data: &[u8]) {
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(data);
        }
    }

    /// Writes the scratch buffer (head and small bodies) to the client. The first write of a
    /// response waits `idle_timeout` from when its head came (a clock reading the exchange
    /// took already); later ones from when they begin.
    async fn send_out(&mut self) -> Result<(), Error> {
        let wait = self.shard.limits().idle_timeout;
        let from = if self.response_started {
            Instant::now()
        } else {
            self.answered_at
        };
        self.response_started = true;
        self.trace.written += self.out.len() as u64;
        let patience = io::Patience { from, wait };
        io::flush(&mut self.stream, &mut self.out, patience)
            .await
            .map_err(Error::ClientGone)
    }
}

/// A response head on its way to the client, and how its body will follow.
struct Response<'a> {
    head: &'a ResponseHead,
    /// The buffer the head was parsed from.
    buf: &'a [u8],
    relay: Relay,
    keep_alive: bool,
    /// Whether it answers a request sent with a pool key, whose limits the provider's
    /// rate-limit fields describe.
    keyed: bool,
    /// The route's `Deprecation`, `Sunset` and `Link` lines; empty for a published route.
    lifecycle: &'a [u8],
}

/// Whether a response is a server-sent event stream.
fn is_event_stream(head: &ResponseHead, buf: &[u8]) -> bool {
    head.fields.iter().any(|field| {
        let name = &buf[field.name.start as usize..field.name.end as usize];
        let value = &buf[field.value.start as usize..field.value.end as usize];
        name.eq_ignore_ascii_case(b"content-type")
            && value.len() >= 17
            && value[..17].eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// Whether a field describes a rate limit: the provider's own budget is never shown to a
/// client that has a budget of its own at the gateway, nor one that a pool key's describes.
fn is_rate_limit_field(name: &[u8]) -> bool {
    (name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-ratelimit-"))
        || (name.len() > 20 && name[..20].eq_ignore_ascii_case(b"anthropic-ratelimit-"))
        || name.eq_ignore_ascii_case(b"ratelimit")
        || name.eq_ignore_ascii_case(b"ratelimit-policy")
}

/// Whether a field is one a deprecated route states for itself. Both are singletons (RFC
/// 9745 section 2.1, RFC 8594 section 3), so the upstream's are dropped on such a route
/// rather than sent beside the gateway's. `Link` is a list and stays.
fn is_lifecycle_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"deprecation") || name.eq_ignore_ascii_case(b"sunset")
}

/// The response head as the client sees it: status and fields as the upstream sent them,
/// less hop-by-hop fields, with `Via`, the client's own budget when it has a key, the
/// route's lifecycle fields, and the framing the relay uses.
fn encode_response_head(
    out: &mut BytesMut,
    response: &Response<'_>,
    request: &RequestHead,
    budget: Option<(&QuotaBook, &ClientKey, u64)>,
) {
    let Response {
        head,
        buf,
        relay,
        keep_alive,
        keyed,
        lifecycle,
    } = *response;
    let via: &[u8] = match head.version {
        Version::Http10 => b"1.0 keygate",
        Version::Http11 => b"1.1 keygate",
    };
    // A HEAD or 304 response's Content-Length describes the representation, not this
    // message's body (RFC 9110 §8.6), so it is passed through.
    let describes_representation = request.method == Method::Head || head.status == 304;
    let text = |range: &std::ops::Range<u32>| &buf[range.start as usize..range.end as usize];

    let mut writer = HeadWriter::new(out);
    writer.status_line(head.status, head.reason(buf));
    let mut via_seen = false;
    for field in &head.fields {
        let (name, value) = (text(&field.name), text(&field.value));
        if field.flags.contains(FieldFlags::HOP_BY_HOP) {
            if describes_representation && name.eq_ignore_ascii_case(b"content-length") {
                writer.field(name, value);
            }
            continue;
        }
        if (budget.is_some() || keyed) && is_rate_limit_field(name) {
            continue;
        }
        if !lifecycle.is_empty() && is_lifecycle_field(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"via") && !via_seen {
            via_seen = true;
            writer.field_list(name, value, via);
        } else {
            writer.field(name, value);
        }
    }
    if !via_seen {
        writer.field(b"Via", via);
    }
    if let Some((quota, key, now)) = budget {
        write_budget(&mut writer, quota, key, now);
    }
    writer.encoded_fields(lifecycle);
    match relay {
        Relay::Length(length) => writer.field_u64(b"Content-Length", length),
        Relay::Chunked | Relay::Rechunk => writer.field(b"Transfer-Encoding", b"chunked"),
        Relay::Empty | Relay::Dechunk | Relay::UntilClose => {}
    }
    match (keep_alive, request.version) {
        (false, _) => writer.field(b"Connection", b"close"),
        (true, Version::Http10) => writer.field(b"Connection", b"keep-alive"),
        (true, Version::Http11) => {}
    }
    writer.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head the client gets for upstream head `upstream`, on a route with `lifecycle`.
    fn client_head(upstream: &[u8], lifecycle: &[u8]) -> String {
        let mut request_buf = BytesMut::from(&b"GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let request = RequestHead::parse(&mut request_buf, 4096, &mut Vec::new())
            .expect("valid request")
            .expect("whole request");
        let buf = BytesMut::from(upstream);
        let head = ResponseHead::parse(&buf, false, 4096, &mut Vec::new())
            .expect("valid response")
            .expect("whole response");
        let response = Response {
            head: &head,
            buf: &buf,
            relay: Relay::choose(head.framing, request.version),
            keep_alive: true,
            keyed: false,
            lifecycle,
        };
        let mut out = BytesMut::new();
        encode_response_head(&mut out, &response, &request, None);
        String::from_utf8(out.to_vec()).expect("ASCII head")
    }

    #[test]
    fn a_deprecated_route_states_its_own_lifecycle() {
        let upstream = b"HTTP/1.1 200 OK\r\nDeprecation: @1\r\n\
                         sunset: Thu, 01 Jan 1970 00:00:01 GMT\r\n\
                         Link: <https://up.example/next>; rel=\"next\"\r\n\
                         Content-Length: 2\r\n\r\nok";
        let lifecycle =
            b"Deprecation: @1767225600\r\nLink: <https://docs.example>; rel=\"deprecation\"\r\n";
        assert_eq!(
            client_head(upstream, lifecycle),
            "HTTP/1.1 200 OK\r\nLink: <https://up.example/next>; rel=\"next\"\r\n\
             Via: 1.1 keygate\r\nDeprecation: @1767225600\r\n\
             Link: <https://docs.example>; rel=\"deprecation\"\r\nContent-Length: 2\r\n\r\n"
        );

        // On a published route the upstream's own fields pass through untouched.
        assert_eq!(
            client_head(upstream, b""),
            "HTTP/1.1 200 OK\r\nDeprecation: @1\r\nsunset: Thu, 01 Jan 1970 00:00:01 GMT\r\n\
             Link: <https://up.example/next>; rel=\"next\"\r\nVia: 1.1 keygate\r\n\
             Content-Length: 2\r\n\r\n"
        );
    }
}
