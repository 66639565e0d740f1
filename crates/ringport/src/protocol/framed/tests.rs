//! `FramedConn` alone, then differentially: random streams in random
//! splits come out of it, step by step as the engine reads a protocol,
//! exactly as they come out of a `Framer` fed directly (the engine's
//! built-in path): same messages, same order, same error, same memory.

use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::codec::{LengthDelimited, Lines, RawBytes};

/// What came out of a stream: the messages, then the close reason if the
/// stream could not be decoded.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    error: Option<CloseReason>,
}

/// The engine's built-in path: every chunk fed to a `Framer`.
struct BuiltIn<C: Codec> {
    framer: Framer<C>,
    outcome: Outcome,
}

impl<C: Codec> BuiltIn<C> {
    fn new(codec: C) -> Self {
        BuiltIn {
            framer: Framer::new(codec),
            outcome: Outcome::default(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.outcome.error.is_some() {
            return;
        }
        let messages = &mut self.outcome.messages;
        if let Err(e) = self.framer.feed(chunk, |m| {
            messages.push(m.to_vec());
            true
        }) {
            self.outcome.error = Some(built_in_reason(e));
        }
    }
}

/// The close reason of a codec error on the engine's built-in path
/// (`Engine::after_feed` in `engine/input.rs`), written out here so that
/// the seam's mapping is checked against it, not against itself.
fn built_in_reason(error: CodecError) -> CloseReason {
    match error {
        CodecError::FrameTooLarge { len, max } => CloseReason::FrameTooLarge { len, max },
        e => CloseReason::InvalidFrame(e.to_string()),
    }
}

/// Through the seam, read as `engine/protocols.rs` reads a protocol: the
/// bytes the protocol left unused, then the new ones, step by step.
struct Seam<C: Codec> {
    conn: FramedConn<C>,
    carry: Vec<u8>,
    outcome: Outcome,
    /// Messages handed over in place (`Payload::Input`).
    in_place: usize,
}

impl<C: Codec> Seam<C> {
    fn new(codec: C) -> Self {
        Seam {
            conn: FramedConn::new(codec),
            carry: Vec::new(),
            outcome: Outcome::default(),
            in_place: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.outcome.error.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        let mut out = Vec::new();
        // Every step hands over a message or ends the chunk: a bound on
        // the steps catches a protocol that would loop.
        for _ in 0..=buf.len() + 2 {
            let (used, step) = self.conn.receive(&mut buf[pos..], Instant::now(), &mut out);
            assert!(out.is_empty(), "the framed protocol writes nothing");
            assert!(
                used <= buf.len() - pos,
                "used {used} of {}",
                buf.len() - pos
            );
            let start = pos;
            pos += used;
            match step {
                Step::NeedMore => {
                    self.carry = buf[pos..].to_vec();
                    return;
                }
                Step::Message(kind, payload) => {
                    assert_eq!(kind, MessageKind::Binary);
                    let message = match payload {
                        Payload::Input(a, b) => {
                            self.in_place += 1;
                            assert!(
                                start + b <= pos,
                                "a message in place lies in the used bytes"
                            );
                            buf[start + a..start + b].to_vec()
                        }
                        Payload::Owned(bytes) => bytes.to_vec(),
                    };
                    self.outcome.messages.push(message);
                }
                Step::Close(reason) => {
                    self.outcome.error = Some(reason);
                    return;
                }
                Step::Upgrade | Step::Control => panic!("no handshake, no control traffic"),
            }
        }
        panic!("the protocol kept stepping without progress");
    }
}

fn receive(conn: &mut impl ConnProtocol, input: &[u8]) -> (usize, Step) {
    let mut input = input.to_vec();
    let mut out = Vec::new();
    let step = conn.receive(&mut input, Instant::now(), &mut out);
    assert!(out.is_empty());
    step
}

fn ld_frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

#[test]
fn frames_inside_the_input_are_handed_over_in_place_one_step_at_a_time() {
    let mut conn = FramedConn::new(LengthDelimited::new());
    let mut wire = ld_frame(b"hello");
    wire.extend(ld_frame(b""));
    wire.extend(ld_frame(b"world!"));
    wire.extend_from_slice(&[0, 0]); // half a header
    let mut pos = 0;
    let mut seen = Vec::new();
    loop {
        let (used, step) = receive(&mut conn, &wire[pos..]);
        match step {
            Step::Message(MessageKind::Binary, Payload::Input(a, b)) => {
                seen.push(wire[pos + a..pos + b].to_vec())
            }
            Step::Message(MessageKind::Binary, Payload::Owned(bytes)) => {
                assert!(bytes.is_empty(), "only the empty message is not in place");
                seen.push(Vec::new())
            }
            Step::NeedMore => {
                assert_eq!(pos + used, wire.len(), "the partial header is kept inside");
                break;
            }
            other => panic!("{other:?}"),
        }
        pos += used;
    }
    assert_eq!(seen, [b"hello".to_vec(), vec![], b"world!".to_vec()]);
    assert_eq!(
        conn.partial(),
        Some(crate::codec::Partial {
            have: 2,
            missing: None
        })
    );
    // The header completes: the frame's bytes follow.
    assert!(matches!(
        receive(&mut conn, &[0, 3, b'a']).1,
        Step::NeedMore
    ));
    let (used, step) = receive(&mut conn, b"bcNEXT");
    assert_eq!(
        used, 2,
        "the bytes after the frame are left for the next step"
    );
    let Step::Message(_, Payload::Owned(bytes)) = step else {
        panic!("{step:?}")
    };
    assert_eq!(&bytes[..], b"abc");
    assert_eq!(conn.partial(), None);
    assert_eq!(conn.heap_bytes(), 0, "no buffer kept between frames");
}

#[test]
fn a_large_frame_is_reassembled_counted_and_released() {
    let mut conn = FramedConn::new(LengthDelimited::new());
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let wire = ld_frame(&payload);
    let mut most = 0;
    let mut got = None;
    for chunk in wire.chunks(16 * 1024) {
        let (used, step) = receive(&mut conn, chunk);
        assert_eq!(used, chunk.len());
        most = most.max(conn.heap_bytes());
        match step {
            Step::NeedMore => assert!(conn.heap_bytes() > 0),
            Step::Message(_, Payload::Owned(bytes)) => got = Some(bytes),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got.as_deref(), Some(&payload[..]));
    // Bounded by the frame (and the growth factor), not by a guess.
    assert!(most >= payload.len() && most <= 2 * wire.len(), "{most}");
    assert_eq!(conn.heap_bytes(), 0, "the buffer went with the message");
}

#[test]
fn a_frame_announced_over_the_maximum_closes_with_the_built_in_reason_and_allocates_nothing() {
    let codec = LengthDelimited::new().max_frame_length(1000);
    let mut conn = FramedConn::new(codec.clone());
    let mut wire = ld_frame(b"ok");
    wire.extend_from_slice(&5000u32.to_be_bytes());
    wire.extend_from_slice(&[0; 100]);
    let (used, step) = receive(&mut conn, &wire);
    assert!(matches!(step, Step::Message(_, Payload::Input(4, 6))));
    let (_, step) = receive(&mut conn, &wire[used..]);
    let Step::Close(reason) = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        reason,
        CloseReason::FrameTooLarge {
            len: 5000,
            max: 1000
        }
    );
    assert_eq!(conn.heap_bytes(), 0);
    // The same as the engine's built-in path.
    let mut builtin = BuiltIn::new(codec);
    builtin.feed(&wire);
    assert_eq!(builtin.outcome.error, Some(reason));
}

#[test]
fn codec_errors_map_to_the_engine_s_close_reasons() {
    for error in [
        CodecError::FrameTooLarge { len: 9, max: 8 },
        CodecError::InvalidHeader("bad"),
    ] {
        assert_eq!(close_reason(error.clone()), built_in_reason(error));
    }
    // A line over the maximum (no header: the accumulated length).
    let mut conn = FramedConn::new(Lines::new().max_line_length(8));
    let (_, step) = receive(&mut conn, b"0123456789abc");
    assert!(
        matches!(step, Step::Close(CloseReason::FrameTooLarge { max: 8, .. })),
        "{step:?}"
    );
}

#[test]
fn outgoing_messages_get_the_codec_s_header_and_text_goes_as_binary() {
    let mut header = [0u8; MAX_PROTOCOL_HEADER];
    let mut out = Vec::new();
    let mut ld = FramedConn::new(LengthDelimited::new().max_frame_length(100));
    for kind in [MessageKind::Binary, MessageKind::Text] {
        header.fill(0xEE);
        let framed = ld.frame(kind, b"hello", &mut header, &mut out).unwrap();
        assert!(matches!(framed, Framed::Header(4)));
        assert_eq!(header[..4], [0, 0, 0, 5]);
        assert!(out.is_empty(), "the payload follows by reference");
    }
    assert_eq!(
        ld.frame(MessageKind::Binary, &[0; 101], &mut header, &mut out)
            .err(),
        Some(SendError::TooLarge)
    );
    // No header at all.
    let mut raw = FramedConn::new(RawBytes::new());
    let framed = raw.frame(MessageKind::Text, b"x", &mut header, &mut out);
    assert!(matches!(framed, Ok(Framed::Header(0))));
    // A trailer: the whole line is written.
    let mut lines = FramedConn::new(Lines::new().max_line_length(10));
    let framed = lines.frame(MessageKind::Text, b"hi", &mut header, &mut out);
    assert!(matches!(framed, Ok(Framed::Written)));
    assert_eq!(out, b"hi\n");
    out.clear();
    assert_eq!(
        lines
            .frame(MessageKind::Binary, &[b'a'; 11], &mut header, &mut out)
            .err(),
        Some(SendError::TooLarge)
    );
    assert!(out.is_empty(), "nothing written for a refused message");
    // A header longer than a protocol header: the whole frame is written,
    // and decodes back to the payload.
    let long = LengthDelimited::netty(1 << 20, 12, 4, 0, 16, true);
    let mut conn = FramedConn::new(long.clone());
    let framed = conn.frame(MessageKind::Binary, b"payload", &mut header, &mut out);
    assert!(matches!(framed, Ok(Framed::Written)));
    assert_eq!(out.len(), 16 + 7);
    let mut back = BuiltIn::new(long);
    back.feed(&out);
    assert_eq!(back.outcome.messages, [b"payload".to_vec()]);
}

#[test]
fn a_framed_connection_is_open_at_once_and_has_no_handshake_keepalive_or_goodbye() {
    let listener = FramedListener::new(LengthDelimited::new());
    assert_eq!(listener.handshake_timeout(), Duration::ZERO);
    let mut conn = listener.open("127.0.0.1:1".parse().unwrap(), Instant::now());
    assert!(conn.is_open());
    assert!(conn.upgrade_info().is_none());
    let mut out = Vec::new();
    assert_eq!(
        conn.decide(UpgradeDecision::accept(), &mut out),
        Err(SendError::Closed)
    );
    assert!(!conn.heartbeat(&mut out));
    conn.close(&CloseReason::Local, Instant::now(), &mut out);
    assert!(out.is_empty());
    assert_eq!(conn.heap_bytes(), 0);
    // A broadcast is framed like any message (the default `frame_shared`).
    let mut header = [0u8; MAX_PROTOCOL_HEADER];
    let mut cache = None;
    let payload = Bytes::from_static(b"all");
    let framed = conn.frame_shared(
        MessageKind::Binary,
        &payload,
        &mut cache,
        &mut header,
        &mut out,
    );
    assert!(matches!(
        framed,
        Ok(crate::protocol::FramedShared::Header(4))
    ));
    assert_eq!(header[..4], [0, 0, 0, 3]);
    assert!(
        cache.is_none(),
        "nothing kept that another protocol could trip on"
    );
}

/// The codecs under test, with small maxima so oversize frames are common.
#[derive(Debug, Clone)]
enum Choice {
    /// ringport's default format.
    Default(usize),
    /// tokio-util rules: offset, field length, adjustment, skip, max.
    Tokio(usize, usize, isize, Option<usize>, usize),
    /// Netty rules: max, offset, field length, adjustment, strip.
    Netty(usize, usize, usize, isize, usize),
    Lines(usize),
    Raw(usize),
}

impl Choice {
    fn codec(&self) -> AnyCodec {
        match *self {
            Choice::Default(max) => AnyCodec::Ld(LengthDelimited::new().max_frame_length(max)),
            Choice::Tokio(offset, field_len, adjustment, skip, max) => {
                let mut c = LengthDelimited::new()
                    .length_field_offset(offset)
                    .length_field_length(field_len)
                    .length_adjustment(adjustment)
                    .max_frame_length(max);
                if let Some(s) = skip {
                    c = c.num_skip(s);
                }
                AnyCodec::Ld(c)
            }
            Choice::Netty(max, offset, field_len, adjustment, strip) => AnyCodec::Ld(
                LengthDelimited::netty(max, offset, field_len, adjustment, strip, true),
            ),
            Choice::Lines(max) => AnyCodec::Lines(Lines::new().max_line_length(max)),
            Choice::Raw(max) => AnyCodec::Raw(RawBytes::new().max_frame_length(max)),
        }
    }
}

enum AnyCodec {
    Ld(LengthDelimited),
    Lines(Lines),
    Raw(RawBytes),
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        (1usize..600).prop_map(Choice::Default),
        (
            0usize..4,
            prop_oneof![Just(1usize), Just(2), Just(3), Just(4), Just(8)],
            -4isize..5,
            proptest::option::of(0usize..10),
            1usize..600,
        )
            .prop_map(|(o, f, a, s, m)| Choice::Tokio(o, f, a, s, m)),
        (
            20usize..600,
            0usize..4,
            prop_oneof![Just(1usize), Just(2), Just(4)],
            -2isize..3,
            0usize..6,
        )
            .prop_map(|(m, o, f, a, s)| Choice::Netty(m, o, f, a, s)),
        (0usize..300).prop_map(Choice::Lines),
        (1usize..300).prop_map(Choice::Raw),
    ]
}

/// A piece of a stream: a message framed with the codec's own encoding
/// (when it can encode it), or arbitrary bytes (garbage, headers announcing
/// anything, line ends).
#[derive(Debug, Clone)]
enum Piece {
    Message(Vec<u8>),
    Bytes(Vec<u8>),
    /// The start of a frame this many bytes over the codec's maximum.
    Oversize(usize),
}

/// Half the streams well-formed (messages only), half mixed.
fn pieces() -> impl Strategy<Value = Vec<Piece>> {
    let message = || proptest::collection::vec(any::<u8>(), 0..400).prop_map(Piece::Message);
    let piece = prop_oneof![
        6 => message(),
        1 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(Piece::Bytes),
        1 => (1usize..100).prop_map(Piece::Oversize),
    ];
    prop_oneof![
        proptest::collection::vec(message(), 0..24),
        proptest::collection::vec(piece, 0..24),
    ]
}

/// The stream of `pieces`; `oversize(n)` writes the start of a frame
/// announcing (or, without a header, holding) `n` bytes past the maximum.
fn encode(codec: &impl Codec, pieces: &[Piece], oversize: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut wire = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Message(payload) => {
                let mut head = [0u8; MAX_HEADER_LEN];
                if let Ok(n) = codec.encode_header(payload.len(), &mut head) {
                    wire.extend_from_slice(&head[..n]);
                    wire.extend_from_slice(payload);
                    wire.extend_from_slice(codec.trailer());
                }
            }
            Piece::Bytes(bytes) => wire.extend_from_slice(bytes),
            Piece::Oversize(over) => wire.extend(oversize(*over)),
        }
    }
    wire
}

