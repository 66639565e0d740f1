//! A cluster of real `ringport serve` processes over a real nats-server on
//! loopback (each test starts and stops its own, on a free port): chat
//! across nodes, topics across nodes, direct sends and stale ids, a node
//! killed with SIGKILL, NATS stopped and restarted, a slow subscriber.
//!
//! Without nats-server (Debian package `nats-server`) the tests fail,
//! naming the package; `RINGPORT_SKIP=nats` skips them explicitly (and
//! `scripts/test.sh` counts them as skipped).

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ringport_cli::pubsub::{Frame, code, decode, encode};

/// A nats-server on a loopback port, killed on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    /// None if `RINGPORT_SKIP` names `nats` (the skip is recorded); fails
    /// if nats-server is not installed.
    fn start() -> Option<Nats> {
        if !require_program("nats-server", "nats-server", "nats") {
            return None;
        }
        Nats::on(free_port())
    }

    fn on(port: u16) -> Option<Nats> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.expect("start nats-server (Debian package nats-server)");
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
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
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

/// Waits until `needle` has been logged at least `n` times.
fn wait_for_count(served: &Served, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while served.proc.stderr().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {n} times within {timeout:?}\n{}",
            served.proc.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_killed_mid_traffic_leaves_the_others_serving() {
    let Some(nats) = Nats::start() else { return };
    let mut nodes = three_nodes(&nats, "chat", &[]);
    let mut clients: Vec<TcpStream> = nodes.iter().map(|n| n.connect()).collect();
    warm_up(&mut clients);
    let skip_warm = |c: &mut TcpStream| {
        let mut f = read_frame(c);
        while f.starts_with(b"warm") {
            f = read_frame(c);
        }
        f
    };
    for i in 0..50u32 {
        write_frame(&mut clients[0], format!("m{i}").as_bytes());
        if i == 25 {
            nodes[2].proc.signal(libc::SIGKILL);
        }
    }
    for (k, c) in clients.iter_mut().take(2).enumerate() {
        for i in 0..50u32 {
            assert_eq!(skip_warm(c), format!("m{i}").as_bytes(), "node {}", k + 1);
        }
    }
    assert!(closed_by_peer(&mut clients[2]), "n3's client sees it die");
    nodes[2].proc.expect_exit(PROCESS_TIMEOUT);
    // The dead node is noticed (node timeout 3 s) and logged.
    nodes[0]
        .proc
        .wait_for_stderr("cluster: node is down", PROCESS_TIMEOUT);
    assert!(
        nodes[0]
            .proc
            .stderr()
            .lines()
            .any(|l| l.contains("node is down") && l.contains("peer=n3")),
        "{}",
        nodes[0].proc.output()
    );
    // n1 and n2 still talk to each other.
    write_frame(&mut clients[1], b"still here");
    for c in clients.iter_mut().take(2) {
        assert_eq!(read_frame(c), b"still here");
    }
}

#[test]
fn a_send_to_a_dead_nodes_connection_is_refused_not_hung() {
    let Some(nats) = Nats::start() else { return };
    let mut nodes = three_nodes(&nats, "pubsub", &[]);
    let mut sender = nodes[0].connect();
    let mut target = nodes[2].connect();
    let target_id = whoami(&mut target);
    nodes[2].proc.signal(libc::SIGKILL);
    nodes[2].proc.expect_exit(PROCESS_TIMEOUT);
    let began = Instant::now();
    sender
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Within the node timeout a send goes nowhere (at most once, lost
    // without a report); after it, every send is refused at once.
    let answer = loop {
        assert!(began.elapsed() < PROCESS_TIMEOUT, "no unreachable report");
        send(
            &mut sender,
            &Frame::Direct {
                id: &target_id,
                data: b"anyone?",
            },
        );
        if let Some(frame) = try_read_frame(&mut sender) {
            break frame;
        }
    };
    assert_eq!(
        answer,
        encode(&Frame::Error {
            code: code::UNREACHABLE,
            detail: target_id.as_bytes()
        })
    );
}

#[test]
fn nats_down_for_5s_local_delivery_goes_on_and_cross_node_resumes() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let mut n1 = node(&nats, "n1", "pubsub", &[]);
    let mut n2 = node(&nats, "n2", "pubsub", &[]);
    n2.proc.wait_for_stderr("peer=n1", PROCESS_TIMEOUT);
    let mut s1 = n1.connect();
    let mut s2 = n2.connect();
    subscribe(&mut s1, b"t");
    subscribe(&mut s2, b"t");
    let mut publisher = n1.connect();
    let publish = |p: &mut TcpStream, data: &[u8]| {
        send(p, &Frame::Publish { topic: b"t", data });
    };
    publish(&mut publisher, b"before");
    assert_eq!(read_frame(&mut s1), message(b"t", b"before"));
    assert_eq!(read_frame(&mut s2), message(b"t", b"before"));

    let ups = n1.proc.stderr().matches("NATS link is up").count();
    nats.kill();
    n1.proc
        .wait_for_stderr("NATS link lost", Duration::from_secs(10));
    let down = Instant::now();
    let mut i = 0;
    while down.elapsed() < Duration::from_secs(5) {
        let data = format!("during{i}");
        publish(&mut publisher, data.as_bytes());
        // Local delivery never stops.
        assert_eq!(read_frame(&mut s1), message(b"t", data.as_bytes()));
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let nats = Nats::on(nats.port).expect("restart nats-server");
    wait_for_count(&n1, "NATS link is up", ups + 1, PROCESS_TIMEOUT);
    wait_for_count(&n2, "NATS link is up", ups + 1, PROCESS_TIMEOUT);
    // The loss is counted and logged.
    n1.proc
        .wait_for_stderr("cross-node messages dropped", PROCESS_TIMEOUT);
    // Cross-node delivery resumes (the subscriptions are renewed with
    // the connection; retry until the first one gets through).
    s2.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let began = Instant::now();
    'resumed: loop {
        assert!(
            began.elapsed() < PROCESS_TIMEOUT,
            "cross-node did not resume"
        );
        publish(&mut publisher, b"after");
        assert_eq!(read_frame(&mut s1), message(b"t", b"after"));
        while let Some(f) = try_read_frame(&mut s2) {
            if f == message(b"t", b"after") {
                break 'resumed;
            }
            // A "during" message that the client had queued before it saw
            // the link go down may arrive: at most once, never twice.
            assert!(f.starts_with(&message(b"t", b"during")), "{f:?}");
        }
    }
    drop(nats);
}

#[test]
fn a_slow_subscriber_on_one_node_does_not_hold_back_the_others() {
    let Some(nats) = Nats::start() else { return };
    let small = ["--max-frame", "64KiB", "--send-high-water", "256KiB"];
    let mut n1 = node(&nats, "n1", "pubsub", &small);
    let mut n2 = node(&nats, "n2", "pubsub", &small);
    n2.proc.wait_for_stderr("peer=n1", PROCESS_TIMEOUT);
    let mut slow = n1.connect();
    subscribe(&mut slow, b"t");
    // 16 MB in all: more than the slow reader's queue bound (320 KiB)
    // plus what the kernel buffers for it.
    const COUNT: u32 = 1000;
    // The publisher stays at most WINDOW messages ahead of the fast
    // readers: a burst larger than a queue's bound within one loop turn
    // would cut any subscriber, and a debug-build test client is slower
    // than the server.
    const WINDOW: u32 = 4;
    let progress: Vec<Arc<AtomicU32>> = (0..2).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let readers: Vec<_> = [&n1, &n2]
        .iter()
        .zip(&progress)
        .map(|(n, done)| {
            let mut c = n.connect();
            subscribe(&mut c, b"t");
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..COUNT {
                    let f = read_frame(&mut c);
                    let Some(Frame::Message { data, .. }) = decode(&f) else {
                        panic!("not a message: {:?}", &f[..f.len().min(20)]);
                    };
                    assert_eq!(&data[..4], &i.to_be_bytes(), "in order, none lost");
                    assert_eq!(data.len(), 16 * 1024);
                    done.store(i + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let mut publisher = n2.connect();
    let mut data = vec![0x5a; 16 * 1024];
    for i in 0..COUNT {
        let began = Instant::now();
        while progress
            .iter()
            .any(|p| p.load(Ordering::Acquire) + WINDOW < i)
        {
            assert!(
                began.elapsed() < PROCESS_TIMEOUT,
                "a fast reader stalled at {i}\n{}\n{}",
                n1.proc.output(),
                n2.proc.output()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        data[..4].copy_from_slice(&i.to_be_bytes());
        send(
            &mut publisher,
            &Frame::Publish {
                topic: b"t",
                data: &data,
            },
        );
    }
    for r in readers {
        r.join().expect("a fast subscriber missed messages");
    }
    // The one that never read was cut by the slow-consumer policy.
    n1.proc.wait_for_stderr("SlowConsumer", PROCESS_TIMEOUT);
    assert!(closed_by_peer(&mut slow));
}
