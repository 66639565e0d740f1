//! WebSocket clients (feature `websocket`): [`WsBuilder`] opens a `ws://`
//! or `wss://` connection as a blocking [`Client`] (or, with the feature
//! `tokio`, an `AsyncClient`); the protocol is the
//! sans-I/O [`Session`] of [`crate::protocol::websocket`], in the client
//! role (every frame sent is masked).
//!
//! On a WebSocket client, [`Client::send`] sends a binary message,
//! [`Client::send_text`] a text one, [`Client::recv`] returns the next whole
//! message of either kind (fragmented messages are reassembled, compressed
//! ones inflated) and [`Client::recv_into`] says which kind it was. Pings
//! are answered while receiving. Errors, as for framed connections:
//! - the peer closed: `UnexpectedEof` ("connection closed by peer
//!   (WebSocket close 1000 ...)" after a close handshake, "connection
//!   closed by peer without a WebSocket close" or "connection closed
//!   mid-frame" when the TCP connection just ended);
//! - the peer broke the protocol (a masked frame, invalid UTF-8 in a text
//!   message, a message over the maximum, corrupt compressed data):
//!   `InvalidData`; the close frame with the matching code (1002, 1007,
//!   1009) was sent;
//! - a refused or malformed upgrade: `InvalidData` ("WebSocket upgrade
//!   failed: status 403 Forbidden");
//! - a timeout: `TimedOut`.
//!
//! ```no_run
//! use ringport::Client;
//! use ringport::protocol::websocket::MessageKind;
//!
//! let mut client = Client::ws("ws://127.0.0.1:9001/chat?room=1")
//!     .protocol("chat.v1")
//!     .header("Origin", "https://example.com")
//!     .deflate(true)
//!     .connect()?;
//! client.send_text("hello")?;
//! let mut buf = Vec::new();
//! match client.recv_into(&mut buf)? {
//!     MessageKind::Text => println!("text: {}", String::from_utf8_lossy(&buf)),
//!     MessageKind::Binary => println!("{} bytes", buf.len()),
//! }
//! client.close_ws(ringport::protocol::websocket::CloseCode::NORMAL, "bye")?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

use super::{Client, timeout_kind};
use crate::codec::{Codec, LengthDelimited};
use crate::protocol::websocket::{
    ClientHandshake, ClientOptions, CloseCode, DeflateParams, Event, MessageKind, ResponseStatus,
    Session, SessionConfig, State,
};

/// How long the TCP connect, the TLS handshake and the upgrade may take
/// together when no [`WsBuilder::timeout`] is given.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsUrl {
    pub(crate) tls: bool,
    /// Host without brackets (a name, an IPv4 or an IPv6 address).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Host` header value: host (bracketed if IPv6), and `:port` unless
    /// the scheme's default.
    pub(crate) host_header: String,
    /// Path and query, `/` at least.
    pub(crate) target: String,
}

impl WsUrl {
    pub(crate) fn parse(url: &str) -> io::Result<WsUrl> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad WebSocket URL {url:?}: {why}"),
            )
        };
        // RFC 6455 §3: no fragment in a WebSocket URI.
        if url.contains('#') {
            return Err(bad("a fragment (#...) is not allowed"));
        }
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("the scheme must be ws:// or wss://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information (user@) is not supported"));
        }
        let bracketed = authority.host();
        if bracketed.is_empty() {
            return Err(bad("no host"));
        }
        let host = bracketed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if tls { 443 } else { 80 };
        // What follows the host (http's `port()` hides a bad one).
        let after_host = authority
            .as_str()
            .get(bracketed.len()..)
            .unwrap_or_default();
        let port = match after_host.strip_prefix(':') {
            None if after_host.is_empty() => default_port,
            None => return Err(bad("unexpected text after the host")),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?,
        };
        let host_header = if port == default_port {
            bracketed.to_string()
        } else {
            format!("{bracketed}:{port}")
        };
        let target = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/{target}")
        };
        Ok(WsUrl {
            tls,
            host,
            port,
            host_header,
            target,
        })
    }
}

