//! `ringport`: the command-line front end of the ringport io_uring server.
//!
//! `ringport serve` runs the ready-made echo or chat handler with any of the
//! library's codecs, logs counters at a fixed interval and stops gracefully
//! on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringport::{Codec, LengthDelimited, Lines, RawBytes, Server, ServerConfig, Stats, handlers};
use ringport_cli::{format_bytes, parse_secs, parse_size, raise_nofile_limit};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// ringport: an io_uring TCP server for framed messages.
#[derive(Debug, Parser)]
#[command(name = "ringport", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an echo or chat server until SIGINT or SIGTERM.
    ///
    /// Logs go to stderr; the level is `info` unless RUST_LOG says otherwise
    /// (e.g. RUST_LOG=debug, RUST_LOG=ringport=trace).
    Serve(ServeArgs),
    /// Load generator: opens many verified connections to a server and
    /// reports throughput and latency percentiles.
    ///
    /// Built on ringport's own engine (outbound io_uring connections on
    /// direct descriptors), so one process holds more connections than the
    /// open-files limit. Every reply is verified byte for byte; any error or
    /// lost message makes the exit status 1 (2 for a usage or setup error).
    Bench(ringport_cli::bench::BenchArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on, as HOST:PORT.
    ///
    /// HOST may be an IP address or a name (the first address it resolves
    /// to is used). Port 0 picks a free port, which is logged at start.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000")]
    addr: String,

    /// Number of shards [default: the number of available cores].
    ///
    /// Each shard is one thread with its own io_uring, its own listening
    /// socket on the address (SO_REUSEPORT: the kernel spreads new
    /// connections over them) and its own connection table.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,

    /// Largest message accepted or sent, in bytes; units allowed (16MiB,
    /// 64KiB, 1048576).
    ///
    /// For --codec length it bounds the announced payload length (checked
    /// before anything is allocated), for lines the line length without its
    /// line ending, for raw the size of one delivered chunk. A peer that
    /// sends more is disconnected and counted in frames_too_large. Binary
    /// units (K, KiB, M, MiB, G, GiB) are powers of 1024, decimal units (kB,
    /// MB, GB) powers of 1000.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_nonzero_size)]
    max_frame: u64,

    /// Most connections open at once over all shards.
    ///
    /// At the limit the server stops accepting (new clients wait in the
    /// listen backlog) until a connection closes. The real ceiling is also
    /// bounded by shards x --connections-per-shard.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// What the server does with each message.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,

    /// Seconds between two statistics lines in the log (fractions allowed;
    /// 0 turns them off).
    ///
    /// Each line shows open connections, accepted and closed totals,
    /// messages and bytes in and out with their rates over the interval, the
    /// bytes waiting in send queues, and the error counters
    /// (frames_too_large, slow_consumers, accept_errors, commands_dropped).
    /// When an error counter rises, a warning says by how much.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    stats_interval: Duration,

    /// How the byte stream is cut into messages.
    #[arg(long, value_enum, default_value_t = CodecKind::Length)]
    codec: CodecKind,

    /// Size of each shard's connection table [default: the open-files soft
    /// limit, after it is raised to the hard limit].
    ///
    /// Connections are io_uring direct descriptors, which do not use the
    /// process's file-descriptor table, so the server can hold shards times
    /// this many connections whatever the open-files limit; but the kernel
    /// caps one table at the open-files limit, so larger values are refused.
    /// Use more shards to hold more connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    connections_per_shard: Option<u64>,

    /// Outbound bytes queued on one connection at which the server stops
    /// reading from it; units allowed (1MiB, 256KiB).
    ///
    /// Reading resumes once the queue drains below half of it, so a client
    /// that does not read its replies is held back by TCP flow control
    /// instead of growing the server's memory.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_nonzero_size)]
    send_high_water: u64,

    /// Size of each receive buffer in a shard's provided buffer ring; units
    /// allowed. Larger buffers suit bulk traffic (fewer completions per
    /// large message), at recv-buffers x this much memory per shard.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_nonzero_size)]
    recv_buffer_size: u64,

    /// Receive buffers per shard (a power of two, at most 32768).
    #[arg(long, value_name = "N", default_value_t = 256)]
    recv_buffers: u16,

    /// Seconds a graceful stop (SIGINT/SIGTERM) gives connections to flush
    /// what is queued to them before they are cut (fractions allowed).
    ///
    /// A second SIGINT or SIGTERM during the stop exits at once with
    /// status 1.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    stop_timeout: Duration,

    /// Close a connection that has sent nothing for this many seconds
    /// (fractions allowed; off by default). Counted in idle_timeouts.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    idle_timeout: Option<Duration>,

    /// Send an empty message (zero-length frame, or an empty line) to a
    /// connection that has been sent nothing for this many seconds (off by
    /// default). An echo client answers it, which keeps it clear of
    /// --idle-timeout while it is alive.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    heartbeat: Option<Duration>,
}

fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    match parse_secs(text)? {
        d if d.is_zero() => Err("must be more than 0 seconds".into()),
        d => Ok(d),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send every message back to its sender.
    Echo,
    /// Send every message to every connected client, the sender included.
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodecKind {
    /// A 4-byte big-endian payload length, then the payload (ringport's wire
    /// format).
    Length,
    /// One message per line, ended by \n (a \r before it is dropped);
    /// replies end with \n.
    Lines,
    /// No framing: every chunk received is one message, sent back as is.
    Raw,
}

/// The name of a choice as written on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

fn parse_nonzero_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte".to_string()),
        n if usize::try_from(n).is_err() => Err(format!("'{text}' is too large")),
        n => Ok(n),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => {
            if let Err(e) = raise_nofile_limit() {
                warn!("could not raise the open-files limit: {e}");
            }
            return ExitCode::from(ringport_cli::bench::run(args) as u8);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let (filter, bad_env) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("{spec}: {e}"))),
        },
        _ => (EnvFilter::new("info"), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(why) = bad_env {
        warn!("ignoring RUST_LOG ({why}); logging at info");
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| {
            format!("invalid --addr '{addr}': {e} (expected HOST:PORT, e.g. 127.0.0.1:7000)")
        })?
        .next()
        .ok_or_else(|| format!("invalid --addr '{addr}': it resolves to no address"))
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let addr = resolve(&args.addr)?;
    // Checked by clap: the sizes fit in usize.
    let max_frame = args.max_frame as usize;
    let shards = match args.shards {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    // Signals first, so that a SIGTERM arriving during start-up is not fatal.
    // The first one asks for a graceful stop; a second one while stopping
    // exits at once (the conditional shutdown runs before the flag is set).
    let stop_requested = Arc::new(AtomicBool::new(false));
    let which_signal = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop_requested.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop_requested.clone()))
            .and_then(|_| {
                signal_hook::flag::register_usize(signal, which_signal.clone(), signal as usize)
            })
            .map_err(|e| format!("installing the handler for signal {signal}: {e}"))?;
    }

    let nofile = match raise_nofile_limit() {
        Ok(lim) => {
            if lim.before < lim.soft {
                info!(
                    "open-files limit raised from {} to {} (the hard limit)",
                    lim.before, lim.soft
                );
            } else {
                info!("open-files limit is {} (hard limit {})", lim.soft, lim.hard);
            }
            lim.soft.to_string()
        }
        Err(e) => {
            warn!("could not raise the open-files limit: {e}");
            "the open-files limit".to_string()
        }
    };

    let mut config = ServerConfig::new(addr);
    config.shards = shards;
    config.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    config.connections_per_shard = args
        .connections_per_shard
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    config.send_high_water = args.send_high_water as usize;
    config.recv_buffer_size = usize::try_from(args.recv_buffer_size).unwrap_or(usize::MAX);
    config.recv_buffers = args.recv_buffers;
    config.stop_timeout = args.stop_timeout;
    config.idle_timeout = args.idle_timeout;
    config.heartbeat = args.heartbeat;

    let started = Instant::now();
    let server = match args.codec {
        CodecKind::Length => start(
            config,
            LengthDelimited::new().max_frame_length(max_frame),
            args.mode,
        ),
        CodecKind::Lines => start(config, Lines::new().max_line_length(max_frame), args.mode),
        CodecKind::Raw => start(
            config,
            RawBytes::new().max_frame_length(max_frame),
            args.mode,
        ),
    }
    .map_err(|e| e.to_string())?;

    let per_shard = match server.config().connections_per_shard {
        Some(n) => n.to_string(),
        None => nofile,
    };
    info!(
        "listening on {} ({}, {} mode, {} codec, max frame {}, {} shards x {} connections, \
         max connections {}, send high water {}, stop timeout {:?})",
        server.local_addr(),
        server.driver(),
        value_name(args.mode),
        value_name(args.codec),
        format_bytes(args.max_frame),
        shards,
        per_shard,
        args.max_connections,
        format_bytes(args.send_high_water),
        args.stop_timeout,
    );

    let mut reporter = Reporter::new(server.stats());
    // None: no stats lines (interval 0).
    let mut next_report =
        (!args.stats_interval.is_zero()).then(|| Instant::now() + args.stats_interval);
    while !stop_requested.load(Ordering::Acquire) {
        let now = Instant::now();
        if let Some(due) = next_report.filter(|&due| now >= due) {
            let shards = server.shard_stats();
            let mut total = Stats::default();
            for s in &shards {
                total += *s;
            }
            let shard_connections = shards
                .iter()
                .map(|s| s.connections.to_string())
                .collect::<Vec<_>>()
                .join("/");
            reporter.report(total, &shard_connections);
            next_report = Some((due + args.stats_interval).max(now));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let signal = match which_signal.load(Ordering::Acquire) as i32 {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    };
    let before = server.stats();
    info!(
        "received {signal}: stopping ({} connections open; flushing for up to {:?})",
        before.connections, args.stop_timeout
    );
    let stopping = Instant::now();
    let after = server.stop();
    info!(
        "stopped in {:.0?} after {:.1?}; totals: accepted {}, closed {} ({} at stop), \
         messages in {}, out {}, bytes in {}, out {}, frames_too_large {}, slow_consumers {}, \
         accept_errors {}, commands_dropped {}",
        stopping.elapsed(),
        started.elapsed(),
        after.accepted,
        after.closed,
        after.closed - before.closed,
        after.messages_in,
        after.messages_out,
        after.bytes_in,
        after.bytes_out,
        after.frames_too_large,
        after.slow_consumers,
        after.accept_errors,
        after.commands_dropped,
    );
    Ok(())
}

/// Starts the server with the handler `mode` names, for any codec.
fn start<C: Codec + Sync>(config: ServerConfig, codec: C, mode: Mode) -> std::io::Result<Server> {
    match mode {
        Mode::Echo => Server::start(config, codec, |_| handlers::Echo),
        Mode::Chat => Server::start(config, codec, |_| handlers::Chat),
    }
}

/// Turns successive snapshots into the periodic stats line.
struct Reporter {
    last: Stats,
    last_at: Instant,
}

impl Reporter {
    fn new(first: Stats) -> Self {
        Reporter {
            last: first,
            last_at: Instant::now(),
        }
    }

    /// Logs the stats line for snapshot `s`; `per_shard` lists each shard's
    /// open connections.
    fn report(&mut self, s: Stats, per_shard: &str) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        let last = self.last;
        info!(
            target: "ringport::stats",
            connections = s.connections,
            per_shard = %per_shard,
            accepted = s.accepted,
            closed = s.closed,
            msgs_in = s.messages_in,
            msgs_out = s.messages_out,
            msgs_in_per_s = rate(s.messages_in, last.messages_in).round() as u64,
            msgs_out_per_s = rate(s.messages_out, last.messages_out).round() as u64,
            bytes_in = s.bytes_in,
            bytes_out = s.bytes_out,
            in_mb_per_s = %format_args!("{:.2}", rate(s.bytes_in, last.bytes_in) / 1e6),
            out_mb_per_s = %format_args!("{:.2}", rate(s.bytes_out, last.bytes_out) / 1e6),
            send_queue_bytes = s.send_queue_bytes,
            frames_too_large = s.frames_too_large,
            slow_consumers = s.slow_consumers,
            accept_errors = s.accept_errors,
            rejected = s.rejected,
            idle_timeouts = s.idle_timeouts,
            commands_dropped = s.commands_dropped,
            "stats"
        );
        let rises = [
            (
                "frames_too_large",
                s.frames_too_large,
                last.frames_too_large,
            ),
            ("slow_consumers", s.slow_consumers, last.slow_consumers),
            ("accept_errors", s.accept_errors, last.accept_errors),
            ("rejected", s.rejected, last.rejected),
            (
                "commands_dropped",
                s.commands_dropped,
                last.commands_dropped,
            ),
        ]
        .into_iter()
        .filter(|&(_, new, old)| new > old)
        .map(|(name, new, old)| format!("{name} +{}", new - old))
        .collect::<Vec<_>>();
        if !rises.is_empty() {
            warn!(
                target: "ringport::stats",
                "errors in the last {secs:.1}s: {}",
                rises.join(", ")
            );
        }
        self.last = s;
        self.last_at = now;
    }
}
