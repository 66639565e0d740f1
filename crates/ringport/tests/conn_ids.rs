//! Generational connection ids: an id kept after its connection closed never
//! reaches the connection that reuses the slot.

mod common;

use std::time::Duration;

use common::*;
use ringport::{CloseReason, ConnId, Event, EventServer, LengthDelimited, SendError, Server};

fn start_one_slot() -> EventServer {
    let mut cfg = config();
    cfg.shards = 1;
    cfg.connections_per_shard = Some(1);
    let server = Server::start_events(cfg, LengthDelimited::new()).expect("start event server");
    assert_backend(&server);
    server
}

#[test]
fn stale_id_never_reaches_the_slots_next_connection() {
    let server = start_one_slot();
    let addr = server.local_addr();

    let mut a = connect(addr);
    let conn_a = expect_connected(&server, &a);
    server.send(conn_a, &b"to a"[..]).unwrap();
    assert_eq!(read_frame(&mut a, 1024).unwrap(), b"to a");
    drop(a);
    assert_eq!(expect_closed(&server, conn_a), CloseReason::PeerClosed);

    // Stale before the slot is reused.
    assert_eq!(server.send(conn_a, &b"x"[..]), Err(SendError::Closed));
    assert_eq!(server.close(conn_a), Err(SendError::Closed));

    let mut b = connect(addr);
    let conn_b = expect_connected(&server, &b);
    assert_eq!(conn_b.shard(), conn_a.shard());
    assert_eq!(
        conn_b.slot(),
        conn_a.slot(),
        "one-slot table reuses the slot"
    );
    assert_ne!(conn_b.generation(), conn_a.generation());
    assert_ne!(conn_b, conn_a);
    assert_ne!(conn_b.as_u64(), conn_a.as_u64());

    // Stale after the slot is reused: refused, and B sees nothing.
    assert_eq!(
        server.send(conn_a, &b"for a, not b"[..]),
        Err(SendError::Closed)
    );
    assert_eq!(server.broadcast(&b""[..]), Ok(()));
    assert_eq!(read_frame(&mut b, 1024).unwrap(), b"", "the broadcast");
    expect_silence(&mut b, Duration::from_millis(300));
    assert_eq!(server.close(conn_a), Err(SendError::Closed));
    expect_silence(&mut b, Duration::from_millis(200));

    // The live id works.
    server.send(conn_b, &b"to b"[..]).unwrap();
    assert_eq!(read_frame(&mut b, 1024).unwrap(), b"to b");
    write_frame(&mut b, b"from b").unwrap();
    match next(&server) {
        Event::Message { conn, bytes } => {
            assert_eq!(conn, conn_b);
            assert_eq!(&bytes[..], b"from b");
        }
        other => panic!("expected Message, got {other:?}"),
    }

    // Closing by the live id closes B; the id then goes stale too.
    server.close(conn_b).unwrap();
    assert!(expect_eof(&mut b, IO_TIMEOUT).is_empty());
    assert_eq!(expect_closed(&server, conn_b), CloseReason::Local);
    assert_eq!(server.send(conn_b, &b"y"[..]), Err(SendError::Closed));
    assert_eq!(server.close(conn_b), Err(SendError::Closed));
    server.stop();
}

#[test]
fn generations_keep_moving_over_many_reuses() {
    let server = start_one_slot();
    let addr = server.local_addr();
    let mut seen: Vec<ConnId> = Vec::new();
    for i in 0..20u8 {
        let mut c = connect(addr);
        let conn = expect_connected(&server, &c);
        for old in &seen {
            assert_eq!(old.slot(), conn.slot());
            assert_ne!(old.generation(), conn.generation());
            assert_eq!(server.send(*old, vec![i]), Err(SendError::Closed));
        }
        server.send(conn, vec![i]).unwrap();
        assert_eq!(read_frame(&mut c, 16).unwrap(), [i]);
        seen.push(conn);
        drop(c);
        expect_closed(&server, conn);
    }
    server.stop();
}

#[test]
fn a_full_table_makes_the_next_client_wait_not_fail() {
    // With one slot, a second client waits in the backlog until the first
    // closes, then gets the slot.
    let server = start_one_slot();
    let addr = server.local_addr();
    let a = connect(addr);
    let conn_a = expect_connected(&server, &a);
    let mut b = connect(addr);
    write_frame(&mut b, b"queued").unwrap();
    assert!(
        server.next_event(Duration::from_millis(300)).is_none(),
        "no accept while the table is full"
    );
    drop(a);
    expect_closed(&server, conn_a);
    let conn_b = expect_connected(&server, &b);
    assert_eq!(conn_b.slot(), conn_a.slot());
    match next(&server) {
        Event::Message { conn, bytes } => {
            assert_eq!(conn, conn_b);
            assert_eq!(&bytes[..], b"queued");
        }
        other => panic!("expected Message, got {other:?}"),
    }
    drop(b);
    server.stop();
}