/// Options of a WebSocket client connection, from [`Client::ws`] (or
/// `AsyncClient::ws`, feature `tokio`); finished by
/// [`connect`](WsBuilder::connect) or `connect_async`.
#[derive(Debug, Clone)]
pub struct WsBuilder {
    pub(crate) url: String,
    pub(crate) protocols: Vec<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) deflate_level: Option<u8>,
    pub(crate) session: SessionConfig,
    pub(crate) timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl WsBuilder {
    /// Options for `url` (`ws://host[:port][/path][?query]` or `wss://...`):
    /// no subprotocol, no extra header, no compression, 16 MiB messages.
    pub fn new(url: impl Into<String>) -> WsBuilder {
        WsBuilder {
            url: url.into(),
            protocols: Vec::new(),
            headers: Vec::new(),
            deflate_level: None,
            session: SessionConfig::default(),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Offers a subprotocol (`Sec-WebSocket-Protocol`); call again for
    /// more, in order of preference. The server's choice is
    /// [`Client::ws_protocol`]; a choice not offered fails the connect.
    pub fn protocol(mut self, name: impl Into<String>) -> WsBuilder {
        self.protocols.push(name.into());
        self
    }

    /// Adds a request header (e.g. `Origin`, `Cookie`, `Authorization`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> WsBuilder {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers permessage-deflate (RFC 7692) at compression level 1; off by
    /// default. The server may decline: [`Client::ws_deflate`] says what
    /// was negotiated.
    pub fn deflate(mut self, on: bool) -> WsBuilder {
        self.deflate_level = on.then_some(1);
        self
    }

    /// Offers permessage-deflate with this compression level (0–9).
    pub fn deflate_level(mut self, level: u8) -> WsBuilder {
        self.deflate_level = Some(level.min(9));
        self
    }

    /// Largest message (after reassembly and decompression) and frame
    /// accepted; larger ones fail the connection with 1009 (`InvalidData`).
    pub fn max_message(mut self, bytes: usize) -> WsBuilder {
        self.session.max_message = bytes;
        self.session.max_frame = bytes;
        self
    }

    /// Limits and close timeout of the session.
    pub fn session_config(mut self, cfg: SessionConfig) -> WsBuilder {
        self.session = cfg;
        self
    }

    /// Longest time for the TCP connect, the TLS handshake and the upgrade,
    /// each (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> WsBuilder {
        self.timeout = t;
        self
    }

    /// The TLS client configuration for `wss://` (feature `tls`); the
    /// server's certificate must carry the URL's host. Without it, `wss://`
    /// trusts the system CA bundle ([`crate::tls::pem::SYSTEM_CA_BUNDLE`]).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> WsBuilder {
        self.tls = Some(config);
        self
    }

    /// The TLS connector for `url` (`None` for `ws://`).
    #[cfg(feature = "tls")]
    pub(crate) fn connector(&self, url: &WsUrl) -> io::Result<Option<crate::tls::TlsConnector>> {
        if !url.tls {
            return Ok(None);
        }
        let config = match &self.tls {
            Some(c) => c.clone(),
            None => std::sync::Arc::new(crate::tls::pem::client_config(None, false, None)?),
        };
        let mut c = crate::tls::TlsConnector::with_name(config, &url.host)?;
        c.handshake_timeout = self.timeout;
        Ok(Some(c))
    }

    /// Writes the upgrade request for `url` into `out`.
    pub(crate) fn request(&self, url: &WsUrl, out: &mut Vec<u8>) -> ClientHandshake {
        let protocols: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ClientHandshake::new(
            &ClientOptions {
                host: &url.host_header,
                target: &url.target,
                protocols: &protocols,
                deflate_level: self.deflate_level,
                extra_headers: &headers,
            },
            out,
        )
    }

    /// Connects: TCP (every address the host resolves to, in turn), TLS for
    /// `wss://`, then the upgrade; each step bounded by the
    /// [`timeout`](WsBuilder::timeout). The client has no read or write
    /// timeout afterwards ([`Client::set_timeout`]).
    pub fn connect(&self) -> io::Result<Client> {
        let url = WsUrl::parse(&self.url)?;
        check_headers(&self.headers)?;
        let addr = (url.host.as_str(), url.port);
        #[cfg(feature = "tls")]
        let mut client = match self.connector(&url)? {
            Some(c) => {
                Client::connect_tls_with(addr, LengthDelimited::new(), Some(self.timeout), &c)?
            }
            None => Client::connect_with(addr, LengthDelimited::new(), Some(self.timeout))?,
        };
        #[cfg(not(feature = "tls"))]
        let mut client = if url.tls {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "wss:// needs ringport's feature `tls`",
            ));
        } else {
            Client::connect_with(addr, LengthDelimited::new(), Some(self.timeout))?
        };
        client.set_timeout(Some(self.timeout))?;
        let mut req = Vec::new();
        let hs = self.request(&url, &mut req);
        client.write_raw(&req).map_err(timeout_kind)?;
        let accepted = loop {
            match hs.parse_response(&client.rbuf[..client.end]) {
                ResponseStatus::Partial => {}
                ResponseStatus::Complete { accepted, consumed } => {
                    client.start = consumed;
                    break accepted;
                }
                ResponseStatus::Failed(m) => return Err(upgrade_failed(&m)),
            }
            if client.end == client.rbuf.len() {
                return Err(upgrade_failed("response head too large"));
            }
            let n = client.read_raw(client.end)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by peer during the WebSocket upgrade",
                ));
            }
            client.end += n;
        };
        client.set_timeout(None)?;
        client.ws = Some(Box::new(WsState::new(
            &self.session,
            accepted.protocol,
            accepted.deflate,
        )));
        Ok(client)
    }
}

