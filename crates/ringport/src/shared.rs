//! State shared between the server handle, the shards and other threads:
//! each shard's command queue and wake-up, its table of live generations,
//! its published counters, and the global connection count.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cluster_types::ClusterConnId;
use crate::config::ServerConfig;
use crate::conn_id::{ConnId, LiveTable};
use crate::error::SendError;
use crate::handler::{ClusterLink, Remote, RunFn};
use crate::stats::{ShardCounters, TurnHistogram};
use crate::sys::eventfd;
use crate::wake::SpaceWaiters;

/// A request from another thread to a shard.
pub(crate) enum Command {
    Send {
        conn: ConnId,
        /// Text or binary (kept by protocol connections only).
        kind: crate::protocol::MessageKind,
        payload: Bytes,
    },
    Broadcast {
        kind: crate::protocol::MessageKind,
        payload: Bytes,
    },
    /// To this shard's subscribers of `topic` (never forwarded further).
    Publish {
        topic: Bytes,
        payload: Bytes,
    },
    /// A send from `from` to a connection of another node failed there.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Undeliverable {
        from: ConnId,
        to: ClusterConnId,
        error: SendError,
    },
    Close {
        conn: ConnId,
    },
    Connect {
        remote: SocketAddr,
        local: Option<SocketAddr>,
    },
    /// Code to run on the shard (e.g. the result of work done elsewhere).
    Run(RunFn),
}

/// A shard's command queue, bounded like `crossbeam_channel::bounded`, but
/// with its memory allocated as commands arrive (crossbeam's list channel,
/// in blocks of 31, freed as they are taken) and a count for the bound: a
/// bounded channel allocates and writes every slot up front, about 5 MiB
/// for the default 65,536 commands, in every idle shard.
pub(crate) struct CommandQueue {
    tx: Sender<Command>,
    rx: Receiver<Command>,
    len: AtomicUsize,
    cap: usize,
}

impl CommandQueue {
    pub fn new(cap: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        CommandQueue {
            tx,
            rx,
            len: AtomicUsize::new(0),
            cap,
        }
    }

