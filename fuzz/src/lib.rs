//! The checks run by the fuzz targets, kept in a library so that the
//! libFuzzer targets, the stable random runner and the unit tests all run
//! the same code. One check per decoder, and `check_framer` running all:
//!
//! - `check_length_delimited_tokio`: `LengthDelimited` with tokio-util's
//!   rules, settings taken from the input, against the real tokio-util 0.7
//!   `LengthDelimitedCodec` (and, for the default settings, a naive decoder);
//! - `check_length_delimited_netty`: `LengthDelimited::netty`, settings from
//!   the input, against a naive model of Netty's
//!   `LengthFieldBasedFrameDecoder`;
//! - `check_lines`: `Lines`, default and small limit, against a naive
//!   splitter;
//! - `check_raw`: `RawBytes`.
//!
//! Input layout (so that the fuzzer controls the settings and the cut
//! points directly):
//!
//! ```text
//! bytes 0..4    settings of the length-delimited codecs (see `TokioSettings`
//!               and `NettySettings`); ignored by lines and raw
//! byte 4        parameter: the small limits
//! byte 5        k = number of cut points (low 4 bits)
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
//! - the outcome (payloads delivered, whether and how it failed, whether the
//!   stream ended inside a frame according to `Framer::partial`) does not
//!   depend on the cuts;
//! - the outcome equals the reference's.

pub mod ws;

use bytes::BytesMut;
use ringport::codec::{
    Codec, CodecError, Framer, LengthDelimited, Lines, MAX_HEADER_LEN, RawBytes,
};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Smallest allocation the framer makes (its `MIN_CAPACITY`), used as slack
/// in the memory bound.
const MIN_ALLOC: usize = 256;

/// What feeding a stream produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub frames: Vec<Vec<u8>>,
    pub error: Option<ErrorKind>,
    /// No error, and the stream ended inside a frame (`Framer::partial`).
    pub cut_frame: bool,
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

/// The parsed fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    pub settings: [u8; 4],
    pub param: u8,
    pub cuts: Vec<usize>,
    pub stream: &'a [u8],
}

/// Split the fuzz input (layout in the module docs).
pub fn parse_input(data: &[u8]) -> Input<'_> {
    let mut settings = [0u8; 4];
    let n = data.len().min(4);
    settings[..n].copy_from_slice(&data[..n]);
    let data = &data[n..];
    let param = data.first().copied().unwrap_or(0);
    let k = usize::from(data.get(1).copied().unwrap_or(0) & 0x0f);
    let cuts_end = (2 + 2 * k).min(data.len());
    let stream = &data[cuts_end..];
    let mut cuts: Vec<usize> = data[2.min(data.len())..cuts_end]
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    Input {
        settings,
        param,
        cuts,
        stream,
    }
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
                cut_frame: false,
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
        assert_eq!(framer.partial().is_some(), framer.buffered() > 0);
        if let Some(p) = framer.partial() {
            assert_eq!(p.have, framer.buffered() as u64);
            if let Some(missing) = p.missing {
                assert!(missing > 0 && p.have + missing <= bound as u64 + MAX_HEADER_LEN as u64);
            }
        }
    }
    Outcome {
        frames,
        error: None,
        cut_frame: framer.partial().is_some(),
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
                cut_frame: false,
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
        cut_frame: !rest.is_empty(),
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
                        cut_frame: false,
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
                    cut_frame: !too_long && !rest.is_empty(),
                };
            }
        }
    }
}

/// `LengthDelimited` settings under tokio-util's rules, from the input's
/// settings bytes `[a, b, c, d]` and parameter byte `p`:
///
/// - `a`: bits 0-1 length field offset, bits 2-4 field length - 1, bit 5
///   little-endian, bit 6 custom `num_skip`;
/// - `b`: `num_skip` (modulo the end of the field + 5);
/// - `c`: length adjustment (signed byte);
/// - `d`: maximum: `p`, `16 p`, 1 MiB, or (fields of 1 or 2 bytes)
///   `usize::MAX`.
#[derive(Debug, Clone)]
pub struct TokioSettings {
    pub offset: usize,
    pub field_len: usize,
    pub little_endian: bool,
    pub num_skip: Option<usize>,
    pub adjustment: isize,
    pub max: usize,
}

