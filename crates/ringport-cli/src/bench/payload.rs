//! The bench's message format, sans-I/O: every payload names its connection
//! and sequence number and carries a filler derived from both, so a reply
//! can be checked byte for byte without keeping what was sent.
//!
//! Layout (little endian): connection index (u32), sequence (u64), send time
//! in ns since the bench started (u64), then filler up to the payload size.
//! For the newline codec the filler is printable and never `\n`.

pub const HEADER_LEN: usize = 20;

/// What a received payload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub conn: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    Length { got: usize, want: usize },
    Filler { at: usize },
}

#[inline]
fn filler_byte(conn: u32, seq: u64, i: usize, text: bool) -> u8 {
    let x = (seq as u8).wrapping_mul(31) ^ (conn as u8).wrapping_mul(7) ^ (i as u8);
    if text { b'a' + x % 26 } else { x }
}

/// The filler repeats every 256 bytes (it depends on the index modulo
/// 256): one block per message, then whole-slice copies and compares, so
/// large messages cost memcpy/memcmp speed rather than a call per byte.
fn filler_block(conn: u32, seq: u64, text: bool) -> [u8; 256] {
    std::array::from_fn(|i| filler_byte(conn, seq, i, text))
}

/// The filler bytes for payload offsets `start..end`, as slices of `block`.
fn filler_runs(
    block: &[u8; 256],
    start: usize,
    end: usize,
) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = start;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let offset = at % 256;
        let len = (256 - offset).min(end - at);
        let run = (at, &block[offset..offset + len]);
        at += len;
        Some(run)
    })
}

/// Writes a payload of `size` bytes into `out` (cleared first).
pub fn encode(out: &mut Vec<u8>, size: usize, stamp: Stamp, text: bool) {
    out.clear();
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&stamp.conn.to_le_bytes());
    header[4..12].copy_from_slice(&stamp.seq.to_le_bytes());
    header[12..20].copy_from_slice(&stamp.sent_ns.to_le_bytes());
    if text {
        // Hex keeps the header printable and free of newlines.
        for b in header {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
    } else {
        out.extend_from_slice(&header);
    }
    let block = filler_block(stamp.conn, stamp.seq, text);
    for (_, run) in filler_runs(&block, out.len(), size) {
        out.extend_from_slice(run);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Smallest payload that can carry a stamp.
pub fn min_size(text: bool) -> usize {
    if text { HEADER_LEN * 2 } else { HEADER_LEN }
}

/// Reads the stamp of a payload and checks its length and filler.
pub fn verify(payload: &[u8], size: usize, text: bool) -> Result<Stamp, Corrupt> {
    if payload.len() != size || size < min_size(text) {
        return Err(Corrupt::Length {
            got: payload.len(),
            want: size,
        });
    }
    let mut header = [0u8; HEADER_LEN];
    let body_start = if text {
        for (i, h) in header.iter_mut().enumerate() {
            let hi = unhex(payload[2 * i]).ok_or(Corrupt::Filler { at: 2 * i })?;
            let lo = unhex(payload[2 * i + 1]).ok_or(Corrupt::Filler { at: 2 * i + 1 })?;
            *h = hi << 4 | lo;
        }
        HEADER_LEN * 2
    } else {
        header.copy_from_slice(&payload[..HEADER_LEN]);
        HEADER_LEN
    };
    let stamp = Stamp {
        conn: u32::from_le_bytes(header[0..4].try_into().unwrap()),
        seq: u64::from_le_bytes(header[4..12].try_into().unwrap()),
        sent_ns: u64::from_le_bytes(header[12..20].try_into().unwrap()),
    };
    let block = filler_block(stamp.conn, stamp.seq, text);
    for (at, run) in filler_runs(&block, body_start, size) {
        let got = &payload[at..at + run.len()];
        if got != run {
            let first = got.iter().zip(run).position(|(a, b)| a != b).unwrap_or(0);
            return Err(Corrupt::Filler { at: at + first });
        }
    }
    Ok(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_and_text() {
        for text in [false, true] {
            let mut buf = Vec::new();
            let stamp = Stamp {
                conn: 65_001,
                seq: 1 << 40,
                sent_ns: 123_456_789,
            };
            encode(&mut buf, 512, stamp, text);
            assert_eq!(buf.len(), 512);
            assert_eq!(verify(&buf, 512, text), Ok(stamp));
            if text {
                assert!(!buf.contains(&b'\n'));
            }
        }
    }

    #[test]
    fn detects_corruption_anywhere() {
        let mut buf = Vec::new();
        let stamp = Stamp {
            conn: 3,
            seq: 9,
            sent_ns: 1,
        };
        encode(&mut buf, 300, stamp, false);
        for at in [25, 100, 299] {
            let mut bad = buf.clone();
            bad[at] ^= 1;
            assert_eq!(verify(&bad, 300, false), Err(Corrupt::Filler { at }));
        }
        // A flipped stamp makes the filler disagree (seq/conn feed it).
        let mut bad = buf.clone();
        bad[4] ^= 1;
        assert!(verify(&bad, 300, false).is_err());
        assert_eq!(
            verify(&buf[..299], 300, false),
            Err(Corrupt::Length {
                got: 299,
                want: 300
            })
        );
    }
}
