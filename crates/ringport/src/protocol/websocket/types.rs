//! The plain types of a session: role, limits, messages, events, state.

use std::time::Duration;

use super::close::CloseCode;
use super::frame::OpCode;

/// Which end of the connection a [`Session`](super::Session) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, masks what it sends.
    Client,
}

/// Limits and timeouts of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest frame payload accepted (larger: close with 1009). At most
    /// 4 GiB − 1.
    pub max_frame: usize,
    /// Largest message accepted, after reassembly and decompression
    /// (larger: close with 1009). At most 4 GiB − 1.
    pub max_message: usize,
    /// How long to wait for the peer's close after sending ours.
    pub close_timeout: Duration,
}

impl Default for SessionConfig {
    /// 16 MiB frames and messages, 5 s close timeout.
    fn default() -> SessionConfig {
        SessionConfig {
            max_frame: 16 << 20,
            max_message: 16 << 20,
            close_timeout: Duration::from_secs(5),
        }
    }
}

pub use crate::protocol::MessageKind;

impl MessageKind {
    pub(crate) fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A complete received message, borrowed from the input (a single
/// uncompressed frame: no copy) or from the session's reassembly buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }
}

/// What one [`Session::read`](super::Session::read) call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// No complete message in the input: everything up to `consumed` has
    /// been absorbed; keep the rest (at most one frame header or one control
    /// frame, ≤ 139 bytes) and call again with more bytes after it.
    NeedMore,
    /// A complete message.
    Message(Message<'a>),
    /// A pong arrived (its payload): for heartbeats with a pong deadline.
    Pong(&'a [u8]),
    /// The close handshake is complete: the peer's close (code and reason)
    /// arrived, and our reply, if one was due, is in the output. Flush the
    /// output and close the transport.
    Closed {
        /// The peer's code ([`CloseCode::NO_STATUS`] if it sent none).
        code: CloseCode,
        /// The peer's reason.
        reason: &'a str,
    },
    /// The peer broke the protocol (or a limit): a close frame with `code`
    /// is in the output. Flush it and close the transport.
    Failed {
        /// The code sent (1002, 1007, 1009, ...).
        code: CloseCode,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The result of [`Session::read`](super::Session::read): bytes of the input used, and the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read<'a> {
    /// Input bytes used; the next call starts at `input[consumed..]`.
    pub consumed: usize,
    /// What was found.
    pub event: Event<'a>,
}

/// The close state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close and wait for the peer's (until the close timeout);
    /// data messages received meanwhile are dropped.
    CloseSent,
    /// Finished: the transport should be closed once the output is flushed.
    Closed,
}

/// Sending on a session that has sent its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClosed;

impl std::fmt::Display for SessionClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the WebSocket session is closing or closed")
    }
}

impl std::error::Error for SessionClosed {}
