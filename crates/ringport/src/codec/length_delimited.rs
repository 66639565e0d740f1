//! Length-prefixed framing with the settings of tokio-util's
//! `LengthDelimitedCodec` and Netty's `LengthFieldBasedFrameDecoder`; the
//! layout rule is documented on [`LengthDelimited`].

use super::{Codec, CodecError, DEFAULT_MAX_FRAME, Decode, MAX_HEADER_LEN};

/// Byte order of the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endianness {
    /// Most significant byte first (network order). The default.
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

impl Endianness {
    /// The byte order of the machine this runs on. Only useful for protocols
    /// between processes that are known to share a machine type.
    pub const fn native() -> Self {
        if cfg!(target_endian = "big") {
            Endianness::Big
        } else {
            Endianness::Little
        }
    }
}

/// A length field followed by the frame. The default is ringport's wire
/// format: a 4-byte big-endian payload length, then the payload, at most
/// [`DEFAULT_MAX_FRAME`] bytes.
///
/// ```text
/// +---------------------+---------------------+---------------------------------+
/// | length_field_offset | length_field_length | value + length_adjustment bytes |
/// | bytes, ignored      | bytes: the value    |                                 |
/// +---------------------+---------------------+---------------------------------+
/// |<---------- num_skip ---------->|<----------- delivered payload ------------>|
/// ```
///
/// - the whole frame is `length_field_offset + length_field_length +
///   (value + length_adjustment)` bytes long;
/// - the first `num_skip` bytes are dropped and the rest of the frame is the
///   payload handed to the application. `num_skip` defaults to the end of the
///   length field (the header is stripped); `num_skip(0)` keeps the whole
///   header in the payload.
///
/// This is the rule of Netty and of tokio-util's documented examples 1 to 6.
/// (tokio-util's example 7, which puts an uncounted byte between the length
/// field and the payload, needs `length_adjustment(1)` under this rule: the
/// byte is part of the frame after the length field, so it is counted.)
///
/// `max_frame_length` bounds `value + length_adjustment`, i.e. the bytes that
/// follow the length field. It is checked as soon as the length field has
/// arrived, before any payload byte is waited for and before anything is
/// allocated for it, so a peer cannot make a connection reserve memory by
/// announcing a large frame.
///
/// ```
/// use ringport::codec::{Framer, LengthDelimited};
/// // A 2-byte length that counts the header too, header kept in the payload
/// // (tokio-util's example 3).
/// let codec = LengthDelimited::new()
///     .length_field_length(2)
///     .length_adjustment(-2)
///     .num_skip(0);
/// let mut framer = Framer::new(codec);
/// let mut frames = Vec::new();
/// framer
///     .feed(b"\x00\x0DHello world", |payload| {
///         frames.push(payload.to_vec());
///         true
///     })
///     .unwrap();
/// assert_eq!(frames, [b"\x00\x0DHello world".to_vec()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthDelimited {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    /// `None` means "the end of the length field", tracking later changes
    /// of `offset` or `field_len` the way tokio's builder does.
    num_skip: Option<usize>,
    endianness: Endianness,
    max_frame: usize,
}

