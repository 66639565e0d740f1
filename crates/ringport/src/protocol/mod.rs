//! Protocols above the transport: sans-I/O state machines the engine drives.
//!
//! A connection's bytes pass, in order, through its **transport** (plain or
//! TLS, `crate::transport`), then its **protocol**, then the handler:
//!
//! - a protocol is a `ConnProtocol` per connection, made by the
//!   `ListenerProtocol` of the listener that accepted it: a pure state
//!   machine (no socket, no clock) that turns received bytes into steps (a
//!   handshake to decide, a message, the end), writes its own output
//!   (handshake response, pongs, close frames) into a buffer the engine
//!   sends, and frames the messages sent;
//! - the **framed** codecs ([`Codec`](crate::Codec): length-delimited,
//!   lines, raw bytes, a user's) are the seam's first implementation
//!   (`framed`: `FramedConn`, `FramedListener`): no handshake, a message per
//!   frame, the codec's header on the way out. The engine runs a listener
//!   *without* a protocol on its built-in specialization of that same
//!   protocol (`engine/input.rs`, `engine/direct.rs`), which keeps the
//!   zero-copy receive paths a byte-slice interface cannot express: the
//!   rest of a large frame received straight into its buffer, bulk
//!   receives, the small-message short path. Both cut the stream with the
//!   same [`Framer`](crate::codec::Framer), and differential tests check
//!   that they give identical results (`framed`'s property test, message
//!   for message and error for error in any split of the stream, and
//!   `engine/framed_seam_tests.rs`, the same scenarios through both paths);
//!   `framed_seam_cost` (`engine/bench_echo.rs`) measures what the
//!   specialization saves;
//! - WebSocket (`websocket`, feature `websocket`) is the protocol with a
//!   handshake, control frames and message kinds.
//!
//! The engine knows protocols only through these traits: nothing in
//! `engine/` (outside its tests) names WebSocket or the framed protocol.

pub(crate) mod framed;
#[cfg(feature = "websocket")]
pub mod websocket;
#[cfg(feature = "websocket")]
pub(crate) mod ws_conn;

#[cfg(feature = "websocket")]
pub use ws_conn::WebSocketListener;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::error::{CloseReason, SendError};

/// Text or binary: the kind of a message. Framed-codec connections carry
/// binary only; WebSocket keeps the distinction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageKind {
    /// UTF-8 text (WebSocket opcode 0x1).
    Text,
    /// Binary (WebSocket opcode 0x2).
    #[default]
    Binary,
}

/// What an upgrade hook ([`Handler::on_upgrade`](crate::Handler::on_upgrade))
/// sees of a connection's opening request (an HTTP/1.1 upgrade).
pub trait UpgradeInfo {
    /// The request method (`GET`).
    fn method(&self) -> &str;
    /// The path of the request target, without the query.
    fn path(&self) -> &str;
    /// The query of the request target (after `?`), if any.
    fn query(&self) -> Option<&str>;
    /// The first header of that name (case-insensitive).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every header, in order.
    fn headers(&self) -> Vec<(&str, &[u8])>;
    /// The subprotocols the client offered, in its order of preference.
    fn subprotocols(&self) -> &[String];
}

/// The upgrade hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeDecision {
    /// Accept, choosing one of the offered subprotocols (or none).
    Accept {
        /// The subprotocol chosen; it must be one the client offered.
        subprotocol: Option<String>,
    },
    /// Refuse with this HTTP status (e.g. 401, 403, 404); the connection
    /// is closed after the response.
    Refuse {
        /// The HTTP status.
        status: u16,
    },
}

impl UpgradeDecision {
    /// Accept with no subprotocol.
    pub fn accept() -> UpgradeDecision {
        UpgradeDecision::Accept { subprotocol: None }
    }
}

/// Where a received message's bytes are.
#[derive(Debug, Clone)]
// Made only by protocols of optional features.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
pub(crate) enum Payload {
    /// `input[start..end]` of the bytes given to [`ConnProtocol::receive`]
    /// (e.g. a single unmasked frame: no copy).
    Input(usize, usize),
    /// Bytes of the protocol's own (reassembled or decompressed).
    Owned(Bytes),
}

/// One step of [`ConnProtocol::receive`].
#[derive(Debug)]
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
pub(crate) enum Step {
    /// Everything up to `consumed` was absorbed; the engine keeps the rest
    /// and calls again when more bytes arrive.
    NeedMore,
    /// The opening request is complete: ask the handler
    /// ([`ConnProtocol::upgrade_info`], then [`ConnProtocol::decide`]).
    Upgrade,
    /// A message for the handler.
    Message(MessageKind, Payload),
    /// Protocol traffic only (a pong, a ping answered): go on.
    Control,
    /// The connection ends: flush the output, then close with `reason`.
    Close(CloseReason),
}

