//! The WebSocket clients ([`ringport::Client::ws`],
//! [`ringport::AsyncClient::ws`]) against real WebSocket servers on
//! loopback: tokio-tungstenite (in this process, scripted per test), the
//! Python `websockets` package (permessage-deflate, wss with a test CA, a
//! fragmented message), and raw sockets speaking ringport's own sans-I/O
//! server session for the error paths (a masked server frame, a refused
//! upgrade).

mod common;
mod tls_util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringport::protocol::websocket::{
    AcceptOptions, CloseCode, HandshakeLimits, MessageKind, RequestStatus, parse_request,
};
use ringport::tls::pem;
use ringport::{AsyncClient, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// What the tungstenite server saw in the upgrade request.
#[derive(Debug, Default, Clone)]
struct Seen {
    uri: String,
    origin: Option<String>,
    protocols: Option<String>,
}

/// A one-connection tokio-tungstenite server on its own thread and
/// runtime, running `script` on the accepted WebSocket. It chooses the
/// subprotocol `chat.v1` when offered.
fn tungstenite<F, Fut>(script: F) -> (SocketAddr, Arc<Mutex<Seen>>, thread::JoinHandle<()>)
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().await.unwrap();
            let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                let header = |n: &str| {
                    req.headers()
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                };
                let protocols = header("sec-websocket-protocol");
                if protocols.as_deref().is_some_and(|p| p.contains("chat.v1")) {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
                }
                *seen2.lock().unwrap() = Seen {
                    uri: req.uri().to_string(),
                    origin: header("origin"),
                    protocols,
                };
                Ok(resp)
            };
            let ws = tokio_tungstenite::accept_hdr_async(s, callback)
                .await
                .unwrap();
            script(ws).await;
        })
    });
    (rx.recv().unwrap(), seen, h)
}

/// Echoes text and binary messages until the client closes.
async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(m) = ws.next().await {
        match m {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => ws.send(m).await.unwrap(),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

#[test]
fn text_binary_large_and_subprotocol_against_tungstenite() {
    let (addr, seen, h) = tungstenite(echo);
    let mut c = Client::ws(url(addr, "/room/7?token=abc"))
        .protocol("nope")
        .protocol("chat.v1")
        .header("Origin", "https://example.test")
        .connect()
        .unwrap();
    assert!(c.is_websocket());
    assert_eq!(c.ws_protocol(), Some("chat.v1"));
    assert_eq!(c.ws_deflate(), None);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.uri, "/room/7?token=abc");
        assert_eq!(seen.origin.as_deref(), Some("https://example.test"));
        assert_eq!(seen.protocols.as_deref(), Some("nope, chat.v1"));
    }
    c.send_text("héllo wörld").unwrap();
    let mut buf = Vec::new();
    assert_eq!(c.recv_into(&mut buf).unwrap(), MessageKind::Text);
    assert_eq!(buf, "héllo wörld".as_bytes());
    c.send(&[0, 1, 2, 255]).unwrap();
    assert_eq!(
        c.recv_with_kind().unwrap(),
        (MessageKind::Binary, vec![0, 1, 2, 255])
    );
    // Empty, 125/126/65535/65536 (the length encodings' edges), 3 MiB.
    for len in [0usize, 125, 126, 65_535, 65_536, 3 << 20] {
        let payload = common::pattern(len as u64, len);
        c.send(&payload).unwrap();
        assert_eq!(c.recv().unwrap(), payload, "{len} bytes");
    }
    // Many messages in flight, then all their echoes.
    for i in 0..200u32 {
        c.send(&i.to_be_bytes()).unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(c.recv().unwrap(), i.to_be_bytes());
    }
    c.close_ws(CloseCode::NORMAL, "bye").unwrap();
    // After the close: every call reports the end.
    let e = c.recv().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    assert!(c.send(b"x").is_err());
    h.join().unwrap();
}

