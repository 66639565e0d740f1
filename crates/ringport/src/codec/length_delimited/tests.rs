use super::*;
use crate::codec::Framer;

/// Feed `input` in one piece and collect the payloads; the input must
/// hold whole frames.
fn frames(codec: LengthDelimited, input: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut framer = Framer::new(codec);
    let mut out = Vec::new();
    framer.feed(input, |p| {
        out.push(p.to_vec());
        true
    })?;
    assert_eq!(framer.buffered(), 0, "input should hold whole frames");
    Ok(out)
}

/// Feed `input` whole and byte by byte; both must agree. Returns the
/// payloads and the bytes left buffered.
fn frames_partial(codec: LengthDelimited, input: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut whole = Framer::new(codec.clone());
    let mut out = Vec::new();
    whole
        .feed(input, |p| {
            out.push(p.to_vec());
            true
        })
        .unwrap();
    let mut bytewise = Framer::new(codec);
    let mut out2 = Vec::new();
    for b in input.chunks(1) {
        bytewise
            .feed(b, |p| {
                out2.push(p.to_vec());
                true
            })
            .unwrap();
    }
    assert_eq!(out, out2);
    assert_eq!(whole.buffered(), bytewise.buffered());
    (out, whole.buffered())
}

fn encode(codec: &LengthDelimited, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = codec.encode_header(payload.len(), &mut hdr)?;
    let mut v = hdr[..n].to_vec();
    v.extend_from_slice(payload);
    Ok(v)
}

#[test]
fn default_wire_format() {
    let c = LengthDelimited::new();
    assert!(!c.is_netty());
    assert_eq!(c.netty_fail_fast(), None);
    assert_eq!(c.max_frame(), DEFAULT_MAX_FRAME);
    assert_eq!(
        encode(&c, b"hello world").unwrap(),
        b"\x00\x00\x00\x0bhello world"
    );
    assert_eq!(encode(&c, b"").unwrap(), b"\x00\x00\x00\x00");
    let mut wire = encode(&c, b"hello world").unwrap();
    wire.extend_from_slice(&encode(&c, b"").unwrap());
    wire.extend_from_slice(&encode(&c, b"x").unwrap());
    assert_eq!(
        frames(c, &wire).unwrap(),
        vec![b"hello world".to_vec(), vec![], b"x".to_vec()]
    );
}

#[test]
fn decode_needs_header_first() {
    let mut c = LengthDelimited::new();
    for n in 0..4 {
        assert_eq!(
            c.decode(&[0; 3][..n]).unwrap(),
            Decode::NeedMore { at_least: Some(4) }
        );
    }
    assert_eq!(
        c.decode(&[0, 0, 1, 0]).unwrap(),
        Decode::Frame {
            skip: 4,
            payload: 256,
            trailer: 0
        }
    );
}

// tokio-util 0.7 documentation (module `length_delimited`), examples 1
// to 7, settings and bytes as documented (the docs fixed in 2024, which
// match tokio-util's code).

#[test]
fn tokio_example_1() {
    let c = LengthDelimited::new().length_field_length(2);
    let wire = b"\x00\x0BHello world";
    assert_eq!(
        frames(c.clone(), wire).unwrap(),
        vec![b"Hello world".to_vec()]
    );
    assert_eq!(encode(&c, b"Hello world").unwrap(), wire);
}

#[test]
fn tokio_example_2() {
    let c = LengthDelimited::new()
        .length_field_length(2)
        .length_adjustment(2)
        .num_skip(0);
    let wire = b"\x00\x0BHello world";
    assert_eq!(frames(c, wire).unwrap(), vec![wire.to_vec()]);
}

#[test]
fn tokio_example_3() {
    let c = LengthDelimited::new()
        .length_field_length(2)
        .length_adjustment(-2);
    let wire = b"\x00\x0DHello world";
    assert_eq!(
        frames(c.clone(), wire).unwrap(),
        vec![b"Hello world".to_vec()]
    );
    assert_eq!(encode(&c, b"Hello world").unwrap(), wire);
}

#[test]
fn tokio_example_4() {
    let c = LengthDelimited::new()
        .length_field_length(3)
        .length_adjustment(3 + 2)
        .num_skip(0);
    let wire = b"\x00\x00\x0B\xCA\xFEHello world";
    assert_eq!(frames(c, wire).unwrap(), vec![wire.to_vec()]);
}

