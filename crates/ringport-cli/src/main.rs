//! `ringport`: the command-line front end of the ringport server (io_uring,
//! or epoll where io_uring cannot be used).
//!
//! `ringport serve` runs the ready-made echo, chat or pubsub handler with any of the
//! library's codecs, logs counters at a fixed interval, optionally serves
//! Prometheus metrics over HTTP, and stops gracefully on SIGINT/SIGTERM.

mod cluster_args;
mod config;
mod http;
mod limit_args;
mod serve;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringport_cli::raise_nofile_limit;
use tracing::warn;
use tracing_subscriber::EnvFilter;

use serve::LogFormat;

/// ringport: a TCP server for framed messages over many long-lived
/// connections (io_uring, or epoll where io_uring cannot be used), and its
/// load generator.
#[derive(Debug, Parser)]
#[command(name = "ringport", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One value, parsed once at start: the size of its largest variant costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an echo, chat or pubsub server (--mode) until SIGINT or SIGTERM.
    ///
    /// Logs go to stderr; the level is `info` unless RUST_LOG says otherwise
    /// (e.g. RUST_LOG=debug, RUST_LOG=ringport=trace). Every option can also
    /// be set by a RINGPORT_* environment variable (RINGPORT_MAX_FRAME for
    /// --max-frame) or a --config file; a flag wins over the environment,
    /// which wins over the file. Durations are seconds (5, 0.5) or take a
    /// unit (500ms, 2s, 1m); sizes are bytes or take a unit (64KiB, 16MiB).
    Serve(serve::ServeArgs),
    /// Load generator: opens many verified connections to a server and
    /// reports throughput and latency percentiles.
    ///
    /// Built on ringport's own engine (outbound io_uring connections on
    /// direct descriptors), so one process holds more connections than the
    /// open-files limit. Every reply is verified byte for byte; any error or
    /// lost message makes the exit status 1 (2 for a usage or setup error),
    /// and so does a run where no connection could be made (it stops at
    /// once). SIGINT or SIGTERM ends the run early with a report marked
    /// partial (exit status 128 + the signal number).
    Bench(ringport_cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = config::parse();
    match cli.command {
        Command::Serve(args) => {
            if args.print_config {
                print!("{}", config::to_toml(&args));
                return ExitCode::SUCCESS;
            }
            init_tracing(args.log_format);
            match serve::serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(args) => {
            init_tracing(LogFormat::Text);
            if let Err(e) = raise_nofile_limit() {
                warn!("could not raise the open-files limit: {e}");
            }
            ExitCode::from(ringport_cli::bench::run(args) as u8)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let (filter, bad_env) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("{spec}: {e}"))),
        },
        _ => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    if let Some(why) = bad_env {
        warn!("ignoring RUST_LOG ({why}); logging at info");
    }
}
