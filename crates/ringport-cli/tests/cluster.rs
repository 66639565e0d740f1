//! A cluster of real `ringport serve` processes over a real nats-server on
//! loopback (each test starts and stops its own, on a free port): chat
//! across nodes, topics across nodes, direct sends and stale ids, a node
//! killed with SIGKILL, NATS stopped and restarted, a slow subscriber.
//!
//! Without nats-server (Debian package `nats-server`) the tests are
//! skipped, unless CI is set: then they fail (.ci/run installs it).

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ringport_cli::pubsub::{Frame, code, decode, encode};

/// A nats-server on a loopback port, killed on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    /// None if nats-server is not installed (and CI is not set).
    fn start() -> Option<Nats> {
        Nats::on(free_port())
    }

    fn on(port: u16) -> Option<Nats> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "nats-server is not installed and CI is set (apt-get install nats-server)"
                );
                eprintln!("nats-server not installed: skipping");
                return None;
            }
            other => other.expect("start nats-server"),
        };
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nats { child, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts node `name` in `mode`, and waits until it has heard from every
/// node in `peers`.
fn node(nats: &Nats, name: &str, mode: &str, extra: &[&str]) -> Served {
    let url = nats.url();
    let mut args = vec![
        "--mode",
        mode,
        "--cluster",
        url.as_str(),
        "--node-id",
        name,
        "--shards",
        "2",
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    let served = serve(&args);
    assert!(
        served.proc.stderr().contains("cluster: joined over NATS"),
        "{}",
        served.proc.output()
    );
    served
}

/// Three nodes that have all heard from each other.
fn three_nodes(nats: &Nats, mode: &str, extra: &[&str]) -> Vec<Served> {
    let mut nodes: Vec<Served> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| node(nats, name, mode, extra))
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        for j in 1..=3 {
            if j != i + 1 {
                n.proc
                    .wait_for_stderr(&format!("peer=n{j}"), PROCESS_TIMEOUT);
            }
        }
    }
    nodes
}

fn send(stream: &mut TcpStream, frame: &Frame<'_>) {
    write_frame(stream, &encode(frame));
}

fn subscribe(stream: &mut TcpStream, topic: &[u8]) {
    send(stream, &Frame::Subscribe(topic));
    assert_eq!(read_frame(stream), encode(&Frame::Ok { op: b'S', topic }));
}

fn whoami(stream: &mut TcpStream) -> String {
    send(stream, &Frame::WhoAmI);
    match decode(&read_frame(stream)) {
        Some(Frame::Id(id)) => id.to_string(),
        other => panic!("expected an id, got {other:?}"),
    }
}

fn message(topic: &[u8], data: &[u8]) -> Vec<u8> {
    encode(&Frame::Message { topic, data })
}

#[test]
fn chat_reaches_every_client_on_every_node_once() {
    let Some(nats) = Nats::start() else { return };
    let nodes = three_nodes(&nats, "chat", &[]);
    let mut clients: Vec<TcpStream> = nodes
        .iter()
        .flat_map(|n| (0..3).map(move |_| n.connect()))
        .collect();
    warm_up(&mut clients);
    let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    write_frame(&mut clients[0], &payload);
    write_frame(&mut clients[0], b"end");
    for (i, c) in clients.iter_mut().enumerate() {
        let mut first = read_frame(c);
        while first.starts_with(b"warm") {
            first = read_frame(c);
        }
        assert_eq!(first, payload, "client {i} (node {})", i / 3 + 1);
        assert_eq!(read_frame(c), b"end", "client {i}: exactly once");
    }
}