#[test]
fn tokio_example_5() {
    let c = LengthDelimited::new()
        .length_field_offset(1)
        .length_field_length(2)
        .length_adjustment(1)
        .num_skip(3);
    let wire = b"\xCA\x00\x0B\xFEHello world";
    assert_eq!(frames(c, wire).unwrap(), vec![b"\xFEHello world".to_vec()]);
}

#[test]
fn tokio_example_6() {
    let c = LengthDelimited::new()
        .length_field_offset(1)
        .length_field_length(2)
        .length_adjustment(-3)
        .num_skip(3);
    let wire = b"\xCA\x00\x0F\xFEHello world";
    assert_eq!(frames(c, wire).unwrap(), vec![b"\xFEHello world".to_vec()]);
}

#[test]
fn tokio_example_7() {
    let c = LengthDelimited::new().length_field_length(3).num_skip(4);
    let wire = b"\x00\x00\x0B\xFFHello world";
    assert_eq!(frames(c, wire).unwrap(), vec![b"Hello world".to_vec()]);
}

#[test]
fn tokio_encode_writes_only_the_field() {
    // tokio's encoding example: u16 length.
    let c = LengthDelimited::new().length_field_length(2);
    assert_eq!(encode(&c, b"hello world").unwrap(), b"\x00\x0bhello world");
    // Offset and num_skip are decode-only settings.
    let c = LengthDelimited::new()
        .length_field_offset(3)
        .length_field_length(2)
        .num_skip(0)
        .length_adjustment(2);
    assert_eq!(encode(&c, b"hello").unwrap(), b"\x00\x03hello");
    assert!(matches!(
        encode(&c, b"h"),
        Err(CodecError::InvalidHeader(_))
    ));
}

/// The cases of issue 15, which the old rule (Netty's) got wrong.
#[test]
fn tokio_issue_cases() {
    // num_skip below the end of the field: the smallest case.
    let c = LengthDelimited::new().length_field_length(1).num_skip(0);
    assert_eq!(frames_partial(c, b"\x01\x01"), (vec![vec![1], vec![1]], 0));
    // Example 2 with the old test's reading would wait for 2 more bytes.
    let c = LengthDelimited::new()
        .length_field_length(2)
        .length_adjustment(2)
        .num_skip(0);
    let wire = b"\x00\x0BHello world";
    assert_eq!(frames_partial(c, wire), (vec![wire.to_vec()], 0));
    // num_skip past the end of the field (example 7) with one byte
    // less: a partial frame, not "Hello worl".
    let c = LengthDelimited::new().length_field_length(3).num_skip(4);
    let (got, left) = frames_partial(c, b"\x00\x00\x0B\xFFHello worl");
    assert!(got.is_empty());
    assert_eq!(left, 14);
}

#[test]
fn tokio_frame_shorter_than_its_head() {
    // A 3-byte head, frames of one byte: each frame's head overlaps the
    // previous ones.
    let c = LengthDelimited::new()
        .length_field_length(3)
        .num_skip(0)
        .length_adjustment(1 - 0x01_0101);
    assert_eq!(frames_partial(c, &[1; 5]), (vec![vec![1]; 3], 2));
}

#[test]
fn tokio_zero_byte_frame_is_invalid() {
    let mut c = LengthDelimited::new().length_field_length(1).num_skip(0);
    assert!(matches!(c.decode(&[0]), Err(CodecError::InvalidHeader(_))));
}

#[test]
fn tokio_max_bounds_the_raw_field() {
    // The raw value is checked, before the adjustment.
    let mut c = LengthDelimited::new()
        .length_field_length(2)
        .length_adjustment(-2)
        .max_frame_length(10);
    assert_eq!(
        c.decode(&[0, 10]).unwrap(),
        Decode::Frame {
            skip: 2,
            payload: 8,
            trailer: 0
        }
    );
    assert_eq!(
        c.decode(&[0, 11]),
        Err(CodecError::FrameTooLarge { len: 11, max: 10 })
    );
    // Capped at what the field holds plus the adjustment.
    let mut c = LengthDelimited::new()
        .length_field_length(1)
        .length_adjustment(2);
    assert_eq!(c.max_frame(), 257 + 2);
    assert_eq!(
        c.decode(&[255]).unwrap(),
        Decode::Frame {
            skip: 1,
            payload: 257,
            trailer: 0
        }
    );
    let mut hdr = [0; MAX_HEADER_LEN];
    assert_eq!(c.encode_header(257, &mut hdr), Ok(1));
    assert_eq!(hdr[0], 255);
    assert_eq!(
        c.encode_header(258, &mut hdr),
        Err(CodecError::FrameTooLarge { len: 258, max: 257 })
    );
    let c = LengthDelimited::new()
        .length_field_length(1)
        .length_adjustment(-300);
    assert_eq!(
        c.encode_header(1, &mut hdr),
        Err(CodecError::FrameTooLarge { len: 1, max: 0 })
    );
}

