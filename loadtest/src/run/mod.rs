//! `loadtest run`: an HTTP/1.1 load generator on `--threads` monoio runtimes. In a closed loop
//! each connection keeps `--pipeline` requests in flight and sends the next as soon as a
//! response ends; in an open loop (`--rate`) requests fall due at a constant rate and their
//! latency runs from when they were due. Client keys are drawn per connection or per request,
//! uniformly or by Zipf's law; `--mix` draws the kind of each request (plain, streamed, large
//! body). It prints a progress line a second to stderr while it runs, then a summary (latency
//! percentiles from an HDR histogram, responses by status, failures by kind) as text or JSON.
//!
//! - `worker`: threads, the run's plan and the per-thread budget and stats.
//! - `conn`: one connection slot's I/O: connect, write, read, time out, reconnect.
//! - `schedule`: the open loop's timetable (sans-IO).
//! - `pacer`: the open loop's waits, finer than monoio's millisecond timers.
//! - `mix`: the kinds of request, their bodies and the weighted draw (sans-IO).
//! - `request`: the request bytes, from a template (sans-IO).
//! - `response`: response framing, bodies skipped (sans-IO).
//! - `keys`: the key set and the uniform and Zipf draws.
//! - `stats`: histograms and counters; the live progress counters.
//! - `summary`: the result, as text or JSON.
//!
//! A closed loop measures latency at the rate the server sustains: a stall delays the
//! requests that would have been sent meanwhile instead of counting them as slow. The open
//! loop counts them, which is what a client sending at its own pace would see.

mod conn;
pub(crate) mod keys;
mod mix;
mod pacer;
pub(crate) mod request;
pub(crate) mod response;
mod schedule;
pub(crate) mod stats;
pub(crate) mod summary;
mod worker;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::interrupt::{self, Interrupt};
use keys::{KeyDist, KeyPicker, KeyScope, KeySet};
use mix::{Kind, MixSpec};
use request::{Method, RequestArgs, RequestTemplate};
use stats::{Progress, Stats};
use summary::{KeysUsed, Setup, Summary};
use worker::{Outcome, Plan};

/// How long a run lasts when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The size of a `body` request of the mix when `--body-bytes` is not given.
const DEFAULT_BODY_BYTES: usize = 16 * 1024;

/// Options of `loadtest run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address to load, host:port.
    #[arg(long)]
    pub target: String,
    /// The request sent.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Connections kept open, shared out among the threads.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Threads, each a runtime with its share of the connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub pipeline: u16,
    /// How long to record, after the warm-up (e.g. 10s, 500ms, 2m) [default: 10s without
    /// --requests].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests to record, after the warm-up; with --duration, whichever ends first.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Load sent before recording starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long a request waits for its response (or a connect for its connection) before it
    /// counts as failed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Client keys, one per line, sent as "Authorization: Bearer KEY".
    #[arg(long, conflicts_with = "keys")]
    pub keys_file: Option<PathBuf>,
    /// How numbered keys start.
    #[arg(long, default_value = "kg-bench-", requires = "keys")]
    pub keys_prefix: String,
    /// Number of keys PREFIX0 .. PREFIX{N-1} to send as "Authorization: Bearer KEY".
    #[arg(long, value_name = "N")]
    pub keys: Option<u64>,
    /// How keys are drawn; Zipf gives rank k (the k-th key) a weight of 1/k^s.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,
    /// The Zipf exponent s.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// When keys are drawn: once per connection, or for every request.
    #[arg(long, value_enum, default_value_t = KeyScope::Connection)]
    pub key_scope: KeyScope,
    /// Close each connection after N requests and open a new one (with a new key).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub reconnect_every: Option<u64>,
    /// Seed of the key draws, to repeat a run's sequence [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Open loop: requests a second over all connections, each timed from when it was due
    /// [default: a closed loop].
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: the least time between two wake-ups of a thread's timer, 10us to 1ms;
    /// requests due within it of each other go out together. 1ms uses monoio's timers, which
    /// tick once a millisecond and cost the least CPU.
    #[arg(long, default_value = "250us", value_parser = parse_tick, requires = "rate")]
    pub tick: Duration,
    /// Weights over kinds of chat request: plain, stream (read to the end of its events) and
    /// body (--body-bytes), e.g. plain=8,stream=1,body=1 [default: the plain request alone].
    #[arg(long, value_parser = MixSpec::parse, conflicts_with_all = ["body", "body_file"])]
    pub mix: Option<MixSpec>,
    /// Size in bytes of the body of a `body` request of --mix [default: 16384].
    #[arg(long, value_name = "N", requires = "mix")]
    pub body_bytes: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, conflicts_with = "progress")]
    pub quiet: bool,
    /// The progress line even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

