//! Length-prefixed framing with two explicit rule sets: tokio-util's
//! `LengthDelimitedCodec` and Netty's `LengthFieldBasedFrameDecoder`. Both
//! are documented on [`LengthDelimited`].

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

/// Which reference implementation's rules a [`LengthDelimited`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// tokio-util 0.7 `LengthDelimitedCodec`.
    Tokio,
    /// Netty 4 `LengthFieldBasedFrameDecoder` (and, for encoding, the
    /// exact inverse of its decoding).
    Netty { fail_fast: bool },
}

/// A length field, then the frame. Two rule sets, each matching its
/// reference implementation frame for frame (a differential test compares
/// them on random settings and streams, `tests/codec_diff.rs`):
///
/// - **tokio-util rules** ([`LengthDelimited::new`] and the builder
///   methods, named as in tokio-util's `length_delimited::Builder`);
/// - **Netty rules** ([`LengthDelimited::netty`], taking the parameters of
///   Netty's `LengthFieldBasedFrameDecoder` constructor).
///
/// The default, `LengthDelimited::new()`, is ringport's wire format: a 4-byte
/// big-endian payload length, then the payload, at most
/// [`DEFAULT_MAX_FRAME`] bytes (tokio-util's default maximum is 8 MiB;
/// ringport's is 16 MiB).
///
/// # tokio-util rules
///
/// With `end = length_field_offset + length_field_length` and
/// `num_skip` defaulting to `end`:
///
/// 1. wait for `max(end, num_skip)` bytes (the head);
/// 2. read the length field `value` at `length_field_offset`;
/// 3. if `value > max`, fail with [`CodecError::FrameTooLarge`], where `max`
///    is `max_frame_length` capped at what the field can hold plus the
///    adjustment (`2^(8 * length_field_length) - 1 + length_adjustment`,
///    saturating), as tokio-util caps it;
/// 4. `n = value + length_adjustment`; negative fails with
///    [`CodecError::InvalidHeader`];
/// 5. drop `num_skip` bytes, then deliver the next `n` bytes. The frame
///    consumes `num_skip + n` bytes in all.
///
/// So the maximum bounds the raw length field, not the delivered payload,
/// and the payload always starts at `num_skip`: with `num_skip` below `end`
/// it begins with the end of the header, and with `num_skip` above `end` the
/// bytes between the field and `num_skip` are dropped without being
/// counted by the length. A frame may consume fewer bytes than its head
/// (e.g. `length_field_length(1).num_skip(0)` on `01 01` gives `[01]`
/// then `[01]`); the next frame's head is then read from the same bytes.
/// A frame that would consume no byte at all (`num_skip == 0` and `n == 0`),
/// which would make tokio-util yield empty frames forever, fails with
/// [`CodecError::InvalidHeader`].
///
/// Encoding, as tokio-util: the payload must be at most `max` (step 3),
/// the field holds `payload length - length_adjustment` (negative fails),
/// and only the field is written before the payload: `length_field_offset`
/// and `num_skip` are decode-only settings.
///
/// ```
/// use ringport::codec::{Framer, LengthDelimited};
/// // tokio-util's example 2: a u16 length, header kept in the frame.
/// let codec = LengthDelimited::new()
///     .length_field_length(2)
///     .length_adjustment(2)
///     .num_skip(0);
/// let mut framer = Framer::new(codec);
/// let mut frames = Vec::new();
/// framer
///     .feed(b"\x00\x0BHello world", |payload| {
///         frames.push(payload.to_vec());
///         true
///     })
///     .unwrap();
/// assert_eq!(frames, [b"\x00\x0BHello world".to_vec()]);
/// ```
///
/// # Netty rules
///
/// With `end = length_field_offset + length_field_length`:
///
/// 1. wait for `end` bytes;
/// 2. read the length field `value` (unsigned, except an 8-byte field,
///    which Netty reads as a signed `long`: negative fails with
///    [`CodecError::InvalidHeader`]);
/// 3. `frame = value + length_adjustment + end` (the whole frame, header
///    included); below `end` fails with [`CodecError::InvalidHeader`];
/// 4. if `frame > max_frame_length`, fail with [`CodecError::FrameTooLarge`]
///    (the maximum bounds the whole frame, header included);
/// 5. wait for `frame` bytes; if `initial_bytes_to_strip > frame`, fail
///    with [`CodecError::InvalidHeader`];
/// 6. drop `initial_bytes_to_strip` bytes and deliver the rest of the frame.
///
/// Where Netty goes on after an error (it discards the offending frame and
/// decodes the next one), ringport closes the connection: the frames
/// delivered before are the same. `fail_fast = false` makes Netty raise
/// `TooLongFrameException` only after discarding the whole oversize frame;
/// ringport never reads an oversize frame and fails as soon as its header
/// is complete, whatever `fail_fast` says.
///
/// Encoding writes the first `initial_bytes_to_strip` bytes of the frame
/// (zeros, with the length field where it falls in them) so that decoding
/// gives the payload back; when the header is stripped at the end of a
/// field at offset 0 (`initial_bytes_to_strip == length_field_length`),
/// this is what Netty's `LengthFieldPrepender(length_field_length,
/// -length_adjustment)` writes. When `initial_bytes_to_strip` is below
/// `end`, the payload must carry the rest of the header, as decoding
/// delivers it, so a decoded frame can be forwarded unchanged.
///
/// ```
/// use ringport::codec::{Framer, LengthDelimited};
/// // Netty's example "2 bytes length field at offset 1 in the middle of
/// // 4 bytes header, strip the first header field and the length field".
/// let codec = LengthDelimited::netty(1024, 1, 2, 1, 3, true);
/// let mut framer = Framer::new(codec);
/// let mut frames = Vec::new();
/// framer
///     .feed(b"\xCA\x00\x0C\xFEHELLO, WORLD", |payload| {
///         frames.push(payload.to_vec());
///         true
///     })
///     .unwrap();
/// assert_eq!(frames, [b"\xFEHELLO, WORLD".to_vec()]);
/// ```
///
/// # Either rule set
///
/// The maximum is checked as soon as the length field has arrived, before
/// any payload byte is waited for and before anything is allocated for it,
/// so a peer cannot make a connection reserve memory by announcing a large
/// frame. The builder methods (`length_field_offset`, `length_adjustment`,
/// `num_skip` (Netty's `initial_bytes_to_strip`), `max_frame_length`, the
/// byte order) change the setting of the same name and keep the rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthDelimited {
    rules: Rules,
    offset: usize,
    field_len: usize,
    adjustment: isize,
    /// `None` means "the end of the length field", tracking later changes
    /// of `offset` or `field_len` the way tokio's builder does. Always set
    /// under Netty rules (`initial_bytes_to_strip`).
    num_skip: Option<usize>,
    endianness: Endianness,
    max_frame: usize,
    /// The layout is the default one (see [`Self::layout_is_plain`]), kept
    /// up to date by the builder methods: decode and encode then take a
    /// short path.
    plain: bool,
}

