//! The contract tests' side of the engine: a [`TestDriver`] per driver,
//! send queues, and a harness that pumps completions (see
//! `sys/contract_tests.rs`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::send_queue::{ChunkPool, SendQueue};
use crate::sys::epoll::EpollDriver;
use crate::sys::eventfd::eventfd;
use crate::sys::uring::driver::UringDriver;
use crate::sys::*;

pub(crate) const LIMIT: Duration = Duration::from_secs(5);

/// A driver the contract tests can open.
pub(crate) trait TestDriver: Driver + Sized {
    /// `"epoll"` or `"io-uring"` (the `RINGPORT_SKIP` key).
    const NAME: &'static str;
    /// A driver for `capacity` slots reading into buffers of
    /// `read_buffer_size` bytes, accepting from `listener` if given and
    /// reporting wake-ups of `wake`.
    fn open(
        listeners: Vec<StdListener>,
        wake: BorrowedFd<'_>,
        capacity: usize,
        read_buffer_size: usize,
    ) -> io::Result<Self>;
    /// What [`Driver::describe`] must say.
    fn describes(describe: &str) -> bool;
}

impl TestDriver for EpollDriver {
    const NAME: &'static str = "epoll";
    fn open(
        listeners: Vec<StdListener>,
        wake: BorrowedFd<'_>,
        capacity: usize,
        read_buffer_size: usize,
    ) -> io::Result<Self> {
        EpollDriver::new(listeners, wake, capacity, read_buffer_size)
    }
    fn describes(describe: &str) -> bool {
        describe == "epoll"
    }
}

impl TestDriver for UringDriver {
    const NAME: &'static str = "io-uring";
    fn open(
        listeners: Vec<StdListener>,
        wake: BorrowedFd<'_>,
        capacity: usize,
        read_buffer_size: usize,
    ) -> io::Result<Self> {
        let config = crate::ServerConfig {
            recv_buffers: 64,
            recv_buffer_size: read_buffer_size,
            accepts_in_flight: 16,
            ..crate::ServerConfig::default()
        };
        UringDriver::new(
            &config,
            capacity,
            capacity,
            listeners.into_iter().map(socket2::Socket::from).collect(),
            wake.as_raw_fd(),
        )
    }
    fn describes(describe: &str) -> bool {
        describe.starts_with("io_uring (")
    }
}

/// Whether `RINGPORT_SKIP` (a comma-separated list) names `what`. If so,
/// the skip is announced on stderr (not captured by the test harness) and
/// recorded in the file `RINGPORT_SKIP_LOG` names, which `scripts/test.sh`
/// counts as skipped, not passed.
pub(crate) fn skipped(what: &str, test: &str) -> bool {
    let listed =
        std::env::var("RINGPORT_SKIP").is_ok_and(|list| list.split(',').any(|w| w.trim() == what));
    if listed {
        let line = format!("ringport-skip: {test} (RINGPORT_SKIP={what})\n");
        let _ = io::stderr().write_all(line.as_bytes());
        if let Some(path) = std::env::var_os("RINGPORT_SKIP_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path);
            if let Ok(mut file) = file {
                let _ = file.write_all(line.as_bytes());
            }
        }
    }
    listed
}

pub(crate) struct Queues(pub Vec<SendQueue>);

impl SendQueues for Queues {
    fn send_queue(&self, slot: u32) -> &SendQueue {
        &self.0[slot as usize]
    }
}

/// A driver with the engine's side around it: send queues, a chunk pool,
/// the eventfd, and a pump that hands back completions with the received
/// bytes copied out (the buffer is released at once, as the engine does).
pub(crate) struct Harness<D: TestDriver> {
    pub driver: D,
    pub queues: Queues,
    pub pool: ChunkPool,
    pub wake: OwnedFd,
    addrs: Vec<SocketAddr>,
}

impl<D: TestDriver> Drop for Harness<D> {
    fn drop(&mut self) {
        self.driver.teardown();
    }
}

impl<D: TestDriver> Harness<D> {
    pub fn new(listen: bool, capacity: usize, read_buffer_size: usize) -> Self {
        Self::with_listeners(usize::from(listen), capacity, read_buffer_size)
    }

