//! The [`Driver`] contract (see the module doc of `sys`) tested against
//! real sockets on 127.0.0.1, once per driver: every test here is a generic
//! function over [`TestDriver`], instantiated for the epoll driver and for
//! the io_uring driver by `for_each_driver!` at the end of this file.
//! Tests that hold for one driver only live beside it
//! (`sys/epoll/tests.rs`). Each test is bounded in time: the harness gives
//! up on a completion after 5 s.
//!
//! Without io_uring (an old kernel, a sandbox that blocks it) the io_uring
//! instances fail, unless `RINGPORT_SKIP` names `io-uring`: then they are
//! reported as skipped (see [`skipped`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream as StdStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::sys::eventfd::eventfd_add;
use crate::sys::{Completion, Op};

mod harness;
pub(crate) use harness::*;

fn accepts_with_peer_address<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    assert!(D::describes(h.driver.describe()), "{}", h.driver.describe());
    let (slot, _client) = h.accept();
    let (second, _client2) = h.accept();
    assert!(slot < 4 && second < 4 && slot != second, "{slot} {second}");
}

fn receives_data_then_end_of_stream<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
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

fn data_and_end_before_the_receive_are_both_delivered<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    client.write_all(b"bye").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    flushed(&client);
    // epoll: the edges came and went before the receive is armed.
    h.quiet(Duration::from_millis(20));
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

fn receive_armed_after_data_arrived_still_delivers<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
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
    flushed(&client);
    h.quiet(Duration::from_millis(20));
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    assert_eq!(h.receive(slot, 3), b"two");
}

fn cancel_recv_ends_the_receive<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
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
    flushed(&client);
    h.submit(Op::CancelRecv {
        slot,
        generation: 1,
    });
    h.quiet(Duration::from_millis(150));
}

fn sends_small<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    let (slot, mut client) = h.accept();
    h.queue(slot, b"hi there");
    assert_eq!(h.send_all(slot), vec![8]);
    let mut got = [0u8; 8];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi there");
}

/// 8 MiB queued in 16 KiB chunks to a reader that takes its time: every
/// byte arrives, in order, and no send reports more than it was given.
/// Returns the result of each send.
pub(crate) fn sends_large_to_a_slow_reader_in_order<D: TestDriver>() -> Vec<usize> {
    const LEN: usize = 8 << 20;
    let mut h = Harness::<D>::new(true, 4, 1024);
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
    assert!(reader.join().unwrap() == data);
    results
}

fn sends_large_in_order<D: TestDriver>() {
    let results = sends_large_to_a_slow_reader_in_order::<D>();
    assert!(!results.is_empty());
}

fn cancel_send_of_a_pending_send<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    let (slot, client) = h.accept();
    h.queue(slot, &vec![0x5a; 32 << 20]);
    // Nobody reads: sends complete until the socket buffers are full, then
    // one stays pending (checked below: the cancel finds it in flight and
    // ends it with ECANCELED, not with bytes written).
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

fn send_to_a_reset_peer_fails_without_sigpipe<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    let (slot, client) = h.accept();
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    // The RST is on its way; sends fail once it arrived (the first may
    // still be taken by the kernel). Several tries, each with a result.
    let mut errors = 0;
    let deadline = Instant::now() + LIMIT;
    while errors == 0 {
        assert!(Instant::now() < deadline, "no send failed");
        h.queue(slot, b"into the void");
        h.submit(Op::Send {
            slot,
            generation: 3,
        });
        match h.next().0 {
            Completion::Sent { result, .. } if result < 0 => {
                assert!(
                    [-libc::ECONNRESET, -libc::EPIPE].contains(&result),
                    "{result}"
                );
                errors += 1;
            }
            Completion::Sent { result, .. } => {
                h.queues.0[slot as usize].consume(&mut h.pool, result as usize)
            }
            c => panic!("expected a send, got {c:?}"),
        }
    }
}

fn close_frees_the_slot_for_the_next_accept<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 1, 1024);
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

