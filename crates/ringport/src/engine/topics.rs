//! Topics: each shard's index from topic name to the connections on this
//! shard subscribed to it, and the publish fan-out over it.
//!
//! A publish reaches each shard once (one command per shard, not one per
//! subscriber); the shard walks its own subscriber list and queues the same
//! shared payload (`Bytes`, one allocation) to each subscriber. A
//! subscriber whose queue is at its bound is handled by the slow-consumer
//! policy like any send that did not come from its own handler call; the
//! others are served.
//!
//! Bounds: a topic name is at most [`MAX_TOPIC_LEN`] bytes; a connection
//! holds at most [`MAX_TOPICS_PER_CONN`] subscriptions; so a shard's index
//! holds at most `connections x MAX_TOPICS_PER_CONN` entries. A connection's
//! subscriptions end when it starts closing (its id is stale from then on).

use std::collections::HashMap;

use bytes::Bytes;

use super::Core;
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::protocol::MessageKind;
use crate::router::{ClusterOut, Dispatch};

pub(crate) use crate::error::{MAX_TOPIC_LEN, MAX_TOPICS_PER_CONN, TopicError};

/// Topic name -> subscribed slots, and slot -> its topics (for the
/// unsubscribe on close). Slots, not ids: a slot leaves every list when its
/// connection starts closing, before the slot can be reused.
#[derive(Default)]
pub(crate) struct TopicIndex {
    subscribers: HashMap<Bytes, Vec<u32>>,
    by_slot: HashMap<u32, Vec<Bytes>>,
    /// Topics that gained their first (true) or lost their last (false)
    /// subscriber on this shard, for the cluster link's per-topic interest.
    changes: Vec<(Bytes, bool)>,
}

impl TopicIndex {
    /// Subscribes `slot`; Ok(false) if it already was.
    pub fn subscribe(&mut self, slot: u32, topic: &[u8]) -> Result<bool, TopicError> {
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::BadName);
        }
        let mine = self.by_slot.entry(slot).or_default();
        if mine.iter().any(|t| t == topic) {
            return Ok(false);
        }
        if mine.len() >= MAX_TOPICS_PER_CONN {
            return Err(TopicError::TooManyTopics);
        }
        // One copy of the name, shared by both maps.
        let name = match self.subscribers.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => {
                let name = Bytes::copy_from_slice(topic);
                self.changes.push((name.clone(), true));
                name
            }
        };
        mine.push(name.clone());
        self.subscribers.entry(name).or_default().push(slot);
        Ok(true)
    }

    /// Unsubscribes `slot`; false if it was not subscribed.
    pub fn unsubscribe(&mut self, slot: u32, topic: &[u8]) -> bool {
        let Some(mine) = self.by_slot.get_mut(&slot) else {
            return false;
        };
        let Some(pos) = mine.iter().position(|t| t == topic) else {
            return false;
        };
        mine.swap_remove(pos);
        if mine.is_empty() {
            self.by_slot.remove(&slot);
        }
        self.remove_from_topic(slot, topic);
        true
    }

    /// Ends every subscription of `slot` (its connection is closing).
    pub fn remove_slot(&mut self, slot: u32) {
        if let Some(topics) = self.by_slot.remove(&slot) {
            for topic in topics {
                self.remove_from_topic(slot, &topic);
            }
        }
    }

    fn remove_from_topic(&mut self, slot: u32, topic: &[u8]) {
        if let Some(list) = self.subscribers.get_mut(topic) {
            if let Some(pos) = list.iter().position(|&s| s == slot) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                if let Some((name, _)) = self.subscribers.remove_entry(topic) {
                    self.changes.push((name, false));
                }
            }
        }
    }

    /// Slots subscribed to `topic` on this shard.
    #[cfg(test)]
    pub fn subscribers(&self, topic: &[u8]) -> &[u32] {
        self.subscribers.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Topics with at least one subscriber on this shard.
    #[cfg(test)]
    pub fn topic_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Topics `slot` is subscribed to.
    #[cfg(test)]
    pub fn topics_of(&self, slot: u32) -> usize {
        self.by_slot.get(&slot).map_or(0, Vec::len)
    }
}

impl<C: Codec> Core<C> {
    pub(super) fn subscribe(&mut self, conn: ConnId, topic: &[u8]) -> Result<bool, TopicError> {
        let slot = self.live_slot(conn).ok_or(TopicError::Closed)?;
        let done = self.topics.subscribe(slot as u32, topic);
        self.report_interest();
        done
    }

    pub(super) fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool {
        let done = self
            .live_slot(conn)
            .is_some_and(|slot| self.topics.unsubscribe(slot as u32, topic));
        self.report_interest();
        done
    }

    /// Tells the cluster link (through the outbox) which topics this shard
    /// gained or lost.
    pub(super) fn report_interest(&mut self) {
        for (topic, on) in self.topics.changes.drain(..) {
            // Without a cluster the outbox refuses it: nothing to tell.
            let out = ClusterOut::Interest { topic, on };
            let _ = self.outbox.cluster(&self.shared, out);
        }
    }

    /// Queues `payload` to this shard's subscribers of `topic`; returns how
    /// many it was queued to (slow consumers at their bound are not
    /// counted, and handled by the policy).
    pub(super) fn publish_local(&mut self, topic: &[u8], payload: &Bytes) -> usize {
        let Some(list) = self.topics.subscribers.get_mut(topic) else {
            return 0;
        };
        // Taken out while sends are queued (which need `self`), put back
        // before any close can edit the index.
        let list = std::mem::take(list);
        self.begin_fanout();
        let mut queued = 0;
        for &slot in &list {
            if self.admit_remote(slot as usize)
                && self
                    .enqueue_fanout(slot as usize, MessageKind::Binary, payload)
                    .is_ok()
            {
                queued += 1;
            }
        }
        if let Some(back) = self.topics.subscribers.get_mut(topic) {
            *back = list;
        }
        self.close_victims();
        queued
    }
}
