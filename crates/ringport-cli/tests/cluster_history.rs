//! Topic history on NATS JetStream and recovery from a position, with a
//! real nats-server (`-js`) and real `ringport serve` nodes on loopback:
//! 10,000 messages across a reconnect to another node with no gap and no
//! duplicate; a position the history no longer holds; a history reset
//! (new epoch); a topic without history.

mod cluster_common;
mod common;

use std::net::TcpStream;
use std::time::Duration;

use cluster_common::*;
use common::*;
use ringport::cluster::Position;
use ringport_cli::pubsub::{Frame, decode, status};

/// What a subscriber reads.
#[derive(Debug)]
enum Got {
    /// An `N` frame: its position and counter (the payload).
    Msg(Position, u32),
    /// A `Y` frame: status and position.
    Resumed(u8, Position),
}

fn next(stream: &mut TcpStream) -> Got {
    let frame = read_frame(stream);
    match decode(&frame) {
        Some(Frame::Positioned { at, data, .. }) => Got::Msg(
            at,
            u32::from_be_bytes(data.try_into().expect("4-byte payload")),
        ),
        Some(Frame::Resumed { status, at, .. }) => Got::Resumed(status, at),
        other => panic!("unexpected frame {other:?}"),
    }
}

fn resume(stream: &mut TcpStream, topic: &[u8], since: Position) {
    send(stream, &Frame::Resume { topic, since });
}

/// Resumes and reads up to the `Y`: (status, position, replayed messages).
fn resume_until_live(
    stream: &mut TcpStream,
    topic: &[u8],
    since: Position,
) -> (u8, Position, Vec<(Position, u32)>) {
    resume(stream, topic, since);
    let mut replayed = Vec::new();
    loop {
        match next(stream) {
            Got::Msg(p, n) => replayed.push((p, n)),
            Got::Resumed(s, p) => return (s, p, replayed),
        }
    }
}

fn history_nodes(nats: &Nats, names: &[&str], extra: &[&str]) -> Vec<Node> {
    let urls = nats.urls();
    let mut args = vec!["--cluster-history", "chat."];
    args.extend_from_slice(extra);
    let mut nodes: Vec<Node> = names.iter().map(|n| Node::start(&urls, n, &args)).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let peers: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| *n)
            .collect();
        node.wait_for_peers(&peers);
    }
    nodes
}

