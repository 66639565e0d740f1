//! What leaves the engine other than kernel work: commands for other
//! shards, wake-ups, and traffic for other nodes of a cluster.
//!
//! The engine never touches another shard's queue, an eventfd or the
//! cluster link itself: it appends here, and the shard loop
//! (`crate::shard`) hands the contents on after each step
//! (`crate::router::deliver_outbox`). A command whose target queue is full
//! stays here, in order, and is tried again at the next step, so a busy
//! shard delays a broadcast or publish instead of losing it. The outbox is
//! bounded ([`Outbox::limit`] commands); past half of it the engine pauses
//! reading from the connection whose message produced the traffic, until
//! it has drained (see `Engine::pause_for_outbox`).

use std::collections::VecDeque;

use crate::error::SendError;
use crate::router::{ClusterOut, Dispatch, Targets};
use crate::shared::{Command, ServerShared};

/// A shard's outgoing commands, wake-ups and cluster traffic.
pub(crate) struct Outbox {
    /// Per target shard, the commands not yet in its queue, oldest first.
    queues: Box<[VecDeque<Command>]>,
    /// Commands held over all targets.
    held: usize,
    limit: usize,
    /// Every shard is to be woken (the connection limit was reached or
    /// left: they withdraw or post their accepts now).
    wake_all: bool,
    cluster: Vec<ClusterOut>,
    /// The shard this outbox belongs to.
    here: usize,
}

impl Outbox {
    /// An outbox of shard `here` of `shards`, holding at most `limit`
    /// commands.
    pub fn new(here: usize, shards: usize, limit: usize) -> Self {
        Outbox {
            queues: (0..shards).map(|_| VecDeque::new()).collect(),
            held: 0,
            limit: limit.max(1),
            wake_all: false,
            cluster: Vec::new(),
            here,
        }
    }

    /// Commands held for other shards.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The bound on [`Self::held`].
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Nothing to hand on.
    pub fn is_empty(&self) -> bool {
        self.held == 0 && !self.wake_all && self.cluster.is_empty()
    }

    /// Held commands at or over half the bound: the engine stops reading
    /// from the connections that produce them.
    pub fn over_soft_limit(&self) -> bool {
        self.held > 0 && self.held >= self.limit / 2
    }

    /// Asks for every shard to be woken.
    pub fn wake_all(&mut self) {
        self.wake_all = true;
    }

    /// Takes the wake-everyone request.
    pub fn take_wake_all(&mut self) -> bool {
        std::mem::take(&mut self.wake_all)
    }

    /// The commands for `shard`, for the shard loop to move into its queue
    /// (front first; what does not fit stays).
    pub fn queue_mut(&mut self, shard: usize) -> &mut VecDeque<Command> {
        &mut self.queues[shard]
    }

    /// Accounts for `n` commands moved out of the queues.
    pub fn delivered(&mut self, n: usize) {
        self.held -= n;
    }

    /// Drops every command still held (the shard has stopped); returns how
    /// many.
    pub fn discard(&mut self) -> usize {
        let n = self.held;
        for q in self.queues.iter_mut() {
            q.clear();
        }
        self.held = 0;
        n
    }

    /// Takes the cluster traffic.
    pub fn take_cluster(&mut self) -> std::vec::Drain<'_, ClusterOut> {
        self.cluster.drain(..)
    }
}

impl Dispatch for Outbox {
    fn here(&self) -> Option<usize> {
        Some(self.here)
    }

    fn reserve(&mut self, _: &ServerShared, targets: Targets) -> Result<(), SendError> {
        let n = match targets {
            Targets::One(_) => 1,
            Targets::Others => self.queues.len() - 1,
        };
        if self.held + n > self.limit {
            return Err(SendError::Busy);
        }
        Ok(())
    }

    fn push(&mut self, _: &ServerShared, shard: usize, cmd: Command) {
        self.queues[shard].push_back(cmd);
        self.held += 1;
    }

    fn cluster(&mut self, shared: &ServerShared, out: ClusterOut) -> Result<(), SendError> {
        if shared.cluster.get().is_none() {
            return Err(SendError::Unreachable);
        }
        self.cluster.push(out);
        Ok(())
    }
}
