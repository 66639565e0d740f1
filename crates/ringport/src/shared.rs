//! State shared between the server handle, the shards and other threads:
//! each shard's command queue and wake-up, its table of live generations,
//! its published counters, and the global connection count.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cluster::{ClusterConnId, ClusterLink};
use crate::config::ServerConfig;
use crate::conn_id::{ConnId, LiveTable};
use crate::handler::{Context, SendError};
use crate::stats::{ShardCounters, TurnHistogram};
use crate::sys::eventfd;
use crate::wake::SpaceWaiters;
use std::sync::Arc;

/// A request from another thread to a shard.
pub(crate) enum Command {
    Send {
        conn: ConnId,
        payload: Bytes,
    },
    Broadcast {
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
    Run(Box<dyn FnOnce(&mut Context<'_>) + Send>),
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
    pub eventfd: OwnedFd,
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
            commands: CommandQueue::new(commands),
            eventfd: eventfd::eventfd()?,
            notified: AtomicBool::new(false),
            live: LiveTable::new(table),
            counters: ShardCounters::default(),
            turns: TurnHistogram::default(),
            space: SpaceWaiters::default(),
        })
    }

    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A failure (counter overflow) still leaves the eventfd readable.
            let _ = eventfd::eventfd_add(self.eventfd.as_fd(), 1);
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

    pub fn shard_of(&self, conn: ConnId) -> Result<&ShardShared, SendError> {
        self.shards.get(conn.shard()).ok_or(SendError::Closed)
    }

    /// Sends a command to a shard and wakes it.
    pub fn command(&self, shard: &ShardShared, cmd: Command) -> Result<(), SendError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SendError::Stopped);
        }
        match shard.commands.try_send(cmd) {
            Ok(()) => {
                shard.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SendError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
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

/// Runs code on one shard from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ShardRemote {
    shared: Arc<ServerShared>,
    shard: usize,
}

impl ShardRemote {
    pub(crate) fn new(shared: Arc<ServerShared>, shard: usize) -> Self {
        ShardRemote { shared, shard }
    }

    /// Queues `f` to run on the shard's thread with a [`Context`] (in
    /// order with other commands to that shard). A connection id captured
    /// by `f` is still checked there: if the connection closed meanwhile,
    /// `ctx.send` to it returns `SendError::Closed`, so a late result never
    /// reaches the slot's next connection.
    pub fn run(&self, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<(), SendError> {
        self.shared
            .command(&self.shared.shards[self.shard], Command::Run(Box::new(f)))
    }

    /// The shard this handle runs code on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn server_shared(&self) -> &Arc<ServerShared> {
        &self.shared
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
