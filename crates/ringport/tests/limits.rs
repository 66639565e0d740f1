//! Bounds at their limit: the global connection limit pauses accepting
//! (no spin, no refusal), and accepting resumes when a connection closes;
//! outbound connects past the limit fail with a clear error.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringport::{ConnId, Context, Handler, LengthDelimited, Server};

#[test]
fn connection_limit_pauses_accepting_until_a_connection_closes() {
    let server = start_echo(|c| {
        c.shards = 2;
        c.max_connections = 3;
    });
    let addr = server.local_addr();
    let mut held: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(
            round_trip(s, &pattern(i as u64, 100)),
            pattern(i as u64, 100)
        );
    }
    assert_eq!(server.stats().connections, 3);

    // The fourth completes the TCP handshake (the kernel's backlog) but is
    // not served while three are open.
    let mut fourth = connect(addr);
    write_frame(&mut fourth, b"waiting").unwrap();
    expect_silence(&mut fourth, Duration::from_millis(500));
    assert_eq!(server.stats().connections, 3);
    assert_eq!(server.stats().accept_errors, 0, "the limit is not an error");

    // One leaves: the waiting client is accepted and answered.
    drop(held.pop());
    assert_eq!(read_frame(&mut fourth, 1 << 20).unwrap(), b"waiting");
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .connections
        == 3));
    server.stop();
}

/// Many clients over the limit, places freed in a burst and then one by
/// one: exactly as many waiting clients get in as places free, and none is
/// cut (the default `LimitPolicy::Wait`). Before, accepts re-posted at the
/// first free place let in more clients than there were places and closed
/// the surplus (with 1,000 allowed and 1,508 clients, 72 of the 507 waiting
/// were closed).
#[test]
fn waiting_clients_are_admitted_as_places_free_and_none_is_cut() {
    const LIMIT: usize = 20;
    const WAITING: usize = 30;
    let server = start_echo(|c| {
        c.shards = 2;
        c.max_connections = LIMIT;
        c.accepts_in_flight = 8;
    });
    let addr = server.local_addr();
    // What keeps a connection open: a client stream, or the sender that a
    // waiting client's reader thread holds its stream for.
    enum Open {
        Stream(#[allow(dead_code)] std::net::TcpStream),
        Thread(#[allow(dead_code)] mpsc::Sender<()>),
    }
    let mut open: std::collections::VecDeque<Open> = (0..LIMIT)
        .map(|_| {
            let mut s = connect(addr);
            assert_eq!(round_trip(&mut s, b"in"), b"in");
            Open::Stream(s)
        })
        .collect();
    let (answered_tx, answered) = mpsc::channel();
    let (left_tx, left) = mpsc::channel();
    let mut leave = std::collections::HashMap::new();
    for i in 0..WAITING {
        let mut s = connect(addr);
        let message = format!("waiting {i}");
        write_frame(&mut s, message.as_bytes()).unwrap();
        let (leave_tx, leave_rx) = mpsc::channel::<()>();
        leave.insert(i, leave_tx);
        let tx = answered_tx.clone();
        let left_tx = left_tx.clone();
        std::thread::spawn(move || match read_frame(&mut s, 1 << 20) {
            Ok(echo) if echo == message.as_bytes() => {
                let _ = tx.send(Ok(i));
                // Stay connected until told to leave (the sender dropped),
                // then check the connection is still served: a cut after
                // the echo fails here.
                let _ = leave_rx.recv();
                let last = format!("leaving {i}");
                let served = write_frame(&mut s, last.as_bytes())
                    .and_then(|()| read_frame(&mut s, 1 << 20))
                    .map_err(|e| format!("waiting client {i} was cut: {e}"))
                    .and_then(|echo| {
                        (echo == last.as_bytes())
                            .then_some(i)
                            .ok_or(format!("waiting client {i}: wrong echo"))
                    });
                let _ = left_tx.send(served);
            }
            other => {
                let _ = tx.send(Err(format!("waiting client {i}: {other:?}")));
            }
        });
    }
    let mut admitted = 0;
    let mut burst = 10;
    while admitted < WAITING {
        for _ in 0..burst {
            drop(open.pop_front());
        }
        for _ in 0..burst.min(WAITING - admitted) {
            match answered.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(i)) => open.push_back(Open::Thread(leave.remove(&i).unwrap())),
                Ok(Err(why)) => panic!("{why}"),
                Err(_) => panic!("a place freed but no waiting client got in"),
            }
            admitted += 1;
        }
        assert!(
            answered.recv_timeout(Duration::from_millis(100)).is_err(),
            "more clients admitted than places freed"
        );
        burst = 1;
    }
    // Every admitted client, told to leave, was still served.
    drop(open);
    drop(left_tx);
    let mut still_served: Vec<usize> = left
        .iter()
        .map(|r| r.unwrap_or_else(|why| panic!("{why}")))
        .collect();
    still_served.sort_unstable();
    assert_eq!(still_served, (0..WAITING).collect::<Vec<_>>());
    let stats = server.stop();
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.accepted, (LIMIT + WAITING) as u64);
}

struct Outcome(mpsc::Sender<Result<(), String>>);

impl Handler for Outcome {
    type ConnState = ();
    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: std::net::SocketAddr) {
        let _ = self.0.send(Ok(()));
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), _: &[u8]) {}
    fn on_connect_failed(
        &mut self,
        _: &mut Context<'_>,
        _: std::net::SocketAddr,
        error: std::io::Error,
    ) {
        let _ = self.0.send(Err(error.to_string()));
    }
}

