//! The cluster link over NATS: a thread of its own runs the NATS client
//! (async-nats) on a private current-thread tokio runtime, so shards never
//! wait on the network; they hand it messages through a bounded queue.
//!
//! Subjects, under [`ClusterConfig::subject_prefix`] (`P`):
//! - `P.bcast`: a broadcast; the body is the payload.
//! - `P.t.HEX`: a publish to the topic whose bytes are `HEX` (lower-case
//!   hex); body: topic length (u16, big-endian), topic, payload. A node
//!   subscribes to the subjects of the topics it has local subscribers for
//!   ([`Interest::PerTopic`], the default: NATS sends it nothing else), or
//!   to `P.t.*` ([`Interest::All`]: every publish, as before per-topic
//!   interest existed; kept for measuring and for nodes whose handlers
//!   deliver publishes without local subscriptions).
//! - `P.node.NAME`: addressed to node NAME: a send to one of its
//!   connections, or the answer that such a send found a stale id.
//! - `P.hello`: every node's heartbeat (its name), for liveness.
//! - `P.h.HEX`: a publish to a topic with a history, in the JetStream
//!   stream `P_history` (see the `history` module); body: the payload.
//!
//! The client is given every URL of [`ClusterConfig::urls`] (and learns the
//! other servers of a NATS cluster from them); when its server goes away it
//! moves to another, and its subscriptions move with it.
//!
//! The client connects with `no_echo`: a node never gets its own
//! broadcasts and publishes back (it has delivered them locally already).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use super::history::{History, HistoryCounters, Recover, handover};
use super::inbound::Inbound;
use super::interest::Interest as Wanted;
use super::state::{Counters, Peers, add};
use super::wire::{
    Reader, SEND, STALE, error_code, error_from_code, publish_body, put_conn, put_node,
    put_opt_conn, topic_token,
};
use super::{ClusterConfig, ClusterConnId, Interest, Position, Recovery, Resumed, valid_node_name};
use crate::conn_id::ConnId;
use crate::shared::Command;

/// A message for the other nodes, on its way to the NATS thread.
pub(super) enum Out {
    Broadcast(Bytes),
    Publish(Bytes, Bytes),
    /// A publish to a topic with a history.
    Record(Bytes, Bytes),
    Recover(Recover),
    Send {
        from: Option<ConnId>,
        to: ClusterConnId,
        payload: Bytes,
    },
}

/// The NATS thread's state.
pub(super) struct Runner {
    pub(super) config: ClusterConfig,
    pub(super) inbound: Inbound,
    pub(super) history_counters: Arc<HistoryCounters>,
    pub(super) counters: Arc<Counters>,
    pub(super) peers: Arc<Peers>,
    pub(super) node: Arc<str>,
    pub(super) interest: Arc<Wanted>,
}

/// Most messages taken from the queue per wake-up (published back to back;
/// the client writes them in one go).
const BATCH: usize = 512;

