//! The epoll driver against real sockets on 127.0.0.1. Each test is bounded
//! in time: the harness gives up on a completion after 5 s.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;
use crate::send_queue::{ChunkPool, SendQueue};
use crate::sys::eventfd::{eventfd, eventfd_add};

const LIMIT: Duration = Duration::from_secs(5);

struct Queues(Vec<SendQueue>);

impl SendQueues for Queues {
    fn send_queue(&self, slot: u32) -> &SendQueue {
        &self.0[slot as usize]
    }
}

/// A driver with the engine's side around it: send queues, a chunk pool,
/// the eventfd, and a pump that hands back completions with the received
/// bytes copied out (the buffer is released at once, as the engine does).
struct Harness {
    driver: EpollDriver,
    queues: Queues,
    pool: ChunkPool,
    wake: OwnedFd,
    addr: Option<SocketAddr>,
}

impl Harness {
    fn new(listen: bool, capacity: usize, read_buffer_size: usize) -> Self {
        let listener = listen.then(|| StdListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.as_ref().map(|l| l.local_addr().unwrap());
        let wake = eventfd().unwrap();
        let driver = EpollDriver::new(listener, wake.as_fd(), capacity, read_buffer_size).unwrap();
        Harness {
            driver,
            queues: Queues((0..capacity).map(|_| SendQueue::default()).collect()),
            pool: ChunkPool::new(64),
            wake,
            addr,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr.unwrap()
    }

    fn submit(&mut self, op: Op) {
        self.driver.submit(op, &self.queues).unwrap();
    }

    /// The next completion within `within`, with its bytes if a receive.
    fn poll_for(&mut self, within: Duration) -> Option<(Completion, Vec<u8>)> {
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

    fn next(&mut self) -> (Completion, Vec<u8>) {
        self.poll_for(LIMIT)
            .expect("no completion within the time limit")
    }

    fn quiet(&mut self, within: Duration) {
        if let Some((c, _)) = self.poll_for(within) {
            panic!("unexpected completion {c:?}");
        }
    }

    /// Accepts one client; returns its slot and the client end.
    fn accept(&mut self) -> (u32, StdStream) {
        self.submit(Op::Accept);
        let client = StdStream::connect(self.addr()).unwrap();
        match self.next().0 {
            Completion::Accepted(Ok((slot, peer))) => {
                assert_eq!(peer, client.local_addr().unwrap());
                (slot, client)
            }
            c => panic!("expected an accept, got {c:?}"),
        }
    }

    /// Receives until `want` bytes came; returns them.
    fn receive(&mut self, slot: u32, want: usize) -> Vec<u8> {
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

    fn queue(&mut self, slot: u32, data: &[u8]) {
        self.queues.0[slot as usize].push_copy(&mut self.pool, &[data]);
    }

    /// Sends everything queued for `slot`, send after send; returns the
    /// result of each.
    fn send_all(&mut self, slot: u32) -> Vec<usize> {
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
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn accepts_with_peer_address() {
    let mut h = Harness::new(true, 4, 1024);
    assert_eq!(h.driver.describe(), "epoll");
    let (slot, _client) = h.accept();
    assert_eq!(slot, 0);
    let (second, _client2) = h.accept();
    assert_eq!(second, 1);
}

#[test]
fn receives_data_then_end_of_stream() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    client.write_all(b"hello").unwrap();
    assert_eq!(h.receive(slot, 5), b"hello");
    client.write_all(b"world").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(h.receive(slot, 5), b"world");
    let eof = Completion::Recv {
        slot,
        generation: 1,
        result: 0,
        buf: None,
        more: false,
    };
    assert_eq!(h.next().0, eof);
    h.quiet(Duration::from_millis(100));
}

#[test]
fn data_and_end_in_one_edge_are_both_delivered() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    client.write_all(b"bye").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // Let the edges come and go before the receive is armed.
    h.quiet(Duration::from_millis(100));
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    assert_eq!(h.receive(slot, 3), b"bye");
    assert!(matches!(
        h.next().0,
        Completion::Recv {
            result: 0,
            more: false,
            ..
        }
    ));
}

#[test]
fn receive_armed_after_data_arrived_still_delivers() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    client.write_all(b"one").unwrap();
    assert_eq!(h.receive(slot, 3), b"one");
    // Paused: the receive is cancelled, data arrives, its edge passes.
    h.submit(Op::CancelRecv {
        slot,
        generation: 1,
    });
    assert!(matches!(
        h.next().0,
        Completion::Recv {
            result: r,
            more: false,
            ..
        } if r == -libc::ECANCELED
    ));
    client.write_all(b"two").unwrap();
    h.quiet(Duration::from_millis(100));
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    assert_eq!(h.receive(slot, 3), b"two");
}

#[test]
fn full_reads_go_round_by_round() {
    let mut h = Harness::new(true, 4, 16);
    let (slot, mut client) = h.accept();
    let (other, mut client2) = h.accept();
    let data = pattern(100);
    client.write_all(&data).unwrap();
    client2.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for s in [slot, other] {
        h.submit(Op::Recv {
            slot: s,
            generation: 1,
        });
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut order = Vec::new();
    while a.len() < 100 || b.is_empty() {
        match h.next() {
            (
                Completion::Recv {
                    slot: s, result, ..
                },
                d,
            ) if result > 0 => {
                assert!(result <= 16);
                order.push(s);
                if s == slot { &mut a } else { &mut b }.extend_from_slice(&d);
            }
            (c, _) => panic!("unexpected {c:?}"),
        }
    }
    assert_eq!(a, data);
    assert_eq!(b, b"x");
    // The other connection was not made to wait for all 100 bytes.
    assert!(
        order.iter().position(|&s| s == other).unwrap() <= 1,
        "{order:?}"
    );
}

#[test]
fn cancel_recv_ends_the_receive() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    h.quiet(Duration::from_millis(50));
    h.submit(Op::CancelRecv {
        slot,
        generation: 1,
    });
    let cancelled = Completion::Recv {
        slot,
        generation: 1,
        result: -libc::ECANCELED,
        buf: None,
        more: false,
    };
    assert_eq!(h.next().0, cancelled);
    // Nothing more: not for data, not for a second cancel.
    client.write_all(b"late").unwrap();
    h.submit(Op::CancelRecv {
        slot,
        generation: 1,
    });
    h.quiet(Duration::from_millis(150));
}

#[test]
fn sends_small() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.queue(slot, b"hi there");
    assert_eq!(h.send_all(slot), vec![8]);
    let mut got = [0u8; 8];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi there");
}

#[test]
fn sends_large_to_a_slow_reader_in_order() {
    const LEN: usize = 8 << 20;
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    let data = pattern(LEN);
    h.queue(slot, &data);
    let reader = std::thread::spawn(move || {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 256 * 1024];
        while got.len() < LEN {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "early end of stream");
            got.extend_from_slice(&buf[..n]);
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    });
    let results = h.send_all(slot);
    assert_eq!(results.iter().sum::<usize>(), LEN);
    // At most 64 chunks of 16 KiB per send; the slow reader makes some
    // sends partial.
    assert!(results.iter().all(|&n| n <= 64 * 16 * 1024));
    assert!(
        results.iter().any(|&n| n % (16 * 1024) != 0),
        "no partial write in {} sends",
        results.len()
    );
    assert!(reader.join().unwrap() == data);
}

#[test]
fn cancel_send_of_a_pending_send() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, client) = h.accept();
    h.queue(slot, &vec![0x5a; 32 << 20]);
    // Nobody reads: sends complete until the socket buffers are full, then
    // one stays pending.
    let mut pending = false;
    while !pending {
        h.submit(Op::Send {
            slot,
            generation: 3,
        });
        match h.poll_for(Duration::from_millis(200)) {
            Some((Completion::Sent { result, .. }, _)) if result > 0 => {
                h.queues.0[slot as usize].consume(&mut h.pool, result as usize);
                assert!(!h.queues.0[slot as usize].is_empty(), "all sent");
            }
            Some((c, _)) => panic!("expected a send, got {c:?}"),
            None => pending = true,
        }
    }
    h.submit(Op::CancelSend {
        slot,
        generation: 3,
    });
    let cancelled = Completion::Sent {
        slot,
        generation: 3,
        result: -libc::ECANCELED,
    };
    assert_eq!(h.next().0, cancelled);
    h.submit(Op::CancelSend {
        slot,
        generation: 3,
    });
    h.quiet(Duration::from_millis(50));
    drop(client);
}

