//! `bench --ws`: the WebSocket client side of one bench connection, over
//! the engine's raw-bytes codec. The upgrade request goes out on connect;
//! the connection counts as established once the 101 is checked (so the
//! upgrade belongs to the connect phase, not to the measurement). Then
//! every message sent is one masked WebSocket message, every message
//! received is reassembled (and inflated) by the sans-I/O
//! [`Session`](ringport::protocol::websocket::Session), pings are answered.
//!
//! Buffers are the link's own and reused: the received bytes not yet used
//! (at most a frame header or a control frame between calls: partial
//! frames are kept by the session), and the output frames.

use super::{BenchArgs, BenchCodec};
use ringport::protocol::websocket::{
    ClientHandshake, ClientOptions, Event, MessageKind, ResponseStatus, Session, SessionConfig,
};

/// WebSocket options of a bench run.
#[derive(Debug, Clone)]
pub struct WsOpts {
    /// `Host` header (the --addr given).
    pub host: String,
    /// Request target (path and query).
    pub path: String,
    /// Offer permessage-deflate (level 1).
    pub deflate: bool,
    /// Messages are sent as text (and expected back as text).
    pub text: bool,
    /// Largest message accepted.
    pub max_message: usize,
}

impl WsOpts {
    /// The options of `--ws` (`None` without it).
    pub fn from_args(args: &BenchArgs) -> Result<Option<WsOpts>, String> {
        if !args.ws {
            return Ok(None);
        }
        if args.codec != BenchCodec::Length {
            return Err("--ws frames messages itself: leave out --codec".into());
        }
        if !args.ws_path.starts_with('/') || args.ws_path.bytes().any(|b| b <= b' ') {
            return Err(format!(
                "--ws-path {:?}: expected a path starting with / (and a query), no spaces",
                args.ws_path
            ));
        }
        Ok(Some(WsOpts {
            host: args.addr.clone(),
            path: args.ws_path.clone(),
            deflate: args.ws_deflate,
            text: args.ws_text,
            max_message: args.max_frame,
        }))
    }

    pub fn kind(&self) -> MessageKind {
        if self.text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        }
    }
}

/// Where the upgrade stands after [`WsLink::handshake`].
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    Pending,
    Done,
    Failed(String),
}

/// One connection's WebSocket state.
pub struct WsLink {
    handshake: Option<ClientHandshake>,
    session: Option<Session>,
    max_message: usize,
    /// Received bytes not used yet.
    rbuf: Vec<u8>,
    /// Frames to send (cleared by [`WsLink::take_out`]'s caller).
    pub out: Vec<u8>,
}

impl WsLink {
    /// A link whose upgrade request is written to `out`.
    pub fn start(opts: &WsOpts) -> WsLink {
        let mut out = Vec::new();
        let handshake = ClientHandshake::new(
            &ClientOptions {
                host: &opts.host,
                target: &opts.path,
                protocols: &[],
                deflate_level: opts.deflate.then_some(1),
                extra_headers: &[],
            },
            &mut out,
        );
        WsLink {
            handshake: Some(handshake),
            session: None,
            max_message: opts.max_message,
            rbuf: Vec::new(),
            out,
        }
    }

