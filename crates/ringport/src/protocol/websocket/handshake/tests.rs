use super::*;
use crate::protocol::websocket::client::{ClientHandshake, ClientOptions, ResponseStatus};

const REQ: &str = "GET /chat?token=abc HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn parse(s: &str) -> RequestStatus {
    parse_request(s.as_bytes(), &HandshakeLimits::default())
}

fn status_of(s: &str) -> u16 {
    match parse(s) {
        RequestStatus::Refused(r) => r.status,
        other => panic!("not refused: {other:?}"),
    }
}

/// RFC 6455 §1.3.
#[test]
fn accept_key_example() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn parses_the_rfc_request_incrementally() {
    for cut in 0..REQ.len() {
        assert!(
            matches!(parse(&REQ[..cut]), RequestStatus::Partial),
            "cut at {cut}"
        );
    }
    let mut bytes = REQ.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x81, 0x80]); // a frame right behind
    let RequestStatus::Complete { request, consumed } =
        parse_request(&bytes, &HandshakeLimits::default())
    else {
        panic!()
    };
    assert_eq!(consumed, REQ.len());
    assert_eq!(
        (
            request.method(),
            request.target(),
            request.path(),
            request.query()
        ),
        ("GET", "/chat?token=abc", "/chat", Some("token=abc"))
    );
    assert_eq!(request.header("origin"), Some(&b"http://example.com"[..]));
    assert_eq!(request.protocols(), ["chat", "superchat"]);
    assert_eq!(request.headers().count(), 7);
    assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");

    let mut out = Vec::new();
    let n = request
        .accept(
            &AcceptOptions {
                protocol: Some("chat"),
                ..AcceptOptions::default()
            },
            None,
            &mut out,
        )
        .unwrap();
    assert_eq!(n.deflate, None);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    assert_eq!(
        request.accept(
            &AcceptOptions {
                protocol: Some("mqtt"),
                ..AcceptOptions::default()
            },
            None,
            &mut Vec::new()
        ),
        Err(AcceptError::ProtocolNotOffered)
    );
}

