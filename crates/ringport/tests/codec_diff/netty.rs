//! The Netty differential: `LengthDelimited::netty` against a literal model
//! of Netty 4's `LengthFieldBasedFrameDecoder.decode` and
//! `LengthFieldPrepender.encode` (no Rust implementation exists), on random
//! parameters, streams and read boundaries, plus Netty's javadoc examples.

use ringport::codec::{Codec, LengthDelimited};

use crate::harness::{
    Counts, Kind, Outcome, Rng, cuts, hex, ringport_encode, run_cases, run_ringport, split,
};

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
