use std::time::{Duration, Instant};

use super::*;
use crate::protocol::websocket::deflate::{
    DeflateConfig, DeflateParams, Deflater, ExtensionOffer, negotiate,
};
use crate::protocol::websocket::{Outgoing, PreparedMessage, server_frame_header};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An owned copy of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    Msg(MessageKind, Vec<u8>),
    Pong(Vec<u8>),
    Closed(u16, String),
    Failed(u16),
}

/// Feeds `bytes` to the session in chunks cut at `cuts` (positions), the
/// way a caller with its own buffer does: unconsumed tails are kept and the
/// next chunk is appended. Returns the events and the session's output.
pub(crate) fn feed(s: &mut Session, bytes: &[u8], cuts: &[usize]) -> (Vec<Ev>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut prev = 0;
    'chunks: for p in points {
        buf.extend_from_slice(&bytes[prev..p]);
        prev = p;
        let mut off = 0;
        loop {
            let r = s.read(&mut buf[off..], &mut out);
            off += r.consumed;
            let done = match r.event {
                Event::NeedMore => {
                    buf.drain(..off);
                    continue 'chunks;
                }
                Event::Message(m) => {
                    events.push(Ev::Msg(m.kind(), m.as_bytes().to_vec()));
                    false
                }
                Event::Pong(p) => {
                    events.push(Ev::Pong(p.to_vec()));
                    false
                }
                Event::Closed { code, reason } => {
                    events.push(Ev::Closed(code.0, reason.to_string()));
                    true
                }
                Event::Failed { code, .. } => {
                    events.push(Ev::Failed(code.0));
                    true
                }
            };
            if done {
                break 'chunks;
            }
        }
    }
    (events, out)
}

fn server() -> Session {
    Session::server(&SessionConfig::default(), None)
}

fn frame_bytes(
    fin: bool,
    rsv1: bool,
    op: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut v = Vec::new();
    frame::write_frame(&mut v, fin, rsv1, op, payload, mask);
    v
}

/// Decodes the session's output as a client would: (opcode, payload) list.
pub(crate) fn frames_of(out: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let h = frame::decode_header(&out[pos..], true).unwrap().unwrap();
        let mut p = out[pos + h.header_len..pos + h.header_len + h.payload_len as usize].to_vec();
        if let Some(m) = h.mask {
            frame::apply_mask(&mut p, m, 0);
        }
        v.push((h.opcode, p));
        pos += h.header_len + h.payload_len as usize;
    }
    v
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    frame_bytes(true, false, OpCode::Close, &p, Some(MASK))
}

#[test]
fn idle_session_is_small_and_owns_nothing() {
    let s = server();
    assert!(
        std::mem::size_of::<Session>() <= 48,
        "{}",
        std::mem::size_of::<Session>()
    );
    assert_eq!(s.heap_bytes(), 0);
    // After a fragmented message, the buffers go at the next read.
    let mut s = server();
    let mut bytes = frame_bytes(false, false, OpCode::Text, b"Hel", Some(MASK));
    bytes.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        b"lo",
        Some(MASK),
    ));
    let (ev, _) = feed(&mut s, &bytes, &[]);
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, b"Hello".to_vec())]);
    let mut out = Vec::new();
    assert_eq!(s.read(&mut [], &mut out).event, Event::NeedMore);
    assert_eq!(s.heap_bytes(), 0);
}

#[test]
fn single_frame_message_is_borrowed_from_the_input() {
    let mut s = server();
    let mut input = frame_bytes(true, false, OpCode::Binary, b"abcdef", Some(MASK));
    let range = input.as_ptr_range();
    let mut out = Vec::new();
    let r = s.read(&mut input, &mut out);
    let Event::Message(Message::Binary(b)) = r.event else {
        panic!("{:?}", r.event)
    };
    assert_eq!(b, b"abcdef");
    assert!(range.contains(&b.as_ptr()), "not a slice of the input");
    assert!(out.is_empty());
}