#[test]
fn send_to_a_reset_peer_fails_without_sigpipe() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, client) = h.accept();
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    std::thread::sleep(Duration::from_millis(50));
    let mut errors = 0;
    for _ in 0..3 {
        h.queue(slot, b"into the void");
        h.submit(Op::Send {
            slot,
            generation: 3,
        });
        match h.next().0 {
            Completion::Sent { result, .. } if result < 0 => errors += 1,
            Completion::Sent { result, .. } => {
                h.queues.0[slot as usize].consume(&mut h.pool, result as usize)
            }
            c => panic!("expected a send, got {c:?}"),
        }
    }
    assert!(errors > 0);
}

#[test]
fn close_frees_the_slot_for_the_next_accept() {
    let mut h = Harness::new(true, 1, 1024);
    let (slot, mut client) = h.accept();
    assert_eq!(slot, 0);
    h.submit(Op::Close {
        slot,
        generation: 5,
    });
    let closed = Completion::Closed {
        slot,
        generation: 5,
        result: 0,
    };
    assert_eq!(h.next().0, closed);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    let (again, _client) = h.accept();
    assert_eq!(again, 0);
}

fn connect(h: &mut Harness, remote: SocketAddr, local: Option<SocketAddr>) -> (u32, i32) {
    h.submit(Op::Socket { token: 7, remote });
    let slot = match h.next().0 {
        Completion::SocketCreated { token: 7, result } if result >= 0 => result as u32,
        c => panic!("expected a socket, got {c:?}"),
    };
    h.submit(Op::Connect {
        slot,
        generation: 9,
        remote,
        local,
    });
    match h.next().0 {
        Completion::Connected {
            slot: s,
            generation: 9,
            result,
        } if s == slot => (slot, result),
        c => panic!("expected a connect, got {c:?}"),
    }
}

