//! io_uring blocked as Docker's default seccomp profile blocks it: `ringport
//! serve` with its defaults must fall back to epoll, say why, and serve echo
//! and chat correctly.
//!
//! The filter is installed in the child between fork and exec
//! (`pre_exec`): io_uring_setup, io_uring_enter and io_uring_register fail
//! with EPERM, every other system call is allowed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringport");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A classic-BPF seccomp program: EPERM for the three io_uring system
/// calls, allow everything else (and every call of a foreign architecture).
fn io_uring_blocking_filter() -> Vec<libc::sock_filter> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // offsetof(struct seccomp_data, nr) and (.., arch).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: i64, jt, jf| libc::sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k: k as u32,
    };
    vec![
        stmt(LD_W_ABS, ARCH),
        jump(AUDIT_ARCH as i64, 0, 5),
        stmt(LD_W_ABS, NR),
        jump(libc::SYS_io_uring_setup, 3, 0),
        jump(libc::SYS_io_uring_enter, 2, 0),
        jump(libc::SYS_io_uring_register, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]
}

struct Served {
    child: Child,
    addr: SocketAddr,
    log: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ringport serve` (defaults but an ephemeral port) under the
/// filter and waits for its "listening on" line; returns the log so far.
fn serve_without_io_uring(extra: &[&str]) -> Served {
    let filter = io_uring_blocking_filter();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--shards", "2"])
        .args(extra)
        .env_remove("RINGPORT_BACKEND")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two system calls (prctl, seccomp) on memory prepared before the
    // fork (`filter`, moved in; `prog` lives on the child's stack), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut served = Served {
        child: cmd.spawn().expect("spawn ringport serve"),
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        log: String::new(),
    };
    let stderr = served.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no 'listening on' line within {TIMEOUT:?}; log:\n{}",
                served.log
            )
        });
        served.log.push_str(&line);
        served.log.push('\n');
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            served.addr = addr.parse().expect("listening address");
            // Keep draining the log so the child never blocks on stderr.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return served;
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn write_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(payload);
    s.write_all(&buf).unwrap();
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn blocked_io_uring_falls_back_to_epoll_and_echoes() {
    let served = serve_without_io_uring(&[]);
    assert!(
        served.log.contains("using the epoll backend"),
        "the fallback is logged: {}",
        served.log
    );
    assert!(
        served.log.contains("blocked by a seccomp profile"),
        "the reason is logged: {}",
        served.log
    );
    assert!(served.log.contains("epoll"), "{}", served.log);
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(served.addr)).collect();
    for round in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            let payload: Vec<u8> = (0..(round as usize * 997 % 70_000))
                .map(|b| (b as u32 ^ round ^ i as u32) as u8)
                .collect();
            write_frame(c, &payload);
            assert_eq!(read_frame(c), payload, "client {i} round {round}");
        }
    }
}

#[test]
fn blocked_io_uring_falls_back_to_epoll_and_chats() {
    let served = serve_without_io_uring(&["--mode", "chat"]);
    assert!(
        served.log.contains("using the epoll backend"),
        "{}",
        served.log
    );
    let mut a = connect(served.addr);
    let mut b = connect(served.addr);
    // Both are connected once each has received its own message back.
    write_frame(&mut a, b"a is here");
    assert_eq!(read_frame(&mut a), b"a is here");
    write_frame(&mut b, b"b is here");
    let mut seen_by_a = Vec::new();
    while seen_by_a.last().map(Vec::as_slice) != Some(&b"b is here"[..]) {
        seen_by_a.push(read_frame(&mut a));
    }
    // b may have been accepted before or after a's message went out, and
    // with a and b on different shards a's broadcast reaches b's shard as a
    // command, which can arrive after b's own message: b skips it wherever
    // it comes.
    let mut read_b = || loop {
        let frame = read_frame(&mut b);
        if frame != b"a is here" {
            return frame;
        }
    };
    while read_b() != b"b is here" {}
    for i in 0..100u32 {
        let msg = format!("message {i}");
        write_frame(&mut a, msg.as_bytes());
        assert_eq!(read_frame(&mut a), msg.as_bytes());
        assert_eq!(read_b(), msg.as_bytes());
    }
}
