//! Checks of the WebSocket protocol (`ringport::protocol::websocket`):
//!
//! - [`check_frames`]: a server (or client) session fed arbitrary bytes, whole
//!   and cut at the input's points: no panic; the same events either way;
//!   the session's heap bounded by the message limit; its output made of
//!   well-formed frames (pongs, at most one close, whose code is the one the
//!   failure reported). Then a round trip: messages taken from the input,
//!   sent by a client session (masked, compressed or not), fragmented by
//!   hand, must come out of the server session unchanged.
//! - [`check_handshake`]: the upgrade request parser on arbitrary bytes:
//!   no panic; a complete request is complete at its own length and
//!   partial before; refusals carry a known status and a parseable
//!   response; an accepted request yields a 101 that httparse reads; and
//!   the extension header grammar and permessage-deflate negotiation:
//!   the parameters answered read back identically on the client side.
//! - [`check_inflate`]: the bounded inflater on arbitrary data: no panic;
//!   output and allocation within the limit; agreement with miniz_oxide
//!   (flate2's pure-Rust backend, a different implementation) whenever both
//!   inflate and the output fits (acceptance differs legitimately: zlib is
//!   stricter on Huffman tables, miniz on streams cut inside a block); compress→inflate round trip of the input for every window.
//!
//! Input layout: that of [`crate::parse_input`]; `settings[0]` holds the
//! flags (bit 0 deflate, bit 1 no context takeover, bit 2 client role,
//! bits 3–4 the limits, bits 5–7 window bits − 9 clamped to 15), `param` a
//! compression level, then the cut points and the stream.

use ringport::protocol::websocket::deflate::{
    self, DeflateConfig, DeflateParams, Deflater, Inflater,
};
use ringport::protocol::websocket::frame::{self, OpCode};
use ringport::protocol::websocket::{
    AcceptOptions, ClientHandshake, ClientOptions, CloseCode, Event, HandshakeLimits, MessageKind,
    Refusal, RequestStatus, ResponseStatus, Session, SessionConfig, parse_request,
};

use crate::{Rng, cut, parse_input};

/// An owned event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Msg(MessageKind, Vec<u8>),
    Pong(Vec<u8>),
    Closed(u16, String),
    Failed(u16),
}

struct Flags {
    deflate: bool,
    nct: bool,
    client: bool,
    cfg: SessionConfig,
    bits: u8,
    level: u8,
}

fn flags(settings: [u8; 4], param: u8) -> Flags {
    let f = settings[0];
    let (max_frame, max_message) = match (f >> 3) & 3 {
        0 => (16 << 20, 16 << 20),
        1 => (100, 300),
        2 => (1000, 1000),
        _ => (70_000, 200_000),
    };
    Flags {
        deflate: f & 1 != 0,
        nct: f & 2 != 0,
        client: f & 4 != 0,
        cfg: SessionConfig {
            max_frame,
            max_message,
            ..SessionConfig::default()
        },
        bits: (9 + (f >> 5)).min(15),
        level: param % 10,
    }
}

fn params(fl: &Flags) -> Option<DeflateParams> {
    fl.deflate.then_some(DeflateParams {
        server_no_context_takeover: fl.nct,
        client_no_context_takeover: fl.nct,
        server_max_window_bits: fl.bits,
        client_max_window_bits: fl.bits,
        level: fl.level,
        min_compress_len: 8,
    })
}

