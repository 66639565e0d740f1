//! Admission control on both backends (run once per backend by
//! scripts/test.sh), with real sockets on loopback: the per-source
//! connection limit (one address holding its limit while others connect
//! and are served; IPv6 on ::1), the accept filter, the message rate limit
//! in chat mode (a flooder paused or closed while 100 other clients keep
//! their rate), and a TLS handshake flood of half-open connections while
//! established TLS clients are served.

mod common;
mod tls_util;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringport::limits::{AcceptFilter, MessageRateLimit, RateLimitPolicy};
use ringport::{Client, LengthDelimited, Server, handlers::Chat};
use tls_util::Pki;

/// A client connected from `source` (a loopback address of its own: the
/// socket is bound before it connects).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().unwrap();
    let domain = if source.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source, 0).into()).unwrap();
    s.connect(&addr.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// The server closed `s` without a byte: EOF or a reset, within 5 s.
#[track_caller]
fn assert_closed_unread(s: &mut TcpStream) {
    // A frame the server must not read.
    let _ = write_frame(s, b"never read");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("a refused client was answered with {n} bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "expected a close, got {e}"
        ),
    }
}

#[test]
fn one_address_holds_its_limit_while_others_connect_and_are_served() {
    const PER_IP: usize = 5;
    // The global limit leaves one place beyond the flooder's share: a
    // refused client of the flooder must not take it (nor wait for it).
    let server = start_echo(|c| {
        c.shards = 2;
        c.max_connections = PER_IP + 1;
        c.max_connections_per_ip = Some(PER_IP as u32);
    });
    let addr = server.local_addr();
    let mut held: Vec<TcpStream> = (0..PER_IP)
        .map(|i| {
            let mut s = connect_from("127.0.0.2", addr);
            assert_eq!(
                round_trip(&mut s, &pattern(i as u64, 50)),
                pattern(i as u64, 50)
            );
            s
        })
        .collect();
    // Over its limit: closed unread, several times over.
    for _ in 0..10 {
        assert_closed_unread(&mut connect_from("127.0.0.2", addr));
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .rejected_per_ip
        == 10));
    assert_eq!(server.stats().waiting, 0, "a refused client never waits");
    // Another address gets the last place and is served at once.
    let mut other = connect_from("127.0.0.3", addr);
    assert_eq!(round_trip(&mut other, b"served"), b"served");
    // One of the flooder's leaves: it may open one again, and only one.
    drop(held.pop());
    drop(other);
    let mut again = None;
    assert!(wait_until(Duration::from_secs(5), || {
        let mut s = connect_from("127.0.0.2", addr);
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let ok = write_frame(&mut s, b"back").is_ok()
            && read_frame(&mut s, 64).is_ok_and(|m| m == b"back");
        if ok {
            again = Some(s);
        }
        ok
    }));
    assert_closed_unread(&mut connect_from("127.0.0.2", addr));
    assert_eq!(server.stats().connections, PER_IP as u64);
    drop(held);
    drop(again);
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .connections
        == 0));
    server.stop();
}

#[test]
fn ipv6_peers_are_counted_by_their_prefix_on_loopback() {
    let mut cfg = config();
    cfg.addr = "[::1]:0".parse().unwrap();
    cfg.shards = 2;
    cfg.max_connections_per_ip = Some(2);
    cfg.ipv6_prefix = 64;
    let server = match Server::start(cfg, LengthDelimited::new(), |_| ringport::handlers::Echo) {
        Ok(s) => s,
        Err(e) if opted_out("ipv6") => {
            eprintln!("no IPv6 loopback ({e}); opted out");
            return;
        }
        Err(e) => panic!("IPv6 loopback: {e} (set RINGPORT_SKIP=ipv6 on a host without it)"),
    };
    assert_backend(&server);
    let addr = server.local_addr();
    let mut a = connect_from("::1", addr);
    let mut b = connect_from("::1", addr);
    assert_eq!(round_trip(&mut a, b"a"), b"a");
    assert_eq!(round_trip(&mut b, b"b"), b"b");
    assert_closed_unread(&mut connect_from("::1", addr));
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .rejected_per_ip
        == 1));
    drop(a);
    assert!(wait_until(Duration::from_secs(5), || {
        let mut c = connect_from("::1", addr);
        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
        write_frame(&mut c, b"c").is_ok() && read_frame(&mut c, 8).is_ok_and(|m| m == b"c")
    }));
    server.stop();
}