impl Default for LengthDelimited {
    fn default() -> Self {
        LengthDelimited {
            offset: 0,
            field_len: 4,
            adjustment: 0,
            num_skip: None,
            endianness: Endianness::Big,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl LengthDelimited {
    /// ringport's default wire format: `[u32 BE payload length][payload]`,
    /// maximum payload [`DEFAULT_MAX_FRAME`] (16 MiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes before the length field (ignored by the decoder). Default 0.
    pub fn length_field_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Size of the length field in bytes. Default 4.
    ///
    /// # Panics
    /// If `len` is not in `1..=8` (a configuration error, found at start-up).
    pub fn length_field_length(mut self, len: usize) -> Self {
        assert!(
            (1..=8).contains(&len),
            "length field length must be 1..=8, got {len}"
        );
        self.field_len = len;
        self
    }

    /// Added to the length field's value to get the number of frame bytes
    /// that follow the length field. Negative when the value also counts the
    /// header (e.g. `-2` for a 2-byte field at offset 0 that counts the whole
    /// frame). Default 0.
    pub fn length_adjustment(mut self, adjustment: isize) -> Self {
        self.adjustment = adjustment;
        self
    }

    /// Bytes dropped from the start of every frame before the payload is
    /// delivered. Default: the end of the length field, so the header is
    /// stripped. `0` delivers the whole frame, header included.
    pub fn num_skip(mut self, num_skip: usize) -> Self {
        self.num_skip = Some(num_skip);
        self
    }

    /// Read and write the length field big-endian (the default).
    pub fn big_endian(self) -> Self {
        self.endianness(Endianness::Big)
    }

    /// Read and write the length field little-endian.
    pub fn little_endian(self) -> Self {
        self.endianness(Endianness::Little)
    }

    /// Read and write the length field in the machine's byte order.
    pub fn native_endian(self) -> Self {
        self.endianness(Endianness::native())
    }

    /// Set the byte order of the length field.
    pub fn endianness(mut self, endianness: Endianness) -> Self {
        self.endianness = endianness;
        self
    }

    /// The largest `value + length_adjustment` accepted (the frame bytes
    /// after the length field). Default [`DEFAULT_MAX_FRAME`].
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// End of the length field, counted from the start of the frame.
    fn header_end(&self) -> usize {
        self.offset.saturating_add(self.field_len)
    }

    fn skip(&self) -> usize {
        self.num_skip.unwrap_or_else(|| self.header_end())
    }

    /// Largest value the length field can hold.
    fn field_max(&self) -> u64 {
        if self.field_len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.field_len)) - 1
        }
    }

    fn read_field(&self, field: &[u8]) -> u64 {
        match self.endianness {
            Endianness::Big => field.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)),
            Endianness::Little => field
                .iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        }
    }

    fn write_field(&self, value: u64, field: &mut [u8]) {
        let bytes = value.to_be_bytes();
        let be = &bytes[8 - field.len()..];
        match self.endianness {
            Endianness::Big => field.copy_from_slice(be),
            Endianness::Little => {
                for (dst, src) in field.iter_mut().zip(be.iter().rev()) {
                    *dst = *src;
                }
            }
        }
    }
}

impl Codec for LengthDelimited {
    fn decode(&mut self, buf: &[u8]) -> Result<Decode, CodecError> {
        let header_end = self.header_end();
        let Some(field) = buf.get(self.offset..header_end) else {
            return Ok(Decode::NeedMore {
                at_least: Some(header_end),
            });
        };
        let value = self.read_field(field);
        // i128 holds every u64 value plus every isize adjustment exactly.
        let after_field = i128::from(value) + self.adjustment as i128;
        if after_field < 0 {
            return Err(CodecError::InvalidHeader(
                "length field plus adjustment is negative",
            ));
        }
        if after_field > self.max_frame as i128 {
            return Err(CodecError::FrameTooLarge {
                len: u64::try_from(after_field).unwrap_or(u64::MAX),
                max: self.max_frame,
            });
        }
        // after_field <= max_frame, so it fits in usize.
        let total = usize::try_from(after_field)
            .ok()
            .and_then(|n| n.checked_add(header_end))
            .ok_or(CodecError::FrameTooLarge {
                len: u64::MAX,
                max: self.max_frame,
            })?;
        let skip = self.skip();
        if skip > total {
            return Err(CodecError::InvalidHeader(
                "frame is shorter than the bytes to skip (num_skip)",
            ));
        }
        Ok(Decode::Frame {
            skip,
            payload: total - skip,
            trailer: 0,
        })
    }

