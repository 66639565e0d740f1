//! What the link's handle ([`super::link`]), its NATS thread
//! ([`super::nats`]) and the tasks that hand messages to the shards
//! ([`super::inbound`]) share: the link's counters and the table of other
//! nodes. A leaf of the cluster module, so those three do not depend on
//! each other both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// Other nodes and when each was last heard from.
pub(super) type Peers = RwLock<HashMap<Arc<str>, Instant>>;

/// The link's counters (read back as [`super::ClusterStats`]) and its
/// connection state.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicBool,
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) dropped_out: AtomicU64,
    pub(super) dropped_in: AtomicU64,
    pub(super) undeliverable: AtomicU64,
    pub(super) unreachable: AtomicU64,
    pub(super) reconnects: AtomicU64,
    /// Told on every (re)connection after the first.
    pub(super) reconnected: Notify,
    /// Ever connected (the first connect is not a reconnect).
    pub(super) ever: AtomicBool,
}

pub(super) fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
