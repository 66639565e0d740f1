//! Misbehaving peers: oversized headers, truncated frames, resets and
//! half-closes. Each affects only its own connection.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::*;
use ringport::LengthDelimited;

const MIB: usize = 1024 * 1024;

#[test]
fn oversized_header_closes_only_that_connection() {
    let server = start_echo_with(LengthDelimited::new().max_frame_length(MIB), |c| {
        c.shards = 1
    });
    let addr = server.local_addr();
    let mut good = connect(addr);
    assert_eq!(round_trip(&mut good, b"before"), b"before");

    let mut bad = connect(addr);
    bad.write_all(&(1u32 << 31).to_be_bytes()).unwrap();
    // Whatever follows is never read as a frame.
    let _ = bad.write_all(&pattern(1, 1000));
    expect_eof(&mut bad, IO_TIMEOUT);
    // Nothing was reserved for the announced 2 GiB.
    let held = server.stats().reassembly_bytes;
    assert!(held < 64 * 1024, "reassembly_bytes = {held}");

    assert!(
        wait_until(Duration::from_secs(10), || server.stats().frames_too_large
            == 1),
        "frames_too_large = {}",
        server.stats().frames_too_large
    );
    // The other connection is untouched, including a maximal frame.
    let big = pattern(2, MIB);
    assert_bytes_eq(&round_trip(&mut good, &big), &big, "max frame after");
    assert_eq!(round_trip(&mut good, b"after"), b"after");
    assert!(wait_until(Duration::from_secs(10), || {
        let s = server.stats();
        s.connections == 1 && s.closed == 1
    }));
    drop(good);
    // Reassembly memory (capacity kept by open connections) returns to 0.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = server.stats();
            s.connections == 0 && s.reassembly_bytes == 0
        }),
        "{:?}",
        server.stats()
    );
    server.stop();
}

#[test]
fn oversized_header_split_across_writes_is_refused_too() {
    let server = start_echo_with(LengthDelimited::new().max_frame_length(MIB), |c| {
        c.shards = 1
    });
    let mut bad = connect(server.local_addr());
    let h = ((MIB + 1) as u32).to_be_bytes();
    bad.write_all(&h[..3]).unwrap();
    // The server has read the first 3 bytes before the 4th is sent.
    assert!(wait_until(IO_TIMEOUT, || server.stats().bytes_in == 3));
    bad.write_all(&h[3..]).unwrap();
    expect_eof(&mut bad, IO_TIMEOUT);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .frames_too_large
        == 1));
    server.stop();
}

#[test]
fn truncated_frame_then_close_is_closed_cleanly() {
    let server = start_echo(|c| c.shards = 1);
    let addr = server.local_addr();
    let mut good = connect(addr);
    assert_eq!(round_trip(&mut good, b"x"), b"x");

    let mut bad = connect(addr);
    bad.write_all(&header(100)).unwrap();
    bad.write_all(&pattern(3, 10)).unwrap();
    bad.shutdown(Shutdown::Write).unwrap();
    let rest = expect_eof(&mut bad, IO_TIMEOUT);
    assert!(rest.is_empty(), "no echo for an incomplete frame");

    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = server.stats();
            s.closed == 1 && s.connections == 1
        }),
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().truncated_frames, 1);
    assert_eq!(round_trip(&mut good, b"still here"), b"still here");
    drop(good);
    // The partial frame's reassembly memory was released with it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = server.stats();
            s.connections == 0 && s.reassembly_bytes == 0
        }),
        "{:?}",
        server.stats()
    );
    server.stop();
}

#[test]
fn reset_mid_frame_is_survived() {
    let server = start_echo(|_| {});
    let addr = server.local_addr();
    let mut good = connect(addr);
    assert_eq!(round_trip(&mut good, b"a"), b"a");

    for i in 0..20u64 {
        let mut bad = connect(addr);
        // A whole frame, then part of a large one, then RST.
        write_frame(&mut bad, b"whole").unwrap();
        bad.write_all(&header(500_000)).unwrap();
        bad.write_all(&pattern(i, 100_000)).unwrap();
        if i % 2 == 0 {
            // Sometimes after the echo is back, sometimes with it in flight.
            assert_eq!(read_frame(&mut bad, MIB).unwrap(), b"whole");
        }
        reset(bad);
    }
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().connections == 1),
        "{:?}",
        server.stats()
    );
    assert_eq!(round_trip(&mut good, b"b"), b"b");
    drop(good);
    assert!(wait_until(Duration::from_secs(10), || {
        let s = server.stats();
        s.connections == 0 && s.closed == 21 && s.reassembly_bytes == 0
    }));
    server.stop();
}

