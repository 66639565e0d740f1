//! Framing: how a byte stream is cut into messages, and how a message is put
//! back on the wire.
//!
//! Codecs are *sans-I/O*: they look at bytes handed to them and never touch a
//! socket, so they are tested (and fuzzed) without the kernel. A codec only
//! *locates* frames; the [`Framer`] owns reassembly across receive buffers,
//! so that a codec stays a small, stateless-looking parser, and says whether
//! a frame is in progress ([`Framer::partial`]) when the stream ends.
//!
//! Provided codecs:
//! - [`LengthDelimited`]: a length header then the payload, with two rule
//!   sets that each match their reference frame for frame: tokio-util's
//!   `LengthDelimitedCodec` (the builder methods) and Netty's
//!   `LengthFieldBasedFrameDecoder` ([`LengthDelimited::netty`]). The
//!   default is ringport's wire format: 4-byte big-endian payload length,
//!   maximum 16 MiB.
//! - [`Lines`]: newline-delimited messages (`\n`, an optional `\r` before it
//!   is stripped), with a maximum line length.
//! - [`RawBytes`]: no framing; every received chunk is one message.
//!
//! User codecs implement [`Codec`].

mod frame_pool;
mod framer;
mod length_delimited;
mod lines;
#[cfg(test)]
mod prop_tests;
mod raw;

pub use frame_pool::FramePool;
pub use framer::{Framer, Partial};
pub use length_delimited::{Endianness, LengthDelimited};
pub use lines::Lines;
pub use raw::RawBytes;

/// Largest header any codec may write in front of a payload.
pub const MAX_HEADER_LEN: usize = 16;

/// The default maximum payload length: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Where the next frame lies in the bytes not yet consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// A frame starts at offset 0: `skip` bytes of header, then `payload`
    /// bytes of message, then `trailer` bytes to drop (e.g. the `\n` of a
    /// line). The frame may extend past the bytes seen so far: the framer then
    /// waits for `skip + payload + trailer` bytes in total.
    Frame {
        /// Header bytes before the payload.
        skip: usize,
        /// Payload bytes: the message handed to the handler.
        payload: usize,
        /// Bytes after the payload that belong to the frame but not to the
        /// message.
        trailer: usize,
    },
    /// Not enough bytes to locate the next frame. `at_least` is the total
    /// number of bytes (counted from offset 0) the codec needs before it can
    /// say more, when it knows it (e.g. a header that is still incomplete).
    NeedMore {
        /// Total bytes needed before the codec can say more, if known.
        at_least: Option<usize>,
    },
}

/// Why a byte stream cannot be decoded (or a message cannot be encoded).
/// Either one closes the connection it concerns, and only that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The announced (or accumulated) frame is longer than the maximum.
    /// Nothing is allocated for it.
    FrameTooLarge {
        /// The length announced (or accumulated so far).
        len: u64,
        /// The codec's maximum.
        max: usize,
    },
    /// The header is malformed (e.g. a length adjustment that makes it
    /// negative).
    InvalidHeader(&'static str),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            CodecError::InvalidHeader(why) => write!(f, "invalid frame header: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// A framing rule. One instance is cloned for every connection, so a codec
/// may keep per-connection parsing state (e.g. how far a line was scanned).
pub trait Codec: Clone + Send + 'static {
    /// Locate the next frame at the start of `buf` (the bytes received and
    /// not yet consumed). Must not panic on any input. The framer calls it
    /// again with a longer `buf` after `NeedMore`, and with the bytes that
    /// follow after a frame was consumed.
    fn decode(&mut self, buf: &[u8]) -> Result<Decode, CodecError>;

    /// Called after a frame returned by [`Codec::decode`] was consumed, so a
    /// codec that keeps scan state can reset it.
    fn frame_consumed(&mut self) {}

    /// Write the header that precedes a payload of `payload_len` bytes into
    /// `dst`, returning its length (at most [`MAX_HEADER_LEN`]).
    fn encode_header(
        &self,
        payload_len: usize,
        dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError>;

    /// Bytes written after every payload (e.g. `b"\n"`); empty by default.
    fn trailer(&self) -> &'static [u8] {
        b""
    }

    /// The largest payload this codec accepts, in either direction.
    fn max_frame(&self) -> usize;
}

/// `encode_header` of a codec that writes no header: only checks the size.
pub(crate) fn headerless(payload_len: usize, max: usize) -> Result<usize, CodecError> {
    if payload_len > max {
        return Err(CodecError::FrameTooLarge {
            len: payload_len as u64,
            max,
        });
    }
    Ok(0)
}
