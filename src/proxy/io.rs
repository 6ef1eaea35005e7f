//! Small I/O steps shared by the connection driver: reading onto the end of a buffer, and
//! writing an owned buffer, each bounded by a deadline (kept by the shard's sweeper, see
//! [`super::deadline`], not by a timer per operation).

use std::io;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
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

/// Writes all of `data`, giving it back for reuse. Fails with `TimedOut` at `deadline`.
pub(super) async fn write_all<T: IoBuf + 'static>(
    stream: &mut TcpStream,
    data: T,
    deadline: Instant,
) -> io::Result<T> {
    match within(deadline, stream.write_all(data)).await {
        Some((Ok(_), data)) => Ok(data),
        Some((Err(err), _)) => Err(err),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Writes `buf` and leaves it empty, keeping its allocation.
pub(super) async fn flush(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> io::Result<()> {
    let owned = std::mem::take(buf);
    let mut owned = write_all(stream, owned, deadline).await?;
    owned.clear();
    *buf = owned;
    Ok(())
}
