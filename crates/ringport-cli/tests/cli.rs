//! Runs the built `ringport` binary: options, echo and chat over real
//! loopback sockets, graceful stop on signals, and start-up failures.
//!
//! Every wait is bounded, and every spawned server is killed by its guard
//! if a test fails before stopping it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringport");
/// Bound for the server to start listening, or to exit after a signal.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound for one frame to come back.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A port that was free a moment ago (port 0 would hide the real port from
/// the test).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A running `ringport` process, killed on drop unless it already exited.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringport");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Proc {
            child,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own
        // child, which is not reaped before this guard waits for it, so it
        // cannot name another process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits for the process to exit; `None` on timeout.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // The pipes close with the process: take all its output.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process exits, failing the test after `timeout`.
    fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait(timeout) {
            Some(status) => status,
            None => panic!(
                "ringport did not exit within {timeout:?}\n{}",
                self.output()
            ),
        }
    }

    /// Waits until `needle` appears on stderr.
    fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            if let Some(status) = self.wait(Duration::ZERO) {
                panic!(
                    "ringport exited ({status}) before logging {needle:?}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ringport did not log {needle:?} within {timeout:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `ringport serve` on a free loopback port, ready to accept.
struct Served {
    proc: Proc,
    port: u16,
}

fn serve(extra: &[&str]) -> Served {
    // The port was free when picked; if another process took it meanwhile,
    // start-up fails with "in use": pick another and retry.
    for _ in 0..5 {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--addr", addr.as_str()];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = proc.wait(Duration::ZERO) {
                if proc.stderr().contains("in use") {
                    break;
                }
                panic!("ringport serve exited early ({status})\n{}", proc.output());
            }
            // The shards' listeners are bound once this is logged.
            if proc.stderr().contains(&format!("listening on {addr}")) {
                return Served { proc, port };
            }
            assert!(
                Instant::now() < deadline,
                "ringport serve did not start within {PROCESS_TIMEOUT:?}\n{}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not find a free port for ringport serve");
}

impl Served {
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.proc.output()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Sends SIGTERM (or another signal) and expects exit status 0 within a
    /// few seconds; returns the server's stderr.
    fn stop_with(mut self, signal: libc::c_int) -> String {
        self.proc.signal(signal);
        let began = Instant::now();
        let status = self.proc.expect_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "ringport exited with {status} after signal {signal}\n{}",
            self.proc.output()
        );
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "stopping took {:?}",
            began.elapsed()
        );
        self.proc.stderr()
    }
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).expect("write frame");
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("read frame header");
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("read frame payload");
    payload
}

/// Reads until the peer closes; true if it closed (EOF or reset) in time.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    false
}

/// Runs `ringport` with `args` to completion (bounded) and returns its
/// status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut proc = Proc::spawn(args);
    let status = proc.expect_exit(PROCESS_TIMEOUT);
    (status, proc.stderr())
}

const OPTIONS: [&str; 18] = [
    "--addr",
    "--shards",
    "--max-frame",
    "--max-connections",
    "--mode",
    "--stats-interval",
    "--codec",
    "--connections-per-shard",
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

/// Runs `ringport serve --print-config` with `args` and environment
/// `env`; returns the status and stdout followed by stderr.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args).arg("--print-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ringport serve --print-config");
    (
        out.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringport-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn settings_precedence_is_flag_env_file_default() {
    let file = temp_file(
        "precedence.toml",
        "max-frame = \"1MiB\"\nshards = 3\nmode = \"chat\"\nstats_interval = \"10s\"\n\
         idle-timeout = 30\nrecv-buffers = 1024\n",
    );
    let file = file.to_str().unwrap();
    let (status, out) = print_config(
        &["--config", file, "--mode", "echo", "--recv-buffers", "512"],
        &[
            ("RINGPORT_SHARDS", "2"),
            ("RINGPORT_MODE", "chat"),
            ("RINGPORT_HEARTBEAT", "1m"),
        ],
    );
    assert!(status.success(), "{out}");
    for line in [
        "max-frame = \"1MiB\"",     // file over default
        "shards = 2",               // env over file
        "mode = \"echo\"",          // flag over env and file
        "recv-buffers = 512",       // flag over file
        "stats-interval = \"10s\"", // file (underscore key) over default
        "idle-timeout = \"30s\"",   // file, bare seconds
        "heartbeat = \"1m\"",       // env over default
        "stop-timeout = \"5s\"",    // default
        "codec = \"length\"",       // default
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }

    // The printed settings read back as a file give the same settings.
    let (_, first) = print_config(&["--config", file], &[]);
    let again = temp_file("again.toml", &first);
    let (status, second) = print_config(&["--config", again.to_str().unwrap()], &[]);
    assert!(status.success(), "{second}");
    assert_eq!(first, second);

    // The example shipped in deploy/ reads.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ringport.toml");
    let (status, out) = print_config(&["--config", example], &[]);
    assert!(status.success(), "{out}");
    assert!(out.contains("metrics-addr = \"127.0.0.1:9464\""), "{out}");

    // Without a file: the defaults.
    let (status, out) = print_config(&[], &[]);
    assert!(status.success(), "{out}");
    assert!(out.contains("max-frame = \"16MiB\""), "{out}");
    assert!(out.contains("addr = \"127.0.0.1:7000\""), "{out}");
}

#[test]
fn bad_config_files_are_usage_errors() {
    for (name, text, expect) in [
        (
            "unknown.toml",
            "max-frames = 1\n",
            "unknown key 'max-frames'",
        ),
        ("value.toml", "recv-buffers = 100\n", "for '--recv-buffers "),
        ("limit.toml", "max-frame = \"8GiB\"\n", "for '--max-frame "),
        ("syntax.toml", "shards = \n", "not valid TOML"),
        (
            "type.toml",
            "shards = [1]\n",
            "'shards' must be a string or a number",
        ),
    ] {
        let file = temp_file(name, text);
        let (status, out) = print_config(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(status.code(), Some(2), "{name}: {out}");
        assert!(out.contains(expect), "{name}: {out}");
    }
    let (status, out) = print_config(&["--config", "/nonexistent/ringport.toml"], &[]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("/nonexistent/ringport.toml"), "{out}");
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

/// The value of the sample line `series` (name and labels) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// Runs `promtool check metrics` on `text`. Without promtool the check is
/// skipped, unless CI is set: then a missing promtool fails the test.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed and CI is set (apt-get install prometheus)"
            );
            eprintln!("promtool not installed: skipping `promtool check metrics`");
            return;
        }
        other => other.expect("run promtool"),
    };
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
    server
        .proc
        .wait_for_stderr("/metrics", Duration::from_secs(5));
    let log = server.proc.stderr();
    let metrics_addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
        .to_string();

    let mut stream = server.connect();
    let payload = [0x5au8; 100];
    for _ in 0..10 {
        write_frame(&mut stream, &payload);
        assert_eq!(read_frame(&mut stream), payload);
    }

    // Counters are published by the shards as they run: poll briefly.
    let deadline = Instant::now() + IO_TIMEOUT;
    let body = loop {
        let (code, head, body) = http_get(&metrics_addr, "/metrics");
        assert_eq!(code, 200, "{head}\n{body}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        if sample(&body, "ringport_messages_out_total") >= 10 || Instant::now() > deadline {
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
    assert_eq!(
        sample(&body, "ringport_backend_info{backend=\"io_uring\"}"),
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
