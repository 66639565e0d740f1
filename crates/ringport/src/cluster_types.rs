//! The cluster's plain types: connection ids that name their node, history
//! positions, how a resumed subscription began, and the link's counters.
//! A leaf (it names only `conn_id`), so the handler API, the shared state
//! and the configuration use them without depending on the cluster link;
//! their documented home is [`crate::cluster`], which re-exports them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::conn_id::ConnId;

/// A message's place in its topic's history: the JetStream stream
/// sequence, and the history's epoch (it changes when the history is reset:
/// the stream was recreated). Positions of one topic grow with each
/// message, though not by one (the sequence is shared by all topics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The history's epoch (drawn when its stream was created).
    pub epoch: u64,
    /// The message's stream sequence; 0 for "before any message".
    pub seq: u64,
}

/// How a subscription with [`crate::Context::subscribe_since`] began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the given position was delivered, in order;
    /// live messages follow with no gap and no duplicate.
    Recovered,
    /// The history no longer holds the position (trimmed by count or age)
    /// or its epoch changed: messages were missed; live messages follow.
    Reset,
    /// No position was given: live messages follow.
    Fresh,
    /// The topic has no history (no cluster, or outside the history
    /// namespaces): subscribed for live messages only.
    NoHistory,
}

/// The outcome of [`crate::Context::subscribe_since`]: how it began, and the
/// position the subscription now stands at (that of the last message of
/// the topic before the live ones that follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// How the subscription began.
    pub recovery: Recovery,
    /// The position the subscription stands at.
    pub position: Position,
}

/// Longest node name; names use `A-Z a-z 0-9 _ -` (they are part of NATS
/// subjects).
pub const MAX_NODE_NAME: usize = 64;

/// Checks a node name: 1 to [`MAX_NODE_NAME`] of `A-Z a-z 0-9 _ -`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A connection id that names its node: unique over the cluster. Written
/// as `NODE/SHARD.SLOT.GENERATION` (e.g. `n2/0.17.3`), and parsed back
/// from that form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClusterConnId {
    node: Arc<str>,
    conn: ConnId,
}

impl ClusterConnId {
    /// The id of `conn` on node `node`.
    pub fn new(node: impl Into<Arc<str>>, conn: ConnId) -> Self {
        ClusterConnId {
            node: node.into(),
            conn,
        }
    }

    /// The node that holds the connection.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The connection's id on its node.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl fmt::Display for ClusterConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.{}.{}",
            self.node,
            self.conn.shard(),
            self.conn.slot(),
            self.conn.generation()
        )
    }
}

impl fmt::Debug for ClusterConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ClusterConnId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a cluster connection id (NODE/SHARD.SLOT.GEN)");
        let (node, rest) = text.split_once('/').ok_or_else(bad)?;
        if !valid_node_name(node) {
            return Err(bad());
        }
        let mut parts = rest.split('.');
        let mut next = || parts.next().ok_or_else(bad);
        let shard: u16 = next()?.parse().map_err(|_| bad())?;
        let slot: u32 = next()?.parse().map_err(|_| bad())?;
        let generation: u32 = next()?.parse().map_err(|_| bad())?;
        if parts.next().is_some() || generation == 0 {
            return Err(bad());
        }
        Ok(ClusterConnId::new(
            node,
            ConnId::new(shard, slot, generation),
        ))
    }
}

/// The cluster link's counters ([`crate::Server::cluster_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// The link to the bus is up.
    pub connected: bool,
    /// Other nodes heard from within the node timeout.
    pub nodes_up: usize,
    /// Messages handed to the bus.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages for other nodes dropped: the link was down, the queue was
    /// full, or the bus refused them (e.g. over its maximum payload).
    pub dropped_out: u64,
    /// Messages from other nodes not delivered here: a shard's command
    /// queue was full, or the addressed connection was closed.
    pub dropped_in: u64,
    /// Answers from other nodes that a send found a stale id.
    pub undeliverable: u64,
    /// Sends refused at once because the node was not heard from (or the
    /// link was down).
    pub unreachable: u64,
    /// Times the link came back after being lost (to the same NATS server
    /// or another).
    pub reconnects: u64,
    /// Topics this node has subscribers for, whose publishes it receives
    /// from the bus (with per-topic interest).
    pub topics: usize,
    /// Publishes written to the history (acknowledged by JetStream).
    pub history_written: u64,
    /// Publishes the history refused or did not acknowledge (lost).
    pub history_failed: u64,
    /// Subscriptions since a position that got every missed message.
    pub recovered: u64,
    /// Subscriptions since a position that could not recover (history
    /// trimmed, epoch changed, or JetStream unreachable).
    pub reset: u64,
    /// Messages delivered from the history to recovering subscribers.
    pub replayed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_read_back_what_they_print() {
        let id = ClusterConnId::new("node-2", ConnId::new(1, 17, 3));
        assert_eq!(id.to_string(), "node-2/1.17.3");
        assert_eq!("node-2/1.17.3".parse::<ClusterConnId>(), Ok(id));
        for bad in [
            "",
            "n1",
            "n1/1.2",
            "n1/1.2.3.4",
            "n 1/1.2.3",
            "n1/1.2.0",
            "/1.2.3",
            "n1/x.2.3",
        ] {
            assert!(bad.parse::<ClusterConnId>().is_err(), "{bad}");
        }
        assert!(valid_node_name("a_b-9"));
        assert!(!valid_node_name(&"x".repeat(65)));
        assert!(!valid_node_name("a.b"));
    }
}
