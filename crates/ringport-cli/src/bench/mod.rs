//! `ringport bench`: a load generator built on ringport's own engine.
//!
//! Phases: connect (paced, spread over source addresses), warm-up, measure,
//! drain (no new sends; wait for every reply), report. Every reply is
//! verified byte for byte; any error or unanswered message makes the exit
//! status non-zero. When no connection can be made the run stops at once
//! (exit 1); SIGINT or SIGTERM ends it early with a report marked partial
//! (exit 128 + the signal number).

mod fanout;
mod handler;
mod payload;
mod ports;
mod report;
mod rotation;
mod sources;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use ringport::codec::MAX_HEADER_LEN;
use ringport::{LengthDelimited, Lines, RawBytes, Server, ServerConfig};

use handler::{BenchHandler, Mode, Params, Phase, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Every message comes back to its sender.
    Echo,
    /// Every message goes to every connected client (`ringport serve --mode chat`).
    Chat,
    /// Topic fan-out against `serve --mode pubsub` (one node or a cluster,
    /// see --nodes): --connections subscribers over --topics topics,
    /// --publishers publishers at --rate messages/s each.
    Pubsub,
    /// Chat fan-out over one node or a cluster (`serve --mode chat
    /// --cluster ...`): --connections listeners spread over --nodes,
    /// --publishers talkers at --rate messages/s each.
    ChatFanout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verify {
    /// Every byte of every reply (the filler depends on the connection and
    /// the sequence number, so a stale or misrouted body is caught).
    Full,
    /// Length, connection and sequence number only; payloads are not
    /// rewritten per message (a reused buffer gets a new stamp only). For
    /// bulk runs where filling and checking 64 KiB per message would make
    /// the bench the bottleneck.
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchCodec {
    /// 4-byte big-endian length, then the payload (ringport's default).
    Length,
    /// Newline-delimited; payloads are printable text.
    Lines,
}

/// Options of `ringport bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server address, as HOST:PORT (HOST an IP address, an IPv6 one in brackets, or a name; of
    /// the addresses a name resolves to, the first IPv4 one, or the first of
    /// the --sources' family).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000",
          value_parser = addr_arg)]
    pub addr: String,
    /// Concurrent connections to open and keep.
    #[arg(long, short = 'c', default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub connections: usize,
    /// Payload bytes per message (at least 20; 40 with --codec lines).
    #[arg(long, short = 's', default_value = "512", value_parser = size_arg)]
    pub size: usize,
    /// Messages in flight per connection (1 = ping-pong).
    #[arg(long, short = 'd', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub depth: u32,
    /// Length of the measured phase (seconds, or with a unit: 500ms, 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = crate::parse_positive_duration)]
    pub duration: Duration,
    /// Warm-up before measuring (traffic runs, nothing recorded); seconds or
    /// with a unit.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::parse_duration)]
    pub warmup: Duration,
    /// Messages per second per connection; 0 = closed loop, as fast as
    /// replies come. Each thread takes its connections in a random order
    /// (not connect order), as independent clients would send.
    #[arg(long, default_value_t = 0.0, value_parser = rate_arg)]
    pub rate: f64,
    /// What the server does with messages.
    #[arg(long, value_enum, default_value_t = BenchMode::Echo)]
    pub mode: BenchMode,
    /// How much of each reply to check.
    #[arg(long, value_enum, default_value_t = Verify::Full)]
    pub verify: Verify,
    /// Framing; must match the server's.
    #[arg(long, value_enum, default_value_t = BenchCodec::Length)]
    pub codec: BenchCodec,
    /// Source addresses to spread connections over, as a range
    /// (127.0.0.1-127.0.0.64) or a comma list. The bench binds each
    /// connection to an explicit source port of its own choosing (65535
    /// down to 1024, without the kernel's ephemeral range: about 36,000 per source
    /// address with default sysctls) and says before connecting when the
    /// sources cannot hold --connections. Default: the target's family,
    /// 127.0.0.1-127.0.0.16 for an IPv4 loopback target, ::1 for an IPv6
    /// one, the unspecified address (the route's) for any other.
    #[arg(long, value_name = "ADDRS")]
    pub sources: Option<String>,
    /// Let the kernel pick each connection's source port instead (bind to
    /// port 0 with IP_BIND_ADDRESS_NO_PORT: the ephemeral range, about
    /// 28,000 per source address and destination, searched on every
    /// connect, which slows down as it fills).
    #[arg(long)]
    pub kernel_ports: bool,
    /// Kernel interface of the load generator's engine: io-uring, epoll, or
    /// auto (io_uring where it works, else epoll).
    #[arg(long, value_name = "BACKEND", default_value = "auto", env = "RINGPORT_BACKEND",
          value_parser = crate::parse_backend)]
    pub backend: ringport::Backend,
    /// Engine threads. On io_uring each thread holds any number of
    /// connections (on as many rings as it needs: one ring holds at most the
    /// open-files limit); on epoll all threads together hold at most the
    /// open-files limit.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connects in flight at once while connecting (pacing, so the server's
    /// listen backlog does not overflow).
    #[arg(long, default_value_t = 1000)]
    pub connect_window: usize,
    /// Largest frame the bench accepts (match the server's --max-frame).
    #[arg(long, default_value = "16MiB", value_parser = size_arg)]
    pub max_frame: usize,
    /// pubsub / chat-fanout: the nodes to spread subscribers over, as a
    /// comma list of HOST:PORT [default: --addr]. Publishers use the first.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub nodes: Option<String>,
    /// pubsub / chat-fanout: publishing connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// pubsub: topics the subscribers are spread over.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Sample this server process's CPU and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Draw the latency percentile curve to this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Longest wait for outstanding replies after the measured phase
    /// (seconds, or with a unit).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_duration)]
    pub drain_timeout: Duration,
    /// Connect over TLS (the server runs `serve --tls-cert ...`). The
    /// server's certificate is checked against --tls-ca (default: the
    /// system CA bundle) and the host of --addr, unless --insecure.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) that sign the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry [default: the host of
    /// --addr].
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Accept any server certificate (self-signed test servers); the
    /// handshake is otherwise the same.
    #[arg(long, requires = "tls")]
    pub insecure: bool,
    /// Speak WebSocket (RFC 6455) to a WebSocket server (`serve --ws-addr`,
    /// or any other): each connection sends the upgrade request for
    /// --ws-path and counts as established once the server's 101 is
    /// checked (the upgrade belongs to the connect phase, not to the
    /// measurement); then every message is one masked binary WebSocket
    /// message (text with --ws-text), every reply is verified as without
    /// --ws, and the server's pings are answered. With --tls: wss.
    #[arg(long)]
    pub ws: bool,
    /// --ws: the upgrade request's target (path and query).
    #[arg(long, value_name = "PATH", default_value = "/", requires = "ws")]
    pub ws_path: String,
    /// --ws: offer permessage-deflate (RFC 7692, compression level 1);
    /// the server may decline (the report says how many connections
    /// negotiated it).
    #[arg(long, requires = "ws")]
    pub ws_deflate: bool,
    /// --ws: send text messages (printable payloads) instead of binary ones;
    /// replies must come back as text.
    #[arg(long, requires = "ws")]
    pub ws_text: bool,
    /// Check the options (sizes, address and sources, port plan, TLS files)
    /// and print what the run would do, without connecting; exit status 0
    /// if they are usable, 2 if not.
    #[arg(long)]
    pub check: bool,
}