/// Feeds reads to a session as a caller with one buffer would; returns the
/// events and the output. Asserts the memory bound after every event.
pub fn feed(s: &mut Session, reads: &[&[u8]], max_message: usize) -> (Vec<Ev>, Vec<u8>) {
    // Reassembly and inflate buffers (≤ 2 messages of slack each), the
    // assembly itself, and contexts counted at their cost.
    let bound = 4 * max_message + 4096 + s.deflate_cost();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    'reads: for r in reads {
        buf.extend_from_slice(r);
        let mut off = 0;
        loop {
            let read = s.read(&mut buf[off..], &mut out);
            off += read.consumed;
            let done = match read.event {
                Event::NeedMore => {
                    buf.drain(..off);
                    // What the caller keeps: at most a header or a control frame.
                    assert!(buf.len() <= 2 + 8 + 4 + 125, "kept {} bytes", buf.len());
                    assert!(s.heap_bytes() <= bound, "heap {} > {bound}", s.heap_bytes());
                    continue 'reads;
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
            assert!(s.heap_bytes() <= bound, "heap {} > {bound}", s.heap_bytes());
            if done {
                break 'reads;
            }
        }
    }
    (events, out)
}

/// The session's output as (opcode, unmasked payload); panics if malformed.
fn output_frames(out: &[u8], masked: bool) -> Vec<(OpCode, Vec<u8>)> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let h = frame::decode_header(&out[pos..], true)
            .expect("valid header")
            .expect("whole header");
        assert_eq!(h.mask.is_some(), masked, "masking of our own output");
        assert!(h.fin);
        let end = pos + h.header_len + h.payload_len as usize;
        assert!(end <= out.len(), "truncated output frame");
        let mut p = out[pos + h.header_len..end].to_vec();
        if let Some(m) = h.mask {
            frame::apply_mask(&mut p, m, 0);
        }
        v.push((h.opcode, p));
        pos = end;
    }
    v
}

/// Session fed arbitrary bytes, then a round trip of messages from the input.
pub fn check_frames(data: &[u8]) {
    let input = parse_input(data);
    let fl = flags(input.settings, input.param);
    let p = params(&fl);
    let new = || {
        if fl.client {
            Session::client(&fl.cfg, p)
        } else {
            Session::server(&fl.cfg, p)
        }
    };
    let mut whole_s = new();
    let whole = feed(&mut whole_s, &[input.stream], fl.cfg.max_message);
    let mut split_s = new();
    let split = feed(
        &mut split_s,
        &cut(input.stream, &input.cuts),
        fl.cfg.max_message,
    );
    assert_eq!(whole.0, split.0, "events depend on the cuts");
    // (Client output is masked with random keys: compare it unmasked.)
    let frames = output_frames(&whole.1, fl.client);
    assert_eq!(
        frames,
        output_frames(&split.1, fl.client),
        "output depends on the cuts"
    );
    let closes: Vec<_> = frames
        .iter()
        .filter(|(op, _)| *op == OpCode::Close)
        .collect();
    assert!(closes.len() <= 1, "more than one close sent");
    for (op, _) in &frames {
        assert!(
            matches!(op, OpCode::Pong | OpCode::Close),
            "unexpected {op:?} in the output"
        );
    }
    match whole.0.last() {
        Some(Ev::Failed(code)) => {
            let (_, p) = closes.first().expect("a failure sends a close");
            assert_eq!(u16::from_be_bytes([p[0], p[1]]), *code);
            assert!(CloseCode(*code).is_valid_on_wire());
        }
        Some(Ev::Closed(..)) => assert_eq!(closes.len(), 1, "a close is answered"),
        _ => assert!(closes.is_empty()),
    }
    for e in &whole.0 {
        if let Ev::Msg(MessageKind::Text, t) = e {
            assert!(std::str::from_utf8(t).is_ok(), "text message not UTF-8");
        }
        if let Ev::Msg(_, m) = e {
            assert!(m.len() <= fl.cfg.max_message);
        }
    }
    round_trip(&fl, input.stream, &input.cuts);
}

/// Messages carved from `stream` (a length byte then that many bytes),
/// fragmented by hand, sent by a client session (masking, compression),
/// must arrive unchanged at a server session however the bytes are cut.
fn round_trip(fl: &Flags, stream: &[u8], cuts: &[usize]) {
    let p = params(fl);
    let cfg = SessionConfig::default();
    let mut client = Session::client(&cfg, p);
    let mut server = Session::server(&cfg, p);
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let mut rest = stream;
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len & 0x3f).min(tail.len());
        let (body, after) = tail.split_at(n);
        rest = after;
        let text = len & 0x40 != 0;
        let (kind, body) = if text {
            (
                MessageKind::Text,
                String::from_utf8_lossy(body).into_owned().into_bytes(),
            )
        } else {
            (MessageKind::Binary, body.to_vec())
        };
        if len & 0x80 != 0 && !body.is_empty() {
            // Fragmented by hand, uncompressed, a ping in between.
            let op = if text { OpCode::Text } else { OpCode::Binary };
            let mid = body.len() / 2;
            frame::write_frame(
                &mut wire,
                false,
                false,
                op,
                &body[..mid],
                Some([1, 2, 3, 4]),
            );
            frame::write_frame(
                &mut wire,
                true,
                false,
                OpCode::Ping,
                b"x",
                Some([5, 6, 7, 8]),
            );
            frame::write_frame(
                &mut wire,
                true,
                false,
                OpCode::Continuation,
                &body[mid..],
                Some([9, 9, 9, 9]),
            );
        } else {
            client.send(kind, &body, &mut wire).expect("open");
        }
        want.push(Ev::Msg(kind, body));
    }
    let mut wire_cuts: Vec<usize> = cuts.iter().map(|&c| c % (wire.len() + 1)).collect();
    wire_cuts.sort_unstable();
    let (got, out) = feed(&mut server, &cut(&wire, &wire_cuts), cfg.max_message);
    assert_eq!(got, want, "round trip");
    assert!(
        output_frames(&out, false)
            .iter()
            .all(|(op, _)| *op == OpCode::Pong)
    );
}

