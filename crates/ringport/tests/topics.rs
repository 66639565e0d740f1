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
/// T; "unsub:T" unsubscribes (answered "ok"); "where" is answered with the
/// connection's shard (one byte).
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
        } else if text == "where" {
            ctx.send(conn, &[ctx.shard() as u8]).unwrap();
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
    // Subscribers until each shard holds at least two of "news" and one
    // of "other" (the kernel spreads connections over the shards'
    // listeners; bounded).
    let mut news: Vec<TcpStream> = Vec::new();
    let mut other: Vec<TcpStream> = Vec::new();
    let (mut news_on, mut other_on) = ([0; 2], [0; 2]);
    while news_on.iter().any(|&n| n < 2) || other_on.iter().any(|&n| n < 1) {
        assert!(
            news.len() + other.len() < 400,
            "subscribers never reached both shards: news {news_on:?}, other {other_on:?}"
        );
        let (topic, list, on) = if news_on.iter().any(|&n| n < 2) {
            ("news", &mut news, &mut news_on)
        } else {
            ("other", &mut other, &mut other_on)
        };
        let mut c = subscribed(addr, topic);
        on[round_trip(&mut c, b"where")[0] as usize] += 1;
        list.push(c);
    }

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
    // "other" got neither: its next frame is the next publish to "other".
    server.publish("other", &b"for other"[..]).unwrap();
    for c in &mut other {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"for other");
    }

    // Unsubscribed and closed subscribers hear nothing more; the rest do.
    assert_eq!(round_trip(&mut news[0], b"unsub:news"), b"ok");
    drop(news.remove(1));
    assert!(wait_until(Duration::from_secs(5), || server.stats().closed == 1));
    server.publish("news", &b"last"[..]).unwrap();
    for c in &mut news[1..] {
        assert_eq!(read_frame(c, 1 << 20).unwrap(), b"last");
    }
    // The unsubscribed one got nothing: its next frame is the answer to
    // its next request.
    assert_eq!(round_trip(&mut news[0], b"where").len(), 1);
    assert_eq!(server.stats().slow_consumers, 0);
}