/// The TLS side of `bench --tls`, if asked for.
fn tls_connector(args: &BenchArgs) -> Result<Option<ringport::tls::TlsConnector>, String> {
    if !args.tls {
        return Ok(None);
    }
    let config = ringport::tls::pem::client_config(args.tls_ca.as_deref(), args.insecure, None)
        .map_err(|e| format!("--tls: {e}"))?;
    let host = match &args.tls_server_name {
        Some(name) => name.clone(),
        None => {
            let (host, _) = args.addr.rsplit_once(':').unwrap_or((&args.addr, ""));
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        }
    };
    ringport::tls::TlsConnector::with_name(Arc::new(config), &host)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn size_arg(text: &str) -> Result<usize, String> {
    crate::parse_size(text).and_then(|n| usize::try_from(n).map_err(|_| "size too large".into()))
}

/// HOST:PORT that resolves (the family is chosen later, see `sources::choose`).
fn addr_arg(text: &str) -> Result<String, String> {
    crate::resolve(text).map(|_| text.to_string())
}

fn rate_arg(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "'{text}' is not a rate: expected messages per second, 0 or more"
        )),
    }
}

/// How long the drain may take after SIGINT/SIGTERM.
const INTERRUPTED_DRAIN: Duration = Duration::from_secs(1);