impl Default for LengthDelimited {
    fn default() -> Self {
        LengthDelimited {
            rules: Rules::Tokio,
            offset: 0,
            field_len: 4,
            adjustment: 0,
            num_skip: None,
            endianness: Endianness::Big,
            max_frame: DEFAULT_MAX_FRAME,
            plain: true,
        }
    }
}

/// Panic unless `v` fits a Java `int` (Netty's parameters are ints).
fn java_int(v: i128, name: &str) -> i32 {
    i32::try_from(v).unwrap_or_else(|_| panic!("{name} must fit a Java int, got {v}"))
}

impl LengthDelimited {
    /// ringport's default wire format under tokio-util rules:
    /// `[u32 BE payload length][payload]`, maximum payload
    /// [`DEFAULT_MAX_FRAME`] (16 MiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// Netty's `LengthFieldBasedFrameDecoder(maxFrameLength,
    /// lengthFieldOffset, lengthFieldLength, lengthAdjustment,
    /// initialBytesToStrip, failFast)`, with Netty's rules (see the type's
    /// documentation). The byte order is big-endian, as Netty's default; use
    /// [`little_endian`](Self::little_endian) for Netty's
    /// `ByteOrder.LITTLE_ENDIAN` constructor. Netty's 5-argument constructor
    /// is `fail_fast = true`.
    ///
    /// # Panics
    /// Where Netty's constructor throws (a configuration error, found at
    /// start-up): `max_frame_length` not positive,
    /// `length_field_offset + length_field_length > max_frame_length`, a
    /// parameter that does not fit a Java `int`; and, where Netty throws on
    /// the first frame instead, `length_field_length` not 1, 2, 3, 4 or 8.
    pub fn netty(
        max_frame_length: usize,
        length_field_offset: usize,
        length_field_length: usize,
        length_adjustment: isize,
        initial_bytes_to_strip: usize,
        fail_fast: bool,
    ) -> Self {
        let max = java_int(max_frame_length as i128, "maxFrameLength");
        let offset = java_int(length_field_offset as i128, "lengthFieldOffset");
        java_int(length_adjustment as i128, "lengthAdjustment");
        java_int(initial_bytes_to_strip as i128, "initialBytesToStrip");
        assert!(max > 0, "maxFrameLength must be positive, got {max}");
        assert!(
            matches!(length_field_length, 1 | 2 | 3 | 4 | 8),
            "unsupported lengthFieldLength: {length_field_length} (expected: 1, 2, 3, 4, or 8)"
        );
        assert!(
            i64::from(offset) <= i64::from(max) - length_field_length as i64,
            "maxFrameLength ({max}) must be equal to or greater than lengthFieldOffset \
             ({offset}) + lengthFieldLength ({length_field_length})"
        );
        LengthDelimited {
            rules: Rules::Netty { fail_fast },
            offset: length_field_offset,
            field_len: length_field_length,
            adjustment: length_adjustment,
            num_skip: Some(initial_bytes_to_strip),
            endianness: Endianness::Big,
            max_frame: max_frame_length,
            plain: false,
        }
    }

