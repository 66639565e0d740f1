//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692), sans I/O.
//!
//! Pure state machines over caller-owned buffers, no socket and no clock
//! (time comes in as `now`), so an engine, a test or a fuzzer drives them the
//! same way:
//!
//! - [`handshake`]: [`parse_request`] reads the HTTP/1.1 upgrade request
//!   incrementally ([`RequestStatus::Partial`] / `Complete` / `Refused` with
//!   an HTTP status); an upgrade hook looks at the [`UpgradeRequest`]
//!   (method, path, query, headers, subprotocols, extensions) and
//!   [`accept`](UpgradeRequest::accept)s it (writing the 101 into a buffer)
//!   or refuses it ([`write_refusal`]).
//! - [`Session`]: one connection after the handshake. [`Session::read`]
//!   turns received bytes into [`Message`]s (a single uncompressed frame is
//!   handed out as a slice of the input, unmasked in place), answers pings,
//!   runs the close handshake and fails the connection with the right code
//!   on a protocol error (1002), invalid UTF-8 (1007) or a limit (1009).
//!   [`Session::send`] frames (and compresses) a message;
//!   [`PreparedMessage`] frames a broadcast once for many sessions.
//! - [`deflate`]: permessage-deflate negotiation and contexts, bounded
//!   inflation, a per-shard memory budget.
//! - [`client`]: the client's handshake; [`Session::client`] masks what it
//!   sends.
//! - [`frame`]: frame headers and masking.
//!
//! # Memory per connection
//!
//! Measured with a counting allocator (`bench/peers/ws-sansio`, binary
//! `ws-memory`, flate2 1.1 on zlib-rs 0.6, level 1), after a real handshake
//! and one message each way:
//!
//! | negotiated | `Session` inline | heap while idle |
//! |---|---|---|
//! | no deflate | 48 B | 0 |
//! | deflate, no context takeover both ways | 48 B | 32 B (the deflate state box; contexts are per-thread spares) |
//! | deflate with context takeover, 9-bit windows | 48 B | 299 KB |
//! | deflate with context takeover, 12-bit windows | 48 B | 313 KB |
//! | deflate with context takeover, 15-bit windows | 48 B | 428 KB |
//!
//! A compressor costs about 246 KiB + 4 bytes per window slot (252 KB at 9
//! bits, 382 KB at 15), a decompressor 47.5 KB whatever the window
//! ([`DeflateParams::compressor_cost`], [`DeflateParams::decompressor_cost`]).
//! Reassembly buffers exist only while a fragmented or partially received
//! message is in progress, and are freed at the next [`Session::read`].
//!
//! A server connection, in outline:
//!
//! ```
//! use ringport::protocol::websocket::*;
//! # fn main() {
//! let mut out = Vec::new();
//! let mut input = b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n".to_vec();
//! let RequestStatus::Complete { request, consumed } = parse_request(&input, &HandshakeLimits::default()) else {
//!     panic!("a complete request")
//! };
//! assert_eq!((request.path(), request.query()), ("/chat", Some("room=1")));
//! let negotiated = request.accept(&AcceptOptions::default(), None, &mut out).unwrap();
//! assert!(out.starts_with(b"HTTP/1.1 101"));
//! let mut session = Session::server(&SessionConfig::default(), negotiated.deflate);
//! input.drain(..consumed);
//! // A masked text frame "Hello" from the client (RFC 6455 §5.7).
//! input.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
//! let r = session.read(&mut input, &mut out);
//! assert_eq!(r.event, Event::Message(Message::Text("Hello")));
//! # }
//! ```

pub mod client;
pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
mod prepared;
mod session;
mod types;

pub use client::{ClientAccepted, ClientHandshake, ClientOptions, ResponseStatus};
pub use close::{CloseCode, ClosePayload};
pub use deflate::{DeflateBudget, DeflateConfig, DeflateParams};
pub use handshake::{
    AcceptError, AcceptOptions, HandshakeLimits, Negotiated, Refusal, RequestStatus,
    UpgradeRequest, parse_request, write_refusal,
};
pub use prepared::{Outgoing, PreparedMessage, server_frame_header};
pub use session::Session;
pub use types::{Event, Message, MessageKind, Read, Role, SessionClosed, SessionConfig, State};
