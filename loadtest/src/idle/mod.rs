//! `loadtest idle`: opens `--connections` keep-alive connections to a target, sends one request
//! on each and reads its response, holds them all idle for `--hold`, then closes them. It
//! exists so that a script can read what idle connections cost the server (its memory, say)
//! while they are held; what it reports itself is what became of the connections.
//!
//! - `conn`: opening one connection with its exchange, and watching it while it idles.
//!
//! Everything runs on one monoio runtime on the calling thread: idle connections cost a client
//! no CPU. `--concurrency` openers take connections in turn, so that no more than that many
//! connects wait in the server's accept queue at once. The hold starts once every connection
//! has been answered or has failed; on stderr a log line `holding` marks it, and another,
//! `hold over`, its end. It ends early when no connection is left open, and on SIGINT or
//! SIGTERM (then with the exit status a shell gives a process that signal ended).

mod conn;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio::task::JoinHandle;
use serde::Serialize;
use tracing::info;

use crate::interrupt::{self, Interrupt};
use crate::run::keys::KeySet;
use crate::run::request::{RequestArgs, RequestTemplate};
use crate::run::stats::Failures;
use crate::run::summary::write_statuses;
use crate::run::{parse_duration, reach};
use conn::{Bell, Opened, Opener, Plan};

/// Options of `loadtest idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Address to connect to, host:port; also the `Host` sent.
    #[arg(long)]
    pub target: String,
    /// Connections to open and hold.
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub connections: u64,
    /// How long to hold them idle once all are open (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Connections being opened (connect and first exchange) at once.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub concurrency: u64,
    /// The request sent.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Client keys, one per line, sent as "Authorization: Bearer KEY"; connection i sends
    /// key i modulo their number.
    #[arg(long, conflicts_with = "keys")]
    pub keys_file: Option<PathBuf>,
    /// How numbered keys start.
    #[arg(long, default_value = "kg-bench-", requires = "keys")]
    pub keys_prefix: String,
    /// Number of keys PREFIX0 .. PREFIX{N-1}; connection i sends key i modulo N.
    #[arg(long, value_name = "N")]
    pub keys: Option<u64>,
    /// How long a connect, and then its response, may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Opens the connections, holds them, closes them and prints what became of them.