/// Accepts are spread over every listener: clients of each are accepted,
/// and each accept says which listener it came from, even when only one
/// accept is posted at a time.
fn accepts_from_every_listener<D: TestDriver>() {
    let mut h = Harness::<D>::with_listeners(2, 8, 1024);
    let mut clients = Vec::new();
    for round in 0..3 {
        for i in [1, 0] {
            let client = StdStream::connect(h.listener_addr(i)).unwrap();
            clients.push((i, client.local_addr().unwrap()));
        }
        // One accept at a time: the driver must not starve either one.
        let mut seen = Vec::new();
        for _ in 0..2 {
            h.submit(Op::Accept);
            match h.next().0 {
                Completion::Accepted(listener, Ok((_, peer))) => {
                    seen.push((listener as usize, peer))
                }
                c => panic!("round {round}: expected an accept, got {c:?}"),
            }
        }
        seen.sort();
        let mut want = clients[clients.len() - 2..].to_vec();
        want.sort();
        assert_eq!(seen, want, "round {round}");
    }
    h.submit(Op::StopListening);
    for i in 0..2 {
        let refused = StdStream::connect(h.listener_addr(i));
        assert!(refused.is_err(), "listener {i} still open");
    }
}

fn withdrawn_accepts_are_cancelled<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    for _ in 0..3 {
        h.submit(Op::Accept);
    }
    h.submit(Op::WithdrawAccepts);
    for _ in 0..3 {
        assert!(matches!(
            h.next().0,
            Completion::Accepted(_, Err(libc::ECANCELED))
        ));
    }
    let client = StdStream::connect(h.addr()).unwrap();
    h.quiet(Duration::from_millis(100));
    // Asked again: the waiting client is taken without a new edge.
    h.submit(Op::Accept);
    match h.next().0 {
        Completion::Accepted(_, Ok((_, peer))) => assert_eq!(peer, client.local_addr().unwrap()),
        c => panic!("expected an accept, got {c:?}"),
    }
}

fn stop_listening_refuses_new_clients<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    h.submit(Op::Accept);
    h.submit(Op::StopListening);
    h.submit(Op::WithdrawAccepts);
    assert!(matches!(
        h.next().0,
        Completion::Accepted(_, Err(libc::ECANCELED))
    ));
    // The listener closes once no accept is posted (io_uring: when the
    // cancelled accept is reaped, which the poll above did).
    let refused = StdStream::connect(h.addr()).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

fn wake_ups_are_reported_once<D: TestDriver>() {
    let mut h = Harness::<D>::new(false, 1, 64);
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    assert_eq!(h.next().0, Completion::Woken);
    h.quiet(Duration::from_millis(100));
    eventfd_add(h.wake.as_fd(), 1).unwrap();
    assert_eq!(h.next().0, Completion::Woken);
}

fn ops_on_a_free_slot_fail_cleanly<D: TestDriver>() {
    let mut h = Harness::<D>::new(false, 2, 64);
    h.submit(Op::Recv {
        slot: 1,
        generation: 2,
    });
    h.queue(0, b"nobody");
    h.submit(Op::Send {
        slot: 0,
        generation: 2,
    });
    h.submit(Op::Close {
        slot: 1,
        generation: 2,
    });
    let mut got = [h.next().0, h.next().0, h.next().0];
    got.sort_by_key(|c| format!("{c:?}"));
    assert!(
        matches!(got[0], Completion::Closed { slot: 1, generation: 2, result } if result == -libc::EBADF),
        "{got:?}"
    );
    assert!(
        matches!(got[1], Completion::Recv { slot: 1, generation: 2, result, more: false, .. } if result == -libc::EBADF),
        "{got:?}"
    );
    assert!(
        matches!(got[2], Completion::Sent { slot: 0, generation: 2, result } if result == -libc::EBADF),
        "{got:?}"
    );
}

