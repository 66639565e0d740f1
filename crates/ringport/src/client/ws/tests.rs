//! Unit tests of the WebSocket client's sans-I/O parts.

use super::*;

#[test]
fn urls() {
    let u = WsUrl::parse("ws://example.com/chat?room=1").unwrap();
    assert_eq!(
        (u.tls, u.host.as_str(), u.port, u.host_header.as_str()),
        (false, "example.com", 80, "example.com")
    );
    assert_eq!(u.target, "/chat?room=1");
    let u = WsUrl::parse("wss://[::1]:9443").unwrap();
    assert_eq!(
        (u.tls, u.host.as_str(), u.port, u.host_header.as_str()),
        (true, "::1", 9443, "[::1]:9443")
    );
    assert_eq!(u.target, "/");
    let u = WsUrl::parse("WSS://h:443/").unwrap();
    assert_eq!((u.port, u.host_header.as_str()), (443, "h"));
    let u = WsUrl::parse("ws://127.0.0.1:9001?x=1").unwrap();
    assert_eq!(u.target, "/?x=1");
    for bad in [
        "http://h/",
        "h:80",
        "ws:///path",
        "ws://h/#frag",
        "ws://user@h/",
        "ws://h:99999/",
        "ws://h:0/",
        "",
    ] {
        let e = WsUrl::parse(bad).expect_err(bad);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        assert!(e.to_string().contains("bad WebSocket URL"), "{e}");
    }
}

#[test]
fn headers_cannot_inject_lines() {
    assert!(check_headers(&[("Origin".into(), "https://a".into())]).is_ok());
    for (k, v) in [("X", "a\r\nEvil: 1"), ("", "v"), ("X\n", "v")] {
        let e = check_headers(&[(k.into(), v.into())]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

/// Server frames fed to a client state: a message split across reads,
/// a ping answered with a masked pong, then a close handshake.
#[test]
fn step_reassembles_answers_pings_and_closes() {
    let mut ws = WsState::new(&SessionConfig::default(), None, None);
    let mut wire = Vec::new();
    // Text "hello" in two fragments, a ping between them.
    wire.extend_from_slice(&[0x01, 3, b'h', b'e', b'l']);
    wire.extend_from_slice(&[0x89, 2, b'h', b'i']);
    wire.extend_from_slice(&[0x80, 2, b'l', b'o']);
    wire.extend_from_slice(&[0x82, 1, 7]);
    wire.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
    let mut dst = Vec::new();
    let (used, step) = ws.step(&mut wire[..4], &mut dst);
    assert!(matches!(step, Step::NeedMore));
    let mut rest = wire[used..].to_vec();
    let (used, step) = ws.step(&mut rest, &mut dst);
    assert!(matches!(step, Step::Message(MessageKind::Text)), "{step:?}");
    assert_eq!(dst, b"hello");
    // The pong: masked, opcode 0xA, payload "hi".
    assert_eq!(ws.out[0], 0x8a);
    assert_eq!(ws.out[1], 0x80 | 2);
    ws.out.clear();
    let mut rest = rest[used..].to_vec();
    let (used, step) = ws.step(&mut rest, &mut dst);
    assert!(matches!(step, Step::Message(MessageKind::Binary)));
    assert_eq!(dst, [7]);
    let (_, step) = ws.step(&mut rest[used..], &mut dst);
    let Step::Ended(e) = step else {
        panic!("{step:?}")
    };
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("WebSocket close 1000"), "{e}");
    // The close echoed (masked).
    assert_eq!(ws.out[0], 0x88);
    // Later calls report the same end.
    assert_eq!(
        ws.frame(MessageKind::Binary, b"x").unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[test]
fn a_masked_server_frame_is_invalid_data() {
    let mut ws = WsState::new(&SessionConfig::default(), None, None);
    let mut wire = vec![0x82, 0x81, 1, 2, 3, 4, 9];
    let (_, step) = ws.step(&mut wire, &mut Vec::new());
    let Step::Ended(e) = step else {
        panic!("{step:?}")
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("1002"), "{e}");
    assert_eq!(ws.eof(false).kind(), io::ErrorKind::InvalidData);
}

#[test]
fn eof_without_close() {
    let mut ws = WsState::new(&SessionConfig::default(), None, None);
    let e = ws.eof(false);
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("without a WebSocket close"));
    let mut ws = WsState::new(&SessionConfig::default(), None, None);
    assert_eq!(ws.eof(true).to_string(), "connection closed mid-frame");
}
