//! Helpers shared by the integration tests: raw-socket framing (ringport's
//! default wire format, a 4-byte big-endian length then the payload),
//! deterministic payloads, and servers started on an ephemeral port.
//!
//! Every socket made here has read and write timeouts, so no test can hang
//! on a blocking call.

#![allow(dead_code)]

pub mod ws;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringport::{
    Backend, CloseReason, ConnId, Event, EventServer, LengthDelimited, Server, ServerConfig,
    handlers::Echo,
};

/// Timeout of every blocking socket operation in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A config listening on an ephemeral loopback port, with a small
/// connection table (tests run in parallel in one process).
pub fn config() -> ServerConfig {
    {
        let mut config = ServerConfig::default();
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.shards = 2;
        config.connections_per_shard = Some(2048);
        config.recv_buffers = 64;
        config.stop_timeout = Duration::from_secs(5);
        config
    }
}

/// Starts an echo server with the default codec (16 MiB frames) and
/// `config()` adjusted by `tweak`.
pub fn start_echo(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    start_echo_with(LengthDelimited::new(), tweak)
}

/// Starts an echo server with `codec` and `config()` adjusted by `tweak`.
pub fn start_echo_with(codec: LengthDelimited, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut cfg = config();
    tweak(&mut cfg);
    let server = Server::start(cfg, codec, |_| Echo).expect("start echo server");
    assert_backend(&server);
    server
}

/// The backend this run of the suite is for: `RINGPORT_BACKEND`
/// (`scripts/test.sh` runs the integration tests once with `io-uring`, once
/// with `epoll`), else io_uring where it works. An unknown value fails.
pub fn expected_backend() -> Backend {
    match std::env::var("RINGPORT_BACKEND").as_deref() {
        Ok("epoll") => Backend::Epoll,
        Ok("io-uring") => Backend::IoUring,
        Ok("auto") | Err(std::env::VarError::NotPresent) => {
            if ringport::probe_io_uring().is_ok() {
                Backend::IoUring
            } else {
                Backend::Epoll
            }
        }
        Ok(other) => panic!("RINGPORT_BACKEND={other:?}: expected io-uring, epoll or auto"),
        Err(e) => panic!("RINGPORT_BACKEND: {e}"),
    }
}

/// Asserts that `server` runs on the backend this run is for (and that its
/// driver description agrees): every integration test binary calls this,
/// so no pass of the suite can silently run on the other backend.
#[track_caller]
pub fn assert_backend(server: &Server) {
    let want = expected_backend();
    assert_eq!(server.backend(), want, "driver: {}", server.driver());
    let driver = server.driver();
    match want {
        Backend::Epoll => assert_eq!(driver, "epoll"),
        _ => assert!(driver.starts_with("io_uring"), "driver: {driver}"),
    }
}

/// Whether `RINGPORT_SKIP` (a comma-separated list, e.g. `nats,promtool`)
/// opts out of `what`. If so the skip is announced on stderr (which the
/// test harness does not capture) and recorded in the file named by
/// `RINGPORT_SKIP_LOG`, which `scripts/test.sh` counts as skipped, not
/// passed. The test must then return without asserting anything.
pub fn opted_out(what: &str) -> bool {
    let listed =
        std::env::var("RINGPORT_SKIP").is_ok_and(|list| list.split(',').any(|w| w.trim() == what));
    if listed {
        let test = std::thread::current()
            .name()
            .unwrap_or("<unnamed test>")
            .to_string();
        let line = format!(
            "ringport-skip: {} {test} (RINGPORT_SKIP={what})\n",
            env!("CARGO_CRATE_NAME")
        );
        let _ = io::stderr().write_all(line.as_bytes());
        if let Some(path) = std::env::var_os("RINGPORT_SKIP_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            match file {
                Ok(mut f) => f
                    .write_all(line.as_bytes())
                    .expect("write RINGPORT_SKIP_LOG"),
                Err(e) => panic!("RINGPORT_SKIP_LOG {path:?}: {e}"),
            }
        }
    }
    listed
}