fn cancels_aimed_at_another_generation_do_nothing<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
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
fn echoes_many_connections<D: TestDriver>() {
    const CLIENTS: usize = 16;
    const LEN: usize = 256 * 1024;
    let mut h = Harness::<D>::new(true, CLIENTS, 4096);
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
            Completion::Accepted(_, Ok((slot, _))) => {
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
            // Out of receive buffers (io_uring, 16 clients at once): not an
            // end of stream; re-armed, as the engine does.
            Completion::Recv {
                slot,
                result,
                more: false,
                ..
            } if result == -libc::ENOBUFS => {
                h.submit(Op::Recv {
                    slot,
                    generation: 1,
                });
                continue;
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

fn wait_sleeps_until_the_timeout_or_work<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 2, 64);
    let (slot, mut client) = h.accept();
    // An idle connection and no op: the whole timeout passes.
    let start = Instant::now();
    h.driver.wait(Duration::from_millis(150)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(140));
    assert_eq!(h.driver.next_completion(), None);
    // Work that comes later ends the wait early: the writer sends only
    // once the receive is armed and the wait has begun (it cannot know the
    // latter, so it sends after a pause; the bound below is far longer).
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
    match h.driver.next_completion() {
        Some(Completion::Recv {
            result: 3,
            buf: Some(buf),
            ..
        }) => {
            assert_eq!(h.driver.buffer(buf, 3), b"now");
            h.driver.release(buf);
        }
        c => panic!("expected the receive, got {c:?}"),
    }
    drop(writer.join().unwrap());
}

/// A failed shard abandons its driver with connections open and ops in
/// flight (a receive, a send stuck on a full socket, accepts): every peer
/// sees the end of the stream and the listener is closed. The driver is
/// then leaked, as the shard does.
fn abandon_closes_every_socket<D: TestDriver>() {
    let mut h = Harness::<D>::new(true, 4, 1024);
    let addr = h.addr();
    let (reading, mut reading_client) = h.accept();
    h.submit(Op::Recv {
        slot: reading,
        generation: 1,
    });
    let (sending, mut sending_client) = h.accept();
    h.queue(sending, &vec![0x5a; 32 << 20]);
    // Sends complete until the socket buffers are full; then one stays
    // pending.
    loop {
        h.submit(Op::Send {
            slot: sending,
            generation: 3,
        });
        match h.poll_for(Duration::from_millis(200)) {
            Some((Completion::Sent { result, .. }, _)) if result > 0 => {
                h.queues.0[sending as usize].consume(&mut h.pool, result as usize);
            }
            Some((c, _)) => panic!("expected a send, got {c:?}"),
            None => break,
        }
    }
    h.submit(Op::Accept);
    h.quiet(Duration::from_millis(20));
    h.driver.abandon();
    for client in [&mut reading_client, &mut sending_client] {
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("expected the end of the stream, got {e}"),
            }
        }
    }
    let refused = StdStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    std::mem::forget(h);
}

/// One `#[test]` per driver for each contract test: `epoll::NAME` and
/// `io_uring::NAME`.
macro_rules! for_each_driver {
    ($($test:ident),* $(,)?) => {
        mod epoll {
            $(
                #[test]
                fn $test() {
                    super::$test::<crate::sys::epoll::EpollDriver>();
                }
            )*
        }
        mod io_uring {
            $(
                #[test]
                fn $test() {
                    let name = concat!(module_path!(), "::", stringify!($test));
                    if crate::sys::contract_tests::skipped("io-uring", name) {
                        return;
                    }
                    super::$test::<crate::sys::uring::driver::UringDriver>();
                }
            )*
        }
    };
}

for_each_driver!(
    accepts_with_peer_address,
    receives_data_then_end_of_stream,
    data_and_end_before_the_receive_are_both_delivered,
    receive_armed_after_data_arrived_still_delivers,
    cancel_recv_ends_the_receive,
    sends_small,
    sends_large_in_order,
    cancel_send_of_a_pending_send,
    send_to_a_reset_peer_fails_without_sigpipe,
    close_frees_the_slot_for_the_next_accept,
    withdrawn_accepts_are_cancelled,
    accepts_from_every_listener,
    stop_listening_refuses_new_clients,
    wake_ups_are_reported_once,
    ops_on_a_free_slot_fail_cleanly,
    cancels_aimed_at_another_generation_do_nothing,
    echoes_many_connections,
    wait_sleeps_until_the_timeout_or_work,
    abandon_closes_every_socket,
);

/// The direct receive, on both drivers (uses `for_each_driver!`).
mod recv_into;

/// Outbound connections, on both drivers.
mod connect;
