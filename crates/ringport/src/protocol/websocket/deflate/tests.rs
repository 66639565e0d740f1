use super::*;

fn offers(s: &str) -> Vec<ExtensionOffer> {
    let mut v = Vec::new();
    parse_extensions(s, &mut v).unwrap();
    v
}

fn response(p: &DeflateParams) -> String {
    let mut v = Vec::new();
    p.write_response(&mut v);
    String::from_utf8(v).unwrap()
}

#[test]
fn parses_the_header_grammar() {
    let v = offers(
        r#"permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-other, permessage-deflate"#,
    );
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].name, "permessage-deflate");
    assert_eq!(
        v[0].params,
        vec![
            ("client_max_window_bits".into(), None),
            ("server_max_window_bits".into(), Some("10".into()))
        ]
    );
    assert_eq!(v[1].name, "x-other");
    assert!(v[2].params.is_empty());
    let mut sink = Vec::new();
    assert!(parse_extensions("permessage-deflate; a=\"unterminated", &mut sink).is_err());
    assert!(parse_extensions("bad name", &mut sink).is_err());
    assert!(parse_extensions("; x", &mut sink).is_err());
    assert!(parse_extensions(" , ", &mut sink).is_ok());
}

#[test]
fn negotiates_the_first_acceptable_offer() {
    let cfg = DeflateConfig::default();
    // No deflate offer.
    assert_eq!(negotiate(&offers("x-webkit-deflate-frame"), &cfg), None);
    // Plain offer: 15/15, takeover both ways, nothing to announce.
    let p = negotiate(&offers("permessage-deflate"), &cfg).unwrap();
    assert_eq!(
        (
            p.server_max_window_bits,
            p.client_max_window_bits,
            p.server_no_context_takeover
        ),
        (15, 15, false)
    );
    assert_eq!(response(&p), "permessage-deflate");
    // server_max_window_bits=8 cannot be honoured: the next offer is taken.
    let p = negotiate(&offers("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12; client_max_window_bits"), &cfg).unwrap();
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (12, 15)
    );
    assert_eq!(
        response(&p),
        "permessage-deflate; server_max_window_bits=12"
    );
    // Bad parameters decline that offer.
    for bad in [
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; unknown_param",
    ] {
        assert_eq!(negotiate(&offers(bad), &cfg), None, "{bad}");
        let with_fallback = format!("{bad}, permessage-deflate");
        assert!(
            negotiate(&offers(&with_fallback), &cfg).is_some(),
            "{with_fallback}"
        );
    }
    // The server's own limits and context policy.
    let cfg = DeflateConfig {
        server_max_window_bits: 10,
        client_max_window_bits: 9,
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let p = negotiate(&offers("permessage-deflate; client_max_window_bits"), &cfg).unwrap();
    assert_eq!(
        response(&p),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
    );
    // client_max_window_bits not offered: the client may use 15, not announced.
    let p = negotiate(&offers("permessage-deflate"), &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 15);
    assert!(!response(&p).contains("client_max_window_bits"));
    // Client offered 8 for itself: accepted (inflated with a 9-bit window).
    let p = negotiate(
        &offers("permessage-deflate; client_max_window_bits=8"),
        &DeflateConfig::default(),
    )
    .unwrap();
    assert_eq!(p.client_max_window_bits, 8);
    assert_eq!(response(&p), "permessage-deflate; client_max_window_bits=8");
}

#[test]
fn client_reads_the_response() {
    let ext =
        &offers("permessage-deflate; server_no_context_takeover; client_max_window_bits=10")[0];
    let p = DeflateParams::from_response(ext, true, 6).unwrap();
    assert!(p.server_no_context_takeover);
    assert_eq!(
        (p.client_max_window_bits, p.server_max_window_bits, p.level),
        (10, 15, 6)
    );
    assert!(
        DeflateParams::from_response(ext, false, 6).is_err(),
        "not offered"
    );
    assert!(
        DeflateParams::from_response(
            &offers("permessage-deflate; client_max_window_bits=8")[0],
            true,
            6
        )
        .is_err()
    );
    assert!(DeflateParams::from_response(&offers("permessage-deflate; foo")[0], true, 6).is_err());
}

