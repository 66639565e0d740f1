//! Topic history on NATS JetStream, and recovery from a position.
//!
//! Topics under [`HistoryConfig::namespaces`] keep a bounded history in one
//! stream, `{prefix}_history`, on subjects `P.h.HEX` (`P` the subject
//! prefix, `HEX` the topic in hex), at most
//! [`HistoryConfig::max_messages`] per topic and none older than
//! [`HistoryConfig::max_age`]. A publish to such a topic is written once to
//! the stream (by the node it was made on); every node with subscribers
//! for the topic reads it back through one ordered consumer per topic (the
//! *live* reader) and fans it out to them, each copy framed by
//! [`HistoryConfig::encode`] with its [`Position`]. So every subscriber,
//! on every node, sees the topic's messages in the stream's order.
//!
//! Recovery from position `P`: the subscriber is not subscribed at once;
//! a second ordered consumer reads the topic from `P + 1` and sends each
//! message to it alone, until it meets the live reader's last delivered
//! message `L`; at that moment (on the link's thread, with no await in
//! between) the subscription is handed to the subscriber's shard, behind
//! the live deliveries up to `L` in that shard's FIFO command queue: the
//! subscriber then gets exactly the messages after `L` live. No gap, no
//! duplicate. The history holds `P` when the message at `P` is still in
//! the stream (a topic's messages leave it oldest first, by count or by
//! age, so all later ones are there too); `P = 0` is held only while the
//! stream has never dropped a message. Otherwise, or when the epoch (drawn
//! when the stream is created, kept in its replicated description)
//! differs, the subscriber is told
//! [`Recovery::Reset`] and gets live messages from then on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use super::interest::Interest as Wanted;

mod recovery;
use super::wire::topic_token;
use super::{HistoryConfig, Position};
use crate::conn_id::ConnId;
use crate::handler::ResumeDone;
use crate::shared::{Command, ServerShared};
pub(super) use recovery::handover;

/// How the epoch is written in the stream's description.
const EPOCH_TAG: &str = "ringport topic history, epoch ";

/// The history's epoch: from the stream's description (set when it was
/// created), else (a stream made otherwise) its creation time.
fn epoch_of(info: &stream::Info) -> u64 {
    info.config
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(EPOCH_TAG))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(1))
}

/// History counters (part of [`super::ClusterStats`]).
#[derive(Default)]
pub(super) struct HistoryCounters {
    pub written: AtomicU64,
    pub failed: AtomicU64,
    pub recovered: AtomicU64,
    pub reset: AtomicU64,
    pub replayed: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The live reader of one topic on this node.
struct Live {
    epoch: u64,
    /// Stream sequence of the last message of the topic delivered live
    /// here (or, before the first, of the last one already in the stream
    /// when the reader started; 0 if none).
    last: u64,
    ready: bool,
    /// The last [`HistoryConfig::recent`] messages delivered live: (stream
    /// sequence, frame). Every message of the topic after `floor`, up to
    /// `last`, is here.
    recent: VecDeque<(u64, Bytes)>,
    floor: u64,
    /// Recoveries wait for `ready`, or for `last` to grow, on this.
    ready_now: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A recovery handed over from a shard.
pub(super) struct Recover {
    pub conn: ConnId,
    pub topic: Bytes,
    pub since: Option<Position>,
    pub done: ResumeDone,
}

/// The history's state on the link's thread (shared with its tasks).
pub(super) struct History {
    config: HistoryConfig,
    js: jetstream::Context,
    name: String,
    subjects: String,
    subject_prefix: String,
    epoch: AtomicU64,
    ensuring: std::sync::atomic::AtomicBool,
    live: Mutex<HashMap<Bytes, Live>>,
    shared: Weak<ServerShared>,
    wanted: Arc<Wanted>,
    counters: Arc<HistoryCounters>,
    acks: mpsc::UnboundedSender<jetstream::context::PublishAckFuture>,
}

impl History {
    /// `prefix` is the cluster's subject prefix.
    pub fn new(
        config: HistoryConfig,
        client: async_nats::Client,
        prefix: &str,
        shared: Weak<ServerShared>,
        wanted: Arc<Wanted>,
        counters: Arc<HistoryCounters>,
    ) -> Arc<History> {
        let (acks, mut pending) = mpsc::unbounded_channel::<jetstream::context::PublishAckFuture>();
        let name = format!("{}_history", prefix.replace(['.', '*', '>', ' '], "_"));
        let history = Arc::new(History {
            config,
            js: jetstream::new(client),
            name,
            subjects: format!("{prefix}.h.*"),
            subject_prefix: format!("{prefix}.h."),
            epoch: AtomicU64::new(0),
            ensuring: std::sync::atomic::AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            shared,
            wanted,
            counters: counters.clone(),
            acks,
        });
        // Acknowledgements are awaited off the link's loop, all at once (a
        // lost one times out without holding back the count of the others).
        tokio::spawn(async move {
            let mut waiting = futures_util::stream::FuturesUnordered::new();
            loop {
                tokio::select! {
                    ack = pending.recv() => match ack {
                        Some(ack) => waiting.push(ack.into_future()),
                        None => break,
                    },
                    Some(done) = waiting.next(), if !waiting.is_empty() => match done {
                        Ok(_) => add(&counters.written),
                        Err(e) => {
                            add(&counters.failed);
                            tracing::debug!(error = %e, "cluster: history write not acknowledged");
                        }
                    },
                }
            }
        });
        history
    }

