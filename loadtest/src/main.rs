//! `loadtest`: keygate's benchmark tools, one subcommand each.
//!
//! - `mock` (module [`mock`]): a mock AI provider to put behind the gateway.
//! - `run` (module [`run`]): a load generator, closed or open loop, with client keys.
//! - `idle` (module [`idle`]): opens many keep-alive connections and holds them idle.
//!
//! Each runs a monoio runtime per thread, built by [`runtime`], and raises its own open-files
//! limit ([`files`]).

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod files;
mod idle;
mod interrupt;
mod mock;
mod run;
mod runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// keygate's load generator and mock AI provider.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The tools.
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a mock AI provider (OpenAI wire format) with scriptable latency and errors.
    Mock(mock::MockArgs),
    /// Sends HTTP/1.1 load (closed or open loop) to a target and reports throughput and latency.
    Run(Box<run::RunArgs>),
    /// Opens many keep-alive connections, one request each, and holds them idle.
    Idle(Box<idle::IdleArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr, so that tools may read stdout; `RUST_LOG` refines the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match cli.command {
        Command::Mock(args) => {
            files::raise();
            mock::run(&args)
        }
        Command::Idle(args) => idle::run(&args),
        Command::Run(args) => run::run(&args),
    }
}
