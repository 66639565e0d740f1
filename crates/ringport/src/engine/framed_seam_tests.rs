//! The framed codec through the protocol seam against the engine's built-in
//! framed path, deterministic (scripted completions, virtual time): every
//! scenario runs twice, once on a listener without protocol (the built-in
//! path, with its direct receives) and once on a listener whose protocol is
//! `protocol::framed::FramedListener` (`Engine::with_protocols`), and the
//! two runs must give the handler the same calls and the peers the same
//! bytes. Each scenario also checks what that transcript must be.
//!
//! The peers are a small scripted kernel over the [`Sim`] harness: what a
//! peer sends is received through the multishot receive when one is armed,
//! written into the target of a direct receive when the engine posted one,
//! and held while neither is (a paused connection); sends complete at once
//! unless the peer is not reading; cancels and closes complete as the
//! kernel completes them.

use std::cell::RefCell;
use std::time::Duration;

use crate::codec::{Codec, LengthDelimited, Lines, RawBytes};
use crate::error::CloseReason;

mod peers;

use peers::*;

/// Echo of messages cut across receives and several per receive, a text
/// reply among them, for a codec with a header and one with a trailer.
fn echo_in_pieces<C: Codec + Sync>(codec: C) {
    let messages = [
        payload(5, 1),
        b"text:a text reply".to_vec(),
        payload(300, 2),
        payload(1, 3),
        payload(2000, 4),
        payload(17, 5),
        payload(40, 6),
    ];
    let stream: Vec<u8> = messages.iter().flat_map(|m| encode(&codec, m)).collect();
    // A byte at a time, then headers and payloads cut, then three messages
    // and a half in one receive, then the rest.
    let pieces = cut(&stream, &[1, 2, 3, 4, 9, 30, 100, 320, 2330, 2340]);
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(4);
            p.peer_sends_each(4, &pieces);
        },
    );
    let mut expected = vec![Seen::Connect(4)];
    expected.extend(messages.iter().map(|m| Seen::Message(4, m.clone())));
    assert_eq!(t.seen, expected);
    let replies: Vec<u8> = messages
        .iter()
        .flat_map(|m| encode(&codec, m.strip_prefix(b"text:").unwrap_or(m)))
        .collect();
    assert_eq!(t.wire[&4], replies);
}

#[test]
fn echo_of_length_delimited_frames_cut_anywhere() {
    echo_in_pieces(LengthDelimited::new().max_frame_length(1 << 20));
    // Netty's rules: a 4-byte header, the length field in its last two.
    echo_in_pieces(LengthDelimited::netty(1 << 20, 2, 2, 0, 4, true));
}

#[test]
fn echo_of_lines_cut_anywhere() {
    echo_in_pieces(Lines::new().max_line_length(4096));
}

#[test]
fn echo_of_raw_bytes_keeps_the_receives_as_messages() {
    let pieces = cut(&payload(5000, 9), &[1, 10, 1000, 1001, 3000]);
    let (t, _, _) = both(
        RawBytes::new().max_frame_length(2048),
        |_| {},
        |p| {
            p.accept(2);
            p.peer_sends_each(2, &pieces);
        },
    );
    let mut expected = vec![Seen::Connect(2)];
    for piece in &pieces {
        // Longer receives are cut at the maximum.
        for m in piece.chunks(2048) {
            expected.push(Seen::Message(2, m.to_vec()));
        }
    }
    assert_eq!(t.seen, expected);
    assert_eq!(t.wire[&2], pieces.concat());
}

#[test]
fn a_large_frame_and_the_one_after_it() {
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let big = payload(200_000, 7);
    let mut stream = encode(&codec, &big);
    stream.extend(encode(&codec, b"after"));
    let pieces: Vec<Vec<u8>> = stream.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let (t, built_in, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(9);
            p.peer_sends_each(9, &pieces);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(9),
            Seen::Message(9, big.clone()),
            Seen::Message(9, b"after".to_vec())
        ]
    );
    assert_eq!(t.wire[&9], stream);
    assert!(
        built_in.direct_receives > 0,
        "the built-in path took its zero-copy receive"
    );
}

