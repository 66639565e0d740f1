//! A real browser in a chat room (issue 28): headless Chromium loads
//! tests/browser/chat.html, which joins a chat-mode server over ws:// and
//! over wss:// (a certificate authority made here, trusted by Chromium
//! through an NSS database of its own, not by ignoring certificate errors)
//! and exchanges text and binary messages with this test's framed-TCP
//! clients in the same rooms. The page's outcome is read over the DevTools
//! protocol; the framed-TCP side is checked here.
//!
//! Needs `chromium` and `certutil` (Debian packages chromium and
//! libnss3-tools; `scripts/install-chromium.sh` installs both, `.ci/run`
//! calls it). Without them the test fails; outside CI (`CI` unset)
//! `RINGPORT_SKIP=chromium` skips it explicitly.
//!
//! The servers are `ringport serve --addr .. --ws-addr .. --mode chat
//! --ws-deflate` (plain, and with --tls-cert/--tls-key).

mod common;
mod ws_common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{collect, on_path, opted_out};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};
use ws_common::{Mode, TempDir, TestCa, ws_serve};

/// Bound for the whole exchange (browser start, both rooms, close).
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The bytes the page and the framed-TCP client send; the page
/// (tests/browser/chat.html) derives the same from the label and nonce.
fn browser_text(label: &str, nonce: &str) -> Vec<u8> {
    format!("browser text {label} {nonce} ✓ žluťoučký 🚀").into_bytes()
}
fn browser_binary(label: &str, nonce: &str) -> Vec<u8> {
    let mut b = vec![0x00, 0xff, 0x80, 0x7f];
    b.extend_from_slice(format!("browser binary {label} {nonce}").as_bytes());
    b
}
fn tcp_bytes(label: &str, nonce: &str) -> Vec<u8> {
    let mut b = vec![0xff, 0x00, 0xfe];
    b.extend_from_slice(format!("tcp frame {label} {nonce}").as_bytes());
    b
}

/// Whether the browser test runs: chromium and certutil installed. In CI
/// (`CI` set) a missing program always fails; elsewhere
/// `RINGPORT_SKIP=chromium` skips explicitly (recorded as skipped).
fn browser_available() -> bool {
    if std::env::var_os("CI").is_none() && opted_out("chromium") {
        return false;
    }
    for (program, package) in [("chromium", "chromium"), ("certutil", "libnss3-tools")] {
        assert!(
            on_path(program),
            "{program} is not installed: run scripts/install-chromium.sh \
             (Debian package {package}){}",
            if std::env::var_os("CI").is_some() {
                ""
            } else {
                ", or set RINGPORT_SKIP=chromium to skip this test"
            }
        );
    }
    true
}

