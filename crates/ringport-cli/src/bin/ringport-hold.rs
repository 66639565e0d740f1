//! `ringport-hold`: opens many connections to a ringport echo server (length
//! codec), checks one echo on each, and holds them open.
//!
//! One process can hold fewer sockets than its open-files limit, and one
//! source address has about 28,000 ephemeral ports (the default
//! ip_local_port_range), so a large test runs several of these processes,
//! each from its own loopback source address (127.0.0.2, 127.0.0.3, ...:
//! all of 127.0.0.0/8 is local on Linux, no configuration needed).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ringport_cli::{parse_duration, raise_nofile_limit};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Open N connections to a ringport echo server (4-byte big-endian length
/// codec), verify one echo on each, hold them, then verify again and exit.
///
/// Prints `held N connections, verified N echoes` on stdout once every
/// connection is open and has echoed; exits with status 1 and a message on
/// stderr on any failure. Sockets are closed with a reset (SO_LINGER 0) so
/// that no TIME_WAIT state is left to eat the source addresses' ports.
#[derive(Debug, Parser)]
#[command(name = "ringport-hold", version)]
struct Args {
    /// Server address, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    addr: SocketAddr,

    /// Connections to open and hold.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,

    /// Source address to bind each socket to (port 0: the kernel picks an
    /// ephemeral port per source address). Repeat it, or give a
    /// comma-separated list, to spread the connections round-robin over
    /// several addresses. Default: let the kernel choose.
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    source: Vec<IpAddr>,

    /// Seconds to hold the connections once verified (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_duration)]
    hold: Duration,

    /// Connections opened back to back before pausing.
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,

    /// Pause between two batches, in milliseconds (lets the server drain its
    /// listen backlog).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pause_ms: u64,

    /// Seconds one connect may take before it counts as a failure.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Seconds allowed for all echoes of one verification round.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_duration)]
    echo_timeout: Duration,

    /// Do not verify the echoes again after holding.
    #[arg(long)]
    no_final_check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ringport-hold: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let n = usize::try_from(args.connections).map_err(|_| "too many connections".to_string())?;
    let limit = raise_nofile_limit().map_err(|e| format!("reading the open-files limit: {e}"))?;
    // A few descriptors for stdio and the runtime.
    let room = limit.soft.saturating_sub(16);
    if n as u64 > room {
        return Err(format!(
            "{n} connections need as many file descriptors, but the open-files limit is {} \
             (hard limit {}): hold at most {room} per process and run several processes, \
             each with its own --source",
            limit.soft, limit.hard
        ));
    }
    for source in &args.source {
        if source.is_ipv4() != args.addr.is_ipv4() {
            return Err(format!(
                "--source {source} and --addr {} are not the same IP version",
                args.addr
            ));
        }
    }
    let sources = if args.source.is_empty() {
        "kernel-chosen source".to_string()
    } else {
        args.source
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };

    let begin = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let source = (!args.source.is_empty()).then(|| args.source[i % args.source.len()]);
        let stream = connect(args, source).map_err(|e| {
            format!(
                "connection #{i} from {} to {}: {e}{}",
                source.map_or("(any)".to_string(), |s| s.to_string()),
                args.addr,
                hint(&e)
            )
        })?;
        conns.push(stream);
        let done = i as u64 + 1;
        if done.is_multiple_of(args.batch) && done < args.connections {
            std::thread::sleep(Duration::from_millis(args.pause_ms));
        }
        if done.is_multiple_of(5000) {
            eprintln!("ringport-hold: {done}/{n} connected ({sources})");
        }
    }
    let connected_in = begin.elapsed();
    eprintln!(
        "ringport-hold: {n} connected from {sources} to {} in {:.2?} ({:.0}/s)",
        args.addr,
        connected_in,
        n as f64 / connected_in.as_secs_f64().max(1e-9)
    );

    let verified = verify(&mut conns, args.echo_timeout, 0)?;
    println!("held {n} connections, verified {verified} echoes");
    io::stdout().flush().ok();

    if !args.hold.is_zero() {
        eprintln!("ringport-hold: holding for {:?}", args.hold);
        std::thread::sleep(args.hold);
    }
    if !args.no_final_check {
        let again = verify(&mut conns, args.echo_timeout, 1)?;
        println!(
            "after holding {:?}: verified {again} echoes again",
            args.hold
        );
    }
    Ok(())
}

fn connect(args: &Args, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(args.addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to {ip}:0: {e}")))?;
    }
    socket.connect_timeout(&SockAddr::from(args.addr), args.connect_timeout)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_linger(Some(Duration::ZERO))?;
    Ok(socket.into())
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => {
            " (out of ephemeral ports for this source address: spread the connections over \
             more --source addresses)"
        }
        Some(libc::ECONNREFUSED) => " (is the server running on that address?)",
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            " (out of file descriptors: hold fewer connections per process)"
        }
        _ if e.kind() == io::ErrorKind::TimedOut => {
            " (the server's listen backlog may be overflowing: use a smaller --batch or a \
             longer --pause-ms)"
        }
        _ => "",
    }
}

/// The frame sent on connection `index` in verification `round`: unique to
/// this process, connection and round, so a misrouted echo is caught.
fn payload(index: usize, round: u32) -> Vec<u8> {
    format!(
        "ringport-hold pid {} conn {index} round {round}",
        std::process::id()
    )
    .into_bytes()
}

/// Sends one frame on every connection, then reads every echo back and
/// compares it byte for byte. Returns the number verified (all of them).
fn verify(conns: &mut [TcpStream], timeout: Duration, round: u32) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    for (i, conn) in conns.iter_mut().enumerate() {
        let body = payload(i, round);
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        conn.write_all(&frame)
            .map_err(|e| format!("round {round}: sending on connection #{i}: {e}"))?;
    }
    let mut back = Vec::new();
    for (i, conn) in conns.iter_mut().enumerate() {
        let expected = payload(i, round);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "round {round}: echoes not all back within {timeout:?} (stuck at connection #{i})"
            ));
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| format!("setting a read timeout: {e}"))?;
        let mut header = [0u8; 4];
        read_exact(conn, &mut header, i, round, timeout)?;
        let len = u32::from_be_bytes(header) as usize;
        if len != expected.len() {
            return Err(format!(
                "round {round}: connection #{i}: echo announces {len} bytes, sent {}",
                expected.len()
            ));
        }
        back.resize(len, 0);
        read_exact(conn, &mut back, i, round, timeout)?;
        if back != expected {
            return Err(format!(
                "round {round}: connection #{i}: echo differs: sent {:?}, got {:?}",
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&back)
            ));
        }
    }
    Ok(conns.len())
}

fn read_exact(
    conn: &mut TcpStream,
    buf: &mut [u8],
    i: usize,
    round: u32,
    timeout: Duration,
) -> Result<(), String> {
    conn.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("round {round}: connection #{i}: echoes not all back within {timeout:?}")
        }
        io::ErrorKind::UnexpectedEof => {
            format!("round {round}: connection #{i}: closed by the server before its echo")
        }
        _ => format!("round {round}: connection #{i}: reading the echo: {e}"),
    })
}
