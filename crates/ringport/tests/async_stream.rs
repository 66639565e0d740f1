//! The event API from async Rust (feature `tokio`): the event `Stream`
//! under load with a slow consumer, sends that wait for room, and what a
//! dropped send leaves on the wire.

#![cfg(feature = "tokio")]

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use common::*;
use ringport::{CloseReason, ConnId, Event, EventServer, LengthDelimited, SendError, Server};
use tokio::io::AsyncWriteExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn start(tweak: impl FnOnce(&mut ringport::ServerConfig)) -> EventServer {
    let mut cfg = config();
    tweak(&mut cfg);
    let server = Server::start_events(cfg, LengthDelimited::new()).expect("start event server");
    assert_backend(&server);
    server
}

/// The payload of message `seq` from client `client`: both numbers, then
/// filler that depends on them.
fn tagged(client: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&client.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&pattern(
        u64::from(client) << 32 | u64::from(seq),
        len.saturating_sub(8),
    ));
    v
}

fn untag(payload: &[u8]) -> (u32, u32) {
    let client = u32::from_be_bytes(payload[..4].try_into().unwrap());
    let seq = u32::from_be_bytes(payload[4..8].try_into().unwrap());
    (client, seq)
}

#[test]
fn stream_delivers_every_event_in_order_to_a_slow_consumer() {
    const CONNS: u32 = 100;
    const PER_CONN: u32 = 100;
    const QUEUE: usize = 64;
    let events = start(|c| c.event_queue = QUEUE);
    let addr = events.local_addr();
    let rt = runtime();
    let mut stream = rt
        .block_on(async { events.stream() })
        .expect("event stream");

    let clients = rt.spawn(async move {
        let mut tasks = Vec::new();
        for client in 0..CONNS {
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                s.set_nodelay(true).unwrap();
                for seq in 0..PER_CONN {
                    let payload = tagged(client, seq, 40);
                    s.write_all(&frame(&payload)).await.expect("write");
                }
                s.shutdown().await.expect("shutdown");
                // Held open until the server closes its side.
                let mut buf = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    });

    // Take nothing until the shards have filled the queue: they are then
    // held back (backpressure), not buffering without bound.
    assert!(
        wait_until(IO_TIMEOUT, || stream.len() == QUEUE),
        "the event queue never filled ({} events)",
        stream.len()
    );

    let (messages, closed) = rt.block_on(async {
        // Per connection: the client it belongs to and the next sequence
        // number expected; `None` before its first message.
        let mut conns: HashMap<ConnId, Option<(u32, u32)>> = HashMap::new();
        let mut messages = 0u32;
        let mut closed = 0u32;
        let mut taken = 0u64;
        while closed < CONNS {
            let event = tokio::time::timeout(IO_TIMEOUT, stream.next())
                .await
                .expect("an event within the timeout")
                .expect("the stream ends only after stop");
            assert!(stream.len() <= QUEUE, "queue over its bound");
            taken += 1;
            if taken % 64 == 0 {
                // A slow consumer.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            match event {
                Event::Connected { conn, .. } => {
                    assert!(conns.insert(conn, None).is_none(), "{conn} connected twice");
                }
                Event::Message { conn, bytes } => {
                    let state = conns.get_mut(&conn).expect("message before Connected");
                    let (client, seq) = untag(&bytes);
                    let want = state.map_or(0, |(c, next)| {
                        assert_eq!(c, client, "{conn}: messages of two clients");
                        next
                    });
                    assert_eq!(seq, want, "{conn}: message out of order or lost");
                    assert_bytes_eq(&bytes, &tagged(client, seq, 40), "payload");
                    *state = Some((client, seq + 1));
                    messages += 1;
                }
                Event::Closed { conn, reason } => {
                    let state = conns.remove(&conn).expect("Closed before Connected");
                    assert_eq!(reason, CloseReason::PeerClosed);
                    assert_eq!(
                        state.map(|(_, next)| next),
                        Some(PER_CONN),
                        "{conn}: lost messages"
                    );
                    closed += 1;
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        (messages, closed)
    });
    assert_eq!(messages, CONNS * PER_CONN);
    assert_eq!(closed, CONNS);
    rt.block_on(clients).expect("clients");

    // After stop the stream ends, rather than waiting for ever.
    events.stop();
    let end = rt.block_on(async { tokio::time::timeout(IO_TIMEOUT, stream.next()).await });
    assert_eq!(end.expect("stream ended within the timeout"), None);
}

#[test]
fn stream_wakes_an_idle_consumer_and_send_async_replies() {
    let events = start(|_| {});
    let addr = events.local_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut stream = events.stream().expect("event stream");
        // A second stream on the same runtime is refused with a reason.
        let second = events.stream().err().expect("second stream refused");
        assert!(second.to_string().contains("one stream"), "{second}");
        let client = tokio::spawn(async move {
            // Connect only once the consumer is asleep on an empty queue.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut c = ringport::AsyncClient::connect(addr).await.expect("connect");
            c.send(b"ping").await.unwrap();
            let reply = c.recv().await.unwrap();
            assert_eq!(&reply[..], b"pong");
        });
        let conn = match stream.next().await.expect("event") {
            Event::Connected { conn, .. } => conn,
            other => panic!("expected Connected, got {other:?}"),
        };
        match stream.next().await.expect("event") {
            Event::Message { conn: from, bytes } => {
                assert_eq!(from, conn);
                assert_eq!(&bytes[..], b"ping");
            }
            other => panic!("expected Message, got {other:?}"),
        }
        events.send_async(conn, &b"pong"[..]).await.expect("reply");
        client.await.expect("client");
        assert!(matches!(stream.next().await, Some(Event::Closed { .. })));
        assert_eq!(
            events.send_async(conn, &b"late"[..]).await,
            Err(SendError::Closed)
        );
        let too_large = vec![0u8; 16 * 1024 * 1024 + 1];
        assert_eq!(
            events.send_async(conn, too_large).await,
            Err(SendError::TooLarge)
        );
    });
    events.stop();
}

/// A send that waits on a full send queue, dropped there; sends polled
/// once (queued to the shard) and dropped at once: the reader gets whole
/// frames only, in order, every awaited message, and the connection is not
/// cut as a slow consumer (a plain `send` would have been refused).
#[test]
fn dropped_send_futures_leave_only_whole_frames() {
    const LEN: usize = 16 * 1024;
    let events = start(|c| {
        c.send_high_water = 32 * 1024;
        c.send_queue_limit = Some(64 * 1024);
    });
    let mut client = connect(events.local_addr());
    let conn = expect_connected(&events, &client);
    let rt = runtime();
    let sender = events.async_sender();
    let (awaited, polled_once) = rt.block_on(async {
        let mut seq = 0u32;
        loop {
            let send = sender.send(conn, tagged(0, seq, LEN));
            match tokio::time::timeout(Duration::from_millis(300), send).await {
                Ok(result) => result.expect("send_async"),
                // Waiting for room: the client reads nothing. Dropped here.
                Err(_) => break,
            }
            seq += 1;
            assert!(seq < 20_000, "the send queue never filled");
        }
        let awaited = seq;
        let mut polled_once = 0;
        for k in 1..=20u32 {
            let mut send = sender.send(conn, tagged(0, awaited + k, LEN));
            let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut send).poll(cx))).await;
            assert!(first.is_pending(), "a send completed with the queue full");
            polled_once += 1;
            drop(send);
        }
        (awaited, polled_once)
    });
    assert_eq!(polled_once, 20);

    // The last message, awaited while the client reads everything.
    let end = rt.spawn({
        let sender = sender.clone();
        async move { sender.send(conn, &b"end"[..]).await }
    });
    let mut next_seq = 0u32;
    loop {
        let payload = read_frame(&mut client, LEN).expect("a whole frame");
        if payload == b"end" {
            break;
        }
        assert_eq!(payload.len(), LEN, "a partial frame");
        let (_, seq) = untag(&payload);
        assert!(
            seq >= next_seq,
            "frame {seq} out of order (expected >= {next_seq})"
        );
        if next_seq < awaited {
            assert_eq!(seq, next_seq, "an awaited message is missing");
        }
        assert!(seq <= awaited + 20, "frame {seq} was never sent");
        assert_bytes_eq(&payload, &tagged(0, seq, LEN), "payload");
        next_seq = seq + 1;
    }
    assert!(next_seq >= awaited, "awaited messages missing");
    assert_eq!(rt.block_on(end).expect("task"), Ok(()));
    // Still open: nothing more arrives, and no Closed event was produced.
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(client.read(&mut buf).is_err(), "unexpected bytes or EOF");
    assert!(events.try_next_event().is_none());
    events.stop();
}

#[test]
fn broadcast_async_reaches_every_connection_on_every_shard() {
    let events = start(|c| c.shards = 3);
    // Clients until each of the 3 shards holds at least two (the kernel
    // spreads connections over the shards' listeners; bounded).
    let mut clients = Vec::new();
    let mut per_shard = [0usize; 3];
    while per_shard.iter().any(|&n| n < 2) {
        assert!(
            clients.len() < 300,
            "clients never reached every shard: {per_shard:?}"
        );
        let c = connect(events.local_addr());
        per_shard[expect_connected(&events, &c).shard()] += 1;
        clients.push(c);
    }
    let rt = runtime();
    rt.block_on(async {
        events
            .broadcast_async(&b"to all"[..])
            .await
            .expect("broadcast");
        assert_eq!(
            events
                .broadcast_async(vec![0u8; 16 * 1024 * 1024 + 1])
                .await,
            Err(SendError::TooLarge)
        );
    });
    for c in &mut clients {
        assert_eq!(read_frame(c, 100).unwrap(), b"to all");
    }
    let sender = events.async_sender();
    events.stop();
    let after = rt.block_on(sender.broadcast(&b"late"[..]));
    assert_eq!(after, Err(SendError::Stopped));
}