#[test]
fn fragments_with_a_ping_between() {
    let mut s = server();
    let mut bytes = frame_bytes(false, false, OpCode::Text, b"Hel", Some(MASK));
    bytes.extend(frame_bytes(
        true,
        false,
        OpCode::Ping,
        b"are you there",
        Some(MASK),
    ));
    bytes.extend(frame_bytes(
        false,
        false,
        OpCode::Continuation,
        b"",
        Some(MASK),
    ));
    bytes.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        b"lo",
        Some(MASK),
    ));
    bytes.extend(frame_bytes(true, false, OpCode::Pong, b"p", Some(MASK)));
    for cuts in [
        vec![],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        (0..bytes.len()).collect(),
    ] {
        let mut s2 = server();
        let (ev, out) = feed(&mut s2, &bytes, &cuts);
        assert_eq!(
            ev,
            vec![
                Ev::Msg(MessageKind::Text, b"Hello".to_vec()),
                Ev::Pong(b"p".to_vec())
            ]
        );
        assert_eq!(
            frames_of(&out),
            vec![(OpCode::Pong, b"are you there".to_vec())]
        );
        // Server output is unmasked.
        assert_eq!(out[1] & 0x80, 0);
    }
    let (ev, _) = feed(&mut s, &bytes, &[]);
    assert_eq!(ev.len(), 2);
}

fn expect_failure(bytes: &[u8], code: u16) {
    for cuts in [vec![], (0..bytes.len()).collect::<Vec<_>>()] {
        let mut s = server();
        let (ev, out) = feed(&mut s, bytes, &cuts);
        assert_eq!(
            ev.last(),
            Some(&Ev::Failed(code)),
            "{bytes:02x?} cut {cuts:?}"
        );
        let frames = frames_of(&out);
        let (op, p) = frames.last().unwrap();
        assert_eq!(*op, OpCode::Close);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), code);
        assert_eq!(s.state(), State::Closed);
        // Finished: later input is ignored.
        let mut more = frame_bytes(true, false, OpCode::Text, b"x", Some(MASK));
        let mut out = Vec::new();
        let len = more.len();
        let r = s.read(&mut more, &mut out);
        assert_eq!((r.consumed, r.event, out.len()), (len, Event::NeedMore, 0));
    }
}

#[test]
fn protocol_errors_close_with_1002() {
    // Unmasked client frame.
    expect_failure(&frame_bytes(true, false, OpCode::Text, b"hi", None), 1002);
    // Reserved opcodes.
    expect_failure(&[0x83, 0x80, 1, 2, 3, 4], 1002);
    expect_failure(&[0x8B, 0x80, 1, 2, 3, 4], 1002);
    // RSV1 without deflate, RSV2.
    expect_failure(
        &frame_bytes(true, true, OpCode::Text, b"hi", Some(MASK)),
        1002,
    );
    expect_failure(&[0xA1, 0x80, 1, 2, 3, 4], 1002);
    // Continuation without a message; new message inside a fragmented one.
    expect_failure(
        &frame_bytes(true, false, OpCode::Continuation, b"x", Some(MASK)),
        1002,
    );
    let mut b = frame_bytes(false, false, OpCode::Text, b"a", Some(MASK));
    b.extend(frame_bytes(true, false, OpCode::Binary, b"b", Some(MASK)));
    expect_failure(&b, 1002);
    // Fragmented ping, control frame over 125 bytes.
    expect_failure(
        &frame_bytes(false, false, OpCode::Ping, b"x", Some(MASK)),
        1002,
    );
    expect_failure(
        &frame_bytes(true, false, OpCode::Ping, &[0u8; 126], Some(MASK)),
        1002,
    );
    // Bad close payloads.
    expect_failure(
        &frame_bytes(true, false, OpCode::Close, b"\x03", Some(MASK)),
        1002,
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 5000] {
        expect_failure(&close_frame(code, ""), 1002);
    }
    expect_failure(
        &frame_bytes(true, false, OpCode::Close, b"\x03\xe8\xff", Some(MASK)),
        1007,
    );
}

