//! Messages from NATS to this node's shards.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt;

use super::state::{Counters, add};
use super::wire::read_publish;
use crate::shared::{Command, ServerShared};

/// Hands messages from NATS to this node's shards (shared with the tasks
/// that read the per-topic subscriptions).
#[derive(Clone)]
pub(super) struct Inbound {
    pub shared: Weak<ServerShared>,
    pub counters: Arc<Counters>,
}

impl Inbound {
    /// Sends a command to every shard of this node; a full queue drops it
    /// (counted).
    pub fn to_every_shard(&self, make: impl Fn() -> Command) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        add(&self.counters.received);
        for shard in shared.shards.iter() {
            if shared.command(shard, make()).is_err() {
                add(&self.counters.dropped_in);
            }
        }
    }

    pub fn publish(&self, body: Bytes) {
        let Some((topic, payload)) = read_publish(&body) else {
            return;
        };
        self.to_every_shard(|| Command::Publish {
            topic: topic.clone(),
            payload: payload.clone(),
        });
    }

    /// Reads one subscription to its end (or until its task is aborted,
    /// which drops it: the client then unsubscribes).
    pub fn forward(&self, mut sub: async_nats::Subscriber) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                me.publish(m.payload);
            }
        })
    }
}