impl TokioSettings {
    pub fn from_input(settings: [u8; 4], param: u8) -> Self {
        let [a, b, c, d] = settings;
        let offset = usize::from(a & 3);
        let field_len = 1 + usize::from((a >> 2) & 7);
        let end = offset + field_len;
        let max = match d & 3 {
            0 => usize::from(param),
            1 => 16 * usize::from(param),
            2 if field_len <= 2 => usize::MAX,
            _ => 1 << 20,
        };
        TokioSettings {
            offset,
            field_len,
            little_endian: a & 0x20 != 0,
            num_skip: (a & 0x40 != 0).then_some(usize::from(b) % (end + 5)),
            adjustment: isize::from(c as i8),
            max,
        }
    }

    pub fn end(&self) -> usize {
        self.offset + self.field_len
    }

    pub fn skip(&self) -> usize {
        self.num_skip.unwrap_or(self.end())
    }

    pub fn ringport(&self) -> LengthDelimited {
        let mut c = LengthDelimited::new()
            .length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            c = c.num_skip(s);
        }
        if self.little_endian {
            c.little_endian()
        } else {
            c
        }
    }

    pub fn tokio(&self) -> LengthDelimitedCodec {
        let mut b = LengthDelimitedCodec::builder();
        b.length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            b.num_skip(s);
        }
        if self.little_endian {
            b.little_endian();
        }
        b.new_codec()
    }

    /// A frame with an `n`-byte payload (that holds its whole head).
    pub fn frame(&self, n: usize, fill: u8) -> Option<Vec<u8>> {
        let n = n.max(self.end().saturating_sub(self.skip()));
        let value = u64::try_from(n as i128 - self.adjustment as i128).ok()?;
        if self.field_len < 8 && value >> (8 * self.field_len) != 0 {
            return None;
        }
        let mut f = vec![fill; self.skip() + n];
        put(value, self.little_endian, &mut f[self.offset..self.end()]);
        Some(f)
    }
}

/// `LengthDelimited::netty` settings, from the same bytes:
///
/// - `a`: bits 0-1 offset, bits 2-4 field length (1, 2, 3, 4 or 8), bit 5
///   little-endian, bit 7 `fail_fast = false`;
/// - `b`: `initial_bytes_to_strip` (modulo the end of the field + 5);
/// - `c`: length adjustment (signed byte);
/// - `d`: maximum frame length: end of the field plus `p`, `16 p` or
///   `4096 p`.
#[derive(Debug, Clone)]
pub struct NettySettings {
    pub offset: usize,
    pub field_len: usize,
    pub little_endian: bool,
    pub strip: usize,
    pub adjustment: isize,
    pub max: usize,
    pub fail_fast: bool,
}

impl NettySettings {
    pub fn from_input(settings: [u8; 4], param: u8) -> Self {
        let [a, b, c, d] = settings;
        let offset = usize::from(a & 3);
        let field_len = [1, 2, 3, 4, 8][usize::from((a >> 2) & 7) % 5];
        let end = offset + field_len;
        let max = end
            + match d & 3 {
                0 | 1 => usize::from(param),
                2 => 16 * usize::from(param),
                _ => 4096 * usize::from(param),
            };
        NettySettings {
            offset,
            field_len,
            little_endian: a & 0x20 != 0,
            strip: usize::from(b) % (end + 5),
            adjustment: isize::from(c as i8),
            max,
            fail_fast: a & 0x80 == 0,
        }
    }

    pub fn end(&self) -> usize {
        self.offset + self.field_len
    }

    pub fn ringport(&self) -> LengthDelimited {
        let c = LengthDelimited::netty(
            self.max,
            self.offset,
            self.field_len,
            self.adjustment,
            self.strip,
            self.fail_fast,
        );
        if self.little_endian {
            c.little_endian()
        } else {
            c
        }
    }