/// The framed-TCP member of one room: waits for the page's text and
/// binary messages (as frames, byte for byte), then sends its own frame,
/// which comes back to it too (chat sends to the sender). Returns the
/// frames received, in order.
fn tcp_side(
    mut client: ringport::Client,
    label: &str,
    nonce: &str,
) -> Result<Vec<Vec<u8>>, String> {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let (text, binary, ours) = (
        browser_text(label, nonce),
        browser_binary(label, nonce),
        tcp_bytes(label, nonce),
    );
    client
        .set_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut received = Vec::new();
    let mut sent = false;
    loop {
        if !sent && received.contains(&text) && received.contains(&binary) {
            client
                .send(&ours)
                .map_err(|e| format!("{label}: send: {e}"))?;
            sent = true;
        }
        if sent && received.contains(&ours) {
            return Ok(received);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{label}: framed-TCP client timed out; received {:?}",
                received
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
        match client.recv() {
            Ok(frame) => received.push(frame),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(format!("{label}: recv: {e}")),
        }
    }
}

/// Headless Chromium with a profile and an NSS database (trusting `ca`) of
/// its own, remote debugging on a port it chooses; killed on drop.
struct Chromium {
    child: Child,
    stderr: Arc<Mutex<String>>,
    profile: PathBuf,
}

impl Chromium {
    /// `trust`: whether the NSS database holds `ca` (false: an empty one).
    fn launch(dir: &Path, ca: &TestCa, trust: bool) -> Chromium {
        // Chromium on Linux reads user-trusted roots from $HOME/.pki/nssdb:
        // a HOME of the test's own holds the test CA, trusted to identify
        // web sites ("C,,"), and nothing else of the user's.
        let home = dir.join("home");
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        certutil(&["-N", "-d", &db, "--empty-password"]);
        if trust {
            certutil(&[
                "-A",
                "-d",
                &db,
                "-n",
                "ringport WebSocket test CA",
                "-t",
                "C,,",
                "-i",
                ca.ca.to_str().unwrap(),
            ]);
        }
        let profile = dir.join("profile");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                // The sandbox needs user namespaces or a setuid helper,
                // which containers and root lack; the page is the test's own.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        Chromium {
            child,
            stderr,
            profile,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The browser's DevTools endpoint, from the `DevToolsActivePort` file
    /// Chromium writes into its profile once it listens.
    fn devtools_url(&mut self, deadline: Instant) -> String {
        let file = self.profile.join("DevToolsActivePort");
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "chromium exited ({status}) before listening\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not write {} in time\n{}",
                file.display(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn certutil(args: &[&str]) {
    let out = Command::new("certutil")
        .args(args)
        .output()
        .expect("run certutil");
    assert!(
        out.status.success(),
        "certutil {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DevTools protocol connection to the browser, one page session.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
    /// Console messages and exceptions of the page, for failure reports.
    console: Vec<String>,
    loaded: bool,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&addr).expect("connect to DevTools");
        // The handshake as a whole, bounded; then short reads, so waits
        // for events can check their deadline.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools WebSocket handshake");
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Cdp {
            ws,
            next_id: 1,
            session: None,
            console: Vec::new(),
            loaded: false,
        }
    }

    /// Sends `method` and returns its result; events read meanwhile are
    /// recorded.
    fn call(&mut self, method: &str, params: Value, deadline: Instant) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("DevTools send");
        loop {
            let reply = self.next_message(deadline, method);
            if reply["id"].as_u64() == Some(id) {
                if let Some(err) = reply.get("error") {
                    panic!("DevTools {method}: {err}\nconsole: {:#?}", self.console);
                }
                return reply["result"].clone();
            }
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        loop {
            assert!(
                Instant::now() < deadline,
                "DevTools: no answer to {waiting_for} in time; page console: {:#?}",
                self.console
            );
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                    self.note_event(&v);
                    return v;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("DevTools read: {e}"),
            }
        }
    }

    fn note_event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = v["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console.push(format!(
                    "console.{}: {}",
                    v["params"]["type"],
                    args.join(" ")
                ));
            }
            Some("Runtime.exceptionThrown") => self
                .console
                .push(format!("exception: {}", v["params"]["exceptionDetails"])),
            Some("Log.entryAdded") => self.console.push(format!(
                "log {}: {}",
                v["params"]["entry"]["level"], v["params"]["entry"]["text"]
            )),
            Some("Page.loadEventFired") => self.loaded = true,
            _ => {}
        }
    }

    /// Opens `url` in a new page, waits for its load event, and returns
    /// the value the promise `window.ringportOutcome` resolves to.
    fn run_page(&mut self, url: &str, deadline: Instant) -> Value {
        let target = self.call(
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            deadline,
        );
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            deadline,
        );
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        );
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            self.call(domain, json!({}), deadline);
        }
        let nav = self.call("Page.navigate", json!({ "url": url }), deadline);
        assert!(nav.get("errorText").is_none(), "navigate {url}: {nav}");
        while !self.loaded {
            self.next_message(deadline, "Page.loadEventFired");
        }
        let result = self.call(
            "Runtime.evaluate",
            json!({
                "expression": "window.ringportOutcome",
                "awaitPromise": true,
                "returnByValue": true,
            }),
            deadline,
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("page outcome threw: {e}\nconsole: {:#?}", self.console);
        }
        result["result"]["value"].clone()
    }
}

fn page_url(nonce: &str, rooms: &[(&str, String)]) -> String {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat.html");
    let mut url = format!("file://{}?nonce={nonce}", page.display());
    for (label, ws) in rooms {
        url.push_str(&format!("&url={label},{ws}"));
    }
    url
}

