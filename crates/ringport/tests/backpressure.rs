//! Bounded memory under a peer that does not read: the echo server stops
//! reading it (TCP flow control then holds it back) and loses nothing; sends
//! from elsewhere follow the slow-consumer policy.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringport::{
    Bytes, CloseReason, ConnId, Event, EventServer, LengthDelimited, SendError, Server,
    SlowConsumerPolicy,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[test]
fn echo_to_a_peer_that_does_not_read_stays_bounded_and_loses_nothing() {
    const FRAME: usize = 64 * KIB;
    const FRAMES: u64 = 1700; // 106 MiB of payload each way
    let max_frame = MIB;
    let server = start_echo_with(LengthDelimited::new().max_frame_length(max_frame), |c| {
        c.shards = 1;
        // The library defaults for the buffer ring and the queue bounds.
        c.recv_buffers = 256;
        c.recv_buffer_size = 64 * KIB;
        c.send_high_water = MIB;
        c.send_queue_limit = None;
    });
    let cfg = server.config().clone();
    let limit = cfg
        .send_queue_limit
        .unwrap_or(cfg.send_high_water + max_frame);
    assert_eq!(limit, 2 * MIB);

    let s = connect(server.local_addr());
    let mut writer_sock = s.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let writer = thread::spawn(move || {
        for i in 0..FRAMES {
            if let Err(e) = write_frame(&mut writer_sock, &pattern(i, FRAME)) {
                return Err(format!("writing frame {i}: {e}"));
            }
            w.store(i + 1, Ordering::Release);
        }
        Ok(())
    });

    // Wait until the writer is held back: the server has paused reading
    // it (its send queue is over the high-water mark) and the writer's
    // socket holds bytes it cannot send (the server's receive window is
    // closed). Sample the server's queue meanwhile.
    let mut max_queue = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = server.stats();
        max_queue = max_queue.max(st.send_queue_bytes);
        let n = written.load(Ordering::Acquire);
        if st.read_pauses > 0 && unsent_bytes(&s) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "writer never blocked");
        assert!(n < FRAMES, "all {FRAMES} frames written without reading");
        thread::sleep(Duration::from_millis(2));
    }
    assert!(
        written.load(Ordering::Acquire) < FRAMES,
        "the writer is blocked before its last frame"
    );
    // Keep sampling while it is blocked.
    for _ in 0..100 {
        max_queue = max_queue.max(server.stats().send_queue_bytes);
        thread::sleep(Duration::from_millis(2));
    }
    let st = server.stats();
    eprintln!(
        "writer blocked after {} frames; max send queue {} bytes; read_pauses {}",
        written.load(Ordering::Acquire),
        max_queue,
        st.read_pauses
    );
    let bound = (limit + cfg.recv_buffer_size) as u64;
    assert!(
        max_queue <= bound,
        "send queue reached {max_queue} bytes, bound {bound}"
    );
    assert!(st.read_pauses > 0, "reading was never paused");
    assert_eq!(st.connections, 1, "the connection is still open");

    // Now read everything back, concurrently with the writer.
    let mut reader = s;
    for i in 0..FRAMES {
        let echo = read_frame(&mut reader, max_frame).unwrap_or_else(|e| {
            panic!(
                "reading echo {i}: {e} (the server closed the connection); max send queue \
                 seen {max_queue}; {:?}",
                server.stats()
            );
        });
        if echo != pattern(i, FRAME) {
            assert_bytes_eq(&echo, &pattern(i, FRAME), &format!("echo {i}"));
        }
        if i % 64 == 0 {
            max_queue = max_queue.max(server.stats().send_queue_bytes);
        }
    }
    writer.join().unwrap().unwrap();
    assert!(
        max_queue <= bound,
        "send queue reached {max_queue} bytes, bound {bound}"
    );
    let st = server.stats();
    assert_eq!(st.messages_in, FRAMES);
    assert_eq!(st.messages_out, FRAMES);
    assert_eq!(st.bytes_in, FRAMES * (FRAME as u64 + 4));
    assert_eq!(st.slow_consumers, 0);
    drop(reader);
    server.stop();
}

/// A client whose receive buffer is small, so that the server's queue for
/// it fills soon once it stops reading.
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn start_events(policy: SlowConsumerPolicy) -> EventServer {
    let mut cfg = config();
    cfg.shards = 2;
    cfg.send_high_water = 32 * KIB;
    cfg.send_queue_limit = Some(64 * KIB);
    cfg.slow_consumer = policy;
    cfg.close_timeout = Duration::from_secs(2);
    let server = Server::start_events(cfg, LengthDelimited::new()).expect("start event server");
    assert_backend(&server);
    server
}

/// Accepts `n` Connected events, matched to the clients by peer address.
fn accept_all(server: &EventServer, clients: &[&TcpStream]) -> Vec<ConnId> {
    let mut ids = vec![None; clients.len()];
    for _ in 0..clients.len() {
        match server.next_event(IO_TIMEOUT) {
            Some(Event::Connected { conn, peer }) => {
                let k = clients
                    .iter()
                    .position(|c| c.local_addr().unwrap() == peer)
                    .expect("known peer");
                ids[k] = Some(conn);
            }
            other => panic!("expected Connected, got {other:?}"),
        }
    }
    ids.into_iter().map(Option::unwrap).collect()
}

/// Message `seq`: its sequence number then filler.
fn numbered(seq: u64, len: usize) -> Bytes {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend(pattern(seq, len - 8));
    Bytes::from(v)
}