/// Header names and values must not break the request's lines.
pub(crate) fn check_headers(headers: &[(String, String)]) -> io::Result<()> {
    for (k, v) in headers {
        if k.is_empty() || k.bytes().chain(v.bytes()).any(|b| b == b'\r' || b == b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad request header {k:?}"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn upgrade_failed(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("WebSocket upgrade failed: {why}"),
    )
}

/// What [`WsState::step`] found in the received bytes.
#[derive(Debug)]
pub(crate) enum Step {
    /// No whole message yet: read more.
    NeedMore,
    /// A message was copied to the destination.
    Message(MessageKind),
    /// The session ended (close handshake, protocol error): flush the
    /// output, then report this error.
    Ended(io::Error),
}

/// The WebSocket side of a client connection: the session and its output.
#[derive(Debug)]
pub(crate) struct WsState {
    pub(crate) session: Session,
    /// Frames to send (replies to pings and closes; messages being sent).
    pub(crate) out: Vec<u8>,
    pub(crate) protocol: Option<String>,
    /// Why the session ended, repeated by every later call.
    ended: Option<(io::ErrorKind, String)>,
    /// The close handshake completed (the peer's close arrived).
    pub(crate) clean_close: bool,
    /// How long `close_ws` waits for the peer's close.
    pub(crate) close_timeout: Duration,
    pongs: u64,
}

impl WsState {
    pub(crate) fn new(
        cfg: &SessionConfig,
        protocol: Option<String>,
        deflate: Option<DeflateParams>,
    ) -> WsState {
        WsState {
            session: Session::client(cfg, deflate),
            out: Vec::new(),
            protocol,
            ended: None,
            clean_close: false,
            close_timeout: cfg.close_timeout,
            pongs: 0,
        }
    }

    pub(crate) fn ended(&self) -> Option<io::Error> {
        self.ended
            .as_ref()
            .map(|(k, m)| io::Error::new(*k, m.clone()))
    }

    fn end(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        self.ended = Some((kind, msg.clone()));
        io::Error::new(kind, msg)
    }

    /// Reads `input` (received bytes) up to the next message, copied into
    /// `dst`. Returns the bytes used (keep the rest) and what was found.
    /// Pings are answered and closes replied to in [`WsState::out`].
    pub(crate) fn step(&mut self, input: &mut [u8], dst: &mut Vec<u8>) -> (usize, Step) {
        if let Some(e) = self.ended() {
            return (input.len(), Step::Ended(e));
        }
        let mut pos = 0;
        loop {
            let r = self.session.read(&mut input[pos..], &mut self.out);
            pos += r.consumed;
            let ended = match r.event {
                Event::NeedMore => return (pos, Step::NeedMore),
                Event::Message(m) => {
                    dst.clear();
                    dst.extend_from_slice(m.as_bytes());
                    return (pos, Step::Message(m.kind()));
                }
                Event::Pong(_) => {
                    self.pongs += 1;
                    continue;
                }
                Event::Closed { code, reason } => {
                    self.clean_close = true;
                    (
                        io::ErrorKind::UnexpectedEof,
                        if reason.is_empty() {
                            format!("connection closed by peer (WebSocket close {code})")
                        } else {
                            format!("connection closed by peer (WebSocket close {code}: {reason})")
                        },
                    )
                }
                Event::Failed { code, reason } => (
                    io::ErrorKind::InvalidData,
                    format!("WebSocket protocol error: {reason} (closed with {code})"),
                ),
            };
            let e = self.end(ended.0, ended.1);
            return (pos, Step::Ended(e));
        }
    }

    /// The transport ended (`mid_frame`: inside a frame).
    pub(crate) fn eof(&mut self, mid_frame: bool) -> io::Error {
        if let Some(e) = self.ended() {
            return e;
        }
        let msg = if self.session.state() == State::CloseSent {
            "connection closed by peer before answering the WebSocket close"
        } else if mid_frame || self.session.is_receiving() {
            "connection closed mid-frame"
        } else {
            "connection closed by peer without a WebSocket close"
        };
        self.end(io::ErrorKind::UnexpectedEof, msg.to_string())
    }

    /// Frames a message into `out` (cleared first).
    pub(crate) fn frame(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        if let Some(e) = self.ended() {
            return Err(e);
        }
        self.out.clear();
        self.session
            .send(kind, payload, &mut self.out)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    /// Frames a ping into `out` (cleared first).
    pub(crate) fn frame_ping(&mut self, payload: &[u8]) -> io::Result<()> {
        if let Some(e) = self.ended() {
            return Err(e);
        }
        if payload.len() > 125 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a ping carries at most 125 bytes",
            ));
        }
        self.out.clear();
        self.session
            .ping(payload, &mut self.out)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    /// Frames our close into `out` (cleared first); `false` if one was
    /// already sent.
    pub(crate) fn frame_close(&mut self, code: CloseCode, reason: &str) -> bool {
        self.out.clear();
        self.session
            .close(code, reason, Instant::now(), &mut self.out)
    }

    /// Pongs received so far.
    pub(crate) fn pongs(&self) -> u64 {
        self.pongs
    }
}

