//! The `keygate` command: run the gateway, check a config, make a client key, summarize
//! access logs.
#![deny(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keygate::admin::{Admin, AdminState};
use keygate::config::Config;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core API gateway for AI and HTTP API providers.
#[derive(Parser)]
#[command(name = "keygate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(long, default_value = "keygate.toml")]
        config: PathBuf,
    },
    /// Validate a config file: prints each problem as FILE:LINE:COL: message; exit 0 if valid,
    /// 2 if not.
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Summarize access logs: totals per tenant, key and route, error and 429 rates,
    /// latency percentiles and, with --config, when each key's calendar quotas run out.
    /// Exit 0, 1 if a file cannot be read, 2 if the config is invalid.
    Report {
        /// Access log files, rotated ones included, in any order.
        #[arg(long, required = true, num_args = 1..)]
        log: Vec<PathBuf>,
        /// The gateway's config: adds a quota forecast for every client key with a calendar
        /// quota.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Client key tools.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh client key and the `secret_sha256` line to paste into a config.
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Report { log, config, json } => report(&log, config.as_deref(), json),
        Command::Key {
            command: KeyCommand::New,
        } => match new_key() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("keygate: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(&config) {
            Ok(code) => code,
            Err(err) => {
                tracing::error!("{err:#}");
                eprintln!("keygate: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{problems}");
            ExitCode::from(2)
        }
    }
}

fn report(logs: &[PathBuf], config: Option<&Path>, json: bool) -> ExitCode {
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    match write_report(logs, config.as_ref(), json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keygate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_report(logs: &[PathBuf], config: Option<&Config>, json: bool) -> anyhow::Result<()> {
    let mut report = keygate::report::Report::new(config);
    for path in logs {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        report
            .read(std::io::BufReader::new(file))
            .with_context(|| format!("cannot read {}", path.display()))?;
    }

    let summary = report.summary();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        keygate::report::write_table(&summary, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// A client key is `kg-` and 32 random bytes in hex (256 bits from the OS's generator).
fn new_key() -> anyhow::Result<()> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).context("the OS random number generator failed")?;
    let key = format!("kg-{}", hex::encode(random));
    let digest = keygate::config::KeySecretHash::of(key.as_bytes());
    println!("{key}");
    println!("secret_sha256 = \"{}\"", digest.to_hex());
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::from(2));
        }
    };
    warn_unserved(&config);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;

    let admin_listen = config.gateway.admin_listen;
    let admin_token = admin_token(config.gateway.admin_token_env.as_deref());
    let gateway = keygate::shard::start(config).context("cannot start")?;
    let admin_state = Arc::new(AdminState {
        pools: Arc::clone(&gateway.plane.pools),
        token: admin_token,
        draining: AtomicBool::new(false),
        access_log: gateway.access_log_stats(),
        shards: gateway.metrics.clone(),
        labels: Arc::clone(&gateway.plane.labels),
        plane: Arc::clone(&gateway.plane),
        clients: Arc::clone(&gateway.plane.clients),
    });
    release_free_memory();
    tracing::info!(
        addr = %gateway.local_addr,
        shards = gateway.shards,
        driver = %gateway.driver,
        "listening on {}",
        gateway.local_addr
    );
    let admin = match admin_listen {
        Some(addr) => {
            let admin = Admin::start(addr, Arc::clone(&admin_state))
                .with_context(|| format!("cannot listen on admin_listen {addr}"))?;
            tracing::info!(addr = %admin.local_addr, "admin API on {}", admin.local_addr);
            Some(admin)
        }
        None => None,
    };

    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(path, &gateway),
            SIGUSR1 => gateway.reopen_access_log(),
            _ => {
                tracing::info!(signal, "draining");
                admin_state.draining.store(true, Ordering::Relaxed);
                gateway.shutdown();
                break;
            }
        }
    }
    // A second SIGTERM or SIGINT during the drain means "now": the operator gives up on
    // in-flight requests and on the last snapshot of the counters.
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGTERM || signal == SIGINT {
                tracing::warn!(signal, "second signal: exiting without finishing the drain");
                std::process::exit(1);
            }
        }
    });
    gateway.join();
    if let Some(admin) = admin {
        admin.stop();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Reloads the config file on SIGHUP. An invalid file, or one the admin API's changes no
/// longer fit, is refused with its reasons logged, and the running config stays.
fn reload(path: &Path, gateway: &keygate::shard::Gateway) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(problems) => {
            for problem in &problems.0 {
                tracing::error!(problem = %problem, "reload refused: the config is invalid");
            }
            return;
        }
    };
    match gateway.reload(config) {
        Ok(summary) => tracing::info!(%summary, "config reloaded"),
        Err(err) => tracing::error!(error = %err, "reload refused; the running config stays"),
    }
}

/// Hands memory freed after loading back to the OS. Parsing a config with many client keys
/// builds large temporary trees on this thread; without this, the allocator would keep
/// their pages for reuse this thread will never need.
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: mi_collect only walks mimalloc's own free lists; it takes no pointers and may
    // be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// The admin token from the environment variable `env` names. Without one, `/admin/*` is
/// off (health, readiness and metrics are still served).
fn admin_token(env: Option<&str>) -> Option<Box<[u8]>> {
    let env = env?;
    match std::env::var(env) {
        Ok(token) if !token.trim().is_empty() => Some(token.trim().as_bytes().into()),
        _ => {
            tracing::warn!(
                variable = env,
                "the admin token variable is unset or empty; /admin/* is off"
            );
            None
        }
    }
}

/// Warns about settings this version accepts but does not act on yet, so nobody relies on
/// them unknowingly.
fn warn_unserved(config: &Config) {
    if config.gateway.admin_listen.is_some() && config.gateway.admin_token_env.is_none() {
        tracing::warn!("admin_listen without admin_token_env: /admin/* is off");
    }
}

/// Logs go to stderr; `KEYGATE_LOG` (or `RUST_LOG`) sets the filter, `info` by default.
fn init_logging() {
    let filter = std::env::var("KEYGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
