//! One connection slot: connects, keeps up to `--pipeline` requests in flight (each batch one
//! write), reads their responses in order, and connects again when the server closes,
//! `--reconnect-every` is reached or a request fails, until the run ends.
//!
//! In a closed loop a request goes out as soon as there is room in the pipeline. In an open
//! loop each goes out when its [`Schedule`] says it is due, or, when the connection is still
//! busy then (waiting for a response, connecting), as soon as it has room again; its latency
//! runs from when it was due, so that the wait counts (coordinated-omission correction).
//!
//! Buffers live as long as the slot and are reused by every request and connection, so a
//! request costs no allocation once they have grown; the clock is read once per write and once
//! per read. Latency runs to the read that completes the response, so it includes the
//! client's own queueing of pipelined requests.

use std::collections::VecDeque;
use std::mem;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tracing::debug;

use super::keys::KeyScope;
use super::pacer::Pacer;
use super::response::{End, Response, ResponseReader};
use super::schedule::Schedule;
use super::stats::{Failure, Sample};
use super::worker::{Plan, Thread};

/// Read buffer growth step, and the least free space handed to a read.
const READ_CHUNK: usize = 16 * 1024;
const MIN_READ_SPACE: usize = 2 * 1024;

/// The pause after a failed connect, so that a server that is down is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Drives connection slot `id` until the run ends.
pub async fn drive(id: u64, plan: &Plan, thread: &Thread, pacer: &Pacer) {
    let mut slot = Slot {
        // Generators seeded from neighbouring numbers are unrelated: the seed is hashed first.
        rng: SmallRng::seed_from_u64(plan.seed.wrapping_add(id)),
        input: BytesMut::with_capacity(READ_CHUNK),
        output: BytesMut::new(),
        request: BytesMut::new(),
        in_flight: VecDeque::with_capacity(plan.pipeline),
        reader: ResponseReader::new(false),
        schedule: plan
            .rate
            .map(|rate| Rc::new(Schedule::new(plan.start, rate, id, plan.connections))),
        key: 0,
    };
    if let Some(schedule) = &slot.schedule {
        thread.follow(schedule);
    }
    while let Next::Reconnect = slot.connection(plan, thread, pacer).await {}
    // Open loop: the requests the run wanted from this connection and never got to send.
    if let Some(schedule) = &slot.schedule {
        thread.timetable_ends(schedule, plan.deadline);
    }
}

/// A connection slot and the buffers its requests reuse.
struct Slot {
    rng: SmallRng,
    /// Bytes read and not yet used.
    input: BytesMut,
    /// Requests being written.
    output: BytesMut,
    /// The request every exchange of this connection sends, when neither its key nor its
    /// kind is drawn per request.
    request: BytesMut,
    /// The requests in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    reader: ResponseReader,
    /// Open loop: when this connection's requests are due; the thread follows it too.
    schedule: Option<Rc<Schedule>>,
    /// The key drawn for the current connection, when keys are drawn per connection.
    key: u64,
}

/// A request written and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Where its latency starts: when it was written (closed loop) or due (open loop). These
    /// only grow from one request to the next.
    start: Instant,
    /// When it was written; its timeout runs from here.
    written: Instant,
    /// Its kind, by index in the mix.
    kind: usize,
}

/// What the slot does after a connection.
enum Next {
    Reconnect,
    Stop,
}

/// How a wait for responses ended.
enum Wait {
    /// At least one response was read; the connection goes on.
    Answered,
    /// The connection is over.
    Closed,
    /// The run's deadline passed.
    Deadline,
}

impl Slot {
    /// Opens a connection and runs exchanges on it until it ends.
    async fn connection(&mut self, plan: &Plan, thread: &Thread, pacer: &Pacer) -> Next {
        if plan.past_deadline(Instant::now()) || thread.exhausted() {
            return Next::Stop;
        }
        let mut stream = match self.connect(plan, thread, pacer).await {
            Ok(stream) => stream,
            Err(next) => return next,
        };
        self.input.clear();
        self.reader.reset();
        self.in_flight.clear();

        // Keys drawn per connection are drawn now; with one kind of request too, the request
        // is built once and copied for each send.
        let per_request = plan.scope == KeyScope::Request && plan.picker.is_some();
        if !per_request {
            self.key = plan
                .picker
                .as_ref()
                .map_or(0, |picker| picker.draw(&mut self.rng));
        }
        let cached = !per_request && plan.templates.len() == 1;
        if cached {
            self.request.clear();
            plan.templates[0].write(self.key, &mut self.request);
        }

        let mut sent = 0;
        let mut woke = false;
        loop {
            let now = Instant::now();
            let count = self.top_up(plan, thread, now, sent, woke, cached);
            woke = false;
            if count > 0 {
                sent += count as u64;
                // A server that stops reading must not hold the run past its deadline, nor a
                // request past its timeout.
                let until = match plan.deadline {
                    Some(deadline) => deadline.min(now + plan.timeout),
                    None => now + plan.timeout,
                };
                match monoio::time::timeout_at(until.into(), self.flush(&mut stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        debug!(error = %err, "write failed");
                        self.fail_in_flight(Failure::Io, plan, thread);
                        return Next::Reconnect;
                    }
                    // Unanswered at the end of the run: not part of it, as in `wait`.
                    Err(_) if plan.past_deadline(Instant::now()) => return Next::Stop,
                    Err(_) => {
                        debug!("write timed out");
                        self.fail_in_flight(Failure::Timeout, plan, thread);
                        return Next::Reconnect;
                    }
                }
            }

            if self.in_flight.is_empty() {
                if plan.reconnect_every == Some(sent) {
                    return Next::Reconnect;
                }
                // Open loop: idle until the next request is due, if the run still wants it.
                if let Some(due) = self.next_due(plan, thread, now) {
                    pacer.sleep_until(due).await;
                    woke = true;
                    continue;
                }
                // Nothing left to send here: this connection's share or the run's is spent.
                return Next::Stop;
            }
            match self.wait(&mut stream, plan, thread).await {
                Wait::Answered => {}
                Wait::Closed => return Next::Reconnect,
                Wait::Deadline => return Next::Stop,
            }
        }
    }

