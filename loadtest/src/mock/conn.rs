//! One client connection: reads requests (pipelined, any body framing), answers them in order,
//! and keeps the connection open until the client or a reply ends it.
//!
//! Every buffer lives as long as the connection and is reused by each request on it, so a
//! request costs no allocation once they have grown. Responses are gathered in one output
//! buffer, which is written before anything waits (a read, a delay): pipelined requests that
//! arrived together are answered with one write, and a delayed or streamed reply never holds
//! back the responses before it.

use std::io;
use std::mem;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use keygate::http::{ChunkedDecoder, Field, Framing, Method, ParseError, RequestHead, Version};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::debug;

use super::gate::{self, Keyed};
use super::keys::Open;
use super::knobs::Knobs;
use super::ratelimit;
use super::response::{self, BodyFraming, ReplyHead, RetryAfter};
use super::route::{self, Exchange, Reply, EVENT_STREAM};
use super::server::Worker;
use super::style::Style;

/// The largest request head accepted; larger ones get 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The largest request body accepted; larger ones get 413.
const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// Read buffer growth step, and the least free space handed to a read.
const READ_CHUNK: usize = 16 * 1024;
const MIN_READ_SPACE: usize = 2 * 1024;

/// How long a closing connection keeps reading (and dropping) what the client still sends, so
/// that unread bytes do not turn the close into a reset that destroys the response in flight
/// (RFC 9112 §9.6).
const LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it ends.
pub async fn serve(stream: TcpStream, worker: &Worker) {
    let mut conn = Conn {
        stream,
        input: BytesMut::new(),
        output: BytesMut::new(),
        body: Vec::new(),
        request_body: Vec::new(),
        model: String::new(),
        fields: Vec::new(),
    };
    if let Err(Stop::Io(err)) = conn.run(worker).await {
        debug!(error = %err, "connection failed");
    }
}

/// A connection and the buffers its requests reuse.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet used.
    input: BytesMut,
    /// Response bytes not yet written.
    output: BytesMut,
    /// The body of the reply being built, or the streamed event being built.
    body: Vec<u8>,
    /// A chunked request body, decoded.
    request_body: Vec<u8>,
    /// The model a streamed reply echoes.
    model: String,
    /// Field storage handed from one request head to the next.
    fields: Vec<Field>,
}

/// Why a connection stops serving.
#[derive(Debug)]
enum Stop {
    /// The client closed the connection.
    Closed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The request cannot be read or framed: answer this and close (RFC 9112 §9.6).
    Refuse { status: u16, message: String },
}

impl From<io::Error> for Stop {
    fn from(err: io::Error) -> Self {
        Stop::Io(err)
    }
}

/// Where the current request's body is.
#[derive(Debug, Clone, Copy)]
enum BodyAt {
    /// The first bytes of `input`.
    Input(usize),
    /// In `request_body`.
    Decoded,
}

impl Conn {
    async fn run(&mut self, worker: &Worker) -> Result<(), Stop> {
        loop {
            // Between requests there is nothing to parse yet: wait for bytes first.
            if self.input.is_empty() {
                self.flush().await?;
                if self.fill().await? == 0 {
                    return Ok(());
                }
            }
            let head = match RequestHead::parse(&mut self.input, MAX_HEAD_BYTES, &mut self.fields) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    self.flush().await?;
                    if self.fill().await? == 0 {
                        return Ok(());
                    }
                    continue;
                }
                Err(err) => return self.refuse(worker, head_error_status(&err), &err).await,
            };

