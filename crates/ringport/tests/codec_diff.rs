//! Differential tests of `LengthDelimited` against its two references:
//!
//! - **tokio-util** (the real `tokio_util::codec::LengthDelimitedCodec`
//!   0.7, a dev-dependency): random builder settings × random streams
//!   (mostly valid, sometimes ending in an invalid or cut header) × random
//!   read boundaries. Frames are compared byte for byte, then the error (if
//!   any) and whether the stream ended inside a frame (`decode_eof`'s "bytes
//!   remaining on stream" against `Framer::partial`); encoding is compared
//!   on payload lengths around every limit.
//! - **Netty** (no Rust implementation exists): an independent, literal
//!   model of `LengthFieldBasedFrameDecoder.decode` and of
//!   `LengthFieldPrepender.encode`, written from Netty's source.
//!
//! The number of configurations is `CODEC_DIFF_CONFIGS` (default 5,000 for
//! each reference, a few seconds in debug), the seed `CODEC_DIFF_SEED`.
//! `CODEC_DIFF_CASE=n` replays configuration `n` alone (the failure message
//! names it). `scripts/codec-diff.sh` runs hundreds of thousands.

use std::fmt::Write as _;

use bytes::BytesMut;
use ringport::codec::{Codec, CodecError, Framer, LengthDelimited, MAX_HEADER_LEN};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// xorshift64*: reproducible, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, case: u64) -> Self {
        let mut r = Rng((seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().enumerate() {
        if i == 200 {
            let _ = write!(s, "… ({} bytes)", b.len());
            break;
        }
        let _ = write!(s, "{x:02x} ");
    }
    s
}

/// Random read boundaries: none, one byte at a time, or a few random cuts.
fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = match rng.below(10) {
        0 => vec![],
        1 if len < 3000 => (1..len).collect(),
        _ => (0..rng.below(8)).map(|_| rng.below(len + 1)).collect(),
    };
    c.sort_unstable();
    c
}

fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        reads.push(&stream[prev..c]);
        prev = c;
    }
    reads.push(&stream[prev..]);
    reads
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TooLarge,
    Invalid,
}

/// What a decoder made of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<Kind>,
    /// The stream ended inside a frame (no error).
    cut_frame: bool,
}

fn ringport_kind(e: &CodecError) -> Kind {
    match e {
        CodecError::FrameTooLarge { .. } => Kind::TooLarge,
        CodecError::InvalidHeader(_) => Kind::Invalid,
    }
}

fn run_ringport(codec: LengthDelimited, reads: &[&[u8]]) -> Outcome {
    let mut framer = Framer::new(codec);
    let mut frames = Vec::new();
    for read in reads {
        if let Err(e) = framer.feed(read, |p| {
            frames.push(p.to_vec());
            true
        }) {
            return Outcome {
                frames,
                error: Some(ringport_kind(&e)),
                cut_frame: false,
            };
        }
    }
    Outcome {
        frames,
        error: None,
        cut_frame: framer.partial().is_some(),
    }
}

// ---------------------------------------------------------------- tokio-util

/// Builder settings, as plain numbers.
#[derive(Debug, Clone)]
struct TokioConfig {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    big_endian: bool,
    max: usize,
}

impl TokioConfig {
    fn random(rng: &mut Rng) -> Self {
        let offset = if rng.chance(50) { 0 } else { rng.below(5) };
        let field_len = 1 + rng.below(8);
        let end = offset + field_len;
        let adjustment = match rng.below(6) {
            0 => 0,
            1 => -(end as isize),
            2 => rng.range(-300, 300) as isize,
            _ => rng.range(-8, 8) as isize,
        };
        let num_skip = match rng.below(10) {
            0..=2 => None,
            3 => Some(end),
            _ => Some(rng.below(end + 6)),
        };
        let max = match rng.below(6) {
            0 => rng.below(40),
            1 => rng.below(300),
            2 => 1 + rng.below(70_000),
            // The field's own limit applies (1 or 2 bytes: small frames).
            3 if field_len <= 2 => usize::MAX,
            _ => 1000 + rng.below(5000),
        };
        TokioConfig {
            offset,
            field_len,
            adjustment,
            num_skip,
            big_endian: rng.chance(60),
            max,
        }
    }