    /// Writes the first `num_skip` bytes of a frame whose delivered payload
    /// is `payload_len` bytes, so that decoding the header followed by the
    /// payload gives the payload back:
    ///
    /// - header stripped (`num_skip >= offset + length`, the usual case): the
    ///   header is `offset` zero bytes, the length field, then zero bytes up
    ///   to `num_skip`;
    /// - header partly kept (`num_skip` smaller): only the stripped prefix is
    ///   written and the payload must carry the rest of the header, exactly
    ///   as [`decode`](Codec::decode) delivers it. A decoded frame can thus
    ///   be forwarded unchanged; the length field is computed from
    ///   `payload_len` (any length bytes inside the payload are the caller's).
    ///
    /// Errors: [`CodecError::FrameTooLarge`] if the payload is over the
    /// maximum or its length does not fit the field,
    /// [`CodecError::InvalidHeader`] if `num_skip` exceeds [`MAX_HEADER_LEN`]
    /// or the payload is too short to carry the kept part of the header.
    fn encode_header(
        &self,
        payload_len: usize,
        dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        let max = self.max_frame();
        if payload_len > max {
            return Err(CodecError::FrameTooLarge {
                len: payload_len as u64,
                max,
            });
        }
        let skip = self.skip();
        if skip > MAX_HEADER_LEN {
            return Err(CodecError::InvalidHeader(
                "num_skip is longer than MAX_HEADER_LEN; this codec can only decode",
            ));
        }
        // Frame bytes after the length field: the frame is `skip + payload_len`.
        let after_field = (skip as i128) + (payload_len as i128) - (self.header_end() as i128);
        if after_field < 0 {
            return Err(CodecError::InvalidHeader(
                "payload too short to carry the header bytes kept by num_skip",
            ));
        }
        let value = after_field - self.adjustment as i128;
        if value < 0 {
            return Err(CodecError::InvalidHeader(
                "length adjustment makes the length field negative",
            ));
        }
        let field_max = i128::from(self.field_max());
        if value > field_max {
            // The largest payload whose length still fits the field.
            let fits =
                field_max + self.adjustment as i128 + self.header_end() as i128 - skip as i128;
            return Err(CodecError::FrameTooLarge {
                len: payload_len as u64,
                max: max.min(usize::try_from(fits).unwrap_or(0)),
            });
        }
        // Build the header in a scratch buffer long enough for the whole
        // length field (it may reach past num_skip), then copy the prefix.
        // A field ending past the scratch buffer starts at offset >= 24,
        // beyond the at most 16 bytes written, so it is simply not written.
        let mut full = [0u8; 2 * MAX_HEADER_LEN];
        if let Some(field) = full.get_mut(self.offset..self.header_end()) {
            // 0 <= value <= field_max <= u64::MAX
            self.write_field(value as u64, field);
        }
        dst[..skip].copy_from_slice(&full[..skip]);
        Ok(skip)
    }