/// Statuses the parser may refuse with.
const STATUSES: [u16; 4] = [400, 405, 426, 431];

pub fn check_handshake(data: &[u8]) {
    let input = parse_input(data);
    let limits = HandshakeLimits {
        max_head_bytes: if input.param & 1 == 0 { 8192 } else { 200 },
        max_headers: 1 + usize::from(input.param >> 1) % 64,
    };
    let stream = input.stream;
    match parse_request(stream, &limits) {
        RequestStatus::Partial => {
            assert!(stream.len() < limits.max_head_bytes);
            // Every prefix is partial (or refused for a reason visible in it).
            for &c in &input.cuts {
                assert!(!matches!(
                    parse_request(&stream[..c], &limits),
                    RequestStatus::Complete { .. }
                ));
            }
        }
        RequestStatus::Refused(r) => {
            assert!(STATUSES.contains(&r.status), "status {}", r.status);
            check_refusal(r);
        }
        RequestStatus::Complete { request, consumed } => {
            assert!(consumed <= stream.len() && consumed <= limits.max_head_bytes);
            // Complete at its own length, partial before.
            assert!(
                matches!(parse_request(&stream[..consumed], &limits), RequestStatus::Complete { consumed: c, .. } if c == consumed)
            );
            for &c in &input.cuts {
                if c < consumed {
                    assert!(!matches!(
                        parse_request(&stream[..c], &limits),
                        RequestStatus::Complete { .. }
                    ));
                }
            }
            assert_eq!(request.method(), "GET");
            let protocol = request.protocols().first().map(String::as_str);
            let opts = AcceptOptions {
                protocol,
                deflate: Some(DeflateConfig::default()),
                ..AcceptOptions::default()
            };
            let mut out = Vec::new();
            let n = request
                .accept(&opts, None, &mut out)
                .expect("offered protocol");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            assert!(
                matches!(resp.parse(&out), Ok(httparse::Status::Complete(len)) if len == out.len())
            );
            assert_eq!(resp.code, Some(101));
            if let Some(p) = n.deflate {
                check_params_round_trip(&p);
            }
        }
    }
    // The extension grammar and the negotiation on the raw bytes.
    if let Ok(s) = std::str::from_utf8(stream) {
        let mut offers = Vec::new();
        if deflate::parse_extensions(s, &mut offers).is_ok() {
            let cfg = DeflateConfig {
                server_max_window_bits: 9 + input.param % 7,
                client_max_window_bits: 8 + input.param % 8,
                server_no_context_takeover: input.param & 0x40 != 0,
                client_no_context_takeover: input.param & 0x80 != 0,
                ..DeflateConfig::default()
            };
            if let Some(p) = deflate::negotiate(&offers, &cfg) {
                assert!((9..=15).contains(&p.server_max_window_bits));
                assert!((8..=15).contains(&p.client_max_window_bits));
                assert!(p.server_max_window_bits <= cfg.server_max_window_bits);
                check_params_round_trip(&p);
            }
        }
    }
    // Client side: the response parser on the raw bytes must not panic.
    let mut req = Vec::new();
    let hs = ClientHandshake::with_key(
        &ClientOptions {
            host: "h",
            deflate_level: Some(1),
            ..ClientOptions::default()
        },
        [7; 16],
        &mut req,
    );
    if let ResponseStatus::Complete { consumed, .. } = hs.parse_response(stream) {
        assert!(consumed <= stream.len());
    }
}

