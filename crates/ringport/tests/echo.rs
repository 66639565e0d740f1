//! The echo server over real loopback sockets: frame sizes around every
//! boundary, frames dribbled a byte at a time, pipelining, many connections
//! at once, and a buffer ring too small for the load.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;
use ringport::Backend;

#[test]
fn echoes_payloads_of_every_boundary_size_byte_exact() {
    let server = start_echo(|c| c.shards = 1);
    let rbs = server.config().recv_buffer_size;
    let mut s = connect(server.local_addr());
    let sizes = [0, 1, rbs - 1, rbs, rbs + 1, 1024 * 1024, 16 * 1024 * 1024];
    for (i, &len) in sizes.iter().enumerate() {
        let payload = pattern(i as u64, len);
        let echo = round_trip(&mut s, &payload);
        assert_bytes_eq(&echo, &payload, &format!("echo of {len} bytes"));
    }
    // The connection is still usable after the largest frame.
    assert_eq!(round_trip(&mut s, b"after"), b"after");
    let stats = server.stats();
    assert_eq!(stats.messages_in, sizes.len() as u64 + 1);
    assert_eq!(stats.messages_out, sizes.len() as u64 + 1);
    assert_eq!(stats.frames_too_large, 0);
    drop(s);
    server.stop();
}

#[test]
fn frame_one_byte_over_the_maximum_closes_the_connection() {
    // 16 MiB exactly passes (previous test); 16 MiB + 1 is refused.
    let server = start_echo(|c| c.shards = 1);
    let mut s = connect(server.local_addr());
    s.write_all(&header(16 * 1024 * 1024 + 1)).unwrap();
    s.write_all(b"some of the payload").unwrap();
    expect_eof(&mut s, IO_TIMEOUT);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .frames_too_large
        == 1));
    server.stop();
}

#[test]
fn frames_dribbled_one_byte_at_a_time() {
    let server = start_echo(|_| {});
    let mut s = connect(server.local_addr());
    for (i, len) in [0usize, 1, 7, 40].into_iter().enumerate() {
        let payload = pattern(100 + i as u64, len);
        for byte in frame(&payload) {
            s.write_all(&[byte]).unwrap();
            s.flush().unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        let echo = read_frame(&mut s, 1 << 20).unwrap();
        assert_bytes_eq(&echo, &payload, "dribbled frame");
    }
    // A frame whose header arrives in two pieces far apart, and whose
    // payload straddles many small writes.
    let payload = pattern(7, 3000);
    let wire = frame(&payload);
    // Each piece is read by the server before the next is sent.
    let before = server.stats().bytes_in;
    s.write_all(&wire[..2]).unwrap();
    assert!(wait_until(IO_TIMEOUT, || server.stats().bytes_in == before + 2));
    s.write_all(&wire[2..5]).unwrap();
    assert!(wait_until(IO_TIMEOUT, || server.stats().bytes_in == before + 5));
    for chunk in wire[5..].chunks(333) {
        s.write_all(chunk).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let echo = read_frame(&mut s, 1 << 20).unwrap();
    assert_bytes_eq(&echo, &payload, "frame in pieces");
    drop(s);
    server.stop();
}

#[test]
fn a_thousand_pipelined_frames_come_back_in_order() {
    let server = start_echo(|_| {});
    let mut s = connect(server.local_addr());
    let payloads: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            let mut p = i.to_be_bytes().to_vec();
            p.extend(pattern(i, (i as usize * 37) % 300));
            p
        })
        .collect();
    let mut wire = Vec::new();
    for p in &payloads {
        wire.extend(frame(p));
    }
    s.write_all(&wire).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        let echo = read_frame(&mut s, 1 << 20).unwrap();
        assert_bytes_eq(&echo, p, &format!("pipelined frame {i}"));
    }
    drop(s);
    server.stop();
}

#[test]
fn a_thousand_concurrent_connections_over_two_shards() {
    const CONNS: usize = 1000;
    const THREADS: usize = 4;
    const ROUNDS: u64 = 3;
    let server = start_echo(|c| {
        c.shards = 2;
        c.connections_per_shard = Some(CONNS + 64);
    });
    let addr = server.local_addr();
    // Open every connection first.
    let conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    assert!(
        wait_until(Duration::from_secs(20), || server.stats().connections
            == CONNS as u64),
        "server sees {} of {CONNS} connections",
        server.stats().connections
    );
    let per_shard = server.shard_stats();
    assert_eq!(per_shard.len(), 2);
    assert_eq!(
        per_shard.iter().map(|s| s.connections).sum::<u64>(),
        CONNS as u64
    );
    // Then traffic on all of them at once: each thread writes a frame to
    // each of its connections, then reads every echo, for a few rounds.
    let mut groups: Vec<Vec<(usize, TcpStream)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % THREADS].push((i, c));
    }
    let workers: Vec<_> = groups
        .into_iter()
        .map(|mut group| {
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    for (i, s) in group.iter_mut() {
                        let p = pattern((*i as u64) << 8 | round, 16 + *i % 200);
                        write_frame(s, &p).unwrap();
                    }
                    for (i, s) in group.iter_mut() {
                        let p = pattern((*i as u64) << 8 | round, 16 + *i % 200);
                        let echo = read_frame(s, 1 << 20).unwrap();
                        assert_bytes_eq(&echo, &p, &format!("conn {i} round {round}"));
                    }
                }
                group.len()
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, CONNS);
    let stats = server.stats();
    assert_eq!(stats.accepted, CONNS as u64);
    assert_eq!(stats.messages_in, CONNS as u64 * ROUNDS);
    assert_eq!(stats.messages_out, CONNS as u64 * ROUNDS);
    // The clients were dropped with their threads: every connection closes.
    assert!(
        wait_until(Duration::from_secs(20), || server.stats().connections == 0),
        "{} connections still open",
        server.stats().connections
    );
    // `connections` counts open ones; a closing one is counted in `closed`
    // once its descriptor is closed, a moment later.
    assert!(
        wait_until(Duration::from_secs(20), || server.stats().closed
            == CONNS as u64),
        "closed {} of {CONNS}",
        server.stats().closed
    );
    server.stop();
}

