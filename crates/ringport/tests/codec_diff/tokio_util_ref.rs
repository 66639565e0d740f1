//! The tokio-util differential: `LengthDelimited` against the real
//! `tokio_util::codec::LengthDelimitedCodec` (0.7, a dev-dependency), on
//! random builder settings, streams and read boundaries, plus tokio-util's
//! documented examples.

use bytes::BytesMut;
use ringport::codec::LengthDelimited;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::harness::{
    Counts, Kind, Outcome, Rng, cuts, hex, ringport_encode, run_cases, run_ringport, split,
};

/// Builder settings, as plain numbers.
#[derive(Debug, Clone)]
pub(crate) struct TokioConfig {
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

    pub(crate) fn tokio(&self) -> LengthDelimitedCodec {
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

pub(crate) fn run_tokio(codec: LengthDelimitedCodec, reads: &[&[u8]]) -> Outcome {
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

pub(crate) fn tc(
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
) -> TokioConfig {
    TokioConfig {
        offset,
        field_len,
        adjustment,
        num_skip,
        big_endian: true,
        max: 8 * 1024 * 1024,
    }
}