    /// The largest payload delivered: `max_frame_length` plus the header
    /// bytes kept in the payload when `num_skip` is below the end of the
    /// length field.
    fn max_frame(&self) -> usize {
        self.max_frame
            .saturating_add(self.header_end().saturating_sub(self.skip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Framer;

    /// Feed `input` in one piece and collect the payloads.
    fn frames(codec: LengthDelimited, input: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
        let mut framer = Framer::new(codec);
        let mut out = Vec::new();
        framer.feed(input, |p| {
            out.push(p.to_vec());
            true
        })?;
        assert_eq!(framer.buffered(), 0, "input should hold whole frames");
        Ok(out)
    }

    fn encode(codec: &LengthDelimited, payload: &[u8]) -> Vec<u8> {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = codec.encode_header(payload.len(), &mut hdr).unwrap();
        let mut v = hdr[..n].to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn default_wire_format() {
        let c = LengthDelimited::new();
        assert_eq!(c.max_frame(), DEFAULT_MAX_FRAME);
        assert_eq!(encode(&c, b"hello world"), b"\x00\x00\x00\x0bhello world");
        assert_eq!(encode(&c, b""), b"\x00\x00\x00\x00");
        let mut wire = encode(&c, b"hello world");
        wire.extend_from_slice(&encode(&c, b""));
        wire.extend_from_slice(&encode(&c, b"x"));
        assert_eq!(
            frames(c, &wire).unwrap(),
            vec![b"hello world".to_vec(), vec![], b"x".to_vec()]
        );
    }

    #[test]
    fn decode_needs_header_first() {
        let mut c = LengthDelimited::new();
        for n in 0..4 {
            assert_eq!(
                c.decode(&[0; 3][..n]).unwrap(),
                Decode::NeedMore { at_least: Some(4) }
            );
        }
        assert_eq!(
            c.decode(&[0, 0, 1, 0]).unwrap(),
            Decode::Frame {
                skip: 4,
                payload: 256,
                trailer: 0
            }
        );
    }

    // tokio-util documentation, example 1: u16 field, header kept.
    #[test]
    fn tokio_example_1_header_kept() {
        let c = LengthDelimited::new().length_field_length(2).num_skip(0);
        let wire = b"\x00\x0BHello world";
        assert_eq!(frames(c.clone(), wire).unwrap(), vec![wire.to_vec()]);
        // Forwarding the delivered frame re-encodes to the same bytes.
        assert_eq!(encode(&c, wire), wire);
        assert_eq!(c.max_frame(), DEFAULT_MAX_FRAME + 2);
    }

    // Example 2: u16 field, header stripped.
    #[test]
    fn tokio_example_2_header_stripped() {
        let c = LengthDelimited::new().length_field_length(2);
        assert_eq!(
            frames(c.clone(), b"\x00\x0BHello world").unwrap(),
            vec![b"Hello world".to_vec()]
        );
        assert_eq!(encode(&c, b"Hello world"), b"\x00\x0BHello world");
    }

    // Example 3: the length counts the header (adjustment -2), header kept.
    #[test]
    fn tokio_example_3_length_includes_header() {
        let c = LengthDelimited::new()
            .length_field_length(2)
            .length_adjustment(-2)
            .num_skip(0);
        let wire = b"\x00\x0DHello world";
        assert_eq!(frames(c.clone(), wire).unwrap(), vec![wire.to_vec()]);
        assert_eq!(encode(&c, wire), wire);
        // Same, header stripped: encode writes 13 for an 11-byte payload.
        let c = LengthDelimited::new()
            .length_field_length(2)
            .length_adjustment(-2);
        assert_eq!(
            frames(c.clone(), wire).unwrap(),
            vec![b"Hello world".to_vec()]
        );
        assert_eq!(encode(&c, b"Hello world"), wire);
    }

    // Example 4: 3-byte field, 2 more header bytes counted by adjustment.
    #[test]
    fn tokio_example_4_extra_header_after_field() {
        let c = LengthDelimited::new()
            .length_field_length(3)
            .length_adjustment(2)
            .num_skip(0);
        let wire = b"\x00\x00\x0B\xCA\xFEHello world";
        assert_eq!(frames(c, wire).unwrap(), vec![wire.to_vec()]);
    }

    // Example 5: offset 1, u16 field, hdr2 counted by adjustment, skip 3.
    #[test]
    fn tokio_example_5_offset_and_partial_strip() {
        let c = LengthDelimited::new()
            .length_field_offset(1)
            .length_field_length(2)
            .length_adjustment(1)
            .num_skip(3);
        let wire = b"\xCA\x00\x0B\xFEHello world";
        assert_eq!(
            frames(c.clone(), wire).unwrap(),
            vec![b"\xFEHello world".to_vec()]
        );
        // Encoding the delivered payload: hdr1 is written as 0.
        assert_eq!(
            encode(&c, b"\xFEHello world"),
            b"\x00\x00\x0B\xFEHello world"
        );
    }

    // Example 6: like 5, the length counts the whole frame.
    #[test]
    fn tokio_example_6_length_counts_whole_frame() {
        let c = LengthDelimited::new()
            .length_field_offset(1)
            .length_field_length(2)
            .length_adjustment(-3)
            .num_skip(3);
        let wire = b"\xCA\x00\x0F\xFEHello world";
        assert_eq!(
            frames(c.clone(), wire).unwrap(),
            vec![b"\xFEHello world".to_vec()]
        );
        assert_eq!(
            encode(&c, b"\xFEHello world"),
            b"\x00\x00\x0F\xFEHello world"
        );
    }

    // Example 7's layout: 3-byte field, one unused byte, skip 4. Under the
    // documented rule the unused byte follows the field, so it is counted
    // with adjustment 1 (see the module docs).
    #[test]
    fn tokio_example_7_layout_unused_byte() {
        let c = LengthDelimited::new()
            .length_field_length(3)
            .length_adjustment(1)
            .num_skip(4);
        let wire = b"\x00\x00\x0B\xFFHello world";
        assert_eq!(
            frames(c.clone(), wire).unwrap(),
            vec![b"Hello world".to_vec()]
        );
        assert_eq!(encode(&c, b"Hello world"), b"\x00\x00\x0B\x00Hello world");
        // Without the adjustment, the frame is one byte shorter.
        let c = c.length_adjustment(0);
        assert_eq!(
            frames(c, b"\x00\x00\x0B\xFFHello worl").unwrap(),
            vec![b"Hello worl".to_vec()]
        );
    }

    // tokio's encoding example: u16 length.
    #[test]
    fn tokio_encode_example_u16() {
        let c = LengthDelimited::new().length_field_length(2);
        assert_eq!(encode(&c, b"hello world"), b"\x00\x0bhello world");
    }

    #[test]
    fn little_and_native_endian() {
        let c = LengthDelimited::new().little_endian();
        assert_eq!(encode(&c, &[7; 258]), {
            let mut v = vec![2, 1, 0, 0];
            v.extend_from_slice(&[7; 258]);
            v
        });
        let wire = b"\x05\x00\x00\x00hello";
        assert_eq!(frames(c, wire).unwrap(), vec![b"hello".to_vec()]);

        let n = LengthDelimited::new().native_endian();
        let mut wire = 5u32.to_ne_bytes().to_vec();
        wire.extend_from_slice(b"hello");
        assert_eq!(encode(&n, b"hello"), wire);
        assert_eq!(frames(n, &wire).unwrap(), vec![b"hello".to_vec()]);
        assert_eq!(
            LengthDelimited::new().native_endian().big_endian(),
            LengthDelimited::new()
        );
    }

    #[test]
    fn all_field_lengths_round_trip() {
        for len in 1..=8 {
            for endianness in [Endianness::Big, Endianness::Little] {
                let c = LengthDelimited::new()
                    .length_field_length(len)
                    .endianness(endianness)
                    .max_frame_length(300);
                let payload: Vec<u8> = (0..200u8).collect();
                let wire = encode(&c, &payload);
                assert_eq!(wire.len(), len + 200);
                assert_eq!(frames(c, &wire).unwrap(), vec![payload]);
            }
        }
    }

    #[test]
    fn oversize_header_fails_before_payload() {
        let mut c = LengthDelimited::new().max_frame_length(10);
        assert_eq!(
            c.decode(&[0, 0, 0, 11]),
            Err(CodecError::FrameTooLarge { len: 11, max: 10 })
        );
        assert!(c.decode(&[0, 0, 0, 10]).is_ok());
        // The full 4 GiB announced by the default codec is refused outright.
        let mut c = LengthDelimited::new();
        assert_eq!(
            c.decode(&[0xff; 4]),
            Err(CodecError::FrameTooLarge {
                len: u64::from(u32::MAX),
                max: DEFAULT_MAX_FRAME
            })
        );
        // 8-byte field with the largest value, positive adjustment: no overflow.
        let mut c = LengthDelimited::new()
            .length_field_length(8)
            .length_adjustment(isize::MAX);
        assert!(matches!(
            c.decode(&[0xff; 8]),
            Err(CodecError::FrameTooLarge { len: u64::MAX, .. })
        ));
    }

    #[test]
    fn max_applies_after_adjustment() {
        // Length counts the 2-byte header: value 12 means 10 payload bytes.
        let mut c = LengthDelimited::new()
            .length_field_length(2)
            .length_adjustment(-2)
            .max_frame_length(10);
        assert_eq!(
            c.decode(&[0, 12]).unwrap(),
            Decode::Frame {
                skip: 2,
                payload: 10,
                trailer: 0
            }
        );
        assert_eq!(
            c.decode(&[0, 13]),
            Err(CodecError::FrameTooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn negative_adjusted_length_is_invalid() {
        let mut c = LengthDelimited::new()
            .length_field_length(2)
            .length_adjustment(-2);
        assert!(matches!(
            c.decode(&[0, 1]),
            Err(CodecError::InvalidHeader(_))
        ));
        assert!(c.decode(&[0, 2]).is_ok());
    }

    #[test]
    fn frame_shorter_than_num_skip_is_invalid() {
        let mut c = LengthDelimited::new().length_field_length(2).num_skip(5);
        assert!(matches!(
            c.decode(&[0, 2]),
            Err(CodecError::InvalidHeader(_))
        ));
        assert_eq!(
            c.decode(&[0, 3]).unwrap(),
            Decode::Frame {
                skip: 5,
                payload: 0,
                trailer: 0
            }
        );
    }

    #[test]
    fn encode_errors() {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let c = LengthDelimited::new().max_frame_length(100);
        assert_eq!(
            c.encode_header(101, &mut hdr),
            Err(CodecError::FrameTooLarge { len: 101, max: 100 })
        );
        assert_eq!(c.encode_header(100, &mut hdr), Ok(4));
        // Does not fit a 1-byte field.
        let c = LengthDelimited::new().length_field_length(1);
        assert_eq!(c.encode_header(255, &mut hdr), Ok(1));
        assert!(matches!(
            c.encode_header(256, &mut hdr),
            Err(CodecError::FrameTooLarge { len: 256, max: 255 })
        ));
        // Header kept but payload too short to carry it.
        let c = LengthDelimited::new().length_field_length(2).num_skip(0);
        assert!(matches!(
            c.encode_header(1, &mut hdr),
            Err(CodecError::InvalidHeader(_))
        ));
        // Positive adjustment larger than the payload.
        let c = LengthDelimited::new().length_adjustment(3);
        assert!(matches!(
            c.encode_header(2, &mut hdr),
            Err(CodecError::InvalidHeader(_))
        ));
        assert_eq!(c.encode_header(3, &mut hdr), Ok(4));
        assert_eq!(&hdr[..4], &[0, 0, 0, 0]);
        // Decode-only configurations.
        let c = LengthDelimited::new().num_skip(MAX_HEADER_LEN + 1);
        assert!(matches!(
            c.encode_header(0, &mut hdr),
            Err(CodecError::InvalidHeader(_))
        ));
    }

    #[test]
    fn encode_partial_length_field_prefix() {
        // num_skip cuts the length field in two: the encoder writes the
        // first byte, the payload carries the second (as decode delivers it).
        let c = LengthDelimited::new().length_field_length(2).num_skip(1);
        let wire = b"\x00\x03abc";
        let got = frames(c.clone(), wire).unwrap();
        assert_eq!(got, vec![b"\x03abc".to_vec()]);
        assert_eq!(encode(&c, &got[0]), wire);
    }

    #[test]
    #[should_panic(expected = "length field length")]
    fn field_length_zero_panics() {
        let _ = LengthDelimited::new().length_field_length(0);
    }

    #[test]
    #[should_panic(expected = "length field length")]
    fn field_length_nine_panics() {
        let _ = LengthDelimited::new().length_field_length(9);
    }
}