/// The server fragments a 3 MiB message (64 KiB frames, a ping between
/// two of them), checks that the pong comes back, then closes.
#[test]
fn fragmented_message_ping_and_server_close() {
    let big = common::pattern(9, 3 << 20);
    let expected = big.clone();
    let (addr, _, h) = tungstenite(move |mut ws| async move {
        let chunks: Vec<&[u8]> = big.chunks(64 << 10).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let op = if i == 0 { Data::Binary } else { Data::Continue };
            let fin = i == chunks.len() - 1;
            ws.send(Message::Frame(Frame::message(
                chunk.to_vec(),
                OpCode::Data(op),
                fin,
            )))
            .await
            .unwrap();
            if i == 3 {
                ws.send(Message::Ping(b"between".to_vec().into()))
                    .await
                    .unwrap();
            }
        }
        // The client's pong, then a text message, then our close.
        match ws.next().await.unwrap().unwrap() {
            Message::Pong(p) => assert_eq!(&p[..], b"between"),
            other => panic!("expected the pong, got {other:?}"),
        }
        ws.send(Message::text("after")).await.unwrap();
        ws.close(None).await.unwrap();
        // The client answers our close: the stream then ends.
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    });
    let mut c = Client::connect_ws(&url(addr, "/")).unwrap();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(c.recv().unwrap(), expected);
    assert_eq!(
        c.recv_with_kind().unwrap(),
        (MessageKind::Text, b"after".to_vec())
    );
    let e = c.recv().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("WebSocket close 1005"), "{e}");
    h.join().unwrap();
}

/// Our ping is answered by the server's pong (counted, not returned).
#[test]
fn client_ping_gets_a_pong() {
    let (addr, _, h) = tungstenite(echo);
    let mut c = Client::connect_ws(&url(addr, "/")).unwrap();
    c.ping(b"are you there").unwrap();
    assert!(c.ping(&[0; 126]).is_err(), "over 125 bytes");
    c.send(b"after the ping").unwrap();
    assert_eq!(c.recv().unwrap(), b"after the ping");
    assert_eq!(c.pongs(), 1);
    c.close_ws(CloseCode::NORMAL, "").unwrap();
    h.join().unwrap();
}

/// Reads an HTTP request head (up to its blank line) from `s`.
fn read_request(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed before its request ended");
        req.extend_from_slice(&buf[..n]);
    }
    req
}

/// A raw server: reads the upgrade request, then writes `reply(request)`.
fn raw_server(
    reply: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = read_request(&mut s);
        s.write_all(&reply(&req)).unwrap();
        // Keep the socket open until the client is done with it.
        let _ = s.read(&mut [0u8; 4096]);
    });
    (addr, h)
}

/// The 101 of ringport's own server-side handshake for `req`.
fn accept(req: &[u8]) -> Vec<u8> {
    let RequestStatus::Complete { request, .. } = parse_request(req, &HandshakeLimits::default())
    else {
        panic!("a complete upgrade request")
    };
    let mut out = Vec::new();
    request
        .accept(&AcceptOptions::default(), None, &mut out)
        .unwrap();
    out
}

#[test]
fn a_masked_server_frame_is_invalid_data_and_closes_with_1002() {
    let (addr, h) = raw_server(|req| {
        let mut out = accept(req);
        // A binary frame "ok", then a masked one (servers must not mask).
        out.extend_from_slice(&[0x82, 2, b'o', b'k']);
        out.extend_from_slice(&[0x82, 0x81, 1, 2, 3, 4, 0x55]);
        out
    });
    let mut c = Client::connect_ws(&url(addr, "/")).unwrap();
    assert_eq!(c.recv().unwrap(), b"ok");
    let e = c.recv().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("1002"), "{e}");
    // And it sticks.
    assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
    drop(c);
    h.join().unwrap();
}

#[test]
fn invalid_utf8_text_is_invalid_data() {
    let (addr, h) = raw_server(|req| {
        let mut out = accept(req);
        out.extend_from_slice(&[0x81, 2, 0xc3, 0x28]);
        out
    });
    let mut c = Client::connect_ws(&url(addr, "/")).unwrap();
    let e = c.recv().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("1007"), "{e}");
    drop(c);
    h.join().unwrap();
}

