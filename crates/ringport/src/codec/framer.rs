//! Reassembly of frames across receive buffers.
//!
//! The server hands every received buffer of a connection to that
//! connection's [`Framer`]. Most buffers hold whole frames, so the common
//! path must be free: frames lying wholly inside the buffer are passed on as
//! sub-slices of it, without copying and without touching the heap. Only the
//! frame that straddles the end of a buffer is copied into a per-connection
//! reassembly buffer, which grows as its bytes arrive (never to the size the
//! peer announces, which a hostile peer controls) and is released after a
//! large frame so idle connections cost no memory.

use bytes::Bytes;

use super::{Codec, CodecError, Decode, MAX_HEADER_LEN};

/// A reassembly buffer whose capacity exceeds this is freed once its frame
/// has been delivered, so that a single large message does not pin memory
/// for the rest of the connection's life.
const RELEASE_ABOVE: usize = 64 * 1024;

/// Smallest allocation made for a partial frame: avoids a string of tiny
/// reallocations while a header trickles in.
const MIN_CAPACITY: usize = 256;

/// When the codec cannot say how many bytes it needs (`NeedMore` without a
/// hint) while a partial frame is buffered, at least this many new bytes are
/// appended before asking again (or as many as are buffered, whichever is
/// more, so that the number of attempts per frame stays logarithmic).
const MIN_SCAN_STEP: usize = 4096;

/// Where a located frame lies in the reassembly buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    skip: usize,
    payload: usize,
    total: usize,
}

/// Cuts a byte stream into frames with a [`Codec`]; one per connection.
///
/// It is sans-I/O: the caller feeds bytes as they are received and gets
/// whole payloads back through a callback, in order.
#[derive(Debug, Clone)]
pub struct Framer<C: Codec> {
    codec: C,
    /// Bytes of the frame in progress; the frame starts at index 0.
    buf: Vec<u8>,
    /// The frame in `buf`, once the codec has located it.
    layout: Option<Layout>,
    /// The codec's `at_least` from its last `NeedMore`.
    hint: Option<usize>,
    /// `buf` holds bytes left after a frame that ended inside them, which
    /// the codec has not looked at yet. Only a codec whose frames can be
    /// shorter than the header it reads (tokio-util's rules with `num_skip`
    /// below the end of the length field) leaves such bytes.
    fresh: bool,
}

/// A frame cut short: what [`Framer::partial`] reports, e.g. when the
/// stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Bytes of the frame received (and buffered) so far.
    pub have: u64,
    /// Bytes still missing to complete it, when the frame has been located
    /// (its header was complete); `None` while the codec cannot yet say how
    /// long the frame is (a header still incomplete, a line without its end).
    pub missing: Option<u64>,
}

impl<C: Codec> Framer<C> {
    /// A framer with nothing buffered. Allocates nothing.
    pub fn new(codec: C) -> Self {
        Framer {
            codec,
            buf: Vec::new(),
            layout: None,
            hint: None,
            fresh: false,
        }
    }

    /// The codec, e.g. to encode replies with the same settings.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Feed received bytes. Calls `on_frame(payload)` for every complete
    /// frame, in order.
    ///
    /// If `on_frame` returns false, stop: the rest of `data` is discarded
    /// (the connection is being closed). Complete frames lying wholly inside
    /// `data` are passed as sub-slices of `data` (zero copy); only a frame
    /// that spans calls is copied into the internal reassembly buffer.
    ///
    /// On error the connection must be closed: the framer's state is then
    /// unspecified (but using it further never panics).
    pub fn feed(
        &mut self,
        data: &[u8],
        on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), CodecError> {
        self.feed_until(data, on_frame).map(|_| ())
    }