#[test]
fn connects_and_carries_data() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::new(false, 2, 1024);
    let (slot, result) = connect(&mut h, server.local_addr().unwrap(), None);
    assert_eq!(result, 0);
    let (mut peer, _) = server.accept().unwrap();
    h.queue(slot, b"ping");
    assert_eq!(h.send_all(slot), vec![4]);
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    peer.write_all(b"pong").unwrap();
    assert_eq!(h.receive(slot, 4), b"pong");
}

#[test]
fn connect_refused() {
    let addr = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut h = Harness::new(false, 2, 1024);
    let (slot, result) = connect(&mut h, addr, None);
    assert_eq!(result, -libc::ECONNREFUSED);
    h.submit(Op::Close {
        slot,
        generation: 9,
    });
    assert!(matches!(h.next().0, Completion::Closed { result: 0, .. }));
}

#[test]
fn connect_from_an_unbindable_address_fails_at_bind() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::new(false, 2, 1024);
    let local = "10.255.255.1:0".parse().unwrap();
    let (slot, result) = connect(&mut h, server.local_addr().unwrap(), Some(local));
    assert_eq!(result, -libc::EADDRNOTAVAIL);
    h.submit(Op::Close {
        slot,
        generation: 9,
    });
    assert!(matches!(h.next().0, Completion::Closed { result: 0, .. }));
}

