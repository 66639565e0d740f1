//! WebSocket interop (issue 28 item 8): two independent client
//! implementations against the server's `--ws-addr` in echo and chat
//! modes, over ws:// and wss:// (a test CA made here):
//!
//! - tokio-tungstenite (Rust): text, binary, 1 MiB messages sent in
//!   fragments, a fragmented text message split inside a UTF-8 sequence with
//!   a ping between its fragments, ping/pong, close codes (1000 and 4001
//!   echoed; 1002 for an unmasked frame, 1007 for invalid UTF-8, 1001 when
//!   the server stops), and chat with a framed-TCP client in the room.
//!   tungstenite has no permessage-deflate: deflate is the Python client's.
//! - Python `websockets` (tests/ws_support/ws_interop_client.py; install
//!   with scripts/install-python-ws.sh): the same shapes plus
//!   permessage-deflate negotiated (the default offer, and no context
//!   takeover with a 10-bit server window).
//!
//! The server is `ringport serve --addr .. --ws-addr .. --ws-deflate` in
//! echo or chat mode (plain, and with --tls-cert/--tls-key).

mod common;
mod ws_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, collect};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use ws_common::{Mode, TempDir, TestCa, WsServed, ws_serve};

/// Bound for any one step (connect, one message, a close).
const STEP: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Ws = WebSocketStream<Box<dyn Io>>;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

/// A tokio-tungstenite client on the server's WebSocket port (over
/// tokio-rustls when the server has TLS, checking its certificate against
/// the test CA for the name localhost).
async fn ws_connect(served: &WsServed) -> Ws {
    let tcp = within(
        "connect",
        tokio::net::TcpStream::connect(("127.0.0.1", served.ws_port)),
    )
    .await
    .expect("connect to --ws-addr");
    tcp.set_nodelay(true).unwrap();
    let io: Box<dyn Io> = match &served.tls {
        Some(config) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone());
            Box::new(
                within("TLS handshake", tls.connect(name, tcp))
                    .await
                    .expect("TLS handshake"),
            )
        }
        None => Box::new(tcp),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(4 * MIB))
        .max_frame_size(Some(4 * MIB));
    let (ws, response) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async_with_config(served.ws_url("/interop"), io, Some(config)),
    )
    .await
    .unwrap_or_else(|e| panic!("WebSocket handshake: {e}\n{}", served.output()));
    assert_eq!(response.status(), 101);
    ws
}

/// The next message of any kind (tungstenite answers pings by itself).
async fn next(ws: &mut Ws, what: &str) -> Message {
    match within(what, ws.next()).await {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{what}: {e}"),
        None => panic!("{what}: connection ended"),
    }
}

/// The next text or binary message.
async fn next_data(ws: &mut Ws, what: &str) -> Message {
    loop {
        match next(ws, what).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

/// The close frame the server sends next (data before it fails the test),
/// then the end of the connection: tungstenite answers the close and the
/// server closes TCP. The socket is closed here too (a client that kept it
/// open would hold the server's connection until its close timeout).
async fn expect_close(mut ws: Ws, code: u16, what: &str) {
    match next_data(&mut ws, what).await {
        Message::Close(Some(CloseFrame { code: got, .. })) => {
            assert_eq!(u16::from(got), code, "{what}")
        }
        other => panic!("{what}: expected close {code}, got {other:?}"),
    }
    expect_end(ws, what).await;
}

/// The connection ends (after a close handshake) within [`STEP`].
async fn expect_end(mut ws: Ws, what: &str) {
    match within(what, ws.next()).await {
        None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {}
        other => panic!("{what}: expected the end of the connection, got {other:?}"),
    }
}

/// `data` as a fragmented message: `pieces` frames, the first with
/// `opcode`, the others continuations, the last final.
fn fragments(data: &[u8], pieces: usize, opcode: Data) -> Vec<Message> {
    let size = data.len().div_ceil(pieces);
    let chunks: Vec<&[u8]> = data.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let op = if i == 0 { opcode } else { Data::Continue };
            Message::Frame(Frame::message(
                chunk.to_vec(),
                OpCode::Data(op),
                i + 1 == chunks.len(),
            ))
        })
        .collect()
}

