//! The cluster over several NATS servers and its observability, with real
//! nats-servers and `ringport serve` nodes on loopback: a node moves to
//! another NATS server when its own dies; `/metrics` and `/healthz` show the
//! link down and back (checked by promtool); a node receives from NATS only
//! the publishes of topics it has subscribers for.

mod cluster_common;
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster_common::*;
use common::*;
use ringport_cli::pubsub::{Frame, decode};

/// Reads the next `M` frame: (topic, data).
fn next_message(stream: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let frame = read_frame(stream);
    match decode(&frame) {
        Some(Frame::Message { topic, data }) => (topic.to_vec(), data.to_vec()),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Publishes `warm` on `topic` from `from` until `to` hears it: the
/// subscription's interest has then reached every NATS server (routes
/// propagate it asynchronously).
fn warm_up(from: &mut TcpStream, to: &mut TcpStream, topic: &[u8]) {
    to.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        publish(from, topic, b"warm");
        let mut header = [0u8; 4];
        if std::io::Read::read_exact(to, &mut header).is_ok() {
            let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
            to.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            std::io::Read::read_exact(to, &mut payload).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "publishes never crossed nodes");
    }
    // Drain the other warm copies: publish a marker and read up to it.
    publish(from, topic, b"marker");
    while next_message(to).1 != b"marker" {}
}

#[test]
fn a_node_whose_nats_server_dies_moves_to_another_and_delivery_resumes() {
    let nats = Nats::start(3, false);
    let mut nats = nats;
    let urls = nats.urls();
    let mut n1 = Node::start(&urls, "n1", &[]);
    let mut n2 = Node::start(&urls, "n2", &[]);
    n1.wait_for_peers(&["n2"]);
    n2.wait_for_peers(&["n1"]);
    let mut sub = n1.connect();
    subscribe(&mut sub, b"f");
    let mut pubc = n2.connect();
    warm_up(&mut pubc, &mut sub, b"f");

    let before = nats.attached("ringport-n1").expect("n1 is attached");
    const N: u32 = 3000;
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            publish(&mut pubc, b"f", &i.to_be_bytes());
            // Pacing (1 message per ms), so the outage covers part of the
            // stream: not a synchronisation.
            std::thread::sleep(Duration::from_millis(1));
        }
        pubc
    });
    // Kill n1's NATS server once part of the stream went through.
    let mut seen = Vec::new();
    while seen.len() < 500 {
        seen.push(u32::from_be_bytes(
            next_message(&mut sub).1.try_into().unwrap(),
        ));
    }
    nats.servers[before].kill();
    loop {
        let v = u32::from_be_bytes(next_message(&mut sub).1.try_into().unwrap());
        seen.push(v);
        if v == N - 1 {
            break;
        }
    }
    publisher.join().unwrap();

    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    let lost = N as usize - seen.len();
    eprintln!(
        "failover: {lost} of {N} cross-node messages lost while n1 moved off {}",
        nats.servers[before].name
    );
    // Bounded: under two seconds of traffic (1 message per ms).
    assert!(lost < 2000, "{lost} lost");
    let after = nats.attached("ringport-n1").expect("n1 is attached again");
    assert_ne!(after, before);
    n1.served
        .proc
        .wait_for_stderr("NATS link lost", Duration::ZERO);
    assert!(n1.sample("ringport_cluster_reconnects_total") >= 1);
    assert_eq!(n1.sample("ringport_cluster_link_up"), 1);
    let (code, body) = n1.get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
}

#[test]
fn metrics_and_healthz_show_the_link_down_then_back() {
    let mut nats = Nats::start(1, false);
    let urls = nats.urls();
    let mut n1 = Node::start(&urls, "n1", &[]);
    let mut n2 = Node::start(&urls, "n2", &[]);
    n1.wait_for_peers(&["n2"]);
    n2.wait_for_peers(&["n1"]);
    let mut sub = n1.connect();
    subscribe(&mut sub, b"m1");
    subscribe(&mut sub, b"m2");
    let mut pubc = n2.connect();
    publish(&mut pubc, b"m1", b"x");
    assert_eq!(next_message(&mut sub), (b"m1".to_vec(), b"x".to_vec()));

    let (_, text) = n1.get("/metrics");
    promtool_check(&text);
    assert_eq!(n1.sample("ringport_cluster_link_up"), 1);
    assert_eq!(n1.sample("ringport_cluster_nodes_up"), 1);
    assert_eq!(n1.sample("ringport_cluster_topics"), 2);
    assert!(n1.sample("ringport_cluster_received_total") >= 1);
    assert!(n2.sample("ringport_cluster_sent_total") >= 1);
    assert_eq!(n1.get("/healthz"), (200, "ok\n".to_string()));

    nats.servers[0].kill();
    n1.wait_until("link down in /metrics", IO_TIMEOUT, |n| {
        n.sample("ringport_cluster_link_up") == 0
    });
    assert_eq!(
        n1.get("/healthz"),
        (200, "degraded: cluster link to NATS is down\n".to_string())
    );
    assert_eq!(
        n1.get("/healthz?strict"),
        (503, "degraded: cluster link to NATS is down\n".to_string())
    );
    // Publishes for the other node while the link is down are counted.
    publish(&mut pubc, b"m1", b"lost");
    n2.wait_until("link down on n2", IO_TIMEOUT, |n| {
        n.sample("ringport_cluster_link_up") == 0
    });
    let dropped = n2.sample("ringport_cluster_dropped_out_total");
    publish(&mut pubc, b"m1", b"lost");
    n2.wait_until("the drop counted", IO_TIMEOUT, |n| {
        n.sample("ringport_cluster_dropped_out_total") > dropped
    });
    let (_, text) = n1.get("/metrics");
    promtool_check(&text);

    nats.servers[0].restart();
    for n in [&n1, &n2] {
        n.wait_until("link back", Duration::from_secs(10), |n| {
            n.sample("ringport_cluster_link_up") == 1
        });
    }
    assert_eq!(n1.get("/healthz"), (200, "ok\n".to_string()));
    assert!(n1.sample("ringport_cluster_reconnects_total") >= 1);
    // The subscriptions came back with the link.
    warm_up(&mut pubc, &mut sub, b"m2");
}