    /// A whole frame of `len` bytes (header included), if valid.
    pub fn frame(&self, len: usize, fill: u8) -> Option<Vec<u8>> {
        let len = len.max(self.end()).max(self.strip);
        let value =
            u64::try_from(len as i128 - self.adjustment as i128 - self.end() as i128).ok()?;
        if self.field_len < 8 && value >> (8 * self.field_len) != 0 {
            return None;
        }
        let mut f = vec![fill; len];
        put(value, self.little_endian, &mut f[self.offset..self.end()]);
        Some(f)
    }
}

fn put(value: u64, little_endian: bool, field: &mut [u8]) {
    let n = field.len();
    for (i, b) in field.iter_mut().enumerate() {
        let shift = if little_endian {
            8 * i
        } else {
            8 * (n - 1 - i)
        };
        *b = (value >> shift) as u8;
    }
}

/// The real tokio-util decoder on the same reads. A frame of zero bytes
/// (which tokio-util would yield forever) counts as invalid, as ringport
/// refuses it; a cut frame is `decode_eof`'s "bytes remaining", or a frame
/// whose head tokio-util consumed with nothing after it (which its
/// `decode_eof` does not report).
pub fn reference_tokio(mut codec: LengthDelimitedCodec, reads: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let fail = |frames, kind| Outcome {
        frames,
        error: Some(kind),
        cut_frame: false,
    };
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(f)) if f.is_empty() && buf.len() == before => {
                    return fail(frames, ErrorKind::Invalid);
                }
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    let too_large = e
                        .get_ref()
                        .is_some_and(|i| i.is::<LengthDelimitedCodecError>());
                    let kind = if too_large {
                        ErrorKind::TooLarge
                    } else {
                        ErrorKind::Invalid
                    };
                    return fail(frames, kind);
                }
            }
        }
    }
    let cut_frame = match codec.decode_eof(&mut buf) {
        Ok(_) => format!("{codec:?}").contains("state: Data("),
        Err(_) => true,
    };
    Outcome {
        frames,
        error: None,
        cut_frame,
    }
}

/// A naive model of Netty's `LengthFieldBasedFrameDecoder.decode` (fail
/// fast), on the whole stream, stopping at the first exception.
pub fn reference_netty(s: &NettySettings, stream: &[u8]) -> Outcome {
    let end = s.end();
    let mut frames = Vec::new();
    let mut at = 0;
    let stop = |frames, error, cut_frame| Outcome {
        frames,
        error,
        cut_frame,
    };
    loop {
        let readable = stream.len() - at;
        if readable < end {
            return stop(frames, None, readable > 0);
        }
        let field = &stream[at + s.offset..at + end];
        let mut raw = 0u64;
        for i in 0..field.len() {
            let b = if s.little_endian {
                field[field.len() - 1 - i]
            } else {
                field[i]
            };
            raw = (raw << 8) | u64::from(b);
        }
        let value = raw as i64; // an 8-byte field is a signed long
        if value < 0 {
            return stop(frames, Some(ErrorKind::Invalid), false);
        }
        let frame = value.wrapping_add(i64::from((s.adjustment as i32).wrapping_add(end as i32)));
        if frame < end as i64 {
            return stop(frames, Some(ErrorKind::Invalid), false);
        }
        if frame > s.max as i64 {
            return stop(frames, Some(ErrorKind::TooLarge), false);
        }
        let frame = frame as usize;
        if readable < frame {
            return stop(frames, None, true);
        }
        if s.strip > frame {
            return stop(frames, Some(ErrorKind::Invalid), false);
        }
        frames.push(stream[at + s.strip..at + frame].to_vec());
        at += frame;
    }
}

/// Feed the stream whole and cut, check both agree, and return the outcome.
fn both<C: Codec>(codec: C, stream: &[u8], reads: &[&[u8]], bound: usize) -> Outcome {
    let whole = run(codec.clone(), &[stream], bound);
    let split = run(codec, reads, bound);
    assert_eq!(whole, split, "outcome depends on the cut points");
    split
}