async fn send_all(ws: &mut Ws, messages: Vec<Message>) {
    for m in messages {
        within("send", ws.feed(m)).await.expect("send");
    }
    within("flush", ws.flush()).await.expect("flush");
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000 ^ n as u64);
    (0..n).map(|_| rng.u8(..)).collect()
}

async fn tungstenite_echo(tls: bool) {
    let dir = TempDir::new(if tls {
        "interop-echo-wss"
    } else {
        "interop-echo-ws"
    });
    let ca = tls.then(|| TestCa::issue(dir.path()));
    let served = ws_serve(Mode::Echo, ca.as_ref());
    let mut ws = ws_connect(&served).await;

    let text = "héllo ✓ žluťoučký 🚀";
    send_all(&mut ws, vec![Message::text(text)]).await;
    assert_eq!(next_data(&mut ws, "text echo").await, Message::text(text));

    let binary: Vec<u8> = (0..=255).collect();
    send_all(&mut ws, vec![Message::binary(binary.clone())]).await;
    assert_eq!(
        next_data(&mut ws, "binary echo").await,
        Message::binary(binary)
    );

    // 1 MiB binary in 16 fragments, echoed whole.
    let big = random_bytes(MIB);
    send_all(&mut ws, fragments(&big, 16, Data::Binary)).await;
    match next_data(&mut ws, "1 MiB echo").await {
        Message::Binary(got) => assert!(got[..] == big[..], "1 MiB echo differs"),
        other => panic!("1 MiB echo: {other:?}"),
    }

    // 1 MiB of text in 2 fragments split inside a 4-byte UTF-8 sequence,
    // a ping between them: the pong comes back (control frames may come
    // between fragments), and the text whole.
    let piece = "ž🚀 ringport ";
    let big_text = piece.repeat(MIB / piece.len());
    let cut = big_text.len() / 2 + (piece.len() - (big_text.len() / 2) % piece.len()) + 3;
    assert!(
        !big_text.is_char_boundary(cut),
        "the cut must split a UTF-8 sequence"
    );
    let bytes = big_text.as_bytes();
    send_all(
        &mut ws,
        vec![
            Message::Frame(Frame::message(
                bytes[..cut].to_vec(),
                OpCode::Data(Data::Text),
                false,
            )),
            Message::Ping(b"between fragments".to_vec().into()),
            Message::Frame(Frame::message(
                bytes[cut..].to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )),
        ],
    )
    .await;
    let (mut pong, mut echoed) = (false, false);
    while !(pong && echoed) {
        match next(&mut ws, "pong and fragmented text echo").await {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"between fragments");
                pong = true;
            }
            Message::Text(t) => {
                assert!(t.as_str() == big_text, "fragmented text echo differs");
                echoed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    send_all(&mut ws, vec![Message::Ping(b"interop".to_vec().into())]).await;
    match next(&mut ws, "pong").await {
        Message::Pong(p) => assert_eq!(&p[..], b"interop"),
        other => panic!("pong: {other:?}"),
    }

    // Close with an application code: echoed (RFC 6455 §5.5.1).
    within(
        "close",
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "interop bye".into(),
        })),
    )
    .await
    .expect("send close");
    expect_close(ws, 4001, "close 4001 echoed").await;

    let mut ws = ws_connect(&served).await;
    within("close", ws.close(None)).await.expect("send close");
    match next_data(&mut ws, "close 1000").await {
        Message::Close(frame) => assert!(
            frame.as_ref().is_none_or(|f| f.code == CloseCode::Normal),
            "close answered with {frame:?}"
        ),
        other => panic!("close: {other:?}"),
    }
    expect_end(ws, "end after close").await;
    served.stop();
}