            match self.exchange(&head, worker).await {
                Ok(true) => {}
                Ok(false) => return self.close().await,
                Err(Stop::Refuse { status, message }) => {
                    return self.refuse(worker, status, &message).await
                }
                Err(stop) => return Err(stop),
            }
            self.fields = head.into_fields();
        }
    }

    /// Reads the body of the request `head`, answers it, and says whether the connection may
    /// carry another request.
    async fn exchange(&mut self, head: &RequestHead, worker: &Worker) -> Result<bool, Stop> {
        let body_at = self.read_body(head.framing, head.expect_continue).await?;

        let (knobs, bad_knob) = match Knobs::read(head, &worker.defaults) {
            Ok(knobs) => (knobs, None),
            Err(bad) => (Knobs::new(&worker.defaults), Some(bad)),
        };
        let request_id = worker.next_request_id();
        let keys = &worker.keys;
        let style = gate::style_for(keys, head);
        let mut keyed = Keyed::default();
        let reply = match bad_knob {
            Some(bad) => {
                let message = format!("invalid value for {}", bad.0);
                route::error(&mut self.body, style, 400, &message)
            }
            None => {
                let body = match body_at {
                    BodyAt::Input(len) => &self.input[..len],
                    BodyAt::Decoded => &self.request_body[..],
                };
                let exchange = Exchange {
                    head,
                    body,
                    knobs: &knobs,
                    id: request_id,
                    created: unix_seconds(),
                    style,
                    keys,
                };
                if keys.checks() && !route::is_mock_own(head.path_only()) {
                    let (reply, with_key) =
                        gate::answer(keys, &exchange, &mut self.body, &mut self.model);
                    keyed = with_key;
                    reply
                } else {
                    route::route(&exchange, &mut self.body, &mut self.model, &mut Open)
                }
            }
        };
        if let BodyAt::Input(len) = body_at {
            self.input.advance(len);
        }

        let latency = knobs.latency + keyed.latency;
        if !latency.is_zero() {
            self.flush().await?;
            monoio::time::sleep(latency).await;
        }
        let (status, content_type, framing) = match &reply {
            Reply::Whole {
                status,
                content_type,
            } => {
                let framing = match (knobs.no_length, knobs.chunked, head.version) {
                    (true, _, _) => BodyFraming::Close,
                    (false, true, Version::Http11) => BodyFraming::Chunked,
                    _ => BodyFraming::Length(self.body.len()),
                };
                (*status, *content_type, framing)
            }
            // HTTP/1.0 has no chunked coding (RFC 9112 §7): stream until the close instead.
            Reply::Stream(_) if knobs.no_length || head.version == Version::Http10 => {
                (200, EVENT_STREAM, BodyFraming::Close)
            }
            Reply::Stream(_) => (200, EVENT_STREAM, BodyFraming::Chunked),
        };
        let keep_alive = head.keep_alive && !knobs.close && framing != BodyFraming::Close;
        ReplyHead {
            status,
            content_type,
            framing,
            close: !keep_alive,
            keep_alive_http10: keep_alive && head.version == Version::Http10,
            authorization: knobs.authorization,
            request_id,
            retry_after: retry_after(status, &knobs, &keyed, style),
            limits: keyed.limits.map(|limits| (style, limits)),
            extra_fields: knobs.extra_fields.then_some(head),
        }
        .write(&mut self.output);

        match reply {
            // A response to HEAD has no body, whatever its framing says (RFC 9110 §9.3.2).
            Reply::Whole { .. } if head.method == Method::Head => {}
            Reply::Whole { .. } => response::body(&mut self.output, framing, &self.body),
            Reply::Stream(stream) => self.stream(stream, framing, knobs.token_delay).await?,
        }
        Ok(keep_alive)
    }

    /// Sends the events of a streamed reply, each its own chunk, waiting `token_delay` between
    /// them. Without a delay they are gathered into one write.
    async fn stream(
        &mut self,
        mut stream: super::openai::ChatStream,
        framing: BodyFraming,
        token_delay: Duration,
    ) -> Result<(), Stop> {
        let mut first = true;
        loop {
            self.body.clear();
            if !stream.next_event(&self.model, &mut self.body) {
                break;
            }
            if !first && !token_delay.is_zero() {
                self.flush().await?;
                monoio::time::sleep(token_delay).await;
            }
            first = false;
            match framing {
                BodyFraming::Chunked => response::chunk(&mut self.output, &self.body),
                _ => self.output.extend_from_slice(&self.body),
            }
        }
        if framing == BodyFraming::Chunked {
            response::last_chunk(&mut self.output);
        }
        Ok(())
    }

    /// Reads the body as `framing` says, leaving it where the returned value points. A client
    /// that expects `100 Continue` gets it once its body's size has been accepted.
    async fn read_body(&mut self, framing: Framing, expect_continue: bool) -> Result<BodyAt, Stop> {
        if let Framing::Length(len) = framing {
            if len > MAX_BODY_BYTES {
                return Err(too_large());
            }
        }
        // The client waits for this before sending the body (RFC 9110 §10.1.1).
        if expect_continue {
            self.output
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        match framing {
            Framing::Empty | Framing::CloseDelimited => Ok(BodyAt::Input(0)),
            Framing::Length(len) => {
                let len = len as usize;
                while self.input.len() < len {
                    self.input.reserve(len - self.input.len());
                    self.flush().await?;
                    if self.fill().await? == 0 {
                        return Err(Stop::Closed);
                    }
                }
                Ok(BodyAt::Input(len))
            }
            Framing::Chunked => {
                self.request_body.clear();
                let mut decoder = ChunkedDecoder::new();
                loop {
                    while !self.input.is_empty() && !decoder.is_done() {
                        let step = decoder.decode(&self.input).map_err(|err| Stop::Refuse {
                            status: 400,
                            message: err.to_string(),
                        })?;
                        self.request_body.extend_from_slice(&self.input[step.data]);
                        self.input.advance(step.consumed);
                    }
                    if self.request_body.len() as u64 > MAX_BODY_BYTES {
                        return Err(too_large());
                    }
                    if decoder.is_done() {
                        return Ok(BodyAt::Decoded);
                    }
                    self.flush().await?;
                    if self.fill().await? == 0 {
                        return Err(Stop::Closed);
                    }
                }
            }
        }
    }

    /// Answers a request that cannot be read with an error, then closes.
    async fn refuse(
        &mut self,
        worker: &Worker,
        status: u16,
        message: &dyn std::fmt::Display,
    ) -> Result<(), Stop> {
        let message = message.to_string();
        route::error(&mut self.body, Style::OpenAi, status, &message);
        ReplyHead {
            status,
            content_type: route::JSON,
            framing: BodyFraming::Length(self.body.len()),
            close: true,
            keep_alive_http10: false,
            authorization: None,
            request_id: worker.next_request_id(),
            retry_after: None,
            limits: None,
            extra_fields: None,
        }
        .write(&mut self.output);
        self.output.extend_from_slice(&self.body);
        self.close().await
    }

    /// Writes what is pending, ends the sending side, and drains the client for a while.
    async fn close(&mut self) -> Result<(), Stop> {
        self.flush().await?;
        self.stream.shutdown().await?;
        let drain = async {
            self.input.clear();
            while self.fill().await? > 0 {
                self.input.clear();
            }
            Ok::<(), Stop>(())
        };
        // A client that keeps sending past the linger time is cut off; either way we are done.
        let _ = monoio::time::timeout(LINGER, drain).await;
        Ok(())
    }

    /// Appends what the socket has to `input`. Returns 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize, Stop> {
        if self.input.capacity() - self.input.len() < MIN_READ_SPACE {
            self.input.reserve(READ_CHUNK);
        }
        // monoio reads into a buffer from its start: hand it the spare tail only.
        let input = mem::take(&mut self.input);
        let (len, capacity) = (input.len(), input.capacity());
        let (result, input) = self.stream.read(input.slice_mut(len..capacity)).await;
        self.input = input.into_inner();
        Ok(result?)
    }

    /// Writes all pending output.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.output.is_empty() {
            return Ok(());
        }
        let output = mem::take(&mut self.output);
        let (result, mut output) = self.stream.write_all(output).await;
        output.clear();
        self.output = output;
        result?;
        Ok(())
    }
}

fn too_large() -> Stop {
    Stop::Refuse {
        status: 413,
        message: format!("request body over {MAX_BODY_BYTES} bytes"),
    }
}

/// The `retry-after` of a reply: only a 429 has one, the test's verbatim value if it gave one,
/// else the wait its key's limits set (none for Gemini, which says it in the body), else 1 s.
fn retry_after<'a>(
    status: u16,
    knobs: &Knobs<'a>,
    keyed: &Keyed,
    style: Style,
) -> Option<RetryAfter<'a>> {
    if status != 429 {
        return None;
    }
    if let Some(value) = knobs.retry_after {
        return Some(RetryAfter::Verbatim(value));
    }
    match keyed.limits.and_then(|limits| limits.retry) {
        Some(_) if style == Style::Gemini => None,
        Some(wait) => Some(RetryAfter::Seconds(ratelimit::whole_seconds(wait))),
        None => Some(RetryAfter::Seconds(1)),
    }
}

/// The status for a head that cannot be accepted.
fn head_error_status(err: &ParseError) -> u16 {
    match err {
        ParseError::HeadTooLarge => 431,
        _ => 400,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