/// The default wire format and settings from the input, tokio-util rules,
/// against the naive decoder and the real tokio-util.
pub fn check_length_delimited_tokio(data: &[u8]) {
    let input = parse_input(data);
    let reads = cut(input.stream, &input.cuts);

    let ld = LengthDelimited::new();
    let max = ld.max_frame();
    let got = both(ld, input.stream, &reads, 4 + max);
    assert_eq!(got, reference_length_delimited(input.stream, max));

    // A small maximum, so that oversize frames are reachable.
    let small = usize::from(input.param);
    let got = both(
        LengthDelimited::new().max_frame_length(small),
        input.stream,
        &reads,
        4 + small,
    );
    assert_eq!(got, reference_length_delimited(input.stream, small));

    let s = TokioSettings::from_input(input.settings, input.param);
    let codec = s.ringport();
    let bound = s.skip() + s.end() + codec.max_frame();
    let got = both(codec, input.stream, &reads, bound);
    assert_eq!(got, reference_tokio(s.tokio(), &reads), "{s:?}");
}

/// Settings from the input, Netty rules, against the Netty model.
pub fn check_length_delimited_netty(data: &[u8]) {
    let input = parse_input(data);
    let reads = cut(input.stream, &input.cuts);
    let s = NettySettings::from_input(input.settings, input.param);
    let got = both(s.ringport(), input.stream, &reads, s.max);
    assert_eq!(got, reference_netty(&s, input.stream), "{s:?}");
}

/// Lines, default and small maximum, against the reference splitter.
pub fn check_lines(data: &[u8]) {
    let input = parse_input(data);
    let reads = cut(input.stream, &input.cuts);
    let lines = Lines::new();
    let max = lines.max_frame();
    let got = both(lines, input.stream, &reads, max + 1);
    assert_eq!(got, reference_lines(input.stream, max));
    let small = usize::from(input.param & 0x3f);
    let got = both(
        Lines::new().max_line_length(small),
        input.stream,
        &reads,
        small + 1,
    );
    assert_eq!(got, reference_lines(input.stream, small));
}

/// Raw bytes: everything delivered, in order, in bounded non-empty
/// messages, nothing buffered (frames do depend on the cuts here).
pub fn check_raw(data: &[u8]) {
    let input = parse_input(data);
    let reads = cut(input.stream, &input.cuts);
    let raw_max = usize::from(input.param).max(1);
    let got = run(RawBytes::new().max_frame_length(raw_max), &reads, 0);
    assert_eq!(got.error, None);
    assert!(!got.cut_frame);
    assert!(
        got.frames
            .iter()
            .all(|f| !f.is_empty() && f.len() <= raw_max)
    );
    assert_eq!(got.frames.concat(), input.stream);
}

/// Every check: the `framer` target.
pub fn check_framer(data: &[u8]) {
    check_length_delimited_tokio(data);
    check_length_delimited_netty(data);
    check_lines(data);
    check_raw(data);
}

/// A check: panics if the input shows a bug.
pub type Check = fn(&[u8]);

/// The checks by target name, for the stable runner.
pub const TARGETS: &[(&str, Check)] = &[
    ("framer", check_framer),
    ("length_delimited_tokio", check_length_delimited_tokio),
    ("length_delimited_netty", check_length_delimited_netty),
    ("lines", check_lines),
    ("raw", check_raw),
    ("ws_frames", ws::check_frames),
    ("ws_handshake", ws::check_handshake),
    ("ws_inflate", ws::check_inflate),
];

