//! `ringport serve`'s admission options through the built binary (on the
//! backend of this run, like every CLI test): --allow/--deny and
//! --max-connections-per-ip refuse at accept and say so in the log and the
//! stats line; --max-message-rate with --rate-limit-policy close closes a
//! flooder.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn connect_from(source: &str, port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
        .unwrap();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    s.connect(&to.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The server closes `s` without answering.
#[track_caller]
fn refused(mut s: TcpStream) {
    write_frame(&mut s, b"unread");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn allow_deny_and_the_per_source_limit_refuse_at_accept() {
    let served = serve(&[
        "--allow",
        "127.0.0.0/8",
        "--deny",
        "127.0.0.2,127.0.0.4/32",
        "--max-connections-per-ip",
        "2",
        "--stats-interval",
        "200ms",
    ]);
    let port = served.port;
    refused(connect_from("127.0.0.2", port));
    refused(connect_from("127.0.0.4", port));
    let mut a = connect_from("127.0.0.3", port);
    let mut b = connect_from("127.0.0.3", port);
    for s in [&mut a, &mut b] {
        write_frame(s, b"in");
        assert_eq!(read_frame(s), b"in");
    }
    refused(connect_from("127.0.0.3", port));
    let mut c = connect_from("127.0.0.5", port);
    write_frame(&mut c, b"other");
    assert_eq!(read_frame(&mut c), b"other");
    // The refusals are logged (at a bounded rate) and counted in the stats
    // line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(served.proc.stderr().contains("refused_by_filter=2")
        && served.proc.stderr().contains("rejected_per_ip=1"))
    {
        assert!(Instant::now() < deadline, "{}", served.proc.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served.proc.stderr().contains("clients refused at accept"),
        "{}",
        served.proc.output()
    );
    served.stop_with(libc::SIGTERM);
}

#[test]
fn a_connection_over_its_message_rate_is_closed_under_the_close_policy() {
    let served = serve(&[
        "--max-message-rate",
        "5",
        "--message-burst",
        "3",
        "--rate-limit-policy",
        "close",
    ]);
    let mut s = served.connect();
    // Three within the burst are answered; a flood of more closes it.
    for _ in 0..3 {
        write_frame(&mut s, b"ok");
        assert_eq!(read_frame(&mut s), b"ok");
    }
    // The server may close it before the whole flood is written: a
    // refused write (EPIPE, ECONNRESET) is that close too.
    for _ in 0..10 {
        if std::io::Write::write_all(&mut s, b"\0\0\0\x05flood").is_err() {
            break;
        }
    }
    assert!(closed_by_peer(&mut s), "{}", served.proc.output());
    // Another connection is served as usual.
    let mut other = served.connect();
    write_frame(&mut other, b"fine");
    assert_eq!(read_frame(&mut other), b"fine");
    served.stop_with(libc::SIGTERM);
}