    pub fn upgraded(&self) -> bool {
        self.session.is_some()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.deflate_params().is_some())
    }

    /// Takes received bytes while the upgrade is pending.
    pub fn handshake(&mut self, chunk: &[u8]) -> Upgrade {
        let Some(hs) = &self.handshake else {
            return Upgrade::Done;
        };
        self.rbuf.extend_from_slice(chunk);
        match hs.parse_response(&self.rbuf) {
            ResponseStatus::Partial => Upgrade::Pending,
            ResponseStatus::Failed(why) => Upgrade::Failed(why),
            ResponseStatus::Complete { accepted, consumed } => {
                self.rbuf.drain(..consumed);
                let cfg = SessionConfig {
                    max_frame: self.max_message,
                    max_message: self.max_message,
                    ..SessionConfig::default()
                };
                self.session = Some(Session::client(&cfg, accepted.deflate));
                self.handshake = None;
                // The request's buffer is not needed any more.
                self.out = Vec::new();
                Upgrade::Done
            }
        }
    }

    /// Takes received bytes after the upgrade and hands every whole
    /// message to `f`; pong and close replies go to `out`. `Err` when the
    /// session ended (the peer's close, or a protocol error: then a close
    /// frame is in `out`).
    ///
    /// `work` is a buffer shared by the thread's connections: the bytes
    /// are parsed there (the session unmasks in place, so it needs them
    /// mutable), and the link keeps only an unparsed tail (at most a frame
    /// header or a control frame: partial frames are absorbed by the
    /// session), so an idle connection holds no receive buffer.
    pub fn receive(
        &mut self,
        chunk: &[u8],
        work: &mut Vec<u8>,
        mut f: impl FnMut(MessageKind, &[u8]),
    ) -> Result<(), String> {
        let Some(session) = self.session.as_mut() else {
            return Err("message before the upgrade".into());
        };
        work.clear();
        work.extend_from_slice(&self.rbuf);
        work.extend_from_slice(chunk);
        self.rbuf.clear();
        let mut pos = 0;
        let ended = loop {
            let r = session.read(&mut work[pos..], &mut self.out);
            pos += r.consumed;
            match r.event {
                Event::NeedMore => break None,
                Event::Message(m) => f(m.kind(), m.as_bytes()),
                Event::Pong(_) => {}
                Event::Closed { code, reason } => {
                    break Some(format!("WebSocket closed by the server ({code} {reason})"));
                }
                Event::Failed { code, reason } => {
                    break Some(format!("WebSocket protocol error: {reason} ({code})"));
                }
            }
        };
        if ended.is_none() && pos < work.len() {
            self.rbuf.extend_from_slice(&work[pos..]);
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = Vec::new();
        }
        ended.map_or(Ok(()), Err)
    }

    /// Frames one message into `out` (appended).
    pub fn frame(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), String> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.frame_into(kind, payload, &mut out);
        self.out = out;
        r
    }

    /// Frames one message into `dst` (appended).
    pub fn frame_into(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        dst: &mut Vec<u8>,
    ) -> Result<(), String> {
        match self.session.as_mut() {
            Some(s) => s.send(kind, payload, dst).map_err(|e| e.to_string()),
            None => Err("send before the upgrade".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport::protocol::websocket::{
        AcceptOptions, HandshakeLimits, RequestStatus, parse_request,
    };

    fn opts(deflate: bool) -> WsOpts {
        WsOpts {
            host: "127.0.0.1:9001".into(),
            path: "/bench?x=1".into(),
            deflate,
            text: false,
            max_message: 1 << 20,
        }
    }

    /// A link against the library's own server session: upgrade (the
    /// response arriving in two pieces), then messages both ways.
    #[test]
    fn upgrade_then_messages_against_a_server_session() {
        for deflate in [false, true] {
            let mut link = WsLink::start(&opts(deflate));
            let request = std::mem::take(&mut link.out);
            let RequestStatus::Complete { request, .. } =
                parse_request(&request, &HandshakeLimits::default())
            else {
                panic!("a complete request")
            };
            assert_eq!(request.path(), "/bench");
            let accept = AcceptOptions {
                deflate: deflate.then(Default::default),
                ..Default::default()
            };
            let mut response = Vec::new();
            let negotiated = request.accept(&accept, None, &mut response).unwrap();
            let mut server = Session::server(&SessionConfig::default(), negotiated.deflate);
            assert_eq!(link.handshake(&response[..10]), Upgrade::Pending);
            // The rest of the head and a first message in one chunk.
            let mut chunk = response[10..].to_vec();
            server
                .send(MessageKind::Binary, &[5u8; 300], &mut chunk)
                .unwrap();
            assert_eq!(link.handshake(&chunk), Upgrade::Done);
            assert_eq!(link.deflate(), deflate);
            let mut got = Vec::new();
            link.receive(&[], &mut Vec::new(), |k, m| got.push((k, m.to_vec())))
                .unwrap();
            assert_eq!(got, vec![(MessageKind::Binary, vec![5u8; 300])]);

            // Client to server: masked, read back by the server.
            link.frame(MessageKind::Binary, b"abc").unwrap();
            link.frame(MessageKind::Text, &[b'x'; 200]).unwrap();
            let mut wire = std::mem::take(&mut link.out);
            let mut out = Vec::new();
            let r = server.read(&mut wire, &mut out);
            assert_eq!(
                r.event,
                Event::Message(ringport::protocol::websocket::Message::Binary(b"abc"))
            );
            let used = r.consumed;
            let r = server.read(&mut wire[used..], &mut out);
            assert!(matches!(
                r.event,
                Event::Message(ringport::protocol::websocket::Message::Text(t)) if t.len() == 200
            ));

            // Byte by byte: a ping answered, a message reassembled, then the
            // close ending the link.
            let mut wire = Vec::new();
            server.ping(b"p", &mut wire).unwrap();
            server.send(MessageKind::Text, b"hi", &mut wire).unwrap();
            let mut got = Vec::new();
            let mut work = Vec::new();
            for b in &wire {
                link.receive(std::slice::from_ref(b), &mut work, |k, m| {
                    got.push((k, m.to_vec()))
                })
                .unwrap();
            }
            assert_eq!(got, vec![(MessageKind::Text, b"hi".to_vec())]);
            assert_eq!(link.out[0], 0x8a, "a pong");
            link.out.clear();
            let mut wire = Vec::new();
            server
                .close(
                    ringport::protocol::websocket::CloseCode::NORMAL,
                    "",
                    std::time::Instant::now(),
                    &mut wire,
                )
                .then_some(())
                .unwrap();
            let e = link
                .receive(&wire, &mut work, |_, _| panic!("no message"))
                .unwrap_err();
            assert!(e.contains("closed by the server (1000"), "{e}");
            assert_eq!(link.out[0], 0x88, "the close answered");
        }
    }

    #[test]
    fn a_refused_upgrade_fails() {
        let mut link = WsLink::start(&opts(false));
        let r = link.handshake(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert!(
            matches!(r, Upgrade::Failed(ref m) if m.contains("404")),
            "{r:?}"
        );
        assert!(link.frame(MessageKind::Binary, b"x").is_err());
    }
}