/// A generated input for the target `name` (the WebSocket targets have
/// their own generators).
pub fn generate_for(name: &str, rng: &mut Rng) -> Vec<u8> {
    if name.starts_with("ws_") {
        ws::generate(name, rng)
    } else {
        generate(rng)
    }
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

/// Build a fuzz input that is likely to reach deep: settings bytes, a
/// parameter byte, cut points, and a stream mixing frames valid under the
/// default format and under the input's tokio-util and Netty settings,
/// lines, random bytes and oversize headers.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let settings = (rng.next_u64() as u32).to_le_bytes();
    let param = rng.next_u64() as u8;
    let tokio = TokioSettings::from_input(settings, param);
    let netty = NettySettings::from_input(settings, param);
    let mut stream = Vec::new();
    let pieces = rng.below(12);
    for _ in 0..pieces {
        let small = if rng.below(4) == 0 {
            rng.below(70_000)
        } else {
            rng.below(64)
        };
        match rng.below(8) {
            0 => {
                stream.extend_from_slice(&(small as u32).to_be_bytes());
                stream.extend((0..small).map(|i| i as u8));
            }
            1 | 2 => {
                let n = small.min(tokio.max.saturating_add_signed(tokio.adjustment));
                stream.extend(tokio.frame(n, n as u8).unwrap_or_default());
            }
            3 => stream.extend(
                netty
                    .frame(small.min(netty.max), small as u8)
                    .unwrap_or_default(),
            ),
            4 => {
                let len = rng.below(300);
                stream.extend((0..len).map(|_| b'a' + (rng.below(26) as u8)));
                stream.extend_from_slice(if rng.below(2) == 0 { b"\n" } else { b"\r\n" });
            }
            5 => {
                let len = rng.below(64);
                stream.extend((0..len).map(|_| rng.next_u64() as u8));
            }
            6 => stream.extend((0..rng.below(16)).map(|_| [b'\r', b'\n', 0][rng.below(3)])),
            _ => stream.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes()),
        }
    }
    let k = rng.below(16);
    let mut input = settings.to_vec();
    input.extend([param, k as u8]);
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
        let data = [1, 2, 3, 4, 7, 2, 3, 0, 1, 0, b'a', b'b', b'c', b'd'];
        let input = parse_input(&data);
        assert_eq!(input.settings, [1, 2, 3, 4]);
        assert_eq!(input.param, 7);
        assert_eq!(input.cuts, vec![1, 3]);
        assert_eq!(input.stream, b"abcd");
        assert_eq!(cut(input.stream, &input.cuts), vec![&b"a"[..], b"bc", b"d"]);
    }

    #[test]
    fn reference_decoders() {
        let r = reference_length_delimited(&[0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0], 10);
        assert_eq!(r.frames, vec![vec![9], vec![]]);
        assert_eq!(r.error, None);
        assert!(r.cut_frame);
        let r = reference_length_delimited(&[0, 0, 0, 11], 10);
        assert_eq!(r.error, Some(ErrorKind::TooLarge));
        let r = reference_lines(b"ab\r\ncd\nxyz", 3);
        assert_eq!(r.frames, vec![b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(r.error, None);
        assert_eq!(reference_lines(b"abcd", 3).error, Some(ErrorKind::TooLarge));
        assert_eq!(reference_lines(b"abc\r", 3).error, None);
        // tokio-util: `length_field_length(1).num_skip(0)` on 01 01.
        let s = TokioSettings {
            offset: 0,
            field_len: 1,
            little_endian: false,
            num_skip: Some(0),
            adjustment: 0,
            max: 100,
        };
        let r = reference_tokio(s.tokio(), &[&[1, 1]]);
        assert_eq!(r.frames, vec![vec![1], vec![1]]);
        // Netty's example 6.
        let s = NettySettings {
            offset: 1,
            field_len: 2,
            little_endian: false,
            strip: 3,
            adjustment: 1,
            max: 100,
            fail_fast: true,
        };
        let r = reference_netty(&s, b"\xCA\x00\x0C\xFEHELLO, WORLD");
        assert_eq!(r.frames, vec![b"\xFEHELLO, WORLD".to_vec()]);
    }

    #[test]
    fn short_and_empty_inputs() {
        for data in [
            &[][..],
            &[1],
            &[1, 0],
            &[0, 1, 0],
            &[255, 15],
            &[0, 0, 0, 0, 255, 15],
        ] {
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

    #[test]
    fn websocket_generated_inputs() {
        let mut rng = Rng::new(7);
        for (name, check) in TARGETS.iter().filter(|(n, _)| n.starts_with("ws_")) {
            for _ in 0..200 {
                check(&generate_for(name, &mut rng));
            }
            for data in [&[][..], &[1], &[0xff; 6], &[1, 0, 0, 0, 0, 0, 0x81, 0x80]] {
                check(data);
            }
        }
    }
}
