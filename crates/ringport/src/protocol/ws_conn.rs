//! WebSocket as a protocol of the engine: the sans-I/O core
//! ([`super::websocket`]) behind the [`ConnProtocol`] seam.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::websocket::{
    AcceptOptions, CloseCode, DeflateConfig, Event, HandshakeLimits, Outgoing, PreparedMessage,
    RequestStatus, Session, SessionConfig, State, UpgradeRequest, parse_request,
    server_frame_header, write_refusal,
};
use super::{
    ConnProtocol, Framed, FramedShared, ListenerProtocol, MAX_PROTOCOL_HEADER, MessageKind,
    Payload, SharedCache, Step, UpgradeDecision, UpgradeInfo,
};
use crate::error::{CloseReason, SendError};

/// A WebSocket listener of a server ([`crate::ServerConfig::websocket`]):
/// its address, the limits of the opening handshake and of messages, and
/// the permessage-deflate policy. Framed-TCP clients keep the server's
/// main address; both kinds meet in the same handler (same `ConnId`s,
/// broadcasts and topics).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketListener {
    /// Where to listen (every shard binds it with `SO_REUSEPORT`).
    pub addr: SocketAddr,
    /// Largest frame and message (after reassembly and decompression):
    /// larger ones close the connection with 1009. The close timeout is the
    /// server's `close_timeout`.
    pub session: SessionConfig,
    /// Size limits of the opening request (431 past them).
    pub handshake: HandshakeLimits,
    /// permessage-deflate policy; `None` (the default): never negotiated.
    pub deflate: Option<DeflateConfig>,
    /// How long a client may take from its connection (after TLS, for
    /// wss) to a complete upgrade request; later, it is closed unanswered
    /// (counted in `upgrade_timeouts`). Default 10 s.
    pub handshake_timeout: Duration,
}