    fn end(&self) -> usize {
        self.offset + self.field_len
    }
    fn skip(&self) -> usize {
        self.num_skip.unwrap_or(self.end())
    }
    fn head(&self) -> usize {
        self.end().max(self.num_skip.unwrap_or(0))
    }
    fn field_max(&self) -> u64 {
        if self.field_len == 8 {
            u64::MAX
        } else {
            (1 << (8 * self.field_len)) - 1
        }
    }
    /// Only guides the generator (the reference itself decides).
    fn effective_max(&self) -> u64 {
        let allowed = self
            .field_max()
            .saturating_add_signed(self.adjustment as i64);
        (self.max as u64).min(allowed)
    }

    fn tokio(&self) -> LengthDelimitedCodec {
        let mut b = LengthDelimitedCodec::builder();
        b.length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            b.num_skip(s);
        }
        if self.big_endian {
            b.big_endian();
        } else {
            b.little_endian();
        }
        b.new_codec()
    }

    fn ringport(&self) -> LengthDelimited {
        let mut c = LengthDelimited::new()
            .length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            c = c.num_skip(s);
        }
        if self.big_endian {
            c.big_endian()
        } else {
            c.little_endian()
        }
    }

    fn put(&self, value: u64, dst: &mut [u8]) {
        for (i, d) in dst.iter_mut().enumerate() {
            let shift = if self.big_endian {
                8 * (self.field_len - 1 - i)
            } else {
                8 * i
            };
            *d = (value >> shift) as u8;
        }
    }

    fn get(&self, src: &[u8]) -> u64 {
        src.iter().enumerate().fold(0u64, |v, (i, &b)| {
            let shift = if self.big_endian {
                8 * (self.field_len - 1 - i)
            } else {
                8 * i
            };
            v | (u64::from(b) << shift)
        })
    }

    /// A stream of frames under tokio-util's rules. Frames may be shorter
    /// than their head (then the next head overlaps them and its field is
    /// whatever the bytes already say). The stream may end with an invalid
    /// header, a cut frame or garbage.
    fn stream(&self, rng: &mut Rng) -> Vec<u8> {
        let (offset, end, skip, head) = (self.offset, self.end(), self.skip(), self.head());
        let adj = self.adjustment as i64;
        let emax = self.effective_max();
        let mut s: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        for _ in 0..rng.below(12) {
            let n_want: i64 = match rng.below(10) {
                0 => rng.range(0, 400),
                // At the limit (large limits rarely: debug runs are slow).
                1 if emax <= 3000 || rng.chance(10) => (emax.min(70_000) as i64 + adj).max(0),
                _ => rng.range(0, 24),
            };
            let v_want = (n_want - adj).clamp(0, emax.min(1 << 40) as i64) as u64;
            let old = s.len();
            if s.len() < pos + head {
                let fill = rng.bytes(pos + head - s.len());
                s.extend(fill);
            }
            let mut field = vec![0u8; self.field_len];
            self.put(v_want, &mut field);
            for i in offset..end {
                if pos + i >= old {
                    s[pos + i] = field[i - offset];
                }
            }
            let v = self.get(&s[pos + offset..pos + end]);
            let n = v as i128 + adj as i128;
            if v > emax || n < 0 || (skip == 0 && n == 0) || n > 100_000 {
                // The bytes already there make an invalid or huge header:
                // the stream ends on it.
                return s;
            }
            let frame_end = pos + skip + n as usize;
            if s.len() < frame_end {
                let fill = rng.bytes(frame_end - s.len());
                s.extend(fill);
            }
            pos = frame_end;
        }
        match rng.below(8) {
            // A cut frame or header.
            0 => {
                let extra = {
                    let n = 1 + rng.below(head + 30);
                    rng.bytes(n)
                };
                s.extend(extra);
            }
            // An oversize header.
            1 if emax < self.field_max() => {
                let mut h = rng.bytes(head);
                let mut field = vec![0u8; self.field_len];
                self.put(emax + 1 + rng.below(3) as u64, &mut field);
                h[offset..end].copy_from_slice(&field);
                s.extend(h);
            }
            // A header whose adjusted length is negative.
            2 if adj < 0 => {
                let mut h = {
                    let n = head + rng.below(4);
                    rng.bytes(n)
                };
                let mut field = vec![0u8; self.field_len];
                self.put(rng.below((-adj) as usize) as u64, &mut field);
                h[offset..end].copy_from_slice(&field);
                s.extend(h);
            }
            // Garbage.
            3 => {
                let extra = {
                    let n = rng.below(40);
                    rng.bytes(n)
                };
                s.extend(extra);
            }
            _ => {}
        }
        s
    }
}

