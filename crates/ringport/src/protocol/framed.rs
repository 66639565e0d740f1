//! The framed codecs as an implementation of the protocol seam.
//!
//! A [`Codec`] (length-delimited, lines, raw bytes, or a user's) is a
//! protocol without an opening handshake and without control traffic: it
//! cuts the received bytes into messages and puts a header (and a trailer)
//! around the messages sent. [`FramedConn`] says exactly that through
//! [`ConnProtocol`], and [`FramedListener`] makes one per connection, so
//! the framed codec is the seam's first implementation.
//!
//! The engine still runs a listener *without* a protocol on its built-in
//! specialization of this same protocol (`engine/input.rs`, `direct.rs`):
//! it keeps the zero-copy receive paths that a byte-slice interface cannot
//! express (the rest of a large frame received straight into its
//! reassembly buffer, bulk receives, the small-message short path, a
//! pooled input state only while a frame is partial). Both paths cut the
//! stream with the same [`Framer`] and the same codec, and the differential
//! tests check that they give identical results: `tests` below (random
//! streams in random splits, message for message and error for error,
//! against `Framer` fed directly) and `engine/framed_seam_tests.rs` (the
//! same scripted scenarios through a listener without protocol and through
//! a [`FramedListener`]: same handler calls, same bytes on the wire, same
//! close reasons). `framed_seam_cost` in `engine/bench_echo.rs` measures what the
//! specialization is worth.
//!
//! Behaviour through the seam:
//! - no handshake: a connection is open from its accept
//!   ([`ConnProtocol::is_open`] is true, there is no upgrade request, and
//!   [`ConnProtocol::decide`] is an error);
//! - a frame lying wholly inside the received bytes is handed over in place
//!   ([`Payload::Input`], no copy); a frame that spans receives is
//!   reassembled by the [`Framer`] in a buffer of the connection's, which
//!   grows with the bytes that arrived (never to the length a header
//!   announces; nothing is allocated for a frame announced over the codec's
//!   maximum) and is counted in [`ConnProtocol::heap_bytes`], so it falls
//!   under the shard's input memory bound. A reassembled frame reaches the
//!   handler as owned bytes: the buffer itself for a large one (over 64
//!   KiB), a copy for a small one; and the buffer is freed once no frame is
//!   in progress, so an idle connection holds no input memory;
//! - a codec error closes the connection with the reason the built-in path
//!   gives for it ([`CloseReason::FrameTooLarge`] with the announced length
//!   and the maximum, else [`CloseReason::InvalidFrame`] with the error's
//!   text);
//! - only binary messages exist: [`MessageKind::Text`] is sent as the same
//!   bytes as binary (as `Context::send_as` does on the built-in path), and
//!   every received message is binary;
//! - outgoing messages get the codec's header, the payload following by
//!   reference ([`Framed::Header`]); a codec with a trailer (lines: `\n`) or
//!   a header longer than [`MAX_PROTOCOL_HEADER`] bytes has its whole frame
//!   written out ([`Framed::Written`], a copy of the payload). A payload over
//!   the codec's maximum is refused with [`SendError::TooLarge`];
//! - no keep-alive of its own (the handler's heartbeat runs) and no goodbye
//!   (a close writes nothing).
//!
//! The engine asks a protocol for its message in progress
//! ([`ConnProtocol::partial`]), so through the seam as on the built-in
//! path a peer that closes inside a frame is reported as
//! [`CloseReason::TruncatedFrame`], `frame_timeout` applies, and an
//! oversize frame is counted in the shard's `frames_too_large`
//! (`engine/framed_seam_tests.rs` checks all three).

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    ConnProtocol, Framed, ListenerProtocol, MAX_PROTOCOL_HEADER, MessageKind, Payload, Step,
    UpgradeDecision, UpgradeInfo,
};
use crate::codec::{Codec, CodecError, Framer, MAX_HEADER_LEN, Partial};
use crate::error::{CloseReason, SendError};

/// Makes a [`FramedConn`] with a clone of its codec for every connection a
/// listener accepts.
// The engine runs framed listeners on its built-in path; this one is the
// seam's reference implementation, driven by the differential tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct FramedListener<C: Codec> {
    codec: C,
}

#[cfg_attr(not(test), allow(dead_code))]
impl<C: Codec> FramedListener<C> {
    /// Connections framed with (a clone of) `codec`.
    pub(crate) fn new(codec: C) -> Self {
        FramedListener { codec }
    }
}

impl<C: Codec + Sync> ListenerProtocol for FramedListener<C> {
    /// None: a framed connection is open from its accept (the engine's
    /// handshake deadline for it passes without effect).
    fn handshake_timeout(&self) -> Duration {
        Duration::ZERO
    }

    fn open(&self, _peer: SocketAddr, _now: Instant) -> Box<dyn ConnProtocol> {
        Box::new(FramedConn::new(self.codec.clone()))
    }
}

/// One connection's framed protocol: its [`Framer`] (the codec and the
/// reassembly of a frame spanning receives). See the module docs.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct FramedConn<C: Codec> {
    framer: Framer<C>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl<C: Codec> FramedConn<C> {
    /// A connection with nothing buffered. Allocates nothing.
    pub(crate) fn new(codec: C) -> Self {
        FramedConn {
            framer: Framer::new(codec),
        }
    }
}

