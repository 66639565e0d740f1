//! RFC 6455 §5.2 frame headers: decoding, encoding and masking.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use super::CloseCode;

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: a continuation fragment.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for the 4-bit value, `None` for the reserved ones
    /// (0x3–0x7, 0xB–0xF).
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit value on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// RSV1 (per-message compressed, when permessage-deflate is negotiated).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub payload_len: u64,
    /// Bytes the header took on the wire (2 to 14).
    pub header_len: usize,
}

/// Why a header was refused: the close code to answer with and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderError {
    /// Close code (1002 protocol error, or 1009 too big).
    pub code: CloseCode,
    /// Human-readable reason (also sent as the close reason).
    pub reason: &'static str,
}

const fn err(code: CloseCode, reason: &'static str) -> HeaderError {
    HeaderError { code, reason }
}

/// Decodes a frame header at the start of `buf`. `Ok(None)` when more bytes
/// are needed. Checks what the header alone can tell: reserved opcodes,
/// RSV2/RSV3 (never negotiated here), RSV1 unless `rsv1_allowed`, control
/// frames fragmented or longer than 125 bytes, and the 64-bit length's top
/// bit. Masking rules and size limits are the caller's.
pub fn decode_header(buf: &[u8], rsv1_allowed: bool) -> Result<Option<FrameHeader>, HeaderError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 {
        return Err(err(CloseCode::PROTOCOL, "RSV2/RSV3 set"));
    }
    if rsv1 && !rsv1_allowed {
        return Err(err(CloseCode::PROTOCOL, "RSV1 set without an extension"));
    }
    let Some(opcode) = OpCode::from_u8(b0 & 0x0F) else {
        return Err(err(CloseCode::PROTOCOL, "reserved opcode"));
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(err(CloseCode::PROTOCOL, "fragmented control frame"));
        }
        if len7 > 125 {
            return Err(err(CloseCode::PROTOCOL, "control frame over 125 bytes"));
        }
        if rsv1 {
            return Err(err(CloseCode::PROTOCOL, "RSV1 on a control frame"));
        }
    }
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match ext {
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let v = u64::from_be_bytes(b);
            if v >> 63 != 0 {
                return Err(err(CloseCode::PROTOCOL, "payload length top bit set"));
            }
            v
        }
        _ => u64::from(len7),
    };
    let mask = masked.then(|| {
        let m = &buf[2 + ext..2 + ext + 4];
        [m[0], m[1], m[2], m[3]]
    });
    Ok(Some(FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Writes a frame header into `out` and returns its length (2 to 14).
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    n
}

/// Appends a whole frame (header, then `payload` masked with `mask` if any)
/// to `out`.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut hdr, fin, rsv1, opcode, payload.len() as u64, mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// XORs `buf` with the masking key, `offset` being the position of `buf[0]`
/// in the frame's payload (so a payload can be unmasked in pieces). Masking
/// and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let rot = (offset % 4) as u32;
    let key = u32::from_ne_bytes(mask);
    // The key rotated so that byte 0 of `buf` meets mask[offset % 4].
    let key = if cfg!(target_endian = "little") {
        key.rotate_right(rot * 8)
    } else {
        key.rotate_left(rot * 8)
    };
    let key64 = u64::from(key) | (u64::from(key) << 32);
    let kb = key.to_ne_bytes();
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ key64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= kb[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn mask_matches_naive_at_every_offset_and_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for offset in 0..8 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31)).collect();
                let mut a = data.clone();
                let mut b = data.clone();
                apply_mask(&mut a, mask, offset);
                naive_mask(&mut b, mask, offset);
                assert_eq!(a, b, "offset {offset} len {len}");
            }
        }
    }

    /// RFC 6455 §5.7 examples.
    #[test]
    fn rfc6455_section_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let h = decode_header(&unmasked, false).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask, h.header_len),
            (true, OpCode::Text, 5, None, 2)
        );
        let mut out = Vec::new();
        write_frame(&mut out, true, false, OpCode::Text, b"Hello", None);
        assert_eq!(out, unmasked);

        // A single-frame masked text message "Hello".
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = decode_header(&masked, false).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = masked[6..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        let mut out = Vec::new();
        write_frame(
            &mut out,
            true,
            false,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(out, masked);

        // A fragmented unmasked text message: "Hel", "lo".
        let h = decode_header(&[0x01, 0x03, 0x48, 0x65, 0x6c], false)
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let h = decode_header(&[0x80, 0x02, 0x6c, 0x6f], false)
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));

        // Unmasked ping with "Hello", and the masked pong answering it.
        let h = decode_header(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], false)
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Ping, 5));
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_header(&pong, false).unwrap().unwrap().opcode,
            OpCode::Pong
        );

        // 256 bytes binary in a single unmasked frame: 0x82 0x7E 0x0100.
        let h = decode_header(&[0x82, 0x7E, 0x01, 0x00], false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.opcode, h.payload_len, h.header_len),
            (OpCode::Binary, 256, 4)
        );
        let mut hdr = [0u8; MAX_HEADER_LEN];
        assert_eq!(
            encode_header(&mut hdr, true, false, OpCode::Binary, 256, None),
            4
        );
        assert_eq!(hdr[..4], [0x82, 0x7E, 0x01, 0x00]);

        // 64 KiB binary in a single unmasked frame: 0x82 0x7F 0x0000000000010000.
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        let h = decode_header(&bytes, false).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
        assert_eq!(
            encode_header(&mut hdr, true, false, OpCode::Binary, 65536, None),
            10
        );
        assert_eq!(hdr[..10], bytes);
    }

    #[test]
    fn header_rules() {
        // Partial headers.
        assert_eq!(decode_header(&[], false), Ok(None));
        assert_eq!(decode_header(&[0x81], false), Ok(None));
        assert_eq!(decode_header(&[0x81, 0xFE, 0x00], false), Ok(None));
        assert_eq!(decode_header(&[0x81, 0x85, 1, 2, 3], false), Ok(None));
        // Reserved opcodes.
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let e = decode_header(&[0x80 | op, 0x80], false).unwrap_err();
            assert_eq!(e.code, CloseCode::PROTOCOL);
        }
        // RSV bits.
        assert!(decode_header(&[0xC1, 0x80], false).is_err());
        assert!(
            decode_header(&[0xC1, 0x80, 0, 0, 0, 0], true)
                .unwrap()
                .unwrap()
                .rsv1
        );
        assert!(decode_header(&[0xA1, 0x80], true).is_err());
        assert!(decode_header(&[0x91, 0x80], true).is_err());
        assert!(decode_header(&[0xC9, 0x80], true).is_err(), "RSV1 on ping");
        // Control frames: fragmented, too long.
        assert!(decode_header(&[0x09, 0x80], false).is_err());
        assert!(decode_header(&[0x89, 0xFE, 0, 126], false).is_err());
        assert!(
            decode_header(&[0x88, 0xFD, 0, 0, 0, 0], false)
                .unwrap()
                .is_some()
        );
        // 64-bit length with the top bit set.
        let e = decode_header(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0], false).unwrap_err();
        assert_eq!(e.code, CloseCode::PROTOCOL);
    }

    #[test]
    fn encode_decode_lengths_round_trip() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut hdr = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut hdr, false, true, OpCode::Binary, len, mask);
                let h = decode_header(&hdr[..n], true).unwrap().unwrap();
                assert_eq!(
                    (h.payload_len, h.mask, h.header_len, h.fin, h.rsv1),
                    (len, mask, n, false, true)
                );
            }
        }
    }
}
