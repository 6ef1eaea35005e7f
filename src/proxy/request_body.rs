//! Request bodies on their way upstream: small ones read whole (so the exchange can be
//! replayed), larger and chunked ones streamed as they arrive.

use bytes::{BufMut, Bytes};
use monoio::time::Instant;

use super::conn::ClientConn;
use super::io::{self, ReadOutcome};
use super::Error;
use crate::http::{chunk_header, ChunkedDecoder, Framing, RequestHead};
use crate::net::UpstreamConn;

/// How the request body will travel upstream.
pub(super) enum RequestBody {
    /// No body.
    Empty,
    /// The whole body, already read: it can be sent again.
    Buffered(Bytes),
    /// A body of this many bytes, streamed from the client after the head.
    Streamed(u64),
    /// A chunked body, re-framed chunk by chunk as it arrives.
    Chunked,
}

impl RequestBody {
    /// Whether the exchange can be sent again on another connection.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, RequestBody::Empty | RequestBody::Buffered(_))
    }
}

/// Checks the framing of the chunked body bytes that arrived with the head, without consuming
/// them, so that a body already known to be broken is refused before an upstream connection is
/// opened for it. Framing errors in bytes that arrive later are caught while streaming.
fn check_chunked_start(buf: &[u8]) -> Result<(), Error> {
    let mut decoder = ChunkedDecoder::new();
    let mut pos = 0;
    while pos < buf.len() && !decoder.is_done() {
        pos += decoder
            .decode(&buf[pos..])
            .map_err(Error::BadChunk)?
            .consumed;
    }
    Ok(())
}

impl ClientConn {
    /// Sends `100 Continue` when the client waits for it, and reads a body of up to
    /// `keep_up_to` bytes whole, so the request can be sent again.
    pub(super) async fn prepare_body(
        &mut self,
        head: &RequestHead,
        keep_up_to: u64,
    ) -> Result<RequestBody, Error> {
        // The gateway answers Expect itself (RFC 9110 §10.1.1): the request has been routed
        // and checked, so the body is now wanted. A client that already started sending
        // needs no invitation.
        if head.expect_continue && self.buf.is_empty() {
            self.clear_out();
            self.out.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            let patience = io::Patience::from_now(self.shard.limits().idle_timeout);
            io::flush(&mut self.stream, &mut self.out, patience)
                .await
                .map_err(Error::ClientGone)?;
        }

        Ok(match head.framing {
            Framing::Empty => RequestBody::Empty,
            Framing::Length(length) if length <= keep_up_to => {
                let length = length as usize;
                while self.buf.len() < length {
                    self.read_client(length - self.buf.len()).await?;
                }
                self.body_done = true;
                self.trace.bytes_in = length as u64;
                RequestBody::Buffered(self.buf.split_to(length).freeze())
            }
            Framing::Length(length) => RequestBody::Streamed(length),
            Framing::Chunked | Framing::CloseDelimited => {
                check_chunked_start(&self.buf)?;
                RequestBody::Chunked
            }
        })
    }

    /// Copies a body of `length` bytes from the client to the upstream.
    pub(super) async fn stream_length_body(
        &mut self,
        upstream: &mut UpstreamConn,
        length: u64,
    ) -> Result<(), Error> {
        let timeout = self.shard.limits().idle_timeout;
        let mut remaining = length;
        while remaining > 0 {
            if self.buf.is_empty() {
                self.read_client(remaining.min(64 * 1024) as usize).await?;
            }
            let take = remaining.min(self.buf.len() as u64) as usize;
            remaining -= take as u64;
            self.trace.bytes_in += take as u64;
            if take == self.buf.len() {
                let buf = std::mem::take(&mut self.buf);
                let patience = io::Patience::from_now(timeout);
                let mut buf = io::write_all(&mut upstream.stream, buf, patience)
                    .await
                    .map_err(Error::UpstreamIo)?;
                buf.clear();
                self.buf = buf;
            } else {
                let part = self.buf.split_to(take).freeze();
                io::write_all(&mut upstream.stream, part, io::Patience::from_now(timeout))
                    .await
                    .map_err(Error::UpstreamIo)?;
            }
        }
        self.body_done = true;
        Ok(())
    }

    /// Decodes a chunked body from the client and sends its data upstream re-framed, so the
    /// upstream sees only framing the gateway wrote (no extensions, no trailers).
    pub(super) async fn stream_chunked_body(
        &mut self,
        upstream: &mut UpstreamConn,
    ) -> Result<(), Error> {
        let limits = self.shard.limits();
        let (max_body, timeout) = (limits.max_body_bytes, limits.idle_timeout);
        let mut decoder = ChunkedDecoder::new();
        let mut total: u64 = 0;

        while !decoder.is_done() {
            if self.buf.is_empty() {
                self.read_client(16 * 1024).await?;
            }
            self.clear_out();
            let mut pos = 0;
            while pos < self.buf.len() && !decoder.is_done() {
                let step = decoder.decode(&self.buf[pos..]).map_err(Error::BadChunk)?;
                let data = &self.buf[pos + step.data.start..pos + step.data.end];
                if !data.is_empty() {
                    total += data.len() as u64;
                    self.trace.bytes_in = total;
                    if total > max_body {
                        return Err(Error::BodyTooLarge);
                    }
                    chunk_header(&mut self.out, data.len());
                    self.out.put_slice(data);
                    self.out.put_slice(b"\r\n");
                }
                pos += step.consumed;
            }
            let _ = self.buf.split_to(pos);
            if decoder.is_done() {
                self.out.put_slice(b"0\r\n\r\n");
            }
            if !self.out.is_empty() {
                io::flush(
                    &mut upstream.stream,
                    &mut self.out,
                    io::Patience::from_now(timeout),
                )
                .await
                .map_err(Error::UpstreamIo)?;
            }
        }
        self.body_done = true;
        Ok(())
    }

    /// Reads more body bytes from the client, who must send some within the idle timeout.
    async fn read_client(&mut self, want: usize) -> Result<(), Error> {
        let deadline = Instant::now() + self.shard.limits().idle_timeout;
        let reserve = want.clamp(1024, 64 * 1024);
        match io::read_into(&mut self.stream, &mut self.buf, reserve, deadline).await {
            Ok(ReadOutcome::Data) => Ok(()),
            Ok(ReadOutcome::Closed) => {
                Err(Error::ClientGone(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(ReadOutcome::TimedOut) => Err(Error::ClientTimeout),
            Err(err) => Err(Error::ClientGone(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ChunkError;

    #[test]
    fn chunked_start_table() {
        let table: &[(&[u8], Option<ChunkError>)] = &[
            (b"", None),
            (b"5\r\nhel", None),
            (b"5;x=1\r\nhello\r\n0\r\n\r\n", None),
            (b"0\r\n\r\nGET / HTTP/1.1\r\n", None),
            (b"5\nhello\r\n", Some(ChunkError::BadLineEnding)),
            (b"5\r\nhelloXX", Some(ChunkError::MissingDataEnd)),
            (b"z\r\n", Some(ChunkError::BadSize)),
        ];
        for (input, expected) in table {
            let got = match check_chunked_start(input) {
                Ok(()) => None,
                Err(Error::BadChunk(err)) => Some(err),
                Err(other) => panic!("{other}"),
            };
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