/// Messages NATS sent to client `name` (from the server's /connz).
fn out_msgs(nats: &Nats, name: &str) -> u64 {
    let c = nats.servers[0].client(name).expect("attached");
    c["out_msgs"].as_u64().expect("out_msgs")
}

/// Subjects client `name` is subscribed to on the (single) server.
fn subjects(nats: &Nats, name: &str) -> Vec<String> {
    let connz = nats.servers[0].monitor_json("/connz?subs=1&limit=1000");
    let conn = connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .expect("attached");
    conn["subscriptions_list"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_node_receives_only_the_publishes_of_topics_it_has_subscribers_for() {
    let nats = Nats::start(1, false);
    let urls = nats.urls();
    let mut n1 = Node::start(&urls, "n1", &[]);
    let mut n2 = Node::start(&urls, "n2", &[]);
    let mut n3 = Node::start(&urls, "n3", &["--cluster-interest", "all"]);
    for (n, peers) in [
        (&mut n1, ["n2", "n3"]),
        (&mut n2, ["n1", "n3"]),
        (&mut n3, ["n1", "n2"]),
    ] {
        n.wait_for_peers(&peers);
    }
    // "a" (hex 61) on n1, over two connections (so likely two shards).
    let mut a1 = n1.connect();
    let mut a2 = n1.connect();
    subscribe(&mut a1, b"a");
    subscribe(&mut a2, b"a");
    let subject_a = "ringport.t.61".to_string();
    let subject_b = "ringport.t.62".to_string();
    let subs = subjects(&nats, "ringport-n1");
    assert!(subs.contains(&subject_a), "{subs:?}");
    assert!(!subs.contains(&subject_b), "{subs:?}");
    assert!(subjects(&nats, "ringport-n3").contains(&"ringport.t.*".to_string()));

    let n1_before = out_msgs(&nats, "ringport-n1");
    let n3_before = out_msgs(&nats, "ringport-n3");
    let mut pubc = n2.connect();
    const K: u64 = 200;
    for i in 0..K {
        publish(&mut pubc, b"b", &i.to_be_bytes());
        publish(&mut pubc, b"a", &i.to_be_bytes());
    }
    for i in 0..K {
        assert_eq!(
            next_message(&mut a1),
            (b"a".to_vec(), i.to_be_bytes().to_vec())
        );
        assert_eq!(
            next_message(&mut a2),
            (b"a".to_vec(), i.to_be_bytes().to_vec())
        );
    }
    // n3 (every publish) got both topics: wait for its count to settle.
    let deadline = Instant::now() + IO_TIMEOUT;
    while out_msgs(&nats, "ringport-n3") < n3_before + 2 * K {
        assert!(Instant::now() < deadline, "n3 did not get every publish");
        std::thread::sleep(Duration::from_millis(20));
    }
    // n1 got the publishes of "a" (and heartbeats, one per node per 500
    // ms), none of "b".
    let n1_got = out_msgs(&nats, "ringport-n1") - n1_before;
    assert!(
        (K..K + 50).contains(&n1_got),
        "n1 got {n1_got} messages for {K} publishes of its topic"
    );

    // The last subscriber leaving ends the node's interest.
    drop(a1);
    send(&mut a2, &Frame::Unsubscribe(b"a"));
    assert_eq!(
        decode(&read_frame(&mut a2)),
        Some(Frame::Ok {
            op: b'U',
            topic: b"a"
        })
    );
    let deadline = Instant::now() + IO_TIMEOUT;
    while subjects(&nats, "ringport-n1").contains(&subject_a) {
        assert!(Instant::now() < deadline, "n1 kept its interest in a");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(n1.sample("ringport_cluster_topics"), 0);
}