    pub fn covers(&self, topic: &[u8]) -> bool {
        self.config.covers(topic)
    }

    fn subject(&self, topic: &[u8]) -> String {
        format!("{}{}", self.subject_prefix, topic_token(topic))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the stream if missing (with the configured bounds) and reads
    /// its epoch. A new epoch (the stream was recreated, e.g. its NATS
    /// servers lost their store) restarts every live reader on the new
    /// history.
    pub async fn ensure_stream(self: &Arc<Self>) -> Result<(), String> {
        // A new stream gets a new epoch, kept in its (replicated)
        // description: the same on every JetStream server.
        let fresh = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let config = stream::Config {
            name: self.name.clone(),
            description: Some(format!("{EPOCH_TAG}{fresh}")),
            subjects: vec![self.subjects.clone()],
            max_messages_per_subject: i64::from(self.config.max_messages),
            max_age: self.config.max_age,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas.clamp(1, 5),
            ..Default::default()
        };
        let failed = |e: &dyn std::fmt::Display| format!("history stream {}: {e}", self.name);
        let mut stream = match self.js.get_or_create_stream(config).await {
            Ok(s) => s,
            // Another node created it at the same moment.
            Err(e) => self
                .js
                .get_stream(&self.name)
                .await
                .map_err(|_| failed(&e))?,
        };
        let info = stream.info().await.map_err(|e| failed(&e))?;
        let epoch = epoch_of(info);
        let before = self.epoch.swap(epoch, Ordering::AcqRel);
        if before == 0 {
            tracing::info!(stream = %self.name, epoch, "cluster: topic history ready");
        }
        if before != 0 && before != epoch {
            tracing::warn!(
                stream = %self.name, old = before, new = epoch,
                "cluster: the history was reset (new epoch); recovering subscribers start over"
            );
            let topics: Vec<Bytes> = self.lock().keys().cloned().collect();
            for topic in topics {
                self.start_live(topic);
            }
        }
        Ok(())
    }

    /// Runs [`History::ensure_stream`] in a task of its own (at most one at
    /// a time), logging a failure: the link's loop does not wait for
    /// JetStream.
    pub fn ensure_stream_soon(self: &Arc<Self>) {
        if self.ensuring.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.ensure_stream().await {
                tracing::warn!(error = %e, "cluster: topic history not available; retrying");
            }
            me.ensuring.store(false, Ordering::Release);
        });
    }

    /// Whether the stream was found or made at least once.
    pub fn has_epoch(&self) -> bool {
        self.epoch.load(Ordering::Acquire) != 0
    }

    /// Writes a publish to the history (its acknowledgement is awaited in
    /// the background).
    pub async fn publish(&self, topic: &[u8], payload: Bytes) {
        match self.js.publish(self.subject(topic), payload).await {
            Ok(ack) => {
                let _ = self.acks.send(ack);
            }
            Err(e) => {
                add(&self.counters.failed);
                tracing::debug!(error = %e, "cluster: history write failed");
            }
        }
    }

