//! A cluster of ringport nodes: broadcasts, topic publishes and sends to a
//! connection held by another node travel over a message bus (NATS, with
//! the `cluster` cargo feature; see [`ClusterConfig`]). Topics can keep a
//! history on NATS JetStream ([`HistoryConfig`]) from which a subscriber
//! that reconnects, to the same node or another, recovers what it missed.
//!
//! # Delivery semantics
//!
//! | Path | Guarantee | Order | When the bus is unreachable |
//! |---|---|---|---|
//! | Local (same node) | Every message, unless the subscriber is a slow consumer | Per publisher | Unaffected |
//! | Live, cross-node (broadcasts, topics without history, direct sends) | **At most once** | Per (publisher node, topic) | Dropped and counted ([`ClusterStats::dropped_out`]) |
//! | Topics with history, live | At most once per subscription (a subscriber's link may lose messages) | The history's order, the same on every node | Not written ([`ClusterStats::history_failed`]) |
//! | Topics with history, subscribed with positions ([`crate::Context::subscribe_since`]) | **Every message once, in order, while the history holds it** (count and age bounds); otherwise the subscriber is told ([`Recovery::Reset`]) | The history's order | Recovery waits for the bus, then resets after [`HistoryConfig::recovery_timeout`] |
//!
//! Details:
//! - **At most once** across nodes: nothing is retried or acknowledged; a
//!   message is delivered once or lost (and then counted where this node
//!   can see it).
//! - **Order per (publisher, topic)** is kept: one node publishes through
//!   one NATS connection, fed by one FIFO queue; NATS keeps the order of
//!   one connection's messages to each subscriber.
//! - **Several NATS servers** ([`ClusterConfig::urls`]): the node uses one
//!   and moves to another when it is lost (every known server is tried at
//!   once, then with back-off); its subscriptions move with it. Messages
//!   in flight to or from the lost server are lost (a handful at 1,000
//!   messages/s on loopback, measured); subscribers with positions recover
//!   them from the history (replicated over JetStream servers with
//!   [`HistoryConfig::replicas`]).
//! - **Per-topic interest** ([`Interest::PerTopic`], the default): a node
//!   receives from NATS only the publishes of topics it has subscribers
//!   for: it subscribes to the topic's subject when the first local
//!   subscriber appears (on any shard) and unsubscribes when the last one
//!   leaves. A subscription counts cross-node publishes only once the
//!   interest is registered with NATS ([`crate::Context::after_cluster_interest`]
//!   tells when).
//! - **NATS unreachable**: messages for other nodes wait in a bounded queue
//!   ([`ClusterConfig::buffer`] messages); while the link is down, or when
//!   the queue is full, they are dropped and counted
//!   ([`ClusterStats::dropped_out`]); a log line says when the link is lost
//!   and when it is back (with the count lost meanwhile). Local delivery
//!   never depends on the link (except for topics with history, which are
//!   delivered through it).
//! - **A node that dies**: every node announces itself every
//!   [`ClusterConfig::heartbeat`]; a node not heard from for
//!   [`ClusterConfig::node_timeout`] is down, and a send to one of its
//!   connections fails at once with [`crate::SendError::Unreachable`].
//!   Within that window, a send to it is lost without a report.
//! - **A stale id** on another node: the owning node answers the sending
//!   node, whose handler hears of it in
//!   [`crate::Handler::on_undeliverable`] with [`crate::SendError::Closed`].
//! - **History positions**: each message of a topic with history has a
//!   [`Position`]: the stream sequence (growing per topic, not by one) and
//!   the epoch (changes when the history is reset, e.g. its store lost).
//!   Recovery from a position replays what follows it, then switches to
//!   live with no gap and no duplicate (see the `history` module source
//!   for how the switch is ordered). It reports [`Recovery::Reset`] when
//!   the history no longer holds the position or the epoch differs.

// The module docs link to the NATS link's types, which exist only with the
// `cluster` feature: without it (`cargo doc -p ringport`) those links
// cannot resolve.
#![cfg_attr(not(feature = "cluster"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "cluster")]
mod config;
#[cfg(feature = "cluster")]
mod history;
#[cfg(feature = "cluster")]
mod inbound;
#[cfg(feature = "cluster")]
mod interest;
#[cfg(feature = "cluster")]
mod link;
#[cfg(feature = "cluster")]
mod nats;
#[cfg(feature = "cluster")]
mod wire;
#[cfg(feature = "cluster")]
pub use config::{ClusterConfig, Interest, split_urls};
#[cfg(feature = "cluster")]
pub use history::HistoryConfig;
#[cfg(feature = "cluster")]
pub(crate) use link::start;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

use crate::conn_id::ConnId;
use crate::error::SendError;
use crate::error::TopicError;
use crate::handler::Context;

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

/// How a subscription with [`Context::subscribe_since`] began.
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

/// The outcome of [`Context::subscribe_since`]: how it began, and the
/// position the subscription now stands at (that of the last message of
/// the topic before the live ones that follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// How the subscription began.
    pub recovery: Recovery,
    /// The position the subscription stands at.
    pub position: Position,
}

/// Runs on the subscriber's shard once a subscription since a position
/// is live.
pub(crate) type ResumeDone = Box<dyn FnOnce(&mut Context<'_>, Result<Resumed, TopicError>) + Send>;

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

/// What the engine and the server handle need of the cluster link (kept as
/// a trait so the core builds without the `cluster` feature).
pub(crate) trait ClusterLink: Send + Sync {
    /// This node's name.
    fn node(&self) -> &Arc<str>;
    /// To every connection of every other node.
    fn broadcast(&self, payload: &Bytes);
    /// To the subscribers of `topic` on every other node.
    fn publish(&self, topic: &Bytes, payload: &Bytes);
    /// To a connection of another node; `from` hears of a stale id.
    fn send(
        &self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: Bytes,
    ) -> Result<(), SendError>;
    /// A shard gained (`on`) its first subscriber for `topic`, or lost its
    /// last one: the node's interest in the topic's publishes from other
    /// nodes.
    fn interest(&self, topic: &Bytes, on: bool);
    /// Runs `waiter` (on the link's thread) once every interest reported so
    /// far is registered with the bus, or at once if the link is down.
    fn when_interest_applied(&self, waiter: Box<dyn FnOnce() + Send>);
    /// Whether publishes to `topic` are kept in the history (they then reach
    /// subscribers, this node's included, through it, with positions).
    fn history_topic(&self, topic: &[u8]) -> bool;
    /// Delivers to `conn` the messages of `topic` after `since`, then
    /// subscribes it (on its shard) and runs `done` there.
    fn recover(&self, conn: ConnId, topic: Bytes, since: Option<Position>, done: ResumeDone);
    /// The link's counters.
    fn stats(&self) -> ClusterStats;
    /// Ends the link (on server stop).
    fn stop(&self);
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