#[test]
fn ten_thousand_messages_across_a_reconnect_to_another_node_no_gap_no_duplicate() {
    let nats = Nats::start(1, true);
    let nodes = history_nodes(
        &nats,
        &["n1", "n2", "n3"],
        &["--cluster-history-size", "20000"],
    );
    let topic = b"chat.room";
    let mut sub = nodes[0].connect();
    let (st, start, replayed) = resume_until_live(&mut sub, topic, Position::default());
    assert_eq!(st, status::FRESH);
    assert!(replayed.is_empty());
    assert_ne!(start.epoch, 0);

    const N: u32 = 10_000;
    let mut pubc = nodes[2].connect();
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            publish(&mut pubc, topic, &i.to_be_bytes());
            // Pacing (about 20 per ms), so that publishing goes on during
            // the reconnect: not a synchronisation.
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        pubc
    });
    // Read part of the stream on n1, then drop the connection.
    let mut got: Vec<(Position, u32)> = Vec::new();
    while got.len() < 3000 {
        match next(&mut sub) {
            Got::Msg(p, n) => got.push((p, n)),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(sub);
    let last = got.last().unwrap().0;
    // Resume on n2 from the last position seen.
    let mut sub = nodes[1].connect();
    let (st, at, replayed) = resume_until_live(&mut sub, topic, last);
    assert_eq!(st, status::RECOVERED, "resumed at {at:?}");
    let replayed_count = replayed.len();
    got.extend(replayed);
    while got.last().unwrap().1 != N - 1 {
        match next(&mut sub) {
            Got::Msg(p, n) => got.push((p, n)),
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.join().unwrap();
    let counters: Vec<u32> = got.iter().map(|g| g.1).collect();
    if let Some(i) = (0..counters.len()).find(|&i| counters[i] != i as u32) {
        let around = &counters[i.saturating_sub(3)..(i + 3).min(counters.len())];
        panic!(
            "gap or duplicate at {i} (replayed {replayed_count} after 3000): {around:?}, {} received",
            counters.len()
        );
    }
    assert_eq!(counters.len(), N as usize);
    assert!(got.windows(2).all(|w| w[0].0.seq < w[1].0.seq));
    assert!(got.iter().all(|g| g.0.epoch == start.epoch));
    eprintln!(
        "recovery: 3000 read on n1, {replayed_count} replayed on n2, {} live",
        N as usize - 3000 - replayed_count
    );
    assert!(nodes[1].sample("ringport_cluster_recovered_total") >= 1);
}

#[test]
fn a_position_the_history_no_longer_holds_is_reported_then_live() {
    let nats = Nats::start(1, true);
    let nodes = history_nodes(&nats, &["n1", "n2"], &["--cluster-history-size", "5"]);
    let topic = b"chat.small";
    let mut sub = nodes[0].connect();
    let (st, _, _) = resume_until_live(&mut sub, topic, Position::default());
    assert_eq!(st, status::FRESH);
    let mut pubc = nodes[1].connect();
    publish(&mut pubc, topic, &0u32.to_be_bytes());
    let Got::Msg(first, 0) = next(&mut sub) else {
        panic!("expected message 0")
    };
    drop(sub);
    // 20 more: the history keeps the last 5, so `first` has left it.
    for i in 1..=20u32 {
        publish(&mut pubc, topic, &i.to_be_bytes());
    }
    let mut sub = nodes[1].connect();
    // Wait for the writes: a fresh subscriber's position is the last one
    // (each probe is a real subscription, answered once it is live).
    let (st, at, _) = loop {
        let mut probe = nodes[1].connect();
        let r = resume_until_live(&mut probe, topic, Position::default());
        if r.1.seq > first.seq + 19 {
            break r;
        }
    };
    assert_eq!(st, status::FRESH);
    let (st, now, replayed) = resume_until_live(&mut sub, topic, first);
    assert_eq!(st, status::RESET, "history exceeded must be told");
    assert!(replayed.is_empty());
    assert_eq!(now, at, "the position it stands at: the last message");
    publish(&mut pubc, topic, &21u32.to_be_bytes());
    match next(&mut sub) {
        Got::Msg(p, 21) => assert!(p.seq > now.seq),
        other => panic!("expected live message 21, got {other:?}"),
    }
    // A position in the history (the last but one kept) recovers.
    let mut again = nodes[0].connect();
    let mut keep = nodes[0].connect();
    let (_, _, _) = resume_until_live(&mut keep, topic, Position::default());
    let (st, _, replayed) = resume_until_live(
        &mut again,
        topic,
        Position {
            epoch: now.epoch,
            seq: now.seq - 1,
        },
    );
    assert_eq!(st, status::RECOVERED);
    let counters: Vec<u32> = replayed.iter().map(|r| r.1).collect();
    assert_eq!(counters, vec![20, 21]);
    // A topic without history: status 4, then plain `M` messages.
    resume(&mut again, b"news", Position::default());
    assert!(matches!(
        decode(&read_frame(&mut again)),
        Some(Frame::Resumed {
            status: status::NO_HISTORY,
            ..
        })
    ));
    assert!(nodes[1].sample("ringport_cluster_reset_total") >= 1);
}

#[test]
fn a_history_reset_changes_the_epoch_and_is_reported() {
    let mut nats = Nats::start(1, true);
    let mut nodes = history_nodes(&nats, &["n1", "n2"], &[]);
    let topic = b"chat.epoch";
    let mut sub = nodes[0].connect();
    let (_, start, _) = resume_until_live(&mut sub, topic, Position::default());
    let mut pubc = nodes[1].connect();
    publish(&mut pubc, topic, &1u32.to_be_bytes());
    let Got::Msg(seen, 1) = next(&mut sub) else {
        panic!("expected message 1")
    };
    assert_eq!(seen.epoch, start.epoch);
    drop(sub);

    nats.restart_empty(0);
    for n in &mut nodes {
        n.served
            .proc
            .wait_for_stderr("history was reset (new epoch)", PROCESS_TIMEOUT);
    }
    let mut sub = nodes[1].connect();
    let (st, now, replayed) = resume_until_live(&mut sub, topic, seen);
    assert_eq!(st, status::RESET);
    assert!(replayed.is_empty());
    assert_ne!(now.epoch, seen.epoch, "a new epoch");
    publish(&mut pubc, topic, &2u32.to_be_bytes());
    match next(&mut sub) {
        Got::Msg(p, 2) => assert_eq!(p.epoch, now.epoch),
        other => panic!("expected message 2, got {other:?}"),
    }
    let _ = Duration::ZERO;
}

#[test]
fn losing_a_nats_server_of_a_replicated_history_loses_nothing_uncounted() {
    let mut nats = Nats::start(3, true);
    let mut nodes = history_nodes(
        &nats,
        &["n1", "n2"],
        &[
            "--cluster-history-replicas",
            "3",
            "--cluster-history-size",
            "10000",
            // Losing the server that led JetStream's meta group stops
            // consumer creation until a new leader is elected: seconds, or
            // tens of seconds on a loaded machine (seen: over 30 s).
            "--cluster-recovery-timeout",
            "120s",
        ],
    );
    for n in &mut nodes {
        // JetStream elects its leaders first.
        n.served
            .proc
            .wait_for_stderr("topic history ready", PROCESS_TIMEOUT);
    }
    let topic = b"chat.failover";
    let mut sub = nodes[0].connect();
    let (st, _, _) = resume_until_live(&mut sub, topic, Position::default());
    assert_eq!(st, status::FRESH);
    let mut pubc = nodes[1].connect();
    // The first write goes through once the stream's replicas are up.
    publish(&mut pubc, topic, &0u32.to_be_bytes());
    let Got::Msg(_, 0) = next(&mut sub) else {
        panic!("expected message 0")
    };
    let n1_server = nats.attached("ringport-n1").expect("n1 attached");
    const N: u32 = 2000;
    let publisher = std::thread::spawn(move || {
        for i in 1..N {
            publish(&mut pubc, topic, &i.to_be_bytes());
            // Pacing (1 message per ms), not a synchronisation.
            std::thread::sleep(Duration::from_millis(1));
        }
        // The last one after the others: wait for it below.
        pubc
    });
    let mut got = vec![0u32];
    let mut last = Position::default();
    while got.len() < 300 {
        if let Got::Msg(p, n) = next(&mut sub) {
            got.push(n);
            last = p;
        }
    }
    nats.servers[n1_server].kill();
    let mut pubc = publisher.join().unwrap();
    // A marker written after everything: once it arrives, all that was
    // written has (the history's order is the publish order of one node).
    let marker = u32::MAX;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    'outer: loop {
        publish(&mut pubc, topic, &marker.to_be_bytes());
        sub.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        loop {
            let mut header = [0u8; 4];
            if std::io::Read::read_exact(&mut sub, &mut header).is_err() {
                break;
            }
            let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
            std::io::Read::read_exact(&mut sub, &mut payload).unwrap();
            if let Some(Frame::Positioned { at, data, .. }) = decode(&payload) {
                let n = u32::from_be_bytes(data.try_into().unwrap());
                if n == marker {
                    break 'outer;
                }
                got.push(n);
                last = at;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the marker never came"
        );
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    let missing = N as usize - got.len();
    // Every write not in the history is counted once its acknowledgement
    // fails or times out (bounded by JetStream's 5 s request timeout).
    nodes[1].wait_until("the lost writes counted", Duration::from_secs(15), |n| {
        n.sample("ringport_cluster_history_failed_total") >= missing as u64
    });
    let failed = nodes[1].sample("ringport_cluster_history_failed_total");
    eprintln!(
        "replicated history, NATS server {} killed: {missing} of {N} not delivered, {failed} writes counted as failed",
        nats.servers[n1_server].name
    );
    let history_log: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.served
                .proc
                .stderr()
                .lines()
                .filter(|l| l.contains("history") || l.contains("NATS"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        missing as u64 <= failed,
        "{missing} missing but only {failed} counted\n{}",
        history_log.join("\n")
    );
    // A client resuming on the other node from the last position gets
    // exactly the marker(s) after it.
    drop(sub);
    let mut again = nodes[1].connect();
    // JetStream may still be electing leaders after the loss: bounded by
    // the recovery timeout (120 s here).
    again
        .set_read_timeout(Some(Duration::from_secs(125)))
        .unwrap();
    let (st, now, replayed) = resume_until_live(&mut again, topic, last);
    let logs = || {
        nodes
            .iter()
            .map(|n| n.served.proc.stderr())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        st,
        status::RECOVERED,
        "resumed from {last:?}, answered at {now:?}\n{}",
        logs()
    );
    assert!(replayed.iter().all(|r| r.1 == marker), "{replayed:?}");
}

#[test]
fn a_plain_subscription_to_a_topic_with_history_gets_positions_from_its_answer_on() {
    let nats = Nats::start(1, true);
    let nodes = history_nodes(&nats, &["n1", "n2"], &[]);
    let topic = b"chat.plain";
    let mut sub = nodes[0].connect();
    // `K` comes once the node's live reader of the topic runs: a publish
    // made after it on another node arrives.
    subscribe(&mut sub, topic);
    let mut pubc = nodes[1].connect();
    for i in 0..3u32 {
        publish(&mut pubc, topic, &i.to_be_bytes());
    }
    let mut seqs = Vec::new();
    for i in 0..3u32 {
        match next(&mut sub) {
            Got::Msg(p, n) => {
                assert_eq!(n, i);
                seqs.push(p.seq);
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The publisher's own node delivers through the history too.
    let mut local = nodes[1].connect();
    subscribe(&mut local, topic);
    publish(&mut pubc, topic, &3u32.to_be_bytes());
    assert!(matches!(next(&mut local), Got::Msg(_, 3)));
    assert!(matches!(next(&mut sub), Got::Msg(_, 3)));
    assert!(nodes[1].sample("ringport_cluster_history_written_total") >= 4);
}

#[test]
fn recovery_from_the_messages_a_node_keeps_and_from_further_back() {
    let nats = Nats::start(1, true);
    let nodes = history_nodes(&nats, &["n1", "n2"], &[]);
    let topic = b"chat.recent";
    // n2 reads the topic already (its live reader keeps the last 100).
    let mut watcher = nodes[1].connect();
    resume_until_live(&mut watcher, topic, Position::default());
    let mut pubc = nodes[0].connect();
    let mut counter = 0u32;
    // `back` messages read by the client before it leaves, `away` published
    // while it is away: 40 + 10 are within the kept 100, 40 + 150 are not.
    for (back, away) in [(40u32, 10u32), (40, 150)] {
        let mut sub = nodes[0].connect();
        let (_, mut last, _) = resume_until_live(&mut sub, topic, Position::default());
        let first = counter;
        for _ in 0..back + away {
            publish(&mut pubc, topic, &counter.to_be_bytes());
            counter += 1;
        }
        for i in 0..back {
            match next(&mut sub) {
                Got::Msg(p, n) => {
                    assert_eq!(n, first + i);
                    last = p;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(sub);
        // The watcher has them all: so has n2's live reader.
        for _ in 0..back + away {
            assert!(matches!(next(&mut watcher), Got::Msg(..)));
        }
        let mut again = nodes[1].connect();
        let (st, _, replayed) = resume_until_live(&mut again, topic, last);
        assert_eq!(st, status::RECOVERED);
        let got: Vec<u32> = replayed.iter().map(|r| r.1).collect();
        assert_eq!(got, (first + back..counter).collect::<Vec<_>>());
        // Live follows, no duplicate.
        publish(&mut pubc, topic, &counter.to_be_bytes());
        assert!(matches!(next(&mut again), Got::Msg(_, n) if n == counter));
        assert!(matches!(next(&mut watcher), Got::Msg(..)));
        counter += 1;
    }
}
