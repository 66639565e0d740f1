//! Large frames received straight into their reassembly buffer (the
//! engine's direct receive) over real loopback sockets, on the backend
//! `RINGPORT_BACKEND` picks: echoes verified byte for byte with frames sent
//! in odd-sized pieces on several connections at once, a stream that ends
//! inside such a frame, a header announcing far more than arrives, and the
//! frame pool that large frames' buffers go back to.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

/// Writes `wire` in pieces cycling through `pieces` bytes, pausing now and
/// then so that the server sees the frame arrive in parts.
fn write_in_pieces(s: &mut TcpStream, wire: &[u8], pieces: &[usize]) {
    let mut pos = 0;
    for (i, &n) in pieces.iter().cycle().enumerate() {
        if pos >= wire.len() {
            break;
        }
        let end = (pos + n).min(wire.len());
        s.write_all(&wire[pos..end]).unwrap();
        pos = end;
        if i % 16 == 15 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    s.flush().unwrap();
}

#[test]
fn large_frames_in_odd_pieces_on_several_connections_echo_byte_exact() {
    let server = start_echo(|c| c.shards = 2);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            thread::spawn(move || {
                let mut s = connect(addr);
                let sizes = [1 << 20, 100_000, 16 << 20, 5, 3 << 20];
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &len)| pattern(c * 100 + i as u64, len))
                    .collect();
                // All frames back to back in one stream (the small one
                // pipelined right behind a large one), written by a thread
                // of its own: the server stops reading while its replies
                // wait, so writing all before reading could stall.
                let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
                let mut writer = s.try_clone().unwrap();
                let pieces = [7919 + c as usize * 13, 65_537, 1, 300_007, 4093];
                let w = thread::spawn(move || write_in_pieces(&mut writer, &wire, &pieces));
                for (i, want) in payloads.iter().enumerate() {
                    let got = read_frame(&mut s, usize::MAX).expect("read echo");
                    assert_bytes_eq(&got, want, &format!("client {c}, frame {i}"));
                }
                w.join().unwrap();
                assert_eq!(round_trip(&mut s, b"after"), b"after");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats.messages_in, 4 * 6);
    assert!(
        stats.direct_recvs > 0,
        "large frames were received directly: {stats:?}"
    );
    assert_eq!(stats.frames_too_large, 0);
    server.stop();
}

#[test]
fn stream_ending_inside_a_large_frame_is_a_truncated_frame() {
    let server = start_echo(|c| c.shards = 1);
    let mut s = connect(server.local_addr());
    s.write_all(&header(4 << 20)).unwrap();
    s.write_all(&pattern(1, 300_000)).unwrap();
    // The server has read the first part before the second is sent.
    assert!(wait_until(IO_TIMEOUT, || server.stats().bytes_in == 4 + 300_000));
    s.write_all(&pattern(2, 200_000)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_eof(&mut s, IO_TIMEOUT);
    assert!(wait_until(Duration::from_secs(10), || {
        let st = server.stats();
        st.truncated_frames == 1 && st.reassembly_bytes == 0
    }));
    assert_eq!(server.stats().bytes_in, 4 + 500_000);
    server.stop();
}

#[test]
fn a_header_announcing_16_mib_with_few_bytes_holds_little_memory() {
    let server = start_echo(|c| c.shards = 1);
    let mut s = connect(server.local_addr());
    s.write_all(&header(16 << 20)).unwrap();
    s.write_all(&pattern(3, 40_000)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .bytes_in
        == 40_004));
    let held = server.stats().reassembly_bytes;
    assert!(held <= 256 * 1024, "held {held} bytes for 40 KB received");
    // The connection still works as a stream: the rest completes it.
    let rest = pattern(4, (16 << 20) - 40_000);
    let mut writer = s.try_clone().unwrap();
    let w = thread::spawn(move || writer.write_all(&rest).unwrap());
    let got = read_frame(&mut s, usize::MAX).expect("read echo");
    w.join().unwrap();
    assert_eq!(got.len(), 16 << 20);
    assert_eq!(&got[..40_000], &pattern(3, 40_000)[..]);
    assert_eq!(&got[40_000..], &pattern(4, (16 << 20) - 40_000)[..]);
    drop(s);
    server.stop();
}

