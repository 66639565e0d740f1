//! Property tests of the codecs and the framer: whatever the frame sizes,
//! the settings and the points where the stream is cut into reads, the
//! payloads come out as they went in; oversize headers are refused before
//! anything is allocated for them; and no input makes the framer panic or
//! hold more than one frame's worth of memory.
//!
//! In the crate (not under `tests/`) because the direct-receive properties
//! drive the framer's crate-private receive-target API.

use crate::codec::{
    Codec, CodecError, Endianness, Framer, LengthDelimited, Lines, MAX_HEADER_LEN, RawBytes,
};
use proptest::prelude::*;

/// A `LengthDelimited` configuration, kept as plain numbers so the test can
/// build frames independently of the codec (an oracle), under tokio-util's
/// rules or Netty's.
#[derive(Debug, Clone)]
struct LdSettings {
    netty: bool,
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    endianness: Endianness,
    max: usize,
}

impl LdSettings {
    fn codec(&self) -> LengthDelimited {
        let base = if self.netty {
            // The builder methods keep the rule set.
            LengthDelimited::netty(1 << 20, 0, 4, 0, 4, true)
        } else {
            LengthDelimited::new()
        };
        let mut c = base
            .length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .endianness(self.endianness)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            c = c.num_skip(s);
        }
        c
    }

    fn header_end(&self) -> usize {
        self.offset + self.field_len
    }

    fn skip(&self) -> usize {
        self.num_skip.unwrap_or(self.header_end())
    }

    /// Most bytes a partial frame can hold.
    fn bound(&self) -> usize {
        self.skip() + self.header_end() + self.codec().max_frame()
    }

    /// The wire bytes of `bodies` framed one after the other, and the
    /// payloads the decoder must deliver for them.
    fn frames(&self, bodies: &[Vec<u8>]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for body in bodies {
            let (w, p) = self.frame(body);
            wire.extend(w);
            expected.push(p);
        }
        (wire, expected)
    }

    /// Build one frame on the wire from `body` (the tail of the delivered
    /// payload) following the documented rules, and return (wire bytes,
    /// expected delivered payload).
    fn frame(&self, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.netty {
            self.frame_netty(body)
        } else {
            self.frame_tokio(body)
        }
    }

    fn field_bytes(&self, value: u64) -> Vec<u8> {
        assert!(self.field_len == 8 || value < 1u64 << (8 * self.field_len));
        match self.endianness {
            Endianness::Big => value.to_be_bytes()[8 - self.field_len..].to_vec(),
            Endianness::Little => value.to_le_bytes()[..self.field_len].to_vec(),
        }
    }

    /// tokio-util: the frame is `num_skip + n` bytes, `n = value + adj`,
    /// and the payload is the `n` bytes after `num_skip`. Frames here hold
    /// their whole head (`n >= end - num_skip`).
    fn frame_tokio(&self, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (he, s, adj) = (
            self.header_end() as isize,
            self.skip() as isize,
            self.adjustment,
        );
        let n = (0.max(he - s).max(adj) as usize) + body.len();
        let total = self.skip() + n;
        let mut wire: Vec<u8> = (0..total - body.len())
            .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
            .collect();
        wire.extend_from_slice(body);
        let value = (n as isize - adj) as u64;
        wire[self.offset..self.header_end()].copy_from_slice(&self.field_bytes(value));
        let expected = wire[self.skip()..].to_vec();
        (wire, expected)
    }

    /// Netty: the frame is `end + value + adj` bytes, the first `strip`
    /// dropped.
    fn frame_netty(&self, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (he, s, adj) = (
            self.header_end() as isize,
            self.skip() as isize,
            self.adjustment,
        );
        // Smallest delivered length for which the frame contains its header
        // and the length field is not negative.
        let lo = 0.max(he - s).max(he + adj - s) as usize;
        let total = self.skip() + lo + body.len();
        let mut wire: Vec<u8> = (0..total - body.len())
            .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
            .collect();
        wire.extend_from_slice(body);
        let value = (total as isize - he - adj) as u64;
        wire[self.offset..self.header_end()].copy_from_slice(&self.field_bytes(value));
        let expected = wire[self.skip()..].to_vec();
        (wire, expected)
    }
}

fn endianness() -> impl Strategy<Value = Endianness> {
    prop_oneof![Just(Endianness::Big), Just(Endianness::Little)]
}

