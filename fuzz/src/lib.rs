//! The checks run by the `framer` fuzz target, kept in a library so that
//! the libFuzzer target, the stable random runner and the unit tests all run
//! the same code.
//!
//! Input layout (so that the fuzzer controls the cut points directly):
//!
//! ```text
//! byte 0        parameters of the small-limit codecs
//! byte 1        k = number of cut points (low 4 bits)
//! 2k bytes      cut points, u16 little-endian, taken modulo the stream length
//! rest          the byte stream
//! ```
//!
//! For each codec the stream is fed once whole and once cut into reads, and
//! these must hold:
//! - no panic;
//! - after every successful read, the framer holds at most one frame
//!   (`buffered() <= max payload + header`) and its allocation stays within
//!   the same bound (plus the small minimum allocation);
//! - the outcome (payloads delivered, whether and how it failed) does not
//!   depend on the cuts;
//! - for the default `LengthDelimited` and for `Lines`, the payloads and the
//!   verdict equal those of a naive reference decoder written separately.

use ringport::codec::{
    Codec, CodecError, Framer, LengthDelimited, Lines, MAX_HEADER_LEN, RawBytes,
};

/// Smallest allocation the framer makes (its `MIN_CAPACITY`), used as slack
/// in the memory bound.
const MIN_ALLOC: usize = 256;

/// What feeding a stream produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub frames: Vec<Vec<u8>>,
    pub error: Option<ErrorKind>,
}

/// An error's kind, without the lengths that legitimately depend on how far
/// the framer had read when it gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TooLarge,
    Invalid,
}

fn kind(e: &CodecError) -> ErrorKind {
    match e {
        CodecError::FrameTooLarge { .. } => ErrorKind::TooLarge,
        CodecError::InvalidHeader(_) => ErrorKind::Invalid,
    }
}

/// Split the fuzz input into (cut points, stream).
pub fn parse_input(data: &[u8]) -> (u8, Vec<usize>, &[u8]) {
    let param = data.first().copied().unwrap_or(0);
    let k = usize::from(data.get(1).copied().unwrap_or(0) & 0x0f);
    let cuts_end = (2 + 2 * k).min(data.len());
    let stream = &data[cuts_end..];
    let mut cuts: Vec<usize> = data[2.min(data.len())..cuts_end]
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    (param, cuts, stream)
}

/// Cut `stream` at the given sorted points (empty reads included: the
/// framer must accept them).
pub fn cut<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for &c in cuts {
        reads.push(&stream[prev..c]);
        prev = c;
    }
    reads.push(&stream[prev..]);
    reads
}

/// Feed `reads` in turn, asserting the memory invariants after each.
/// `bound` is the most a partial frame may hold: max payload + header.
pub fn run<C: Codec>(codec: C, reads: &[&[u8]], bound: usize) -> Outcome {
    let heap_bound = bound
        .max(codec.max_frame().saturating_add(2 * MAX_HEADER_LEN + 1))
        .max(MIN_ALLOC);
    let mut framer = Framer::new(codec);
    let mut frames = Vec::new();
    for read in reads {
        let r = framer.feed(read, |p| {
            frames.push(p.to_vec());
            true
        });
        if let Err(e) = r {
            return Outcome {
                frames,
                error: Some(kind(&e)),
            };
        }
        assert!(
            framer.buffered() <= bound,
            "buffered {} > bound {bound}",
            framer.buffered()
        );
        assert!(
            framer.heap_bytes() <= heap_bound,
            "heap {} > bound {heap_bound}",
            framer.heap_bytes()
        );
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Naive decoder of the default wire format: `[u32 BE len][payload]`.
pub fn reference_length_delimited(stream: &[u8], max: usize) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            return Outcome {
                frames,
                error: Some(ErrorKind::TooLarge),
            };
        }
        if rest.len() < 4 + len {
            break;
        }
        frames.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Naive line splitter with the documented limit rule.
pub fn reference_lines(stream: &[u8], max: usize) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut line = &rest[..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if line.len() > max {
                    return Outcome {
                        frames,
                        error: Some(ErrorKind::TooLarge),
                    };
                }
                frames.push(line.to_vec());
                rest = &rest[i + 1..];
            }
            None => {
                let too_long =
                    rest.len() > max + 1 || (rest.len() == max + 1 && rest[max] != b'\r');
                return Outcome {
                    frames,
                    error: too_long.then_some(ErrorKind::TooLarge),
                };
            }
        }
    }
}

/// Feed the stream whole and cut, check both agree, and return the outcome.
fn both<C: Codec>(codec: C, stream: &[u8], reads: &[&[u8]], bound: usize) -> Outcome {
    let whole = run(codec.clone(), &[stream], bound);
    let split = run(codec, reads, bound);
    assert_eq!(whole, split, "outcome depends on the cut points");
    split
}

