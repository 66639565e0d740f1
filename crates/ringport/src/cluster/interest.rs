//! Which topics this node has subscribers for, over all its shards: the
//! NATS subscriptions the link must hold (one subject per topic).
//!
//! Shards report a topic when its first local subscriber appears on that
//! shard and when its last one leaves ([`Interest::change`]); the counts
//! here are per shard, so a topic is wanted while any shard has it. The
//! NATS thread takes the topics whose state changed ([`Interest::take`])
//! and subscribes or unsubscribes; nothing queued here can be lost or
//! grow past the number of topics, whatever the link's state.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Code run once the interest registered so far is known to NATS.
pub(super) type Waiter = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Topic -> shards with a subscriber for it.
    shards: HashMap<Bytes, usize>,
    /// Topics whose wanted state may differ from what NATS holds.
    dirty: HashSet<Bytes>,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
pub(super) struct Interest {
    state: Mutex<State>,
    /// Wakes the NATS thread.
    pub(super) changed: Notify,
}

/// What the NATS thread must do: for each topic, whether it is wanted now,
/// then the waiters to run once that is done.
pub(super) struct Changes {
    pub topics: Vec<(Bytes, bool)>,
    pub waiters: Vec<Waiter>,
}

impl Interest {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A shard gained (`on`) or lost its subscribers for `topic`.
    pub fn change(&self, topic: &Bytes, on: bool) {
        let mut s = self.lock();
        let flip = if on {
            let n = s.shards.entry(topic.clone()).or_insert(0);
            *n += 1;
            *n == 1
        } else {
            match s.shards.get_mut(topic) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    s.shards.remove(topic);
                    true
                }
                None => false,
            }
        };
        if flip {
            s.dirty.insert(topic.clone());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Runs `waiter` once the NATS thread has applied every change so far.
    pub fn when_applied(&self, waiter: Waiter) {
        self.lock().waiters.push(waiter);
        self.changed.notify_one();
    }

    /// The changes to apply (and forgets them).
    pub fn take(&self) -> Changes {
        let mut s = self.lock();
        let dirty = std::mem::take(&mut s.dirty);
        let topics = dirty
            .into_iter()
            .map(|t| {
                let wanted = s.shards.contains_key(&t);
                (t, wanted)
            })
            .collect();
        Changes {
            topics,
            waiters: std::mem::take(&mut s.waiters),
        }
    }

    /// Topics wanted now.
    pub fn topics(&self) -> usize {
        self.lock().shards.len()
    }

    /// Drops the waiters (the link is stopping; they would hold the server).
    pub fn clear_waiters(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        drop(waiters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_wanted_while_any_shard_has_it() {
        let i = Interest::default();
        let t = Bytes::from_static(b"t");
        i.change(&t, true);
        i.change(&t, true);
        assert_eq!(i.take().topics, vec![(t.clone(), true)]);
        i.change(&t, false);
        assert!(i.take().topics.is_empty(), "one shard still has it");
        i.change(&t, false);
        assert_eq!(i.take().topics, vec![(t.clone(), false)]);
        assert_eq!(i.topics(), 0);
        // Gone and back before the thread looked: wanted, once.
        i.change(&t, true);
        i.change(&t, false);
        i.change(&t, true);
        assert_eq!(i.take().topics, vec![(t, true)]);
    }

    #[test]
    fn waiters_are_handed_over_once() {
        let i = Interest::default();
        i.when_applied(Box::new(|| {}));
        assert_eq!(i.take().waiters.len(), 1);
        assert_eq!(i.take().waiters.len(), 0);
    }
}
