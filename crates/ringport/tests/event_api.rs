//! The pull-style event API: event sequences, idle timeouts, replying,
//! broadcasting and closing from the consumer thread.

mod common;

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringport::{CloseReason, Event, EventServer, LengthDelimited, SendError, Server};

fn start(tweak: impl FnOnce(&mut ringport::ServerConfig)) -> EventServer {
    let mut cfg = config();
    tweak(&mut cfg);
    let server = Server::start_events(cfg, LengthDelimited::new()).expect("start event server");
    assert_backend(&server);
    server
}

#[test]
fn connected_message_closed_sequence() {
    let server = start(|_| {});
    let mut c = connect(server.local_addr());
    let conn = expect_connected(&server, &c);
    assert!(conn.shard() < 2);

    let big = pattern(9, 200_000);
    write_frame(&mut c, b"one").unwrap();
    write_frame(&mut c, b"").unwrap();
    write_frame(&mut c, &big).unwrap();
    for want in [&b"one"[..], b"", &big] {
        match next(&server) {
            Event::Message { conn: from, bytes } => {
                assert_eq!(from, conn);
                assert_bytes_eq(&bytes, want, "message");
            }
            other => panic!("expected Message, got {other:?}"),
        }
    }
    c.shutdown(Shutdown::Write).unwrap();
    match next(&server) {
        Event::Closed {
            conn: closed,
            reason,
        } => {
            assert_eq!(closed, conn);
            assert_eq!(reason, CloseReason::PeerClosed);
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(expect_eof(&mut c, IO_TIMEOUT).is_empty());
    assert_eq!(server.send(conn, &b"gone"[..]), Err(SendError::Closed));
    assert!(server.next_event(Duration::from_millis(100)).is_none());
    server.stop();
}

#[test]
fn reset_and_oversized_frames_are_reported_with_their_reason() {
    let server = Server::start_events(config(), LengthDelimited::new().max_frame_length(1000))
        .expect("start event server");
    let mut c = connect(server.local_addr());
    let conn = expect_connected(&server, &c);
    use std::io::Write;
    c.write_all(&header(1001)).unwrap();
    match next(&server) {
        Event::Closed {
            conn: closed,
            reason,
        } => {
            assert_eq!(closed, conn);
            assert_eq!(
                reason,
                CloseReason::FrameTooLarge {
                    len: 1001,
                    max: 1000
                }
            );
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    expect_eof(&mut c, IO_TIMEOUT);

    let mut c = connect(server.local_addr());
    let conn = expect_connected(&server, &c);
    c.write_all(&header(500)).unwrap();
    reset(c);
    match next(&server) {
        Event::Closed {
            conn: closed,
            reason,
        } => {
            assert_eq!(closed, conn);
            assert_eq!(reason, CloseReason::Reset(libc::ECONNRESET));
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    server.stop();
}

#[test]
fn next_event_times_out_when_idle() {
    let server = start(|_| {});
    for wait in [Duration::from_millis(50), Duration::from_millis(250)] {
        let t = Instant::now();
        assert!(server.next_event(wait).is_none());
        let took = t.elapsed();
        assert!(took >= wait, "returned after {took:?}, before {wait:?}");
        assert!(took < wait + Duration::from_secs(2), "took {took:?}");
    }
    assert!(server.try_next_event().is_none());
    server.stop();
}

#[test]
fn echo_from_the_consumer_thread() {
    const CLIENTS: usize = 8;
    const MESSAGES: usize = 50;
    let server = start(|_| {});
    let addr = server.local_addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for i in 0..MESSAGES {
                    // Small, chunk-sized and shared-by-reference payloads.
                    let len = [0, 100, 5000, 300_000][i % 4];
                    let p = pattern((k * 1000 + i) as u64, len);
                    let echo = round_trip(&mut s, &p);
                    assert_bytes_eq(&echo, &p, &format!("client {k} message {i}"));
                }
                s.shutdown(Shutdown::Write).unwrap();
                assert!(expect_eof(&mut s, IO_TIMEOUT).is_empty());
            })
        })
        .collect();
    let mut open = 0;
    let mut closed = 0;
    let mut messages = 0;
    while closed < CLIENTS {
        match next(&server) {
            Event::Connected { .. } => open += 1,
            Event::Message { conn, bytes } => {
                server.send(conn, bytes).expect("echo");
                messages += 1;
            }
            Event::Closed { reason, .. } => {
                assert_eq!(reason, CloseReason::PeerClosed);
                closed += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(open, CLIENTS);
    assert_eq!(messages, CLIENTS * MESSAGES);
    let st = server.stats();
    assert_eq!(st.messages_in, (CLIENTS * MESSAGES) as u64);
    assert_eq!(st.messages_out, (CLIENTS * MESSAGES) as u64);
    server.stop();
}

#[test]
fn broadcast_from_the_consumer_reaches_every_client() {
    const CLIENTS: usize = 10;
    let server = start(|_| {});
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let mut ids = HashMap::new();
    for _ in 0..CLIENTS {
        match next(&server) {
            Event::Connected { conn, peer } => {
                ids.insert(peer, conn);
            }
            other => panic!("expected Connected, got {other:?}"),
        }
    }
    for c in &clients {
        assert!(ids.contains_key(&c.local_addr().unwrap()));
    }
    let big = pattern(77, 100_000);
    server.broadcast(&b"hello all"[..]).unwrap();
    server.broadcast(big.clone()).unwrap();
    for c in &mut clients {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"hello all");
        assert_bytes_eq(&read_frame(c, 1 << 20).unwrap(), &big, "big broadcast");
    }
    // Too large for the codec: refused up front.
    let too_big = vec![0u8; 16 * 1024 * 1024 + 1];
    assert_eq!(server.broadcast(too_big), Err(SendError::TooLarge));
    // Nothing of it went out: the next frame is the next broadcast.
    server.broadcast(&b"after"[..]).unwrap();
    for c in &mut clients {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"after");
    }
    drop(clients);
    server.stop();
}

#[test]
fn close_from_the_consumer_flushes_then_closes() {
    let server = start(|_| {});
    let mut c = connect(server.local_addr());
    let conn = expect_connected(&server, &c);
    let big = pattern(5, 3 * 1024 * 1024);
    server.send(conn, &b"first"[..]).unwrap();
    server.send(conn, big.clone()).unwrap();
    server.close(conn).unwrap();
    // Queued before the close: all delivered, then EOF.
    assert_eq!(read_frame(&mut c, 1 << 20).unwrap(), b"first");
    assert_bytes_eq(&read_frame(&mut c, 4 << 20).unwrap(), &big, "queued data");
    assert!(expect_eof(&mut c, IO_TIMEOUT).is_empty());
    match next(&server) {
        Event::Closed {
            conn: closed,
            reason,
        } => {
            assert_eq!(closed, conn);
            assert_eq!(reason, CloseReason::Local);
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(server.send(conn, &b"late"[..]), Err(SendError::Closed));
    assert_eq!(server.close(conn), Err(SendError::Closed));
    server.stop();
}

/// Fills the event queue (nobody pulls events, so the shards wait on it),
/// then ends the server with `finish` on another thread: it must return
/// and every client must see EOF.
fn end_with_a_full_event_queue(finish: fn(EventServer), hung: &str) {
    let server = start(|c| {
        c.event_queue = 1;
        c.stop_timeout = Duration::from_secs(2);
    });
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    for c in &mut clients {
        for i in 0..20u8 {
            write_frame(c, &[i; 100]).unwrap();
        }
    }
    // The queue is full (its one place taken) while 200 messages and 10
    // connects are still to be forwarded: the shards wait on it.
    assert!(
        wait_until(IO_TIMEOUT, || server.pending_events() == 1),
        "the event queue never filled"
    );
    assert!(server.stats().messages_in < 200, "{:?}", server.stats());
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let t = Instant::now();
        finish(server);
        let _ = tx.send(t.elapsed());
    });
    // Bounded: a hang fails here instead of blocking the suite.
    let took = rx.recv_timeout(Duration::from_secs(10)).expect(hung);
    eprintln!("ended with a full event queue in {took:?}");
    for c in &mut clients {
        expect_eof(c, IO_TIMEOUT);
    }
}

#[test]
fn stop_with_a_full_event_queue_returns() {
    end_with_a_full_event_queue(
        |server| {
            server.stop();
        },
        "EventServer::stop hung with a full event queue",
    );
}

/// Dropping an `EventServer` (e.g. while unwinding from a panic in the
/// consumer) must stop it like `stop` does, even when the consumer had
/// fallen behind and the event queue is full.
#[test]
fn dropping_an_event_server_with_a_full_event_queue_returns() {
    end_with_a_full_event_queue(
        drop,
        "dropping an EventServer hung: its shards wait forever on the full event queue",
    );
}