    /// Whether this codec follows Netty's rules ([`LengthDelimited::netty`])
    /// rather than tokio-util's.
    pub fn is_netty(&self) -> bool {
        matches!(self.rules, Rules::Netty { .. })
    }

    /// Netty's `failFast` as given to [`LengthDelimited::netty`] (`None`
    /// under tokio-util rules). ringport fails fast either way.
    pub fn netty_fail_fast(&self) -> Option<bool> {
        match self.rules {
            Rules::Tokio => None,
            Rules::Netty { fail_fast } => Some(fail_fast),
        }
    }

    /// Bytes before the length field (ignored by the decoder; not written by
    /// the tokio-util encoder). Default 0.
    pub fn length_field_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self.plain = self.layout_is_plain();
        self
    }

    /// Size of the length field in bytes. Default 4.
    ///
    /// # Panics
    /// If `len` is not in `1..=8` (a configuration error, found at start-up),
    /// as tokio-util's builder.
    pub fn length_field_length(mut self, len: usize) -> Self {
        assert!(
            (1..=8).contains(&len),
            "length field length must be 1..=8, got {len}"
        );
        self.field_len = len;
        self.plain = self.layout_is_plain();
        self
    }

    /// Added to the length field's value to get the number of bytes
    /// delivered after `num_skip` (tokio-util rules) or following the length
    /// field (Netty rules). Default 0.
    pub fn length_adjustment(mut self, adjustment: isize) -> Self {
        self.adjustment = adjustment;
        self.plain = self.layout_is_plain();
        self
    }

    /// Bytes dropped from the start of every frame before the payload
    /// (Netty's `initial_bytes_to_strip`). Default (tokio-util rules): the
    /// end of the length field.
    pub fn num_skip(mut self, num_skip: usize) -> Self {
        self.num_skip = Some(num_skip);
        self.plain = self.layout_is_plain();
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
        self.plain = self.layout_is_plain();
        self
    }

    /// The maximum: of the raw length field value, and of an encoded
    /// payload, under tokio-util rules (capped at what the field can hold
    /// plus the adjustment); of the whole frame, header included, under
    /// Netty rules. Default [`DEFAULT_MAX_FRAME`].
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// End of the length field, counted from the start of the frame.
    fn header_end(&self) -> usize {
        self.offset.saturating_add(self.field_len)
    }

    /// The default layout: tokio-util rules, a 4-byte big-endian length at
    /// offset 0, no adjustment, the header stripped. Most traffic uses it,
    /// so decode and encode take a short path for it (measured with
    /// callgrind: a decode ~27 instructions instead of ~100, an encode ~25
    /// instead of ~60); its results are the general path's (the codec's
    /// unit, property and differential tests run both).
    #[inline]
    fn is_plain(&self) -> bool {
        debug_assert_eq!(self.plain, self.layout_is_plain());
        self.plain
    }

    fn layout_is_plain(&self) -> bool {
        matches!(self.rules, Rules::Tokio)
            && self.offset == 0
            && self.field_len == 4
            && self.adjustment == 0
            && self.num_skip.is_none()
            && self.endianness == Endianness::Big
    }

    /// [`Self::tokio_max`] of the default layout.
    #[inline]
    fn plain_max(&self) -> usize {
        self.max_frame.min(u32::MAX as usize)
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

    /// tokio-util's effective maximum: `max_frame_length` capped at the
    /// field's largest value plus the adjustment (saturating), as its
    /// `Builder::new_codec` does.
    fn tokio_max(&self) -> usize {
        let allowed = if self.adjustment >= 0 {
            self.field_max().saturating_add(self.adjustment as u64)
        } else {
            self.field_max()
                .saturating_sub(self.adjustment.unsigned_abs() as u64)
        };
        self.max_frame
            .min(usize::try_from(allowed).unwrap_or(usize::MAX))
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

    fn decode_tokio(&self, buf: &[u8]) -> Result<Decode, CodecError> {
        let end = self.header_end();
        let head = end.max(self.num_skip.unwrap_or(0));
        if buf.len() < head {
            return Ok(Decode::NeedMore {
                at_least: Some(head),
            });
        }
        let value = self.read_field(&buf[self.offset..end]);
        let max = self.tokio_max();
        if value > max as u64 {
            return Err(CodecError::FrameTooLarge { len: value, max });
        }
        // value <= max <= usize::MAX; i128 holds it plus any adjustment.
        let n = i128::from(value) + self.adjustment as i128;
        let n = usize::try_from(n).map_err(|_| {
            CodecError::InvalidHeader("length field plus adjustment is negative or overflows")
        })?;
        let skip = self.skip();
        if skip == 0 && n == 0 {
            return Err(CodecError::InvalidHeader(
                "frame of zero bytes (num_skip 0, length 0): tokio-util would yield it forever",
            ));
        }
        Ok(Decode::Frame {
            skip,
            payload: n,
            trailer: 0,
        })
    }

    fn decode_netty(&self, buf: &[u8]) -> Result<Decode, CodecError> {
        let end = self.header_end();
        let Some(field) = buf.get(self.offset..end) else {
            return Ok(Decode::NeedMore {
                at_least: Some(end),
            });
        };
        let raw = self.read_field(field);
        // Netty reads 1 to 4 bytes unsigned, 8 bytes as a signed long.
        // Fields of up to 7 bytes are below 2^56: positive.
        let value = raw as i64;
        if value < 0 {
            return Err(CodecError::InvalidHeader("negative length field"));
        }
        // Java: `frameLength += lengthAdjustment + lengthFieldEndOffset`, an
        // int sum added to a long, both wrapping.
        let add = (self.adjustment as i32).wrapping_add(end as i32);
        let frame = value.wrapping_add(i64::from(add));
        if frame < end as i64 {
            return Err(CodecError::InvalidHeader(
                "adjusted frame length is less than the end of the length field",
            ));
        }
        if frame > self.max_frame as i64 {
            return Err(CodecError::FrameTooLarge {
                len: frame as u64,
                max: self.max_frame,
            });
        }
        // end <= frame <= max_frame: fits in usize.
        let frame = frame as usize;
        let strip = self.skip();
        if strip > frame {
            // Netty reports this once the whole frame has arrived.
            if buf.len() < frame {
                return Ok(Decode::NeedMore {
                    at_least: Some(frame),
                });
            }
            return Err(CodecError::InvalidHeader(
                "frame is shorter than initial_bytes_to_strip",
            ));
        }
        Ok(Decode::Frame {
            skip: strip,
            payload: frame - strip,
            trailer: 0,
        })
    }

    fn encode_tokio(
        &self,
        payload_len: usize,
        dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        let max = self.tokio_max();
        if payload_len > max {
            return Err(CodecError::FrameTooLarge {
                len: payload_len as u64,
                max,
            });
        }
        let value = payload_len as i128 - self.adjustment as i128;
        let value = u64::try_from(value).map_err(|_| {
            CodecError::InvalidHeader("payload length minus length adjustment is negative")
        })?;
        // payload_len <= field max + adjustment, so value <= field max,
        // unless that sum was negative (saturated to 0): then tokio-util
        // writes the value's low bytes, a wrong length; ringport refuses.
        if value > self.field_max() {
            return Err(CodecError::InvalidHeader(
                "payload length minus length adjustment does not fit the length field",
            ));
        }
        self.write_field(value, &mut dst[..self.field_len]);
        Ok(self.field_len)
    }

    fn encode_netty(
        &self,
        payload_len: usize,
        dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        let skip = self.skip();
        let max = self.max_frame.saturating_sub(skip);
        if payload_len > max || skip > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                len: payload_len as u64,
                max,
            });
        }
        if skip > MAX_HEADER_LEN {
            return Err(CodecError::InvalidHeader(
                "initial_bytes_to_strip is longer than MAX_HEADER_LEN; this codec can only decode",
            ));
        }
        // The frame is `skip + payload_len` bytes; the field counts the
        // bytes after it, minus the adjustment.
        let after_field = (skip as i128) + (payload_len as i128) - (self.header_end() as i128);
        if after_field < 0 {
            return Err(CodecError::InvalidHeader(
                "payload too short to carry the header bytes kept by initial_bytes_to_strip",
            ));
        }
        let value = after_field - self.adjustment as i128;
        if value < 0 {
            return Err(CodecError::InvalidHeader(
                "length adjustment makes the length field negative",
            ));
        }
        let field_max = if self.field_len == 8 {
            i128::from(i64::MAX)
        } else {
            i128::from(self.field_max())
        };
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
        // length field (it may reach past the stripped bytes), then copy the
        // prefix. A field ending past the scratch buffer starts at offset >=
        // 24, beyond the at most 16 bytes written, so it is not written.
        let mut full = [0u8; 2 * MAX_HEADER_LEN];
        if let Some(field) = full.get_mut(self.offset..self.header_end()) {
            // 0 <= value <= field_max <= u64::MAX
            self.write_field(value as u64, field);
        }
        dst[..skip].copy_from_slice(&full[..skip]);
        Ok(skip)
    }
}