#[test]
fn frame_timeout_cancels_a_direct_receive_and_closes() {
    let server = start_echo(|c| {
        c.shards = 1;
        c.frame_timeout = Some(Duration::from_millis(300));
        c.min_receive_rate = None;
    });
    let mut s = connect(server.local_addr());
    s.write_all(&header(4 << 20)).unwrap();
    s.write_all(&pattern(5, 100_000)).unwrap();
    // The rest never comes: the receive posted into the frame's buffer is
    // cancelled and the connection closed once it completed.
    expect_eof(&mut s, IO_TIMEOUT);
    assert!(wait_until(Duration::from_secs(10), || {
        let st = server.stats();
        st.frame_timeouts == 1 && st.reassembly_bytes == 0 && st.connections == 0
    }));
    assert!(server.stats().direct_recvs >= 1);
    server.stop();
}

#[test]
fn stopping_the_server_ends_direct_receives() {
    let server = start_echo(|c| c.shards = 1);
    let mut s = connect(server.local_addr());
    s.write_all(&header(8 << 20)).unwrap();
    s.write_all(&pattern(6, 200_000)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .direct_recvs
        >= 1));
    // Bounded by the server's stop timeout: the posted receive is
    // cancelled, its completion reaped, the socket closed.
    server.stop();
    expect_eof(&mut s, IO_TIMEOUT);
}

#[test]
fn bulk_mode_ping_pong_and_pipelined_64_kib_frames_echo_byte_exact() {
    let server = start_echo(|c| c.shards = 2);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..3u64)
        .map(|c| {
            thread::spawn(move || {
                let mut s = connect(addr);
                // Ping-pong: into bulk mode and staying there, with sizes
                // changing (in and out of bulk mode).
                for (i, len) in [65_536, 65_536, 40_000, 65_536, 100, 65_536, 200_000, 65_536]
                    .into_iter()
                    .enumerate()
                {
                    let payload = pattern(c * 1000 + i as u64, len);
                    let echo = round_trip(&mut s, &payload);
                    assert_bytes_eq(&echo, &payload, &format!("client {c}, ping {i}"));
                }
                // Pipelined: frames back to back, so a receive holds the
                // end of one and the start of the next.
                let payloads: Vec<Vec<u8>> = (0..20)
                    .map(|i| pattern(c * 1000 + 100 + i, [65_536, 33_000, 70_001][i as usize % 3]))
                    .collect();
                let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
                let mut writer = s.try_clone().unwrap();
                let pieces = [65_540, 3, 100_000, 12_345];
                let w = thread::spawn(move || write_in_pieces(&mut writer, &wire, &pieces));
                for (i, want) in payloads.iter().enumerate() {
                    let got = read_frame(&mut s, usize::MAX).expect("read echo");
                    assert_bytes_eq(&got, want, &format!("client {c}, pipelined {i}"));
                }
                w.join().unwrap();
                assert_eq!(round_trip(&mut s, b"small"), b"small");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats.messages_in, 3 * (8 + 20 + 1));
    assert!(stats.direct_recvs > 0, "{stats:?}");
    // The clients are gone: so are their buffers (bulk ones included).
    assert!(wait_until(Duration::from_secs(10), || {
        let st = server.stats();
        st.connections == 0 && st.reassembly_bytes == 0
    }));
    server.stop();
}

#[test]
fn large_frame_buffers_come_back_to_the_frame_pool_and_leave_it_unused() {
    let server = start_echo(|c| c.shards = 1);
    let mut s = connect(server.local_addr());
    for i in 0..4 {
        let payload = pattern(i, 1 << 20);
        let echo = round_trip(&mut s, &payload);
        assert_bytes_eq(&echo, &payload, &format!("frame {i}"));
    }
    // Each echo's send completed: its frame's buffer is kept for the next.
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().frame_pool_bytes
            >= 1 << 20),
        "{:?}",
        server.stats()
    );
    assert!(server.stats().frame_pool_bytes <= 64 << 20);
    // Nothing lent for a whole trim period (2 s): freed.
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().frame_pool_bytes
            == 0),
        "{:?}",
        server.stats()
    );
    server.stop();

    // frame_pool_limit 0: nothing is kept.
    let server = start_echo(|c| {
        c.shards = 1;
        c.frame_pool_limit = 0;
    });
    let mut s = connect(server.local_addr());
    for i in 0..2 {
        let payload = pattern(10 + i, 1 << 20);
        assert_bytes_eq(&round_trip(&mut s, &payload), &payload, "no pool");
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .messages_out
        == 2));
    // (A snapshot taken after the one that showed both replies.)
    assert_eq!(server.stats().frame_pool_bytes, 0);
    server.stop();
}