/// The fuzz entry point: see the module docs.
pub fn check_framer(data: &[u8]) {
    let (param, cuts, stream) = parse_input(data);
    let reads = cut(stream, &cuts);

    // The default wire format, against the reference decoder.
    let ld = LengthDelimited::new();
    let max = ld.max_frame();
    let got = both(ld, stream, &reads, 4 + max);
    assert_eq!(got, reference_length_delimited(stream, max));

    // A small maximum, so that oversize frames are reachable.
    let small = usize::from(param);
    let got = both(
        LengthDelimited::new().max_frame_length(small),
        stream,
        &reads,
        4 + small,
    );
    assert_eq!(got, reference_length_delimited(stream, small));

    // Other layouts: the parameter byte picks field size, endianness, an
    // adjustment counting the header and whether the header is kept.
    let field_len = 1 + usize::from(param & 0x07);
    let mut other = LengthDelimited::new()
        .length_field_offset(usize::from(param >> 6))
        .length_field_length(field_len)
        .max_frame_length(usize::from(param) * 3);
    if param & 0x08 != 0 {
        other = other.little_endian();
    }
    if param & 0x10 != 0 {
        other = other.length_adjustment(-(field_len as isize));
    }
    if param & 0x20 != 0 {
        other = other.num_skip(0);
    }
    let bound = other.max_frame() + usize::from(param >> 6) + field_len;
    both(other, stream, &reads, bound);

    // Lines, default and small maximum, against the reference splitter.
    let lines = Lines::new();
    let max = lines.max_frame();
    let got = both(lines, stream, &reads, max + 1);
    assert_eq!(got, reference_lines(stream, max));
    let small = usize::from(param & 0x3f);
    let got = both(
        Lines::new().max_line_length(small),
        stream,
        &reads,
        small + 1,
    );
    assert_eq!(got, reference_lines(stream, small));

    // Raw bytes: everything delivered, in order, in bounded non-empty
    // messages, nothing buffered (frames do depend on the cuts here).
    let raw_max = usize::from(param).max(1);
    let got = run(RawBytes::new().max_frame_length(raw_max), &reads, 0);
    assert_eq!(got.error, None);
    assert!(
        got.frames
            .iter()
            .all(|f| !f.is_empty() && f.len() <= raw_max)
    );
    assert_eq!(got.frames.concat(), stream);
}

/// A small deterministic generator (xorshift64*) for the stable runner and
/// the tests: no dependency, reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Build a fuzz input that is likely to reach deep: a parameter byte, cut
/// points, and a stream mixing valid length-prefixed frames, lines, random
/// bytes and oversize headers.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut stream = Vec::new();
    let pieces = rng.below(12);
    for _ in 0..pieces {
        match rng.below(6) {
            0 | 1 => {
                let len = if rng.below(4) == 0 {
                    rng.below(70_000)
                } else {
                    rng.below(64)
                };
                stream.extend_from_slice(&(len as u32).to_be_bytes());
                stream.extend((0..len).map(|i| i as u8));
            }
            2 => {
                let len = rng.below(300);
                stream.extend((0..len).map(|_| b'a' + (rng.below(26) as u8)));
                stream.extend_from_slice(if rng.below(2) == 0 { b"\n" } else { b"\r\n" });
            }
            3 => {
                let len = rng.below(64);
                stream.extend((0..len).map(|_| rng.next_u64() as u8));
            }
            4 => stream.extend((0..rng.below(16)).map(|_| [b'\r', b'\n', 0][rng.below(3)])),
            _ => stream.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes()),
        }
    }
    let k = rng.below(16);
    let mut input = vec![rng.next_u64() as u8, k as u8];
    for _ in 0..k {
        let c = rng.below(stream.len() + 1) as u16;
        input.extend_from_slice(&c.to_le_bytes());
    }
    input.extend_from_slice(&stream);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_cut() {
        let data = [7, 2, 3, 0, 1, 0, b'a', b'b', b'c', b'd'];
        let (param, cuts, stream) = parse_input(&data);
        assert_eq!(param, 7);
        assert_eq!(cuts, vec![1, 3]);
        assert_eq!(stream, b"abcd");
        assert_eq!(cut(stream, &cuts), vec![&b"a"[..], b"bc", b"d"]);
    }

    #[test]
    fn reference_decoders() {
        let r = reference_length_delimited(&[0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0], 10);
        assert_eq!(r.frames, vec![vec![9], vec![]]);
        assert_eq!(r.error, None);
        let r = reference_length_delimited(&[0, 0, 0, 11], 10);
        assert_eq!(r.error, Some(ErrorKind::TooLarge));
        let r = reference_lines(b"ab\r\ncd\nxyz", 3);
        assert_eq!(r.frames, vec![b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(r.error, None);
        assert_eq!(reference_lines(b"abcd", 3).error, Some(ErrorKind::TooLarge));
        assert_eq!(reference_lines(b"abc\r", 3).error, None);
    }

    #[test]
    fn short_and_empty_inputs() {
        for data in [&[][..], &[1], &[1, 0], &[0, 1, 0], &[255, 15]] {
            check_framer(data);
        }
    }

    #[test]
    fn generated_inputs() {
        let mut rng = Rng::new(42);
        for _ in 0..300 {
            check_framer(&generate(&mut rng));
        }
    }
}
