//! `ringport serve`: its options, the run loop (stats lines, signals,
//! graceful stop) and the metrics endpoint's wiring.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ringport::{
    Backend, Codec, LengthDelimited, Lines, RawBytes, Server, ServerConfig, Stats, handlers,
};
use ringport_cli::{
    format_bytes, parse_backend, parse_duration, parse_limit_policy, parse_positive_duration,
    parse_recv_buffers, parse_size, raise_nofile_limit, resolve,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{info, warn};

use crate::http;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, as HOST:PORT.
    ///
    /// HOST may be an IP address or a name (the first address it resolves
    /// to is used). Port 0 picks a free port, which is logged at start.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000",
          env = "RINGPORT_ADDR", value_parser = addr_arg)]
    pub addr: String,

    /// Also serve WebSocket clients (browsers, apps) on this address, as
    /// HOST:PORT: in the same rooms and topics as the framed-TCP clients
    /// of --addr (a WebSocket message is one message; the pubsub
    /// protocol's frames travel as binary messages). With --tls-cert and
    /// --tls-key it serves wss. Off by default.
    #[arg(long, value_name = "HOST:PORT", env = "RINGPORT_WS_ADDR", value_parser = addr_arg)]
    pub ws_addr: Option<String>,

    /// Offer permessage-deflate to WebSocket clients (RFC 7692), with no
    /// context kept between messages (no memory per idle connection).
    /// Off by default: see docs/protocols.md for the measured cost.
    #[arg(long, env = "RINGPORT_WS_DEFLATE")]
    pub ws_deflate: bool,

    /// Kernel interface: io-uring, epoll, or auto (io_uring where it works,
    /// else epoll, with a log line saying why).
    ///
    /// io_uring holds connections as direct descriptors, which do not count
    /// against the open-files limit (a shard spreads them over as many rings
    /// as it needs); epoll works everywhere, including
    /// containers whose seccomp profile blocks io_uring, and holds at most
    /// the open-files limit over all shards.
    #[arg(long, value_name = "BACKEND", default_value = "auto", env = "RINGPORT_BACKEND",
          value_parser = parse_backend)]
    pub backend: Backend,

    /// Number of shards [default: the number of available cores].
    ///
    /// Each shard is one thread with its own ring (or epoll instance), its
    /// own listening socket on the address (SO_REUSEPORT: the kernel spreads
    /// new connections over them) and its own connection table.
    #[arg(long, value_name = "N", env = "RINGPORT_SHARDS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub shards: Option<u16>,

    /// Largest message accepted or sent, in bytes; units allowed (16MiB,
    /// 64KiB, 1048576).
    ///
    /// For --codec length it bounds the announced payload length (checked
    /// before anything is allocated), at most 4GiB - 1 (4294967295), the
    /// largest length the 4-byte field can carry; for lines the line length
    /// without its line ending, for raw the size of one delivered chunk
    /// (neither has a length field: any size that fits in memory). A peer
    /// that sends more is disconnected and counted in frames_too_large.
    /// Binary units (Ki, KiB, MiB, GiB) are powers of 1024, decimal units
    /// (K, kB, MB, GB) powers of 1000.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", env = "RINGPORT_MAX_FRAME",
          value_parser = parse_nonzero_size)]
    pub max_frame: u64,

    /// Most connections open at once over all shards.
    ///
    /// At the limit the server stops accepting (new clients wait in the
    /// listen backlog) until a connection closes. The real ceiling is also
    /// bounded by shards x --connections-per-shard.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, env = "RINGPORT_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// What the server does with each message.
    #[arg(long, value_enum, default_value_t = Mode::Echo, env = "RINGPORT_MODE")]
    pub mode: Mode,

    /// Time between two statistics lines in the log (seconds, or with a
    /// unit: 500ms, 10s, 1m; 0 turns them off).
    ///
    /// Each line shows open connections, accepted and closed totals,
    /// messages and bytes in and out with their rates over the interval, the
    /// bytes waiting in send queues, and the error counters
    /// (frames_too_large, slow_consumers, accept_errors, commands_dropped).
    /// When an error counter rises, a warning says by how much.
    #[arg(long, value_name = "DURATION", default_value = "5s", env = "RINGPORT_STATS_INTERVAL",
          value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// How the byte stream is cut into messages.
    #[arg(long, value_enum, default_value_t = CodecKind::Length, env = "RINGPORT_CODEC")]
    pub codec: CodecKind,

    /// Size of each shard's connection table [default: io_uring,
    /// --max-connections (any shard may get any share of the clients); epoll, the open-files
    /// soft limit (raised to the hard limit) divided among the shards].
    ///
    /// On io_uring, connections are direct descriptors, which do not use
    /// the process's file-descriptor table. The kernel caps one ring's table
    /// at the open-files limit, so a shard spreads its table over several
    /// rings, added as they fill: two shards hold a million connections
    /// whatever the open-files limit, and the memory of the table is used
    /// only as connections arrive. On epoll every connection is a
    /// descriptor: the table shares the open-files limit among the shards.
    #[arg(long, value_name = "N", env = "RINGPORT_CONNECTIONS_PER_SHARD",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_per_shard: Option<u64>,

    /// io_uring only: connections (direct descriptors) per ring [default,
    /// and maximum: the open-files limit, which caps one ring's table].
    ///
    /// A shard adds rings as its connections fill them. A smaller value
    /// means more, smaller rings per shard: for testing a many-ring shard
    /// with few connections, or to keep each ring's table small.
    #[arg(long, value_name = "N", env = "RINGPORT_CONNECTIONS_PER_RING",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_per_ring: Option<u64>,

    /// Outbound bytes queued on one connection at which the server stops
    /// reading from it; units allowed (1MiB, 256KiB).
    ///
    /// Reading resumes once the queue drains below half of it, so a client
    /// that does not read its replies is held back by TCP flow control
    /// instead of growing the server's memory.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", env = "RINGPORT_SEND_HIGH_WATER",
          value_parser = parse_nonzero_size)]
    pub send_high_water: u64,

    /// Size of each receive buffer in a shard's provided buffer ring; units
    /// allowed. Larger buffers suit bulk traffic (fewer completions per
    /// large message), at recv-buffers x this much memory per shard.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", env = "RINGPORT_RECV_BUFFER_SIZE",
          value_parser = parse_nonzero_size)]
    pub recv_buffer_size: u64,

    /// Receive buffers per shard (a power of two, at most 32768).
    #[arg(long, value_name = "N", default_value_t = 256, env = "RINGPORT_RECV_BUFFERS",
          value_parser = parse_recv_buffers)]
    pub recv_buffers: u16,

    /// How long a graceful stop (SIGINT/SIGTERM) gives connections to flush
    /// what is queued to them before they are cut (seconds, or with a unit).
    ///
    /// A second SIGINT or SIGTERM during the stop exits at once with
    /// status 1.
    #[arg(long, value_name = "DURATION", default_value = "5s", env = "RINGPORT_STOP_TIMEOUT",
          value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// Close a connection that has sent nothing for this long (seconds, or
    /// with a unit: 30s, 5m; off by default). Counted in idle_timeouts.
    #[arg(long, value_name = "DURATION", env = "RINGPORT_IDLE_TIMEOUT",
          value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,

    /// Send an empty message (zero-length frame, or an empty line) to a
    /// connection that has been sent nothing for this long (seconds, or with
    /// a unit; off by default). An echo client answers it, which keeps it clear of
    /// --idle-timeout while it is alive.
    #[arg(long, value_name = "DURATION", env = "RINGPORT_HEARTBEAT",
          value_parser = parse_positive_duration)]
    pub heartbeat: Option<Duration>,

    /// Close a connection whose frame does not complete within this long of
    /// its first byte (seconds, or with a unit; off by default): the bound
    /// on clients that send a header and then trickle. Counted in
    /// frame_timeouts.
    #[arg(long, value_name = "DURATION", env = "RINGPORT_FRAME_TIMEOUT",
          value_parser = parse_positive_duration)]
    pub frame_timeout: Option<Duration>,

    /// With --frame-timeout: bytes per second a large frame may take on top
    /// of it (a frame of N bytes gets frame-timeout + N / rate); units
    /// allowed (64KiB).
    #[arg(long, value_name = "BYTES", env = "RINGPORT_MIN_RECEIVE_RATE",
          value_parser = parse_nonzero_size, requires = "frame_timeout")]
    pub min_receive_rate: Option<u64>,

    /// At --max-connections: wait (clients are admitted in turn as places
    /// free up) or refuse (a client accepted over the limit is closed).
    #[arg(long, value_name = "POLICY", default_value = "wait", env = "RINGPORT_AT_LIMIT",
          value_parser = parse_limit_policy)]
    pub at_limit: ringport::LimitPolicy,

    /// TLS (the options --tls-*; see `crate::tls`).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// Serve Prometheus metrics (GET /metrics) and a health check
    /// (GET /healthz) over HTTP on this address (off by default).
    ///
    /// Port 0 picks a free port; the address is logged at start
    /// ("metrics on http://ADDR/metrics").
    #[arg(long, value_name = "HOST:PORT", env = "RINGPORT_METRICS_ADDR", value_parser = addr_arg)]
    pub metrics_addr: Option<String>,

    /// Log format on stderr: text for people, json (one object per line)
    /// for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "RINGPORT_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Read option values from this TOML file: keys are the option names
    /// (max-frame = "16MiB", shards = 4, stats-interval = "10s").
    ///
    /// Precedence: command-line flag, then RINGPORT_* environment variable
    /// (RINGPORT_MAX_FRAME for --max-frame), then this file, then the
    /// default.
    #[arg(long, value_name = "FILE", env = "RINGPORT_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub cluster_args: crate::cluster_args::ClusterArgs,

    /// Print the effective settings as TOML (usable as a --config file) and
    /// exit.
    #[arg(long)]
    pub print_config: bool,
}