/// The close reason of a codec error, through the seam and on the engine's
/// built-in framed path (`Engine::after_feed`) alike.
pub(crate) fn close_reason(error: CodecError) -> CloseReason {
    match error {
        CodecError::FrameTooLarge { len, max } => CloseReason::FrameTooLarge { len, max },
        e => CloseReason::InvalidFrame(e.to_string()),
    }
}

/// The header `codec` puts before a message of `len` bytes, and its length;
/// [`SendError::TooLarge`] over `max_frame` (the codec's maximum, passed in
/// so the engine's hot path reads it from its own fields). The engine's
/// built-in framed path and [`FramedConn::frame`] both frame with it.
#[inline]
pub(crate) fn header<C: Codec>(
    codec: &C,
    max_frame: usize,
    len: usize,
) -> Result<([u8; MAX_HEADER_LEN], usize), SendError> {
    if len > max_frame {
        return Err(SendError::TooLarge);
    }
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = codec
        .encode_header(len, &mut head)
        .map_err(|_| SendError::TooLarge)?;
    Ok((head, n))
}

/// Where the payload handed over by the framer lies, kept as plain
/// numbers while the framer runs (cheaper to hand back than a [`Payload`]
/// built inside its callback).
#[derive(Default)]
struct Found {
    /// A payload was handed over.
    some: bool,
    /// Its range in the input, when it lies there.
    span: Option<(usize, usize)>,
    /// Else its bytes: the framer's buffer taken over, or a copy.
    owned: Option<Bytes>,
}

impl Found {
    /// Notes `payload`, handed over by the framer: in place in the input
    /// (`input` is its address range), else in the framer's buffer, taken
    /// over when the framer gave it up (`shared`), copied otherwise.
    #[inline]
    fn note(&mut self, payload: &[u8], shared: Option<&Bytes>, input: &Range<*const u8>) {
        self.some = true;
        // The framer hands out slices of the input or of its own buffer,
        // which never overlap: the address range tells which.
        let at = payload.as_ptr_range();
        if shared.is_none() && !payload.is_empty() && input.start <= at.start && at.end <= input.end
        {
            let start = at.start.addr() - input.start.addr();
            self.span = Some((start, start + payload.len()));
        } else {
            self.owned = Some(match shared {
                Some(bytes) => bytes.clone(),
                None => Bytes::copy_from_slice(payload),
            });
        }
    }

    fn payload(self) -> Option<Payload> {
        if !self.some {
            return None;
        }
        Some(match (self.span, self.owned) {
            (Some((start, end)), _) => Payload::Input(start, end),
            (None, owned) => Payload::Owned(owned.unwrap_or_default()),
        })
    }
}

impl<C: Codec> ConnProtocol for FramedConn<C> {
    /// Up to one message; the bytes after it are left for the next call.
    /// Without a message every byte is used (the framer keeps a frame in
    /// progress), so the engine carries nothing between receives for this
    /// protocol.
    fn receive(&mut self, input: &mut [u8], _now: Instant, _out: &mut Vec<u8>) -> (usize, Step) {
        let input: &[u8] = input;
        let range = input.as_ptr_range();
        let mut found = Found::default();
        let fed = self.framer.feed_shared(input, |payload, shared| {
            found.note(payload, shared, &range);
            false
        });
        let used = match fed {
            Ok(used) => used,
            Err(e) => return (input.len(), Step::Close(close_reason(e))),
        };
        if self.framer.heap_bytes() > 0 && self.framer.partial().is_none() {
            // Between frames: the reassembly buffer goes, so an idle
            // connection holds no input memory (on the built-in path its
            // input state goes back to the shard's pool, and a framer that
            // grew is replaced the same way: codec state does not outlive
            // a frame).
            self.framer = Framer::new(self.framer.codec().clone());
        }
        match found.payload() {
            Some(payload) => (used, Step::Message(MessageKind::Binary, payload)),
            None => (used, Step::NeedMore),
        }
    }

    fn upgrade_info(&self) -> Option<&dyn UpgradeInfo> {
        None
    }

    /// Never called (there is no opening request): an error if it is.
    fn decide(
        &mut self,
        _decision: UpgradeDecision,
        _out: &mut Vec<u8>,
    ) -> Result<bool, SendError> {
        Err(SendError::Closed)
    }

    fn is_open(&self) -> bool {
        true
    }

    /// The codec's header; `kind` is ignored (text goes as binary).
    fn frame(
        &mut self,
        _kind: MessageKind,
        payload: &[u8],
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<Framed, SendError> {
        let codec = self.framer.codec();
        let (head, n) = self::header(codec, codec.max_frame(), payload.len())?;
        let trailer = codec.trailer();
        if trailer.is_empty() && n <= MAX_PROTOCOL_HEADER {
            header[..n].copy_from_slice(&head[..n]);
            return Ok(Framed::Header(n));
        }
        out.reserve(n + payload.len() + trailer.len());
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(payload);
        out.extend_from_slice(trailer);
        Ok(Framed::Written)
    }

    /// Nothing: the transport's end is the goodbye.
    fn close(&mut self, _reason: &CloseReason, _now: Instant, _out: &mut Vec<u8>) {}

    /// None of its own: the handler's heartbeat runs.
    fn heartbeat(&mut self, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn heap_bytes(&self) -> usize {
        self.framer.heap_bytes()
    }

    /// The frame in progress, if any of its bytes arrived
    /// ([`Framer::partial`]), as on the built-in path.
    fn partial(&self) -> Option<Partial> {
        self.framer.partial()
    }
}

#[cfg(test)]
mod tests;
