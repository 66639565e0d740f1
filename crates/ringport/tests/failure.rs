//! A shard that fails stops the whole server with a reason: never a
//! half-alive server whose dead shard's clients hang. (In a file of its
//! own: the failed shard's memory and sockets are abandoned on purpose.)

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use ringport::{ConnId, Context, Handler, LengthDelimited, Server};

/// Answers "where" with its shard index; panics on "panic".
struct Fragile;

impl Handler for Fragile {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        match message {
            b"panic" => panic!("handler asked to panic"),
            _ => {
                let shard = [ctx.shard() as u8];
                ctx.send(conn, &shard).unwrap();
            }
        }
    }
}

#[test]
fn a_panicking_handler_stops_the_whole_server_with_a_reason() {
    let server = Server::start(config(), LengthDelimited::new(), |_| Fragile).unwrap();
    assert_backend(&server);
    let mut by_shard: [Vec<TcpStream>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..200 {
        if by_shard.iter().all(|v| v.len() >= 3) {
            break;
        }
        let mut s = connect(server.local_addr());
        let shard = round_trip(&mut s, b"where")[0] as usize;
        by_shard[shard].push(s);
    }
    assert!(
        by_shard.iter().all(|v| v.len() >= 3),
        "clients landed on both shards"
    );
    assert!(server.is_running());
    assert_eq!(server.failure(), None);
    write_frame(&mut by_shard[0][0], b"panic").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !server.is_running()),
        "the server stops"
    );
    let failure = server.failure().expect("a reason");
    assert!(
        failure.contains("shard 0") && failure.contains("panicked"),
        "{failure}"
    );
    // The healthy shard closes its connections (flushing first).
    for s in &mut by_shard[1] {
        expect_eof(s, Duration::from_secs(10));
    }
    let stats = server.stop();
    assert!(stats.closed >= 3, "{stats:?}");
}

/// The clients of the failed shard get an end of stream too, while the
/// process lives on (a library user's server): "never a half-alive server
/// whose dead shard's clients hang". The failed shard's driver and engine
/// are leaked (memory the kernel may still reference), but its sockets are
/// closed first (`Driver::abandon`).
#[test]
fn a_failed_shards_clients_see_the_end_of_the_stream() {
    let server = Server::start(config(), LengthDelimited::new(), |_| Fragile).unwrap();
    assert_backend(&server);
    let mut on_zero = Vec::new();
    for _ in 0..200 {
        if on_zero.len() >= 3 {
            break;
        }
        let mut s = connect(server.local_addr());
        if round_trip(&mut s, b"where")[0] == 0 {
            on_zero.push(s);
        }
    }
    assert!(on_zero.len() >= 3, "clients landed on shard 0");
    write_frame(&mut on_zero[0], b"panic").unwrap();
    assert!(wait_until(Duration::from_secs(10), || !server.is_running()));
    server.stop();
    for s in &mut on_zero {
        expect_eof(s, Duration::from_secs(10));
    }
}