/// A reader thread for the fast client: reads frames until told how many
/// to expect and it has them all; counts them in `got`.
fn fast_reader(
    mut s: TcpStream,
    got: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        loop {
            let want = total.load(Ordering::Acquire);
            if want != usize::MAX && got.load(Ordering::Acquire) == want {
                return s;
            }
            let f = read_frame(&mut s, MIB).expect("fast client reads");
            let seq = u64::from_be_bytes(f[..8].try_into().unwrap());
            assert_eq!(f, numbered(seq, f.len()), "intact message");
            got.fetch_add(1, Ordering::AcqRel);
        }
    })
}

#[test]
fn slow_consumer_is_disconnected_and_others_are_unaffected() {
    let server = start_events(SlowConsumerPolicy::Disconnect);
    let addr = server.local_addr();
    let slow = connect_small_rcvbuf(addr);
    let fast = connect(addr);
    let ids = accept_all(&server, &[&slow, &fast]);
    let (slow_id, fast_id) = (ids[0], ids[1]);

    let got = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(usize::MAX));
    let reader = fast_reader(fast, got.clone(), total.clone());

    // Broadcast 16 KiB messages, paced by the fast reader, until the slow
    // client is cut off (bounded: 256 MiB).
    let mut sent = 0usize;
    let mut slow_closed = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_closed.is_none() {
        assert!(sent < 16 * 1024, "slow client never disconnected");
        assert!(Instant::now() < deadline, "timed out broadcasting");
        while sent - got.load(Ordering::Acquire) > 2 {
            assert!(!reader.is_finished(), "fast reader died");
            assert!(Instant::now() < deadline, "fast reader stalled");
            thread::yield_now();
        }
        match server.broadcast(numbered(sent as u64, 16 * KIB)) {
            Ok(()) => sent += 1,
            Err(SendError::Busy) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("broadcast: {e}"),
        }
        while let Some(ev) = server.try_next_event() {
            match ev {
                Event::Closed { conn, reason } => {
                    assert_eq!(conn, slow_id, "only the slow client is closed");
                    slow_closed = Some(reason);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(slow_closed, Some(CloseReason::SlowConsumer));
    assert_eq!(server.send(slow_id, &b"late"[..]), Err(SendError::Closed));
    assert!(server.stats().slow_consumers >= 1);

    // The fast client got every broadcast and is still served.
    for _ in 0..10 {
        loop {
            match server.broadcast(numbered(sent as u64, 100)) {
                Ok(()) => break,
                Err(SendError::Busy) => thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("broadcast: {e}"),
            }
        }
        sent += 1;
    }
    // Announce the total before the last message, so the reader never
    // blocks waiting for a message that is not coming.
    total.store(sent + 1, Ordering::Release);
    server.send(fast_id, numbered(sent as u64, 64)).unwrap();
    sent += 1;
    let fast = reader.join().unwrap();
    assert_eq!(got.load(Ordering::Acquire), sent);
    assert_eq!(server.stats().connections, 1);
    assert!(
        server.next_event(Duration::from_millis(200)).is_none(),
        "fast client not closed"
    );
    eprintln!("slow consumer cut off after {sent} broadcasts");
    drop(fast);
    drop(slow);
    server.stop();
}

#[test]
fn drop_message_policy_keeps_the_slow_consumer_open() {
    let server = start_events(SlowConsumerPolicy::DropMessage);
    let addr = server.local_addr();
    let mut slow = connect_small_rcvbuf(addr);
    let ids = accept_all(&server, &[&slow]);
    let slow_id = ids[0];

    // Send until the server reports dropped messages (bounded: 256 MiB).
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats().slow_consumers == 0 {
        assert!(sent < 16 * 1024, "no message was ever dropped");
        assert!(Instant::now() < deadline, "timed out sending");
        match server.send(slow_id, numbered(sent, 16 * KIB)) {
            Ok(()) => sent += 1,
            Err(SendError::Busy) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
        if sent % 64 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    // Keep going a little: more drops, still open.
    for _ in 0..200 {
        match server.send(slow_id, numbered(sent, 16 * KIB)) {
            Ok(()) => sent += 1,
            Err(SendError::Busy) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
    }
    let st = server.stats();
    assert!(st.slow_consumers > 0);
    assert_eq!(st.connections, 1);
    assert!(
        server.next_event(Duration::from_millis(200)).is_none(),
        "no Closed event under DropMessage"
    );

    // Now read: the messages that were queued arrive intact and in
    // increasing order, with gaps. Every message sent is either queued
    // (and read here) or counted as dropped, so reading goes on until the
    // two add up to what was sent (a lost message makes a read time out).
    let mut last = None;
    let mut received = 0u64;
    while received + server.stats().slow_consumers < sent {
        let f = read_frame(&mut slow, MIB).unwrap_or_else(|e| {
            panic!(
                "slow client reads: {e} (sent {sent}, received {received}, {:?})",
                server.stats()
            )
        });
        let seq = u64::from_be_bytes(f[..8].try_into().unwrap());
        assert_eq!(f, numbered(seq, f.len()), "intact message {seq}");
        if let Some(prev) = last {
            assert!(seq > prev, "order: {seq} after {prev}");
        }
        last = Some(seq);
        received += 1;
    }
    let dropped = server.stats().slow_consumers;
    eprintln!("DropMessage: sent {sent}, received {received}, dropped {dropped}");
    assert!(received > 0);
    assert_eq!(
        received + dropped,
        sent,
        "every message either sent or counted as dropped"
    );
    assert_eq!(server.stats().connections, 1);
    let marker = sent;
    // Still usable both ways; the marker is the next frame, so nothing
    // beyond the count above was delivered.
    server.send(slow_id, numbered(marker + 1, 8)).unwrap();
    let f = read_frame(&mut slow, MIB).unwrap();
    assert_eq!(f, numbered(marker + 1, 8));
    drop(slow);
    server.stop();
}
