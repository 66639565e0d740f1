use super::*;
use crate::codec::{LengthDelimited, Lines, RawBytes};

fn ld_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Feed `chunks` in turn, collecting payloads.
fn collect<C: Codec>(framer: &mut Framer<C>, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, CodecError> {
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
fn with_a_pool_the_next_large_frame_continues_in_the_last_ones_buffer() {
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 3) as u8).collect();
    let wire = ld_frame(&big);
    let pool = FramePool::new(8 << 20);
    let mut framer = Framer::with_pool(LengthDelimited::new(), pool.clone());
    let mut held = Vec::new();
    let mut last = None;
    for round in 0..3 {
        // The header and 30 KB: too little to be lent the whole frame's
        // buffer yet (32 KiB is the threshold); the next chunk takes it.
        framer
            .feed(&wire[..30_000], |_| panic!("incomplete"))
            .unwrap();
        assert!(framer.heap_bytes() <= 2 * 30_000, "{}", framer.heap_bytes());
        for chunk in wire[30_000..].chunks(65536) {
            framer
                .feed_shared(chunk, |payload, shared| {
                    let shared = shared.expect("a large frame is handed over");
                    assert_eq!(payload, &big[..]);
                    held.push(shared.clone());
                    true
                })
                .unwrap();
            if round > 0 && framer.buffered() > 0 {
                assert_eq!(framer.heap_bytes(), wire.len(), "the kept buffer, whole");
            }
        }
        assert_eq!(held.len(), 1);
        // Still referenced: not back yet.
        assert_eq!(pool.kept_bytes(), 0);
        let ptr = held[0].as_ptr();
        held.clear();
        assert_eq!(pool.kept_bytes(), wire.len(), "back once dropped");
        if let Some(last) = last {
            // The buffer went round: the same memory as the round before.
            assert_eq!(ptr, last);
        }
        last = Some(ptr);
    }
}

#[test]
fn without_room_in_the_pool_buffers_are_freed_and_frames_grow_as_usual() {
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let wire = ld_frame(&big);
    let pool = FramePool::new(100_000);
    let mut framer = Framer::with_pool(LengthDelimited::new(), pool.clone());
    for _ in 0..2 {
        let mut got = 0;
        for chunk in wire.chunks(65536) {
            framer
                .feed(chunk, |p| {
                    assert_eq!(p, &big[..]);
                    got += 1;
                    true
                })
                .unwrap();
        }
        assert_eq!(got, 1);
        assert_eq!(pool.kept_bytes(), 0, "larger than the pool's limit");
    }
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
    fn encode_header(&self, _: usize, _: &mut [u8; MAX_HEADER_LEN]) -> Result<usize, CodecError> {
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

/// Writes up to `bytes.len()` bytes into the framer's receive target, as a
/// direct receive would; returns how many it took.
fn receive_directly<C: Codec>(framer: &mut Framer<C>, bytes: &[u8]) -> usize {
    let target = framer.recv_target().expect("a located frame has a target");
    let n = target.len().min(bytes.len());
    for (slot, &b) in target.iter_mut().zip(&bytes[..n]) {
        slot.write(b);
    }
    // SAFETY: the first `n` bytes of the target were written just above.
    unsafe { framer.commit_received(n) };
    n
}

#[test]
fn recv_target_only_for_a_located_incomplete_frame() {
    let mut framer = Framer::new(LengthDelimited::new());
    assert!(framer.recv_target().is_none(), "nothing buffered");
    assert_eq!(framer.missing(), None);
    // Half a header: not located yet.
    framer.feed(&[0, 0], |_| true).unwrap();
    assert!(framer.recv_target().is_none());
    assert_eq!(framer.missing(), None);
    framer.feed(&[0, 10, 1, 2], |_| true).unwrap();
    assert_eq!(framer.missing(), Some(8));
    let room = framer.recv_target().unwrap().len();
    assert_eq!(room, 8, "never past the frame's end");
}

#[test]
fn direct_receive_delivers_like_feed_and_hands_large_frames_over() {
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    let mut wire = ld_frame(&big);
    wire.extend_from_slice(&ld_frame(b"next"));
    let mut framer = Framer::new(LengthDelimited::new());
    let mut seen = Vec::new();
    framer
        .feed_shared(&wire[..65536], |p, _| {
            seen.push(p.to_vec());
            true
        })
        .unwrap();
    let mut pos = 65536;
    let end = 4 + big.len();
    let mut targets = 0;
    while pos < end {
        // The room follows what arrived (at most doubling), never the
        // announced length.
        let held = framer.buffered();
        pos += receive_directly(&mut framer, &wire[pos..end.min(pos + 77_777)]);
        targets += 1;
        assert!(framer.heap_bytes() <= 4 * held.max(256));
    }
    assert!(targets > 10);
    assert_eq!(framer.missing(), Some(0));
    let mut shared_seen = false;
    framer
        .feed_shared(&[], |p, shared| {
            shared_seen = shared.is_some_and(|b| b.as_ptr() == p.as_ptr());
            seen.push(p.to_vec());
            true
        })
        .unwrap();
    assert!(shared_seen, "a large frame is handed over as Bytes");
    assert_eq!(framer.heap_bytes(), 0);
    framer
        .feed_shared(&wire[end..], |p, _| {
            seen.push(p.to_vec());
            true
        })
        .unwrap();
    assert_eq!(seen, vec![big, b"next".to_vec()]);
}

#[test]
fn direct_receive_of_an_announced_but_missing_frame_stays_small() {
    let mut framer = Framer::new(LengthDelimited::new().max_frame_length(16 << 20));
    let mut wire = ((16u32 << 20) - 1).to_be_bytes().to_vec();
    wire.extend_from_slice(&[5; 100]);
    framer.feed(&wire, |_| true).unwrap();
    let room = framer.recv_target().unwrap().len();
    assert!(room <= 1024, "room {room} for 104 bytes held");
    assert!(framer.heap_bytes() <= 1024);
    // Filling it grows it by what arrived only.
    let n = receive_directly(&mut framer, &[6; 5000]);
    assert!(n <= 1024);
    framer.recv_target().unwrap();
    assert!(framer.heap_bytes() <= 4 * framer.buffered());
}

#[test]
fn a_target_between_frames_reuses_a_kept_buffer_of_exactly_its_size() {
    let pool = FramePool::new(8 << 20);
    let size = 65_536 + 32;
    let kept = Vec::<u8>::with_capacity(size);
    let kept_ptr = kept.as_ptr();
    pool.give(kept);
    pool.give(Vec::with_capacity(size + 1));
    let mut framer = Framer::with_pool(LengthDelimited::new(), pool.clone());
    let target = framer.recv_target_between(size).expect("nothing buffered");
    assert_eq!(target.len(), size);
    assert_eq!(target.as_ptr().cast::<u8>(), kept_ptr, "the kept buffer");
    assert_eq!(pool.kept_bytes(), size + 1, "the other size stays kept");
    // A size the pool has nothing of exactly: allocated, the kept one left.
    let mut other = Framer::with_pool(LengthDelimited::new(), pool.clone());
    assert_eq!(other.recv_target_between(size - 1).unwrap().len(), size - 1);
    assert_eq!(pool.kept_bytes(), size + 1);
}