/// HOST:PORT that resolves (checked before start; resolved again then).
fn addr_arg(text: &str) -> Result<String, String> {
    resolve(text).map(|_| text.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send every message back to its sender.
    Echo,
    /// Send every message to every connected client, the sender included.
    Chat,
    /// Topics and direct sends: the small protocol of `ringport_cli::pubsub`
    /// (subscribe, unsubscribe, publish, message, whoami, direct).
    Pubsub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodecKind {
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
pub fn value_name(value: impl ValueEnum) -> String {
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

pub fn serve(args: ServeArgs) -> Result<(), String> {
    let addr = resolve(&args.addr).map_err(|e| format!("invalid --addr {e}"))?;
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

    match raise_nofile_limit() {
        Ok(lim) => {
            if lim.before < lim.soft {
                info!(
                    "open-files limit raised from {} to {} (the hard limit)",
                    lim.before, lim.soft
                );
            } else {
                info!("open-files limit is {} (hard limit {})", lim.soft, lim.hard);
            }
        }
        Err(e) => warn!("could not raise the open-files limit: {e}"),
    }

    // Bound before the server starts, so a taken port fails fast.
    let metrics = match &args.metrics_addr {
        Some(addr) => Some(http::bind(addr)?),
        None => None,
    };

    let mut config = ServerConfig::new(addr);
    config.backend = args.backend;
    config.shards = shards;
    config.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    config.connections_per_shard = args
        .connections_per_shard
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    config.connections_per_ring = args
        .connections_per_ring
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    config.send_high_water = args.send_high_water as usize;
    config.recv_buffer_size = usize::try_from(args.recv_buffer_size).unwrap_or(usize::MAX);
    config.recv_buffers = args.recv_buffers;
    config.stop_timeout = args.stop_timeout;
    config.idle_timeout = args.idle_timeout;
    config.heartbeat = args.heartbeat;
    config.frame_timeout = args.frame_timeout;
    config.min_receive_rate = args.min_receive_rate;
    config.at_limit = args.at_limit;
    config.cluster = args.cluster_args.config()?;
    config.tls = crate::tls::acceptor(&args.tls)?;
    if let Some(ws) = &args.ws_addr {
        let ws = resolve(ws).map_err(|e| format!("invalid --ws-addr {e}"))?;
        let mut listener = ringport::protocol::WebSocketListener::new(ws);
        listener.session.max_frame = max_frame;
        listener.session.max_message = max_frame;
        if args.ws_deflate {
            listener.deflate = Some(ringport::protocol::websocket::DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..Default::default()
            });
        }
        config.websocket = Some(listener);
    }

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

    let per_shard = server.capacity() / shards.max(1);
    info!(
        "listening on {} ({}, {} mode, {} codec, max frame {}, {} shards x {} connections, \
         max connections {}, capacity {}, send high water {}, stop timeout {:?})",
        server.local_addr(),
        server.driver(),
        value_name(args.mode),
        value_name(args.codec),
        format_bytes(args.max_frame),
        shards,
        per_shard,
        args.max_connections,
        (server.capacity() as u64).min(args.max_connections),
        format_bytes(args.send_high_water),
        args.stop_timeout,
    );

    if let Some(ws) = server.websocket_addr() {
        let scheme = if args.tls.tls_cert.is_some() {
            "wss"
        } else {
            "ws"
        };
        info!("websocket on {scheme}://{ws}/");
    }

    // The metrics thread reads the server through this slot; the stop takes
    // the server out of it (scrapes then answer 503) before stopping it.
    let slot = RwLock::new(Some(server));
    let http_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(listener) = metrics {
            info!("metrics on http://{}/metrics", listener.addr);
            let scrape = || {
                let guard = slot.read().unwrap_or_else(|e| e.into_inner());
                let server = guard.as_ref()?;
                let shards = server.shard_stats();
                let turns = server.turn_durations();
                let mut text = ringport_cli::metrics::render_with_turns(
                    &shards,
                    server.backend().name(),
                    Some(&turns),
                );
                if let Some(cluster) = server.cluster_stats() {
                    text.push_str(&ringport_cli::metrics::render_cluster(&cluster));
                }
                Some(text)
            };
            let health = || {
                let guard = slot.read().unwrap_or_else(|e| e.into_inner());
                let server = guard.as_ref()?;
                Some(match server.cluster_stats() {
                    Some(c) if !c.connected => Some("cluster link to NATS is down".to_string()),
                    _ => None,
                })
            };
            let connz = |offset: usize, limit: usize| {
                let guard = slot.read().unwrap_or_else(|e| e.into_inner());
                let snapshot = guard.as_ref()?.connections(Duration::from_secs(1));
                Some(connz_json(&snapshot, offset, limit))
            };
            let done = &http_done;
            std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn_scoped(scope, move || {
                    http::run(listener, done, scrape, health, connz)
                })
                .map_err(|e| format!("starting the metrics thread: {e}"))?;
        }
        let result = run_until_signal(&args, started, &slot, &stop_requested, &which_signal);
        http_done.store(true, Ordering::Release);
        result
    })
}

/// Logs stats lines until a signal, then stops the server gracefully.
fn run_until_signal(
    args: &ServeArgs,
    started: Instant,
    slot: &RwLock<Option<Server>>,
    stop_requested: &AtomicBool,
    which_signal: &AtomicUsize,
) -> Result<(), String> {
    let read = || slot.read().unwrap_or_else(|e| e.into_inner());
    let mut reporter = Reporter::new(read().as_ref().map(Server::stats).unwrap_or_default());
    // None: no stats lines (interval 0).
    let mut next_report =
        (!args.stats_interval.is_zero()).then(|| Instant::now() + args.stats_interval);
    let mut failure = None;
    let mut next_trim = Instant::now() + ALLOCATOR_TRIM_EVERY;
    while !stop_requested.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next_trim {
            next_trim = now + ALLOCATOR_TRIM_EVERY;
            give_free_memory_back();
        }
        failure = read().as_ref().and_then(Server::failure);
        if failure.is_some() {
            break;
        }
        if let Some(due) = next_report.filter(|&due| now >= due) {
            let per_shard = read().as_ref().map(Server::shard_stats).unwrap_or_default();
            let mut total = Stats::default();
            for s in &per_shard {
                total += *s;
            }
            let shard_connections = per_shard
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
        _ if failure.is_some() => "a shard failure",
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    };
    let server = slot
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("the server was already stopped")?;
    let before = server.stats();
    info!(
        "received {signal}: stopping ({} connections open; flushing for up to {:?})",
        before.connections, args.stop_timeout
    );
    let cluster = server.cluster_stats();
    let stopping = Instant::now();
    let after = server.stop();
    if let Some(c) = cluster {
        info!(
            "cluster totals: sent {}, received {}, dropped_out {}, dropped_in {}, \
             undeliverable {}, unreachable {}",
            c.sent, c.received, c.dropped_out, c.dropped_in, c.undeliverable, c.unreachable
        );
    }
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
    match failure {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// One `/connz` page as JSON.
fn connz_json(snapshot: &ringport::ConnectionsSnapshot, offset: usize, limit: usize) -> String {
    let page: Vec<_> = snapshot
        .connections
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| {
            serde_json::json!({
                "conn": c.conn.to_string(),
                "id": c.conn.as_u64(),
                "shard": c.conn.shard(),
                "peer": c.peer.to_string(),
                "age_ms": c.age.as_millis() as u64,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "queued": c.queued,
            })
        })
        .collect();
    serde_json::json!({
        "total": snapshot.connections.len(),
        "offset": offset,
        "limit": limit,
        "complete": snapshot.complete,
        "sort": "queued",
        "connections": page,
    })
    .to_string()
}

/// Starts the server with the handler `mode` names, for any codec.
fn start<C: Codec + Sync>(config: ServerConfig, codec: C, mode: Mode) -> std::io::Result<Server> {
    match mode {
        Mode::Echo => Server::start(config, codec, |_| handlers::Echo),
        Mode::Chat => Server::start(config, codec, |_| handlers::Chat),
        Mode::Pubsub => Server::start(config, codec, |_| ringport_cli::pubsub::PubSub),
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

/// How often `serve` asks the allocator to return free memory.
const ALLOCATOR_TRIM_EVERY: Duration = Duration::from_secs(10);

/// Asks glibc's allocator to return the free pages of every arena to the
/// system. The shards free a burst's buffers and queues themselves (every
/// 2 s), but glibc keeps freed memory inside its per-thread arenas, where
/// only `malloc_trim` releases it; measured with `scripts/attack.sh
/// non-readers` (see docs/performance.md). A no-op with other C libraries.
fn give_free_memory_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and may be called from any
    // thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
