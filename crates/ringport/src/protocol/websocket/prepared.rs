//! Framing once for many connections: a broadcast or publish is framed
//! once, and compressed once per distinct compression setting among the
//! sessions that reset their compressor after each message.

use bytes::Bytes;

use super::deflate;
use super::frame::{self, MAX_HEADER_LEN, OpCode};
use super::session::{self, Session};
use super::types::{MessageKind, Role, SessionClosed, State};

/// A message framed once, to be queued to many server sessions.
///
/// The uncompressed frame (header and payload) is built once and shared as
/// [`Bytes`]. For sessions with permessage-deflate and
/// `server_no_context_takeover`, the compressed frame is built once per
/// (window bits, level) and shared too; sessions with context takeover
/// compress for themselves (their output depends on their history).
///
/// Not `Sync`-shared on purpose: the compressed variants are cached with
/// `&mut self`, so each shard works on its own clone (cheap: the payload and
/// the frames are reference-counted).
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    kind: MessageKind,
    payload: Bytes,
    plain: Bytes,
    compressed: Vec<((u8, u8), Bytes)>,
}

/// Where [`Session::send_prepared`] put the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A shared frame: queue these bytes (no copy).
    Shared(Bytes),
    /// The frame was written to the output buffer (this session compressed
    /// or masked it itself).
    Written,
}

impl PreparedMessage {
    /// Frames `payload` (unmasked, uncompressed) once.
    pub fn new(kind: MessageKind, payload: impl Into<Bytes>) -> PreparedMessage {
        let payload = payload.into();
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let mut plain = Vec::with_capacity(MAX_HEADER_LEN + payload.len());
        frame::write_frame(&mut plain, true, false, opcode, &payload, None);
        PreparedMessage {
            kind,
            payload,
            plain: plain.into(),
            compressed: Vec::new(),
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The uncompressed, unmasked frame.
    pub fn plain_frame(&self) -> &Bytes {
        &self.plain
    }

    /// Compressed variants built so far.
    pub fn compressed_variants(&self) -> usize {
        self.compressed.len()
    }

    fn compressed(&mut self, bits: u8, level: u8) -> Bytes {
        if let Some((_, b)) = self.compressed.iter().find(|(k, _)| *k == (bits, level)) {
            return b.clone();
        }
        let mut out = Vec::with_capacity(MAX_HEADER_LEN + self.payload.len() / 2 + 64);
        let mut d = deflate::take_deflater(bits, level);
        session::write_compressed(&mut d, self.kind, &self.payload, None, &mut out);
        deflate::give_deflater(bits, level, d);
        let b = Bytes::from(out);
        self.compressed.push(((bits, level), b.clone()));
        b
    }
}

impl Session {
    /// Queues a prepared message: a shared frame when this session can use
    /// one (no compression for this size, or compression without context
    /// takeover), otherwise the session frames (compresses, masks) it into
    /// `out`.
    pub fn send_prepared(
        &mut self,
        msg: &mut PreparedMessage,
        out: &mut Vec<u8>,
    ) -> Result<Outgoing, SessionClosed> {
        if self.state() != State::Open {
            return Err(SessionClosed);
        }
        if self.role() == Role::Client {
            self.send(msg.kind, &msg.payload.clone(), out)?;
            return Ok(Outgoing::Written);
        }
        if !self.would_compress(msg.payload.len()) {
            return Ok(Outgoing::Shared(msg.plain.clone()));
        }
        if let Some((bits, level)) = self.shared_compression() {
            return Ok(Outgoing::Shared(msg.compressed(bits, level)));
        }
        let payload = msg.payload.clone();
        self.send(msg.kind, &payload, out)?;
        Ok(Outgoing::Written)
    }
}

/// The header of an unmasked, uncompressed, unfragmented frame of `len`
/// bytes (the server side), written to `hdr`; returns its length. For
/// writing header and payload separately (the payload as shared `Bytes`):
/// valid for a server session when
/// [`Session::would_compress`]`(len)` is false.
pub fn server_frame_header(kind: MessageKind, len: usize, hdr: &mut [u8; MAX_HEADER_LEN]) -> usize {
    let opcode = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    frame::encode_header(hdr, true, false, opcode, len as u64, None)
}
