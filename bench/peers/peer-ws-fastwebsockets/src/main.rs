//! peer-ws-fastwebsockets: WebSocket echo server on fastwebsockets (tokio
//! multi-thread runtime, `--threads` workers). fastwebsockets leaves the HTTP
//! upgrade to hyper; this peer reads the upgrade request itself with
//! `httparse` (the same checks as any server: GET, `Upgrade: websocket`,
//! version 13, a key) and hands the stream to `WebSocket::after_handshake`.
//! Fragmented messages are reassembled by its `FragmentCollector` (which also
//! validates UTF-8); pings and closes are answered by the library
//! (auto_pong, auto_close). No compression (the library has none).

use std::time::Duration;

use base64::Engine as _;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use peer_common::{Args, BACKLOG};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

const NAME: &str = "peer-ws-fastwebsockets";
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_REQUEST: usize = 8192;

fn main() {
    let args = Args::parse(NAME, "WebSocket echo server (fastwebsockets)", &[]);
    peer_common::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("{NAME}: runtime: {e}");
            std::process::exit(1)
        });
    let code = rt.block_on(async move {
        let listener = match peer_common::reuseport_listener(args.addr, BACKLOG)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{NAME}: bind {}: {e}", args.addr);
                return 1;
            }
        };
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("{NAME}: cannot install signal handlers");
            return 1;
        };
        peer_common::announce(listener.local_addr().unwrap_or(args.addr));
        let acceptor = tokio::spawn(accept_loop(listener));
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("{NAME}: shutting down");
        acceptor.abort();
        0
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Reads the upgrade request and answers 101 (or 400 and `None`).
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    let key = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(used)) => {
                // A client speaks only after the 101: nothing may follow.
                if used != buf.len() {
                    return None;
                }
                let get = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let upgrade_ok =
                    get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
                let version_ok = get("sec-websocket-version") == Some(b"13");
                match (req.method, upgrade_ok, version_ok, get("sec-websocket-key")) {
                    (Some("GET"), true, true, Some(key)) => break key.to_vec(),
                    _ => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return None;
                    }
                }
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            _ => return None,
        }
    };
    let mut sha = Sha1::new();
    sha.update(&key);
    sha.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        let echo = matches!(frame.opcode, OpCode::Text | OpCode::Binary);
        if frame.opcode == OpCode::Close || (echo && ws.write_frame(frame).await.is_err()) {
            return;
        }
    }
}