#[test]
fn chromium_chats_with_a_framed_tcp_client_over_ws_and_wss() {
    if !browser_available() {
        return;
    }
    let began = Instant::now();
    let deadline = began + TEST_TIMEOUT;
    let dir = TempDir::new("browser");
    let ca = TestCa::issue(dir.path());
    let plain = ws_serve(Mode::Chat, None);
    let tls = ws_serve(Mode::Chat, Some(&ca));
    let nonce = format!("{:016x}", fastrand::u64(..));

    let sides: Vec<_> = [("ws", plain.framed_client()), ("wss", tls.framed_client())]
        .into_iter()
        .map(|(label, client)| {
            let nonce = nonce.clone();
            (
                label,
                std::thread::spawn(move || tcp_side(client, label, &nonce)),
            )
        })
        .collect();

    let mut chromium = Chromium::launch(dir.path(), &ca, true);
    let devtools = chromium.devtools_url(deadline);
    let mut cdp = Cdp::connect(&devtools);
    let url = page_url(
        &nonce,
        &[("ws", plain.ws_url("/chat")), ("wss", tls.ws_url("/chat"))],
    );
    let outcome = cdp.run_page(&url, deadline);
    let elapsed_page = began.elapsed();

    let report = format!(
        "page outcome: {}\npage console: {:#?}\n{}\n{}",
        serde_json::to_string_pretty(&outcome).unwrap(),
        cdp.console,
        plain.output(),
        tls.output()
    );
    // The page's half: each room's steps, in both directions.
    assert_eq!(outcome["ok"], json!(true), "{report}");
    for (i, label) in ["ws", "wss"].into_iter().enumerate() {
        let r = &outcome["results"][i];
        assert_eq!(r["label"], json!(label), "{report}");
        assert_eq!(
            r["steps"],
            json!([
                "open",
                "sent text and binary",
                "own text back as text",
                "own binary back as binary",
                "tcp frame as binary",
                "closed 1000"
            ]),
            "{report}"
        );
        let hex: String = tcp_bytes(label, &nonce)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(r["tcp_frame_hex"], json!(hex), "{report}");
    }
    // The framed-TCP half: the page's text and binary messages arrived as
    // frames, byte for byte, in the order sent, then its own frame.
    for (label, side) in sides {
        let frames = side
            .join()
            .expect("tcp side thread")
            .unwrap_or_else(|e| panic!("{e}\n{report}"));
        assert_eq!(
            frames,
            vec![
                browser_text(label, &nonce),
                browser_binary(label, &nonce),
                tcp_bytes(label, &nonce)
            ],
            "{label}: frames received by the framed-TCP client\n{report}"
        );
    }
    eprintln!(
        "browser test: {}, {} in {:.2} s (whole test {:.2} s)\n{}",
        outcome["userAgent"],
        ["ws", "wss"]
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{l}: extensions {:?}", outcome["results"][i]["extensions"]))
            .collect::<Vec<_>>()
            .join(", "),
        elapsed_page.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        serde_json::to_string(&outcome).unwrap()
    );
    drop(cdp);
    drop(chromium);
    plain.stop();
    tls.stop();
}

/// The other side of the trust set-up: with the test CA not in Chromium's
/// NSS database, the wss room must not open (so the test above passes
/// because the CA is trusted, not because certificate errors are ignored),
/// and nothing reaches the framed-TCP client.
#[test]
fn chromium_refuses_wss_when_the_test_ca_is_not_trusted() {
    if !browser_available() {
        return;
    }
    let deadline = Instant::now() + TEST_TIMEOUT;
    let dir = TempDir::new("browser-untrusted");
    let ca = TestCa::issue(dir.path());
    let tls = ws_serve(Mode::Chat, Some(&ca));
    let mut tcp = tls.framed_client();
    let mut chromium = Chromium::launch(dir.path(), &ca, false);
    let devtools = chromium.devtools_url(deadline);
    let mut cdp = Cdp::connect(&devtools);
    let outcome = cdp.run_page(
        &page_url("untrusted", &[("wss", tls.ws_url("/chat"))]),
        deadline,
    );
    let r = &outcome["results"][0];
    assert_eq!(outcome["ok"], json!(false), "{outcome}");
    assert_eq!(r["steps"], json!([]), "{outcome}");
    assert_eq!(
        r["error"],
        json!("WebSocket error before open"),
        "{outcome}"
    );
    // The room stayed empty: a frame sent now comes back to its sender only
    // (a page that had joined would have sent two messages first).
    tcp.send(b"alone").unwrap();
    assert_eq!(tcp.recv().unwrap(), b"alone");
    drop(cdp);
    drop(chromium);
    tls.stop();
}