    /// Like [`feed`](Self::feed), but when `on_frame` returns false the
    /// bytes after that frame are left unconsumed instead of discarded, and
    /// the number of bytes of `data` consumed is returned (all of them
    /// unless `on_frame` stopped). The unconsumed bytes are to be fed again
    /// later: this is how a blocking client takes one frame at a time out of
    /// a read that returned several.
    pub fn feed_until(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, CodecError> {
        self.feed_shared(data, |payload, _| on_frame(payload))
    }

    /// Like [`feed_until`](Self::feed_until), and for a large frame that
    /// had to be reassembled (one whose buffer would be freed afterwards
    /// anyway) also hands over the payload as [`Bytes`] that own the
    /// reassembly buffer: the caller can keep or forward it (e.g. queue it
    /// for sending by reference) without copying. The slice and the `Bytes`
    /// are then the same bytes.
    pub fn feed_shared(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8], Option<&Bytes>) -> bool,
    ) -> Result<usize, CodecError> {
        let mut pos = 0;

        // 1. Complete the frame in progress, copying only its own bytes.
        while !self.buf.is_empty() {
            if let Some(layout) = self.layout {
                if self.buf.len() < layout.total {
                    let take = (layout.total - self.buf.len()).min(data.len() - pos);
                    self.append(&data[pos..pos + take], layout.total);
                    pos += take;
                    if self.buf.len() < layout.total {
                        return Ok(pos);
                    }
                }
                self.layout = None;
                if !self.deliver_buffered(layout, &mut on_frame) {
                    return Ok(pos);
                }
                // Bytes left after the frame (if any) are decoded next.
                continue;
            }
            // Not located yet: give the codec more bytes, as many as it
            // asked for, else a geometrically growing step (none if it has
            // not seen what is buffered yet).
            let had = self.buf.len();
            let take = if self.fresh {
                0
            } else {
                if pos == data.len() {
                    return Ok(pos);
                }
                let want = match self.hint {
                    Some(at_least) if at_least > had => at_least - had,
                    // Without a hint, no frame can start further than the
                    // search limit: one byte past it is enough to fail.
                    _ => had
                        .max(MIN_SCAN_STEP)
                        .min((self.search_limit() + 1).saturating_sub(had))
                        .max(1),
                };
                want.min(data.len() - pos)
            };
            self.fresh = false;
            self.append(&data[pos..pos + take], self.search_limit());
            match self.codec.decode(&self.buf)? {
                Decode::NeedMore { at_least } => {
                    pos += take;
                    self.need_more(at_least, self.buf.len())?;
                }
                Decode::Frame {
                    skip,
                    payload,
                    trailer,
                } => {
                    self.hint = None;
                    let layout = self.check(skip, payload, trailer)?;
                    // Keep what the frame needs, and what was held before
                    // (a frame may end inside it); bytes just appended past
                    // the frame's end go back to the zero-copy path.
                    let keep = layout.total.max(had).min(self.buf.len());
                    self.buf.truncate(keep);
                    pos += keep - had;
                    self.layout = Some(layout);
                }
            }
        }

        // 2. Frames lying wholly inside `data`: zero copy, no allocation.
        while pos < data.len() {
            let rest = &data[pos..];
            match self.codec.decode(rest)? {
                Decode::Frame {
                    skip,
                    payload,
                    trailer,
                } => {
                    let layout = self.check(skip, payload, trailer)?;
                    if layout.total > rest.len() {
                        // Spans into later reads: start reassembling.
                        self.append(rest, layout.total);
                        self.layout = Some(layout);
                        return Ok(data.len());
                    }
                    self.codec.frame_consumed();
                    pos += layout.total;
                    if !on_frame(&rest[layout.skip..layout.skip + layout.payload], None) {
                        return Ok(pos);
                    }
                }
                Decode::NeedMore { at_least } => {
                    self.need_more(at_least, rest.len())?;
                    self.append(rest, self.search_limit());
                    return Ok(data.len());
                }
            }
        }
        Ok(pos)
    }

    /// Bytes currently held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes held (capacity of the reassembly buffer), for memory
    /// accounting. The buffer grows with the bytes that actually arrived
    /// (at most twice what it holds, or a small minimum), never to the
    /// length a header announces.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// The frame in progress, if any bytes of one are buffered: how many
    /// bytes of it arrived, and how many are missing when the frame's
    /// length is known. `None` when nothing is buffered (the stream is
    /// between frames).
    ///
    /// When the peer closes its side, `Some` means the stream ended inside
    /// a frame (tokio-util's `decode_eof` reports "bytes remaining on
    /// stream" in exactly that case).
    pub fn partial(&self) -> Option<Partial> {
        if self.buf.is_empty() {
            return None;
        }
        let have = self.buf.len();
        Some(Partial {
            have: have as u64,
            missing: self.layout.map(|l| l.total.saturating_sub(have) as u64),
        })
    }

    /// Validate a frame located by the codec. The codec is trusted to
    /// enforce its own limits, but a user codec with a bug must not make the
    /// framer overflow, loop forever on frames that consume nothing, or
    /// reassemble more than its declared maximum.
    fn check(&self, skip: usize, payload: usize, trailer: usize) -> Result<Layout, CodecError> {
        let max = self.codec.max_frame();
        if payload > max {
            return Err(CodecError::FrameTooLarge {
                len: payload as u64,
                max,
            });
        }
        let total = skip
            .checked_add(payload)
            .and_then(|n| n.checked_add(trailer))
            .ok_or(CodecError::FrameTooLarge { len: u64::MAX, max })?;
        if total == 0 {
            return Err(CodecError::InvalidHeader(
                "codec located a frame of zero bytes",
            ));
        }
        Ok(Layout {
            skip,
            payload,
            total,
        })
    }

    /// Record a `NeedMore`. A codec that gives no hint and still cannot
    /// locate a frame in more bytes than a maximal payload plus generous
    /// header and trailer room is treated as facing an oversize frame, so
    /// that no codec can make a connection buffer without bound.
    fn need_more(&mut self, at_least: Option<usize>, have: usize) -> Result<(), CodecError> {
        self.hint = at_least;
        if at_least.is_none() && have > self.search_limit() {
            return Err(CodecError::FrameTooLarge {
                len: have as u64,
                max: self.codec.max_frame(),
            });
        }
        Ok(())
    }

    fn search_limit(&self) -> usize {
        self.codec.max_frame().saturating_add(2 * MAX_HEADER_LEN)
    }

    /// Append to the reassembly buffer, growing it geometrically with the
    /// bytes that arrived: to twice what it will hold (amortised O(1) per
    /// byte), at least [`MIN_CAPACITY`], and never past `cap`, the most this
    /// frame can need. Never by the length a header announces: a peer that
    /// announces 16 MiB and sends 100 bytes costs [`MIN_CAPACITY`].
    fn append(&mut self, bytes: &[u8], cap: usize) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = need.saturating_mul(2).max(MIN_CAPACITY).min(cap).max(need);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Deliver the complete frame at the start of the reassembly buffer and
    /// remove it, freeing the buffer if it grew large.
    fn deliver_buffered(
        &mut self,
        layout: Layout,
        on_frame: &mut impl FnMut(&[u8], Option<&Bytes>) -> bool,
    ) -> bool {
        self.codec.frame_consumed();
        let payload = layout.skip..layout.skip + layout.payload;
        let large = self.buf.capacity() > RELEASE_ABOVE;
        if large && self.buf.len() == layout.total {
            // Freed after this frame anyway: hand the buffer itself over.
            let shared = Bytes::from(std::mem::take(&mut self.buf)).slice(payload);
            return on_frame(&shared, Some(&shared));
        }
        let go_on = on_frame(&self.buf[payload], None);
        if self.buf.len() == layout.total {
            self.buf.clear();
        } else {
            self.buf.drain(..layout.total);
            self.fresh = true;
        }
        if large {
            self.buf = self.buf.as_slice().to_vec();
        }
        go_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{LengthDelimited, Lines, RawBytes};

    fn ld_frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Feed `chunks` in turn, collecting payloads.
    fn collect<C: Codec>(
        framer: &mut Framer<C>,
        chunks: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, CodecError> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.feed(chunk, |p| {
                out.push(p.to_vec());
                true
            })?;
        }
        Ok(out)
    }

    #[test]
    fn whole_frames_are_zero_copy_and_allocate_nothing() {
        let mut data = ld_frame(b"one");
        data.extend(ld_frame(b""));
        data.extend(ld_frame(b"three"));
        let mut framer = Framer::new(LengthDelimited::new());
        let range = data.as_ptr_range();
        let mut seen = Vec::new();
        framer
            .feed(&data, |p| {
                // Every payload is a view into `data` itself.
                assert!(range.start <= p.as_ptr() && p.as_ptr() <= range.end);
                seen.push(p.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.heap_bytes(), 0);
    }

    #[test]
    fn every_split_point_of_several_frames() {
        let payloads: Vec<Vec<u8>> = vec![b"alpha".to_vec(), vec![], vec![9; 300], b"z".to_vec()];
        let wire: Vec<u8> = payloads.iter().flat_map(|p| ld_frame(p)).collect();
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut framer = Framer::new(LengthDelimited::new());
                let got = collect(&mut framer, &[&wire[..a], &wire[a..b], &wire[b..]]).unwrap();
                assert_eq!(got, payloads, "splits {a} {b}");
                assert_eq!(framer.buffered(), 0);
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 7]).collect();
        let wire: Vec<u8> = payloads.iter().flat_map(|p| ld_frame(p)).collect();
        let mut framer = Framer::new(LengthDelimited::new());
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(collect(&mut framer, &chunks).unwrap(), payloads);

        let text = b"a\r\nbb\n\nccc\r\n";
        let mut framer = Framer::new(Lines::new());
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(
            collect(&mut framer, &chunks).unwrap(),
            vec![b"a".to_vec(), b"bb".to_vec(), vec![], b"ccc".to_vec()]
        );
    }

    #[test]
    fn frames_after_a_spanning_frame_are_zero_copy() {
        let first = ld_frame(&[1; 100]);
        let mut second_feed = first[60..].to_vec();
        second_feed.extend(ld_frame(b"next"));
        let mut framer = Framer::new(LengthDelimited::new());
        framer.feed(&first[..60], |_| panic!("incomplete")).unwrap();
        assert_eq!(framer.buffered(), 60);
        let range = second_feed.as_ptr_range();
        let mut n = 0;
        framer
            .feed(&second_feed, |p| {
                n += 1;
                let inside = range.start <= p.as_ptr() && p.as_ptr() < range.end;
                if n == 1 {
                    assert_eq!(p, &[1; 100][..]);
                    assert!(!inside, "spanning frame comes from the buffer");
                } else {
                    assert_eq!(p, b"next");
                    assert!(inside, "later frame is a view into the input");
                }
                true
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn lines_surplus_goes_back_to_zero_copy_path() {
        let mut framer = Framer::new(Lines::new());
        framer.feed(b"par", |_| panic!("no line yet")).unwrap();
        assert_eq!(framer.buffered(), 3);
        let data = b"tial\nsecond\nthird\nrest";
        let range = data.as_ptr_range();
        let mut got = Vec::new();
        framer
            .feed(data, |p| {
                if !got.is_empty() {
                    assert!(range.start <= p.as_ptr() && p.as_ptr() < range.end);
                }
                got.push(p.to_vec());
                true
            })
            .unwrap();
        assert_eq!(
            got,
            vec![b"partial".to_vec(), b"second".to_vec(), b"third".to_vec()]
        );
        assert_eq!(framer.buffered(), 4);
    }

    #[test]
    fn oversize_header_allocates_nothing_for_the_payload() {
        let mut framer = Framer::new(LengthDelimited::new().max_frame_length(1000));
        // Two header bytes, then the rest of an oversize header.
        framer.feed(&[0, 0], |_| true).unwrap();
        assert!(framer.heap_bytes() <= MIN_CAPACITY);
        let err = framer.feed(&[0x10, 0x00, 1, 2, 3], |_| true).unwrap_err();
        assert_eq!(
            err,
            CodecError::FrameTooLarge {
                len: 4096,
                max: 1000
            }
        );
        assert!(framer.heap_bytes() <= MIN_CAPACITY);
    }

    #[test]
    fn large_reassembled_frames_are_handed_over_as_bytes() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = ld_frame(b"small");
        wire.extend_from_slice(&ld_frame(&big));
        wire.extend_from_slice(&ld_frame(b"tail"));
        let mut framer = Framer::new(LengthDelimited::new());
        let mut seen = Vec::new();
        for chunk in wire.chunks(65536) {
            framer
                .feed_shared(chunk, |payload, shared| {
                    if let Some(b) = shared {
                        assert_eq!(b.as_ptr(), payload.as_ptr(), "the same bytes");
                    }
                    seen.push((payload.to_vec(), shared.is_some()));
                    true
                })
                .unwrap();
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], (b"small".to_vec(), false));
        assert_eq!(seen[1], (big, true), "large reassembled frame owned");
        assert_eq!(seen[2], (b"tail".to_vec(), false));
        assert_eq!(framer.heap_bytes(), 0, "the buffer went with the Bytes");
    }

    #[test]
    fn large_frame_grows_with_arrivals_and_is_released() {
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let wire = ld_frame(&payload);
        let mut framer = Framer::new(LengthDelimited::new());
        let mut got = None;
        // The header and the first bytes: nothing near 1 MB is reserved.
        framer.feed(&wire[..100], |_| panic!("incomplete")).unwrap();
        assert!(
            framer.heap_bytes() <= MIN_CAPACITY,
            "{}",
            framer.heap_bytes()
        );
        let mut fed = 100;
        for chunk in wire[100..].chunks(65536) {
            framer
                .feed(chunk, |p| {
                    got = Some(p.to_vec());
                    true
                })
                .unwrap();
            fed += chunk.len();
            // Capacity follows the arrivals (amortised doubling), never
            // more than twice what arrived, never beyond the frame.
            assert!(framer.heap_bytes() <= wire.len());
            assert!(framer.heap_bytes() <= 2 * fed.max(MIN_CAPACITY), "{fed}");
        }
        assert_eq!(got.unwrap(), payload);
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.heap_bytes(), 0, "large buffer released");
    }

    #[test]
    fn small_buffer_is_kept_for_reuse() {
        let wire = ld_frame(&[5; 50]);
        let mut framer = Framer::new(LengthDelimited::new());
        framer.feed(&wire[..10], |_| true).unwrap();
        framer.feed(&wire[10..], |_| true).unwrap();
        assert_eq!(framer.buffered(), 0);
        assert!(framer.heap_bytes() > 0 && framer.heap_bytes() <= RELEASE_ABOVE);
    }

    #[test]
    fn stop_discards_rest_and_feed_until_reports_consumed() {
        let mut wire = ld_frame(b"a");
        wire.extend(ld_frame(b"b"));
        wire.extend(ld_frame(b"c"));
        let mut framer = Framer::new(LengthDelimited::new());
        let mut got = Vec::new();
        framer
            .feed(&wire, |p| {
                got.push(p.to_vec());
                false
            })
            .unwrap();
        assert_eq!(got, vec![b"a".to_vec()]);
        assert_eq!(framer.buffered(), 0);

        // feed_until: take one frame at a time.
        let mut framer = Framer::new(LengthDelimited::new());
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < wire.len() {
            pos += framer
                .feed_until(&wire[pos..], |p| {
                    got.push(p.to_vec());
                    false
                })
                .unwrap();
        }
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);

        // Stopping on a frame completed from the buffer.
        let mut framer = Framer::new(LengthDelimited::new());
        assert_eq!(framer.feed_until(&wire[..3], |_| true).unwrap(), 3);
        let n = framer.feed_until(&wire[3..], |_| false).unwrap();
        assert_eq!(n, 2, "only the rest of the first frame was consumed");
    }

    #[test]
    fn errors_after_earlier_frames() {
        let mut wire = ld_frame(b"ok");
        wire.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let mut framer = Framer::new(LengthDelimited::new());
        let mut got = Vec::new();
        let r = framer.feed(&wire, |p| {
            got.push(p.to_vec());
            true
        });
        assert!(matches!(r, Err(CodecError::FrameTooLarge { .. })));
        assert_eq!(got, vec![b"ok".to_vec()]);
    }

    /// A codec that misbehaves in configurable ways, to show that the
    /// framer protects itself.
    #[derive(Clone)]
    enum Bad {
        EmptyFrames,
        HugeSkip,
        NeverDecides,
        OverMax,
    }

    impl Codec for Bad {
        fn decode(&mut self, _buf: &[u8]) -> Result<Decode, CodecError> {
            Ok(match self {
                Bad::EmptyFrames => Decode::Frame {
                    skip: 0,
                    payload: 0,
                    trailer: 0,
                },
                Bad::HugeSkip => Decode::Frame {
                    skip: usize::MAX,
                    payload: 1,
                    trailer: 0,
                },
                Bad::NeverDecides => Decode::NeedMore { at_least: None },
                Bad::OverMax => Decode::Frame {
                    skip: 0,
                    payload: 11,
                    trailer: 0,
                },
            })
        }
        fn encode_header(
            &self,
            _: usize,
            _: &mut [u8; MAX_HEADER_LEN],
        ) -> Result<usize, CodecError> {
            Ok(0)
        }
        fn max_frame(&self) -> usize {
            10
        }
    }

    #[test]
    fn misbehaving_codecs_cannot_hang_overflow_or_bloat() {
        let mut f = Framer::new(Bad::EmptyFrames);
        assert!(matches!(
            f.feed(b"x", |_| true),
            Err(CodecError::InvalidHeader(_))
        ));
        let mut f = Framer::new(Bad::HugeSkip);
        assert!(matches!(
            f.feed(b"x", |_| true),
            Err(CodecError::FrameTooLarge { .. })
        ));
        let mut f = Framer::new(Bad::OverMax);
        assert!(matches!(
            f.feed(b"x", |_| true),
            Err(CodecError::FrameTooLarge { len: 11, .. })
        ));
        let mut f = Framer::new(Bad::NeverDecides);
        let mut r = Ok(());
        for _ in 0..100 {
            r = f.feed(b"xxxx", |_| true);
            if r.is_err() {
                break;
            }
        }
        assert!(matches!(r, Err(CodecError::FrameTooLarge { .. })));
        assert!(f.buffered() <= 10 + 2 * MAX_HEADER_LEN + 4);
    }

    #[test]
    fn raw_bytes_never_buffers() {
        let mut f = Framer::new(RawBytes::new().max_frame_length(3));
        let got = collect(&mut f, &[b"abcdefg", b"h"]).unwrap();
        assert_eq!(
            got,
            vec![
                b"abc".to_vec(),
                b"def".to_vec(),
                b"g".to_vec(),
                b"h".to_vec()
            ]
        );
        assert_eq!(f.heap_bytes(), 0);
    }

    #[test]
    fn announced_length_is_never_reserved() {
        // 2,000 connections announcing 16 MiB and sending 70 KB each must
        // not reserve 16 MiB each.
        let mut framer = Framer::new(LengthDelimited::new());
        framer.feed(&(16u32 << 20).to_be_bytes(), |_| true).unwrap();
        assert!(framer.heap_bytes() <= MIN_CAPACITY);
        let mut fed = 4;
        for _ in 0..70 {
            framer.feed(&[0; 1000], |_| true).unwrap();
            fed += 1000;
            assert!(framer.heap_bytes() <= 2 * fed, "{fed}");
            assert!(framer.heap_bytes() >= framer.buffered());
        }
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: fed as u64,
                missing: Some((16 << 20) + 4 - fed as u64)
            })
        );
    }

    #[test]
    fn partial_reports_the_frame_in_progress() {
        let mut framer = Framer::new(LengthDelimited::new());
        assert_eq!(framer.partial(), None);
        // Header incomplete: length unknown.
        framer.feed(&[0, 0], |_| true).unwrap();
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: 2,
                missing: None
            })
        );
        // Header complete: 10 payload bytes announced, 3 arrived.
        framer.feed(&[0, 10, 1, 2, 3], |_| true).unwrap();
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: 7,
                missing: Some(7)
            })
        );
        // Completed, then the next frame's first byte.
        let mut n = 0;
        framer
            .feed(&[4, 5, 6, 7, 8, 9, 10, 0], |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: 1,
                missing: None
            })
        );
        // A whole frame at once: nothing partial after it.
        let mut framer = Framer::new(LengthDelimited::new());
        framer.feed(&ld_frame(b"abc"), |_| true).unwrap();
        assert_eq!(framer.partial(), None);
        // A frame located in the zero-copy path, cut.
        framer.feed(&ld_frame(b"abcdef")[..6], |_| true).unwrap();
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: 6,
                missing: Some(4)
            })
        );
        // Lines: a line without its end.
        let mut framer = Framer::new(Lines::new());
        framer.feed(b"one\ntw", |_| true).unwrap();
        assert_eq!(
            framer.partial(),
            Some(Partial {
                have: 2,
                missing: None
            })
        );
        // Raw bytes: never partial.
        let mut framer = Framer::new(RawBytes::new());
        framer.feed(b"xyz", |_| true).unwrap();
        assert_eq!(framer.partial(), None);
    }

    #[test]
    fn frames_shorter_than_their_header_at_every_split() {
        // tokio-util rules, 3-byte head, frames of 1 byte: each frame ends
        // inside the bytes read to locate it.
        let codec = LengthDelimited::new()
            .length_field_length(3)
            .num_skip(0)
            .length_adjustment(1 - 0x01_0101);
        let wire = [1u8; 9];
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut framer = Framer::new(codec.clone());
                let got = collect(&mut framer, &[&wire[..a], &wire[a..b], &wire[b..]]).unwrap();
                assert_eq!(got, vec![vec![1]; 7], "splits {a} {b}");
                assert_eq!(framer.buffered(), 2);
                assert_eq!(framer.partial().unwrap().missing, None);
            }
        }
        // One frame at a time with feed_until, stopping on a frame taken
        // from the buffer that leaves bytes behind.
        let mut framer = Framer::new(codec);
        assert_eq!(framer.feed_until(&wire[..2], |_| true).unwrap(), 2);
        let mut got = 0;
        let mut pos = 2;
        while pos < wire.len() || got < 7 {
            let before = got;
            pos += framer
                .feed_until(&wire[pos..], |_| {
                    got += 1;
                    false
                })
                .unwrap();
            assert!(got - before <= 1);
            if got == before && pos == wire.len() {
                break;
            }
        }
        assert_eq!(got, 7);
    }

    #[test]
    fn codec_accessor() {
        let f = Framer::new(Lines::new().max_line_length(7));
        assert_eq!(f.codec().max_frame(), 7);
    }
}