// `#[inline]` on the three methods below: the engine that calls them is
// generic, so it is compiled in the crate that names its codec, where a
// method of this crate stays a call unless marked. Their short paths are a
// few instructions each (with the other per-message calls inlined, the
// engine-only echo went from 698 to 558 instructions per message).
impl Codec for LengthDelimited {
    #[inline]
    fn decode(&mut self, buf: &[u8]) -> Result<Decode, CodecError> {
        if self.is_plain() {
            let Some(field) = buf.first_chunk::<4>() else {
                return Ok(Decode::NeedMore { at_least: Some(4) });
            };
            let value = u32::from_be_bytes(*field);
            let max = self.plain_max();
            if value as usize > max {
                return Err(CodecError::FrameTooLarge {
                    len: u64::from(value),
                    max,
                });
            }
            return Ok(Decode::Frame {
                skip: 4,
                payload: value as usize,
                trailer: 0,
            });
        }
        match self.rules {
            Rules::Tokio => self.decode_tokio(buf),
            Rules::Netty { .. } => self.decode_netty(buf),
        }
    }

    /// Writes the header that precedes a payload of `payload_len` bytes:
    /// under tokio-util rules the length field alone, under Netty rules the
    /// `initial_bytes_to_strip` first bytes of the frame (see the type's
    /// documentation).
    ///
    /// Errors: [`CodecError::FrameTooLarge`] if the payload is over the
    /// maximum or its length does not fit the field,
    /// [`CodecError::InvalidHeader`] if the length field would be negative,
    /// or (Netty rules) `initial_bytes_to_strip` exceeds [`MAX_HEADER_LEN`]
    /// or the payload is too short to carry the kept part of the header.
    #[inline]
    fn encode_header(
        &self,
        payload_len: usize,
        dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        if self.is_plain() {
            let max = self.plain_max();
            if payload_len > max {
                return Err(CodecError::FrameTooLarge {
                    len: payload_len as u64,
                    max,
                });
            }
            dst[..4].copy_from_slice(&(payload_len as u32).to_be_bytes());
            return Ok(4);
        }
        match self.rules {
            Rules::Tokio => self.encode_tokio(payload_len, dst),
            Rules::Netty { .. } => self.encode_netty(payload_len, dst),
        }
    }

    /// The largest payload delivered or encoded. tokio-util rules: the
    /// effective maximum (see [`max_frame_length`](Self::max_frame_length)),
    /// plus the adjustment when it is positive (a decoded payload is
    /// `value + length_adjustment`). Netty rules: `max_frame_length -
    /// initial_bytes_to_strip`.
    #[inline]
    fn max_frame(&self) -> usize {
        if self.is_plain() {
            return self.plain_max();
        }
        match self.rules {
            Rules::Tokio => self
                .tokio_max()
                .saturating_add(self.adjustment.max(0) as usize),
            Rules::Netty { .. } => self.max_frame.saturating_sub(self.skip()),
        }
    }
}

#[cfg(test)]
mod tests;