/// Whether the test needing `program` (from Debian package `package`) runs:
/// true if `program` is on `PATH`; false if `RINGPORT_SKIP` names `skip`
/// (the skip is recorded, see [`opted_out`]); otherwise the test fails,
/// naming the package to install.
#[track_caller]
pub fn require_program(program: &str, package: &str, skip: &str) -> bool {
    if opted_out(skip) {
        return false;
    }
    assert!(
        on_path(program),
        "{program} is not installed: apt-get install {package} \
         (or set RINGPORT_SKIP={skip} to skip the tests that need it)"
    );
    true
}

/// Whether an executable named `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `len` bytes that depend on `seed` and on their position (xorshift).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let n = bytes.len().min(len - out.len());
        out.extend_from_slice(&bytes[..n]);
    }
    out
}

/// Header plus payload, ready for the wire.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&header(payload.len()));
    v.extend_from_slice(payload);
    v
}

pub fn header(len: usize) -> [u8; 4] {
    u32::try_from(len).expect("frame fits u32").to_be_bytes()
}

pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    w.write_all(&header(payload.len()))?;
    w.write_all(payload)
}

/// Reads one frame; fails with `UnexpectedEof` on a clean EOF and with
/// `InvalidData` if the header announces more than `max`.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let len = u32::from_be_bytes(h) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over {max}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

/// A connected client with timeouts and TCP_NODELAY.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends one frame and reads one back.
pub fn round_trip(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    write_frame(s, payload).expect("write frame");
    read_frame(s, usize::MAX).expect("read echo")
}

/// Asserts that payload equals expected, without dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} of {} (got {:#04x}, want {:#04x})",
            want.len(),
            got[i],
            want[i]
        );
    }
}

/// Waits (up to `timeout`) for the peer to close: a read returning 0 or a
/// reset. Data still arriving before the EOF is returned. Panics on
/// timeout.
#[track_caller]
pub fn expect_eof(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return rest,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("expected EOF, got {e} after {} bytes", rest.len()),
        }
    }
}

/// Asserts that nothing arrives on `s` within `wait`. (An interrupted read
/// is retried for the rest of the time: see `lifecycle.rs` on why the
/// thread that starts a server can see a spurious EINTR.)
#[track_caller]
pub fn expect_silence(s: &mut TcpStream, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!("expected silence, got EOF"),
            Ok(n) => panic!("expected silence, got {n} bytes: {:?}", &buf[..n.min(32)]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("expected silence, got {e}"),
        }
    }
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes;
/// returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes that `s` has queued but not yet sent (`SIOCOUTQNSD`): non-zero
/// while the peer's receive window is closed, i.e. while TCP flow control
/// holds the writer back.
pub fn unsent_bytes(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    const SIOCOUTQNSD: libc::c_ulong = 0x894B;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one c_int through the pointer, which
    // points at a live local; the fd is the stream's open socket.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), SIOCOUTQNSD, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQNSD: {}", io::Error::last_os_error());
    usize::try_from(n).expect("a byte count")
}

/// Closes `s` with an RST instead of a FIN (SO_LINGER with a zero timeout).
pub fn reset(s: TcpStream) {
    let sock = socket2::Socket::from(s);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    drop(sock);
}

/// The next event of the pull API; panics after `IO_TIMEOUT`.
#[track_caller]
pub fn next(server: &EventServer) -> Event {
    server
        .next_event(IO_TIMEOUT)
        .expect("an event within the timeout")
}

/// The next event must be `Connected` for `client` (its peer address is the
/// client's local address); returns its id.
#[track_caller]
pub fn expect_connected(server: &EventServer, client: &TcpStream) -> ConnId {
    match next(server) {
        Event::Connected { conn, peer } => {
            assert_eq!(peer, client.local_addr().unwrap(), "peer address");
            conn
        }
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// The next event must be `Closed` for `want`; returns the reason.
#[track_caller]
pub fn expect_closed(server: &EventServer, want: ConnId) -> CloseReason {
    match next(server) {
        Event::Closed { conn, reason } => {
            assert_eq!(conn, want);
            reason
        }
        other => panic!("expected Closed for {want}, got {other:?}"),
    }
}
