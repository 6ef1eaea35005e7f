//! One idle connection: opened, one exchange on it, then watched while it sits idle.
//!
//! Opening borrows the opener's buffers, reused from one connection to the next; a connection
//! that is held keeps only its socket and a 16-byte buffer for the read that watches it. That
//! read completes only if the server closes the connection, resets it or sends bytes nobody
//! asked for: whichever it is, the connection has stopped being idle.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::mem;
use std::net::SocketAddr;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::debug;

use crate::run::request::RequestTemplate;
use crate::run::response::{End, Response, ResponseReader};
use crate::run::stats::Failure;

/// The least free space handed to a read of a response.
const MIN_READ_SPACE: usize = 4 * 1024;

/// The buffer of the read that watches a held connection.
const WATCH_BYTES: usize = 16;

/// What every connection does.
#[derive(Debug)]
pub struct Plan {
    /// Where connections go.
    pub addr: SocketAddr,
    /// The one request each connection sends.
    pub template: RequestTemplate,
    /// How long a connect, and then the response, may take.
    pub timeout: Duration,
}

/// How opening a connection ended.
pub enum Opened {
    /// Answered, and the server keeps the connection open: the connection, to hold.
    KeptAlive(TcpStream, u16),
    /// Answered, and the server closes the connection (`Connection: close`, or a body that
    /// ends at the close).
    Closed(u16),
    /// No response.
    Failed(Failure),
}

/// An opener's reusable buffers and response reader.
pub struct Opener {
    input: BytesMut,
    output: BytesMut,
    reader: ResponseReader,
}

impl Opener {
    /// An opener with empty buffers.
    pub fn new() -> Self {
        Opener {
            input: BytesMut::new(),
            output: BytesMut::new(),
            reader: ResponseReader::new(false),
        }
    }

    /// Connects, sends the plan's request with key `key` and reads its response.
    pub async fn open(&mut self, plan: &Plan, key: u64) -> Opened {
        let connect = TcpStream::connect_addr(plan.addr);
        let until = Instant::now() + plan.timeout;
        let mut stream = match monoio::time::timeout_at(until.into(), connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                debug!(error = %err, addr = %plan.addr, "connect failed");
                return Opened::Failed(Failure::Connect);
            }
            Err(_) => {
                debug!(addr = %plan.addr, "connect timed out");
                return Opened::Failed(Failure::Connect);
            }
        };
        let _ = stream.set_nodelay(true);

        self.output.clear();
        plan.template.write(key, &mut self.output);
        let until = Instant::now() + plan.timeout;
        let output = mem::take(&mut self.output);
        match monoio::time::timeout_at(until.into(), stream.write_all(output)).await {
            Ok((Ok(_), output)) => self.output = output,
            Ok((Err(err), _)) => {
                debug!(error = %err, "write failed");
                return Opened::Failed(Failure::Io);
            }
            Err(_) => return Opened::Failed(Failure::Timeout),
        }

        self.input.clear();
        self.reader.reset();
        match self.response(&mut stream, until).await {
            Ok(response) if response.keep_alive => Opened::KeptAlive(stream, response.status),
            Ok(response) => Opened::Closed(response.status),
            Err(failure) => Opened::Failed(failure),
        }
    }

    /// Reads until the response is complete, the connection ends or `until` passes.
    async fn response(
        &mut self,
        stream: &mut TcpStream,
        until: Instant,
    ) -> Result<Response, Failure> {
        loop {
            match self.reader.read(&mut self.input) {
                Ok(Some(response)) => return Ok(response),
                Ok(None) => {}
                Err(err) => {
                    debug!(error = %err, "malformed response");
                    return Err(Failure::Malformed);
                }
            }

            self.input.reserve(MIN_READ_SPACE);
            let input = mem::take(&mut self.input);
            let (len, capacity) = (input.len(), input.capacity());
            let read = stream.read(input.slice_mut(len..capacity));
            let (result, input) = match monoio::time::timeout_at(until.into(), read).await {
                Ok(read) => read,
                Err(_) => return Err(Failure::Timeout),
            };
            self.input = input.into_inner();
            match result {
                Ok(0) => {
                    return match self.reader.finish(&self.input) {
                        End::Completes(response) => Ok(Response {
                            keep_alive: false,
                            ..response
                        }),
                        End::Between | End::Cut => Err(Failure::Closed),
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    debug!(error = %err, "read failed");
                    return Err(Failure::Io);
                }
            }
        }
    }
}

/// Holds `stream` until `over` rings; true when the server ended the connection first.
pub async fn watch(mut stream: TcpStream, over: &Bell) -> bool {
    let buf = Vec::with_capacity(WATCH_BYTES);
    monoio::select! {
        (result, _) = stream.read(buf) => {
            match result {
                Ok(0) => debug!("closed by the server while idle"),
                Ok(len) => debug!(len, "the server sent bytes on an idle connection"),
                Err(err) => debug!(error = %err, "idle connection failed"),
            }
            true
        }
        _ = over.wait() => false,
    }
}

/// A one-time signal to any number of tasks on this thread.
#[derive(Default)]
pub struct Bell {
    rung: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

impl Bell {
    /// Rings: every waiting task wakes, and every later wait ends at once.
    pub fn ring(&self) {
        self.rung.set(true);
        for waker in self.waiting.take() {
            waker.wake();
        }
    }

    /// Waits until the bell has rung.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.rung.get() {
                return Poll::Ready(());
            }
            // A task polls this again only when woken, by the bell or by whatever else it
            // waits for, so a waker is rarely pushed twice; a duplicate only wakes it twice.
            self.waiting.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