/// Runs the load as `args` say, then prints the summary. SIGINT or SIGTERM ends the run early
/// with the summary of what was recorded until then, and the exit status a shell gives a
/// process that signal ended.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let (plan, setup, budget) = prepare(args)?;
    let threads = setup.threads;
    let plan = Arc::new(plan);
    let start = plan.warmup_end - args.warmup;

    // Connections and requests are shared out as evenly as they go.
    let progress = Arc::new(Progress::new(threads));
    let (done_tx, done_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    let mut next_id = 0;
    for index in 0..threads {
        let connections = share(setup.connections, threads, index);
        let ids = next_id..next_id + connections;
        next_id += connections;
        // The budget goes with the connections, so that every connection has as much to send
        // and the threads finish together.
        let budget = budget.map(|total| share_of(total, setup.connections, &ids));
        let (plan, progress, done) = (Arc::clone(&plan), Arc::clone(&progress), done_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("load-{index}"))
            .spawn(move || {
                let outcome = worker::run(plan, index, ids, budget, progress);
                let _ = done.send(outcome);
            })
            .context("cannot start a load thread")?;
        handles.push(handle);
    }
    drop(done_tx);

    let show = args.progress || (!args.quiet && std::io::stderr().is_terminal());
    let outcomes = watch(&done_rx, &progress, show, start, plan.warmup_end)?;
    for handle in handles {
        if handle.join().is_err() {
            bail!("a load thread panicked");
        }
    }

    let mut stats = Stats::with(plan.templates.len(), plan.rate.is_some());
    let mut finished = plan.warmup_end;
    for outcome in &outcomes {
        stats.merge(&outcome.stats);
        finished = finished.max(outcome.finished);
    }
    // A run that went to its deadline is measured to it, whatever was answered (a target
    // that stopped answering must not look fast); one that spent its `--requests` first ends
    // with its last response, and an interrupted one when its threads saw the signal.
    let signal = plan.interrupt.signal();
    let spent = budget.is_some_and(|total| stats.responses() + stats.failures.total() >= total);
    if let Some(deadline) = plan.deadline {
        finished = if spent || signal.is_some() {
            finished.min(deadline)
        } else {
            deadline
        };
    }
    let mut summary = Summary::new(setup, &stats, finished - plan.warmup_end);
    summary.interrupted = signal.map(interrupt::name);

    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{summary}")?;
    }
    stdout.flush()?;
    if let Some(signal) = signal {
        std::process::exit(interrupt::exit_status(signal));
    }
    Ok(())
}

/// Checks the options and builds the plan, the summary's setup and the request budget.
fn prepare(args: &RunArgs) -> anyhow::Result<(Plan, Setup, Option<u64>)> {
    let threads = usize::from(args.threads);
    if args.connections < threads as u64 {
        bail!("--connections must be at least --threads");
    }
    crate::files::ensure(args.connections)?;
    if args.timeout.is_zero() || args.duration.is_some_and(|duration| duration.is_zero()) {
        bail!("--timeout and --duration must be longer than 0");
    }
    let addr = reach(&args.target, args.timeout)?;
    let interrupt = Interrupt::install()?;

    let keys = KeySet::chosen(args.keys_file.as_deref(), args.keys, &args.keys_prefix)?;
    let picker = match &keys {
        Some(keys) => Some(KeyPicker::new(keys.len(), args.key_dist, args.zipf_s)?),
        None => None,
    };
    let keys_used = keys.as_ref().map(|keys| KeysUsed {
        count: keys.len(),
        dist: args.key_dist,
        zipf_s: (args.key_dist == KeyDist::Zipf).then_some(args.zipf_s),
        scope: args.key_scope,
    });

    let kinds = request_kinds(args)?;
    let body_bytes = args.body_bytes.unwrap_or(DEFAULT_BODY_BYTES);
    let mut templates = Vec::with_capacity(kinds.len());
    for (kind, _) in &kinds {
        let body = match kind {
            Some(kind) => Some(kind.body(body_bytes)),
            None => args.request.body()?,
        };
        templates.push(RequestTemplate::new(
            args.request.method,
            &args.request.path,
            &args.target,
            &args.request.headers,
            body.as_deref(),
            keys.clone(),
        )?);
    }

    let seed = args
        .seed
        .unwrap_or_else(|| SmallRng::from_os_rng().next_u64());
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (duration, _) => duration,
    };
    let start = Instant::now();
    let warmup_end = start + args.warmup;
    let plan = Plan {
        addr,
        templates,
        mix: args.mix.as_ref().map(mix::Picker::new),
        picker,
        scope: args.key_scope,
        pipeline: usize::from(args.pipeline),
        reconnect_every: args.reconnect_every,
        timeout: args.timeout,
        warmup_end,
        deadline: duration.map(|duration| warmup_end + duration),
        seed,
        rate: args.rate,
        tick: args.tick,
        connections: args.connections,
        start,
        interrupt,
    };
    let setup = Setup {
        target: args.target.clone(),
        method: args.request.method.as_str(),
        path: args.request.path.clone(),
        connections: args.connections,
        threads,
        pipeline: usize::from(args.pipeline),
        keys: keys_used,
        reconnect_every: args.reconnect_every,
        seed,
        rate: args.rate,
        mix: args.mix.as_ref().map(|spec| spec.weights.clone()),
        body_bytes: args
            .mix
            .as_ref()
            .is_some_and(|spec| spec.has(Kind::Body))
            .then_some(body_bytes),
    };
    Ok((plan, setup, args.requests))
}

