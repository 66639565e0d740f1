//! A small blocking WebSocket client for the tests, on the library's own
//! sans-I/O client (`ClientHandshake`, `Session::client`) over a real
//! socket. Interop with other implementations is tested with their
//! clients (Python `websockets`, tokio-tungstenite, Chromium).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use ringport::protocol::MessageKind;
use ringport::protocol::websocket::{
    ClientAccepted, ClientHandshake, ClientOptions, Event, Message, ResponseStatus, Session,
    SessionConfig,
};

use super::IO_TIMEOUT;

/// What a client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Pong,
    /// The close handshake ended with the server's code.
    Closed(u16),
    /// The connection ended without a close frame.
    Eof,
}

pub struct Ws {
    pub stream: TcpStream,
    pub session: Session,
    pub accepted: ClientAccepted,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// Connects and upgrades; `Err` holds the server's refusal (its status
/// line) or what went wrong.
pub fn connect(addr: SocketAddr, target: &str, protocols: &[&str]) -> Result<Ws, String> {
    connect_with(addr, target, protocols, None)
}

/// [`connect`], offering permessage-deflate at `deflate_level` if given.
pub fn connect_with(
    addr: SocketAddr,
    target: &str,
    protocols: &[&str],
    deflate_level: Option<u8>,
) -> Result<Ws, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let host = addr.to_string();
    let opts = ClientOptions {
        host: &host,
        target,
        protocols,
        deflate_level,
        ..ClientOptions::default()
    };
    let mut out = Vec::new();
    let handshake = ClientHandshake::new(&opts, &mut out);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    loop {
        match handshake.parse_response(&buf) {
            ResponseStatus::Partial => {}
            ResponseStatus::Complete { accepted, consumed } => {
                buf.drain(..consumed);
                let session = Session::client(&SessionConfig::default(), accepted.deflate);
                return Ok(Ws {
                    stream,
                    session,
                    accepted,
                    buf,
                    out: Vec::new(),
                });
            }
            ResponseStatus::Failed(why) => {
                let head = String::from_utf8_lossy(&buf);
                return Err(format!(
                    "{why}: {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            let head = String::from_utf8_lossy(&buf);
            return Err(format!(
                "closed: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Ws {
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        self.out.clear();
        self.session.send(kind, payload, &mut self.out).unwrap();
        self.stream.write_all(&self.out).unwrap();
    }

    pub fn text(&mut self, s: &str) {
        self.send(MessageKind::Text, s.as_bytes());
    }

    pub fn binary(&mut self, b: &[u8]) {
        self.send(MessageKind::Binary, b);
    }

    pub fn ping(&mut self, payload: &[u8]) {
        self.out.clear();
        self.session.ping(payload, &mut self.out).unwrap();
        self.stream.write_all(&self.out).unwrap();
    }

    /// Writes raw bytes (hand-made frames).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// [`Self::raw`], the write's error returned (the server may have
    /// closed).
    pub fn raw_checked(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next message, pong or end (pings from the server are answered
    /// on the way).
    pub fn recv(&mut self) -> Got {
        self.recv_until_timeout()
            .unwrap_or_else(|| panic!("read: nothing within {IO_TIMEOUT:?}"))
    }

    /// What arrives within `wait`, if anything.
    pub fn try_recv(&mut self, wait: std::time::Duration) -> Option<Got> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let got = self.recv_until_timeout();
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        got
    }

    /// [`Self::recv`], None when the socket's read timeout passes first.
    fn recv_until_timeout(&mut self) -> Option<Got> {
        loop {
            if !self.buf.is_empty() {
                self.out.clear();
                let read = self.session.read(&mut self.buf, &mut self.out);
                let consumed = read.consumed;
                let got = match read.event {
                    Event::NeedMore => None,
                    Event::Message(Message::Text(t)) => Some(Got::Text(t.to_owned())),
                    Event::Message(Message::Binary(b)) => Some(Got::Binary(b.to_vec())),
                    Event::Pong(_) => Some(Got::Pong),
                    Event::Closed { code, .. } => Some(Got::Closed(code.0)),
                    Event::Failed { code, reason } => {
                        panic!("the server broke the protocol: {} {reason}", code.0)
                    }
                };
                self.buf.drain(..consumed);
                if !self.out.is_empty() {
                    let _ = self.stream.write_all(&self.out);
                }
                if got.is_some() {
                    return got;
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(Got::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(Got::Eof),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Raw bytes as they arrive (frames not decoded).
    pub fn read_raw(&mut self) -> Vec<u8> {
        if !self.buf.is_empty() {
            return std::mem::take(&mut self.buf);
        }
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).unwrap();
        chunk[..n].to_vec()
    }
}