    /// Puts into `output` the requests to send at `now`, within the pipeline's room, the
    /// connection's `--reconnect-every` (of which `sent` are sent) and the run's deadline and
    /// budget: all there is room for in a closed loop, those already due in an open loop.
    /// `woke` says the connection has just woken from an idle wait for the first of them.
    fn top_up(
        &mut self,
        plan: &Plan,
        thread: &Thread,
        now: Instant,
        sent: u64,
        woke: bool,
        cached: bool,
    ) -> usize {
        let mut room = plan.pipeline - self.in_flight.len();
        if let Some(every) = plan.reconnect_every {
            room = room.min(every.saturating_sub(sent) as usize);
        }
        self.output.clear();
        let mut count = 0;
        while count < room {
            let due = match &self.schedule {
                Some(schedule) if schedule.due() > now => break,
                Some(schedule) => schedule.due(),
                None => now,
            };
            // An idle connection wakes up to a tick (`--tick`) after the due time: that lateness
            // is the client's, so latency starts at the write.
            let start = if woke { now } else { due };
            // A request written after the warm-up is recorded, however long before it fell
            // due: a target that fell behind during the warm-up is charged for it.
            if plan.past_deadline(now) || (now >= plan.warmup_end && thread.take(1) == 0) {
                break;
            }

            let kind = plan.mix.as_ref().map_or(0, |mix| mix.draw(&mut self.rng));
            if cached {
                self.output.extend_from_slice(&self.request);
            } else {
                let key = match &plan.picker {
                    Some(picker) if plan.scope == KeyScope::Request => picker.draw(&mut self.rng),
                    _ => self.key,
                };
                plan.templates[kind].write(key, &mut self.output);
            }
            self.in_flight.push_back(InFlight {
                start,
                written: now,
                kind,
            });
            if let Some(schedule) = &self.schedule {
                schedule.advance();
            }
            count += 1;
        }
        count
    }

    /// Open loop, nothing in flight after a top-up at `now`: when the next request is due,
    /// unless the run will not send it. A request already due at `now` was held back by the
    /// deadline or the budget, and so is every later one.
    fn next_due(&self, plan: &Plan, thread: &Thread, now: Instant) -> Option<Instant> {
        let due = self.schedule.as_ref()?.due();
        let spent = due >= plan.warmup_end && thread.exhausted();
        (due > now && !plan.past_deadline(due) && !spent).then_some(due)
    }

