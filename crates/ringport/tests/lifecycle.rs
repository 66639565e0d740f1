//! Starting and stopping: stop with live clients, no leaked descriptors or
//! buffers, drop stops, and clear start errors.
//!
//! Descriptor counts and the buffer statics are process-wide, so the tests
//! of this file run one at a time (`SERIAL`), and no other test file shares
//! their process.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringport::stats::{RECV_BUFFER_BYTES, SEND_CHUNKS};
use ringport::{LengthDelimited, Server, handlers::Echo};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Shard threads alive in this process (named `ringport-shard-N`, which
/// the kernel truncates to 15 bytes).
fn shard_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ringport-shard"))
        .count()
}

/// Runs `f` on another thread and fails if it takes longer than `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

#[test]
fn stop_with_live_clients_is_prompt_and_releases_everything() {
    let _g = serial();
    let fds_before = open_fds();
    let recv_before = RECV_BUFFER_BYTES.load(Ordering::SeqCst);
    let chunks_before = SEND_CHUNKS.load(Ordering::SeqCst);

    let server = start_echo(|c| {
        c.shards = 2;
        c.stop_timeout = Duration::from_secs(2);
    });
    assert_eq!(shard_threads(), 2);
    assert!(RECV_BUFFER_BYTES.load(Ordering::SeqCst) > recv_before);
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..100).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(round_trip(c, b"hi"), b"hi");
        match i % 4 {
            // Idle.
            0 => {}
            // Half a frame.
            1 => {
                c.write_all(&header(1000)).unwrap();
                c.write_all(&[1; 300]).unwrap();
            }
            // Whole frames whose echoes are never read: some of them stay
            // queued on the server (a 4 KiB receive buffer holds few).
            2 => {
                c.write_all(&frame(&pattern(i as u64, 256 * 1024))).unwrap();
            }
            // Echoes in flight.
            _ => {
                for _ in 0..10 {
                    write_frame(c, &[7; 1000]).unwrap();
                }
            }
        }
    }
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 100));
    // Let the 256 KiB frames arrive and be echoed.
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().messages_in
            >= 100 + 25 * 10 + 25),
        "{:?}",
        server.stats()
    );
    eprintln!(
        "before stop: {:?}; send chunks {}",
        server.stats(),
        SEND_CHUNKS.load(Ordering::SeqCst)
    );

    let t = Instant::now();
    within(Duration::from_secs(10), "stop", move || server.stop());
    let took = t.elapsed();
    eprintln!("stop took {took:?}");
    assert!(took < Duration::from_secs(10), "stop took {took:?}");

    // Every client sees the end of the stream (after whatever was flushed).
    for c in &mut clients {
        expect_eof(c, IO_TIMEOUT);
    }
    drop(clients);

    assert_eq!(RECV_BUFFER_BYTES.load(Ordering::SeqCst), recv_before);
    assert_eq!(SEND_CHUNKS.load(Ordering::SeqCst), chunks_before);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(shard_threads(), 0, "shard threads left");
    // The port is free again.
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn dropping_a_server_stops_it() {
    let _g = serial();
    let fds_before = open_fds();
    let recv_before = RECV_BUFFER_BYTES.load(Ordering::SeqCst);
    let chunks_before = SEND_CHUNKS.load(Ordering::SeqCst);
    let server = start_echo(|c| c.stop_timeout = Duration::from_secs(2));
    let addr = server.local_addr();
    let mut c = connect(addr);
    assert_eq!(round_trip(&mut c, b"x"), b"x");
    within(Duration::from_secs(10), "drop", move || drop(server));
    assert_eq!(shard_threads(), 0, "shard threads left");
    expect_eof(&mut c, IO_TIMEOUT);
    drop(c);
    assert!(TcpStream::connect(addr).is_err(), "still listening");
    assert_eq!(RECV_BUFFER_BYTES.load(Ordering::SeqCst), recv_before);
    assert_eq!(SEND_CHUNKS.load(Ordering::SeqCst), chunks_before);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

#[test]
fn stop_flushes_queued_echoes_to_a_reading_client() {
    let _g = serial();
    let server = start_echo(|c| c.shards = 1);
    let mut c = connect(server.local_addr());
    let big = pattern(3, 4 * 1024 * 1024);
    write_frame(&mut c, &big).unwrap();
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .messages_in
        == 1));
    let stopper = thread::spawn(move || server.stop());
    // The echo queued before the stop arrives whole, then EOF.
    let echo = read_frame(&mut c, 8 * 1024 * 1024).unwrap();
    assert_bytes_eq(&echo, &big, "echo flushed during stop");
    assert!(expect_eof(&mut c, IO_TIMEOUT).is_empty());
    stopper.join().unwrap();
}

