//! ringport's codecs as tokio-util [`Decoder`]/[`Encoder`]s: speak
//! ringport's wire format (or any [`Codec`]) from plain tokio sockets with
//! `Framed`, `FramedRead` and `FramedWrite`.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Codec, CodecError, Decode, LengthDelimited, MAX_HEADER_LEN};

/// A ringport [`Codec`] as a tokio-util [`Decoder`] (items: the payload of
/// each frame, header and trailer stripped) and [`Encoder`] (of `Bytes` or
/// `&[u8]` payloads). Frames over the codec's maximum are refused before
/// anything is allocated for them (`InvalidData` when decoding,
/// `InvalidInput` when encoding).
///
/// ```
/// use ringport::{FrameCodec, LengthDelimited};
/// use tokio_util::codec::{Decoder, Encoder};
/// use bytes::BytesMut;
///
/// let mut codec = FrameCodec::new(LengthDelimited::new());
/// let mut wire = BytesMut::new();
/// codec.encode(&b"ping"[..], &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\0\0\0\x04ping");
/// assert_eq!(&codec.decode(&mut wire).unwrap().unwrap()[..], b"ping");
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec<C: Codec = LengthDelimited> {
    codec: C,
}

impl<C: Codec> FrameCodec<C> {
    /// Wraps a ringport codec as a tokio-util `Decoder`/`Encoder`.
    pub fn new(codec: C) -> Self {
        FrameCodec { codec }
    }

    /// The wrapped codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Unwraps the codec.
    pub fn into_inner(self) -> C {
        self.codec
    }

    fn encode_payload(&mut self, payload: &[u8], dst: &mut BytesMut) -> io::Result<()> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = self
            .codec
            .encode_header(payload.len(), &mut header)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let trailer = self.codec.trailer();
        dst.reserve(n + payload.len() + trailer.len());
        dst.put_slice(&header[..n]);
        dst.put_slice(payload);
        dst.put_slice(trailer);
        Ok(())
    }
}

impl Default for FrameCodec<LengthDelimited> {
    /// ringport's default wire format: `[u32 BE length][payload]`.
    fn default() -> Self {
        FrameCodec::new(LengthDelimited::new())
    }
}

fn invalid(e: CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C: Codec> Decoder for FrameCodec<C> {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self.codec.decode(src).map_err(invalid)? {
            Decode::Frame {
                skip,
                payload,
                trailer,
            } => {
                let total = skip + payload + trailer;
                if src.len() < total {
                    // The codec checked `payload` against its maximum.
                    src.reserve(total - src.len());
                    return Ok(None);
                }
                let mut frame = src.split_to(total);
                frame.advance(skip);
                frame.truncate(payload);
                self.codec.frame_consumed();
                Ok(Some(frame))
            }
            Decode::NeedMore { at_least } => {
                if let Some(n) = at_least {
                    src.reserve(n.saturating_sub(src.len()));
                }
                Ok(None)
            }
        }
    }
}

impl<C: Codec> Encoder<Bytes> for FrameCodec<C> {
    type Error = io::Error;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        self.encode_payload(&payload, dst)
    }
}

impl<C: Codec> Encoder<&[u8]> for FrameCodec<C> {
    type Error = io::Error;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> io::Result<()> {
        self.encode_payload(payload, dst)
    }
}
