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
mod state;
#[cfg(feature = "cluster")]
mod wire;
#[cfg(feature = "cluster")]
pub(crate) use link::start;

// The cluster's plain types and configuration live in leaf modules (so the
// handler API, the shared state and `ServerConfig` use them without
// depending on the link); this module is their documented home.
#[cfg(feature = "cluster")]
pub use crate::cluster_config::{ClusterConfig, HistoryConfig, Interest, split_urls};
pub use crate::cluster_types::{
    ClusterConnId, ClusterStats, MAX_NODE_NAME, Position, Recovery, Resumed, valid_node_name,
};
