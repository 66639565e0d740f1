//! Shared by the WebSocket harnesses (tests/browser.rs, tests/ws_interop.rs):
//! a server with a framed-TCP listener (`--addr`) and a WebSocket listener
//! (`--ws-addr`) in echo or chat mode, plain or TLS, a test certificate
//! authority, and the framed-TCP client.
//!
//! The server is the built `ringport serve --addr .. --ws-addr ..` with
//! [`RINGPORT_WS_ARGS`].
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{BIN, IO_TIMEOUT, PROCESS_TIMEOUT, collect, free_port};

/// Options `ringport serve` gets besides the addresses, mode and TLS:
/// permessage-deflate on (off by default; tests/ws_interop.rs and the
/// browser expect it negotiated).
pub const RINGPORT_WS_ARGS: &[&str] = &["--ws-deflate"];

/// A directory of its own for one test (removed when the test passes).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringport-ws-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A certificate authority made for one test, and a server certificate it
/// signed for `localhost` and `127.0.0.1`.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn issue(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringport WebSocket test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let out = TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&out.ca, ca.pem()).unwrap();
        std::fs::write(&out.cert, leaf.pem()).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }

    /// A rustls client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<ringport::tls::rustls::ClientConfig> {
        Arc::new(ringport::tls::pem::client_config(Some(&self.ca), false, None).unwrap())
    }
}

/// `echo` or `chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Chat,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Chat => "chat",
        }
    }
}

/// A running server with both listeners, stopped (killed) on drop.
pub struct WsServed {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    pub mode: Mode,
    pub tcp_port: u16,
    pub ws_port: u16,
    /// Set when both listeners speak TLS.
    pub tls: Option<Arc<ringport::tls::rustls::ClientConfig>>,
}

/// Starts the [`ws_server`] in `mode`, with TLS on both listeners if `ca`
/// is given; returns once both ports accept connections.
pub fn ws_serve(mode: Mode, ca: Option<&TestCa>) -> WsServed {
    for _ in 0..5 {
        let (tcp_port, ws_port) = (free_port(), free_port());
        if tcp_port == ws_port {
            continue;
        }
        let addr = format!("127.0.0.1:{tcp_port}");
        let ws_addr = format!("127.0.0.1:{ws_port}");
        let mut args: Vec<String> = ["serve", "--addr", &addr, "--ws-addr", &ws_addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "--mode",
                mode.as_str(),
                "--shards",
                "1",
                "--stats-interval",
                "0",
            ]
            .map(String::from),
        );
        if let Some(ca) = ca {
            args.push("--tls-cert".into());
            args.push(ca.cert.display().to_string());
            args.push("--tls-key".into());
            args.push(ca.key.display().to_string());
        }
        args.extend(RINGPORT_WS_ARGS.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(BIN);
        let mut child = cmd
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ringport serve: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let mut served = WsServed {
            child,
            stderr,
            stdout,
            readers,
            status: None,
            mode,
            tcp_port,
            ws_port,
            tls: ca.map(TestCa::client_config),
        };
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = served.try_wait() {
                if served.stderr().contains("in use") {
                    break;
                }
                panic!(
                    "ringport serve exited early ({status})\n{}",
                    served.output()
                );
            }
            // ringport logs "listening on ADDR (DRIVER, ...)" and then
            // "websocket on ws://ADDR/" once both listeners are bound (the
            // driver is checked against RINGPORT_BACKEND).
            let log = served.stderr();
            let scheme = if ca.is_some() { "wss" } else { "ws" };
            let logged = log.contains(&format!("listening on {addr} ("))
                && log.contains(&format!("websocket on {scheme}://{ws_addr}/"));
            let accepting = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
            if logged && accepting(tcp_port) && accepting(ws_port) {
                crate::common::assert_backend_logged(&log, &addr);
                return served;
            }
            assert!(
                Instant::now() < deadline,
                "ringport serve not accepting on {addr} and {ws_addr} within {PROCESS_TIMEOUT:?}\n{}",
                served.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not find free ports for the WebSocket server");
}

/// Fails the test, naming the fix, when python3 or its `websockets`
/// package is missing.
pub fn require_python_websockets() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .expect("python3 is not installed (apt-get install python3)");
    assert!(
        probe.status.success(),
        "the Python package websockets is missing: run scripts/install-python-ws.sh\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

impl WsServed {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn output(&self) -> String {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                // The pipes close with the process: take all its output.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
            }
        }
        self.status
    }

    /// `ws://127.0.0.1:PORT/PATH` or `wss://localhost:PORT/PATH` (the
    /// certificate names localhost).
    pub fn ws_url(&self, path: &str) -> String {
        match self.tls {
            Some(_) => format!("wss://localhost:{}{path}", self.ws_port),
            None => format!("ws://127.0.0.1:{}{path}", self.ws_port),
        }
    }

    /// A framed-TCP client on `--addr` (TLS if the server has it).
    pub fn framed_client(&self) -> ringport::Client {
        let mut client = match &self.tls {
            Some(config) => {
                let connector =
                    ringport::tls::TlsConnector::with_name(config.clone(), "localhost").unwrap();
                ringport::Client::connect_tls(("127.0.0.1", self.tcp_port), &connector)
            }
            None => ringport::Client::connect(("127.0.0.1", self.tcp_port)),
        }
        .unwrap_or_else(|e| panic!("framed client: {e}\n{}", self.output()));
        client.set_timeout(Some(IO_TIMEOUT)).unwrap();
        client
    }

    /// Sends SIGTERM (a graceful stop), without waiting.
    pub fn terminate(&mut self) {
        assert!(
            self.try_wait().is_none(),
            "server already exited\n{}",
            self.output()
        );
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped (checked above), so it names no other
        // process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// SIGTERM; expects exit status 0 within 10 s.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.wait_exit()
    }

    /// Waits (10 s at most) for the exit that a [`terminate`](Self::terminate)
    /// asked for; expects status 0.
    pub fn wait_exit(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "server exited with {status}\n{}",
            self.output()
        );
        self.stderr()
    }
}

impl Drop for WsServed {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