fn tokio_kind(e: &std::io::Error) -> Kind {
    match e.get_ref() {
        Some(inner) if inner.is::<LengthDelimitedCodecError>() => Kind::TooLarge,
        _ => Kind::Invalid,
    }
}

fn run_tokio(codec: LengthDelimitedCodec, reads: &[&[u8]]) -> Outcome {
    run_tokio_counting(codec, reads).0
}

/// Also says whether the stream ended inside a frame that tokio-util's
/// `decode_eof` does not report (see below).
fn run_tokio_counting(mut codec: LengthDelimitedCodec, reads: &[&[u8]]) -> (Outcome, bool) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if frame.is_empty() && buf.len() == before {
                        // A frame of zero bytes: tokio-util would yield it
                        // forever; ringport refuses it.
                        let outcome = Outcome {
                            frames,
                            error: Some(Kind::Invalid),
                            cut_frame: false,
                        };
                        return (outcome, false);
                    }
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    let outcome = Outcome {
                        frames,
                        error: Some(tokio_kind(&e)),
                        cut_frame: false,
                    };
                    return (outcome, false);
                }
            }
        }
    }
    // End of stream: the bytes left, if any, are "remaining on stream".
    // tokio-util has already dropped the head of a frame whose length it
    // read, so when no byte after the head arrived its `decode_eof` says
    // nothing although the frame was cut (its state is `Data(n)`); ringport
    // reports that frame as cut too.
    let (cut_frame, silent) = match codec.decode_eof(&mut buf) {
        Ok(None) => {
            let silent = format!("{codec:?}").contains("state: Data(");
            (silent, silent)
        }
        Ok(Some(_)) => unreachable!("decode returned None just before"),
        Err(_) => (true, false),
    };
    let outcome = Outcome {
        frames,
        error: None,
        cut_frame,
    };
    (outcome, silent)
}

/// Encoding: the same bytes, or an error of the same kind.
fn tokio_encode(codec: &mut LengthDelimitedCodec, payload: &[u8]) -> Result<Vec<u8>, Kind> {
    let mut dst = BytesMut::new();
    Encoder::<&[u8]>::encode(codec, payload, &mut dst).map_err(|e| tokio_kind(&e))?;
    Ok(dst.to_vec())
}

fn ringport_encode(codec: &LengthDelimited, payload: &[u8]) -> Result<Vec<u8>, Kind> {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = codec
        .encode_header(payload.len(), &mut hdr)
        .map_err(|e| ringport_kind(&e))?;
    let mut v = hdr[..n].to_vec();
    v.extend_from_slice(payload);
    Ok(v)
}

#[derive(Debug, Default)]
struct Counts {
    configs: u64,
    streams: u64,
    frames: u64,
    errors: u64,
    cut: u64,
    encodings: u64,
    overlapping: u64,
    beyond: u64,
    truncated_encodings: u64,
    silent_cut: u64,
}

