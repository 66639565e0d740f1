//! The chat handler: every message from any client reaches every client,
//! the sender included, across shards.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use ringport::{LengthDelimited, Server, handlers::Chat};

const CLIENTS: usize = 50;
const PER_CLIENT: u32 = 6;

/// Message `seq` of client `from`: both numbers, then filler of a length
/// that depends on them.
fn message(from: u32, seq: u32) -> Vec<u8> {
    let mut m = from.to_be_bytes().to_vec();
    m.extend(seq.to_be_bytes());
    m.extend(pattern(
        (u64::from(from) << 32) | u64::from(seq),
        (from as usize * 31 + seq as usize * 17) % 500,
    ));
    m
}

#[test]
fn every_message_reaches_every_client_across_two_shards() {
    let mut cfg = config();
    cfg.shards = 2;
    let server = Server::start(cfg, LengthDelimited::new(), |_| Chat).expect("start chat");
    assert_backend(&server);
    let addr = server.local_addr();
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    // Broadcasts reach the connections open when they are made: wait for
    // all of them.
    assert!(
        wait_until(Duration::from_secs(20), || server.stats().connections
            == CLIENTS as u64),
        "{:?}",
        server.stats()
    );
    let spread = server.shard_stats();
    eprintln!(
        "connections per shard: {:?}",
        spread.iter().map(|s| s.connections).collect::<Vec<_>>()
    );

    let start = Arc::new(Barrier::new(CLIENTS));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(me, s)| {
            let start = start.clone();
            thread::spawn(move || {
                let me = me as u32;
                let mut writer = s.try_clone().unwrap();
                start.wait();
                let w = thread::spawn(move || {
                    for seq in 0..PER_CLIENT {
                        write_frame(&mut writer, &message(me, seq)).unwrap();
                    }
                });
                // Every client's messages, in the order it sent them.
                let mut reader = s;
                let mut next: HashMap<u32, u32> = HashMap::new();
                for _ in 0..CLIENTS as u32 * PER_CLIENT {
                    let m = read_frame(&mut reader, 1 << 20)
                        .unwrap_or_else(|e| panic!("client {me}: {e}"));
                    let from = u32::from_be_bytes(m[..4].try_into().unwrap());
                    let seq = u32::from_be_bytes(m[4..8].try_into().unwrap());
                    assert!((from as usize) < CLIENTS, "client {me}: sender {from}");
                    let want = next.entry(from).or_insert(0);
                    assert_eq!(seq, *want, "client {me}: order of {from}'s messages");
                    *want += 1;
                    assert_eq!(m, message(from, seq), "client {me}: content");
                }
                w.join().unwrap();
                assert_eq!(next.len(), CLIENTS, "client {me} heard from everyone");
                assert!(next.values().all(|&n| n == PER_CLIENT));
                assert_eq!(next[&me], PER_CLIENT, "client {me} got its own messages");
                // Nothing more than that.
                expect_silence(&mut reader, Duration::from_millis(200));
                reader
            })
        })
        .collect();
    let clients: Vec<TcpStream> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let total = (CLIENTS as u64) * u64::from(PER_CLIENT);
    let st = server.stats();
    assert_eq!(st.messages_in, total);
    assert_eq!(st.messages_out, total * CLIENTS as u64);
    assert_eq!(st.slow_consumers, 0);
    assert_eq!(st.commands_dropped, 0);
    drop(clients);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == 0));
    server.stop();
}