fn check_refusal(r: Refusal) {
    let mut out = Vec::new();
    r.write_response(&mut out);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    assert!(matches!(
        resp.parse(&out),
        Ok(httparse::Status::Complete(_))
    ));
    assert_eq!(resp.code, Some(r.status));
}

/// The server's answer, read back by the client side, gives the same
/// parameters.
fn check_params_round_trip(p: &DeflateParams) {
    let mut v = Vec::new();
    p.write_response(&mut v);
    let mut back = Vec::new();
    deflate::parse_extensions(std::str::from_utf8(&v).expect("ASCII"), &mut back)
        .expect("our own answer parses");
    assert_eq!(back.len(), 1);
    match DeflateParams::from_response(&back[0], true, p.level) {
        Ok(c) => {
            assert_eq!(
                (
                    c.server_no_context_takeover,
                    c.client_no_context_takeover,
                    c.server_max_window_bits
                ),
                (
                    p.server_no_context_takeover,
                    p.client_no_context_takeover,
                    p.server_max_window_bits
                )
            );
            assert_eq!(c.client_max_window_bits, p.client_max_window_bits);
        }
        // Only a client window of 8 is refused by our own client side.
        Err(_) => assert_eq!(p.client_max_window_bits, 8),
    }
}

pub fn check_inflate(data: &[u8]) {
    let input = parse_input(data);
    let bits = (9 + (input.settings[0] >> 5)).min(15);
    let limit = [0usize, 1, 100, 4096, 70_000][usize::from(input.settings[1]) % 5];
    let stream = input.stream;
    // Arbitrary data through the bounded inflater.
    let mut out = Vec::new();
    let r = Inflater::new(bits).inflate(stream, &mut out, limit);
    assert!(out.len() <= limit);
    assert!(
        out.capacity() <= limit + 1 || out.capacity() <= 256,
        "capacity {} for limit {limit}",
        out.capacity()
    );
    if r.is_err() {
        assert!(out.is_empty());
    }
    // Against miniz_oxide (32 KiB window), for the 15-bit window.
    if bits == 15 {
        let reference = miniz_inflate(stream, limit);
        // Compared only when both inflate. zlib (and zlib-rs) is stricter
        // than miniz_oxide on Huffman tables (it refuses a dynamic block whose
        // code has no end-of-block symbol, "invalid code -- missing
        // end-of-block", which miniz decodes); miniz refuses a stream cut
        // inside a block (e.g. a dynamic block header without its tables)
        // where zlib waits for more input, the message then holding what was
        // decodable.
        if let (Ok(()), Some(Ok(v))) = (&r, reference) {
            assert_eq!(out, v, "differs from miniz_oxide");
        }
    }
    // Round trip of the input itself, several messages on one context.
    let mut d = Deflater::new(bits, input.param % 10);
    let mut i = Inflater::new(bits);
    for chunk in stream.chunks(stream.len() / 3 + 1) {
        let mut c = Vec::new();
        d.compress(chunk, &mut c);
        let mut back = Vec::new();
        i.inflate(&c, &mut back, chunk.len())
            .expect("our own output inflates within its size");
        assert_eq!(back, chunk);
    }
}

/// Raw inflate of `stream` + trailer with miniz_oxide. `None`: the output
/// went past `limit` (no verdict); `Some(Err)`: invalid.
fn miniz_inflate(stream: &[u8], limit: usize) -> Option<Result<Vec<u8>, ()>> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut input = stream.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut r = DecompressorOxide::new();
    let mut out = vec![0u8; limit + 1 + 32 * 1024];
    let cap = out.len();
    let mut out_pos = 0;
    let mut in_pos = 0;
    // Without a wrapping buffer miniz needs the whole output in one buffer.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
        | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
    loop {
        let (status, n_in, n_out) = decompress(&mut r, &input[in_pos..], &mut out, out_pos, flags);
        in_pos += n_in;
        out_pos += n_out;
        if out_pos > limit {
            return None;
        }
        match status {
            TINFLStatus::Done => return Some(Ok(out[..out_pos].to_vec())),
            TINFLStatus::NeedsMoreInput if in_pos >= input.len() => {
                return Some(Ok(out[..out_pos].to_vec()));
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::HasMoreOutput
                if out_pos < cap && (n_in > 0 || n_out > 0) => {}
            TINFLStatus::HasMoreOutput => return None,
            _ => return Some(Err(())),
        }
    }
}

