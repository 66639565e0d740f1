//! What the README promises at the bounds, each seen happen: a handler's
//! send past the queue limit fails with `SendError::QueueFull` (and loses
//! nothing queued before it), `stop` closes connections with
//! `CloseReason::ServerStopping`, a malformed header closes with
//! `CloseReason::InvalidFrame`, and a close whose `close_timeout` expires
//! drops the unsent data and cuts the connection. Run on both backends by
//! `scripts/test.sh`.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringport::{CloseReason, ConnId, Context, Handler, LengthDelimited, SendError, Server};

const KIB: usize = 1024;

/// What the handler tells the test.
#[derive(Debug, PartialEq)]
enum Report {
    Connected(ConnId),
    /// A "fill" ended: this many messages were queued, then this error.
    Filled(usize, SendError),
    /// A "bye" queued this many bytes of frames and asked for the close.
    Closing(usize),
    Closed(ConnId, CloseReason),
}

/// - `fill`: sends numbered 16 KiB messages to the sender until a send
///   fails (at most 4,096).
/// - `bye`: queues 64 frames of 64 KiB for the sender, then closes it.
/// - anything else: answered with `pong`.
struct Probe(mpsc::Sender<Report>);

/// Message `i` of a fill: its number, then a pattern.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut v = (i as u64).to_be_bytes().to_vec();
    v.extend(pattern(i as u64, len - 8));
    v
}

impl Handler for Probe {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        let _ = self.0.send(Report::Connected(conn));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), msg: &[u8]) {
        match msg {
            b"fill" => {
                for i in 0..4096 {
                    if let Err(e) = ctx.send(conn, &numbered(i, 16 * KIB)) {
                        let _ = self.0.send(Report::Filled(i, e));
                        return;
                    }
                }
                panic!("4,096 sends of 16 KiB and the queue never filled");
            }
            b"bye" => {
                let frame = pattern(7, 64 * KIB);
                for _ in 0..64 {
                    ctx.send(conn, &frame).expect("queue the bye data");
                }
                ctx.close(conn).expect("close");
                let _ = self.0.send(Report::Closing(64 * (64 * KIB + 4)));
            }
            _ => ctx.send(conn, b"pong").expect("pong"),
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        let _ = self.0.send(Report::Closed(conn, reason));
    }
}

fn start(
    codec: LengthDelimited,
    tweak: impl FnOnce(&mut ringport::ServerConfig),
) -> (Server, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel();
    let mut cfg = config();
    cfg.shards = 1;
    tweak(&mut cfg);
    let server = Server::start(cfg, codec, move |_| Probe(tx.clone())).expect("start");
    assert_backend(&server);
    (server, rx)
}

fn report(rx: &mpsc::Receiver<Report>) -> Report {
    rx.recv_timeout(IO_TIMEOUT)
        .expect("a report from the handler")
}

/// A client whose receive buffer is small (so a server's queue for it fills
/// soon once it stops reading).
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

#[test]
fn a_handler_send_past_the_queue_limit_fails_with_queue_full_and_loses_nothing() {
    let (server, rx) = start(LengthDelimited::new(), |c| {
        c.send_high_water = 32 * KIB;
        c.send_queue_limit = Some(64 * KIB);
    });
    let mut client = connect_small_rcvbuf(server.local_addr());
    let Report::Connected(conn) = report(&rx) else {
        panic!("expected Connected")
    };
    write_frame(&mut client, b"fill").unwrap();
    let Report::Filled(queued, error) = report(&rx) else {
        panic!("expected Filled")
    };
    assert_eq!(error, SendError::QueueFull);
    // At least the limit's worth went into the queue (more if the socket
    // took some at once).
    assert!(queued >= 4, "only {queued} messages before QueueFull");
    // The connection stays open (QueueFull is the handler's to handle, not
    // a slow-consumer close), and every queued message arrives, in order:
    // then the answer to the next request, so nothing more came.
    write_frame(&mut client, b"ping").unwrap();
    for i in 0..queued {
        let got = read_frame(&mut client, 64 * KIB).unwrap();
        assert_bytes_eq(&got, &numbered(i, 16 * KIB), &format!("message {i}"));
    }
    assert_eq!(read_frame(&mut client, 64).unwrap(), b"pong");
    let stats = server.stats();
    assert_eq!(stats.slow_consumers, 0, "{stats:?}");
    assert_eq!(stats.connections, 1, "{stats:?}");
    assert!(rx.try_recv().is_err(), "no close: {:?}", rx.try_recv());
    drop(client);
    assert_eq!(
        report(&rx),
        Report::Closed(conn, CloseReason::PeerClosed),
        "closed by the client, not before"
    );
    server.stop();
}