fn not_ws() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a WebSocket connection (made by Client::ws / connect_ws)",
    )
}

impl Client<LengthDelimited> {
    /// Options for a WebSocket connection to `url` (feature `websocket`),
    /// finished by [`WsBuilder::connect`].
    pub fn ws(url: impl Into<String>) -> WsBuilder {
        WsBuilder::new(url)
    }

    /// Connects to a `ws://` or `wss://` URL with the default options (see
    /// [`WsBuilder`]; feature `websocket`).
    pub fn connect_ws(url: &str) -> io::Result<Client> {
        WsBuilder::new(url).connect()
    }
}

impl<C: Codec> Client<C> {
    /// Whether this is a WebSocket connection.
    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
    }

    /// The subprotocol the server chose (WebSocket connections).
    pub fn ws_protocol(&self) -> Option<&str> {
        self.ws.as_ref().and_then(|w| w.protocol.as_deref())
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn ws_deflate(&self) -> Option<DeflateParams> {
        self.ws
            .as_ref()
            .and_then(|w| w.session.deflate_params().copied())
    }

    /// Pongs received so far (answers to [`Client::ping`]; `recv` skips
    /// them).
    pub fn pongs(&self) -> u64 {
        self.ws.as_ref().map_or(0, |w| w.pongs())
    }

    /// Sends one text message (WebSocket connections; on a framed
    /// connection the text is sent as one frame, like [`Client::send`]).
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        match self.ws.is_some() {
            true => self.ws_send(MessageKind::Text, text.as_bytes()),
            false => self.send(text.as_bytes()),
        }
    }

    pub(super) fn ws_send(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
        ws.frame(kind, payload)?;
        self.flush_ws()
    }

    /// Writes what the session has for the peer.
    fn flush_ws(&mut self) -> io::Result<()> {
        let Some(ws) = self.ws.as_deref_mut() else {
            return Ok(());
        };
        if ws.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut ws.out);
        let r = self.write_raw(&out).map_err(timeout_kind);
        if let Some(ws) = self.ws.as_deref_mut() {
            ws.out = out;
            ws.out.clear();
        }
        r
    }

    /// Sends a ping (at most 125 bytes; WebSocket connections). The pong
    /// is counted by [`Client::pongs`] as `recv` reads it.
    pub fn ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.ws
            .as_deref_mut()
            .ok_or_else(not_ws)?
            .frame_ping(payload)?;
        self.flush_ws()
    }

    /// Receives the next whole message into `dst` (replacing its contents)
    /// and says whether it is text or binary; a framed connection's
    /// messages are binary. Reuses `dst`'s allocation.
    pub fn recv_into(&mut self, dst: &mut Vec<u8>) -> io::Result<MessageKind> {
        if self.ws.is_none() {
            self.recv_frame_into(dst)?;
            return Ok(MessageKind::Binary);
        }
        loop {
            let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
            let (used, step) = ws.step(&mut self.rbuf[self.start..self.end], dst);
            self.start += used;
            // Pongs and close replies go out before anything is returned.
            let flushed = self.flush_ws();
            match step {
                Step::Message(kind) => return flushed.map(|()| kind),
                Step::Ended(e) => return Err(e),
                Step::NeedMore => flushed?,
            }
            // The session keeps partial frames itself: what is left is at
            // most a frame header or a control frame.
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.rbuf.len() {
                self.rbuf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            let n = self.read_raw(self.end)?;
            if n == 0 {
                let mid = self.start < self.end;
                let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
                return Err(ws.eof(mid));
            }
            self.end += n;
        }
    }

    /// Receives the next whole message and its kind.
    pub fn recv_with_kind(&mut self) -> io::Result<(MessageKind, Vec<u8>)> {
        let mut v = Vec::new();
        let kind = self.recv_into(&mut v)?;
        Ok((kind, v))
    }

    /// Closes a WebSocket connection: sends a close frame with `code` and
    /// `reason` (at most 123 bytes) and waits for the peer's close
    /// (messages arriving meanwhile are dropped), at most the session's
    /// close timeout ([`SessionConfig::close_timeout`], 5 s by default) if
    /// no [`Client::set_timeout`] is shorter; then shuts the connection
    /// down. `Ok` once the peer answered; an error otherwise (`TimedOut`, `UnexpectedEof`, ...).
    pub fn close_ws(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
        if let Some(e) = ws.ended() {
            return Err(e);
        }
        let limit = ws.close_timeout;
        if ws.frame_close(code, reason) {
            self.flush_ws()?;
        }
        let before = self.stream.read_timeout()?;
        if before.is_none_or(|t| t > limit) {
            self.stream.set_read_timeout(Some(limit))?;
        }
        let mut scratch = Vec::new();
        let outcome = loop {
            match self.recv_into(&mut scratch) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        self.stream.set_read_timeout(before)?;
        let _ = self.shutdown_write();
        match self.ws.as_ref().is_some_and(|w| w.clean_close) {
            true => Ok(()),
            false => Err(outcome),
        }
    }
}

#[cfg(test)]
mod tests;