    /// Interest in `topic` appeared (`on`) or left: starts or ends its live
    /// reader.
    pub fn interest(self: &Arc<Self>, topic: Bytes, on: bool) {
        if on {
            if !self.lock().contains_key(&topic) {
                self.start_live(topic);
            }
        } else {
            self.lock().remove(&topic);
        }
    }

    /// Whether every live reader runs.
    pub fn all_ready(&self) -> bool {
        self.lock().values().all(|l| l.ready)
    }

    /// Waits until every live reader runs (or `limit` passed).
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.all_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (Re)starts the live reader of `topic`: from the end of the stream.
    fn start_live(self: &Arc<Self>, topic: Bytes) {
        let ready_now = Arc::new(Notify::new());
        let me = self.clone();
        let key = topic.clone();
        let task = tokio::spawn(async move { me.run_live(key).await });
        // Replacing an entry drops (aborts) the old reader.
        self.lock().insert(
            topic,
            Live {
                epoch: 0,
                last: 0,
                ready: false,
                recent: VecDeque::new(),
                floor: 0,
                ready_now,
                task: Some(task),
            },
        );
    }

    async fn run_live(self: Arc<Self>, topic: Bytes) {
        let subject = self.subject(&topic);
        let mut delay = Duration::from_millis(100);
        let (messages, epoch) = loop {
            match self.open_live(&topic, &subject).await {
                Ok(opened) => break opened,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: history reader not started; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        let mut messages = messages;
        while let Some(next) = messages.next().await {
            let m = match next {
                Ok(m) => m,
                Err(e) => {
                    // The ordered consumer recreates itself after the last
                    // sequence it delivered.
                    tracing::debug!(error = %e, "cluster: history reader");
                    continue;
                }
            };
            let Ok(info) = m.info() else { continue };
            let position = Position {
                epoch,
                seq: info.stream_sequence,
            };
            let frame = Bytes::from((self.config.encode)(&topic, position, &m.payload));
            let mut live = self.lock();
            let Some(entry) = live.get_mut(&topic) else {
                return;
            };
            entry.last = position.seq;
            if self.config.recent > 0 {
                entry.recent.push_back((position.seq, frame.clone()));
                if entry.recent.len() > self.config.recent {
                    if let Some((seq, _)) = entry.recent.pop_front() {
                        entry.floor = seq;
                    }
                }
            }
            self.to_every_shard(&topic, &frame);
            entry.ready_now.notify_waiters();
        }
    }

    /// Reads where the stream ends, then opens an ordered consumer on the
    /// topic after that point; marks the reader ready.
    async fn open_live(
        &self,
        topic: &Bytes,
        subject: &str,
    ) -> Result<(consumer::push::Ordered, u64), String> {
        let mut stream = self
            .js
            .get_stream(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        // The end of the stream, and the topic's last message up to it
        // (read again if one came in between: the live reader starts after
        // `end`, and `last` must be the topic's last message before that).
        let mut tries = 0;
        let (end, epoch, last) = loop {
            let info = stream.info().await.map_err(|e| e.to_string())?;
            let end = info.state.last_sequence;
            let epoch = epoch_of(info);
            let last = match stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => m.sequence,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
                Err(e) => return Err(e.to_string()),
            };
            if last <= end {
                break (end, epoch, last);
            }
            tries += 1;
            if tries == 20 {
                return Err("the topic's last message keeps moving".into());
            }
        };
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: end + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut live = self.lock();
        if let Some(entry) = live.get_mut(topic) {
            entry.epoch = epoch;
            entry.last = last;
            entry.floor = last;
            entry.recent.clear();
            entry.ready = true;
            entry.ready_now.notify_waiters();
        }
        Ok((messages, epoch))
    }

    fn to_every_shard(&self, topic: &Bytes, frame: &Bytes) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        for shard in shared.shards.iter() {
            let cmd = Command::Publish {
                topic: topic.clone(),
                payload: frame.clone(),
            };
            let _ = shared.command(shard, cmd);
        }
    }

    /// Drops every live reader (the link is stopping).
    pub fn stop(&self) {
        self.lock().clear();
    }
}