#[test]
fn outbound_connects_past_the_limit_fail_with_a_reason() {
    let server = start_echo(|_| {});
    let (tx, rx) = mpsc::channel();
    let mut client_config = config();
    client_config.listen = false;
    client_config.shards = 1;
    client_config.max_connections = 2;
    let client = Server::start(client_config, LengthDelimited::new(), move |_| {
        Outcome(tx.clone())
    })
    .unwrap();
    for _ in 0..3 {
        client.connect(server.local_addr(), None).unwrap();
    }
    let outcomes: Vec<_> = (0..3)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("an outcome")
        })
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2);
    let failure = outcomes.iter().find_map(|o| o.clone().err()).unwrap();
    assert!(failure.contains("connection limit"), "{failure}");

    // A refused connect reports the kernel's error.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (tx2, rx2) = mpsc::channel();
    let mut c2 = config();
    c2.listen = false;
    c2.shards = 1;
    let client2 = Server::start(c2, LengthDelimited::new(), move |_| Outcome(tx2.clone())).unwrap();
    assert_backend(&client2);
    client2.connect(closed_port, None).unwrap();
    let refused = rx2
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_err();
    assert!(refused.to_lowercase().contains("refused"), "{refused}");
    assert_eq!(client2.stop().connections, 0);
    client.stop();
    server.stop();
}

/// Blocks in `on_message` until the test releases it, holding its shard,
/// so the shard's command queue cannot drain while the test fills it.
struct Stall(
    mpsc::Sender<(ConnId, bool)>,
    crossbeam_channel::Receiver<()>,
);

impl Handler for Stall {
    type ConnState = ();
    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: std::net::SocketAddr) {
        let _ = self.0.send((conn, false));
    }
    fn on_message(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mut (), _: &[u8]) {
        let _ = self.0.send((conn, true));
        self.1
            .recv_timeout(IO_TIMEOUT)
            .expect("the test releases the shard");
    }
}

#[test]
fn a_full_command_queue_refuses_with_busy_and_recovers() {
    let (tx, rx) = mpsc::channel();
    let (release, released) = crossbeam_channel::unbounded();
    let mut cfg = config();
    cfg.shards = 1;
    cfg.command_queue = 2;
    let server = Server::start(cfg, LengthDelimited::new(), move |_| {
        Stall(tx.clone(), released.clone())
    })
    .unwrap();
    let mut client = connect(server.local_addr());
    let (conn, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    write_frame(&mut client, b"hold the shard").unwrap();
    // The shard is now inside on_message, not draining its commands.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        (conn, true)
    );
    assert_eq!(server.send(conn, &b"one"[..]), Ok(()));
    assert_eq!(server.send(conn, &b"two"[..]), Ok(()));
    assert_eq!(
        server.send(conn, &b"three"[..]),
        Err(ringport::SendError::Busy)
    );
    assert_eq!(
        server.send(conn, &b"three"[..]),
        Err(ringport::SendError::Busy),
        "still full: the shard is held until released"
    );
    release.send(()).unwrap();
    // Once the shard runs again, the two queued messages arrive in order.
    assert_eq!(read_frame(&mut client, 64).unwrap(), b"one");
    assert_eq!(read_frame(&mut client, 64).unwrap(), b"two");
    assert_eq!(server.send(conn, &b"four"[..]), Ok(()));
    assert_eq!(read_frame(&mut client, 64).unwrap(), b"four");
    server.stop();
}

/// A connect from a source address this machine does not have fails at
/// the bind step: the handler hears of it (it used to hear nothing, and
/// `stop` then waited forever), and `stop` finishes within its timeout.
#[test]
fn a_connect_from_an_unbindable_source_is_reported_and_stop_finishes() {
    let server = start_echo(|_| {});
    let (tx, rx) = mpsc::channel();
    let mut c = config();
    c.listen = false;
    c.shards = 1;
    c.stop_timeout = Duration::from_secs(2);
    let client = Server::start(c, LengthDelimited::new(), move |_| Outcome(tx.clone())).unwrap();
    let unbindable: std::net::SocketAddr = "10.255.255.1:0".parse().unwrap();
    client
        .connect(server.local_addr(), Some(unbindable))
        .unwrap();
    let outcome = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the failure is reported");
    let error = outcome.expect_err("the connect cannot succeed");
    assert!(error.contains("Cannot assign requested address"), "{error}");
    let started = std::time::Instant::now();
    let stats = client.stop();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(stats.connections, 0);
    server.stop();
}

/// A source port chosen by the caller is bound as it is (a load generator
/// assigns ports itself so the kernel never searches a nearly full
/// ephemeral range), and a port already taken fails the connect with
/// `EADDRINUSE`.
#[test]
fn a_connect_from_a_chosen_source_port_uses_that_port() {
    let server = start_echo(|_| {});
    let (tx, rx) = mpsc::channel();
    let mut c = config();
    c.listen = false;
    c.shards = 1;
    let client = Server::start(c, LengthDelimited::new(), move |_| Outcome(tx.clone())).unwrap();
    // A port that is free now, and one that stays taken.
    let port = std::net::TcpListener::bind("127.0.0.3:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let taken = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let source: std::net::SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, 3), port).into();
    client.connect(server.local_addr(), Some(source)).unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the connect is reported")
        .expect("the connect from a free port succeeds");
    // The connect completes at the handshake, which can be before the
    // server has accepted: look again until it shows (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = server.connections(Duration::from_secs(5));
        let peers: Vec<_> = snapshot.connections.iter().map(|c| c.peer).collect();
        if peers.contains(&source) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server sees the chosen source {source}: {peers:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    client
        .connect(server.local_addr(), Some(taken.local_addr().unwrap()))
        .unwrap();
    let error = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the failure is reported")
        .expect_err("a port in use cannot be bound");
    assert!(error.contains("Address already in use"), "{error}");
    client.stop();
    server.stop();
}