/// Inputs likely to reach deep: for `ws_frames` valid frame streams (some
/// corrupted), for `ws_handshake` upgrade requests with mutations and
/// extension offers, for `ws_inflate` compressed data (some corrupted).
pub fn generate(target: &str, rng: &mut Rng) -> Vec<u8> {
    let mut settings = (rng.next_u64() as u32).to_le_bytes();
    let param = rng.next_u64() as u8;
    let mut stream = Vec::new();
    match target {
        "ws_handshake" => {
            let mut req = String::from(
                "GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            );
            let params = [
                "server_no_context_takeover",
                "client_no_context_takeover",
                "server_max_window_bits=10",
                "client_max_window_bits",
                "client_max_window_bits=8",
                "server_max_window_bits=8",
                "x=\"1\"",
            ];
            for _ in 0..rng.below(3) {
                let mut ext = String::from("permessage-deflate");
                for _ in 0..rng.below(4) {
                    ext.push_str("; ");
                    ext.push_str(params[rng.below(params.len())]);
                }
                req.push_str(&format!("Sec-WebSocket-Extensions: {ext}\r\n"));
            }
            if rng.below(2) == 0 {
                req.push_str("Sec-WebSocket-Protocol: chat, v2\r\n");
            }
            req.push_str("\r\n");
            stream = req.into_bytes();
            for _ in 0..rng.below(3) {
                let i = rng.below(stream.len());
                stream[i] = rng.next_u64() as u8;
            }
        }
        "ws_inflate" => {
            let len = rng.below(3000);
            let plain: Vec<u8> = (0..len)
                .map(|i| {
                    if rng.below(4) == 0 {
                        rng.next_u64() as u8
                    } else {
                        b"abcab"[i % 5]
                    }
                })
                .collect();
            Deflater::new(15, 6).compress(&plain, &mut stream);
            settings[0] |= 0xE0; // 15 bits: the miniz differential applies
            for _ in 0..rng.below(3) {
                if !stream.is_empty() {
                    let i = rng.below(stream.len());
                    stream[i] ^= 1 << rng.below(8);
                }
            }
        }
        _ => {
            let fl = flags(settings, param);
            let mut c = Session::client(&SessionConfig::default(), params(&fl));
            for _ in 0..rng.below(6) {
                let n = if rng.below(32) == 0 {
                    rng.below(20_000)
                } else {
                    rng.below(200)
                };
                let body: Vec<u8> = (0..n)
                    .map(|_| b"hello \xce\xba\xe1\xbd\xb9"[rng.below(11)])
                    .collect();
                let kind = if rng.below(2) == 0 {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                match rng.below(6) {
                    0 => frame::write_frame(
                        &mut stream,
                        true,
                        false,
                        OpCode::Ping,
                        &body[..body.len().min(125)],
                        Some([1, 2, 3, 4]),
                    ),
                    1 => {
                        let mid = body.len() / 2;
                        frame::write_frame(
                            &mut stream,
                            false,
                            false,
                            OpCode::Text,
                            &body[..mid],
                            Some([1, 2, 3, 4]),
                        );
                        frame::write_frame(
                            &mut stream,
                            true,
                            false,
                            OpCode::Continuation,
                            &body[mid..],
                            Some([4, 3, 2, 1]),
                        );
                    }
                    _ => c.send(kind, &body, &mut stream).expect("open"),
                }
            }
            if rng.below(3) == 0 {
                let code = [1000u16, 1001, 1005, 1012, 3000, 999][rng.below(6)];
                frame::write_frame(
                    &mut stream,
                    true,
                    false,
                    OpCode::Close,
                    &code.to_be_bytes(),
                    Some([1, 1, 1, 1]),
                );
            }
            for _ in 0..rng.below(3) {
                if !stream.is_empty() {
                    let i = rng.below(stream.len());
                    stream[i] = rng.next_u64() as u8;
                }
            }
        }
    }
    let k = rng.below(16);
    let mut data = settings.to_vec();
    data.push(param);
    data.push(k as u8);
    for _ in 0..k {
        let c = rng.below(stream.len() + 1) as u16;
        data.extend_from_slice(&c.to_le_bytes());
    }
    data.extend_from_slice(&stream);
    data
}
