//! Deterministic tests of topics: subscribe, publish (from a handler and
//! as a command from another thread), unsubscribe on close, bounds, slow
//! subscribers. Virtual time, scripted completions, as in `tests.rs`.

use super::*;
use crate::engine::topics::{MAX_TOPIC_LEN, MAX_TOPICS_PER_CONN, TopicError};
use crate::shared::Command;
use bytes::Bytes;

fn ctx(h: &mut Harness) -> Context<'_> {
    Context {
        core: &mut h.engine.core,
    }
}

/// Bytes of one default-codec frame of `payload`.
fn framed(payload: &[u8]) -> usize {
    4 + payload.len()
}

#[test]
fn a_publish_reaches_exactly_the_subscribers() {
    let mut h = Harness::new(|_| {});
    h.turn(0);
    let a = h.accept(0);
    let b = h.accept(1);
    let c = h.accept(2);
    assert_eq!(ctx(&mut h).subscribe(a, b"news"), Ok(true));
    assert_eq!(ctx(&mut h).subscribe(b, b"news"), Ok(true));
    assert_eq!(ctx(&mut h).subscribe(b, b"news"), Ok(false), "idempotent");
    assert_eq!(ctx(&mut h).subscribe(c, b"sport"), Ok(true));
    assert_eq!(ctx(&mut h).publish(b"news", b"hello"), Ok(2));
    let ops = h.turn(1);
    assert!(
        ops.contains(&send_op(a)) && ops.contains(&send_op(b)),
        "{ops:?}"
    );
    assert!(!ops.contains(&send_op(c)), "not a subscriber: {ops:?}");
    assert_eq!(h.queued(a.slot()), framed(b"hello"));
    assert_eq!(h.queued(b.slot()), framed(b"hello"), "once, not twice");
    assert_eq!(h.queued(c.slot()), 0);
    assert_eq!(ctx(&mut h).publish(b"nobody", b"x"), Ok(0));
    assert_eq!(h.engine.core.topics.topic_count(), 2);
}

#[test]
fn a_publish_command_from_another_thread_fans_out_on_the_shard() {
    let mut h = Harness::new(|_| {});
    h.turn(0);
    let subs: Vec<ConnId> = (0..10).map(|slot| h.accept(slot)).collect();
    for &s in &subs {
        ctx(&mut h).subscribe(s, b"t").unwrap();
    }
    // One command for the whole shard, whatever its subscriber count.
    h.shared.shards[0]
        .commands
        .try_send(Command::Publish {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::from_static(b"payload"),
        })
        .ok()
        .unwrap();
    let ops = h.turn(1);
    for &s in &subs {
        assert!(ops.contains(&send_op(s)), "{s}: {ops:?}");
        assert_eq!(h.queued(s.slot()), framed(b"payload"));
    }
}

#[test]
fn unsubscribe_and_close_end_subscriptions() {
    let mut h = Harness::new(|_| {});
    h.turn(0);
    let a = h.accept(0);
    let b = h.accept(1);
    ctx(&mut h).subscribe(a, b"x").unwrap();
    ctx(&mut h).subscribe(a, b"y").unwrap();
    ctx(&mut h).subscribe(b, b"x").unwrap();
    assert!(ctx(&mut h).unsubscribe(a, b"y"));
    assert!(!ctx(&mut h).unsubscribe(a, b"y"), "already gone");
    assert_eq!(ctx(&mut h).publish(b"y", b"1"), Ok(0));
    // `b` closes: it leaves every topic at once (its id is stale).
    h.engine.core.begin_close(1, CloseReason::Local, false);
    assert_eq!(h.engine.core.topics.topics_of(1), 0);
    assert_eq!(ctx(&mut h).publish(b"x", b"2"), Ok(1), "only `a` left");
    h.ops();
    h.recv_ended(b, -libc::ECANCELED);
    h.closed(b);
    h.take_seen();
    // The slot's next connection is not subscribed to anything.
    let b2 = h.accept(1);
    assert_ne!(b, b2);
    assert_eq!(ctx(&mut h).publish(b"x", b"3"), Ok(1));
    h.turn(2);
    assert_eq!(h.queued(b2.slot()), 0);
    assert_eq!(ctx(&mut h).subscribe(b, b"x"), Err(TopicError::Closed));
}

#[test]
fn topic_bounds_are_enforced() {
    let mut h = Harness::new(|_| {});
    h.turn(0);
    let a = h.accept(0);
    assert_eq!(ctx(&mut h).subscribe(a, b""), Err(TopicError::BadName));
    let long = vec![b'n'; MAX_TOPIC_LEN + 1];
    assert_eq!(ctx(&mut h).subscribe(a, &long), Err(TopicError::BadName));
    assert_eq!(
        ctx(&mut h).subscribe(a, &long[..MAX_TOPIC_LEN]),
        Ok(true),
        "exactly the limit is fine"
    );
    for i in 1..MAX_TOPICS_PER_CONN {
        ctx(&mut h)
            .subscribe(a, format!("t{i}").as_bytes())
            .unwrap();
    }
    assert_eq!(
        ctx(&mut h).subscribe(a, b"one-more"),
        Err(TopicError::TooManyTopics)
    );
    // Freeing one makes room again.
    assert!(ctx(&mut h).unsubscribe(a, b"t1"));
    assert_eq!(ctx(&mut h).subscribe(a, b"one-more"), Ok(true));
}

#[test]
fn a_slow_subscriber_is_cut_and_the_others_are_served() {
    let mut h = Harness::new(|c| {
        c.send_queue_limit = Some(64);
        c.slow_consumer = crate::SlowConsumerPolicy::Disconnect;
    });
    h.turn(0);
    let slow = h.accept(0);
    let fast = h.accept(1);
    ctx(&mut h).subscribe(slow, b"t").unwrap();
    ctx(&mut h).subscribe(fast, b"t").unwrap();
    let payload = [7u8; 20];
    // Two messages fill `slow`'s queue (nothing is sent: its send never
    // completes); `fast` drains each time.
    let mut slow_closed = false;
    for i in 0..6 {
        ctx(&mut h).publish(b"t", &payload).unwrap();
        let ops = h.turn(10 + i);
        if ops.contains(&send_op(fast)) {
            h.sent(fast, framed(&payload) as i32);
        }
        slow_closed |= ops.contains(&cancel_recv_op(slow));
    }
    assert!(slow_closed, "the slow subscriber is disconnected");
    assert_eq!(h.engine.core.topics.subscribers(b"t"), &[fast.slot()]);
    h.engine.publish_stats();
    assert!(h.shared.shards[0].counters.snapshot().slow_consumers >= 1);
    // `fast` got every message.
    assert_eq!(h.queued(fast.slot()), 0);
    assert_eq!(ctx(&mut h).publish(b"t", &payload), Ok(1));
}