#[test]
fn tiny_buffer_ring_under_load_loses_nothing() {
    const CONNS: usize = 20;
    const PER_CONN: usize = 200 * 1024;
    let server = start_echo(|c| {
        c.shards = 1;
        c.recv_buffers = 2;
        c.recv_buffer_size = 4096;
    });
    let addr = server.local_addr();
    let clients: Vec<_> = (0..CONNS)
        .map(|k| {
            let s = connect(addr);
            thread::spawn(move || {
                // Frames from 0 bytes to well over a receive buffer.
                let mut payloads = Vec::new();
                let mut total = 0;
                let mut n = 0u64;
                while total < PER_CONN {
                    let len = ((n as usize * 977) + k * 131) % 10_000;
                    payloads.push(pattern((k as u64) << 32 | n, len));
                    total += len + 4;
                    n += 1;
                }
                let mut writer = s.try_clone().unwrap();
                let to_send = payloads.clone();
                let w = thread::spawn(move || {
                    for p in &to_send {
                        write_frame(&mut writer, p).unwrap();
                    }
                });
                let mut reader = s;
                for (i, p) in payloads.iter().enumerate() {
                    let echo = read_frame(&mut reader, 1 << 20).unwrap();
                    assert_bytes_eq(&echo, p, &format!("conn {k} frame {i}"));
                }
                w.join().unwrap();
                payloads.len() as u64
            })
        })
        .collect();
    let frames: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let stats = server.stats();
    assert_eq!(stats.messages_in, frames);
    assert_eq!(stats.messages_out, frames);
    assert!(
        stats.bytes_in >= (CONNS * PER_CONN) as u64,
        "bytes_in {}",
        stats.bytes_in
    );
    eprintln!(
        "tiny ring: {frames} frames, {} bytes, recv_no_buffers = {}",
        stats.bytes_in, stats.recv_no_buffers
    );
    match server.backend() {
        // Two 4 KiB buffers for 20 busy connections run out: the multishot
        // receives end with ENOBUFS and are re-armed, losing nothing.
        Backend::IoUring => assert!(
            stats.recv_no_buffers > 0,
            "two 4 KiB buffers for 20 busy connections never ran out?"
        ),
        // epoll reads into one buffer per shard, lent for one completion at
        // a time: it cannot run out.
        _ => assert_eq!(stats.recv_no_buffers, 0),
    }
    server.stop();
}

/// The suite runs once per backend (`scripts/test.sh` sets
/// `RINGPORT_BACKEND`, which `Backend::Auto` obeys): make sure each run
/// really is on the backend it names.
#[test]
fn runs_on_the_backend_the_test_matrix_asks_for() {
    let server = start_echo(|_| {});
    let want = expected_backend();
    assert_eq!(server.backend(), want, "driver: {}", server.driver());
    assert_eq!(server.io_uring_mode().is_empty(), want == Backend::Epoll);
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"which backend?"), b"which backend?");
    server.stop();
}

/// `Server::connections`: every open connection with its peer, bytes each
/// way and queued bytes, most queued first.
#[test]
fn connections_snapshot_lists_peers_traffic_and_queues() {
    let server = start_echo(|c| c.shards = 2);
    let addr = server.local_addr();
    let mut quiet = connect(addr);
    assert_eq!(round_trip(&mut quiet, b"hi"), b"hi");
    let _idle = connect(addr);
    // A client that sends 8 MiB of frames and reads nothing: its echoes
    // pile up in the server's queue once the socket buffers are full.
    let mut hog = connect(addr);
    let hog_peer = hog.local_addr().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..128u64 {
            if write_frame(&mut hog, &pattern(i, 64 * 1024)).is_err() {
                break;
            }
        }
        hog
    });
    let mut snapshot = server.connections(Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(10), || {
            snapshot = server.connections(Duration::from_secs(5));
            snapshot.connections.len() == 3 && snapshot.connections[0].queued > 0
        }),
        "{snapshot:?}"
    );
    assert!(snapshot.complete);
    let top = &snapshot.connections[0];
    assert_eq!(top.peer, hog_peer, "the most queued first");
    assert!(top.bytes_in > top.bytes_out, "{top:?}");
    let quiet_info = snapshot
        .connections
        .iter()
        .find(|c| c.peer == quiet.local_addr().unwrap())
        .expect("the quiet client is listed");
    assert_eq!((quiet_info.bytes_in, quiet_info.bytes_out), (6, 6));
    assert_eq!(quiet_info.queued, 0);
    server.stop();
    drop(writer.join());
}