    /// Connects to the target. A failed attempt counts as one failed request, so that a run of
    /// `--requests` against a server that is down still ends; in an open loop it is the request
    /// due next, and the next attempt waits for the one after it to fall due.
    async fn connect(
        &mut self,
        plan: &Plan,
        thread: &Thread,
        pacer: &Pacer,
    ) -> Result<TcpStream, Next> {
        let started = Instant::now();
        let until = match plan.deadline {
            Some(deadline) => deadline.min(started + plan.timeout),
            None => started + plan.timeout,
        };
        let connect = TcpStream::connect_addr(plan.addr);
        let failed = match monoio::time::timeout_at(until.into(), connect).await {
            Ok(Ok(stream)) => {
                // Requests are written whole; waiting to fill a segment only adds latency.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".to_owned(),
        };

        if plan.past_deadline(Instant::now()) {
            return Err(Next::Stop);
        }
        debug!(error = failed, addr = %plan.addr, "connect failed");
        let recorded = started >= plan.warmup_end;
        if recorded && thread.take(1) == 0 {
            return Err(Next::Stop);
        }
        thread.failure(Failure::Connect, 1, usize::from(recorded));
        let retry = Instant::now() + CONNECT_BACKOFF;
        match &self.schedule {
            Some(schedule) => {
                schedule.advance();
                pacer.sleep_until(retry.max(schedule.due())).await;
            }
            None => monoio::time::sleep_until(retry.into()).await,
        }
        Err(Next::Reconnect)
    }

    /// Reads until at least one response is complete, the connection ends, or the oldest
    /// request times out.
    async fn wait(&mut self, stream: &mut TcpStream, plan: &Plan, thread: &Thread) -> Wait {
        loop {
            let now = Instant::now();
            let mut answered = false;
            loop {
                match self.reader.read(&mut self.input) {
                    Ok(Some(response)) => {
                        if !self.complete(response, now, plan, thread) {
                            debug!(status = response.status, "response to no request");
                            self.fail_in_flight(Failure::Malformed, plan, thread);
                            return Wait::Closed;
                        }
                        answered = true;
                        if !response.keep_alive {
                            self.resend_unanswered(plan, thread);
                            return Wait::Closed;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        debug!(error = %err, "malformed response");
                        self.fail_in_flight(Failure::Malformed, plan, thread);
                        return Wait::Closed;
                    }
                }
            }
            if answered {
                return Wait::Answered;
            }

            // Wait for more bytes no longer than the oldest request may, nor past the deadline.
            let Some(oldest) = self.in_flight.front() else {
                return Wait::Answered;
            };
            let timeout_at = oldest.written + plan.timeout;
            let (until, is_deadline) = match plan.deadline {
                Some(deadline) if deadline < timeout_at => (deadline, true),
                _ => (timeout_at, false),
            };
            match monoio::time::timeout_at(until.into(), self.fill(stream)).await {
                Ok(Ok(0)) => {
                    self.ended(Instant::now(), plan, thread);
                    return Wait::Closed;
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    debug!(error = %err, "read failed");
                    self.fail_in_flight(Failure::Io, plan, thread);
                    return Wait::Closed;
                }
                // Requests still in flight at the end of the run are neither answered nor
                // failed: they are simply not part of it.
                Err(_) if is_deadline => return Wait::Deadline,
                Err(_) => {
                    self.fail_in_flight(Failure::Timeout, plan, thread);
                    return Wait::Closed;
                }
            }
        }
    }

    /// Counts a response read at `now` for the oldest request in flight; false when there is
    /// no request it could answer.
    fn complete(&mut self, response: Response, now: Instant, plan: &Plan, thread: &Thread) -> bool {
        let Some(request) = self.in_flight.pop_front() else {
            return false;
        };
        let recorded = request.written >= plan.warmup_end && !plan.past_deadline(now);
        let sample = Sample {
            latency: now.saturating_duration_since(request.start),
            service: now.saturating_duration_since(request.written),
            kind: request.kind,
        };
        thread.response(response.status, sample, now, recorded);
        true
    }

    /// The server closed the connection after what was read.
    fn ended(&mut self, now: Instant, plan: &Plan, thread: &Thread) {
        match self.reader.finish(&self.input) {
            End::Completes(response) => {
                self.complete(response, now, plan, thread);
                self.resend_unanswered(plan, thread);
            }
            End::Between | End::Cut => self.fail_in_flight(Failure::Closed, plan, thread),
        }
    }

    /// After a response that closes the connection, the requests behind it were not processed
    /// (RFC 9112 §9.6): they go back to the budget, to be sent on the next connection.
    fn resend_unanswered(&mut self, plan: &Plan, thread: &Thread) {
        let budgeted = self.budgeted_in_flight(plan);
        thread.refund(budgeted);
        self.in_flight.clear();
    }

    /// Every request in flight failed for `failure`.
    fn fail_in_flight(&mut self, failure: Failure, plan: &Plan, thread: &Thread) {
        let recorded = self.budgeted_in_flight(plan);
        thread.failure(failure, self.in_flight.len(), recorded);
        self.in_flight.clear();
    }

    /// Requests in flight written after the warm-up.
    fn budgeted_in_flight(&self, plan: &Plan) -> usize {
        // Write times only grow, so the warm-up's requests come first.
        let warmup = self
            .in_flight
            .partition_point(|request| request.written < plan.warmup_end);
        self.in_flight.len() - warmup
    }

    /// Appends what the socket has to `input`. Returns 0 at the end of the stream.
    async fn fill(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        if self.input.capacity() - self.input.len() < MIN_READ_SPACE {
            self.input.reserve(READ_CHUNK);
        }
        // monoio reads into a buffer from its start: hand it the spare tail only. A read
        // abandoned at a timeout takes the buffer with it; the next fill makes a new one.
        let input = mem::take(&mut self.input);
        let (len, capacity) = (input.len(), input.capacity());
        let (result, input) = stream.read(input.slice_mut(len..capacity)).await;
        self.input = input.into_inner();
        result
    }

    /// Writes the pending requests.
    async fn flush(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let output = mem::take(&mut self.output);
        let (result, output) = stream.write_all(output).await;
        self.output = output;
        result.map(|_| ())
    }
}