impl WebSocketListener {
    /// A listener on `addr` with the default limits (16 MiB messages,
    /// 8 KiB request heads) and no compression.
    pub fn new(addr: SocketAddr) -> WebSocketListener {
        WebSocketListener {
            addr,
            session: SessionConfig::default(),
            handshake: HandshakeLimits::default(),
            deflate: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Makes the connections of a WebSocket listener.
pub(crate) struct WsFactory(Arc<WebSocketListener>);

impl WsFactory {
    pub fn new(mut cfg: WebSocketListener, close_timeout: Duration) -> WsFactory {
        cfg.session.close_timeout = close_timeout;
        WsFactory(Arc::new(cfg))
    }
}

impl ListenerProtocol for WsFactory {
    fn handshake_timeout(&self) -> Duration {
        self.0.handshake_timeout
    }

    fn open(&self, _peer: SocketAddr, _now: Instant) -> Box<dyn ConnProtocol> {
        Box::new(WsConn {
            phase: Phase::Request(self.0.clone()),
        })
    }
}

/// The listener's settings are needed until the session exists; an open
/// connection is its `Session` alone (48 bytes, 56 with the tag).
enum Phase {
    /// Reading the opening request.
    Request(Arc<WebSocketListener>),
    /// The request is complete; the handler decides.
    Decide(Arc<WebSocketListener>, Box<UpgradeRequest>),
    Open(Session),
    /// Refused or finished: input is ignored.
    Done,
}

struct WsConn {
    phase: Phase,
}

impl UpgradeInfo for UpgradeRequest {
    fn method(&self) -> &str {
        UpgradeRequest::method(self)
    }
    fn path(&self) -> &str {
        UpgradeRequest::path(self)
    }
    fn query(&self) -> Option<&str> {
        UpgradeRequest::query(self)
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        UpgradeRequest::header(self, name)
    }
    fn headers(&self) -> Vec<(&str, &[u8])> {
        UpgradeRequest::headers(self).collect()
    }
    fn subprotocols(&self) -> &[String] {
        self.protocols()
    }
}

/// The close code that tells a WebSocket peer why the engine closes.
fn close_code(reason: &CloseReason) -> (CloseCode, &'static str) {
    match reason {
        CloseReason::ServerStopping => (CloseCode::GOING_AWAY, "server stopping"),
        CloseReason::IdleTimeout => (CloseCode::GOING_AWAY, "idle"),
        CloseReason::SlowConsumer => (CloseCode::POLICY, "slow consumer"),
        CloseReason::RateLimited => (CloseCode::POLICY, "message rate over its limit"),
        CloseReason::Overloaded => (CloseCode(1013), "overloaded"),
        CloseReason::FrameTooLarge { .. } => (CloseCode::TOO_BIG, "message too big"),
        CloseReason::FrameTimeout { .. } => (CloseCode::POLICY, "message not complete in time"),
        CloseReason::InvalidFrame(_) => (CloseCode::PROTOCOL, "protocol error"),
        _ => (CloseCode::NORMAL, ""),
    }
}

impl ConnProtocol for WsConn {
    fn receive(&mut self, input: &mut [u8], _now: Instant, out: &mut Vec<u8>) -> (usize, Step) {
        match &mut self.phase {
            Phase::Request(cfg) => match parse_request(input, &cfg.handshake) {
                RequestStatus::Partial => (0, Step::NeedMore),
                RequestStatus::Complete { request, consumed } => {
                    self.phase = Phase::Decide(cfg.clone(), Box::new(request));
                    (consumed, Step::Upgrade)
                }
                RequestStatus::Refused(refusal) => {
                    refusal.write_response(out);
                    self.phase = Phase::Done;
                    let why = format!(
                        "opening handshake refused ({}): {}",
                        refusal.status, refusal.reason
                    );
                    (input.len(), Step::Close(CloseReason::InvalidFrame(why)))
                }
            },
            Phase::Decide(..) => (0, Step::NeedMore),
            Phase::Done => (input.len(), Step::NeedMore),
            Phase::Open(session) => {
                let base = input.as_ptr() as usize;
                let len = input.len();
                let read = session.read(input, out);
                let step = match read.event {
                    Event::NeedMore => Step::NeedMore,
                    Event::Message(m) => {
                        let bytes = m.as_bytes();
                        let at = (bytes.as_ptr() as usize).wrapping_sub(base);
                        let payload = if !bytes.is_empty() && at < len && at + bytes.len() <= len {
                            // A single frame, unmasked in place: no copy.
                            Payload::Input(at, at + bytes.len())
                        } else {
                            Payload::Owned(Bytes::copy_from_slice(bytes))
                        };
                        Step::Message(m.kind(), payload)
                    }
                    Event::Pong(_) => Step::Control,
                    Event::Closed { .. } => Step::Close(CloseReason::PeerClosed),
                    Event::Failed { code, reason } => Step::Close(CloseReason::InvalidFrame(
                        format!("websocket {}: {reason}", code.0),
                    )),
                };
                (read.consumed, step)
            }
        }
    }

    fn upgrade_info(&self) -> Option<&dyn UpgradeInfo> {
        match &self.phase {
            Phase::Decide(_, request) => Some(&**request),
            _ => None,
        }
    }

    fn decide(&mut self, decision: UpgradeDecision, out: &mut Vec<u8>) -> Result<bool, SendError> {
        let Phase::Decide(cfg, request) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return Ok(false);
        };
        match decision {
            UpgradeDecision::Accept { subprotocol } => {
                let opts = AcceptOptions {
                    protocol: subprotocol.as_deref(),
                    deflate: cfg.deflate,
                    extra_headers: &[],
                };
                match request.accept(&opts, None, out) {
                    Ok(negotiated) => {
                        self.phase = Phase::Open(Session::server(&cfg.session, negotiated.deflate));
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade hook chose a subprotocol not offered; refusing with 500");
                        write_refusal(500, &[], out);
                        Ok(false)
                    }
                }
            }
            UpgradeDecision::Refuse { status } => {
                write_refusal(status, &[], out);
                Ok(false)
            }
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    fn frame(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<Framed, SendError> {
        let Phase::Open(session) = &mut self.phase else {
            return Err(SendError::Closed);
        };
        if session.state() != State::Open {
            return Err(SendError::Closed);
        }
        if session.would_compress(payload.len()) {
            session
                .send(kind, payload, out)
                .map_err(|_| SendError::Closed)?;
            return Ok(Framed::Written);
        }
        Ok(Framed::Header(server_frame_header(
            kind,
            payload.len(),
            header,
        )))
    }

    fn frame_shared(
        &mut self,
        kind: MessageKind,
        payload: &Bytes,
        cache: &mut SharedCache,
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<FramedShared, SendError> {
        let Phase::Open(session) = &mut self.phase else {
            return Err(SendError::Closed);
        };
        if session.state() != State::Open {
            return Err(SendError::Closed);
        }
        if !session.would_compress(payload.len()) {
            return Ok(FramedShared::Header(server_frame_header(
                kind,
                payload.len(),
                header,
            )));
        }
        // Compressed once per (window, level) for every session that resets
        // its compressor after each message; the others compress for
        // themselves.
        let prepared = cache
            .get_or_insert_with(|| Box::new(PreparedMessage::new(kind, payload.clone())))
            .downcast_mut::<PreparedMessage>()
            .ok_or(SendError::Closed)?;
        match session.send_prepared(prepared, out) {
            Ok(Outgoing::Shared(frame)) => Ok(FramedShared::Frame(frame)),
            Ok(Outgoing::Written) => Ok(FramedShared::Written),
            Err(_) => Err(SendError::Closed),
        }
    }

    fn close(&mut self, reason: &CloseReason, now: Instant, out: &mut Vec<u8>) {
        if let Phase::Open(session) = &mut self.phase {
            let (code, why) = close_code(reason);
            session.close(code, why, now, out);
        }
    }

    fn heartbeat(&mut self, out: &mut Vec<u8>) -> bool {
        match &mut self.phase {
            Phase::Open(session) => session.ping(b"", out).is_ok(),
            _ => false,
        }
    }

    fn partial(&self) -> Option<crate::codec::Partial> {
        match &self.phase {
            Phase::Open(session) => session
                .receiving()
                .map(|(have, missing)| crate::codec::Partial { have, missing }),
            _ => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        match &self.phase {
            Phase::Open(session) => session.heap_bytes(),
            Phase::Decide(..) => std::mem::size_of::<UpgradeRequest>(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_connection_is_its_session() {
        assert!(
            std::mem::size_of::<WsConn>() <= 56,
            "{}",
            std::mem::size_of::<WsConn>()
        );
    }
}
