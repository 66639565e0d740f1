//! `ringport serve --metrics-addr`: /metrics under traffic (exact values,
//! `promtool check metrics`), /healthz, a taken port; and JSON logs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn metrics_port_in_use_exits_1_before_serving() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let port = free_port().to_string();
    let (status, stderr) = run_to_exit(&[
        "serve",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--metrics-addr",
        &addr,
    ]);
    assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
    assert!(
        stderr.contains(&format!("error: --metrics-addr {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// A plain HTTP/1.1 GET; returns (status code, headers, body).
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (code, head.to_string(), body.to_string())
}

/// Waits for the "metrics on http://ADDR/metrics" line; returns ADDR.
fn metrics_addr(server: &mut Served) -> String {
    server
        .proc
        .wait_for_stderr("/metrics", Duration::from_secs(5));
    let log = server.proc.stderr();
    log.split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
        .to_string()
}

/// The name of the backend the server under test runs on (asserted by
/// `serve`, see `common::expected_backend`).
fn backend() -> &'static str {
    expected_backend().name()
}

/// The value of the sample line `series` (name and labels) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// Runs `promtool check metrics` on `text`. Without promtool (Debian
/// package prometheus) the test fails; `RINGPORT_SKIP=promtool` skips the
/// check, and the test is then counted as skipped by `scripts/test.sh`.
fn promtool_check(text: &str) {
    if !require_program("promtool", "prometheus", "promtool") {
        return;
    }
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.expect("run promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_endpoint_counts_traffic_and_passes_promtool() {
    let mut server = serve(&[
        "--shards",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
        "--stats-interval",
        "200ms",
    ]);
    let metrics_addr = metrics_addr(&mut server);

    let mut stream = server.connect();
    let payload = [0x5au8; 100];
    for _ in 0..10 {
        write_frame(&mut stream, &payload);
        assert_eq!(read_frame(&mut stream), payload);
    }

    // Counters are published by the shards as they run (a message counts
    // as out when queued, its bytes when written): poll briefly.
    let deadline = Instant::now() + IO_TIMEOUT;
    let body = loop {
        let (code, head, body) = http_get(&metrics_addr, "/metrics");
        assert_eq!(code, 200, "{head}\n{body}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let settled = sample(&body, "ringport_messages_out_total") >= 10
            && sample(&body, "ringport_bytes_out_total") >= 1040;
        if settled || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    promtool_check(&body);
    assert_eq!(sample(&body, "ringport_messages_in_total"), 10, "{body}");
    assert_eq!(sample(&body, "ringport_messages_out_total"), 10, "{body}");
    // 10 frames of a 4-byte header and 100 bytes, each way.
    assert_eq!(sample(&body, "ringport_bytes_in_total"), 1040, "{body}");
    assert_eq!(sample(&body, "ringport_bytes_out_total"), 1040, "{body}");
    assert_eq!(sample(&body, "ringport_accepted_total"), 1, "{body}");
    assert_eq!(sample(&body, "ringport_frames_too_large_total"), 0);
    assert_eq!(sample(&body, "ringport_shards"), 2);
    // The loop-turn histogram: every turn is in the +Inf bucket.
    let turns = sample(&body, "ringport_loop_turn_seconds_count");
    assert!(turns > 0, "{body}");
    assert_eq!(
        sample(&body, "ringport_loop_turn_seconds_bucket{le=\"+Inf\"}"),
        turns
    );
    assert_eq!(
        sample(
            &body,
            &format!("ringport_backend_info{{backend=\"{}\"}}", backend())
        ),
        1
    );
    let open = sample(&body, "ringport_connections{shard=\"0\"}")
        + sample(&body, "ringport_connections{shard=\"1\"}");
    assert_eq!(open, 1, "{body}");

    let (code, _, body) = http_get(&metrics_addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, _) = http_get(&metrics_addr, "/nothing-here");
    assert_eq!(code, 404);

    // --stats-interval took a unit: lines come every 200 ms.
    server
        .proc
        .wait_for_stderr("connections=1 ", Duration::from_secs(5));
    server.stop_with(libc::SIGTERM);
    // The endpoint is gone with the server.
    assert!(TcpStream::connect(&metrics_addr).is_err());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = serve(&["--log-format", "json", "--shards", "1"]);
    let log = server.stop_with(libc::SIGTERM);
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{log}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m.starts_with("listening on ")),
        "{log}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("received SIGTERM")),
        "{log}"
    );
}

#[test]
fn connz_lists_open_connections_most_queued_first() {
    // A high-water mark above what the clients send: reading is never
    // paused, every echo is queued.
    let mut server = serve(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--send-high-water",
        "64MiB",
    ]);
    let metrics_addr = metrics_addr(&mut server);
    // Two clients that send and do not read (a small receive buffer): 16
    // MiB and 6 MiB. The server queues the echoes its kernel send buffer
    // (at most 4 MiB, tcp_wmem) does not take: over 12 MiB for the first,
    // under 6 MiB for the second. A third client reads its echo. The amounts are
    // polled until stable.
    let small_rcvbuf = || {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    };
    let mut big = small_rcvbuf();
    let mut less = small_rcvbuf();
    for _ in 0..256 {
        write_frame(&mut big, &[1u8; 64 * 1024]);
    }
    for _ in 0..96 {
        write_frame(&mut less, &[2u8; 64 * 1024]);
    }
    let mut quiet = server.connect();
    write_frame(&mut quiet, b"hello");
    assert_eq!(read_frame(&mut quiet), b"hello");
    // (queued, bytes_in) of the connection of client `peer`.
    let entry = |page: &serde_json::Value, peer: &TcpStream| -> (u64, u64) {
        let peer = peer.local_addr().unwrap().to_string();
        page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["peer"] == peer.as_str())
            .map_or((0, 0), |c| {
                (
                    c["queued"].as_u64().unwrap(),
                    c["bytes_in"].as_u64().unwrap(),
                )
            })
    };
    // Settled: every byte sent is in (bytes_in), and the queues are the
    // same in two looks.
    let mut last = (0, 0);
    let settled = wait_until_value(IO_TIMEOUT, || {
        let (_, _, body) = http_get(&metrics_addr, "/connz");
        let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let ((big_q, big_in), (less_q, less_in)) = (entry(&page, &big), entry(&page, &less));
        let all_in = big_in == 256 * (64 * 1024 + 4) && less_in == 96 * (64 * 1024 + 4);
        let now = (big_q, less_q);
        let stable = all_in && now == last && now.0 > now.1 && now.1 > 0;
        last = now;
        stable.then_some(now)
    });
    let (big_queued, less_queued) =
        settled.unwrap_or_else(|| panic!("queues never settled with big > less > 0: {last:?}"));
    let (code, head, body) = http_get(&metrics_addr, "/connz?limit=2");
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(head.contains("application/json"), "{head}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["complete"], true, "{page}");
    let listed = page["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "limit 2: {page}");
    // Most queued first: `big`, then `less`; `quiet` (nothing queued) on
    // the next page.
    let peer = |s: &TcpStream| s.local_addr().unwrap().to_string();
    assert_eq!(listed[0]["peer"], peer(&big).as_str(), "{page}");
    assert_eq!(listed[0]["queued"], big_queued, "{page}");
    assert_eq!(listed[0]["bytes_in"], 256 * (64 * 1024 + 4), "{page}");
    assert_eq!(listed[1]["peer"], peer(&less).as_str(), "{page}");
    assert_eq!(listed[1]["queued"], less_queued, "{page}");
    assert_eq!(listed[1]["bytes_in"], 96 * (64 * 1024 + 4), "{page}");
    let (_, _, rest) = http_get(&metrics_addr, "/connz?limit=2&offset=2");
    let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
    let rest_listed = rest["connections"].as_array().unwrap();
    assert_eq!(rest_listed.len(), 1, "{rest}");
    assert_eq!(rest_listed[0]["peer"], peer(&quiet).as_str(), "{rest}");
    assert_eq!(rest_listed[0]["queued"], 0, "{rest}");
    assert_eq!(rest_listed[0]["bytes_in"], 9, "{rest}");
    assert_eq!(rest_listed[0]["bytes_out"], 9, "{rest}");
    drop((big, less, quiet));
    server.stop_with(libc::SIGTERM);
}