#[test]
fn refused_and_wrong_upgrades_fail_the_connect() {
    let (addr, h) = raw_server(|_| b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec());
    let e = Client::connect_ws(&url(addr, "/")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("status 403"), "{e}");
    h.join().unwrap();

    // A 101 with another key's accept value.
    let (addr, h) = raw_server(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec()
    });
    let e = Client::connect_ws(&url(addr, "/")).unwrap_err();
    assert!(e.to_string().contains("Sec-WebSocket-Accept"), "{e}");
    h.join().unwrap();

    // A server that closes without answering.
    let (addr, h) = raw_server(|_| Vec::new());
    let c = Client::ws(url(addr, "/"))
        .timeout(Duration::from_millis(300))
        .connect();
    assert_eq!(c.unwrap_err().kind(), io::ErrorKind::TimedOut);
    h.join().unwrap();

    assert_eq!(
        Client::connect_ws("http://127.0.0.1:1/")
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn a_server_closing_the_tcp_connection_is_unexpected_eof() {
    let (addr, h) = raw_server(|req| {
        let mut out = accept(req);
        // Half a frame, then the connection ends (the raw server's read
        // returns when the client drops; the write side closes at exit).
        out.extend_from_slice(&[0x82, 10, 1, 2]);
        out
    });
    let mut c = Client::connect_ws(&url(addr, "/")).unwrap();
    c.set_timeout(Some(Duration::from_millis(200))).unwrap();
    // The rest never comes: a timeout, and recv can be retried.
    assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::TimedOut);
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    h.join().unwrap();
    let e = c.recv().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(e.to_string(), "connection closed mid-frame");
}

// ---- Python `websockets`: permessage-deflate, wss, fragments ----------

const PYTHON_SERVER: &str = r#"
import asyncio, ssl, sys
from websockets.asyncio.server import serve

async def handler(ws):
    async for m in ws:
        if m == "fragments":
            # One text message in 5 fragments.
            await ws.send(["frag%d-" % i for i in range(5)])
        elif m == "whoami":
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send("ext=" + ext)
        else:
            await ws.send(m)

async def main():
    ctx = None
    if len(sys.argv) > 1:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    async with serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=32 << 20) as server:
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

/// The Python server (with TLS if `pki` is given), or `None` when the
/// tests that need python3 were opted out of (`RINGPORT_SKIP=python3`).
fn python(pki: Option<&tls_util::Pki>) -> Option<Python> {
    if !common::require_program("python3", "python3", "python3") {
        return None;
    }
    let check = Command::new("python3")
        .args(["-c", "import websockets.asyncio.server"])
        .status()
        .unwrap();
    assert!(
        check.success(),
        "the Python package websockets (13 or later) is missing: pip install websockets"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PYTHON_SERVER]);
    if let Some(pki) = pki {
        cmd.arg(pki.path("server.pem")).arg(pki.path("server.key"));
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Some(Python(child, port))
}

fn trusting(pki: &tls_util::Pki) -> Arc<ringport::tls::rustls::ClientConfig> {
    Arc::new(pem::client_config(Some(&pki.path("ca.pem")), false, None).unwrap())
}

fn python_conversation(c: &mut Client, deflate: bool) {
    c.send_text("whoami").unwrap();
    let ext = String::from_utf8(c.recv().unwrap()).unwrap();
    assert_eq!(ext.contains("permessage-deflate"), deflate, "{ext}");
    assert_eq!(c.ws_deflate().is_some(), deflate);
    c.send_text("fragments").unwrap();
    assert_eq!(
        c.recv_with_kind().unwrap(),
        (
            MessageKind::Text,
            b"frag0-frag1-frag2-frag3-frag4-".to_vec()
        )
    );
    // Compressible and incompressible, small and large.
    let text = "ringport ".repeat(100_000);
    c.send_text(&text).unwrap();
    assert_eq!(c.recv().unwrap(), text.as_bytes());
    for len in [10usize, 70_000, 5 << 20] {
        let payload = common::pattern(len as u64, len);
        c.send(&payload).unwrap();
        assert_eq!(c.recv_with_kind().unwrap(), (MessageKind::Binary, payload));
    }
    c.ping(b"py").unwrap();
    c.send(b"sync").unwrap();
    assert_eq!(c.recv().unwrap(), b"sync");
    assert_eq!(c.pongs(), 1);
    c.close_ws(CloseCode::NORMAL, "done").unwrap();
}

#[test]
fn python_websockets_with_and_without_deflate() {
    let Some(py) = python(None) else { return };
    for deflate in [true, false] {
        let mut c = Client::ws(format!("ws://127.0.0.1:{}/", py.1))
            .deflate(deflate)
            .connect()
            .unwrap();
        python_conversation(&mut c, deflate);
    }
}