fn broadcast_to_everyone<C: Codec + Sync>(codec: C) {
    let announce = encode(&codec, b"all:news for everyone");
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            for slot in [1, 2, 3] {
                p.accept(slot);
            }
            p.peer_sends(2, &announce[..3]);
            p.peer_sends(2, &announce[3..]);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(1),
            Seen::Connect(2),
            Seen::Connect(3),
            Seen::Message(2, b"all:news for everyone".to_vec()),
        ]
    );
    let news = encode(&codec, b"news for everyone");
    for slot in [1, 2, 3] {
        assert_eq!(t.wire[&slot], news, "slot {slot}");
    }
}

#[test]
fn a_broadcast_reaches_every_connection_framed_alike() {
    broadcast_to_everyone(LengthDelimited::new());
    broadcast_to_everyone(Lines::new());
}

#[test]
fn an_over_long_frame_closes_with_the_same_reason_after_the_frames_before_it() {
    // A header announcing too much.
    let codec = LengthDelimited::new().max_frame_length(1000);
    let mut stream = encode(&codec, b"ok");
    stream.extend_from_slice(&5000u32.to_be_bytes());
    stream.extend_from_slice(&[1; 64]);
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, &stream[..3]);
            p.peer_sends(6, &stream[3..]);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(6),
            Seen::Message(6, b"ok".to_vec()),
            Seen::Close(
                6,
                CloseReason::FrameTooLarge {
                    len: 5000,
                    max: 1000
                }
            ),
        ]
    );
    assert_eq!(t.wire[&6], encode(&codec, b"ok"), "the reply flushed first");

    // A line that does not end in time.
    let codec = Lines::new().max_line_length(16);
    let (t, _, _) = both(
        codec,
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, b"fine\nthis line goes on ");
            p.peer_sends(6, b"and on and on and on\nnever seen\n");
        },
    );
    assert!(
        matches!(
            t.seen.as_slice(),
            [
                Seen::Connect(6),
                Seen::Message(6, fine),
                Seen::Close(6, CloseReason::FrameTooLarge { max: 16, .. })
            ] if fine == b"fine"
        ),
        "{:?}",
        t.seen
    );
    assert_eq!(t.wire[&6], b"fine\n");
}

#[test]
fn a_paused_connection_resumes_without_loss() {
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let messages: Vec<Vec<u8>> = (0..24).map(|i| payload(1000, i)).collect();
    let stream: Vec<u8> = messages.iter().flat_map(|m| encode(&codec, m)).collect();
    let pieces: Vec<Vec<u8>> = stream.chunks(3000).map(<[u8]>::to_vec).collect();
    let (t, built_in, seam) = both(
        codec.clone(),
        |c| c.send_high_water = 4096,
        |p| {
            p.accept(5);
            // The peer writes everything without reading its replies.
            p.stall(5);
            p.peer_sends_each(5, &pieces);
            let during = p.seen.borrow().len();
            assert!(
                during < 1 + messages.len(),
                "reading paused before the end ({during} calls)"
            );
            assert!(
                !p.pending[&5].is_empty(),
                "input waits for the pause to end"
            );
            p.unstall(5);
        },
    );
    assert!(built_in.recv_cancels > 0 && seam.recv_cancels > 0, "paused");
    let mut expected = vec![Seen::Connect(5)];
    expected.extend(messages.iter().map(|m| Seen::Message(5, m.clone())));
    assert_eq!(t.seen, expected);
    assert_eq!(t.wire[&5], stream);
}

#[test]
fn an_idle_connection_is_closed_on_time() {
    let codec = LengthDelimited::new();
    let (t, _, _) = both(
        codec.clone(),
        |c| c.idle_timeout = Some(Duration::from_millis(300)),
        |p| {
            p.turn(0);
            p.accept(8);
            p.accept(9);
            for ms in (100..=1200).step_by(100) {
                p.turn(ms);
                // Slot 9 keeps talking until 700 ms.
                if ms <= 700 {
                    p.peer_sends(9, &encode(&LengthDelimited::new(), b"here"));
                }
                let closed = p
                    .seen
                    .borrow()
                    .iter()
                    .filter(|s| matches!(s, Seen::Close(..)))
                    .count();
                match ms {
                    ..=200 => assert_eq!(closed, 0, "at {ms} ms"),
                    1200 => assert_eq!(closed, 2, "at {ms} ms"),
                    _ => {}
                }
            }
        },
    );
    let closes: Vec<&Seen> = t
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Close(..)))
        .collect();
    assert_eq!(
        closes,
        [
            &Seen::Close(8, CloseReason::IdleTimeout),
            &Seen::Close(9, CloseReason::IdleTimeout)
        ]
    );
    assert_eq!(t.wire[&9], encode(&codec, b"here").repeat(7));
}