impl Runner {
    pub(super) fn run(
        self,
        rx: mpsc::Receiver<Out>,
        stop: Arc<Notify>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(format!("tokio runtime: {e}")));
                return;
            }
        };
        runtime.block_on(self.main(rx, stop, ready));
    }

    fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.config.subject_prefix)
    }

    async fn main(
        self,
        mut rx: mpsc::Receiver<Out>,
        stop: Arc<Notify>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let events = self.counters.clone();
        let node = self.node.clone();
        let servers = self.config.urls.len();
        let options = ConnectOptions::new()
            .no_echo()
            .name(format!("ringport-{}", self.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, servers))
            .event_callback(move |event| {
                let counters = events.clone();
                let node = node.clone();
                async move { on_event(&counters, &node, event) }
            });
        let client = match options.connect(self.config.urls.as_slice()).await {
            Ok(c) => c,
            Err(e) => {
                let urls = self.config.urls.join(",");
                let _ = ready.send(Err(format!("connecting to {urls}: {e}")));
                return;
            }
        };
        let subscribed = async {
            let bcast = client.subscribe(self.subject("bcast")).await?;
            let all = match self.config.interest {
                Interest::All => Some(client.subscribe(self.subject("t.*")).await?),
                Interest::PerTopic => None,
            };
            let direct = client
                .subscribe(self.subject(&format!("node.{}", self.node)))
                .await?;
            let hello = client.subscribe(self.subject("hello")).await?;
            Ok::<_, async_nats::SubscribeError>((bcast, all, direct, hello))
        };
        let (mut bcast, all, mut direct, mut hello) = match subscribed.await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(format!("subscribing: {e}")));
                return;
            }
        };
        // The subscriptions are registered once the server answers a
        // round trip; only then is this node ready (a test or a peer may
        // send at once).
        let hello_subject = self.subject("hello");
        let _ = client
            .publish(hello_subject.clone(), Bytes::from(self.node.to_string()))
            .await;
        let seen_subject = self.subject(&format!("seen.{}", self.node));
        let seen = loop {
            match round_trip(&client, &seen_subject).await {
                Err(RoundTrip::TimedOut) => continue,
                answer => break answer,
            }
        };
        if seen.is_ok() {
            self.counters.connected.store(true, Ordering::Release);
            let _ = ready.send(Ok(()));
        }
        let history = self.config.history.clone().map(|h| {
            History::new(
                h,
                client.clone(),
                &self.config.subject_prefix,
                self.inbound.shared.clone(),
                self.interest.clone(),
                self.history_counters.clone(),
            )
        });
        if let Some(h) = &history {
            h.ensure_stream_soon();
        }
        let history = history.as_ref();
        // Every publish (Interest::All), or one subscription per topic.
        let _all = all.map(|sub| AbortOnDrop(self.inbound.forward(sub)));
        let mut topics: HashMap<Bytes, AbortOnDrop> = HashMap::new();
        let mut attached = None;
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down: HashMap<Arc<str>, ()> = HashMap::new();
        let mut dropped_logged = 0;
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for out in batch.drain(..) {
                        self.publish_out(&client, history, out).await;
                    }
                }
                Some(m) = bcast.next() => self.inbound_broadcast(m.payload),
                _ = self.interest.changed.notified() => {
                    self.apply_interest(&client, history, &mut topics).await;
                }
                _ = self.counters.reconnected.notified(), if history.is_some() => {
                    // The stream may be new (a store lost with its server).
                    if let Some(h) = history {
                        h.ensure_stream_soon();
                    }
                }
                Some(m) = direct.next() => self.inbound_direct(&client, m.payload).await,
                Some(m) = hello.next() => self.heard(m.payload, &mut down),
                _ = tick.tick() => {
                    if self.counters.connected.load(Ordering::Acquire) {
                        let _ = client
                            .publish(hello_subject.clone(), Bytes::from(self.node.to_string()))
                            .await;
                    }
                    self.sweep_peers(&mut down);
                    if let Some(h) = history.filter(|h| !h.has_epoch()) {
                        if self.counters.connected.load(Ordering::Acquire) {
                            h.ensure_stream_soon();
                        }
                    }
                    self.log_server(&client, &mut attached);
                    let dropped = self.counters.dropped_out.load(Ordering::Relaxed);
                    if dropped > dropped_logged {
                        tracing::warn!(
                            node = %self.node,
                            lost = dropped - dropped_logged,
                            total = dropped,
                            "cluster: cross-node messages dropped (NATS link down or queue full)"
                        );
                        dropped_logged = dropped;
                    }
                }
            }
        }
        if let Some(h) = history {
            h.stop();
        }
        // Hand over what was queued before the stop, within a bound.
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    }

    async fn publish_out(
        &self,
        client: &async_nats::Client,
        history: Option<&Arc<History>>,
        out: Out,
    ) {
        let out = match (out, history) {
            (Out::Recover(r), Some(h)) => return h.recover(r),
            (Out::Recover(r), None) => {
                let resumed = Resumed {
                    recovery: Recovery::NoHistory,
                    position: Position::default(),
                };
                return handover(
                    &self.inbound.shared,
                    &self.interest,
                    r.conn,
                    r.topic,
                    resumed,
                    r.done,
                );
            }
            (Out::Record(topic, payload), Some(h)) => {
                if self.counters.connected.load(Ordering::Acquire) {
                    h.publish(&topic, payload).await;
                } else {
                    add(&self.history_counters.failed);
                }
                return;
            }
            (out, _) => out,
        };
        if !self.counters.connected.load(Ordering::Acquire) {
            add(&self.counters.dropped_out);
            return;
        }
        let (subject, body) = match out {
            Out::Record(..) | Out::Recover(_) => return,
            Out::Broadcast(payload) => (self.subject("bcast"), payload),
            Out::Publish(topic, payload) => (
                self.subject(&format!("t.{}", topic_token(&topic))),
                publish_body(&topic, &payload),
            ),
            Out::Send { from, to, payload } => {
                let mut body = BytesMut::with_capacity(32 + self.node.len() + payload.len());
                body.put_u8(SEND);
                put_node(&mut body, &self.node);
                put_opt_conn(&mut body, from);
                put_conn(&mut body, to.conn());
                body.put_slice(&payload);
                (self.subject(&format!("node.{}", to.node())), body.freeze())
            }
        };
        match client.publish(subject, body).await {
            Ok(()) => add(&self.counters.sent),
            Err(e) => {
                add(&self.counters.dropped_out);
                tracing::debug!(error = %e, "cluster: publish failed");
            }
        }
    }

    fn inbound_broadcast(&self, payload: Bytes) {
        self.inbound.to_every_shard(|| Command::Broadcast {
            kind: crate::protocol::MessageKind::Binary,
            payload: payload.clone(),
        });
    }

    /// Subscribes to the topics newly wanted and ends the subscriptions of
    /// those no longer wanted; then, once the server has seen that (a round
    /// trip to it, skipped while the link is down), runs the waiters.
    async fn apply_interest(
        &self,
        client: &async_nats::Client,
        history: Option<&Arc<History>>,
        topics: &mut HashMap<Bytes, AbortOnDrop>,
    ) {
        let changes = self.interest.take();
        for (topic, wanted) in changes.topics {
            if let Some(h) = history.filter(|h| h.covers(&topic)) {
                h.interest(topic, wanted);
                continue;
            }
            if !wanted {
                topics.remove(&topic);
                continue;
            }
            if topics.contains_key(&topic) || self.config.interest == Interest::All {
                continue;
            }
            let subject = self.subject(&format!("t.{}", topic_token(&topic)));
            match client.subscribe(subject).await {
                Ok(sub) => {
                    topics.insert(topic, AbortOnDrop(self.inbound.forward(sub)));
                }
                // Only when the client is closed (the server is stopping).
                Err(e) => tracing::warn!(error = %e, "cluster: subscribing to a topic failed"),
            }
        }
        if changes.waiters.is_empty() {
            return;
        }
        // The waiters (subscribe answers) run once the server has seen the
        // subscriptions above, in a task: the link loop goes on meanwhile.
        let client = client.clone();
        let counters = self.counters.clone();
        let subject = self.subject(&format!("seen.{}", self.node));
        let history = history.filter(|h| !h.all_ready()).cloned();
        tokio::spawn(async move {
            subscriptions_seen(&client, subject, &counters).await;
            // Topics with a history: once their live readers run (bounded).
            if let Some(h) = history {
                h.wait_ready(Duration::from_secs(5)).await;
            }
            for waiter in changes.waiters {
                waiter();
            }
        });
    }

    /// Logs the NATS server the client is attached to when it changes.
    fn log_server(&self, client: &async_nats::Client, attached: &mut Option<String>) {
        if !self.counters.connected.load(Ordering::Acquire) {
            return;
        }
        let info = client.server_info();
        let now = format!("{} ({}:{})", info.server_name, info.host, info.port);
        if attached.as_deref() != Some(now.as_str()) {
            tracing::info!(node = %self.node, server = %now, "cluster: attached to NATS server");
            *attached = Some(now);
        }
    }

    async fn inbound_direct(&self, client: &async_nats::Client, body: Bytes) {
        let Some(shared) = self.inbound.shared.upgrade() else {
            return;
        };
        add(&self.counters.received);
        let mut r = Reader(body);
        match r.u8() {
            Some(SEND) => {
                let (Some(from_node), Some(from), Some(to)) = (r.node(), r.opt_conn(), r.conn())
                else {
                    return;
                };
                let payload = r.0;
                let error = match shared.check_live(to) {
                    Ok(shard) => match shared.command(
                        shard,
                        Command::Send {
                            conn: to,
                            kind: crate::protocol::MessageKind::Binary,
                            payload,
                        },
                    ) {
                        Ok(()) => return,
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
                add(&self.counters.dropped_in);
                let Some(from) = from else {
                    return;
                };
                // Tell the sender's node, which tells the sender.
                let mut answer = BytesMut::with_capacity(40 + self.node.len());
                answer.put_u8(STALE);
                answer.put_u8(error_code(error));
                put_conn(&mut answer, from);
                put_node(&mut answer, &self.node);
                put_conn(&mut answer, to);
                let subject = self.subject(&format!("node.{from_node}"));
                let _ = client.publish(subject, answer.freeze()).await;
            }
            Some(STALE) => {
                let (Some(code), Some(from), Some(to_node), Some(to)) =
                    (r.u8(), r.conn(), r.node(), r.conn())
                else {
                    return;
                };
                add(&self.counters.undeliverable);
                let Some(shard) = shared.shards.get(from.shard()) else {
                    return;
                };
                let cmd = Command::Undeliverable {
                    from,
                    to: ClusterConnId::new(to_node, to),
                    error: error_from_code(code),
                };
                if shared.command(shard, cmd).is_err() {
                    add(&self.counters.dropped_in);
                }
            }
            _ => {}
        }
    }

    fn heard(&self, body: Bytes, down: &mut HashMap<Arc<str>, ()>) {
        let Ok(name) = std::str::from_utf8(&body) else {
            return;
        };
        if !valid_node_name(name) || name == &*self.node {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = name.into();
        let known = peers.insert(name.clone(), Instant::now()).is_some();
        if !known || down.remove(&name).is_some() {
            tracing::info!(node = %self.node, peer = %name, "cluster: node is up");
        }
    }

    fn sweep_peers(&self, down: &mut HashMap<Arc<str>, ()>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        for (name, heard) in peers.iter() {
            if heard.elapsed() >= self.config.node_timeout && !down.contains_key(name) {
                tracing::warn!(
                    node = %self.node, peer = %name,
                    "cluster: node is down (not heard for {:?}); sends to its connections fail",
                    self.config.node_timeout
                );
                down.insert(name.clone(), ());
            }
        }
    }
}

/// A task aborted (and so its subscription dropped) with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn on_event(counters: &Counters, node: &str, event: Event) {
    match event {
        Event::Connected => {
            if counters.ever.swap(true, Ordering::AcqRel) {
                add(&counters.reconnects);
                counters.reconnected.notify_one();
            }
            let was = counters.connected.swap(true, Ordering::AcqRel);
            if !was {
                tracing::info!(
                    node,
                    dropped_total = counters.dropped_out.load(Ordering::Relaxed),
                    "cluster: NATS link is up; cross-node delivery resumes"
                );
            }
        }
        Event::Disconnected => {
            counters.connected.store(false, Ordering::Release);
            tracing::warn!(
                node,
                "cluster: NATS link lost; delivering locally only, cross-node messages are \
                 dropped (counted) until it is back; reconnecting"
            );
        }
        other => tracing::debug!(node, event = %other, "cluster: NATS event"),
    }
}

/// The wait before connect attempt `attempt` (counted per server tried
/// since the last success): every known server once at once (a lost server
/// is left for another without delay), then 100 ms doubling to 2 s.
fn reconnect_delay(attempt: usize, servers: usize) -> Duration {
    match attempt.checked_sub(servers.max(1)) {
        None | Some(0) => Duration::ZERO,
        Some(n) => Duration::from_millis((100u64 << (n - 1).min(5)).min(2000)),
    }
}

/// Why a [`round_trip`] did not complete.
enum RoundTrip {
    /// No answer within 2 s (a loaded host, or the link is being lost).
    TimedOut,
    /// The client is closed (the server is stopping).
    Closed,
}

/// Returns once the NATS server has processed what the client sent before
/// it.
///
/// `Client::flush` only writes the client's buffer to the socket; the
/// server may not have read it yet. A server handles one connection's
/// protocol messages in order, so its answer to a request sent now comes
/// only after every subscription sent before it is registered. The request
/// goes to `subject`, which nobody subscribes to: the server itself answers
/// "no responders" (the node connects with `no_echo`, so a message to
/// itself would never come back).
async fn round_trip(client: &async_nats::Client, subject: &str) -> Result<(), RoundTrip> {
    use async_nats::RequestErrorKind;
    let request = client.request(subject.to_string(), Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        // Answered: by the server (no responders), or by a responder
        // should anyone ever subscribe to the subject.
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(e)) if e.kind() == RequestErrorKind::Other => Err(RoundTrip::Closed),
        Ok(Err(_)) | Err(_) => Err(RoundTrip::TimedOut),
    }
}