/// Settings with room for payloads of up to a few hundred bytes.
fn ld_settings() -> impl Strategy<Value = LdSettings> {
    (
        any::<bool>(),
        0usize..4,
        1usize..=8,
        -6isize..=6,
        any::<bool>(),
        0usize..14,
        endianness(),
    )
        .prop_map(
            |(netty, offset, field_len, adjustment, custom_skip, skip, endianness)| LdSettings {
                netty,
                offset,
                field_len,
                adjustment,
                num_skip: (custom_skip || netty).then_some(skip % (offset + field_len + 4)),
                endianness,
                max: 1024,
            },
        )
}

/// Cut `data` into reads whose sizes cycle through `sizes` (one read if
/// `sizes` is empty).
fn split<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut pos = 0;
    for &n in sizes.iter().cycle() {
        if pos >= data.len() {
            break;
        }
        let end = (pos + n).min(data.len());
        out.push(&data[pos..end]);
        pos = end;
    }
    out
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![1]),
        prop::collection::vec(1usize..40, 1..20),
        prop::collection::vec(1usize..2000, 1..5),
    ]
}

/// Outcome of feeding a stream: the payloads and, if it failed, the error.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<std::mem::Discriminant<CodecError>>,
}

/// Feed `reads` in turn, checking after each read that the framer holds at
/// most `bound` bytes (buffered and allocated).
fn run<C: Codec>(codec: C, reads: &[&[u8]], bound: usize) -> Outcome {
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
                error: Some(std::mem::discriminant(&e)),
            };
        }
        assert!(
            framer.buffered() <= bound,
            "buffered {} > {bound}",
            framer.buffered()
        );
        assert!(
            framer.heap_bytes() <= 2 * bound + 256,
            "heap {} for bound {bound}",
            framer.heap_bytes()
        );
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Like [`run`] over the stream `reads` make up, but as the server's direct
/// receive does: whenever a located frame misses at least `direct_min`
/// bytes, the next bytes (at most one read's worth, at most what
/// `recv_target` offers) are written straight into the framer's target and
/// committed, and the frame is delivered by an empty `feed_shared`. With
/// `bulk` > 0, bytes between frames are received likewise into a fresh
/// target of that size (the server's bulk mode: a frame's end and what
/// follows it may share one).
fn run_direct<C: Codec>(
    codec: C,
    reads: &[&[u8]],
    bound: usize,
    direct_min: usize,
    bulk: usize,
) -> Outcome {
    let mut framer = Framer::new(codec);
    let mut frames = Vec::new();
    for read in reads {
        let mut read: &[u8] = read;
        while !read.is_empty() {
            let direct = framer.missing().is_some_and(|m| m >= direct_min.max(1));
            let between = bulk > 0 && framer.buffered() == 0;
            let r = if direct || between {
                let target = if direct {
                    framer.recv_target().expect("a located frame has a target")
                } else {
                    framer.recv_target_between(bulk).expect("nothing buffered")
                };
                assert!(!target.is_empty());
                let n = target.len().min(read.len());
                for (slot, &b) in target.iter_mut().zip(&read[..n]) {
                    slot.write(b);
                }
                // SAFETY: the first `n` bytes of the target were written
                // just above.
                unsafe { framer.commit_received(n) };
                read = &read[n..];
                framer.feed_shared(&[], |p, _| {
                    frames.push(p.to_vec());
                    true
                })
            } else {
                let all = std::mem::take(&mut read);
                framer.feed_shared(all, |p, _| {
                    frames.push(p.to_vec());
                    true
                })
            };
            if let Err(e) = r {
                return Outcome {
                    frames,
                    error: Some(std::mem::discriminant(&e)),
                };
            }
            assert!(framer.buffered() <= bound);
            assert!(
                framer.heap_bytes() <= 2 * bound + 256,
                "heap {} for bound {bound}",
                framer.heap_bytes()
            );
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

proptest! {
    /// Receiving the rest of located frames straight into the framer's
    /// buffer (`recv_target` + `commit_received`) gives the same frames,
    /// byte for byte, as `feed`, whatever the cuts and threshold.
    #[test]
    fn direct_receive_agrees_with_feed(
        settings in ld_settings(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8),
        sizes in chunk_sizes(),
        direct_min in prop_oneof![Just(1usize), 1usize..100],
        bulk in prop_oneof![Just(0usize), 1usize..300],
    ) {
        let mut wire = Vec::new();
        for body in &bodies {
            wire.extend(settings.frame(body).0);
        }
        let reads = split(&wire, &sizes);
        let bound = settings.bound();
        let expected = run(settings.codec(), &reads, bound);
        let out = run_direct(settings.codec(), &reads, bound, direct_min, bulk);
        prop_assert_eq!(out, expected);
    }

    /// The same with the default wire format and frames large enough for
    /// the target to grow several times.
    #[test]
    fn direct_receive_of_large_frames_agrees_with_feed(
        lens in prop::collection::vec(0usize..20_000, 1..5),
        sizes in prop_oneof![
            Just(vec![]),
            prop::collection::vec(1usize..5000, 1..6),
        ],
        direct_min in 1usize..4000,
        bulk in prop_oneof![Just(0usize), 1usize..25_000],
    ) {
        let codec = LengthDelimited::new();
        let mut wire = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            wire.extend_from_slice(&(len as u32).to_be_bytes());
            wire.extend((0..len).map(|k| (k * 31 + i) as u8));
        }
        let reads = split(&wire, &sizes);
        let bound = 4 + 20_000;
        let expected = run(codec.clone(), &reads, bound);
        prop_assert_eq!(expected.error, None);
        let out = run_direct(codec, &reads, bound, direct_min, bulk);
        prop_assert_eq!(out, expected);
    }

    /// Default wire format: any payloads, any cuts.
    #[test]
    fn default_round_trip(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..12),
        sizes in chunk_sizes(),
    ) {
        let codec = LengthDelimited::new();
        let mut wire = Vec::new();
        for p in &payloads {
            let mut hdr = [0u8; MAX_HEADER_LEN];
            let n = codec.encode_header(p.len(), &mut hdr).unwrap();
            prop_assert_eq!(&hdr[..n], &(p.len() as u32).to_be_bytes()[..]);
            wire.extend_from_slice(&hdr[..n]);
            wire.extend_from_slice(p);
        }
        let out = run(codec, &split(&wire, &sizes), 4 + 600);
        prop_assert_eq!(out, Outcome { frames: payloads, error: None });
    }

    /// Random settings: frames built by an independent oracle decode to the
    /// expected payloads, whatever the cuts; re-encoding each delivered
    /// payload and decoding again gives it back (forwarding is lossless).
    #[test]
    fn length_delimited_settings_round_trip(
        settings in ld_settings(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8),
        sizes in chunk_sizes(),
    ) {
        let (wire, expected) = settings.frames(&bodies);
        let bound = settings.bound();
        let out = run(settings.codec(), &split(&wire, &sizes), bound);
        prop_assert_eq!(&out.frames, &expected);
        prop_assert_eq!(out.error, None);

        // Re-encode what was delivered (tokio-util's encoder writes only
        // the length field, so this round trip holds for its rules when the
        // field is at offset 0 and the header is stripped).
        let codec = settings.codec();
        if !settings.netty && (settings.offset != 0 || settings.skip() != settings.header_end()) {
            return Ok(());
        }
        let mut again = Vec::new();
        for p in &expected {
            let mut hdr = [0u8; MAX_HEADER_LEN];
            let n = codec.encode_header(p.len(), &mut hdr).unwrap();
            again.extend_from_slice(&hdr[..n]);
            again.extend_from_slice(p);
        }
        let out = run(codec, &split(&again, &sizes), bound);
        prop_assert_eq!(out.frames, expected);
    }

    /// Taking one frame at a time with `feed_until` (as the client does)
    /// gives the same frames as `feed`.
    #[test]
    fn feed_until_one_at_a_time(
        settings in ld_settings(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..8),
        sizes in chunk_sizes(),
    ) {
        let (wire, expected) = settings.frames(&bodies);
        let mut framer = Framer::new(settings.codec());
        let mut got = Vec::new();
        for read in split(&wire, &sizes) {
            let mut pos = 0;
            while pos < read.len() {
                let before = got.len();
                let n = framer.feed_until(&read[pos..], |p| { got.push(p.to_vec()); false }).unwrap();
                prop_assert!(got.len() - before <= 1);
                prop_assert!(n > 0 || got.len() > before);
                pos += n;
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(framer.buffered(), 0);
    }

    /// A header announcing more than the maximum fails as soon as the header
    /// is complete (no payload byte needed), having allocated nothing for
    /// the payload. tokio-util rules: the raw field is over the maximum;
    /// Netty rules: the whole frame is.
    #[test]
    fn oversize_header_fails_early_without_allocating(
        settings in ld_settings(),
        max in 0usize..100_000,
        excess in 1u64..1_000_000,
        sizes in chunk_sizes(),
    ) {
        let settings = LdSettings { max, field_len: settings.field_len.max(4), ..settings };
        let (value, expected) = if settings.netty {
            let frame = (max as u64 + excess) as i128;
            let value = frame - settings.adjustment as i128 - settings.header_end() as i128;
            (value, CodecError::FrameTooLarge { len: frame as u64, max })
        } else {
            let value = max as u64 + excess;
            (value as i128, CodecError::FrameTooLarge { len: value, max })
        };
        prop_assume!(value >= 0 && value <= u32::MAX as i128);
        let head = if settings.netty {
            settings.header_end()
        } else {
            settings.header_end().max(settings.skip())
        };
        let mut header = vec![0u8; head];
        header[settings.offset..settings.header_end()]
            .copy_from_slice(&settings.field_bytes(value as u64));
        let mut framer = Framer::new(settings.codec());
        let reads = split(&header, &sizes);
        let last = reads.len() - 1;
        for (i, read) in reads.into_iter().enumerate() {
            let r = framer.feed(read, |_| true);
            prop_assert!(framer.heap_bytes() <= 256, "heap {}", framer.heap_bytes());
            if i < last {
                prop_assert!(r.is_ok());
            } else {
                prop_assert_eq!(r, Err(expected.clone()));
            }
        }
    }

    /// Lines: any content without '\n' (and not ending in '\r'), ended by
    /// "\n" or "\r\n", comes back intact whatever the cuts.
    #[test]
    fn lines_round_trip(
        lines in prop::collection::vec(
            (prop::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..300), any::<bool>()),
            0..10),
        sizes in chunk_sizes(),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (mut line, crlf) in lines {
            // A line ending in '\r' is ambiguous on the wire ("\r\n" reads
            // as the line ending): strip every trailing '\r'.
            while line.last() == Some(&b'\r') {
                line.pop();
            }
            wire.extend_from_slice(&line);
            wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            expected.push(line);
        }
        let out = run(Lines::new().max_line_length(300), &split(&wire, &sizes), 301);
        prop_assert_eq!(out, Outcome { frames: expected, error: None });
    }

    /// A too-long line fails whatever the cuts, with bounded memory.
    #[test]
    fn too_long_line_fails(
        max in 0usize..500,
        extra in 1usize..500,
        sizes in chunk_sizes(),
    ) {
        let wire = vec![b'x'; max + extra + 1];
        let out = run(Lines::new().max_line_length(max), &split(&wire, &sizes), max + 1);
        prop_assert_eq!(out.error, Some(std::mem::discriminant(&CodecError::FrameTooLarge { len: 0, max: 0 })));
        prop_assert!(out.frames.is_empty());
    }

    /// Garbage into length-delimited framers with random settings: never a
    /// panic, memory within one frame, and the outcome (frames and error)
    /// does not depend on how the stream was cut.
    #[test]
    fn length_delimited_garbage(
        settings in ld_settings(),
        max in 0usize..300,
        garbage in prop::collection::vec(any::<u8>(), 0..800),
        small_values in any::<bool>(),
        sizes in chunk_sizes(),
    ) {
        let settings = LdSettings { max, ..settings };
        // Mostly-small bytes make valid small frames likely.
        let garbage: Vec<u8> = if small_values {
            garbage.iter().map(|b| b % 8).collect()
        } else {
            garbage
        };
        let bound = settings.bound();
        let whole = run(settings.codec(), &[&garbage], bound);
        let cut = run(settings.codec(), &split(&garbage, &sizes), bound);
        prop_assert_eq!(whole, cut);
    }

    /// Same for lines.
    #[test]
    fn lines_garbage(
        max in 0usize..200,
        garbage in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..800),
        sizes in chunk_sizes(),
    ) {
        let whole = run(Lines::new().max_line_length(max), &[&garbage], max + 1);
        let cut = run(Lines::new().max_line_length(max), &split(&garbage, &sizes), max + 1);
        prop_assert_eq!(whole, cut);
    }

    /// Raw bytes: every byte is delivered once, in order, in non-empty
    /// messages of at most `max` bytes, and nothing is ever buffered.
    #[test]
    fn raw_bytes_deliver_everything(
        max in 1usize..100,
        data in prop::collection::vec(any::<u8>(), 0..800),
        sizes in chunk_sizes(),
    ) {
        let out = run(RawBytes::new().max_frame_length(max), &split(&data, &sizes), 0);
        prop_assert_eq!(out.error, None);
        prop_assert!(out.frames.iter().all(|f| !f.is_empty() && f.len() <= max));
        prop_assert_eq!(out.frames.concat(), data);
    }
}