fn tokio_case(seed: u64, case: u64, counts: &mut Counts) {
    let mut rng = Rng::new(seed, case);
    let config = TokioConfig::random(&mut rng);
    counts.configs += 1;
    if config.skip() < config.end() {
        counts.overlapping += 1;
    }
    if config.skip() > config.end() {
        counts.beyond += 1;
    }
    for _ in 0..3 {
        let stream = config.stream(&mut rng);
        for _ in 0..2 {
            let cuts = cuts(&mut rng, stream.len());
            let reads = split(&stream, &cuts);
            let (theirs, silent) = run_tokio_counting(config.tokio(), &reads);
            let ours = run_ringport(config.ringport(), &reads);
            assert!(
                ours == theirs,
                "tokio-util differs: seed {seed} case {case}\n{config:?}\nstream {}\ncuts {cuts:?}\n\
                 tokio-util {theirs:?}\nringport   {ours:?}",
                hex(&stream)
            );
            counts.streams += 1;
            counts.frames += theirs.frames.len() as u64;
            counts.errors += u64::from(theirs.error.is_some());
            counts.cut += u64::from(theirs.cut_frame);
            counts.silent_cut += u64::from(silent);
        }
    }
    // Encoding, at and around every limit.
    let mut tokio = config.tokio();
    let ours = config.ringport();
    let emax = config.effective_max();
    let adj = config.adjustment;
    let mut lens: Vec<u64> = vec![0, 1, 2, 11, emax, emax.wrapping_sub(1), emax + 1];
    if adj > 0 {
        lens.extend([adj as u64 - 1, adj as u64, adj as u64 + 1]);
    }
    lens.push(rng.below(300) as u64);
    for len in lens {
        if len > 200_000 {
            continue;
        }
        let payload = rng.bytes(len as usize);
        let mut theirs = tokio_encode(&mut tokio, &payload);
        let mine = ringport_encode(&ours, &payload);
        if theirs.is_ok() && len as i128 - adj as i128 > config.field_max() as i128 {
            // The adjustment is more negative than the field can express:
            // tokio-util writes the low bytes of the length (a header that
            // decodes to another length); ringport refuses.
            theirs = Err(Kind::Invalid);
            counts.truncated_encodings += 1;
        }
        assert!(
            mine == theirs,
            "tokio-util encodes differently: seed {seed} case {case}\n{config:?}\n\
             payload of {len} bytes\ntokio-util {theirs:?}\nringport   {mine:?}"
        );
        counts.encodings += 1;
    }
}