/// Cut points (sorted, within `len`) from random fractions.
fn splits(len: usize, cuts: &[u16]) -> Vec<usize> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| len * c as usize / u16::MAX as usize)
        .collect();
    at.push(len);
    at.sort_unstable();
    at
}

/// Feeds `wire` in the pieces `cuts` makes to both paths; checks they
/// agree after every chunk; returns how many messages the seam handed over
/// in place.
fn differential<C: Codec>(codec: C, wire: &[u8], cuts: &[u16]) -> Result<usize, TestCaseError> {
    // As the framer's own property tests bound it: twice a maximal frame
    // with generous header room.
    let bound = 2 * (codec.max_frame() + 4 * MAX_HEADER_LEN) + 256;
    let mut builtin = BuiltIn::new(codec.clone());
    let mut seam = Seam::new(codec);
    let mut from = 0;
    for to in splits(wire.len(), cuts) {
        let chunk = &wire[from..to];
        from = to;
        builtin.feed(chunk);
        seam.feed(chunk);
        prop_assert_eq!(&seam.outcome, &builtin.outcome);
        if builtin.outcome.error.is_none() {
            // The same frame in progress; its memory bounded by one frame,
            // and none between frames.
            let partial = seam.conn.partial();
            prop_assert_eq!(partial, builtin.framer.partial());
            let held = seam.conn.heap_bytes();
            match partial {
                None => prop_assert_eq!(held, 0),
                Some(_) => prop_assert!(held <= bound, "{} > {}", held, bound),
            }
            prop_assert!(seam.carry.is_empty(), "the protocol keeps its own input");
        }
    }
    Ok(seam.in_place)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any stream (encoded messages mixed with arbitrary bytes), in any
    /// split: the seam gives exactly what the built-in framer gives.
    #[test]
    fn the_seam_gives_what_the_built_in_framer_gives(
        choice in choice(),
        pieces in pieces(),
        cuts in proptest::collection::vec(any::<u16>(), 0..12),
    ) {
        match choice.codec() {
            AnyCodec::Ld(c) => {
                // The header of a codec alike but for its maximum.
                let max = c.max_frame();
                let roomy = c.clone().max_frame_length(1 << 30);
                let wire = encode(&c, &pieces, |over| {
                    let mut head = [0u8; MAX_HEADER_LEN];
                    let n = roomy.encode_header(max + over, &mut head).unwrap_or(0);
                    head[..n].to_vec()
                });
                differential(c, &wire, &cuts)?;
            }
            AnyCodec::Lines(c) => {
                let max = c.max_frame();
                let wire = encode(&c, &pieces, |over| {
                    let mut line = vec![b'x'; max + over];
                    line.push(b'\n');
                    line
                });
                differential(c, &wire, &cuts)?;
            }
            AnyCodec::Raw(c) => {
                // No frame can be over the maximum: longer reads are cut.
                let max = c.max_frame();
                let wire = encode(&c, &pieces, |over| vec![0; max + over]);
                differential(c, &wire, &cuts)?;
            }
        }
    }

    /// Well-formed streams of the default codec in one receive: every
    /// message is handed over in place (no copy).
    #[test]
    fn whole_frames_in_one_receive_are_never_copied(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..20),
    ) {
        let codec = LengthDelimited::new();
        let pieces: Vec<Piece> = payloads.into_iter().map(Piece::Message).collect();
        let wire = encode(&codec, &pieces, |_| Vec::new());
        let in_place = differential(codec, &wire, &[])?;
        prop_assert_eq!(in_place, pieces.len());
    }
}