/// SIGINT/SIGTERM seen by the bench: the first asks for an early report,
/// a second exits at once.
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    fn install() -> Result<Interrupt, String> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())
                .and_then(|_| signal_hook::flag::register(sig, flag.clone()))
                .and_then(|_| signal_hook::flag::register_usize(sig, signal.clone(), sig as usize))
                .map_err(|e| format!("installing the handler for signal {sig}: {e}"))?;
        }
        Ok(Interrupt { flag, signal })
    }

    /// True once SIGINT or SIGTERM arrived.
    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The signal's name and number, once one arrived.
    fn which(&self) -> Option<(&'static str, i32)> {
        if !self.raised() {
            return None;
        }
        Some(match self.signal.load(Ordering::Acquire) as i32 {
            signal_hook::consts::SIGINT => ("SIGINT", signal_hook::consts::SIGINT),
            _ => ("SIGTERM", signal_hook::consts::SIGTERM),
        })
    }
}

/// Runs the bench; returns the process exit code.
pub fn run(args: BenchArgs) -> i32 {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn run_inner(args: BenchArgs) -> Result<i32, String> {
    let ws = ws::WsOpts::from_args(&args)?;
    if matches!(args.mode, BenchMode::Pubsub | BenchMode::ChatFanout) {
        if args.check {
            let addr = crate::resolve(&args.addr)?;
            tls_connector(&args)?;
            println!(
                "check: {:?} run against {addr} is possible ({} connections)",
                args.mode, args.connections
            );
            return Ok(0);
        }
        return run_fanout(&args, ws);
    }
    let text = args.codec == BenchCodec::Lines || args.ws_text;
    if args.size < payload::min_size(text) {
        return Err(format!(
            "--size must be at least {} bytes to carry the connection id and sequence number",
            payload::min_size(text)
        ));
    }
    if args.codec == BenchCodec::Length && args.max_frame as u64 > u64::from(u32::MAX) {
        return Err(format!(
            "--max-frame {} exceeds 4GiB - 1 ({}), the largest length --codec length's 4-byte \
             field can carry",
            args.max_frame,
            u32::MAX
        ));
    }
    if args.size > args.max_frame {
        return Err(format!(
            "--size {} exceeds --max-frame {}",
            args.size, args.max_frame
        ));
    }
    let (sources, addr) = sources::choose(args.sources.as_deref(), &args.addr)?;
    let mut ports = if args.kernel_ports {
        let per_source = 28_000usize;
        if args.connections > sources.len() * per_source {
            eprintln!(
                "warning: {} connections over {} source address(es) may run out of ephemeral \
                 ports (about {per_source} per source); add --sources",
                args.connections,
                sources.len()
            );
        }
        None
    } else {
        let space = ports::PortSpace::of_this_machine();
        Some(ports::PortPlan::new(&sources, space, args.connections)?)
    };
    if args.check {
        tls_connector(&args)?;
        println!(
            "check: {} connections to {addr} from {} source address(es) ({}), {} bytes, \
             depth {}: options are usable",
            args.connections,
            sources.len(),
            sources[0],
            args.size,
            args.depth
        );
        return Ok(0);
    }
    // io_uring: a thread holds any number of connections (its table
    // spans several rings); epoll: each thread's share of the open-files
    // limit (a start error says so if the connections do not fit).
    let epoll = args.backend == ringport::Backend::Epoll;
    // Room beyond the connections: connects in flight whose source port
    // turns out taken hold a slot until they fail.
    let slack = args.connect_window;
    let threads = args.threads.max(1);

    let params = Params {
        size: args.size,
        depth: args.depth,
        rate: args.rate,
        mode: match args.mode {
            BenchMode::Echo => Mode::Echo,
            _ => Mode::Chat,
        },
        text,
        explicit_ports: ports.is_some(),
        verify_body: args.verify == Verify::Full,
        started: Instant::now(),
        ws,
    };
    let shared = Arc::new(Shared::new(params, threads));
    let config = {
        let mut config = ServerConfig::default();
        config.backend = args.backend;
        config.listen = false;
        config.shards = threads;
        config.connections_per_shard =
            (!epoll).then(|| args.connections.div_ceil(threads) + slack + 16);
        config.max_connections = args.connections + slack + 16;
        config.tick = if args.rate > 0.0 {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(5)
        };
        // Replies are read as they come; the bench never leaves data unread.
        config.stop_timeout = Duration::from_secs(2);
        config.send_high_water = own_requests_high_water(args.depth, args.size);
        config
    };
    let factory_shared = shared.clone();
    let factory = move |i| BenchHandler::new(i, factory_shared.clone());
    let engine = match args.codec {
        // WebSocket frames are parsed by each connection's session: the
        // engine hands over the bytes as they come.
        _ if args.ws => Server::start(config, RawBytes::new().max_frame_length(256 << 10), factory),
        BenchCodec::Length => Server::start(
            config,
            LengthDelimited::new().max_frame_length(args.max_frame),
            factory,
        ),
        BenchCodec::Lines => Server::start(
            config,
            Lines::new().max_line_length(args.max_frame),
            factory,
        ),
    }
    .map_err(|e| format!("starting the bench engine: {e}"))?;

    let interrupt = Interrupt::install()?;
    // The empty server's memory, for the marginal bytes per connection.
    let server_idle = args.server_pid.map(report::ProcSample::take);
    let mut progress = report::Progress::new();
    let connect_started = Instant::now();
    let pace = connect_all(
        &args,
        addr,
        &engine,
        &shared,
        &sources,
        ports.as_mut(),
        &mut progress,
        &interrupt,
    )?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let slowest_second = pace.slowest();
    let established = shared.established.load(Ordering::Relaxed);
    let connect_failed = shared.connect_failed.load(Ordering::Relaxed);
    let port_taken = shared.port_taken.load(Ordering::Relaxed);
    progress.line(&format!(
        "connected {established}/{} in {connect_secs:.2}s ({:.0}/s{}), {connect_failed} failed{}",
        args.connections,
        established as f64 / connect_secs.max(1e-9),
        slowest_second.map_or(String::new(), |r| format!(", slowest second {r:.0}/s")),
        if port_taken > 0 {
            format!(", {port_taken} source ports found taken and skipped")
        } else {
            String::new()
        }
    ));
    if established == 0 && !interrupt.raised() {
        // Nothing to measure: say why now rather than after the phases.
        engine.stop();
        let reasons = shared
            .connect_errors
            .lock()
            .unwrap()
            .iter()
            .map(|(e, n)| format!("{e} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "error: no connection to {addr} could be made ({reasons}); is a server listening there?"
        );
        return Ok(1);
    }

    // The phase SIGINT/SIGTERM interrupted, if one did.
    let mut stopped_in = interrupt.raised().then_some("connect");
    if stopped_in.is_none() {
        shared.set_phase(Phase::Warmup);
        if !progress.run_phase("warm-up", args.warmup, &shared, &interrupt) {
            stopped_in = Some("warm-up");
        }
    }
    let server_before = args.server_pid.map(report::ProcSample::take);
    let cpu_before = report::self_cpu();
    let measure_started = Instant::now();
    let mut measured_secs = 0.0;
    if stopped_in.is_none() {
        shared.set_phase(Phase::Measure);
        if !progress.run_phase("measure", args.duration, &shared, &interrupt) {
            stopped_in = Some("measure");
        }
        measured_secs = measure_started.elapsed().as_secs_f64();
    }
    shared.set_phase(Phase::Drain);
    let server_after = args.server_pid.map(report::ProcSample::take);
    let cpu_after = report::self_cpu();
    let drain_timeout = match stopped_in {
        Some(_) => args.drain_timeout.min(INTERRUPTED_DRAIN),
        None => args.drain_timeout,
    };
    progress.drain(&shared, drain_timeout, &interrupt);
    let engine_stats = engine.stats();
    engine.stop();

    let results = std::mem::take(&mut *shared.results.lock().unwrap());
    if results.len() != threads {
        return Err(format!(
            "only {} of {threads} engine threads reported results (a shard failed)",
            results.len()
        ));
    }
    let server = match (server_before, server_after) {
        (Some(Ok(a)), Some(Ok(b))) => Some(report::ServerUsage::between(
            server_idle.as_ref().and_then(|s| s.as_ref().ok()),
            &a,
            &b,
        )),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("warning: sampling the server process: {e}");
            None
        }
        _ => None,
    };
    let summary = report::Summary::build(report::Inputs {
        args: &args,
        threads,
        results,
        established,
        connect_failed,
        connect_errors: shared.connect_errors.lock().unwrap().clone(),
        connect_secs,
        slowest_second,
        connect_seconds: pace.seconds.clone(),
        measured_secs,
        bench_cpu_secs: cpu_after - cpu_before,
        server,
        engine_stats,
        ws_deflate: shared.ws_deflate.load(Ordering::Relaxed),
        partial: interrupt.which().map(|(name, _)| report::Partial {
            signal: name,
            phase: stopped_in.unwrap_or("drain"),
            planned_secs: args.duration.as_secs_f64(),
        }),
    });
    summary.print();
    if let Some(path) = &args.json {
        std::fs::write(path, summary.json().to_string() + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, summary.svg())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(match interrupt.which() {
        Some((_, signal)) => 128 + signal,
        None if summary.ok() => 0,
        None => 1,
    })
}

/// Opens the connections with at most `connect_window` in flight, spread
/// over the source addresses (from `ports`' explicit source ports, or port
/// 0 without); waits until each has succeeded or failed. A connect whose
/// explicit port was taken is replaced by one from the next port. Returns
/// the pace of the connects, second by second.
#[allow(clippy::too_many_arguments)]
fn connect_all(
    args: &BenchArgs,
    addr: SocketAddr,
    engine: &Server,
    shared: &Shared,
    sources: &[std::net::IpAddr],
    mut ports: Option<&mut ports::PortPlan>,
    progress: &mut report::Progress,
    interrupt: &Interrupt,
) -> Result<ConnectPace, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let tls = tls_connector(args)?;
    let done = || shared.established.load(Relaxed) + shared.connect_failed.load(Relaxed);
    let total = args.connections as u64;
    // Connects issued, those that found their port taken (to be replaced),
    // and connects given up for want of ports.
    let mut issued = 0u64;
    let mut exhausted = false;
    let mut last_change = Instant::now();
    let mut last_done = 0;
    let mut pace = ConnectPace::new(Instant::now());
    progress.start_bar("connect", total);
    while done() < total && !interrupt.raised() {
        loop {
            let in_flight = issued - shared.port_taken.load(Relaxed) - done();
            if exhausted || done() + in_flight >= total || in_flight >= args.connect_window as u64 {
                break;
            }
            let local = match ports.as_deref_mut() {
                Some(plan) => match plan.next_local() {
                    Some(local) => local,
                    None => {
                        // Every port of every source tried: fail the rest.
                        exhausted = true;
                        let left = total - done() - in_flight;
                        shared.connect_failed.fetch_add(left, Relaxed);
                        let mut errors = shared.connect_errors.lock().unwrap();
                        *errors
                            .entry(
                                "no free source port left on --sources (taken ports \
                                 include TIME_WAITs of an earlier run for 60 s: use other \
                                 addresses)"
                                    .into(),
                            )
                            .or_default() += left;
                        break;
                    }
                },
                None => SocketAddr::new(sources[issued as usize % sources.len()], 0),
            };
            let started = match &tls {
                Some(connector) => engine.connect_tls(addr, Some(local), connector.clone()),
                None => engine.connect(addr, Some(local)),
            };
            match started {
                Ok(()) => issued += 1,
                Err(ringport::SendError::Busy) => {
                    // Hand the same port out again next time round.
                    if let Some(plan) = ports.as_deref_mut() {
                        plan.give_back(local);
                    }
                    break;
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        let now_done = done();
        pace.observe(Instant::now(), now_done);
        progress.set_bar(now_done);
        if now_done != last_done {
            last_done = now_done;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "connecting stalled: {now_done} of {total} connects finished, none for 30 s"
            ));
        }
    }
    progress.finish_bar();
    Ok(pace)
}

/// The connect rate over each whole second of the connect phase, so that a
/// run shows whether the rate held up to the last connection (an average
/// hides a phase that slows down as it fills).
struct ConnectPace {
    window_start: Instant,
    done_at_start: u64,
    /// Connects per second of every whole second so far, in order.
    seconds: Vec<f64>,
}

impl ConnectPace {
    fn new(now: Instant) -> Self {
        ConnectPace {
            window_start: now,
            done_at_start: 0,
            seconds: Vec::new(),
        }
    }

    /// `done` connects had finished at `now`.
    fn observe(&mut self, now: Instant, done: u64) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let rate = (done - self.done_at_start) as f64 / elapsed.as_secs_f64();
            self.seconds.push(rate);
            self.window_start = now;
            self.done_at_start = done;
        }
    }

    /// The slowest whole second (`None` if the phase took less than one).
    fn slowest(&self) -> Option<f64> {
        self.seconds.iter().copied().reduce(f64::min)
    }
}

