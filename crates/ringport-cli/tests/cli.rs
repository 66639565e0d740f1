//! Runs the built `ringport` binary: options, echo and chat over real
//! loopback sockets, graceful stop on signals, and start-up failures.
//!
//! Every wait is bounded, and every spawned server is killed by its guard
//! if a test fails before stopping it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;

const OPTIONS: [&str; 22] = [
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--addr",
    "--shards",
    "--max-frame",
    "--max-connections",
    "--mode",
    "--stats-interval",
    "--codec",
    "--connections-per-shard",
    "--connections-per-ring",
    "--send-high-water",
    "--stop-timeout",
    "--recv-buffers",
    "--recv-buffer-size",
    "--idle-timeout",
    "--heartbeat",
    "--metrics-addr",
    "--log-format",
    "--config",
    "--print-config",
];

#[test]
fn help_lists_every_option() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run ringport serve --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for option in OPTIONS {
        assert!(
            help.contains(option),
            "serve --help lacks {option}:\n{help}"
        );
    }
    for text in [
        "127.0.0.1:7000",
        "16MiB",
        "echo",
        "chat",
        "length",
        "lines",
        "raw",
        "available cores",
        "SIGTERM",
        "RINGPORT_MAX_FRAME",
        "500ms",
    ] {
        assert!(help.contains(text), "serve --help lacks {text:?}:\n{help}");
    }

    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stdout).unwrap().contains("serve"));
}