#[tokio::test]
async fn tungstenite_echo_over_ws() {
    tungstenite_echo(false).await;
}

#[tokio::test]
async fn tungstenite_echo_over_wss() {
    tungstenite_echo(true).await;
}

#[tokio::test]
async fn server_closes_protocol_errors_with_1002_and_1007() {
    let served = ws_serve(Mode::Echo, None);

    // Invalid UTF-8 in a text message: 1007.
    let mut ws = ws_connect(&served).await;
    send_all(
        &mut ws,
        vec![Message::Frame(Frame::message(
            b"\xff\xfe not UTF-8".to_vec(),
            OpCode::Data(Data::Text),
            true,
        ))],
    )
    .await;
    expect_close(ws, 1007, "invalid UTF-8").await;

    // A client frame without a mask: 1002. Written under tungstenite, which
    // masks everything it sends.
    let mut ws = ws_connect(&served).await;
    within("write", ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']))
        .await
        .unwrap();
    within("flush", ws.get_mut().flush()).await.unwrap();
    expect_close(ws, 1002, "unmasked client frame").await;
    served.stop();
}

#[tokio::test]
async fn server_stopping_closes_websockets_with_1001() {
    let mut served = ws_serve(Mode::Echo, None);
    let mut ws = ws_connect(&served).await;
    send_all(&mut ws, vec![Message::text("before stop")]).await;
    assert_eq!(
        next_data(&mut ws, "echo").await,
        Message::text("before stop")
    );
    served.terminate();
    expect_close(ws, 1001, "server stopping").await;
    served.wait_exit();
}

async fn tungstenite_chat(tls: bool) {
    let dir = TempDir::new(if tls {
        "interop-chat-wss"
    } else {
        "interop-chat-ws"
    });
    let ca = tls.then(|| TestCa::issue(dir.path()));
    let served = ws_serve(Mode::Chat, ca.as_ref());
    let mut a = ws_connect(&served).await;
    let mut b = ws_connect(&served).await;
    let mut tcp = served.framed_client();
    tcp.set_timeout(Some(IO_TIMEOUT)).unwrap();
    // Every member is in the room once a message from each reached the
    // others (a join is not otherwise observable): the TCP client's frame
    // reaching both WebSocket clients proves both joined before it.
    tcp.send(b"tcp joined").unwrap();
    assert_eq!(tcp.recv().unwrap(), b"tcp joined");
    for (name, ws) in [("a", &mut a), ("b", &mut b)] {
        assert_eq!(
            next_data(ws, name).await,
            Message::binary(b"tcp joined".to_vec()),
            "{name}"
        );
    }

    let text = "chat text ✓";
    send_all(&mut a, vec![Message::text(text)]).await;
    for (name, ws) in [("sender", &mut a), ("other", &mut b)] {
        assert_eq!(
            next_data(ws, name).await,
            Message::text(text),
            "text at {name}"
        );
    }
    assert_eq!(
        tcp.recv().unwrap(),
        text.as_bytes(),
        "text at the TCP client"
    );

    let binary = b"\x00\xffchat binary".to_vec();
    send_all(&mut b, vec![Message::binary(binary.clone())]).await;
    for (name, ws) in [("other", &mut a), ("sender", &mut b)] {
        assert_eq!(
            next_data(ws, name).await,
            Message::binary(binary.clone()),
            "binary at {name}"
        );
    }
    assert_eq!(tcp.recv().unwrap(), binary, "binary at the TCP client");

    let big = random_bytes(MIB);
    send_all(&mut a, fragments(&big, 10, Data::Binary)).await;
    for (name, ws) in [("sender", &mut a), ("other", &mut b)] {
        match next_data(ws, name).await {
            Message::Binary(got) => assert!(got[..] == big[..], "1 MiB differs at {name}"),
            other => panic!("1 MiB at {name}: {other:?}"),
        }
    }
    assert!(
        tcp.recv().unwrap() == big,
        "1 MiB differs at the TCP client"
    );

    for mut ws in [a, b] {
        within("close", ws.close(None)).await.expect("close");
        assert!(matches!(
            next_data(&mut ws, "close").await,
            Message::Close(_)
        ));
        expect_end(ws, "end after close").await;
    }
    drop(tcp);
    served.stop();
}

#[tokio::test]
async fn tungstenite_chat_with_a_framed_tcp_client_over_ws() {
    tungstenite_chat(false).await;
}

#[tokio::test]
async fn tungstenite_chat_with_a_framed_tcp_client_over_wss() {
    tungstenite_chat(true).await;
}

/// Runs tests/ws_support/ws_interop_client.py against a server in `mode`;
/// returns the names of the checks it passed.
fn python_client(mode: Mode, tls: bool) -> Vec<String> {
    ws_common::require_python_websockets();
    let dir = TempDir::new(&format!("interop-py-{}-{tls}", mode.as_str()));
    let ca = tls.then(|| TestCa::issue(dir.path()));
    let served = ws_serve(mode, ca.as_ref());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws_support/ws_interop_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--url", &served.ws_url("/interop"), "--mode", mode.as_str()])
        .args(["--tcp", &format!("127.0.0.1:{}", served.tcp_port)]);
    if let Some(ca) = &ca {
        cmd.arg("--ca").arg(&ca.ca);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ws_interop_client.py");
    let stdout = Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let readers = [
        collect(child.stdout.take().unwrap(), stdout.clone()),
        collect(child.stderr.take().unwrap(), stderr.clone()),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ws_interop_client.py ran over 120 s\n{}", served.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        r.join().unwrap();
    }
    let (out, err) = (
        stdout.lock().unwrap().clone(),
        stderr.lock().unwrap().clone(),
    );
    assert!(
        status.success(),
        "ws_interop_client.py {mode:?} tls={tls}: {status}\n{out}\n{err}\n{}",
        served.output()
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("report JSON");
    eprintln!("python websockets, {mode:?}, tls={tls}: {report}");
    served.stop();
    report["passed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

const PY_ECHO_CHECKS: &[&str] = &[
    "text",
    "binary",
    "binary 1 MiB in 16 fragments",
    "text 1 MiB in fragments",
    "ping/pong",
    "permessage-deflate negotiated",
    "close 4001 echoed",
    "deflate with no context takeover, 10-bit window",
    "close 1000 echoed",
    "invalid UTF-8 closed with 1007",
];
const PY_CHAT_CHECKS: &[&str] = &[
    "text to both WebSocket clients as text, to TCP as a frame",
    "binary to both WebSocket clients as binary, to TCP as a frame",
    "TCP frame to WebSocket clients as binary",
    "1 MiB fragmented message to everyone whole",
    "ping/pong",
];

fn assert_checks(passed: &[String], expected: &[&str]) {
    assert_eq!(passed.len(), expected.len(), "{passed:?}");
    for (got, want) in passed.iter().zip(expected) {
        assert!(got.starts_with(want), "check {got:?}, expected {want:?}");
    }
}

#[test]
fn python_websockets_echo_over_ws() {
    assert_checks(&python_client(Mode::Echo, false), PY_ECHO_CHECKS);
}

#[test]
fn python_websockets_echo_over_wss() {
    assert_checks(&python_client(Mode::Echo, true), PY_ECHO_CHECKS);
}

#[test]
fn python_websockets_chat_over_ws() {
    assert_checks(&python_client(Mode::Chat, false), PY_CHAT_CHECKS);
}

#[test]
fn python_websockets_chat_over_wss() {
    assert_checks(&python_client(Mode::Chat, true), PY_CHAT_CHECKS);
}