#[test]
fn tokio_oversize_header_fails_before_payload() {
    let mut c = LengthDelimited::new().max_frame_length(10);
    assert_eq!(
        c.decode(&[0, 0, 0, 11]),
        Err(CodecError::FrameTooLarge { len: 11, max: 10 })
    );
    assert!(c.decode(&[0, 0, 0, 10]).is_ok());
    let mut c = LengthDelimited::new();
    assert_eq!(
        c.decode(&[0xff; 4]),
        Err(CodecError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME
        })
    );
    // 8-byte field, largest value, huge adjustment: no overflow.
    let mut c = LengthDelimited::new()
        .length_field_length(8)
        .length_adjustment(isize::MAX)
        .max_frame_length(usize::MAX);
    assert!(matches!(
        c.decode(&[0xff; 8]),
        Err(CodecError::InvalidHeader(_))
    ));
    // The head includes num_skip: nothing is decided before it.
    let mut c = LengthDelimited::new().max_frame_length(1).num_skip(6);
    assert_eq!(
        c.decode(&[0xff; 5]),
        Ok(Decode::NeedMore { at_least: Some(6) })
    );
    assert!(c.decode(&[0xff; 6]).is_err());
}

#[test]
fn negative_adjusted_length_is_invalid() {
    let mut c = LengthDelimited::new()
        .length_field_length(2)
        .length_adjustment(-2);
    assert!(matches!(
        c.decode(&[0, 1]),
        Err(CodecError::InvalidHeader(_))
    ));
    assert!(c.decode(&[0, 2]).is_ok());
}

#[test]
fn little_and_native_endian() {
    let c = LengthDelimited::new().little_endian();
    assert_eq!(encode(&c, &[7; 258]).unwrap(), {
        let mut v = vec![2, 1, 0, 0];
        v.extend_from_slice(&[7; 258]);
        v
    });
    let wire = b"\x05\x00\x00\x00hello";
    assert_eq!(frames(c, wire).unwrap(), vec![b"hello".to_vec()]);

    let n = LengthDelimited::new().native_endian();
    let mut wire = 5u32.to_ne_bytes().to_vec();
    wire.extend_from_slice(b"hello");
    assert_eq!(encode(&n, b"hello").unwrap(), wire);
    assert_eq!(frames(n, &wire).unwrap(), vec![b"hello".to_vec()]);
    assert_eq!(
        LengthDelimited::new().native_endian().big_endian(),
        LengthDelimited::new()
    );
}

#[test]
fn all_field_lengths_round_trip() {
    for len in 1..=8 {
        for endianness in [Endianness::Big, Endianness::Little] {
            let c = LengthDelimited::new()
                .length_field_length(len)
                .endianness(endianness)
                .max_frame_length(300);
            let payload: Vec<u8> = (0..200u8).collect();
            let wire = encode(&c, &payload).unwrap();
            assert_eq!(wire.len(), len + 200);
            assert_eq!(frames(c, &wire).unwrap(), vec![payload]);
        }
    }
}

#[test]
#[should_panic(expected = "length field length")]
fn field_length_zero_panics() {
    let _ = LengthDelimited::new().length_field_length(0);
}

#[test]
#[should_panic(expected = "length field length")]
fn field_length_nine_panics() {
    let _ = LengthDelimited::new().length_field_length(9);
}

// Netty 4 `LengthFieldBasedFrameDecoder` javadoc examples, in order:
// settings and bytes as documented ("HELLO, WORLD" is 12 bytes).

const HW: &[u8] = b"HELLO, WORLD";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn netty_example_1_no_strip() {
    let c = LengthDelimited::netty(1024, 0, 2, 0, 0, true);
    let wire = cat(&[b"\x00\x0C", HW]);
    assert_eq!(frames(c, &wire).unwrap(), vec![wire.clone()]);
}

#[test]
fn netty_example_2_strip_header() {
    let c = LengthDelimited::netty(1024, 0, 2, 0, 2, true);
    let wire = cat(&[b"\x00\x0C", HW]);
    assert_eq!(frames(c.clone(), &wire).unwrap(), vec![HW.to_vec()]);
    assert_eq!(encode(&c, HW).unwrap(), wire);
}

