//! Topics: each shard's index from topic name to the connections on this
//! shard subscribed to it (the publish fan-out over it is in `output.rs`).
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

    /// The topics that gained their first (true) or lost their last
    /// (false) subscriber since the last call.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, (Bytes, bool)> {
        self.changes.drain(..)
    }

    /// Takes out `topic`'s subscriber list for a publish to walk while it
    /// queues to each (which needs the engine); None if it has none. Give
    /// it back with [`Self::restore_subscribers`] before anything can
    /// subscribe or unsubscribe.
    pub fn take_subscribers(&mut self, topic: &[u8]) -> Option<Vec<u32>> {
        self.subscribers.get_mut(topic).map(std::mem::take)
    }

    /// Gives back a list [`Self::take_subscribers`] took.
    pub fn restore_subscribers(&mut self, topic: &[u8], list: Vec<u32>) {
        if let Some(back) = self.subscribers.get_mut(topic) {
            *back = list;
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