#[test]
fn address_in_use_is_a_clear_error() {
    let _g = serial();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let fds_before = open_fds();
    let recv_before = RECV_BUFFER_BYTES.load(Ordering::SeqCst);
    let result = within(Duration::from_secs(10), "start", move || {
        let mut cfg = config();
        cfg.addr = addr;
        Server::start(cfg, LengthDelimited::new(), |_| Echo).map(|s| s.local_addr())
    });
    let err = result.expect_err("start on a taken address must fail");
    eprintln!("address in use: {err}");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains(&addr.port().to_string()),
        "the error names the address: {err}"
    );
    // Nothing left behind by the failed start.
    assert_eq!(RECV_BUFFER_BYTES.load(Ordering::SeqCst), recv_before);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(shard_threads(), 0, "shard threads left");
    // The original listener is untouched.
    let c = TcpStream::connect(addr).unwrap();
    let (_s, peer) = taken.accept().unwrap();
    assert_eq!(peer, c.local_addr().unwrap());
    c.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn tables_past_the_open_files_limit_need_rings_and_descriptors_say_so() {
    let _g = serial();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let too_many = lim.rlim_cur as usize + 1;
    let mut cfg = config();
    cfg.connections_per_shard = Some(too_many);
    let started = within(Duration::from_secs(10), "start", move || {
        Server::start(cfg, LengthDelimited::new(), |_| Echo)
    });
    let epoll = expected_backend() == ringport::Backend::Epoll;
    match started {
        // io_uring: a shard's table past one ring's cap spans several
        // rings, created as they fill.
        Ok(server) => {
            assert!(!epoll, "epoll took a table past the open-files limit");
            assert_eq!(server.backend(), ringport::Backend::IoUring);
            assert!(server.capacity() >= too_many);
            let mut c = connect(server.local_addr());
            assert_eq!(round_trip(&mut c, b"several rings"), b"several rings");
            server.stop();
        }
        // epoll: every connection is a descriptor of this process.
        Err(err) => {
            assert!(epoll, "io_uring refused a table that rings can hold: {err}");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
            let msg = err.to_string();
            assert!(msg.contains("open-files limit"), "{msg}");
            assert!(msg.contains(&too_many.to_string()), "{msg}");
        }
    }
    // One ring's table past the kernel's cap: refused, with the reason.
    let mut cfg = config();
    cfg.connections_per_ring = Some(too_many);
    let uring = Server::start(cfg, LengthDelimited::new(), |_| Echo);
    match uring {
        Ok(server) => {
            assert!(epoll, "io_uring accepted a ring over the open-files limit");
            assert_eq!(
                server.backend(),
                ringport::Backend::Epoll,
                "epoll has no rings"
            );
            server.stop();
        }
        Err(err) => {
            assert!(
                !epoll,
                "epoll refused a ring setting it does not use: {err}"
            );
            assert!(err.to_string().contains("open-files limit"), "{err}");
        }
    }

    let mut cfg = config();
    cfg.connections_per_shard = Some(0);
    assert!(Server::start(cfg, LengthDelimited::new(), |_| Echo).is_err());
    let mut cfg = config();
    cfg.shards = 0;
    assert!(Server::start(cfg, LengthDelimited::new(), |_| Echo).is_err());
}

/// A read with a 300 ms timeout on an idle socket: it must time out.
fn idle_read(idle: &mut TcpStream, after: &str) {
    idle.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let t = Instant::now();
    let result = idle.read(&mut [0u8; 16]);
    let took = t.elapsed();
    match result {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "a read with a 300 ms timeout, on the thread that called {after}, returned \
             {other:?} after {took:?}"
        ),
    }
}

/// `Server::start` (and `probe_io_uring`) must not disturb the thread that
/// calls it. The probe creates a throwaway ring on the caller's thread
/// (`sys::uring::probe`); the kernel's asynchronous teardown of that ring
/// (io_ring_exit_work) queues task work with TWA_SIGNAL to every task
/// registered with it, its creator included, so a few milliseconds later the
/// caller's next interruptible blocking call fails with EINTR: a socket read
/// with a timeout, epoll_wait, poll, select... (For `Server::start` it is a
/// race: the task work is sometimes consumed by start's own waits.)
#[test]
fn start_does_not_interrupt_the_callers_blocking_calls() {
    let _g = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut idle = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    ringport::probe_io_uring().unwrap();
    idle_read(&mut idle, "probe_io_uring");
    let server = start_echo(|c| c.shards = 1);
    idle_read(&mut idle, "Server::start");
    server.stop();
}