pub fn run(args: &IdleArgs) -> anyhow::Result<()> {
    crate::files::ensure(args.connections)?;
    if args.timeout.is_zero() {
        anyhow::bail!("--timeout must be longer than 0");
    }
    let addr = reach(&args.target, args.timeout)?;
    let interrupt = Interrupt::install()?;

    let keys = KeySet::chosen(args.keys_file.as_deref(), args.keys, &args.keys_prefix)?;
    let key_count = keys.as_ref().map_or(1, KeySet::len);
    let body = args.request.body()?;
    let template = RequestTemplate::new(
        args.request.method,
        &args.request.path,
        &args.target,
        &args.request.headers,
        body.as_deref(),
        keys,
    )?;
    let plan = Plan {
        addr,
        template,
        timeout: args.timeout,
    };

    let connections = args.connections;
    let openers = args.concurrency.min(connections);
    let tally = crate::runtime::block_on(|driver| {
        info!(driver, connections, openers, "opening");
        hold(plan, connections, key_count, openers, args.hold, &interrupt)
    })?;

    let signal = interrupt.signal();
    let summary = Summary::new(args, tally, signal.map(interrupt::name));
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

/// What became of the connections, counted as they go.
#[derive(Debug, Default)]
struct Tally {
    /// Responses by status.
    status: BTreeMap<u16, u64>,
    /// Connections that got no response.
    failures: Failures,
    /// Connections the server closed after answering, before the hold ended.
    closed: u64,
    /// Connections open now.
    open: u64,
    /// Whether the hold has started.
    holding: bool,
    /// From the first connect until every connection was answered or failed.
    open_time: Duration,
    /// From the start of the hold to its end.
    hold_time: Duration,
    /// Connections open when the hold ended.
    held: u64,
}

/// What the tasks of a run share, on its one thread.
struct Run {
    plan: Plan,
    /// Connections to open, and the number of the next one.
    connections: u64,
    next: Cell<u64>,
    /// Keys to draw from: connection i sends key i % `key_count`.
    key_count: u64,
    tally: RefCell<Tally>,
    /// Rung when the hold is over.
    over: Bell,
    /// Rung when, during the hold, the last open connection closed.
    emptied: Bell,
    watchers: RefCell<Vec<JoinHandle<()>>>,
}

/// Opens the connections with `openers` openers; holds them for `hold`, or until none is left
/// open or `interrupt` is raised; then closes them.
async fn hold(
    plan: Plan,
    connections: u64,
    key_count: u64,
    openers: u64,
    hold: Duration,
    interrupt: &Interrupt,
) -> Tally {
    let run = Rc::new(Run {
        plan,
        connections,
        next: Cell::new(0),
        key_count,
        tally: RefCell::new(Tally::default()),
        over: Bell::default(),
        emptied: Bell::default(),
        watchers: RefCell::new(Vec::new()),
    });
    let started = Instant::now();
    let openers: Vec<_> = (0..openers)
        .map(|_| monoio::spawn(open_in_turn(Rc::clone(&run))))
        .collect();
    let opening = async {
        for opener in openers {
            opener.await;
        }
    };
    // Interrupted while opening, the run holds nothing: the openers are left where they are,
    // and the connections open so far are closed.
    let interrupted = monoio::select! {
        () = opening => false,
        () = interrupt.raised() => true,
    };

    let hold_start = Instant::now();
    let open = {
        let mut tally = run.tally.borrow_mut();
        tally.holding = true;
        tally.open_time = hold_start - started;
        tally.open
    };
    if !interrupted {
        info!(connections = open, hold_s = hold.as_secs_f64(), "holding");
    }
    if open > 0 && !interrupted {
        monoio::select! {
            _ = monoio::time::sleep_until((hold_start + hold).into()) => {}
            _ = run.emptied.wait() => {}
            _ = interrupt.raised() => {}
        }
    }

    let held = {
        let mut tally = run.tally.borrow_mut();
        tally.hold_time = hold_start.elapsed();
        tally.held = tally.open;
        tally.held
    };
    if interrupted {
        info!(
            open = held,
            "interrupted while opening; closing the connections"
        );
    } else {
        info!(held, "hold over; closing the connections");
    }
    run.over.ring();
    let watchers = run.watchers.take();
    for watcher in watchers {
        watcher.await;
    }
    run.tally.take()
}

/// One opener: takes the next connection to open until none is left, and hands each one kept
/// alive to a watcher task.
async fn open_in_turn(run: Rc<Run>) {
    let mut opener = Opener::new();
    loop {
        let id = run.next.get();
        if id == run.connections {
            return;
        }
        run.next.set(id + 1);

        let opened = opener.open(&run.plan, id % run.key_count).await;
        let mut tally = run.tally.borrow_mut();
        match opened {
            Opened::KeptAlive(stream, status) => {
                *tally.status.entry(status).or_default() += 1;
                tally.open += 1;
                let watcher = monoio::spawn(watch(Rc::clone(&run), stream));
                run.watchers.borrow_mut().push(watcher);
            }
            Opened::Closed(status) => {
                *tally.status.entry(status).or_default() += 1;
                tally.closed += 1;
            }
            Opened::Failed(failure) => tally.failures.count(failure, 1),
        }
    }
}

/// Holds one connection until the hold is over, counting it if the server ends it first.
async fn watch(run: Rc<Run>, stream: TcpStream) {
    if !conn::watch(stream, &run.over).await {
        return;
    }
    let mut tally = run.tally.borrow_mut();
    tally.open -= 1;
    tally.closed += 1;
    if tally.holding && tally.open == 0 {
        run.emptied.ring();
    }
}

/// The result of a run, as printed.
#[derive(Debug, Serialize)]
struct Summary {
    target: String,
    method: &'static str,
    path: String,
    /// Connections asked for.
    connections: u64,
    /// From the first connect until every connection was answered or failed, in seconds.
    open_s: f64,
    /// Connections not opened because a signal ended the run first: never begun, or cut off
    /// while connecting or waiting for their answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_opened: Option<u64>,
    /// Responses by status, as strings.
    status: BTreeMap<String, u64>,
    /// Connections that got no response.
    errors: Errors,
    /// Connections the server closed after answering, before the hold ended.
    closed: u64,
    /// Connections still open when the hold ended.
    held: u64,
    /// How long the hold lasted, in seconds.
    hold_s: f64,
    /// The signal that ended the run early, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    interrupted: Option<&'static str>,
}

/// Failures with their total.
#[derive(Debug, Serialize)]
struct Errors {
    total: u64,
    #[serde(flatten)]
    kinds: Failures,
}

impl Summary {
    fn new(args: &IdleArgs, tally: Tally, interrupted: Option<&'static str>) -> Summary {
        let accounted = tally.held + tally.closed + tally.failures.total();
        Summary {
            target: args.target.clone(),
            method: args.request.method.as_str(),
            path: args.request.path.clone(),
            connections: args.connections,
            open_s: seconds(tally.open_time),
            not_opened: interrupted.map(|_| args.connections.saturating_sub(accounted)),
            status: tally
                .status
                .iter()
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            errors: Errors {
                total: tally.failures.total(),
                kinds: tally.failures,
            },
            closed: tally.closed,
            held: tally.held,
            hold_s: seconds(tally.hold_time),
            interrupted,
        }
    }
}

/// `duration` in seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target      {} {}{}",
            self.method, self.target, self.path
        )?;
        match self.not_opened.filter(|&count| count > 0) {
            Some(not_opened) => writeln!(
                f,
                "opened      {} of {} connections, one request each, in {:.3} s",
                self.connections - not_opened,
                self.connections,
                self.open_s
            )?,
            None => writeln!(
                f,
                "opened      {} connections, one request each, in {:.3} s",
                self.connections, self.open_s
            )?,
        }
        write_statuses(f, &self.status)?;
        let kinds = &self.errors.kinds;
        writeln!(
            f,
            "errors      {} (connect {}, io {}, timeout {}, closed {}, malformed {})",
            self.errors.total,
            kinds.connect,
            kinds.io,
            kinds.timeout,
            kinds.closed,
            kinds.malformed
        )?;
        writeln!(
            f,
            "closed      {} by the server after answering",
            self.closed
        )?;
        writeln!(f, "held        {} for {:.3} s", self.held, self.hold_s)?;
        if let Some(signal) = self.interrupted {
            writeln!(f, "interrupted by {signal}")?;
        }
        Ok(())
    }
}