#[test]
fn echo_answers_frames_then_sigterm_exits_zero() {
    let server = serve(&["--shards", "2", "--stats-interval", "0.2"]);
    let mut stream = server.connect();
    for size in [0usize, 1, 100, 70_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        write_frame(&mut stream, &payload);
        assert_eq!(read_frame(&mut stream), payload, "echo of {size} bytes");
    }
    // Several frames in one write come back in order.
    let mut batch = Vec::new();
    for i in 0..10u32 {
        batch.extend_from_slice(&4u32.to_be_bytes());
        batch.extend_from_slice(&i.to_be_bytes());
    }
    stream.write_all(&batch).unwrap();
    for i in 0..10u32 {
        assert_eq!(read_frame(&mut stream), i.to_be_bytes());
    }

    let mut server = server;
    server
        .proc
        .wait_for_stderr("connections=1 ", Duration::from_secs(5));
    let log = server.stop_with(libc::SIGTERM);
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("totals"), "{log}");
    assert!(log.contains("messages in 14, out 14"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn sigint_also_stops_gracefully() {
    let server = serve(&["--shards", "1"]);
    let mut stream = server.connect();
    write_frame(&mut stream, b"hello");
    assert_eq!(read_frame(&mut stream), b"hello");
    let log = server.stop_with(libc::SIGINT);
    assert!(log.contains("received SIGINT"), "{log}");
    // The connection was closed by the stop.
    assert!(closed_by_peer(&mut stream));
}

#[test]
fn chat_broadcasts_to_two_clients() {
    let server = serve(&["--mode", "chat", "--shards", "2"]);
    let mut a = server.connect();
    // A's own message comes back to it: A is registered.
    write_frame(&mut a, b"a joins");
    assert_eq!(read_frame(&mut a), b"a joins");
    let mut b = server.connect();
    write_frame(&mut b, b"b joins");
    assert_eq!(read_frame(&mut b), b"b joins");
    assert_eq!(read_frame(&mut a), b"b joins");

    write_frame(&mut a, b"hello from a");
    assert_eq!(read_frame(&mut a), b"hello from a");
    assert_eq!(read_frame(&mut b), b"hello from a");
    write_frame(&mut b, b"hello from b");
    assert_eq!(read_frame(&mut a), b"hello from b");
    assert_eq!(read_frame(&mut b), b"hello from b");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn lines_codec_echoes_lines() {
    let server = serve(&["--codec", "lines", "--shards", "1"]);
    let mut stream = server.connect();
    stream.write_all(b"first\r\nsecond\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read echoed lines");
    assert_eq!(back, b"first\nsecond\n");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn max_frame_takes_human_sizes() {
    let mut server = serve(&["--max-frame", "1KiB", "--stats-interval", "0.2"]);
    let mut ok = server.connect();
    let payload = vec![7u8; 1024];
    write_frame(&mut ok, &payload);
    assert_eq!(read_frame(&mut ok), payload);

    let mut big = server.connect();
    big.write_all(&1025u32.to_be_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut big),
        "a 1025-byte frame was not refused"
    );
    server
        .proc
        .wait_for_stderr("frames_too_large +1", Duration::from_secs(5));
    // The other connection is unaffected.
    write_frame(&mut ok, b"still here");
    assert_eq!(read_frame(&mut ok), b"still here");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn bad_addr_is_a_usage_error() {
    for addr in ["not-an-address", "127.0.0.1:99999", "127.0.0.1"] {
        for flag in ["--addr", "--metrics-addr"] {
            let (status, stderr) = run_to_exit(&["serve", flag, addr]);
            assert_eq!(status.code(), Some(2), "{flag} {addr}: {status}\n{stderr}");
            assert!(
                stderr.contains(&format!("error: invalid value '{addr}' for '{flag} "))
                    && stderr.contains("HOST:PORT"),
                "{flag} {addr}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn port_in_use_exits_1_with_a_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&["serve", "--addr", &addr]);
    assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: listening on {addr}: Address already in use"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    drop(taken);
}

/// A restart right after SIGKILL: the killed server's port is still held
/// for a moment (its rings are torn down by the kernel); the new server
/// retries the address for up to 2 s instead of failing. Before, the first
/// restart failed with "Address already in use".
#[test]
fn restart_right_after_sigkill_serves() {
    let first = serve(&["--shards", "2"]);
    let port = first.port;
    let mut c = first.connect();
    write_frame(&mut c, b"before");
    assert_eq!(read_frame(&mut c), b"before");
    let mut proc = first.proc;
    proc.signal(libc::SIGKILL);
    proc.expect_exit(Duration::from_secs(5));
    let addr = format!("127.0.0.1:{port}");
    let mut second = Proc::spawn(&["serve", "--addr", &addr, "--shards", "2"]);
    second.wait_for_stderr(&format!("listening on {addr}"), Duration::from_secs(10));
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write_frame(&mut c, b"after");
    assert_eq!(read_frame(&mut c), b"after");
    second.signal(libc::SIGTERM);
    assert!(second.expect_exit(Duration::from_secs(10)).success());
}

#[test]
fn invalid_option_values_are_usage_errors() {
    for args in [
        ["serve", "--max-frame", "12XB"],
        ["serve", "--max-frame", "0"],
        ["serve", "--shards", "0"],
        ["serve", "--mode", "shout"],
        ["serve", "--stats-interval=-1", "--mode=echo"],
        ["serve", "--recv-buffers", "100"],
        ["serve", "--recv-buffers", "65536"],
        ["serve", "--max-frame", "5GiB"],
        ["serve", "--max-frame", "4GiB"],
        ["serve", "--stop-timeout", "2x"],
        ["serve", "--idle-timeout", "0s"],
        ["serve", "--heartbeat", "soon"],
        ["serve", "--log-format", "xml"],
    ] {
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {status}\n{stderr}");
        // The message names the option.
        assert!(
            stderr.contains(&format!(
                "error: invalid value '{}' for '{} ",
                args[2], args[1]
            )) || stderr.contains(&format!("for '{} ", args[1].split('=').next().unwrap())),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{args:?}: {stderr}");
    }
    // 4GiB - 1 is the largest length the 4-byte field carries; the other
    // codecs have no length field.
    for args in [
        ["--max-frame", "4294967295", "--codec", "length"],
        ["--max-frame", "5GiB", "--codec", "lines"],
        ["--max-frame", "5GiB", "--codec", "raw"],
    ] {
        let (status, out) = print_config(&args, &[]);
        assert!(status.success(), "{args:?}: {out}");
    }
    // A bad value from the environment names the option too.
    let (status, out) = print_config(&[], &[("RINGPORT_RECV_BUFFERS", "100")]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("for '--recv-buffers "), "{out}");
}

#[test]
fn raw_codec_echoes_bytes() {
    let server = serve(&["--codec", "raw", "--shards", "1"]);
    let mut stream = server.connect();
    stream.write_all(b"no framing at all").unwrap();
    let mut back = [0u8; 17];
    stream.read_exact(&mut back).expect("read raw echo");
    assert_eq!(&back, b"no framing at all");
    server.stop_with(libc::SIGTERM);
}

#[test]
fn stats_line_reports_per_shard_connections() {
    let mut server = serve(&["--shards", "2", "--stats-interval", "0.1"]);
    let mut streams: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
    for (i, s) in streams.iter_mut().enumerate() {
        write_frame(s, &[i as u8]);
        assert_eq!(read_frame(s), [i as u8]);
    }
    server
        .proc
        .wait_for_stderr("connections=4 per_shard=", Duration::from_secs(5));
    let log = server.stop_with(libc::SIGTERM);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("connections=4 per_shard="))
        .unwrap();
    for field in [
        "accepted=4",
        "msgs_in=4",
        "msgs_out=4",
        "msgs_in_per_s=",
        "bytes_in=20",
        "in_mb_per_s=",
        "send_queue_bytes=",
        "frames_too_large=0",
        "slow_consumers=0",
        "accept_errors=0",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    // Per-shard counts add up to the total.
    let per_shard = line.split("per_shard=").nth(1).unwrap();
    let per_shard = per_shard.split_whitespace().next().unwrap();
    let sum: u64 = per_shard
        .split('/')
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 4, "{line}");
}

#[test]
fn too_many_connections_per_shard_exits_1() {
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let (status, stderr) = run_to_exit(&[
        "serve",
        "--addr",
        &addr,
        "--connections-per-shard",
        "100000000",
    ]);
    assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
    assert!(
        stderr.contains("error: connections_per_shard 100000000")
            && stderr.contains("open-files limit"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--connections-per-ring` reaches the server: on io_uring a shard with
/// rings of 100 holds 250 echoing clients on three of them (epoll has no
/// rings and ignores it); 0 is a usage error.
#[test]
fn connections_per_ring_spreads_a_shard_over_more_rings() {
    let (status, stderr) = run_to_exit(&["serve", "--connections-per-ring", "0"]);
    assert_eq!(status.code(), Some(2), "{status}\n{stderr}");
    assert!(stderr.contains("--connections-per-ring"), "{stderr}");

    let served = serve(&[
        "--shards",
        "1",
        "--max-connections",
        "1000",
        "--connections-per-ring",
        "100",
    ]);
    let epoll = expected_backend() == ringport::Backend::Epoll;
    if !epoll {
        let log = served.proc.stderr();
        assert!(
            log.contains("ring(s) of 100 direct descriptors"),
            "the start-up line should give the ring size\n{log}"
        );
    }
    let mut clients: Vec<TcpStream> = (0..250).map(|_| served.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, format!("client {i}").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_frame(client), format!("client {i}").as_bytes());
    }
    drop(clients);
    served.stop_with(libc::SIGTERM);
}
