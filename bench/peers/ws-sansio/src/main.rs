//! ws-sansio-echo: a WebSocket echo server made of ringport's sans-I/O
//! protocol (`ringport::protocol::websocket`) and blocking std sockets, one
//! thread per connection. Not a performance peer: it exists to run the
//! Autobahn cases against the protocol core before the engine serves
//! WebSocket (`scripts/autobahn.sh -- .../ws-sansio-echo --addr 127.0.0.1:{PORT}`),
//! and as a small, complete example of driving a `Session`.
//!
//! permessage-deflate is offered with the default [`DeflateConfig`] unless
//! `--deflate 0`; `--deflate-nct 1` forces no context takeover both ways.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use peer_common::{Args, BACKLOG};
use ringport::protocol::websocket::{
    AcceptOptions, DeflateConfig, Event, HandshakeLimits, Message, MessageKind, RequestStatus,
    Session, SessionConfig, parse_request,
};

const NAME: &str = "ws-sansio-echo";

fn main() {
    let args = Args::parse(
        NAME,
        "WebSocket echo server over ringport's sans-I/O protocol (thread per connection)",
        &[
            ("deflate", "offer permessage-deflate: 1 (default) or 0"),
            ("deflate-nct", "force no context takeover: 0 (default) or 1"),
        ],
    );
    let deflate = (args.get_usize("deflate", 1) != 0).then(|| DeflateConfig {
        server_no_context_takeover: args.get_usize("deflate-nct", 0) != 0,
        client_no_context_takeover: args.get_usize("deflate-nct", 0) != 0,
        min_compress_len: 0,
        ..DeflateConfig::default()
    });
    let listener: TcpListener = match peer_common::reuseport_listener(args.addr, BACKLOG) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{NAME}: bind {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    peer_common::announce(listener.local_addr().unwrap_or(args.addr));
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, deflate) {
                eprintln!("{NAME}: connection: {e}");
            }
        });
    }
}

fn serve(mut stream: TcpStream, deflate: Option<DeflateConfig>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    // Handshake.
    let (request, consumed) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf, &HandshakeLimits::default()) {
            RequestStatus::Partial => {}
            RequestStatus::Complete { request, consumed } => break (request, consumed),
            RequestStatus::Refused(r) => {
                r.write_response(&mut out);
                return stream.write_all(&out);
            }
        }
    };
    buf.drain(..consumed);
    let opts = AcceptOptions {
        deflate,
        ..AcceptOptions::default()
    };
    let negotiated = request
        .accept(&opts, None, &mut out)
        .map_err(std::io::Error::other)?;
    stream.write_all(&out)?;
    out.clear();
    let cfg = SessionConfig::default();
    let mut session = Session::server(&cfg, negotiated.deflate);
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    loop {
        // Process what is buffered.
        let mut off = 0;
        let finished = loop {
            let r = session.read(&mut buf[off..], &mut out);
            off += r.consumed;
            match r.event {
                Event::NeedMore => break false,
                Event::Message(m) => {
                    let (kind, data) = match m {
                        Message::Text(t) => (MessageKind::Text, t.as_bytes()),
                        Message::Binary(b) => (MessageKind::Binary, b),
                    };
                    let data = data.to_vec();
                    let _ = session.send(kind, &data, &mut out);
                }
                Event::Pong(_) => {}
                Event::Closed { .. } | Event::Failed { .. } => break true,
            }
        };
        buf.drain(..off);
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if finished || session.handle_timeout(Instant::now()) {
            // The server closes the TCP connection first (RFC 6455 §7.1.1).
            return stream.shutdown(std::net::Shutdown::Both);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
}