#[test]
fn a_peer_closing_after_its_last_frame_gets_its_replies_first() {
    let codec = LengthDelimited::new();
    let stream: Vec<u8> = [b"one".as_slice(), b"two", b"three"]
        .iter()
        .flat_map(|m| encode(&codec, m))
        .collect();
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(3);
            p.peer_sends(3, &stream[..9]);
            p.peer_sends(3, &stream[9..]);
            p.peer_closes(3);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(3),
            Seen::Message(3, b"one".to_vec()),
            Seen::Message(3, b"two".to_vec()),
            Seen::Message(3, b"three".to_vec()),
            Seen::Close(3, CloseReason::PeerClosed),
        ]
    );
    assert_eq!(t.wire[&3], stream);
}

#[test]
fn a_peer_closing_inside_a_frame_is_a_truncated_frame_alike() {
    let codec = LengthDelimited::new();
    let whole = encode(&codec, &payload(100, 1));
    // A header cut short, and a frame cut in its payload.
    for (cut_at, expected) in [
        (
            2,
            CloseReason::TruncatedFrame {
                have: 2,
                missing: None,
            },
        ),
        (
            40,
            CloseReason::TruncatedFrame {
                have: 40,
                missing: Some(64),
            },
        ),
    ] {
        let mut stream = encode(&codec, b"one");
        stream.extend_from_slice(&whole[..cut_at]);
        let (t, _, _) = both(
            codec.clone(),
            |_| {},
            |p| {
                p.accept(3);
                p.peer_sends(3, &stream);
                p.peer_closes(3);
            },
        );
        assert_eq!(
            t.seen,
            vec![
                Seen::Connect(3),
                Seen::Message(3, b"one".to_vec()),
                Seen::Close(3, expected),
            ]
        );
    }
}

#[test]
fn a_frame_not_complete_in_time_closes_alike() {
    let codec = LengthDelimited::new();
    let frame = encode(&codec, &payload(1000, 2));
    let (t, _, _) = both(
        codec.clone(),
        |c| c.frame_timeout = Some(Duration::from_millis(500)),
        |p| {
            p.turn(0);
            p.accept(2);
            p.accept(3);
            p.peer_sends(2, &frame[..100]);
            // Slot 3's frame completes in time, in pieces.
            p.peer_sends(3, &frame[..300]);
            p.turn(200);
            p.peer_sends(3, &frame[300..]);
            for ms in (300..=2000).step_by(100) {
                p.turn(ms);
                // Another byte every 100 ms does not save a frame.
                if ms <= 1000 {
                    p.peer_sends(2, &frame[100 + ms as usize / 100..101 + ms as usize / 100]);
                }
            }
        },
    );
    let closes: Vec<&Seen> = t
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Close(..)))
        .collect();
    assert!(
        matches!(
            closes.as_slice(),
            [Seen::Close(2, CloseReason::FrameTimeout { have, missing: Some(missing) })]
                if have + missing == frame.len() as u64 && *have > 100
        ),
        "{closes:?}"
    );
    assert_eq!(t.wire[&3], frame, "the frame completed in time is echoed");
}

#[test]
fn an_over_long_frame_is_counted_alike() {
    let codec = LengthDelimited::new().max_frame_length(1000);
    let mut counted = Vec::new();
    let counted_ref = RefCell::new(&mut counted);
    both(
        codec,
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, &5000u32.to_be_bytes());
            counted_ref
                .borrow_mut()
                .push(p.sim.engine.core.stats.frames_too_large);
        },
    );
    assert_eq!(counted, vec![1, 1], "built-in, then through the seam");
}