#[test]
fn a_topic_publish_reaches_exactly_the_subscribers_on_all_nodes() {
    let Some(nats) = Nats::start() else { return };
    let nodes = three_nodes(&nats, "pubsub", &[]);
    // On each node: two subscribers of "a", one of "b", one of neither;
    // all of them subscribe to "end".
    let mut clients = Vec::new();
    for n in &nodes {
        for topic in [&b"a"[..], b"a", b"b", b""] {
            let mut c = n.connect();
            if !topic.is_empty() {
                subscribe(&mut c, topic);
            }
            subscribe(&mut c, b"end");
            clients.push((topic, c));
        }
    }
    let mut publisher = nodes[1].connect();
    send(
        &mut publisher,
        &Frame::Publish {
            topic: b"a",
            data: b"for a",
        },
    );
    send(
        &mut publisher,
        &Frame::Publish {
            topic: b"end",
            data: b"",
        },
    );
    for (i, (topic, c)) in clients.iter_mut().enumerate() {
        if *topic == b"a" {
            assert_eq!(read_frame(c), message(b"a", b"for a"), "client {i}");
        }
        // The publisher's order is kept: "end" comes after "a", and a
        // non-subscriber of "a" sees only "end".
        assert_eq!(read_frame(c), message(b"end", b""), "client {i}");
    }
}

#[test]
fn a_direct_send_reaches_another_node_and_a_stale_id_is_reported() {
    let Some(nats) = Nats::start() else { return };
    let nodes = three_nodes(&nats, "pubsub", &[]);
    let mut sender = nodes[0].connect();
    let mut target = nodes[2].connect();
    let sender_id = whoami(&mut sender);
    let target_id = whoami(&mut target);
    assert!(target_id.starts_with("n3/"), "{target_id}");
    send(
        &mut sender,
        &Frame::Direct {
            id: &target_id,
            data: b"psst",
        },
    );
    assert_eq!(
        read_frame(&mut target),
        encode(&Frame::Direct {
            id: &sender_id,
            data: b"psst"
        })
    );
    // The target leaves: a send to its id is answered with "stale id"
    // (once its node has seen the close; sends before that go nowhere).
    drop(target);
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    sender
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answer = loop {
        assert!(Instant::now() < deadline, "no stale-id report");
        send(
            &mut sender,
            &Frame::Direct {
                id: &target_id,
                data: b"late",
            },
        );
        if let Some(frame) = try_read_frame(&mut sender) {
            break frame;
        }
    };
    assert_eq!(
        answer,
        encode(&Frame::Error {
            code: code::STALE,
            detail: target_id.as_bytes()
        })
    );
    // A node nobody has heard of: refused at once.
    sender.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    send(
        &mut sender,
        &Frame::Direct {
            id: "n9/0.1.1",
            data: b"?",
        },
    );
    let mut next = read_frame(&mut sender);
    while next.first() == Some(&b'E') && next.get(1) == Some(&code::STALE) {
        next = read_frame(&mut sender); // late answers of the loop above
    }
    assert_eq!(
        next,
        encode(&Frame::Error {
            code: code::UNREACHABLE,
            detail: b"n9/0.1.1"
        })
    );
}

/// One frame, or None if none arrives within the read timeout.
fn try_read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return None;
        }
        Err(e) => panic!("read: {e}"),
    }
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("frame payload");
    Some(payload)
}

/// Until every client has received a chat message from `clients[0]`
/// (rounds of "warm" messages): then every connection is open on its node
/// and hears what follows. Later "warm" frames are for the caller to skip.
fn warm_up(clients: &mut [TcpStream]) {
    let mut warm = vec![false; clients.len()];
    for c in clients.iter_mut() {
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    }
    for round in 0..30 {
        write_frame(&mut clients[0], format!("warm{round}").as_bytes());
        for (c, w) in clients.iter_mut().zip(warm.iter_mut()) {
            while let Some(f) = try_read_frame(c) {
                assert!(f.starts_with(b"warm"), "unexpected {f:?}");
                *w = true;
            }
        }
        if warm.iter().all(|&w| w) {
            for c in clients.iter_mut() {
                c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            }
            return;
        }
    }
    panic!("not every client heard the warm-up: {warm:?}");
}