#[test]
fn the_accept_filter_refuses_before_reading_and_counts() {
    let seen_local = Arc::new(AtomicU64::new(0));
    let seen = seen_local.clone();
    let server = start_echo(|c| {
        c.shards = 2;
        c.accept_filter = Some(AcceptFilter::new(move |peer, local| {
            seen.store(u64::from(local.port()), Ordering::Relaxed);
            peer.ip() != "127.0.0.2".parse::<IpAddr>().unwrap()
        }));
    });
    let addr = server.local_addr();
    for _ in 0..3 {
        assert_closed_unread(&mut connect_from("127.0.0.2", addr));
    }
    let mut ok = connect_from("127.0.0.3", addr);
    assert_eq!(round_trip(&mut ok, b"allowed"), b"allowed");
    assert_eq!(seen_local.load(Ordering::Relaxed), u64::from(addr.port()));
    let stats = server.stats();
    assert_eq!(stats.refused_by_filter, 3);
    assert_eq!(stats.accepted, 1);
    server.stop();
}

/// Chat: 100 clients send 10 messages each at 20/s while one floods as
/// fast as it can. Every client receives all 1,000 messages of the 100,
/// and the flooder's share of what is delivered stays within its budget.
fn flood_chat(policy: RateLimitPolicy) {
    const CLIENTS: usize = 100;
    const EACH: u32 = 10;
    const RATE: u32 = 50;
    let mut cfg = config();
    cfg.shards = 2;
    cfg.max_message_rate = Some(MessageRateLimit {
        per_second: RATE,
        burst: RATE,
        policy,
    });
    let server = Server::start(cfg, LengthDelimited::new(), |_| Chat).expect("start chat");
    assert_backend(&server);
    let addr = server.local_addr();
    let flooder = connect(addr);
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == CLIENTS as u64 + 1));

    // The flooder reads everything (it is not a slow consumer) and sends
    // frames of its own id (0xFFFF) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let mut flood_reader = flooder.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while flood_reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let flood = {
        let (stop, sent) = (stop.clone(), flood_sent.clone());
        let mut w = flooder.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        thread::spawn(move || {
            let burst: Vec<u8> = (0..64).flat_map(|_| frame(&[0xFF, 0xFF, 0, 0])).collect();
            while !stop.load(Ordering::Relaxed) {
                match w.write_all(&burst) {
                    Ok(()) => {
                        sent.fetch_add(64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        })
    };

    let started = Instant::now();
    let go = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, s)| {
            let go = go.clone();
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = s;
                r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let writer = thread::spawn(move || {
                    go.wait();
                    for seq in 0..EACH {
                        let mut m = (id as u16).to_be_bytes().to_vec();
                        m.extend_from_slice(&(seq as u16).to_be_bytes());
                        write_frame(&mut w, &m).unwrap();
                        thread::sleep(Duration::from_millis(50));
                    }
                });
                let mut normal = 0usize;
                let mut flooded = 0u64;
                while normal < CLIENTS * EACH as usize {
                    let m = read_frame(&mut r, 64).expect("a client stopped receiving");
                    if m[..2] == [0xFF, 0xFF] {
                        flooded += 1;
                    } else {
                        normal += 1;
                    }
                }
                writer.join().unwrap();
                flooded
            })
        })
        .collect();
    let flooded: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let stats = server.stats();
    // What one client saw of the flooder by the time it had all the
    // others' messages: at most the burst plus the rate over the time.
    let budget = u64::from(RATE) + (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as u64;
    let most = flooded.iter().copied().max().unwrap();
    assert!(
        most <= budget,
        "a client received {most} flood messages in {elapsed:?} (budget {budget})"
    );
    assert!(
        flood_sent.load(Ordering::Relaxed) > budget,
        "the flooder did flood"
    );
    assert_eq!(stats.slow_consumers, 0, "{stats:?}");
    match policy {
        RateLimitPolicy::Pause => {
            assert!(stats.rate_limit_pauses > 0, "{stats:?}");
            assert_eq!(stats.rate_limit_closes, 0, "{stats:?}");
        }
        RateLimitPolicy::Close => {
            assert_eq!(stats.rate_limit_closes, 1, "only the flooder: {stats:?}");
        }
    }
    server.stop();
}

