//! `ringport serve --mode pubsub` on one node (no cluster): the documented
//! client protocol end to end.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::*;
use ringport_cli::pubsub::{Frame, code, decode, encode};

#[test]
fn pubsub_protocol_on_one_node() {
    let served = serve(&["--mode", "pubsub", "--shards", "2", "--stats-interval", "0"]);
    let mut a = served.connect();
    let mut b = served.connect();
    let mut c = served.connect();
    for s in [&mut a, &mut b] {
        write_frame(s, &encode(&Frame::Subscribe(b"room")));
        assert_eq!(
            read_frame(s),
            encode(&Frame::Ok {
                op: b'S',
                topic: b"room"
            })
        );
    }
    write_frame(
        &mut c,
        &encode(&Frame::Publish {
            topic: b"room",
            data: b"hi",
        }),
    );
    let hi = encode(&Frame::Message {
        topic: b"room",
        data: b"hi",
    });
    assert_eq!(read_frame(&mut a), hi);
    assert_eq!(read_frame(&mut b), hi);

    // Direct send by id (ids name the node "local" outside a cluster).
    write_frame(&mut b, &encode(&Frame::WhoAmI));
    let id_frame = read_frame(&mut b);
    let Some(Frame::Id(b_id)) = decode(&id_frame) else {
        panic!("{id_frame:?}")
    };
    assert!(b_id.starts_with("local/"), "{b_id}");
    write_frame(
        &mut c,
        &encode(&Frame::Direct {
            id: b_id,
            data: b"psst",
        }),
    );
    let got = read_frame(&mut b);
    let Some(Frame::Direct { id: from, data }) = decode(&got) else {
        panic!("{got:?}")
    };
    assert!(from.starts_with("local/"), "{from}");
    assert_eq!(data, b"psst");

    // Unsubscribed: `b` no longer hears the room; `a` does.
    write_frame(&mut b, &encode(&Frame::Unsubscribe(b"room")));
    assert_eq!(
        read_frame(&mut b),
        encode(&Frame::Ok {
            op: b'U',
            topic: b"room"
        })
    );
    write_frame(
        &mut c,
        &encode(&Frame::Publish {
            topic: b"room",
            data: b"2",
        }),
    );
    assert_eq!(
        read_frame(&mut a),
        encode(&Frame::Message {
            topic: b"room",
            data: b"2"
        })
    );

    // Errors: a topic over 255 bytes, a malformed frame, a stale id.
    let long = vec![b'x'; 256];
    write_frame(&mut c, &encode(&Frame::Subscribe(&long)));
    assert_eq!(read_frame(&mut c)[..2], [b'E', code::BAD_TOPIC]);
    write_frame(&mut c, b"?");
    assert_eq!(read_frame(&mut c)[..2], [b'E', code::MALFORMED]);
    let b_id = b_id.to_string();
    drop(b);
    // Until the server has seen the close, a send is queued to the
    // closing connection and goes nowhere; then it is refused.
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no stale-id answer");
        write_frame(
            &mut c,
            &encode(&Frame::Direct {
                id: &b_id,
                data: b"late",
            }),
        );
        let mut header = [0u8; 4];
        match c.read_exact(&mut header) {
            Ok(()) => {
                let mut answer = vec![0; u32::from_be_bytes(header) as usize];
                c.read_exact(&mut answer).unwrap();
                assert_eq!(answer[..2], [b'E', code::STALE], "{answer:?}");
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    served.stop_with(libc::SIGTERM);
}

#[test]
fn bench_pubsub_verifies_every_delivery() {
    let served = serve(&["--mode", "pubsub", "--shards", "2", "--stats-interval", "0"]);
    let node = format!("127.0.0.1:{}", served.port);
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--mode",
            "pubsub",
            "-c",
            "40",
            "--publishers",
            "2",
            "--topics",
            "3",
        ])
        .args([
            "--rate",
            "50",
            "--size",
            "64",
            "--duration",
            "1s",
            "--nodes",
            &node,
        ])
        .output()
        .expect("run ringport bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(100.000%), order/format errors 0"), "{text}");
    served.stop_with(libc::SIGTERM);
}
