//! `ringport bench --ws` against real WebSocket servers on loopback:
//! tokio-tungstenite servers in this process (echo, a damaging echo, chat
//! broadcast keeping each message's kind, and the pubsub protocol with one
//! frame per binary message, as `serve --ws-addr` does them) and the Python
//! `websockets` package (permessage-deflate, wss). Every reply is verified
//! by the bench; these tests check its counts and verdicts.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use ringport_cli::pubsub::{Frame, decode, encode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What a test server does with each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Echo,
    /// Echoes, flipping a byte of every 40th message.
    Corrupt,
    /// Sends every message to every connection, the sender included.
    Chat,
    /// The pubsub protocol of `serve --mode pubsub`, one frame per binary
    /// message: `S` subscribes (answered by `K S topic`), `P` publishes to
    /// the topic's subscribers as `M`.
    Pubsub,
    /// Refuses the upgrade (HTTP 403).
    Refuse,
}

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;
type Topics = Arc<Mutex<HashMap<Vec<u8>, Vec<u64>>>>;

/// A tokio-tungstenite server on its own thread (alive until the test
/// process ends).
fn server(behaviour: Behaviour) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let peers: Peers = Arc::default();
            let topics: Topics = Arc::default();
            for id in 0u64.. {
                let (s, _) = l.accept().await.unwrap();
                let (peers, topics) = (peers.clone(), topics.clone());
                tokio::spawn(async move {
                    if behaviour == Behaviour::Refuse {
                        let refuse = |_: &_, _| {
                            Err(tokio_tungstenite::tungstenite::http::Response::builder()
                                .status(403)
                                .body(None)
                                .unwrap())
                        };
                        let _ = tokio_tungstenite::accept_hdr_async(s, refuse).await;
                        return;
                    }
                    let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    connection(behaviour, id, ws, peers, topics).await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

async fn connection(
    behaviour: Behaviour,
    id: u64,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    peers: Peers,
    topics: Topics,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    peers.lock().unwrap().insert(id, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut seen = 0u64;
    while let Some(Ok(m)) = stream.next().await {
        if !(m.is_text() || m.is_binary()) {
            continue;
        }
        seen += 1;
        match behaviour {
            Behaviour::Echo => {
                let _ = tx.send(m);
            }
            Behaviour::Corrupt => {
                let m = match m {
                    Message::Binary(b) if seen % 40 == 0 => {
                        let mut v = b.to_vec();
                        let last = v.len() - 1;
                        v[last] ^= 0x20;
                        Message::binary(v)
                    }
                    m => m,
                };
                let _ = tx.send(m);
            }
            Behaviour::Chat => {
                for peer in peers.lock().unwrap().values() {
                    let _ = peer.send(m.clone());
                }
            }
            Behaviour::Pubsub => {
                let data = m.into_data();
                match decode(&data) {
                    Some(Frame::Subscribe(topic)) => {
                        topics
                            .lock()
                            .unwrap()
                            .entry(topic.to_vec())
                            .or_default()
                            .push(id);
                        let ok = encode(&Frame::Ok { op: b'S', topic });
                        let _ = tx.send(Message::binary(ok));
                    }
                    Some(Frame::Publish { topic, data }) => {
                        let out = Message::binary(encode(&Frame::Message { topic, data }));
                        let subs = topics.lock().unwrap().get(topic).cloned();
                        let peers = peers.lock().unwrap();
                        for s in subs.unwrap_or_default() {
                            if let Some(p) = peers.get(&s) {
                                let _ = p.send(out.clone());
                            }
                        }
                    }
                    _ => panic!("unexpected pubsub frame"),
                }
            }
            Behaviour::Refuse => unreachable!(),
        }
    }
    peers.lock().unwrap().remove(&id);
    drop(tx);
    let _ = writer.await;
}

/// Runs `ringport bench --ws` for a short while; returns (exit code,
/// output, json).
fn bench(addr: impl ToString, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let addr = addr.to_string();
    let dir = std::env::temp_dir().join(format!("ringport-bench-ws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{}.json", addr.replace([':', '.'], "_")));
    let out = Command::new(common::BIN)
        .args(["bench", "--ws", "--addr", &addr, "--duration", "1"])
        .args([
            "--warmup",
            "0.2",
            "--drain-timeout",
            "3",
            "--sources",
            "127.0.0.1",
        ])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("run ringport bench");
    let value = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        value,
    )
}

#[test]
fn echo_against_tungstenite_verifies_every_reply() {
    let addr = server(Behaviour::Echo);
    let (code, out, json) = bench(addr, &["-c", "20", "--depth", "4", "--size", "300"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json["connections_established"], 20, "{json}");
    assert_eq!(json["transport"], "ws", "{json}");
    assert_eq!(json["ok"], true);
    assert!(json["messages"].as_u64().unwrap() > 100, "{json}");
    assert!(out.contains("over ws"), "{out}");
    assert!(out.contains("errors:      none"), "{out}");

    // Text messages, a path, large messages (several reads each).
    let (code, out, json) = bench(
        addr,
        &[
            "-c",
            "4",
            "--size",
            "200000",
            "--ws-text",
            "--ws-path",
            "/echo?x=1",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(json["messages"].as_u64().unwrap() > 4, "{json}");
}

#[test]
fn a_damaging_server_fails_the_run() {
    let addr = server(Behaviour::Corrupt);
    let (code, out, json) = bench(addr, &["-c", "4", "--size", "64"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        json["errors"]["corrupt payload"].as_u64().unwrap() > 0,
        "{json}"
    );
}

#[test]
fn a_refused_upgrade_is_a_failed_connect() {
    let addr = server(Behaviour::Refuse);
    let (code, out, _) = bench(addr, &["-c", "3"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("WebSocket upgrade failed: status 403"),
        "{out}"
    );
}

#[test]
fn chat_counts_every_delivery() {
    const CLIENTS: u64 = 8;
    let addr = server(Behaviour::Chat);
    let (code, out, json) = bench(addr, &["-c", "8", "--mode", "chat", "--rate", "20"]);
    assert_eq!(json["errors"], serde_json::json!({}), "{json}\n{out}");
    let share = json["delivered_share"].as_f64().unwrap();
    assert_eq!(
        code == 0,
        share >= 0.95,
        "exit {code}, share {share}\n{out}"
    );
    let secs = json["duration_secs"].as_f64().unwrap();
    let deliveries = json["messages"].as_u64().unwrap();
    let own = (json["delivered_per_sec"].as_f64().unwrap() * secs).round() as u64;
    assert!(own > 0, "{json}");
    assert!(
        deliveries.abs_diff(CLIENTS * own) <= 2 * CLIENTS * CLIENTS,
        "{deliveries} deliveries for {own} own messages x {CLIENTS}\n{json}"
    );
}

#[test]
fn pubsub_one_frame_per_binary_message() {
    let addr = server(Behaviour::Pubsub);
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "--ws",
            "--mode",
            "pubsub",
            "--addr",
            &addr.to_string(),
        ])
        .args([
            "-c",
            "20",
            "--topics",
            "2",
            "--publishers",
            "2",
            "--rate",
            "200",
        ])
        .args(["--duration", "1", "--size", "64"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("upgrades failed 0"), "{text}");
    assert!(text.contains("order/format errors 0"), "{text}");
    // 2 publishers x ~200/s x 1 s, each to the 10 subscribers of its topic.
    let made: u64 = text
        .split("made ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(made >= 2000, "{made} deliveries\n{text}");
}

// ---- Python `websockets`: permessage-deflate and wss ------------------

const PYTHON_ECHO: &str = r#"
import asyncio, ssl, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for m in ws:
        await ws.send(m)

async def main():
    ctx = None
    if len(sys.argv) > 1:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    async with serve(echo, "127.0.0.1", 0, ssl=ctx) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"#;

struct Python(Child, u16);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(tls: Option<(&std::path::Path, &std::path::Path)>) -> Python {
    let check = Command::new("python3")
        .args(["-c", "import websockets.asyncio.server"])
        .status()
        .expect("python3 runs");
    assert!(
        check.success(),
        "the Python package websockets (13 or later) is missing: pip install websockets"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PYTHON_ECHO]);
    if let Some((cert, key)) = tls {
        cmd.arg(cert).arg(key);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Python(child, port)
}

#[test]
fn deflate_and_wss_against_python_websockets() {
    let py = python(None);
    let (code, out, json) = bench(
        format!("127.0.0.1:{}", py.1),
        &["-c", "5", "--size", "2000", "--ws-deflate"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(json["ws_deflate_connections"], 5, "{json}");
    assert!(out.contains("permessage-deflate on 5"), "{out}");

    // wss: a self-signed certificate for 127.0.0.1.
    let dir = std::env::temp_dir().join(format!("ringport-bench-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let pys = python(Some((&cert_path, &key_path)));
    let addr = format!("127.0.0.1:{}", pys.1);
    let ca = cert_path.to_str().unwrap();
    let (code, out, json) = bench(&addr, &["-c", "5", "--tls", "--tls-ca", ca]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json["transport"], "wss", "{json}");
    assert!(json["messages"].as_u64().unwrap() > 10, "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- `ringport serve --ws-addr` ------------------------------------------

/// Waits (at most 10 s) until `addr` accepts connections.
fn wait_for_listener(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `bench --ws` against ringport's own WebSocket listener in its three
/// modes, with a framed-TCP client in the chat room.
#[test]
fn against_ringport_serve_ws_addr() {
    for mode in ["echo", "chat", "pubsub"] {
        let ws_addr = format!("127.0.0.1:{}", common::free_port());
        let served = common::serve(&["--mode", mode, "--ws-addr", &ws_addr, "--ws-deflate"]);
        wait_for_listener(&ws_addr);
        match mode {
            "echo" => {
                for extra in [&[][..], &["--ws-deflate"], &["--ws-text"]] {
                    let mut args = vec!["-c", "50", "--depth", "4", "--size", "300"];
                    args.extend_from_slice(extra);
                    let (code, out, json) = bench(&ws_addr, &args);
                    assert_eq!(code, 0, "{extra:?}\n{out}");
                    assert_eq!(json["connections_established"], 50, "{json}");
                    if extra == ["--ws-deflate"] {
                        assert_eq!(json["ws_deflate_connections"], 50, "{json}");
                    }
                }
            }
            "chat" => {
                // A framed client in the same room gets every message as
                // one length-delimited frame.
                let mut framed = served.connect();
                let listener = std::thread::spawn(move || {
                    for _ in 0..100 {
                        assert_eq!(common::read_frame(&mut framed).len(), 64);
                    }
                    100
                });
                for extra in [&[][..], &["--ws-text"]] {
                    let mut args = vec!["-c", "8", "--mode", "chat", "--rate", "20"];
                    args.extend_from_slice(&["--size", "64"]);
                    args.extend_from_slice(extra);
                    let (_, out, json) = bench(&ws_addr, &args);
                    assert_eq!(json["errors"], serde_json::json!({}), "{json}\n{out}");
                    assert!(json["messages"].as_u64().unwrap() > 0, "{json}");
                }
                assert_eq!(listener.join().unwrap(), 100);
            }
            _ => {
                let out = Command::new(common::BIN)
                    .args(["bench", "--ws", "--mode", "pubsub", "--addr", &ws_addr])
                    .args(["-c", "100", "--topics", "2", "--publishers", "2"])
                    .args(["--rate", "100", "--duration", "1", "--size", "64"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert_eq!(out.status.code(), Some(0), "{text}");
                assert!(text.contains("(100.000%)"), "{text}");
            }
        }
        served.stop_with(libc::SIGTERM);
    }
}

#[test]
fn bad_ws_options_are_usage_errors() {
    for (args, want) in [
        (&["--ws", "--codec", "lines"][..], "leave out --codec"),
        (&["--ws", "--ws-path", "no-slash"], "--ws-path"),
        (&["--ws-deflate"], "--ws"),
    ] {
        let out = Command::new(common::BIN)
            .args(["bench", "--addr", "127.0.0.1:9", "--check"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