#[test]
fn netty_example_3_length_counts_whole_message() {
    let c = LengthDelimited::netty(1024, 0, 2, -2, 0, true);
    let wire = cat(&[b"\x00\x0E", HW]);
    assert_eq!(frames(c.clone(), &wire).unwrap(), vec![wire.clone()]);
    // Forwarding a decoded frame re-encodes to the same bytes.
    assert_eq!(encode(&c, &wire).unwrap(), wire);
}

#[test]
fn netty_example_4_field_at_end_of_header() {
    let c = LengthDelimited::netty(1024, 2, 3, 0, 0, true);
    let wire = cat(&[b"\xCA\xFE\x00\x00\x0C", HW]);
    assert_eq!(frames(c, &wire).unwrap(), vec![wire.clone()]);
}

#[test]
fn netty_example_5_field_at_start_of_header() {
    let c = LengthDelimited::netty(1024, 0, 3, 2, 0, true);
    let wire = cat(&[b"\x00\x00\x0C\xCA\xFE", HW]);
    assert_eq!(frames(c, &wire).unwrap(), vec![wire.clone()]);
}

#[test]
fn netty_example_6_strip_hdr1_and_length() {
    let c = LengthDelimited::netty(1024, 1, 2, 1, 3, true);
    let wire = cat(&[b"\xCA\x00\x0C\xFE", HW]);
    assert_eq!(frames(c.clone(), &wire).unwrap(), vec![cat(&[b"\xFE", HW])]);
    // HDR1 is written as 0.
    assert_eq!(
        encode(&c, &cat(&[b"\xFE", HW])).unwrap(),
        cat(&[b"\x00\x00\x0C\xFE", HW])
    );
}

#[test]
fn netty_example_7_whole_message_length_strip() {
    let c = LengthDelimited::netty(1024, 1, 2, -3, 3, true);
    let wire = cat(&[b"\xCA\x00\x10\xFE", HW]);
    assert_eq!(frames(c.clone(), &wire).unwrap(), vec![cat(&[b"\xFE", HW])]);
    assert_eq!(
        encode(&c, &cat(&[b"\xFE", HW])).unwrap(),
        cat(&[b"\x00\x00\x10\xFE", HW])
    );
}

#[test]
fn netty_max_bounds_the_whole_frame() {
    // Frame = 2 + value; max 10 allows value 8.
    let mut c = LengthDelimited::netty(10, 0, 2, 0, 2, true);
    assert_eq!(c.max_frame(), 8);
    assert!(c.decode(&[0, 8]).is_ok());
    assert_eq!(
        c.decode(&[0, 9]),
        Err(CodecError::FrameTooLarge { len: 11, max: 10 })
    );
    let mut hdr = [0; MAX_HEADER_LEN];
    assert_eq!(c.encode_header(8, &mut hdr), Ok(2));
    assert_eq!(
        c.encode_header(9, &mut hdr),
        Err(CodecError::FrameTooLarge { len: 9, max: 8 })
    );
}

#[test]
fn netty_errors() {
    // Adjusted frame length below the end of the field.
    let mut c = LengthDelimited::netty(100, 0, 2, -3, 0, true);
    assert!(matches!(
        c.decode(&[0, 2]),
        Err(CodecError::InvalidHeader(_))
    ));
    // 8-byte field read as a signed long.
    let mut c = LengthDelimited::netty(100, 0, 8, 0, 8, true);
    assert!(matches!(
        c.decode(&[0x80, 0, 0, 0, 0, 0, 0, 0]),
        Err(CodecError::InvalidHeader(_))
    ));
    // Strip longer than the frame: reported once the frame is complete.
    let mut c = LengthDelimited::netty(100, 0, 1, 0, 4, true);
    assert_eq!(c.decode(&[1]), Ok(Decode::NeedMore { at_least: Some(2) }));
    assert!(matches!(
        c.decode(&[1, 9]),
        Err(CodecError::InvalidHeader(_))
    ));
    assert_eq!(c.netty_fail_fast(), Some(true));
    assert!(c.is_netty());
}

