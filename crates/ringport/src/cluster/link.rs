//! The handle the engine holds: [`Link`], the [`ClusterLink`] of a node
//! over NATS, and [`start`], which starts the link's thread.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::history::{HistoryCounters, Recover, handover};
use super::inbound::Inbound;
use super::interest::{Interest as Wanted, Waiter};
use super::nats::{Out, Runner};
use super::state::{Counters, Peers, add};
use super::{
    ClusterConfig, ClusterConnId, ClusterStats, HistoryConfig, Position, Recovery, Resumed,
    valid_node_name,
};
use crate::conn_id::ConnId;
use crate::error::SendError;
use crate::handler::{ClusterLink, ResumeDone};
use crate::shared::ServerShared;

pub(crate) struct Link {
    node: Arc<str>,
    tx: mpsc::Sender<Out>,
    counters: Arc<Counters>,
    peers: Arc<Peers>,
    node_timeout: Duration,
    interest: Arc<Wanted>,
    history: Option<HistoryConfig>,
    history_counters: Arc<HistoryCounters>,
    shared: Weak<ServerShared>,
    stop: Arc<Notify>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Link {
    fn enqueue(&self, out: Out) {
        if !self.counters.connected.load(Ordering::Acquire) || self.tx.try_send(out).is_err() {
            add(&self.counters.dropped_out);
        }
    }
}

impl ClusterLink for Link {
    fn node(&self) -> &Arc<str> {
        &self.node
    }

    fn broadcast(&self, payload: &Bytes) {
        self.enqueue(Out::Broadcast(payload.clone()));
    }

    fn publish(&self, topic: &Bytes, payload: &Bytes) {
        if self.history_topic(topic) {
            if !self.counters.connected.load(Ordering::Acquire)
                || self
                    .tx
                    .try_send(Out::Record(topic.clone(), payload.clone()))
                    .is_err()
            {
                add(&self.history_counters.failed);
            }
            return;
        }
        self.enqueue(Out::Publish(topic.clone(), payload.clone()));
    }

    fn history_topic(&self, topic: &[u8]) -> bool {
        self.history.as_ref().is_some_and(|h| h.covers(topic))
    }

    fn recover(&self, conn: ConnId, topic: Bytes, since: Option<Position>, done: ResumeDone) {
        // Held until the handover: the topic's live reader must run.
        self.interest.change(&topic, true);
        let r = Recover {
            conn,
            topic,
            since,
            done,
        };
        if let Err(e) = self.tx.try_send(Out::Recover(r)) {
            let (mpsc::error::TrySendError::Full(Out::Recover(r))
            | mpsc::error::TrySendError::Closed(Out::Recover(r))) = e
            else {
                return;
            };
            add(&self.history_counters.reset);
            let resumed = Resumed {
                recovery: Recovery::Reset,
                position: Position::default(),
            };
            handover(
                &self.shared,
                &self.interest,
                r.conn,
                r.topic,
                resumed,
                r.done,
            );
        }
    }

    fn send(
        &self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let alive = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(to.node())
            .is_some_and(|heard| heard.elapsed() < self.node_timeout);
        if !alive || !self.counters.connected.load(Ordering::Acquire) {
            add(&self.counters.unreachable);
            return Err(SendError::Unreachable);
        }
        let out = Out::Send {
            from,
            to: to.clone(),
            payload,
        };
        self.tx.try_send(out).map_err(|_| {
            add(&self.counters.dropped_out);
            SendError::Busy
        })
    }

    fn interest(&self, topic: &Bytes, on: bool) {
        self.interest.change(topic, on);
    }

    fn when_interest_applied(&self, waiter: Waiter) {
        if self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return; // stopped: nothing will run it
        }
        self.interest.when_applied(waiter);
    }

    fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let now = Instant::now();
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        ClusterStats {
            connected: c.connected.load(Ordering::Acquire),
            nodes_up: peers
                .values()
                .filter(|t| now.duration_since(**t) < self.node_timeout)
                .count(),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped_out: c.dropped_out.load(Ordering::Relaxed),
            dropped_in: c.dropped_in.load(Ordering::Relaxed),
            undeliverable: c.undeliverable.load(Ordering::Relaxed),
            unreachable: c.unreachable.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            topics: self.interest.topics(),
            history_written: self.history_counters.written.load(Ordering::Relaxed),
            history_failed: self.history_counters.failed.load(Ordering::Relaxed),
            recovered: self.history_counters.recovered.load(Ordering::Relaxed),
            reset: self.history_counters.reset.load(Ordering::Relaxed),
            replayed: self.history_counters.replayed.load(Ordering::Relaxed),
        }
    }

    fn stop(&self) {
        self.stop.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the cluster thread panicked");
            }
        }
        self.interest.clear_waiters();
    }
}

/// Starts the link's thread; waits up to `connect_wait` for NATS.
pub(crate) fn start(config: ClusterConfig, shared: Weak<ServerShared>) -> io::Result<Link> {
    if !valid_node_name(&config.node) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cluster node name '{}' must be 1 to 64 of A-Z a-z 0-9 _ -",
                config.node
            ),
        ));
    }
    if config.urls.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cluster: no NATS server URL given",
        ));
    }
    for url in &config.urls {
        if let Err(e) = url.parse::<async_nats::ServerAddr>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cluster: bad NATS server URL '{url}': {e}"),
            ));
        }
    }
    if config.buffer == 0 || config.heartbeat.is_zero() || config.node_timeout <= config.heartbeat {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cluster: buffer must be > 0 and node_timeout longer than heartbeat",
        ));
    }
    let (tx, rx) = mpsc::channel(config.buffer);
    let counters = Arc::new(Counters::default());
    let peers = Arc::new(Peers::default());
    let stop = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let node: Arc<str> = config.node.as_str().into();
    let wait = config.connect_wait;
    let node_timeout = config.node_timeout;
    let url = config.urls.join(",");
    let interest = Arc::new(Wanted::default());
    let history = config.history.clone();
    let history_counters = Arc::new(HistoryCounters::default());
    let link_shared = shared.clone();
    let runner = Runner {
        config,
        inbound: Inbound {
            shared,
            counters: counters.clone(),
        },
        history_counters: history_counters.clone(),
        counters: counters.clone(),
        peers: peers.clone(),
        node: node.clone(),
        interest: interest.clone(),
    };
    let stop_rx = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringport-cluster".into())
        .spawn(move || runner.run(rx, stop_rx, ready_tx))?;
    match ready_rx.recv_timeout(wait) {
        Ok(Ok(())) => tracing::info!(%node, %url, "cluster: joined over NATS"),
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(io::Error::other(format!("cluster: {e}")));
        }
        Err(_) => tracing::warn!(
            %node, %url,
            "cluster: NATS not reachable yet; serving locally, cross-node messages are dropped \
             (counted) until it is"
        ),
    }
    Ok(Link {
        node,
        tx,
        counters,
        peers,
        node_timeout,
        interest,
        history,
        history_counters,
        shared: link_shared,
        stop,
        thread: Mutex::new(Some(thread)),
    })
}