/// `--mode pubsub` and `--mode chat-fanout` (see [`fanout`]).
fn run_fanout(args: &BenchArgs, ws: Option<ws::WsOpts>) -> Result<i32, String> {
    let list = args.nodes.clone().unwrap_or_else(|| args.addr.clone());
    let nodes = list
        .split(',')
        .map(|a| crate::resolve(a.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let rate = if args.rate > 0.0 { args.rate } else { 100.0 };
    fanout::run(fanout::FanoutArgs {
        kind: if args.mode == BenchMode::Pubsub {
            fanout::Kind::Pubsub
        } else {
            fanout::Kind::Chat
        },
        nodes,
        subscribers: args.connections,
        publishers: args.publishers.max(1),
        topics: args.topics.max(1),
        rate,
        size: args.size,
        duration: args.duration,
        threads: args.threads,
        backend: args.backend,
        max_frame: args.max_frame,
        ws,
    })
}

/// The send high-water mark of the bench's connections. The engine stops
/// reading a connection whose send queue reaches it, and refuses sends past
/// it plus one frame; the bench's queue holds only its own requests, at most
/// `depth` per connection, and it must keep reading replies while they go
/// out (a streaming echo server that answers a large request as it reads
/// it would otherwise fill the bench's socket and stop, both sides waiting),
/// so the mark sits above `depth` whole requests.
fn own_requests_high_water(depth: u32, size: usize) -> usize {
    let requests = (depth as usize).saturating_mul(size.saturating_add(MAX_HEADER_LEN));
    ServerConfig::default()
        .send_high_water
        .max(requests.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_pace_reports_the_slowest_whole_second() {
        let t0 = Instant::now();
        let mut pace = ConnectPace::new(t0);
        pace.observe(t0 + Duration::from_millis(500), 400);
        assert_eq!(pace.slowest(), None, "no whole second yet");
        pace.observe(t0 + Duration::from_secs(1), 1000);
        pace.observe(t0 + Duration::from_secs(2), 1300);
        pace.observe(t0 + Duration::from_secs(3), 2300);
        // The last, partial second is not a whole window.
        pace.observe(t0 + Duration::from_millis(3100), 2310);
        assert_eq!(pace.slowest(), Some(300.0));
        assert_eq!(pace.seconds, vec![1000.0, 300.0, 1000.0]);
    }

    #[test]
    fn the_high_water_mark_sits_above_the_bench_s_own_requests() {
        let default = ServerConfig::default().send_high_water;
        // Small requests: the engine's default stands.
        assert_eq!(own_requests_high_water(8, 512), default);
        assert_eq!(own_requests_high_water(1, 0), default);
        // Large ones: above `depth` whole frames, headers included.
        let mark = own_requests_high_water(8, 16 << 20);
        assert!(mark > 8 * ((16 << 20) + MAX_HEADER_LEN), "{mark}");
        assert!(own_requests_high_water(1, 32 << 20) > (32 << 20) + MAX_HEADER_LEN);
        // No overflow at the extremes.
        assert_eq!(own_requests_high_water(u32::MAX, usize::MAX), usize::MAX);
    }
}