#[test]
fn connect_from_a_local_address() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::new(false, 2, 1024);
    let local = "127.0.0.1:0".parse().unwrap();
    let (_, result) = connect(&mut h, server.local_addr().unwrap(), Some(local));
    assert_eq!(result, 0);
}

#[test]
fn accept_errors_are_reported_not_retried() {
    let e = |n| io::Error::from_raw_os_error(n);
    for n in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
        assert_eq!(classify_accept_error(&e(n)), AcceptError::Fail(n));
    }
    assert_eq!(
        classify_accept_error(&e(libc::EAGAIN)),
        AcceptError::Drained
    );
    assert_eq!(
        classify_accept_error(&e(libc::ECONNABORTED)),
        AcceptError::Retry
    );
    assert_eq!(
        classify_accept_error(&io::Error::other("no errno")),
        AcceptError::Fail(libc::EIO)
    );
}

#[test]
fn withdrawn_accepts_are_cancelled() {
    let mut h = Harness::new(true, 4, 1024);
    for _ in 0..3 {
        h.submit(Op::Accept);
    }
    h.submit(Op::WithdrawAccepts);
    for _ in 0..3 {
        assert_eq!(h.next().0, Completion::Accepted(Err(libc::ECANCELED)));
    }
    let client = StdStream::connect(h.addr()).unwrap();
    h.quiet(Duration::from_millis(100));
    // Asked again: the waiting client is taken without a new edge.
    h.submit(Op::Accept);
    match h.next().0 {
        Completion::Accepted(Ok((_, peer))) => assert_eq!(peer, client.local_addr().unwrap()),
        c => panic!("expected an accept, got {c:?}"),
    }
}

#[test]
fn stop_listening_refuses_new_clients() {
    let mut h = Harness::new(true, 4, 1024);
    h.submit(Op::Accept);
    h.submit(Op::StopListening);
    assert_eq!(h.next().0, Completion::Accepted(Err(libc::ECANCELED)));
    let refused = StdStream::connect(h.addr()).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn wake_ups_are_reported_once() {
    let mut h = Harness::new(false, 1, 64);
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    assert_eq!(h.next().0, Completion::Woken);
    h.quiet(Duration::from_millis(100));
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    assert_eq!(h.next().0, Completion::Woken);
}

#[test]
fn ops_on_a_free_slot_fail_cleanly() {
    let mut h = Harness::new(false, 2, 64);
    h.submit(Op::Recv {
        slot: 1,
        generation: 2,
    });
    h.submit(Op::Send {
        slot: 9,
        generation: 2,
    });
    h.submit(Op::Close {
        slot: 0,
        generation: 2,
    });
    assert!(matches!(h.next().0, Completion::Recv { result: r, .. } if r == -libc::EBADF));
    assert!(matches!(h.next().0, Completion::Sent { result: r, .. } if r == -libc::EBADF));
    assert!(matches!(h.next().0, Completion::Closed { result: r, .. } if r == -libc::EBADF));
}

#[test]
fn clamps_iovecs_to_a_byte_count() {
    let buf = [0u8; 10];
    let iov = |len| libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: len,
    };
    let mut v = vec![iov(4), iov(4), iov(4)];
    clamp_iovecs(&mut v, 6);
    assert_eq!(v.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [4, 2]);
    let mut v = vec![iov(4), iov(4)];
    clamp_iovecs(&mut v, 8);
    assert_eq!(v.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [4, 4]);
    clamp_iovecs(&mut v, 100);
    assert_eq!(v.len(), 2);
}

#[test]
fn cancels_aimed_at_another_generation_do_nothing() {
    let mut h = Harness::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    h.submit(Op::CancelRecv {
        slot,
        generation: 0,
    });
    h.quiet(Duration::from_millis(50));
    client.write_all(b"still here").unwrap();
    assert_eq!(h.receive(slot, 10), b"still here");
}

