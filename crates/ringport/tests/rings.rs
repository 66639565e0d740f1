//! A shard's table spread over several io_uring rings: one ring's direct
//! table is capped by the kernel at the open-files limit, so a shard that
//! holds more connections adds rings as they fill. Here the rings are made
//! tiny (`connections_per_ring`) so a few hundred connections need several
//! of them; on epoll the setting does not apply and the same tests check
//! that it changes nothing.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ringport::{ConnId, Context, Handler, LengthDelimited, Server, ServerConfig};

const PER_RING: usize = 32;

#[test]
fn one_shard_holds_connections_on_several_rings_and_reuses_their_slots() {
    let server = start_echo(|c| {
        c.shards = 1;
        c.connections_per_shard = Some(320);
        c.connections_per_ring = Some(PER_RING);
    });
    let addr = server.local_addr();
    // 250 connections: eight rings' worth (the last partly used).
    let mut clients: Vec<TcpStream> = (0..250).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let payload = pattern(i as u64, 100 + i);
        assert_bytes_eq(&round_trip(c, &payload), &payload, "echo");
    }
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 250));
    // Close every other one (slots in every ring free up), then fill
    // again: new connections take the freed entries in whatever ring.
    let kept: Vec<TcpStream> = clients
        .drain(..)
        .enumerate()
        .filter_map(|(i, c)| (i % 2 == 0).then_some(c))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().connections
            == 125),
        "closes seen: {:?}",
        server.stats()
    );
    let mut all: Vec<TcpStream> = kept;
    all.extend((0..190).map(|_| connect(addr)));
    for (i, c) in all.iter_mut().enumerate() {
        let payload = pattern(1_000 + i as u64, 3 + i * 7);
        assert_bytes_eq(&round_trip(c, &payload), &payload, "echo after reuse");
    }
    let stats = server.stats();
    assert_eq!(stats.connections, 315);
    assert_eq!(stats.accepted, 440);
    drop(all);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 0));
    server.stop();
}

/// Counts replies to the one frame each outbound connection sends.
struct Pinger {
    replies: Arc<AtomicUsize>,
}

impl Handler for Pinger {
    type ConnState = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, _peer: SocketAddr) {
        ctx.send(conn, b"ping").expect("send on a new connection");
    }

    fn on_message(&mut self, _ctx: &mut Context<'_>, _conn: ConnId, _: &mut (), msg: &[u8]) {
        assert_eq!(msg, b"ping");
        self.replies.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn outbound_connections_spread_over_several_rings() {
    let server = start_echo(|c| c.connections_per_shard = Some(512));
    let replies = Arc::new(AtomicUsize::new(0));
    let counted = replies.clone();
    let client = Server::start(
        {
            let mut config = ServerConfig::default();
            config.listen = false;
            config.shards = 1;
            config.connections_per_shard = Some(200);
            config.connections_per_ring = Some(PER_RING);
            config.recv_buffers = 64;
            config
        },
        LengthDelimited::new(),
        move |_| Pinger {
            replies: counted.clone(),
        },
    )
    .expect("start client engine");
    for _ in 0..180 {
        client
            .connect(server.local_addr(), None)
            .expect("queue connect");
    }
    assert!(
        wait_until(Duration::from_secs(20), || replies.load(Ordering::SeqCst)
            == 180),
        "replies: {}, client {:?}",
        replies.load(Ordering::SeqCst),
        client.stats()
    );
    assert_eq!(client.stats().connected, 180);
    client.stop();
    server.stop();
}

#[test]
fn a_ring_larger_than_the_kernel_allows_is_refused_with_the_reason() {
    let limit = ringport::server::max_connections_per_ring().expect("limit");
    let e = Server::start(
        {
            let mut config = config();
            config.connections_per_ring = Some(limit + 1);
            config
        },
        LengthDelimited::new(),
        |_| ringport::handlers::Echo,
    );
    match (expected_backend(), e) {
        // epoll has no rings: the setting is not looked at.
        (ringport::Backend::Epoll, Ok(server)) => {
            assert_backend(&server);
            server.stop();
        }
        (ringport::Backend::Epoll, Err(e)) => panic!("epoll refused a ring setting: {e}"),
        (_, Ok(_)) => panic!("a ring over the open-files limit was accepted"),
        (_, Err(e)) => assert!(e.to_string().contains("open-files limit"), "{e}"),
    }
}

/// SO_REUSEPORT does not spread clients evenly over the shards, so by
/// default every shard's table may grow to the whole limit: all `LIMIT`
/// clients are served whatever the split (with tables of limit / shards,
/// the fuller shard left some of them waiting unserved).
#[test]
fn by_default_any_shard_may_hold_the_whole_limit() {
    const LIMIT: usize = 40;
    let server = start_echo(|c| {
        c.connections_per_shard = None;
        c.max_connections = LIMIT;
    });
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..LIMIT).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let payload = pattern(i as u64, 32);
        assert_bytes_eq(&round_trip(c, &payload), &payload, "every client served");
    }
    let per_shard: Vec<u64> = server.shard_stats().iter().map(|s| s.connections).collect();
    assert_eq!(per_shard.iter().sum::<u64>(), LIMIT as u64, "{per_shard:?}");
    server.stop();
}

/// The shard thread sleeps on its first ring; a message for a connection
/// on another ring must wake it (the other rings signal an eventfd only
/// while it sleeps). The tick is made far longer than the test, so a
/// wake-up that was lost would leave the echo unanswered until the read
/// timeout fails the test, not until a tick rescued it.
#[test]
fn a_sleeping_shard_wakes_for_a_message_on_any_of_its_rings() {
    let server = start_echo(|c| {
        c.shards = 1;
        c.connections_per_shard = Some(4 * PER_RING);
        c.connections_per_ring = Some(PER_RING);
        c.tick = Duration::from_secs(600);
    });
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..4 * PER_RING).map(|_| connect(addr)).collect();
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    // One at a time, so the shard is idle (asleep) before each message;
    // from the last ring back to the first.
    for round in 0..3u64 {
        for (i, c) in clients.iter_mut().enumerate().rev() {
            std::thread::sleep(Duration::from_millis(1));
            let payload = pattern(round * 1_000 + i as u64, 16 + i);
            assert_bytes_eq(&round_trip(c, &payload), &payload, "echo after sleep");
        }
    }
    drop(clients);
    server.stop();
}