#[test]
fn round_trip_every_window_with_context_takeover() {
    // Short enough for the smallest window to reach the previous message.
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(4);
    for bits in 9..=15u8 {
        let mut d = Deflater::new(bits, 6);
        let mut i = Inflater::new(bits);
        for round in 0..3 {
            let mut c = Vec::new();
            d.compress(&text, &mut c);
            assert!(!c.ends_with(&TRAILER));
            if round > 0 {
                assert!(
                    c.len() < 20,
                    "takeover shrinks repeats: {} at {bits}",
                    c.len()
                );
            }
            let mut out = Vec::new();
            i.inflate(&c, &mut out, text.len()).unwrap();
            assert_eq!(out, text);
        }
    }
    // A window-8 stream (made by a 9-bit deflater, which is also valid for
    // an 8-bit reader) inflates with the 9-bit minimum.
    let mut c = Vec::new();
    Deflater::new(9, 6).compress(b"hello hello hello", &mut c);
    let mut out = Vec::new();
    Inflater::new(8).inflate(&c, &mut out, 100).unwrap();
    assert_eq!(out, b"hello hello hello");
}

#[test]
fn inflate_is_bounded() {
    let zeros = vec![0u8; 10 << 20];
    let mut c = Vec::new();
    Deflater::new(15, 9).compress(&zeros, &mut c);
    let mut out = Vec::new();
    assert_eq!(
        Inflater::new(15).inflate(&c, &mut out, 1 << 20),
        Err(InflateError::TooBig)
    );
    assert!(out.is_empty());
    assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
    // Exactly at the limit: fine.
    let mut out = Vec::new();
    Inflater::new(15).inflate(&c, &mut out, 10 << 20).unwrap();
    assert_eq!(out.len(), 10 << 20);
    // Garbage.
    assert_eq!(
        Inflater::new(15).inflate(&[0xff; 8], &mut Vec::new(), 1000),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn budget_reserves_and_releases() {
    let mut b = DeflateBudget::new(1000);
    assert!(b.try_reserve(600));
    assert!(!b.try_reserve(600));
    assert_eq!(b.used(), 600);
    b.release(600);
    assert!(b.try_reserve(1000));
    assert!(!b.try_reserve(usize::MAX));
}

#[test]
fn costs_shrink_with_the_window() {
    let p = negotiate(&offers("permessage-deflate"), &DeflateConfig::default()).unwrap();
    let small = negotiate(
        &offers("permessage-deflate; client_max_window_bits"),
        &DeflateConfig {
            server_max_window_bits: 9,
            client_max_window_bits: 9,
            ..DeflateConfig::default()
        },
    )
    .unwrap();
    assert!(small.context_cost(true) < p.context_cost(true));
    let nct = negotiate(
        &offers("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        &DeflateConfig::default(),
    )
    .unwrap();
    assert_eq!(nct.idle_cost(true), 0);
    assert_eq!(p.idle_cost(true), p.context_cost(true));
}

#[test]
fn empty_messages_with_context_takeover() {
    let mut d = Deflater::new(15, 1);
    let mut i = Inflater::new(15);
    for round in 0..4 {
        let mut c = Vec::new();
        d.compress(b"", &mut c);
        assert_eq!(c, [0x00], "round {round}");
        let mut out = Vec::new();
        i.inflate(&c, &mut out, 10).unwrap();
        assert!(out.is_empty());
        let mut c = Vec::new();
        d.compress(b"abc", &mut c);
        i.inflate(&c, &mut out, 10).unwrap();
        assert_eq!(out, b"abc");
    }
}