    /// A harness whose driver accepts from `listeners` listeners.
    pub fn with_listeners(listeners: usize, capacity: usize, read_buffer_size: usize) -> Self {
        let listeners: Vec<StdListener> = (0..listeners)
            .map(|_| StdListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let wake = eventfd().unwrap();
        let driver =
            D::open(listeners, wake.as_fd(), capacity, read_buffer_size).unwrap_or_else(|e| {
                panic!(
                    "opening the {} driver failed: {e} (set RINGPORT_SKIP={} to skip these tests)",
                    D::NAME,
                    D::NAME
                )
            });
        Harness {
            driver,
            queues: Queues((0..capacity).map(|_| SendQueue::default()).collect()),
            pool: ChunkPool::new(64),
            wake,
            addrs,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The address of listener `i`.
    pub fn listener_addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    pub fn submit(&mut self, op: Op) {
        self.driver.submit(op, &self.queues).unwrap();
    }

    /// The next completion within `within`, with its bytes if a receive.
    pub fn poll_for(&mut self, within: Duration) -> Option<(Completion, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.driver.next_completion() {
                let mut data = Vec::new();
                if let Completion::Recv {
                    result,
                    buf: Some(buf),
                    ..
                } = c
                {
                    data = self.driver.buffer(buf, result as usize).to_vec();
                    self.driver.release(buf);
                }
                return Some((c, data));
            }
            self.driver.end_batch();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let step = (deadline - now).min(Duration::from_millis(50));
            self.driver.wait(step).unwrap();
        }
    }

    pub fn next(&mut self) -> (Completion, Vec<u8>) {
        self.poll_for(LIMIT)
            .expect("no completion within the time limit")
    }

    /// Asserts that no completion comes within `within`.
    pub fn quiet(&mut self, within: Duration) {
        if let Some((c, _)) = self.poll_for(within) {
            panic!("unexpected completion {c:?}");
        }
    }

    /// Accepts one client; returns its slot and the client end.
    pub fn accept(&mut self) -> (u32, StdStream) {
        self.submit(Op::Accept);
        let client = StdStream::connect(self.addr()).unwrap();
        match self.next().0 {
            Completion::Accepted(_, Ok((slot, peer))) => {
                assert_eq!(peer, client.local_addr().unwrap());
                (slot, client)
            }
            c => panic!("expected an accept, got {c:?}"),
        }
    }

    /// Receives until `want` bytes came; returns them.
    pub fn receive(&mut self, slot: u32, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            match self.next() {
                (
                    Completion::Recv {
                        slot: s,
                        generation: 1,
                        result,
                        more: true,
                        ..
                    },
                    data,
                ) if s == slot && result > 0 => got.extend_from_slice(&data),
                (c, _) => panic!("expected data, got {c:?}"),
            }
        }
        got
    }

    pub fn queue(&mut self, slot: u32, data: &[u8]) {
        self.queues.0[slot as usize].push_copy(&mut self.pool, &[data]);
    }

    /// Sends everything queued for `slot`, send after send; returns the
    /// result of each.
    pub fn send_all(&mut self, slot: u32) -> Vec<usize> {
        let mut results = Vec::new();
        while !self.queues.0[slot as usize].is_empty() {
            self.submit(Op::Send {
                slot,
                generation: 3,
            });
            match self.next().0 {
                Completion::Sent {
                    slot: s,
                    generation: 3,
                    result,
                } if s == slot && result > 0 => {
                    let n = result as usize;
                    self.queues.0[slot as usize].consume(&mut self.pool, n);
                    results.push(n);
                }
                c => panic!("expected a send, got {c:?}"),
            }
        }
        results
    }

    /// Makes an outbound connection to `remote` (bound to `local` first if
    /// given); returns its slot and the connect's result.
    pub fn connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>) -> (u32, i32) {
        self.submit(Op::Socket { token: 7, remote });
        let slot = match self.next().0 {
            Completion::SocketCreated { token: 7, result } if result >= 0 => result as u32,
            c => panic!("expected a socket, got {c:?}"),
        };
        self.submit(Op::Connect {
            slot,
            generation: 9,
            remote,
            local,
        });
        match self.next().0 {
            Completion::Connected {
                slot: s,
                generation: 9,
                result,
            } if s == slot => (slot, result),
            c => panic!("expected a connect, got {c:?}"),
        }
    }
}

pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Waits until `client`'s bytes are readable on the server side of the
/// connection, i.e. until they are in the socket's receive queue (the
/// client sees its own send as flushed from its send queue: loopback moves
/// it straight to the peer's receive queue). Used where a test needs the
/// data (or the FIN) to be there before a receive is armed.
pub(crate) fn flushed(client: &StdStream) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one c_int to the pointer, which points
        // at a live local; the fd is the client's open socket.
        let rc = unsafe { libc::ioctl(client.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        assert_eq!(rc, 0, "SIOCOUTQ: {}", io::Error::last_os_error());
        if queued == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{queued} bytes not flushed");
        std::thread::sleep(Duration::from_millis(2));
    }
}