#[test]
fn refusals() {
    assert_eq!(status_of(&REQ.replace("GET", "POST")), 405);
    assert_eq!(status_of(&REQ.replace("HTTP/1.1", "HTTP/1.0")), 400);
    assert_eq!(
        status_of(&REQ.replace("Upgrade: websocket", "Upgrade: h2c")),
        400
    );
    assert_eq!(
        status_of(&REQ.replace("Connection: Upgrade", "Connection: keep-alive")),
        400
    );
    assert_eq!(
        status_of(&REQ.replace("Host: server.example.com\r\n", "")),
        400
    );
    assert_eq!(
        status_of(&REQ.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
        400
    );
    assert_eq!(
        status_of(&REQ.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!")),
        400
    );
    assert_eq!(
        status_of(&REQ.replace("Sec-WebSocket-Version: 13\r\n", "")),
        400
    );
    assert_eq!(status_of(&REQ.replace("GET /chat", "GET\x01 /chat")), 400);
    assert_eq!(
        status_of(&REQ.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")),
        426
    );
    let mut out = Vec::new();
    Refusal {
        status: 426,
        reason: "",
    }
    .write_response(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 426 Upgrade Required\r\n")
            && text.contains("Sec-WebSocket-Version: 13\r\n")
    );
    // Token lists and case.
    let ok = REQ
        .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE")
        .replace("Upgrade: websocket", "upgrade: WebSocket");
    assert!(matches!(parse(&ok), RequestStatus::Complete { .. }));
    // Size limits: 431 (too long, too many headers), even before the end.
    let big = REQ.replace(
        "Origin:",
        &format!("X-Pad: {}\r\nOrigin:", "a".repeat(9000)),
    );
    assert_eq!(status_of(&big), 431);
    assert_eq!(status_of(&big[..8500]), 431);
    let many = REQ
        .replace("Origin:", &"X-A: 1\r\n".repeat(70).to_string())
        .replace("\r\nX-A: 1\r\nOrigin", "\r\nOrigin");
    assert_eq!(status_of(&(many + "")), 431);
    let mut out = Vec::new();
    write_refusal(401, &[("WWW-Authenticate", "Bearer")], &mut out);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n")
    );
}

#[test]
fn deflate_negotiation_and_budget() {
    let req = REQ.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    let RequestStatus::Complete { request, .. } = parse(&req) else {
        panic!()
    };
    assert_eq!(request.extensions().len(), 1);
    let opts = AcceptOptions {
        deflate: Some(DeflateConfig {
            client_max_window_bits: 12,
            ..DeflateConfig::default()
        }),
        ..AcceptOptions::default()
    };
    let mut out = Vec::new();
    let n = request.accept(&opts, None, &mut out).unwrap();
    assert_eq!(n.deflate.unwrap().client_max_window_bits, 12);
    assert!(
        String::from_utf8(out).unwrap().contains(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12\r\n"
        )
    );
    // A budget with room for one connection.
    let cost = n.deflate.unwrap().context_cost(true);
    let mut budget = DeflateBudget::new(cost + cost / 2);
    let first = request
        .accept(&opts, Some(&mut budget), &mut Vec::new())
        .unwrap();
    assert_eq!(first.deflate_reserved, cost);
    let mut out = Vec::new();
    let second = request.accept(&opts, Some(&mut budget), &mut out).unwrap();
    assert_eq!((second.deflate, second.deflate_reserved), (None, 0));
    assert!(!String::from_utf8(out).unwrap().contains("Extensions"));
    budget.release(first.deflate_reserved);
    assert_eq!(budget.used(), 0);
    // A broken extensions header: no extension, still upgraded.
    let RequestStatus::Complete { request, .. } =
        parse(&REQ.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: ;;\r\n\r\n"))
    else {
        panic!()
    };
    assert!(request.extensions().is_empty());
}

#[test]
fn client_and_server_handshake_together() {
    let mut req = Vec::new();
    let opts = ClientOptions {
        host: "localhost:9001",
        target: "/ws",
        protocols: &["v2", "v1"],
        deflate_level: Some(3),
        ..ClientOptions::default()
    };
    let hs = ClientHandshake::new(&opts, &mut req);
    let RequestStatus::Complete { request, consumed } =
        parse_request(&req, &HandshakeLimits::default())
    else {
        panic!()
    };
    assert_eq!(consumed, req.len());
    let mut resp = Vec::new();
    let neg = request
        .accept(
            &AcceptOptions {
                protocol: Some("v1"),
                deflate: Some(DeflateConfig {
                    client_max_window_bits: 11,
                    ..DeflateConfig::default()
                }),
                ..AcceptOptions::default()
            },
            None,
            &mut resp,
        )
        .unwrap();
    for cut in 0..resp.len() {
        assert_eq!(hs.parse_response(&resp[..cut]), ResponseStatus::Partial);
    }
    let ResponseStatus::Complete { accepted, consumed } = hs.parse_response(&resp) else {
        panic!("{:?}", hs.parse_response(&resp))
    };
    assert_eq!(consumed, resp.len());
    assert_eq!(accepted.protocol.as_deref(), Some("v1"));
    let (c, s) = (accepted.deflate.unwrap(), neg.deflate.unwrap());
    assert_eq!(
        (c.client_max_window_bits, c.server_max_window_bits),
        (s.client_max_window_bits, s.server_max_window_bits)
    );
    assert_eq!(c.client_max_window_bits, 11);
    // A wrong accept key, a refusal, an extension never offered.
    let bad = String::from_utf8(resp.clone())
        .unwrap()
        .replace("Sec-WebSocket-Accept: ", "Sec-WebSocket-Accept: x");
    assert!(matches!(
        hs.parse_response(bad.as_bytes()),
        ResponseStatus::Failed(_)
    ));
    assert!(matches!(
        hs.parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
        ResponseStatus::Failed(_)
    ));
    let mut plain_req = Vec::new();
    let plain = ClientHandshake::new(
        &ClientOptions {
            host: "h",
            ..ClientOptions::default()
        },
        &mut plain_req,
    );
    let RequestStatus::Complete { request, .. } =
        parse_request(&plain_req, &HandshakeLimits::default())
    else {
        panic!()
    };
    let mut r = Vec::new();
    request
        .accept(&AcceptOptions::default(), None, &mut r)
        .unwrap();
    let forged = String::from_utf8(r).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    assert!(matches!(
        plain.parse_response(forged.as_bytes()),
        ResponseStatus::Failed(_)
    ));
}