    /// Queues `cmd` unless `cap` commands are waiting (`Full`).
    pub fn try_send(&self, cmd: Command) -> Result<(), TrySendError<Command>> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(cmd));
        }
        self.tx.try_send(cmd).inspect_err(|_| {
            self.len.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Takes a place for one command (false: the queue is full). The place
    /// is filled by [`Self::push_reserved`] or given back by
    /// [`Self::unreserve`].
    pub fn reserve(&self) -> bool {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a place [`Self::reserve`] took.
    pub fn unreserve(&self) {
        self.len.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queues `cmd` in a place [`Self::reserve`] took.
    pub fn push_reserved(&self, cmd: Command) {
        // The receiver lives as long as the queue: an unbounded send
        // cannot fail.
        let _ = self.tx.send(cmd);
    }

    /// The oldest command, if any.
    pub fn try_recv(&self) -> Result<Command, crossbeam_channel::TryRecvError> {
        let cmd = self.rx.try_recv()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Ok(cmd)
    }
}

/// The part of a shard that other threads see.
pub(crate) struct ShardShared {
    pub commands: CommandQueue,
    /// The shard's wake-up (none for engines tested in memory, whose
    /// harness looks at `notified`).
    pub eventfd: Option<OwnedFd>,
    /// Set by the first waker, cleared by the shard before it drains the
    /// queue: one eventfd write per wake-up, not one per command.
    pub notified: AtomicBool,
    pub live: LiveTable,
    pub counters: ShardCounters,
    pub turns: TurnHistogram,
    /// Async senders waiting for room in the command queue or a send
    /// queue: woken after the shard drains commands or completes a send.
    pub space: SpaceWaiters,
}

impl ShardShared {
    pub fn new(table: usize, commands: usize) -> io::Result<Self> {
        Ok(ShardShared {
            eventfd: Some(eventfd::eventfd()?),
            ..Self::in_memory(table, commands)
        })
    }

    /// A shard without an eventfd, for engines tested in memory.
    pub fn in_memory(table: usize, commands: usize) -> Self {
        ShardShared {
            commands: CommandQueue::new(commands),
            eventfd: None,
            notified: AtomicBool::new(false),
            live: LiveTable::new(table),
            counters: ShardCounters::default(),
            turns: TurnHistogram::default(),
            space: SpaceWaiters::default(),
        }
    }

    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel)
            && let Some(fd) = &self.eventfd
        {
            // A failure (counter overflow) still leaves the eventfd readable.
            let _ = eventfd::eventfd_add(fd.as_fd(), 1);
        }
    }
}

/// State shared by the server handle and all shards.
pub(crate) struct ServerShared {
    pub shards: Box<[ShardShared]>,
    pub stopping: AtomicBool,
    /// Connections open (or connecting) over all shards, checked against
    /// `max_connections`.
    pub admitted: AtomicUsize,
    /// Connections per source (`max_connections_per_ip`), if limited.
    pub sources: Option<crate::admission_table::SourceTable>,
    pub config: ServerConfig,
    /// The codec's maximum frame: the bound for received and sent messages.
    pub max_frame: usize,
    /// Round-robin cursor for outbound connects.
    pub next_shard: AtomicUsize,
    /// Why a shard failed, if one did: the whole server then stops (a
    /// server with a dead shard would silently drop the clients hashed to
    /// it).
    pub failure: std::sync::Mutex<Option<String>>,
    /// The link to the other nodes, when the server is part of a cluster:
    /// broadcasts, publishes and sends to other nodes go through it.
    pub cluster: std::sync::OnceLock<Box<dyn ClusterLink>>,
}

impl ServerShared {
    /// Records the first shard failure and stops every shard.
    pub fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!("{why}; stopping the server");
            *failure = Some(why);
        }
        drop(failure);
        self.stopping.store(true, Ordering::Release);
        for shard in self.shards.iter() {
            shard.wake();
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn shard_of(&self, conn: ConnId) -> Result<&ShardShared, SendError> {
        self.shards.get(conn.shard()).ok_or(SendError::Closed)
    }

    pub fn check_live(&self, conn: ConnId) -> Result<&ShardShared, SendError> {
        let shard = self.shard_of(conn)?;
        if shard.live.is_live(conn.slot(), conn.generation()) {
            Ok(shard)
        } else {
            Err(SendError::Closed)
        }
    }
}

impl Remote for ServerShared {
    fn run(&self, shard: usize, f: RunFn) -> Result<(), SendError> {
        self.try_run(shard, f).map_err(|(_, e)| e)
    }

    fn try_run(&self, shard: usize, f: RunFn) -> Result<(), (RunFn, SendError)> {
        if self.is_stopping() {
            return Err((f, SendError::Stopped));
        }
        let Some(target) = self.shards.get(shard) else {
            return Err((f, SendError::Closed));
        };
        match target.commands.try_send(Command::Run(f)) {
            Ok(()) => {
                target.wake();
                Ok(())
            }
            Err(
                TrySendError::Full(Command::Run(f)) | TrySendError::Disconnected(Command::Run(f)),
            ) => Err((f, SendError::Busy)),
            Err(_) => unreachable!("the queue gives back the command it was given"),
        }
    }

    fn wait_for_room(&self, shard: usize, waker: &std::task::Waker) {
        if let Some(target) = self.shards.get(shard) {
            target.space.register(waker);
        }
    }

    fn node(&self) -> Option<Arc<str>> {
        self.cluster.get().map(|link| link.node().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close() -> Command {
        Command::Close {
            conn: ConnId::new(0, 1, 1),
        }
    }

    #[test]
    fn the_command_queue_holds_at_most_its_bound_and_frees_places_as_taken() {
        let q = CommandQueue::new(2);
        assert!(q.try_send(close()).is_ok());
        assert!(q.try_send(close()).is_ok());
        assert!(matches!(q.try_send(close()), Err(TrySendError::Full(_))));
        assert!(q.try_recv().is_ok());
        assert!(q.try_send(close()).is_ok());
        assert!(q.try_recv().is_ok());
        assert!(q.try_recv().is_ok());
        assert!(q.try_recv().is_err());
        assert_eq!(q.len.load(Ordering::Acquire), 0);
    }
}