#[test]
fn invalid_utf8_fails_fast_across_fragments() {
    // Valid text, then an invalid byte in a non-final fragment: fails before
    // the message ends.
    let mut b = frame_bytes(false, false, OpCode::Text, "κόσμε".as_bytes(), Some(MASK));
    b.extend(frame_bytes(
        false,
        false,
        OpCode::Continuation,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        Some(MASK),
    ));
    expect_failure(&b, 1007);
    // In one frame whose end has not arrived yet: fails on the bytes seen.
    let whole = frame_bytes(
        true,
        false,
        OpCode::Text,
        b"ok \xff and a long tail that has not arrived",
        Some(MASK),
    );
    let mut s = server();
    let (ev, _) = feed(&mut s, &whole[..12], &[]);
    assert_eq!(ev, vec![Ev::Failed(1007)]);
    // A character cut between fragments is fine.
    let euro = "€".as_bytes();
    let mut b = frame_bytes(false, false, OpCode::Text, &euro[..1], Some(MASK));
    b.extend(frame_bytes(
        false,
        false,
        OpCode::Continuation,
        &euro[1..2],
        Some(MASK),
    ));
    b.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        &euro[2..],
        Some(MASK),
    ));
    let (ev, _) = feed(&mut server(), &b, &[]);
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, euro.to_vec())]);
    // ... but not at the end of the message.
    let mut b = frame_bytes(false, false, OpCode::Text, b"a", Some(MASK));
    b.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        &euro[..2],
        Some(MASK),
    ));
    expect_failure(&b, 1007);
    expect_failure(
        &frame_bytes(true, false, OpCode::Text, &euro[..2], Some(MASK)),
        1007,
    );
    // Binary is not checked.
    let (ev, _) = feed(
        &mut server(),
        &frame_bytes(true, false, OpCode::Binary, b"\xff", Some(MASK)),
        &[],
    );
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Binary, vec![0xff])]);
}

#[test]
fn limits_close_with_1009() {
    let cfg = SessionConfig {
        max_frame: 100,
        max_message: 150,
        ..SessionConfig::default()
    };
    let mut s = Session::server(&cfg, None);
    let (ev, _) = feed(
        &mut s,
        &frame_bytes(true, false, OpCode::Binary, &[1; 101], Some(MASK)),
        &[],
    );
    assert_eq!(ev, vec![Ev::Failed(1009)]);
    let mut b = frame_bytes(false, false, OpCode::Binary, &[1; 100], Some(MASK));
    b.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        &[1; 51],
        Some(MASK),
    ));
    let mut s = Session::server(&cfg, None);
    let (ev, _) = feed(&mut s, &b, &[]);
    assert_eq!(ev, vec![Ev::Failed(1009)]);
    // Exactly at the limits: fine.
    let mut b = frame_bytes(false, false, OpCode::Binary, &[1; 100], Some(MASK));
    b.extend(frame_bytes(
        true,
        false,
        OpCode::Continuation,
        &[2; 50],
        Some(MASK),
    ));
    let mut s = Session::server(&cfg, None);
    let (ev, _) = feed(&mut s, &b, &[7]);
    assert!(matches!(&ev[..], [Ev::Msg(MessageKind::Binary, v)] if v.len() == 150));
    // The header alone announces a too-big frame: no need to wait for it.
    let mut s = Session::server(&cfg, None);
    let (ev, _) = feed(
        &mut s,
        &[0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4],
        &[],
    );
    assert_eq!(ev, vec![Ev::Failed(1009)]);
}

#[test]
fn peer_initiated_close_is_echoed() {
    let mut s = server();
    let mut b = frame_bytes(true, false, OpCode::Text, b"last", Some(MASK));
    b.extend(close_frame(1000, "bye"));
    b.extend(frame_bytes(
        true,
        false,
        OpCode::Text,
        b"after close",
        Some(MASK),
    ));
    let (ev, out) = feed(&mut s, &b, &[]);
    assert_eq!(
        ev,
        vec![
            Ev::Msg(MessageKind::Text, b"last".to_vec()),
            Ev::Closed(1000, "bye".into())
        ]
    );
    assert_eq!(
        frames_of(&out),
        vec![(OpCode::Close, 1000u16.to_be_bytes().to_vec())]
    );
    assert_eq!(s.state(), State::Closed);
    // An empty close gets an empty close back.
    let mut s = server();
    let (ev, out) = feed(
        &mut s,
        &frame_bytes(true, false, OpCode::Close, b"", Some(MASK)),
        &[],
    );
    assert_eq!(ev, vec![Ev::Closed(1005, String::new())]);
    assert_eq!(frames_of(&out), vec![(OpCode::Close, vec![])]);
    assert!(s.send(MessageKind::Text, b"x", &mut Vec::new()).is_err());
}