/// The kinds of request a run sends, with their weights: those of `--mix`, or one request
/// without a kind, made of the body options.
fn request_kinds(args: &RunArgs) -> anyhow::Result<Vec<(Option<Kind>, u32)>> {
    let Some(spec) = &args.mix else {
        return Ok(vec![(None, 1)]);
    };
    if args.request.method != Method::Post {
        bail!("--mix sends chat completions: it needs --method POST");
    }
    if args.body_bytes.is_some() && !spec.has(Kind::Body) {
        bail!("--body-bytes sizes the body kind, which --mix does not hold");
    }
    Ok(spec
        .weights
        .iter()
        .map(|&(kind, weight)| (Some(kind), weight))
        .collect())
}

/// Prints a progress line to stderr every second (when `show`) until every thread has
/// reported, and returns what they reported.
fn watch(
    done: &mpsc::Receiver<anyhow::Result<Outcome>>,
    progress: &Progress,
    show: bool,
    start: Instant,
    warmup_end: Instant,
) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let mut tick = start + Duration::from_secs(1);
    let mut last = (0, start);
    loop {
        match done.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            Ok(outcome) => outcomes.push(outcome?),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(outcomes),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let (responses, failures) = progress.totals();
                let rate = (responses - last.0) as f64 / (now - last.1).as_secs_f64();
                let phase = if tick <= warmup_end {
                    "  (warm-up)"
                } else {
                    ""
                };
                if show {
                    eprintln!(
                        "{:>7.1}s  {:>9.0} req/s  errors {failures}{phase}",
                        (now - start).as_secs_f64(),
                        rate
                    );
                }
                last = (responses, now);
                tick += Duration::from_secs(1);
            }
        }
    }
}

/// Part `index` of `total` shared out among `parts`: the first `total % parts` get one more.
fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    let index = index as u64;
    total / parts + u64::from(index < total % parts)
}

/// The shares of `total` shared out among `parts` that fall to the parts numbered `range`.
fn share_of(total: u64, parts: u64, range: &std::ops::Range<u64>) -> u64 {
    let extra = total % parts;
    let with_extra = range.end.min(extra).saturating_sub(range.start.min(extra));
    total / parts * (range.end - range.start) + with_extra
}

/// The address of `target` (host:port), once a connection to it has been made: a wrong
/// address fails here, once, rather than as a connect error per connection or request.
pub(crate) fn reach(target: &str, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let addr = resolve(target)?;
    TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {target}"))?;
    Ok(addr)
}

/// The first address `target` (host:port) resolves to.
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("--target {target:?} is not host:port"))?
        .next()
        .with_context(|| format!("--target {target:?} resolves to no address"))
}

/// Parses `--rate`: a positive, finite number of requests a second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.001..=1e9).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: requests a second, from 0.001 to 1e9"
        )),
    }
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (seconds without one).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} (use us, ms, s, m or h)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|err| err.to_string())
}

/// A `--tick`: a duration from 10us (finer costs a wake-up per request and gains nothing
/// over the kernel's timer slack) to 1ms (monoio's timers, which tick no coarser).
fn parse_tick(text: &str) -> Result<Duration, String> {
    let tick = parse_duration(text)?;
    if !(Duration::from_micros(10)..=Duration::from_millis(1)).contains(&tick) {
        return Err(format!(
            "{text:?} is not between 10us and 1ms (a duration with its unit, such as 250us)"
        ));
    }
    Ok(tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let table = [
            ("10s", Duration::from_secs(10)),
            ("10", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "s", "10x", "-1s", "1.2.3s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ticks() {
        assert_eq!(parse_tick("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_tick("1ms"), Ok(Duration::from_millis(1)));
        for bad in ["5us", "0s", "2ms", "2s", "250", "10x"] {
            assert!(parse_tick(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["", "0", "1e-300", "-5", "NaN", "inf", "1e10", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(64, 1), (64, 3), (5, 2), (2, 2), (7, 7)] {
            let shares: Vec<u64> = (0..parts).map(|index| share(total, parts, index)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn a_budget_follows_the_connections() {
        // 500 requests over 7 connections on 3 threads (3, 2 and 2 connections): 71 per
        // connection and one more for each of the first 3.
        assert_eq!(share_of(500, 7, &(0..3)), 3 * 71 + 3);
        assert_eq!(share_of(500, 7, &(3..5)), 2 * 71);
        assert_eq!(share_of(500, 7, &(5..7)), 2 * 71);
        for (total, parts, cut) in [(500u64, 7u64, 3u64), (5, 8, 6), (64, 64, 10), (0, 4, 2)] {
            let halves = share_of(total, parts, &(0..cut)) + share_of(total, parts, &(cut..parts));
            assert_eq!(halves, total, "{total} over {parts}");
        }
    }
}
