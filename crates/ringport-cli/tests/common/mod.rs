//! Helpers shared by the integration tests that run the built `ringport`
//! binary: a guarded child process, a served instance on a free port,
//! framing, bounded waits.
#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringport");
/// Bound for the server to start listening, or to exit after a signal.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound for one frame to come back.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A port that was free a moment ago (port 0 would hide the real port from
/// the test).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A running `ringport` process, killed on drop unless it already exited.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

pub fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
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
    pub fn spawn(args: &[&str]) -> Proc {
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

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own
        // child, which is not reaped before this guard waits for it, so it
        // cannot name another process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait(timeout) {
            Some(status) => status,
            None => panic!(
                "ringport did not exit within {timeout:?}\n{}",
                self.output()
            ),
        }
    }

    /// Waits until `needle` appears on stderr.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
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
pub struct Served {
    pub proc: Proc,
    pub port: u16,
}

pub fn serve(extra: &[&str]) -> Served {
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
                assert_backend_logged(&proc.stderr(), &addr);
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
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.proc.output()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Sends SIGTERM (or another signal) and expects exit status 0 within a
    /// few seconds; returns the server's stderr.
    pub fn stop_with(mut self, signal: libc::c_int) -> String {
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

pub fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).expect("write frame");
}

pub fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("read frame header");
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("read frame payload");
    payload
}

/// Reads until the peer closes; true if it closed (EOF or reset) in time.
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
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
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut proc = Proc::spawn(args);
    let status = proc.expect_exit(PROCESS_TIMEOUT);
    (status, proc.stderr())
}

/// Runs `ringport serve --print-config` with `args` and environment
/// `env`; returns the status and stdout followed by stderr.
pub fn print_config(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
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

pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringport-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The backend this run of the suite is for: `RINGPORT_BACKEND`
/// (`scripts/test.sh` runs the integration tests once with `io-uring`, once
/// with `epoll`), else io_uring where it works. An unknown value fails.
pub fn expected_backend() -> ringport::Backend {
    use ringport::Backend;
    match std::env::var("RINGPORT_BACKEND").as_deref() {
        Ok("epoll") => Backend::Epoll,
        Ok("io-uring") => Backend::IoUring,
        Ok("auto") | Err(std::env::VarError::NotPresent) => {
            if ringport::probe_io_uring().is_ok() {
                Backend::IoUring
            } else {
                Backend::Epoll
            }
        }
        Ok(other) => panic!("RINGPORT_BACKEND={other:?}: expected io-uring, epoll or auto"),
        Err(e) => panic!("RINGPORT_BACKEND: {e}"),
    }
}

/// Asserts that the `ringport serve` whose stderr is `log` runs on the
/// backend this run is for: its start-up line `listening on ADDR (DRIVER,
/// ...)` names the driver. Called by [`serve`], so by every test binary that
/// starts a server process.
#[track_caller]
pub fn assert_backend_logged(log: &str, addr: &str) {
    let driver = log
        .split(&format!("listening on {addr} ("))
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no start-up line for {addr}:\n{log}"));
    assert_driver(driver);
}

/// Asserts that `driver` (`Server::driver`, or the driver a log line names)
/// is one of the expected backend's.
#[track_caller]
pub fn assert_driver(driver: &str) {
    match expected_backend() {
        ringport::Backend::Epoll => assert_eq!(driver, "epoll"),
        _ => assert!(driver.starts_with("io_uring"), "driver: {driver}"),
    }
}

/// Whether `RINGPORT_SKIP` (a comma-separated list, e.g. `nats,promtool`)
/// opts out of `what`. If so the skip is announced on stderr (which the
/// test harness does not capture) and recorded in the file named by
/// `RINGPORT_SKIP_LOG`, which `scripts/test.sh` counts as skipped, not
/// passed. The test must then return without asserting anything.
pub fn opted_out(what: &str) -> bool {
    let listed =
        std::env::var("RINGPORT_SKIP").is_ok_and(|list| list.split(',').any(|w| w.trim() == what));
    if listed {
        let test = std::thread::current()
            .name()
            .unwrap_or("<unnamed test>")
            .to_string();
        let line = format!(
            "ringport-skip: {} {test} (RINGPORT_SKIP={what})\n",
            env!("CARGO_CRATE_NAME")
        );
        let _ = io::stderr().write_all(line.as_bytes());
        if let Some(path) = std::env::var_os("RINGPORT_SKIP_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            match file {
                Ok(mut f) => f
                    .write_all(line.as_bytes())
                    .expect("write RINGPORT_SKIP_LOG"),
                Err(e) => panic!("RINGPORT_SKIP_LOG {path:?}: {e}"),
            }
        }
    }
    listed
}

/// Whether the test needing `program` (from Debian package `package`) runs:
/// true if `program` is on `PATH`; false if `RINGPORT_SKIP` names `skip`
/// (the skip is recorded, see [`opted_out`]); otherwise the test fails,
/// naming the package to install.
#[track_caller]
pub fn require_program(program: &str, package: &str, skip: &str) -> bool {
    if opted_out(skip) {
        return false;
    }
    assert!(
        on_path(program),
        "{program} is not installed: apt-get install {package} \
         (or set RINGPORT_SKIP={skip} to skip the tests that need it)"
    );
    true
}

/// Whether an executable named `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Polls `probe` every 20 ms until it returns a value or `timeout` passes.
pub fn wait_until_value<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