#[test]
fn half_close_after_a_frame_still_gets_the_echo_then_eof() {
    let server = start_echo(|_| {});
    let addr = server.local_addr();

    let mut s = connect(addr);
    write_frame(&mut s, b"last words").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_frame(&mut s, MIB).unwrap(), b"last words");
    assert!(expect_eof(&mut s, IO_TIMEOUT).is_empty());

    // Same with several frames and a large echo still being flushed when
    // the FIN arrives.
    let mut s = connect(addr);
    let payloads: Vec<Vec<u8>> = [10, MIB, 0, 5000]
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(50 + i as u64, n))
        .collect();
    let mut wire = Vec::new();
    for p in &payloads {
        wire.extend(frame(p));
    }
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&wire).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    for p in &payloads {
        let echo = read_frame(&mut s, 2 * MIB).unwrap();
        assert_bytes_eq(&echo, p, "echo after half-close");
    }
    writer.join().unwrap();
    assert!(expect_eof(&mut s, IO_TIMEOUT).is_empty());
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 0));
    server.stop();
}

#[test]
fn garbage_from_many_peers_leaves_the_server_serving() {
    let server = start_echo_with(LengthDelimited::new().max_frame_length(4096), |_| {});
    let addr = server.local_addr();
    for i in 0..30u64 {
        let mut bad = connect(addr);
        let junk = pattern(1000 + i, 64 + i as usize * 10);
        let _ = bad.write_all(&junk);
        if i % 3 == 0 {
            reset(bad);
        } else {
            let _ = bad.shutdown(Shutdown::Write);
            // Either echoes of what happened to parse, then EOF, or a reset.
            expect_eof(&mut bad, IO_TIMEOUT);
        }
    }
    let mut good = connect(addr);
    assert_eq!(round_trip(&mut good, b"fine"), b"fine");
    drop(good);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 0));
    server.stop();
}

#[test]
fn end_of_stream_inside_a_frame_closes_with_truncated_frame() {
    let server =
        ringport::Server::start_events(config(), ringport::LengthDelimited::new()).unwrap();
    assert_backend(&server);
    let mut bad = connect(server.local_addr());
    let conn = expect_connected(&server, &bad);
    bad.write_all(&header(100)).unwrap();
    bad.write_all(&pattern(3, 10)).unwrap();
    bad.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        expect_closed(&server, conn),
        ringport::CloseReason::TruncatedFrame {
            have: 14,
            missing: Some(90)
        }
    );
    server.stop();
}

/// The slowloris attack: a header, then a byte now and then. Without a
/// frame timeout it holds its slot and reassembly buffer forever (any byte
/// resets the idle timeout); with one it is cut, and a client streaming
/// whole frames all the while is not.
#[test]
fn a_trickling_sender_is_cut_by_the_frame_timeout() {
    let server = ringport::Server::start_events(
        {
            let mut config = config();
            config.tick = Duration::from_millis(20);
            config.frame_timeout = Some(Duration::from_millis(400));
            config.idle_timeout = Some(Duration::from_secs(60));
            config
        },
        ringport::LengthDelimited::new(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut slow = connect(server.local_addr());
    let slow_id = expect_connected(&server, &slow);
    let mut steady = connect(server.local_addr());
    let steady_id = expect_connected(&server, &steady);
    slow.write_all(&header(1000)).unwrap();
    let mut closed = None;
    while started.elapsed() < Duration::from_secs(3) && closed.is_none() {
        let _ = slow.write_all(b"x");
        // Whole frames, each write ending inside the next one.
        let f = frame(&pattern(9, 50));
        steady.write_all(&[&f[..], &f[..10]].concat()).unwrap();
        steady.write_all(&f[10..]).unwrap();
        while let Some(event) = server.next_event(Duration::from_millis(50)) {
            if let ringport::Event::Closed { conn, reason } = event {
                assert_eq!(conn, slow_id, "only the trickle is cut ({reason:?})");
                closed = Some((reason, started.elapsed()));
            }
        }
    }
    let (reason, after) = closed.expect("the trickling sender was cut");
    assert!(
        matches!(
            reason,
            ringport::CloseReason::FrameTimeout {
                missing: Some(_),
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(
        after >= Duration::from_millis(400),
        "not before the timeout: {after:?}"
    );
    assert_eq!(server.stats().frame_timeouts, 1);
    assert_eq!(server.stats().connections, 1, "the steady sender stays");
    let _ = steady_id;
    server.stop();
}
