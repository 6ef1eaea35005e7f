//! Small I/O steps shared by the connection driver: reading onto the end of a buffer, and
//! writing an owned buffer, each bounded by a deadline (kept by the shard's sweeper, see
//! [`super::deadline`], not by a timer per operation).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::deadline::within;

/// How a bounded read ended.
pub(super) enum ReadOutcome {
    /// Bytes were appended.
    Data,
    /// The peer closed its side.
    Closed,
    /// The deadline passed first. The buffer's bytes are lost with the cancelled read.
    TimedOut,
}

/// Appends whatever the peer sends next to `buf`, growing it by at least `reserve` bytes.
///
/// monoio reads into the start of the buffer it is given, so the spare tail is handed over as
/// a slice and the whole buffer taken back afterwards.
pub(super) async fn read_into(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    reserve: usize,
    deadline: Instant,
) -> io::Result<ReadOutcome> {
    let mut owned = std::mem::take(buf);
    owned.reserve(reserve);
    let len = owned.len();
    let read = within(deadline, stream.read(owned.slice_mut(len..))).await;
    let Some((result, slice)) = read else {
        return Ok(ReadOutcome::TimedOut);
    };
    *buf = slice.into_inner();
    match result? {
        0 => Ok(ReadOutcome::Closed),
        _ => Ok(ReadOutcome::Data),
    }
}

/// How long a write may wait for its peer to take more bytes: `wait` from `from` for the
/// first write, and `wait` again from every write that moved bytes. A client that reads
/// slowly but steadily is served to the end; one that stops reading for `wait` is not (the
/// rule of nginx's `send_timeout`: between two writes, not for the whole transfer).
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    pub(super) from: Instant,
    pub(super) wait: Duration,
}

impl Patience {
    /// `wait` from now.
    pub(super) fn from_now(wait: Duration) -> Patience {
        Patience {
            from: Instant::now(),
            wait,
        }
    }
}

/// Writes all of `data`, giving it back for reuse. Fails with `TimedOut` once a write has
/// waited past its [`Patience`].
///
/// The loop of monoio's `write_all`, written out here so that each write's operation is
/// built in place inside [`within`]: wrapping `write_all` copied its whole state (the
/// operation within it) twice on every write of the request path.
pub(super) async fn write_all<T: IoBuf + 'static>(
    stream: &mut TcpStream,
    mut data: T,
    patience: Patience,
) -> io::Result<T> {
    let len = data.bytes_init();
    let mut written = 0;
    let mut deadline = patience.from + patience.wait;
    while written < len {
        let Some((result, rest)) = within(deadline, stream.write(data.slice(written..))).await
        else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
        };
        data = rest.into_inner();
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                // Only a transfer the socket takes in pieces reads the clock.
                if written < len {
                    deadline = Instant::now() + patience.wait;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(data)
}

/// Writes `buf` and leaves it empty, keeping its allocation.
pub(super) async fn flush(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    patience: Patience,
) -> io::Result<()> {
    let owned = std::mem::take(buf);
    let mut owned = write_all(stream, owned, patience).await?;
    owned.clear();
    *buf = owned;
    Ok(())
}
