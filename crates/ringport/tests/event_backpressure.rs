//! The event API's backpressure never blocks a shard: with the event queue
//! full, the shard goes on serving its other work (here: answering a
//! connections snapshot, which runs on the shard thread), stops reading
//! the connection whose events wait, and loses nothing once the consumer
//! pulls again.

mod common;

use std::time::Duration;

use common::*;
use ringport::{Event, LengthDelimited, Server};

#[test]
fn a_full_event_queue_pauses_the_connection_not_the_shard() {
    let mut cfg = config();
    cfg.shards = 1;
    cfg.event_queue = 4;
    let server = Server::start_events(cfg, LengthDelimited::new()).expect("start event server");
    let mut c = connect(server.local_addr());
    const N: usize = 200;
    for i in 0..N {
        write_frame(&mut c, format!("m{i}").as_bytes()).unwrap();
    }
    // The queue (4 events) is full and the rest waits: the shard paused
    // reading that connection instead of waiting for the consumer.
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().read_pauses >= 1),
        "the connection's reading was never paused"
    );
    // The shard thread is free: it answers a snapshot promptly.
    let snapshot = server.connections(Duration::from_secs(5));
    assert!(snapshot.complete, "the shard did not answer: it is blocked");
    assert_eq!(snapshot.connections.len(), 1);
    // Nothing lost, in order, once the consumer pulls.
    assert!(matches!(next(&server), Event::Connected { .. }));
    for i in 0..N {
        match next(&server) {
            Event::Message { bytes, .. } => assert_eq!(&bytes[..], format!("m{i}").as_bytes()),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    server.stop();
}
