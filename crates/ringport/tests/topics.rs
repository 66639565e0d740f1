//! Topics on one node, through real sockets: subscribers on both shards
//! get a publish made by a handler and one made from another thread
//! (`Server::publish`), non-subscribers get nothing, and a closed
//! subscriber's subscriptions are gone.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use ringport::{ConnId, Context, Handler, LengthDelimited, Server};

/// "sub:T" subscribes to T (answered "ok"); "pub:T:DATA" publishes DATA to
/// T; "unsub:T" unsubscribes (answered "ok").
struct Topics;

impl Handler for Topics {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        let text = std::str::from_utf8(message).unwrap();
        if let Some(topic) = text.strip_prefix("sub:") {
            ctx.subscribe(conn, topic.as_bytes()).unwrap();
            ctx.send(conn, b"ok").unwrap();
        } else if let Some(topic) = text.strip_prefix("unsub:") {
            assert!(ctx.unsubscribe(conn, topic.as_bytes()));
            ctx.send(conn, b"ok").unwrap();
        } else if let Some(rest) = text.strip_prefix("pub:") {
            let (topic, data) = rest.split_once(':').unwrap();
            ctx.publish(topic.as_bytes(), data.as_bytes()).unwrap();
        }
    }
}

fn subscribed(addr: SocketAddr, topic: &str) -> TcpStream {
    let mut c = connect(addr);
    assert_eq!(round_trip(&mut c, format!("sub:{topic}").as_bytes()), b"ok");
    c
}

#[test]
fn publishes_reach_the_subscribers_on_every_shard_and_no_one_else() {
    let mut cfg = config();
    cfg.shards = 2;
    let server = Server::start(cfg, LengthDelimited::new(), |_| Topics).expect("start");
    assert_backend(&server);
    let addr = server.local_addr();
    // Enough clients that both shards hold subscribers (the kernel
    // spreads connections over the shards' listeners).
    let mut news: Vec<TcpStream> = (0..8).map(|_| subscribed(addr, "news")).collect();
    let mut other: Vec<TcpStream> = (0..4).map(|_| subscribed(addr, "other")).collect();
    let per_shard: Vec<u64> = server.shard_stats().iter().map(|s| s.connections).collect();
    eprintln!("connections per shard: {per_shard:?}");

    // From a handler.
    let mut publisher = connect(addr);
    write_frame(&mut publisher, b"pub:news:from a handler").unwrap();
    for c in &mut news {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"from a handler");
    }
    // From another thread.
    server.publish("news", &b"from the server"[..]).unwrap();
    for c in &mut news {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"from the server");
    }
    for c in &mut other {
        expect_silence(c, Duration::from_millis(100));
    }

    // Unsubscribed and closed subscribers hear nothing more; the rest do.
    assert_eq!(round_trip(&mut news[0], b"unsub:news"), b"ok");
    drop(news.remove(1));
    assert!(wait_until(Duration::from_secs(5), || server.stats().closed == 1));
    server.publish("news", &b"last"[..]).unwrap();
    for c in &mut news[1..] {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"last");
    }
    expect_silence(&mut news[0], Duration::from_millis(100));
    assert_eq!(server.stats().slow_consumers, 0);
}
