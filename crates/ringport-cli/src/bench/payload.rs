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
const PERIOD: usize = 256;

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

/// Writes a payload of `size` bytes into `out` (resized to `size`; its
/// old bytes are overwritten, so a reused buffer costs no clearing).
pub fn encode(out: &mut Vec<u8>, size: usize, stamp: Stamp, text: bool) {
    out.resize(size, 0);
    encode_into(out, stamp, text);
}

/// Writes a payload filling all of `out`, which must hold at least
/// [`min_size`] bytes. One write pass: the stamp, the filler's first
/// period, then copies of what is written in doubling chunks (the filler
/// repeats every [`PERIOD`] bytes, so any whole number of periods is a
/// copy of the bytes that many periods earlier).
pub fn encode_into(out: &mut [u8], stamp: Stamp, text: bool) {
    let body_start = write_stamp(out, stamp, text);
    let size = out.len();
    let block = filler_block(stamp.conn, stamp.seq, text);
    let first_end = (body_start + PERIOD).min(size);
    for (at, run) in filler_runs(&block, body_start, first_end) {
        out[at..at + run.len()].copy_from_slice(run);
    }
    let mut filled = first_end - body_start;
    while body_start + filled < size {
        let len = filled.min(size - body_start - filled);
        out.copy_within(body_start..body_start + len, body_start + filled);
        filled += len;
    }
}

/// Writes only the stamp at the start of `out` (for `--verify header`:
/// the rest is left as it is); returns where the filler starts.
pub fn write_stamp(out: &mut [u8], stamp: Stamp, text: bool) -> usize {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&stamp.conn.to_le_bytes());
    header[4..12].copy_from_slice(&stamp.seq.to_le_bytes());
    header[12..20].copy_from_slice(&stamp.sent_ns.to_le_bytes());
    if text {
        // Hex keeps the header printable and free of newlines.
        for (i, b) in header.into_iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        HEADER_LEN * 2
    } else {
        out[..HEADER_LEN].copy_from_slice(&header);
        HEADER_LEN
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
    let (stamp, body_start) = read_stamp(payload, size, text)?;
    // The first period against the filler, then the rest in one compare
    // with itself one period earlier: when the first period is right and
    // every byte equals the one PERIOD before it, all are right (and the
    // first difference found is the first wrong byte).
    let block = filler_block(stamp.conn, stamp.seq, text);
    let first_end = (body_start + PERIOD).min(size);
    for (at, run) in filler_runs(&block, body_start, first_end) {
        let got = &payload[at..at + run.len()];
        if got != run {
            let first = got.iter().zip(run).position(|(a, b)| a != b).unwrap_or(0);
            return Err(Corrupt::Filler { at: at + first });
        }
    }
    if first_end < size {
        let (earlier, later) = (&payload[body_start..size - PERIOD], &payload[first_end..]);
        if earlier != later {
            let first = later
                .iter()
                .zip(earlier)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(Corrupt::Filler {
                at: first_end + first,
            });
        }
    }
    Ok(stamp)
}

/// Reads the stamp of a payload and checks its length only (for
/// `--verify header`).
pub fn verify_stamp(payload: &[u8], size: usize, text: bool) -> Result<Stamp, Corrupt> {
    read_stamp(payload, size, text).map(|(stamp, _)| stamp)
}

/// The stamp and where the filler starts, after checking the length.
fn read_stamp(payload: &[u8], size: usize, text: bool) -> Result<(Stamp, usize), Corrupt> {
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
    Ok((stamp, body_start))
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
    fn filler_is_the_byte_function_at_every_size() {
        let stamp = Stamp {
            conn: 77,
            seq: 1234,
            sent_ns: 5,
        };
        for text in [false, true] {
            for size in [
                min_size(text),
                41,
                255,
                256,
                276,
                277,
                300,
                1000,
                4099,
                65_536,
                70_001,
            ] {
                if size < min_size(text) {
                    continue;
                }
                let mut buf = vec![0xAA; 3];
                encode(&mut buf, size, stamp, text);
                assert_eq!(buf.len(), size);
                for (i, &b) in buf.iter().enumerate().skip(min_size(text)) {
                    assert_eq!(b, filler_byte(77, 1234, i, text), "size {size} at {i}");
                }
                assert_eq!(verify(&buf, size, text), Ok(stamp));
                // A wrong byte anywhere is found, at its own position.
                for at in [size - 1, size / 2, min_size(text), min_size(text) + 256] {
                    if at < min_size(text) || at >= size {
                        continue;
                    }
                    let mut bad = buf.clone();
                    bad[at] = if text { b'\n' } else { bad[at] ^ 0x10 };
                    assert_eq!(
                        verify(&bad, size, text),
                        Err(Corrupt::Filler { at }),
                        "size {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn stamp_only_rewrites_and_checks_the_stamp() {
        for text in [false, true] {
            let first = Stamp {
                conn: 1,
                seq: 2,
                sent_ns: 3,
            };
            let mut buf = Vec::new();
            encode(&mut buf, 1000, first, text);
            let next = Stamp {
                conn: 1,
                seq: 3,
                sent_ns: 9,
            };
            let body = buf[min_size(text)..].to_vec();
            assert_eq!(write_stamp(&mut buf, next, text), min_size(text));
            // The body is left alone: stale for the full check, fine for
            // the stamp check.
            assert_eq!(&buf[min_size(text)..], &body[..]);
            assert_eq!(verify_stamp(&buf, 1000, text), Ok(next));
            assert!(verify(&buf, 1000, text).is_err());
            assert_eq!(
                verify_stamp(&buf[..999], 1000, text),
                Err(Corrupt::Length {
                    got: 999,
                    want: 1000
                })
            );
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