#[test]
fn server_initiated_close_and_its_timeout() {
    let t0 = Instant::now();
    let cfg = SessionConfig {
        close_timeout: Duration::from_secs(5),
        ..SessionConfig::default()
    };
    let mut s = Session::server(&cfg, None);
    assert_eq!(s.deadline(), None);
    let mut out = Vec::new();
    assert!(s.close(CloseCode::GOING_AWAY, "server stopping", t0, &mut out));
    assert!(
        !s.close(CloseCode::NORMAL, "", t0, &mut out),
        "only one close"
    );
    let frames = frames_of(&out);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1[..2], 1001u16.to_be_bytes());
    assert_eq!(&frames[0].1[2..], b"server stopping");
    assert_eq!(s.state(), State::CloseSent);
    assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(5)));
    assert!(s.send(MessageKind::Binary, b"no", &mut out).is_err());
    // Data and pings meanwhile: dropped, not answered.
    let mut b = frame_bytes(true, false, OpCode::Text, b"late", Some(MASK));
    b.extend(frame_bytes(true, false, OpCode::Ping, b"", Some(MASK)));
    let (ev, out2) = feed(&mut s, &b, &[3]);
    assert_eq!((ev, out2.len()), (vec![], 0));
    assert!(!s.handle_timeout(t0 + Duration::from_millis(4999)));
    assert!(s.handle_timeout(t0 + Duration::from_secs(5)));
    assert_eq!(s.state(), State::Closed);
    // Answered in time instead: finished with no further output.
    let mut s = Session::server(&cfg, None);
    s.close(CloseCode::GOING_AWAY, "", t0, &mut Vec::new());
    let (ev, out) = feed(&mut s, &close_frame(1001, ""), &[]);
    assert_eq!((ev, out.len()), (vec![Ev::Closed(1001, String::new())], 0));
    assert!(!s.handle_timeout(t0 + Duration::from_secs(60)));
}

#[test]
fn client_masks_and_reads_unmasked() {
    let mut c = Session::client(&SessionConfig::default(), None);
    let mut out = Vec::new();
    c.send(MessageKind::Text, b"hello server", &mut out)
        .unwrap();
    assert_ne!(out[1] & 0x80, 0, "client frames are masked");
    let mut s = server();
    let (ev, _) = feed(&mut s, &out, &[]);
    assert_eq!(
        ev,
        vec![Ev::Msg(MessageKind::Text, b"hello server".to_vec())]
    );
    // A masked frame from the server is refused by the client.
    let (ev, cout) = feed(
        &mut c,
        &frame_bytes(true, false, OpCode::Text, b"x", Some(MASK)),
        &[],
    );
    assert_eq!(ev, vec![Ev::Failed(1002)]);
    let fr = frames_of(&cout);
    assert_eq!(fr[0].0, OpCode::Close);
    // Pings are answered with masked pongs.
    let mut c = Session::client(&SessionConfig::default(), None);
    let (_, cout) = feed(
        &mut c,
        &frame_bytes(true, false, OpCode::Ping, b"pp", None),
        &[],
    );
    assert_ne!(cout[1] & 0x80, 0);
    assert_eq!(frames_of(&cout), vec![(OpCode::Pong, b"pp".to_vec())]);
}

pub(crate) fn deflate_params(cfg: &DeflateConfig, offer: &str) -> DeflateParams {
    let mut offers: Vec<ExtensionOffer> = Vec::new();
    crate::protocol::websocket::deflate::parse_extensions(offer, &mut offers).unwrap();
    negotiate(&offers, cfg).unwrap()
}