fn run_cases(name: &str, default_configs: u64, case: impl Fn(u64, u64, &mut Counts)) {
    let seed = env("CODEC_DIFF_SEED", 0x5EED);
    let mut counts = Counts::default();
    let start = std::time::Instant::now();
    if let Ok(one) = std::env::var("CODEC_DIFF_CASE") {
        case(seed, one.parse().expect("CODEC_DIFF_CASE"), &mut counts);
    } else {
        for i in 0..env("CODEC_DIFF_CONFIGS", default_configs) {
            case(seed, i, &mut counts);
        }
    }
    let notes = if counts.silent_cut + counts.truncated_encodings > 0 {
        format!(
            " [of which {} cut frames after a complete head, that tokio-util's decode_eof \
             does not report; {} encodings where tokio-util writes a truncated length and \
             ringport refuses]",
            counts.silent_cut, counts.truncated_encodings
        )
    } else {
        String::new()
    };
    eprintln!(
        "{name}: seed {seed}: {} configurations ({} with num_skip below the end of the \
         length field, {} above), {} streams x cuts: {} frames identical, {} errors and {} \
         frames cut by the end of the stream identical; {} encodings identical{notes}; \
         {:.1} s",
        counts.configs,
        counts.overlapping,
        counts.beyond,
        counts.streams,
        counts.frames,
        counts.errors,
        counts.cut,
        counts.encodings,
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn differential_against_tokio_util() {
    run_cases("tokio-util", 5000, tokio_case);
}

/// Settings, input, expected frames.
type Example = (TokioConfig, &'static [u8], Vec<&'static [u8]>);

/// tokio-util's documented examples 1–7 and the cases of issue 15, run
/// through the real tokio-util and through ringport.
#[test]
fn tokio_documented_examples_and_issue_cases() {
    let cases: Vec<Example> = vec![
        // Example 1.
        (
            tc(0, 2, 0, None),
            b"\x00\x0BHello world",
            vec![b"Hello world"],
        ),
        // Example 2 (the issue's first case).
        (
            tc(0, 2, 2, Some(0)),
            b"\x00\x0BHello world",
            vec![b"\x00\x0BHello world"],
        ),
        // Example 3.
        (
            tc(0, 2, -2, None),
            b"\x00\x0DHello world",
            vec![b"Hello world"],
        ),
        // Example 4.
        (
            tc(0, 3, 5, Some(0)),
            b"\x00\x00\x0B\xCA\xFEHello world",
            vec![b"\x00\x00\x0B\xCA\xFEHello world"],
        ),
        // Example 5.
        (
            tc(1, 2, 1, Some(3)),
            b"\xCA\x00\x0B\xFEHello world",
            vec![b"\xFEHello world"],
        ),
        // Example 6.
        (
            tc(1, 2, -3, Some(3)),
            b"\xCA\x00\x0F\xFEHello world",
            vec![b"\xFEHello world"],
        ),
        // Example 7.
        (
            tc(0, 3, 0, Some(4)),
            b"\x00\x00\x0B\xFFHello world",
            vec![b"Hello world"],
        ),
        // The issue's smallest case.
        (tc(0, 1, 0, Some(0)), b"\x01\x01", vec![b"\x01", b"\x01"]),
    ];
    for (config, wire, expected) in cases {
        let expected: Vec<Vec<u8>> = expected.iter().map(|e| e.to_vec()).collect();
        for cuts in [vec![], (1..wire.len()).collect::<Vec<_>>()] {
            let reads = split(wire, &cuts);
            let theirs = run_tokio(config.tokio(), &reads);
            let ours = run_ringport(config.ringport(), &reads);
            assert_eq!(theirs.frames, expected, "{config:?}");
            assert_eq!(ours, theirs, "{config:?}");
        }
    }
    // Example 7 one byte short: no frame, a cut frame at the end.
    let c = tc(0, 3, 0, Some(4));
    let reads = [&b"\x00\x00\x0B\xFFHello worl"[..]];
    let ours = run_ringport(c.ringport(), &reads);
    assert_eq!(ours, run_tokio(c.tokio(), &reads));
    assert!(ours.frames.is_empty() && ours.cut_frame);
    // The encoding example.
    let mut t = tc(0, 2, 0, None).tokio();
    let r = tc(0, 2, 0, None).ringport();
    assert_eq!(
        ringport_encode(&r, b"hello world"),
        tokio_encode(&mut t, b"hello world")
    );
    assert_eq!(
        ringport_encode(&r, b"hello world").unwrap(),
        b"\x00\x0bhello world"
    );
}

fn tc(offset: usize, field_len: usize, adjustment: isize, num_skip: Option<usize>) -> TokioConfig {
    TokioConfig {
        offset,
        field_len,
        adjustment,
        num_skip,
        big_endian: true,
        max: 8 * 1024 * 1024,
    }
}

// --------------------------------------------------------------------- Netty

/// `LengthFieldBasedFrameDecoder`'s parameters.
#[derive(Debug, Clone)]
struct NettyConfig {
    big_endian: bool,
    max_frame_length: i32,
    length_field_offset: i32,
    length_field_length: i32,
    length_adjustment: i32,
    initial_bytes_to_strip: i32,
    fail_fast: bool,
}

/// A literal model of Netty 4's `LengthFieldBasedFrameDecoder.decode` (fail
/// fast), fed the whole stream; ringport closes the connection where Netty
/// throws, so the model stops at the first exception.
fn netty_model(c: &NettyConfig, stream: &[u8]) -> Outcome {
    let end = (c.length_field_offset + c.length_field_length) as usize;
    let mut frames = Vec::new();
    let mut at = 0usize;
    let done = |frames, error, cut_frame| Outcome {
        frames,
        error,
        cut_frame,
    };
    loop {
        let readable = stream.len() - at;
        if readable < end {
            return done(frames, None, readable > 0);
        }
        // getUnadjustedFrameLength
        let f = &stream[at + c.length_field_offset as usize..at + end];
        let mut be = [0u8; 8];
        if c.big_endian {
            be[8 - f.len()..].copy_from_slice(f);
        } else {
            for (i, &b) in f.iter().enumerate() {
                be[7 - i] = b;
            }
        }
        let raw = u64::from_be_bytes(be);
        // 1 to 4 bytes: getUnsignedByte/Short/Medium/Int; 8: getLong, signed.
        let mut frame_length = raw as i64;
        if frame_length < 0 {
            return done(frames, Some(Kind::Invalid), false); // failOnNegativeLengthField
        }
        frame_length =
            frame_length.wrapping_add(i64::from(c.length_adjustment.wrapping_add(end as i32)));
        if frame_length < end as i64 {
            return done(frames, Some(Kind::Invalid), false);
        }
        if frame_length > i64::from(c.max_frame_length) {
            return done(frames, Some(Kind::TooLarge), false); // exceededFrameLength
        }
        let frame_length_int = frame_length as usize;
        if readable < frame_length_int {
            return done(frames, None, true);
        }
        if c.initial_bytes_to_strip as usize > frame_length_int {
            return done(frames, Some(Kind::Invalid), false);
        }
        let start = at + c.initial_bytes_to_strip as usize;
        frames.push(stream[start..at + frame_length_int].to_vec());
        at += frame_length_int;
    }
}

/// `LengthFieldPrepender(byteOrder, lengthFieldLength, lengthAdjustment,
/// false).encode`.
fn netty_prepender(
    big_endian: bool,
    length_field_length: i32,
    length_adjustment: i32,
    payload: &[u8],
) -> Result<Vec<u8>, Kind> {
    let length = payload.len() as i64 + i64::from(length_adjustment);
    if length < 0 {
        return Err(Kind::Invalid);
    }
    let fits = match length_field_length {
        1 => length < 256,
        2 => length < 65536,
        3 => length < 16_777_216,
        4 => length <= i64::from(i32::MAX),
        8 => true,
        _ => unreachable!(),
    };
    if !fits {
        return Err(Kind::TooLarge);
    }
    let n = length_field_length as usize;
    let mut out = if big_endian {
        length.to_be_bytes()[8 - n..].to_vec()
    } else {
        length.to_le_bytes()[..n].to_vec()
    };
    out.extend_from_slice(payload);
    Ok(out)
}

impl NettyConfig {
    fn random(rng: &mut Rng) -> Self {
        let length_field_length = [1, 2, 3, 4, 8][rng.below(5)];
        let length_field_offset = if rng.chance(50) {
            0
        } else {
            rng.below(5) as i32
        };
        let end = length_field_offset + length_field_length;
        let length_adjustment = match rng.below(5) {
            0 => 0,
            1 => -end,
            2 => rng.range(-300, 300) as i32,
            _ => rng.range(-8, 8) as i32,
        };
        let initial_bytes_to_strip = match rng.below(4) {
            0 => 0,
            1 => end,
            _ => rng.below(end as usize + 6) as i32,
        };
        let max_frame_length = end
            + match rng.below(4) {
                0 => rng.below(40) as i32,
                1 => rng.below(300) as i32,
                _ => rng.below(70_000) as i32,
            };
        NettyConfig {
            big_endian: rng.chance(60),
            max_frame_length: max_frame_length.max(1),
            length_field_offset,
            length_field_length,
            length_adjustment,
            initial_bytes_to_strip,
            fail_fast: rng.chance(80),
        }
    }

    fn ringport(&self) -> LengthDelimited {
        let c = LengthDelimited::netty(
            self.max_frame_length as usize,
            self.length_field_offset as usize,
            self.length_field_length as usize,
            self.length_adjustment as isize,
            self.initial_bytes_to_strip as usize,
            self.fail_fast,
        );
        if self.big_endian {
            c
        } else {
            c.little_endian()
        }
    }

    fn end(&self) -> usize {
        (self.length_field_offset + self.length_field_length) as usize
    }

    fn put(&self, value: u64, dst: &mut [u8]) {
        let n = dst.len();
        for (i, d) in dst.iter_mut().enumerate() {
            let shift = if self.big_endian {
                8 * (n - 1 - i)
            } else {
                8 * i
            };
            *d = (value >> shift) as u8;
        }
    }

    fn field_max(&self) -> i64 {
        if self.length_field_length == 8 {
            i64::MAX
        } else {
            (1i64 << (8 * self.length_field_length)) - 1
        }
    }

    /// A header announcing `frame_length` (random elsewhere), if the field
    /// can express it.
    fn header(&self, rng: &mut Rng, frame_length: i64) -> Option<Vec<u8>> {
        let end = self.end();
        let value = frame_length - i64::from(self.length_adjustment) - end as i64;
        if value < 0 || value > self.field_max() {
            return None;
        }
        let mut h = rng.bytes(end);
        self.put(value as u64, &mut h[self.length_field_offset as usize..end]);
        Some(h)
    }

    fn stream(&self, rng: &mut Rng) -> Vec<u8> {
        let end = self.end() as i64;
        let strip = i64::from(self.initial_bytes_to_strip);
        let max = i64::from(self.max_frame_length);
        let adj = i64::from(self.length_adjustment);
        let field_max = self.field_max();
        // Valid frame lengths: >= end and strip, <= max, value in the field.
        let lo = end.max(strip).max(adj + end);
        let hi = max.min(field_max.saturating_add(adj + end)).min(100_000);
        let mut s = Vec::new();
        if lo <= hi {
            for _ in 0..rng.below(10) {
                let frame = if rng.chance(10) && (hi <= 3000 || rng.chance(10)) {
                    hi
                } else {
                    rng.range(lo, hi.min(lo + 40))
                };
                let mut f = self.header(rng, frame).expect("valid frame length");
                let body = rng.bytes((frame - end) as usize);
                f.extend(body);
                s.extend(f);
            }
        }
        match rng.below(8) {
            // A cut frame or header.
            0 => {
                let extra = {
                    let n = 1 + rng.below(self.end() + 30);
                    rng.bytes(n)
                };
                s.extend(extra);
            }
            // An oversize frame.
            1 => {
                let over = max + 1 + rng.below(3) as i64;
                s.extend(self.header(rng, over).unwrap_or_default());
            }
            // An adjusted length below the end of the field.
            2 => s.extend(self.header(rng, end - 1).unwrap_or_default()),
            // A frame shorter than the bytes to strip.
            3 => {
                let frame = end.max(adj + end);
                if frame < strip && frame <= max {
                    if let Some(mut f) = self.header(rng, frame) {
                        let body = rng.bytes((frame - end) as usize);
                        f.extend(body);
                        s.extend(f);
                    }
                }
            }
            4 => {
                let extra = {
                    let n = rng.below(40);
                    rng.bytes(n)
                };
                s.extend(extra);
            }
            _ => {}
        }
        s
    }
}

fn netty_case(seed: u64, case: u64, counts: &mut Counts) {
    let mut rng = Rng::new(seed, case ^ 0xA5A5_0000);
    let config = NettyConfig::random(&mut rng);
    counts.configs += 1;
    let strip = config.initial_bytes_to_strip as usize;
    counts.overlapping += u64::from(strip < config.end());
    counts.beyond += u64::from(strip > config.end());
    for _ in 0..3 {
        let stream = config.stream(&mut rng);
        let model = netty_model(&config, &stream);
        for _ in 0..2 {
            let cuts = cuts(&mut rng, stream.len());
            let ours = run_ringport(config.ringport(), &split(&stream, &cuts));
            assert!(
                ours == model,
                "Netty model differs: seed {seed} case {case}\n{config:?}\nstream {}\n\
                 cuts {cuts:?}\nNetty    {model:?}\nringport {ours:?}",
                hex(&stream)
            );
            counts.streams += 1;
            counts.frames += model.frames.len() as u64;
            counts.errors += u64::from(model.error.is_some());
            counts.cut += u64::from(model.cut_frame);
        }
    }
    // Encoding: what ringport encodes decodes back (through the model) to
    // the payload; and where the header is exactly the stripped length
    // field at offset 0, it is what LengthFieldPrepender writes.
    let ours = config.ringport();
    let prepender_case = config.length_field_offset == 0
        && config.initial_bytes_to_strip == config.length_field_length;
    for _ in 0..4 {
        let len = match rng.below(3) {
            0 => rng.below(20),
            1 => ours.max_frame().saturating_sub(rng.below(3)),
            _ => ours.max_frame() + 1,
        };
        if len > 200_000 {
            continue;
        }
        let payload = rng.bytes(len);
        let mine = ringport_encode(&ours, &payload);
        // (With fewer bytes stripped than the header, the payload carries
        // the rest of the header: random payloads do not.)
        let strips_header = config.initial_bytes_to_strip as usize >= config.end();
        if let (Ok(wire), true) = (&mine, strips_header) {
            let back = netty_model(&config, wire);
            assert_eq!(
                back,
                Outcome {
                    frames: vec![payload.clone()],
                    error: None,
                    cut_frame: false
                },
                "seed {seed} case {case} {config:?}: encoding of {len} bytes does not decode back"
            );
        }
        if prepender_case {
            let theirs = netty_prepender(
                config.big_endian,
                config.length_field_length,
                -config.length_adjustment,
                &payload,
            );
            let frame_fits = (len + config.end()) as i64 <= i64::from(config.max_frame_length);
            if frame_fits {
                assert_eq!(
                    mine, theirs,
                    "seed {seed} case {case} {config:?}: LengthFieldPrepender differs at {len} bytes"
                );
            } else {
                assert_eq!(mine, Err(Kind::TooLarge));
            }
        }
        counts.encodings += 1;
    }
}

#[test]
fn differential_against_netty_model() {
    run_cases("Netty model", 5000, netty_case);
}

/// Netty's javadoc examples, through the model and through ringport.
#[test]
fn netty_documented_examples() {
    let hw = b"HELLO, WORLD";
    let nc = |offset, len, adj, strip| NettyConfig {
        big_endian: true,
        max_frame_length: 1024,
        length_field_offset: offset,
        length_field_length: len,
        length_adjustment: adj,
        initial_bytes_to_strip: strip,
        fail_fast: true,
    };
    let cases: Vec<(NettyConfig, Vec<u8>, Vec<u8>)> = vec![
        (
            nc(0, 2, 0, 0),
            [&b"\x00\x0C"[..], hw].concat(),
            [&b"\x00\x0C"[..], hw].concat(),
        ),
        (nc(0, 2, 0, 2), [&b"\x00\x0C"[..], hw].concat(), hw.to_vec()),
        (
            nc(0, 2, -2, 0),
            [&b"\x00\x0E"[..], hw].concat(),
            [&b"\x00\x0E"[..], hw].concat(),
        ),
        (
            nc(2, 3, 0, 0),
            [&b"\xCA\xFE\x00\x00\x0C"[..], hw].concat(),
            [&b"\xCA\xFE\x00\x00\x0C"[..], hw].concat(),
        ),
        (
            nc(0, 3, 2, 0),
            [&b"\x00\x00\x0C\xCA\xFE"[..], hw].concat(),
            [&b"\x00\x00\x0C\xCA\xFE"[..], hw].concat(),
        ),
        (
            nc(1, 2, 1, 3),
            [&b"\xCA\x00\x0C\xFE"[..], hw].concat(),
            [&b"\xFE"[..], hw].concat(),
        ),
        (
            nc(1, 2, -3, 3),
            [&b"\xCA\x00\x10\xFE"[..], hw].concat(),
            [&b"\xFE"[..], hw].concat(),
        ),
    ];
    for (config, wire, expected) in cases {
        let model = netty_model(&config, &wire);
        assert_eq!(model.frames, vec![expected], "{config:?}");
        for cuts in [vec![], (1..wire.len()).collect::<Vec<_>>()] {
            let ours = run_ringport(config.ringport(), &split(&wire, &cuts));
            assert_eq!(ours, model, "{config:?}");
        }
    }
}

/// Sanity check of the harness: a trivially wrong codec is caught.
#[test]
fn harness_catches_a_difference() {
    let config = tc(0, 1, 0, Some(0));
    let reads = [&b"\x01\x01"[..]];
    let theirs = run_tokio(config.tokio(), &reads);
    // Netty's reading of the same settings (the old ringport rule).
    let netty = run_ringport(LengthDelimited::netty(1024, 0, 1, 0, 0, true), &reads);
    assert_ne!(theirs, netty);
    assert_eq!(netty.frames, vec![b"\x01\x01".to_vec()]);
    let _ = LengthDelimited::new().max_frame();
}