#[test]
fn netty_encode_matches_length_field_prepender() {
    // LengthFieldPrepender(2, 0): field = payload length.
    let c = LengthDelimited::netty(1 << 20, 0, 2, 0, 2, true);
    assert_eq!(encode(&c, b"abc").unwrap(), b"\x00\x03abc");
    // LengthFieldPrepender(4, true) (length includes the field) is the
    // inverse of adjustment -4.
    let c = LengthDelimited::netty(1 << 20, 0, 4, -4, 4, true);
    assert_eq!(encode(&c, b"abc").unwrap(), b"\x00\x00\x00\x07abc");
    // Partly kept header: the payload carries the rest.
    let c = LengthDelimited::netty(1 << 20, 0, 2, 0, 1, true);
    let wire = b"\x00\x03abc";
    let got = frames(c.clone(), wire).unwrap();
    assert_eq!(got, vec![b"\x03abc".to_vec()]);
    assert_eq!(encode(&c, &got[0]).unwrap(), wire);
    // Decode-only configurations.
    let c = LengthDelimited::netty(1 << 20, 0, 2, 0, MAX_HEADER_LEN + 1, true);
    assert!(matches!(encode(&c, b""), Err(CodecError::InvalidHeader(_))));
    // Does not fit a 1-byte field.
    let c = LengthDelimited::netty(1 << 20, 0, 1, 0, 1, true);
    assert!(encode(&c, &[0; 255]).is_ok());
    assert!(matches!(
        encode(&c, &[0; 256]),
        Err(CodecError::FrameTooLarge { len: 256, max: 255 })
    ));
}

#[test]
#[should_panic(expected = "must be equal to or greater than")]
fn netty_header_longer_than_max_panics() {
    let _ = LengthDelimited::netty(5, 3, 4, 0, 0, true);
}

#[test]
#[should_panic(expected = "unsupported lengthFieldLength")]
fn netty_field_length_five_panics() {
    let _ = LengthDelimited::netty(100, 0, 5, 0, 0, true);
}

#[test]
#[should_panic(expected = "maxFrameLength must be positive")]
fn netty_zero_max_panics() {
    let _ = LengthDelimited::netty(0, 0, 0, 0, 0, true);
}

/// The default layout's short path gives what the general path gives:
/// `num_skip(4)` is the same layout, but not recognised as the default one,
/// so it takes the general path.
#[test]
fn the_default_layout_short_path_agrees_with_the_general_path() {
    for max in [0, 1, 511, 512, 1 << 20, u32::MAX as usize - 1, usize::MAX] {
        let mut plain = LengthDelimited::new().max_frame_length(max);
        let mut general = LengthDelimited::new().max_frame_length(max).num_skip(4);
        assert!(plain.is_plain());
        assert!(!general.is_plain());
        assert_eq!(plain.max_frame(), general.max_frame(), "max {max}");
        for len in [
            0u64,
            1,
            511,
            512,
            513,
            1 << 20,
            u32::MAX as u64 - 1,
            u32::MAX as u64,
        ] {
            let header = (len as u32).to_be_bytes();
            for cut in 0..=header.len() {
                let mut buf = header[..cut].to_vec();
                buf.extend_from_slice(b"payload");
                let buf = if cut < header.len() {
                    &header[..cut]
                } else {
                    &buf[..]
                };
                assert_eq!(
                    plain.decode(buf),
                    general.decode(buf),
                    "max {max}, length {len}, {cut} header bytes"
                );
            }
            let (mut a, mut b) = ([0u8; MAX_HEADER_LEN], [0u8; MAX_HEADER_LEN]);
            let (ra, rb) = (
                plain.encode_header(len as usize, &mut a),
                general.encode_header(len as usize, &mut b),
            );
            assert_eq!(ra, rb, "max {max}, length {len}");
            if let Ok(n) = ra {
                assert_eq!(a[..n], b[..n]);
            }
        }
    }
}

/// The builder keeps the short path's flag true to the settings: a layout
/// changed away from the default and back is the default again, and any
/// change of the layout leaves it.
#[test]
fn the_builder_keeps_the_default_layout_flag_up_to_date() {
    let back = LengthDelimited::new()
        .length_field_offset(2)
        .length_field_offset(0);
    assert!(back.is_plain());
    assert_eq!(back, LengthDelimited::new());
    for changed in [
        LengthDelimited::new().length_field_offset(1),
        LengthDelimited::new().length_field_length(2),
        LengthDelimited::new().length_adjustment(-4),
        LengthDelimited::new().num_skip(0),
        LengthDelimited::new().little_endian(),
        LengthDelimited::netty(1 << 20, 0, 4, 0, 4, true),
    ] {
        assert!(!changed.is_plain(), "{changed:?}");
    }
    assert!(
        LengthDelimited::new()
            .max_frame_length(10)
            .big_endian()
            .is_plain()
    );
}