/// An engine in miniature: echoes every connection's bytes back, with one
/// send in flight per connection, and closes after the end of stream once
/// all is sent. Clients check they get their bytes back in order.
#[test]
fn echoes_many_connections() {
    const CLIENTS: usize = 16;
    const LEN: usize = 256 * 1024;
    let mut h = Harness::new(true, CLIENTS, 4096);
    let addr = h.addr();
    for _ in 0..CLIENTS {
        h.submit(Op::Accept);
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = StdStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + c) as u8).collect();
                let mut reader = stream.try_clone().unwrap();
                let echo = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    reader.read_to_end(&mut got).unwrap();
                    got
                });
                for part in data.chunks(1000 + c * 100) {
                    stream.write_all(part).unwrap();
                }
                stream.shutdown(Shutdown::Write).unwrap();
                assert!(echo.join().unwrap() == data, "client {c}: echo differs");
            })
        })
        .collect();
    let mut sending = [false; CLIENTS];
    let mut ended = [false; CLIENTS];
    let mut closed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while closed < CLIENTS {
        assert!(Instant::now() < deadline, "echo did not finish");
        let Some((c, data)) = h.poll_for(Duration::from_millis(100)) else {
            continue;
        };
        let slot = match c {
            Completion::Accepted(Ok((slot, _))) => {
                h.submit(Op::Recv {
                    slot,
                    generation: 1,
                });
                continue;
            }
            Completion::Recv { slot, result, .. } if result > 0 => {
                h.queue(slot, &data);
                slot
            }
            Completion::Recv {
                slot,
                result: 0,
                more: false,
                ..
            } => {
                ended[slot as usize] = true;
                slot
            }
            Completion::Sent { slot, result, .. } if result > 0 => {
                sending[slot as usize] = false;
                h.queues.0[slot as usize].consume(&mut h.pool, result as usize);
                slot
            }
            Completion::Closed { result: 0, .. } => {
                closed += 1;
                continue;
            }
            c => panic!("unexpected {c:?}"),
        };
        let i = slot as usize;
        if !sending[i] && !h.queues.0[i].is_empty() {
            sending[i] = true;
            h.submit(Op::Send {
                slot,
                generation: 3,
            });
        } else if !sending[i] && ended[i] {
            ended[i] = false;
            h.submit(Op::Close {
                slot,
                generation: 1,
            });
        }
    }
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn wait_sleeps_until_the_timeout_or_work() {
    let mut h = Harness::new(true, 2, 64);
    let (slot, mut client) = h.accept();
    // An idle connection (its writable edge is no work) and no op: the
    // whole timeout passes.
    let start = Instant::now();
    h.driver.wait(Duration::from_millis(150)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(140));
    assert_eq!(h.driver.next_completion(), None);
    // Work that comes later ends the wait early.
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    h.quiet(Duration::from_millis(50));
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        client.write_all(b"now").unwrap();
        client
    });
    let start = Instant::now();
    h.driver.wait(Duration::from_secs(5)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(matches!(
        h.driver.next_completion(),
        Some(Completion::Recv { result: 3, .. })
    ));
    h.driver.release(0);
    drop(writer.join().unwrap());
}

#[test]
fn connects_over_ipv6_when_available() {
    let Ok(server) = StdListener::bind("[::1]:0") else {
        return; // No IPv6 loopback here.
    };
    let mut h = Harness::new(false, 2, 1024);
    let local = "[::1]:0".parse().unwrap();
    let (_, result) = connect(&mut h, server.local_addr().unwrap(), Some(local));
    assert_eq!(result, 0);
    let (_, peer) = server.accept().unwrap();
    assert!(peer.is_ipv6());
}

#[test]
fn socket_without_a_free_slot_fails() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let remote = server.local_addr().unwrap();
    let mut h = Harness::new(false, 1, 64);
    connect(&mut h, remote, None);
    h.submit(Op::Socket { token: 8, remote });
    assert_eq!(
        h.next().0,
        Completion::SocketCreated {
            token: 8,
            result: -libc::ENFILE
        }
    );
}
