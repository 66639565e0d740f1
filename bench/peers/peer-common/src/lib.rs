//! Shared bits of the bench peer servers: command-line parsing, SO_REUSEPORT
//! listeners and SIGINT/SIGTERM handling.
//!
//! Every peer speaks ringport's default framing: a 4-byte big-endian payload
//! length N, then N bytes. N = 0 is a valid (empty) frame; N > [`MAX_FRAME`]
//! closes the connection.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, RawFd};
use std::process;

/// Largest payload a frame may carry (inclusive), as ringport's `DEFAULT_MAX_FRAME`.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Size of the frame header (big-endian u32 payload length).
pub const HEADER_LEN: usize = 4;
/// Listen backlog used by every peer (ringport's default too).
pub const BACKLOG: i32 = 4096;
/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7001";

/// Parsed command line: `--addr HOST:PORT`, `--threads N` and any extra
/// `--name VALUE` options the binary declared.
#[derive(Debug)]
pub struct Args {
    pub addr: SocketAddr,
    pub threads: usize,
    extra: Vec<(String, String)>,
}

impl Args {
    /// Parses `std::env::args()`. `extra` lists the additional `--name` options
    /// (each taking a value) with a one-line description for `--help`.
    /// Prints usage and exits on `--help` or on a bad argument.
    pub fn parse(name: &str, about: &str, extra: &[(&str, &str)]) -> Args {
        let usage = || {
            let mut s =
                format!("{name}: {about}\n\nUsage: {name} [--addr HOST:PORT] [--threads N]");
            for (opt, _) in extra {
                s.push_str(&format!(" [--{opt} N]"));
            }
            s.push_str(&format!(
                "\n\n  --addr HOST:PORT   listen address (default {DEFAULT_ADDR})\n  --threads N        worker threads (default 1)\n"
            ));
            for (opt, help) in extra {
                s.push_str(&format!("  --{opt:<16} {help}\n"));
            }
            s
        };
        let fail = |msg: String| -> ! {
            eprintln!("{name}: {msg}\n\n{}", usage());
            process::exit(2)
        };
        let mut addr = DEFAULT_ADDR.to_string();
        let mut threads = 1usize;
        let mut extra_vals = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                print!("{}", usage());
                process::exit(0);
            }
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let Some(opt) = key.strip_prefix("--") else {
                fail(format!("unexpected argument {arg:?}"));
            };
            let known = opt == "addr" || opt == "threads" || extra.iter().any(|(o, _)| *o == opt);
            if !known {
                fail(format!("unknown option --{opt}"));
            }
            let value = match inline.or_else(|| it.next()) {
                Some(v) => v,
                None => fail(format!("--{opt} needs a value")),
            };
            match opt {
                "addr" => addr = value,
                "threads" => {
                    threads = match value.parse() {
                        Ok(n) if n >= 1 => n,
                        _ => fail(format!("--threads: bad value {value:?}")),
                    }
                }
                _ => extra_vals.push((opt.to_string(), value)),
            }
        }
        let addr = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) => fail(format!("--addr {addr:?} resolves to nothing")),
            Err(e) => fail(format!("--addr {addr:?}: {e}")),
        };
        Args {
            addr,
            threads,
            extra: extra_vals,
        }
    }

    /// Value of an extra option as text, if given.
    pub fn get_str(&self, opt: &str) -> Option<&str> {
        self.extra
            .iter()
            .rev()
            .find(|(o, _)| o == opt)
            .map(|(_, v)| v.as_str())
    }

    /// Value of an extra numeric option, or `default`.
    pub fn get_usize(&self, opt: &str, default: usize) -> usize {
        match self.extra.iter().rev().find(|(o, _)| o == opt) {
            None => default,
            Some((_, v)) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{opt}: bad value {v:?}");
                process::exit(2)
            }),
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `val` is a live c_int for the duration of the call and the
    // length passed matches its size; `fd` is a socket we own.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const val).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A listening TCP socket with SO_REUSEADDR, SO_REUSEPORT and TCP_NODELAY
/// (accepted sockets inherit TCP_NODELAY from the listener on Linux, which
/// matters for direct descriptors that cannot take a setsockopt).
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else;
    // the TcpListener takes ownership and closes it on drop (also on error).
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds an initialised sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&raw const storage).cast(), len as libc::socklen_t) })?;
    // SAFETY: listen(2) on our own bound socket.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(listener)
}

/// `n` SO_REUSEPORT listeners on the same address (one per worker thread).
/// With port 0 the first bind picks the port and the others reuse it.
pub fn reuseport_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let first = reuseport_listener(addr, BACKLOG)?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(reuseport_listener(bound, BACKLOG)?);
    }
    Ok(out)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: rlimit is plain old data; getrlimit/setrlimit get a valid pointer.
    unsafe {
        let mut rl: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
        rl.rlim_cur as u64
    }
}

fn term_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread. Call it in `main` before
/// spawning workers (they inherit the mask), then [`wait_for_term_signal`].
pub fn block_term_signals() {
    let set = term_sigset();
    // SAFETY: `set` is an initialised sigset; old mask not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_sigmask failed");
}

/// Waits for SIGINT or SIGTERM (which must be blocked, see
/// [`block_term_signals`]) and returns its number.
pub fn wait_for_term_signal() -> i32 {
    let set = term_sigset();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is initialised and `sig` is a valid out pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

/// Name of a terminating signal for the shutdown message.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Prints "listening on ADDR" to stdout and flushes it (the readiness line
/// bench/compare.sh and check.py wait for).
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}