/// Waits until the NATS server has processed the subscriptions sent so far
/// ([`round_trip`]), for as long as the link is up, at most
/// [`SUBSCRIPTIONS_SEEN_LIMIT`]. Answering a subscribe before that would
/// let a publish made elsewhere right after the answer miss it.
async fn subscriptions_seen(client: &async_nats::Client, subject: String, counters: &Counters) {
    let deadline = tokio::time::Instant::now() + SUBSCRIPTIONS_SEEN_LIMIT;
    while counters.connected.load(Ordering::Acquire) {
        match round_trip(client, &subject).await {
            Ok(()) | Err(RoundTrip::Closed) => return,
            Err(RoundTrip::TimedOut) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    "cluster: NATS did not answer a round trip within \
                     {SUBSCRIPTIONS_SEEN_LIMIT:?}; answering the subscriptions anyway"
                );
                return;
            }
            Err(RoundTrip::TimedOut) => {}
        }
    }
}

/// How long a subscribe answer waits for NATS to confirm the subscription.
const SUBSCRIPTIONS_SEEN_LIMIT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_is_tried_at_once_then_with_back_off() {
        let ms = |a| reconnect_delay(a, 3).as_millis();
        assert_eq!([ms(1), ms(2), ms(3)], [0, 0, 0]);
        assert_eq!([ms(4), ms(5), ms(6)], [100, 200, 400]);
        assert_eq!(ms(40), 2000);
        assert_eq!(reconnect_delay(1, 0), Duration::ZERO);
    }
}
