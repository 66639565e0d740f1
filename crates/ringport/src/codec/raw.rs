//! No framing: whatever arrives is the message.

use super::{Codec, CodecError, Decode, MAX_HEADER_LEN};

/// Default largest message: 64 KiB, the size of a typical receive buffer.
pub const DEFAULT_MAX_RAW: usize = 64 * 1024;

/// Every chunk of bytes received is one message, as it came off the socket;
/// a chunk longer than the maximum is delivered as several messages of at
/// most that many bytes. Message boundaries are therefore those of the
/// transport's reads, not of the sender's writes: use it for byte-stream
/// protocols (proxies, echo, telnet-like) where the application does its own
/// parsing.
///
/// Encoding writes the payload as is. An empty payload writes nothing and so
/// is not seen by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBytes {
    max: usize,
}

impl Default for RawBytes {
    fn default() -> Self {
        RawBytes {
            max: DEFAULT_MAX_RAW,
        }
    }
}

impl RawBytes {
    /// Messages of at most 64 KiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the largest message delivered; longer chunks are cut.
    ///
    /// # Panics
    /// If `max` is 0: every message would be empty and no byte would ever
    /// be consumed.
    pub fn max_frame_length(mut self, max: usize) -> Self {
        assert!(max > 0, "RawBytes maximum frame length must be at least 1");
        self.max = max;
        self
    }
}

impl Codec for RawBytes {
    fn decode(&mut self, buf: &[u8]) -> Result<Decode, CodecError> {
        if buf.is_empty() {
            return Ok(Decode::NeedMore { at_least: Some(1) });
        }
        Ok(Decode::Frame {
            skip: 0,
            payload: buf.len().min(self.max),
            trailer: 0,
        })
    }

    /// Writes nothing; a payload over the maximum is refused because the
    /// peer would receive it cut into several messages.
    fn encode_header(
        &self,
        payload_len: usize,
        _dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        super::headerless(payload_len, self.max)
    }

    fn max_frame(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Framer;

    #[test]
    fn each_chunk_is_a_message() {
        let mut framer = Framer::new(RawBytes::new());
        let mut got = Vec::new();
        for chunk in [&b"hello"[..], b"", b" world"] {
            framer
                .feed(chunk, |p| {
                    got.push(p.to_vec());
                    true
                })
                .unwrap();
            assert_eq!(framer.buffered(), 0);
        }
        assert_eq!(got, vec![b"hello".to_vec(), b" world".to_vec()]);
        assert_eq!(framer.heap_bytes(), 0);
    }

    #[test]
    fn long_chunks_are_cut_at_max() {
        let mut framer = Framer::new(RawBytes::new().max_frame_length(4));
        let mut got = Vec::new();
        framer
            .feed(b"abcdefghij", |p| {
                got.push(p.to_vec());
                true
            })
            .unwrap();
        assert_eq!(
            got,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"ij".to_vec()]
        );
    }

    #[test]
    fn decode_and_encode() {
        let mut c = RawBytes::new();
        assert_eq!(c.decode(b""), Ok(Decode::NeedMore { at_least: Some(1) }));
        assert_eq!(
            c.decode(b"xyz"),
            Ok(Decode::Frame {
                skip: 0,
                payload: 3,
                trailer: 0
            })
        );
        let mut hdr = [0u8; MAX_HEADER_LEN];
        assert_eq!(c.encode_header(DEFAULT_MAX_RAW, &mut hdr), Ok(0));
        assert!(c.encode_header(DEFAULT_MAX_RAW + 1, &mut hdr).is_err());
        assert_eq!(c.trailer(), b"");
        assert_eq!(c.max_frame(), DEFAULT_MAX_RAW);
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn zero_max_panics() {
        let _ = RawBytes::new().max_frame_length(0);
    }
}