#[test]
fn a_flooder_is_paused_while_100_chat_clients_keep_their_rate() {
    flood_chat(RateLimitPolicy::Pause);
}

#[test]
fn a_flooder_is_closed_while_100_chat_clients_keep_their_rate() {
    flood_chat(RateLimitPolicy::Close);
}

#[test]
fn a_handshake_flood_waits_while_established_tls_clients_are_served() {
    const PLACES: usize = 4;
    const FLOOD: usize = 60;
    let pki = Pki::new();
    let acceptor = pki
        .acceptor("server", false)
        .with_handshake_timeout(Duration::from_secs(2));
    let server = start_echo(|c| {
        c.shards = 1;
        c.tls = Some(acceptor);
        c.max_handshakes_per_shard = PLACES;
    });
    let addr = server.local_addr();
    let connector = pki.connector("ca", "localhost", false);
    let mut established: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect_tls(addr, &connector).expect("TLS connect");
            c.set_timeout(Some(IO_TIMEOUT)).unwrap();
            c.send(b"hello").unwrap();
            assert_eq!(c.recv().unwrap(), b"hello");
            c
        })
        .collect();
    // Half-open: TCP connected, then silence (a ClientHello never comes).
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect(addr)).collect();
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().handshakes_waiting
            == (FLOOD - PLACES) as u64),
        "{:?}",
        server.stats()
    );
    // The established clients are served throughout.
    for round in 0..20u64 {
        for c in &mut established {
            let m = pattern(round, 100);
            c.send(&m).unwrap();
            assert_eq!(c.recv().unwrap(), m);
        }
    }
    // The flood's handshake timeouts (2 s, from accept, whether a client
    // got a place or waited for one) close it all, and the places are free
    // again for a new client.
    assert!(
        wait_until(Duration::from_secs(10), || server
            .stats()
            .tls_handshake_timeouts
            >= FLOOD as u64),
        "{:?}",
        server.stats()
    );
    let mut late = Client::connect_tls(addr, &connector).expect("TLS connect after the flood");
    late.set_timeout(Some(IO_TIMEOUT)).unwrap();
    late.send(b"late").unwrap();
    assert_eq!(late.recv().unwrap(), b"late");
    let stats = server.stats();
    assert!(stats.tls_handshake_timeouts >= FLOOD as u64, "{stats:?}");
    assert_eq!(stats.handshakes_waiting, 0);
    drop(flood);
    server.stop();
}

/// The bound is on handshakes in progress, not on connections: many TLS
/// clients that complete their handshakes all get in.
#[test]
fn more_tls_clients_than_places_all_get_in_when_they_speak() {
    let pki = Pki::new();
    let server = start_echo(|c| {
        c.shards = 1;
        c.tls = Some(pki.acceptor("server", false));
        c.max_handshakes_per_shard = 2;
    });
    let addr = server.local_addr();
    let connector = pki.connector("ca", "localhost", false);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let connector = connector.clone();
            thread::spawn(move || {
                let mut c = Client::connect_tls(addr, &connector).expect("TLS connect");
                c.set_timeout(Some(IO_TIMEOUT)).unwrap();
                let m = pattern(i, 64);
                c.send(&m).unwrap();
                assert_eq!(c.recv().unwrap(), m);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(server.stats().tls_handshakes, 20);
    server.stop();
}