/// RFC 7692 §7.2.3: the example payloads, as a client receives them.
#[test]
fn rfc7692_examples() {
    let params = deflate_params(&DeflateConfig::default(), "permessage-deflate");
    let hello = |bytes: &[u8]| {
        let mut c = Session::client(&SessionConfig::default(), Some(params));
        feed(&mut c, bytes, &[]).0
    };
    let want = vec![Ev::Msg(MessageKind::Text, b"Hello".to_vec())];
    // §7.2.3.1 a message compressed, unfragmented and fragmented.
    assert_eq!(
        hello(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
        want
    );
    assert_eq!(
        hello(&[
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00
        ]),
        want
    );
    // §7.2.3.2 sharing the LZ77 window: the second "Hello" refers back.
    let mut c = Session::client(&SessionConfig::default(), Some(params));
    let mut two = vec![0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    two.extend([0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
    assert_eq!(
        feed(&mut c, &two, &[]).0,
        [want.clone(), want.clone()].concat()
    );
    // §7.2.3.3 a stored (uncompressed) DEFLATE block.
    assert_eq!(
        hello(&[
            0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00
        ]),
        want
    );
    // §7.2.3.4 BFINAL set.
    assert_eq!(
        hello(&[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]),
        want
    );
    // §7.2.3.5 two DEFLATE blocks in one message.
    assert_eq!(
        hello(&[
            0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
            0x00
        ]),
        want
    );
    // §7.2.3.6 an empty message: a single 0x00 byte.
    let mut c = Session::client(&SessionConfig::default(), Some(params));
    assert_eq!(
        feed(&mut c, &[0xc1, 0x01, 0x00], &[]).0,
        vec![Ev::Msg(MessageKind::Text, vec![])]
    );
    // The server side compresses "Hello" as §7.2.3.1 shows (zlib output).
    let mut s = Session::server(
        &SessionConfig::default(),
        Some(DeflateParams {
            min_compress_len: 0,
            ..params
        }),
    );
    let mut out = Vec::new();
    s.send(MessageKind::Text, b"Hello", &mut out).unwrap();
    s.send(MessageKind::Text, b"Hello", &mut out).unwrap();
    let mut c = Session::client(&SessionConfig::default(), Some(params));
    assert_eq!(feed(&mut c, &out, &[]).0, [want.clone(), want].concat());
    assert_eq!(out[0], 0xc1);
}

#[test]
fn compression_bomb_closes_with_1009_without_allocating_it() {
    let params = deflate_params(&DeflateConfig::default(), "permessage-deflate");
    // 64 MiB of zeros compress to about 64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let mut compressed = Vec::new();
    Deflater::new(15, 9).compress(&zeros, &mut compressed);
    assert!(compressed.len() < 100_000, "{}", compressed.len());
    let cfg = SessionConfig {
        max_message: 1 << 20,
        ..SessionConfig::default()
    };
    let mut s = Session::server(&cfg, Some(params));
    let mut input = frame_bytes(true, true, OpCode::Binary, &compressed, Some(MASK));
    let mut out = Vec::new();
    let r = s.read(&mut input, &mut out);
    assert!(
        matches!(
            r.event,
            Event::Failed {
                code: CloseCode::TOO_BIG,
                ..
            }
        ),
        "{:?}",
        r.event
    );
    assert!(s.heap_bytes() < 2 << 20, "{}", s.heap_bytes());
}

#[test]
fn corrupt_compressed_data_closes_with_1007() {
    let params = deflate_params(&DeflateConfig::default(), "permessage-deflate");
    let mut s = Session::server(&SessionConfig::default(), Some(params));
    let (ev, _) = feed(
        &mut s,
        &frame_bytes(
            true,
            true,
            OpCode::Binary,
            &[0xff, 0xff, 0xff, 0xff],
            Some(MASK),
        ),
        &[],
    );
    assert_eq!(ev, vec![Ev::Failed(1007)]);
    // RSV1 on a continuation frame is a protocol error.
    let mut s = Session::server(&SessionConfig::default(), Some(params));
    let mut b = frame_bytes(false, true, OpCode::Binary, &[0xf2], Some(MASK));
    b.extend(frame_bytes(
        true,
        true,
        OpCode::Continuation,
        &[0x00],
        Some(MASK),
    ));
    assert_eq!(feed(&mut s, &b, &[]).0, vec![Ev::Failed(1002)]);
}

#[test]
fn no_context_takeover_keeps_no_context_between_messages() {
    let params = deflate_params(
        &DeflateConfig::default(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    let params = DeflateParams {
        min_compress_len: 0,
        ..params
    };
    let mut s = Session::server(&SessionConfig::default(), Some(params));
    let mut c = Session::client(&SessionConfig::default(), Some(params));
    let mut out = Vec::new();
    c.send(MessageKind::Text, &b"abc".repeat(100), &mut out)
        .unwrap();
    c.send(MessageKind::Text, &b"abc".repeat(100), &mut out)
        .unwrap();
    let (ev, _) = feed(&mut s, &out, &[5, 9]);
    assert_eq!(ev.len(), 2);
    s.read(&mut [], &mut Vec::new());
    // Only the Box<DeflateState> remains.
    assert!(s.heap_bytes() < 100, "{}", s.heap_bytes());
    let mut sout = Vec::new();
    s.send(MessageKind::Binary, &[7u8; 1000], &mut sout)
        .unwrap();
    s.send(MessageKind::Binary, &[7u8; 1000], &mut sout)
        .unwrap();
    let (ev, _) = feed(&mut c, &sout, &[]);
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Binary, vec![7; 1000]); 2]);
    assert!(s.heap_bytes() < 100);
}

#[test]
fn prepared_message_shares_frames() {
    let mut plain = server();
    let nct = deflate_params(
        &DeflateConfig::default(),
        "permessage-deflate; server_no_context_takeover",
    );
    let takeover = deflate_params(&DeflateConfig::default(), "permessage-deflate");
    let mut a = Session::server(&SessionConfig::default(), Some(nct));
    let mut b = Session::server(&SessionConfig::default(), Some(nct));
    let mut t = Session::server(&SessionConfig::default(), Some(takeover));
    let payload = "broadcast ".repeat(50);
    let mut msg = PreparedMessage::new(MessageKind::Text, payload.clone().into_bytes());
    let mut out = Vec::new();
    let Outgoing::Shared(p) = plain.send_prepared(&mut msg, &mut out).unwrap() else {
        panic!()
    };
    assert_eq!(&p, msg.plain_frame());
    let Outgoing::Shared(fa) = a.send_prepared(&mut msg, &mut out).unwrap() else {
        panic!()
    };
    let Outgoing::Shared(fb) = b.send_prepared(&mut msg, &mut out).unwrap() else {
        panic!()
    };
    assert_eq!(fa.as_ptr(), fb.as_ptr(), "compressed once");
    assert_eq!(msg.compressed_variants(), 1);
    assert!(fa.len() < payload.len() / 4);
    assert_eq!(
        t.send_prepared(&mut msg, &mut out).unwrap(),
        Outgoing::Written
    );
    assert!(out.len() < payload.len() / 4);
    for (frame, params) in [
        (&p[..], None),
        (&fa[..], Some(nct)),
        (&out[..], Some(takeover)),
    ] {
        let mut c = Session::client(&SessionConfig::default(), params);
        assert_eq!(
            feed(&mut c, frame, &[]).0,
            vec![Ev::Msg(MessageKind::Text, payload.clone().into_bytes())]
        );
    }
    // Short messages are not compressed: the plain frame.
    let mut short = PreparedMessage::new(MessageKind::Binary, vec![1u8, 2, 3]);
    assert_eq!(
        a.send_prepared(&mut short, &mut out).unwrap(),
        Outgoing::Shared(short.plain_frame().clone())
    );
    let mut hdr = [0u8; frame::MAX_HEADER_LEN];
    let n = server_frame_header(MessageKind::Binary, 3, &mut hdr);
    assert_eq!(&short.plain_frame()[..n], &hdr[..n]);
}

#[test]
fn is_receiving_while_a_message_is_partly_in() {
    let mut c = Session::client(&SessionConfig::default(), None);
    let mut out = Vec::new();
    assert!(!c.is_receiving());
    assert_eq!(c.receiving(), None);
    // Part of one frame's payload: absorbed, the message in progress.
    let mut part = vec![0x82, 10, 1, 2, 3];
    let r = c.read(&mut part, &mut out);
    assert_eq!((r.consumed, r.event), (5, Event::NeedMore));
    assert!(c.is_receiving());
    assert_eq!(c.receiving(), Some((3, Some(7))), "3 bytes in, 7 to come");
    let mut rest = [4, 5, 6, 7, 8, 9, 10];
    let r = c.read(&mut rest, &mut out);
    assert_eq!(
        r.event,
        Event::Message(Message::Binary(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    );
    assert!(!c.is_receiving());
    // A first fragment, then a ping: still in the middle of the message.
    let mut frames = vec![0x01, 1, b'a', 0x89, 0];
    let r = c.read(&mut frames, &mut out);
    assert_eq!(r.event, Event::NeedMore);
    assert!(c.is_receiving());
    assert_eq!(c.receiving(), Some((1, None)), "more fragments may follow");
}