/// How an outgoing message was framed by [`ConnProtocol::frame`].
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
pub(crate) enum Framed {
    /// Send `header[..n]` then the payload as it is.
    Header(usize),
    /// The whole frame was written to the output buffer (e.g. compressed).
    Written,
}

/// How a message sent to many connections was framed by
/// [`ConnProtocol::frame_shared`].
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
pub(crate) enum FramedShared {
    /// Send `header[..n]` then the payload as it is.
    Header(usize),
    /// Send this frame, shared by the connections that can use it (e.g.
    /// compressed once for all of them).
    Frame(Bytes),
    /// The whole frame was written to the output buffer.
    Written,
}

/// What [`ConnProtocol::frame_shared`] keeps between the connections of one
/// message (emptied for each new message).
pub(crate) type SharedCache = Option<Box<dyn std::any::Any + Send>>;

/// Most bytes a protocol's frame header takes.
pub(crate) const MAX_PROTOCOL_HEADER: usize = 14;

/// One connection's protocol state (see the module docs). Object safe:
/// the engine keeps `Box<dyn ConnProtocol>` for the connections that have
/// one, and none for framed connections.
pub(crate) trait ConnProtocol: Send {
    /// Reads `input` (received plaintext; may be rewritten in place, e.g.
    /// unmasked) up to one step; returns the bytes used and the step.
    /// Protocol output (handshake response, pong, close frame) goes to
    /// `out`, which the engine sends before anything the handler sends
    /// after this step.
    fn receive(&mut self, input: &mut [u8], now: Instant, out: &mut Vec<u8>) -> (usize, Step);

    /// The opening request, after [`Step::Upgrade`].
    fn upgrade_info(&self) -> Option<&dyn UpgradeInfo>;

    /// The handler's answer to the opening request: writes the response to
    /// `out`. `Ok(true)`: open (the handler sees the connection now);
    /// `Ok(false)`: refused (flush and close).
    fn decide(&mut self, decision: UpgradeDecision, out: &mut Vec<u8>) -> Result<bool, SendError>;

    /// Whether the connection is past its opening handshake (messages may
    /// be sent to it).
    fn is_open(&self) -> bool;

    /// Frames one outgoing message of `kind` with `payload`: either a
    /// header in `header` (the payload follows it as it is, by reference
    /// when shared) or the whole frame in `out`.
    fn frame(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<Framed, SendError>;

    /// Frames a message sent to many connections (a broadcast or a
    /// publish): like [`ConnProtocol::frame`], but what does not depend on
    /// the connection (e.g. compression without context takeover) is done
    /// once per message, kept in `cache`.
    fn frame_shared(
        &mut self,
        kind: MessageKind,
        payload: &Bytes,
        cache: &mut SharedCache,
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<FramedShared, SendError> {
        let _ = cache;
        Ok(match self.frame(kind, payload, header, out)? {
            Framed::Header(n) => FramedShared::Header(n),
            Framed::Written => FramedShared::Written,
        })
    }

    /// The engine closes the connection for `reason`: the protocol's
    /// goodbye (e.g. a close frame with a matching code) goes to `out`.
    fn close(&mut self, reason: &CloseReason, now: Instant, out: &mut Vec<u8>);

    /// Idle for a heartbeat period: a keep-alive (e.g. a ping) to `out`.
    /// False if the protocol has none (the handler's heartbeat runs then).
    fn heartbeat(&mut self, out: &mut Vec<u8>) -> bool;

    /// Heap bytes held (reassembly, compression contexts).
    fn heap_bytes(&self) -> usize;

    /// The message being received, if some of its bytes were absorbed and
    /// it is not complete: bytes so far and, when known, bytes missing. The
    /// engine adds the bytes it keeps for the protocol's next step; it
    /// reports a peer that closes inside a message as
    /// [`CloseReason::TruncatedFrame`] and applies `frame_timeout` to it.
    fn partial(&self) -> Option<crate::codec::Partial> {
        None
    }
}

/// Makes the protocol of each connection a listener accepts (the
/// configuration shared by a listener's connections).
pub(crate) trait ListenerProtocol: Send + Sync {
    /// How long a connection may take to complete its opening handshake.
    fn handshake_timeout(&self) -> std::time::Duration;

    /// The protocol state of a connection accepted from `peer`.
    fn open(&self, peer: SocketAddr, now: Instant) -> Box<dyn ConnProtocol>;
}