#[test]
fn stop_closes_connections_with_server_stopping_after_flushing() {
    let (server, rx) = start(LengthDelimited::new(), |_| {});
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.local_addr())).collect();
    let mut ids: Vec<ConnId> = (0..3)
        .map(|_| match report(&rx) {
            Report::Connected(conn) => conn,
            other => panic!("expected Connected, got {other:?}"),
        })
        .collect();
    for c in &mut clients {
        assert_eq!(round_trip(c, b"ping"), b"pong");
    }
    let stats = server.stop();
    assert_eq!(stats.connections, 0, "{stats:?}");
    let mut closed: Vec<ConnId> = (0..3)
        .map(|_| match report(&rx) {
            Report::Closed(conn, CloseReason::ServerStopping) => conn,
            other => panic!("expected Closed(ServerStopping), got {other:?}"),
        })
        .collect();
    ids.sort_by_key(|c| c.as_u64());
    closed.sort_by_key(|c| c.as_u64());
    assert_eq!(closed, ids);
    for c in &mut clients {
        assert!(expect_eof(c, IO_TIMEOUT).is_empty());
    }
}

#[test]
fn a_malformed_header_closes_with_invalid_frame() {
    // The length field counts 10 bytes that are not payload: a field
    // below 10 cannot be a frame.
    let codec = LengthDelimited::new().length_adjustment(-10);
    let (server, rx) = start(codec, |_| {});
    let mut client = connect(server.local_addr());
    let Report::Connected(conn) = report(&rx) else {
        panic!("expected Connected")
    };
    // A valid frame first: field 14 = 4 bytes of payload.
    let mut valid = 14u32.to_be_bytes().to_vec();
    valid.extend_from_slice(b"ping");
    std::io::Write::write_all(&mut client, &valid).unwrap();
    let mut reply = [0u8; 8];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(
        &reply, b"\0\0\0\x0epong",
        "the reply is framed the same way"
    );
    // Then a field of 2.
    std::io::Write::write_all(&mut client, &2u32.to_be_bytes()).unwrap();
    match report(&rx) {
        Report::Closed(c, CloseReason::InvalidFrame(why)) => {
            assert_eq!(c, conn);
            assert!(why.contains("negative"), "{why}");
        }
        other => panic!("expected Closed(InvalidFrame), got {other:?}"),
    }
    assert!(expect_eof(&mut client, IO_TIMEOUT).is_empty());
    // (The counters are published by the shard after the callback.)
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));
    server.stop();
}

/// The client asks for 4 MiB and a close, and reads nothing: the queue
/// cannot drain, the close timeout expires, the connection is cut and the
/// rest of the data dropped (counted in `slow_consumers`). Returns the
/// reason the handler was given.
fn close_with_an_expiring_close_timeout() -> CloseReason {
    let (server, rx) = start(LengthDelimited::new(), |c| {
        c.send_high_water = 8 << 20;
        c.send_queue_limit = Some(16 << 20);
        c.close_timeout = Duration::from_millis(300);
    });
    // The client asks for 4 MiB and a close, and reads nothing.
    let mut client = connect_small_rcvbuf(server.local_addr());
    let Report::Connected(conn) = report(&rx) else {
        panic!("expected Connected")
    };
    write_frame(&mut client, b"bye").unwrap();
    let Report::Closing(total) = report(&rx) else {
        panic!("expected Closing")
    };
    let reason = match report(&rx) {
        Report::Closed(c, reason) if c == conn => reason,
        other => panic!("expected Closed, got {other:?}"),
    };
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));
    assert_eq!(server.stats().slow_consumers, 1);
    // What did arrive is a prefix of what was queued, cut short: the rest
    // was dropped.
    let frame = frame(&pattern(7, 64 * KIB));
    let got = expect_eof(&mut client, IO_TIMEOUT);
    assert!(
        got.len() < total,
        "{} of {total} bytes arrived: nothing was dropped",
        got.len()
    );
    for (i, chunk) in got.chunks(frame.len()).enumerate() {
        assert_bytes_eq(chunk, &frame[..chunk.len()], &format!("frame {i}"));
    }
    server.stop();
    reason
}

#[test]
fn a_close_whose_close_timeout_expires_drops_the_unsent_data() {
    let reason = close_with_an_expiring_close_timeout();
    assert!(
        matches!(reason, CloseReason::Local | CloseReason::SlowConsumer),
        "{reason:?}"
    );
}

/// `CloseReason::SlowConsumer` is documented as the reason of a connection
/// that "did not drain its queue within `close_timeout` while closing"
/// (the close began as `Local` here).
#[test]
fn a_close_whose_close_timeout_expires_is_reported_as_a_slow_consumer() {
    assert_eq!(
        close_with_an_expiring_close_timeout(),
        CloseReason::SlowConsumer
    );
}