#[test]
fn python_websockets_over_wss() {
    let pki = tls_util::Pki::new();
    let Some(py) = python(Some(&pki)) else { return };
    let mut c = Client::ws(format!("wss://localhost:{}/", py.1))
        .deflate(true)
        .tls_config(trusting(&pki))
        .connect()
        .unwrap();
    python_conversation(&mut c, true);

    // A CA that did not sign the server's certificate: the connect fails.
    let other = Arc::new(pem::client_config(Some(&pki.path("other-ca.pem")), false, None).unwrap());
    let e = Client::ws(format!("wss://localhost:{}/", py.1))
        .tls_config(other)
        .connect()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

// ---- AsyncClient ------------------------------------------------------

async fn async_conversation(c: &mut AsyncClient, deflate: bool) {
    assert!(c.is_websocket());
    assert_eq!(c.ws_deflate().is_some(), deflate);
    c.send_text("fragments").await.unwrap();
    assert_eq!(
        c.recv_with_kind().await.unwrap(),
        (
            MessageKind::Text,
            b"frag0-frag1-frag2-frag3-frag4-".to_vec()
        )
    );
    for len in [0usize, 126, 70_000, 3 << 20] {
        let payload = common::pattern(len as u64, len);
        c.send(&payload).await.unwrap();
        let got = c.recv().await.unwrap();
        assert_eq!(&got[..], &payload[..], "{len} bytes");
    }
    c.ping(b"a").await.unwrap();
    c.send_text("sync").await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(c.recv_into(&mut buf).await.unwrap(), MessageKind::Text);
    assert_eq!(buf, b"sync");
    assert_eq!(c.pongs(), 1);
    c.close_ws(CloseCode::NORMAL, "").await.unwrap();
    let e = c.recv().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn async_client_against_python_ws_and_wss() {
    let pki = tls_util::Pki::new();
    let Some(py) = python(None) else { return };
    let Some(pys) = python(Some(&pki)) else {
        return;
    };
    let mut c = AsyncClient::ws(format!("ws://127.0.0.1:{}/x", py.1))
        .deflate(true)
        .connect_async()
        .await
        .unwrap();
    async_conversation(&mut c, true).await;
    let mut c = AsyncClient::ws(format!("wss://localhost:{}/", pys.1))
        .tls_config(trusting(&pki))
        .connect_async()
        .await
        .unwrap();
    async_conversation(&mut c, false).await;
}

#[tokio::test]
async fn async_client_against_tungstenite() {
    let (addr, seen, h) = tungstenite(echo);
    let mut c = AsyncClient::ws(url(addr, "/a?b=c"))
        .protocol("chat.v1")
        .connect_async()
        .await
        .unwrap();
    assert_eq!(c.ws_protocol(), Some("chat.v1"));
    assert_eq!(seen.lock().unwrap().uri, "/a?b=c");
    c.send_text("hello").await.unwrap();
    assert_eq!(
        c.recv_with_kind().await.unwrap(),
        (MessageKind::Text, b"hello".to_vec())
    );
    let big = common::pattern(3, 1 << 20);
    c.send(&big).await.unwrap();
    assert_eq!(&c.recv().await.unwrap()[..], &big[..]);
    c.close_ws(CloseCode::NORMAL, "bye").await.unwrap();
    tokio::task::spawn_blocking(move || h.join().unwrap())
        .await
        .unwrap();
}

#[test]
fn the_framed_client_api_still_frames() {
    // recv_into on a framed connection: binary messages.
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let p = ringport::client::read_frame(&mut s, 1 << 20).unwrap();
        ringport::client::write_frame(&mut s, &p).unwrap();
    });
    let mut c = Client::connect(addr).unwrap();
    assert!(!c.is_websocket());
    assert!(c.ping(b"x").is_err());
    c.send_text("framed").unwrap();
    let mut buf = Vec::new();
    assert_eq!(c.recv_into(&mut buf).unwrap(), MessageKind::Binary);
    assert_eq!(buf, b"framed");
    h.join().unwrap();
}

/// A peer that never answers our close: `close_ws` gives up after the
/// session's close timeout.
#[test]
fn close_ws_waits_at_most_the_close_timeout() {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = read_request(&mut s);
        s.write_all(&accept(&req)).unwrap();
        // Read (our close frame among it) until the client goes away.
        let mut buf = [0u8; 4096];
        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let cfg = ringport::protocol::websocket::SessionConfig {
        close_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let mut c = Client::ws(url(addr, "/"))
        .session_config(cfg)
        .connect()
        .unwrap();
    let began = std::time::Instant::now();
    let e = c.close_ws(CloseCode::GOING_AWAY, "").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    drop(c);
    h.join().unwrap();
}
