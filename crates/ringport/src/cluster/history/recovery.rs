//! Recovery from a position: replay from the history, then the handover
//! to live delivery behind the live reader's last message (see the parent
//! module's docs).

use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{History, Recover, Wanted, add};
use crate::cluster::{Position, Recovery, Resumed};
use crate::conn_id::ConnId;
use crate::handler::ResumeDone;
use crate::shared::{Command, ServerShared};

impl History {
    /// Starts a recovery (in a task of its own). The link holds interest
    /// in the topic for it already (released by the handover).
    pub fn recover(self: &Arc<Self>, r: Recover) {
        let me = self.clone();
        tokio::spawn(async move {
            let timeout = me.config.recovery_timeout;
            let Recover {
                conn,
                topic,
                since,
                done,
            } = r;
            let done = Arc::new(Mutex::new(Some(done)));
            let work = me.clone().replay(conn, topic.clone(), since, done.clone());
            if tokio::time::timeout(timeout, work).await.is_err() {
                tracing::warn!(%conn, "cluster: recovery timed out; subscribing live");
                add(&me.counters.reset);
                let live = me.lock();
                let position = live.get(&topic).map_or(Position::default(), |l| Position {
                    epoch: l.epoch,
                    seq: l.last,
                });
                me.handover(conn, &topic, Recovery::Reset, position, &done);
            }
        });
    }

    /// Waits for the topic's live reader, decides whether the history
    /// holds `since`, replays what follows it, and hands over.
    async fn replay(
        self: Arc<Self>,
        conn: ConnId,
        topic: Bytes,
        since: Option<Position>,
        done: Arc<Mutex<Option<ResumeDone>>>,
    ) {
        if !self.lock().contains_key(&topic) {
            self.interest(topic.clone(), true);
        }
        loop {
            let notify = {
                let live = self.lock();
                match live.get(&topic) {
                    Some(l) if l.ready => break,
                    Some(l) => l.ready_now.clone(),
                    None => {
                        return self.handover(
                            conn,
                            &topic,
                            Recovery::Reset,
                            Position::default(),
                            &done,
                        );
                    }
                }
            };
            let waiting = notify.notified();
            tokio::pin!(waiting);
            waiting.as_mut().enable();
            if self.lock().get(&topic).is_none_or(|l| l.ready) {
                continue;
            }
            waiting.await;
        }
        let (epoch, last) = {
            let live = self.lock();
            let l = &live[&topic];
            (l.epoch, l.last)
        };
        let Some(since) = since else {
            let live = self.lock();
            let l = &live[&topic];
            let at = Position {
                epoch: l.epoch,
                seq: l.last,
            };
            return self.handover(conn, &topic, Recovery::Fresh, at, &done);
        };
        if since.epoch == epoch && self.replay_recent(conn, &topic, since, &done) {
            return;
        }
        if since.epoch != epoch || !self.holds(&topic, since.seq).await {
            add(&self.counters.reset);
            let live = self.lock();
            let l = &live[&topic];
            let at = Position {
                epoch: l.epoch,
                seq: l.last,
            };
            return self.handover(conn, &topic, Recovery::Reset, at, &done);
        }
        // Nothing missed: hand over once the live reader is where the
        // client left off (it may lag behind the node the client came
        // from).
        if since.seq >= last {
            loop {
                let notify = {
                    let live = self.lock();
                    let Some(l) = live.get(&topic) else {
                        drop(live);
                        return self.handover(
                            conn,
                            &topic,
                            Recovery::Reset,
                            Position::default(),
                            &done,
                        );
                    };
                    if l.epoch != epoch {
                        let at = Position {
                            epoch: l.epoch,
                            seq: l.last,
                        };
                        drop(live);
                        add(&self.counters.reset);
                        return self.handover(conn, &topic, Recovery::Reset, at, &done);
                    }
                    if l.last >= since.seq {
                        // Equal: a message of the topic is never skipped.
                        add(&self.counters.recovered);
                        let at = Position { epoch, seq: l.last };
                        drop(live);
                        return self.handover(conn, &topic, Recovery::Recovered, at, &done);
                    }
                    l.ready_now.clone()
                };
                let waiting = notify.notified();
                tokio::pin!(waiting);
                waiting.as_mut().enable();
                if self.lock().get(&topic).is_none_or(|l| l.last >= since.seq) {
                    continue;
                }
                waiting.await;
            }
        }
        let subject = self.subject(&topic);
        let open = || async {
            let stream = self
                .js
                .get_stream(&self.name)
                .await
                .map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: self.js.client().new_inbox(),
                    filter_subject: subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: since.seq + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        // Retried until it opens (the recovery's timeout bounds it).
        let mut delay = Duration::from_millis(100);
        let mut messages = loop {
            match open().await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: recovery reader not started; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        };
        let shared = self.shared.upgrade();
        while let Some(next) = messages.next().await {
            let Ok(m) = next else { continue };
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            // Decided against the live reader's state with no await
            // between the check and the queued commands.
            let live = self.lock();
            let Some(l) = live.get(&topic) else {
                drop(live);
                return self.handover(conn, &topic, Recovery::Reset, Position::default(), &done);
            };
            if l.epoch != epoch {
                let at = Position {
                    epoch: l.epoch,
                    seq: l.last,
                };
                drop(live);
                add(&self.counters.reset);
                return self.handover(conn, &topic, Recovery::Reset, at, &done);
            }
            if seq > l.last {
                // Live delivers this one and the rest.
                let at = Position { epoch, seq: l.last };
                add(&self.counters.recovered);
                return self.handover(conn, &topic, Recovery::Recovered, at, &done);
            }
            let frame = (self.config.encode)(&topic, Position { epoch, seq }, &m.payload);
            if let Some(shared) = &shared {
                if let Some(shard) = shared.shards.get(conn.shard()) {
                    let cmd = Command::Send {
                        conn,
                        kind: crate::protocol::MessageKind::Binary,
                        payload: Bytes::from(frame),
                    };
                    if shared.command(shard, cmd).is_err() {
                        // The client misses it: say so.
                        let at = Position { epoch, seq: l.last };
                        add(&self.counters.reset);
                        return self.handover(conn, &topic, Recovery::Reset, at, &done);
                    }
                }
            }
            add(&self.counters.replayed);
            if seq == l.last {
                add(&self.counters.recovered);
                return self.handover(
                    conn,
                    &topic,
                    Recovery::Recovered,
                    Position { epoch, seq },
                    &done,
                );
            }
        }
        // The reader ended (the link is stopping): the timeout reports it.
    }

    /// Serves a recovery from the messages the live reader keeps, when they
    /// hold everything after `since`: sends them and hands over, all under
    /// the live reader's lock (so exactly at its last message). False when
    /// they do not reach back far enough.
    fn replay_recent(
        &self,
        conn: ConnId,
        topic: &Bytes,
        since: Position,
        done: &Mutex<Option<ResumeDone>>,
    ) -> bool {
        let live = self.lock();
        let Some(l) = live.get(topic) else {
            return false;
        };
        if !l.ready || l.epoch != since.epoch || since.seq < l.floor || since.seq > l.last {
            return false;
        }
        let at = Position {
            epoch: l.epoch,
            seq: l.last,
        };
        if let Some(shared) = self.shared.upgrade() {
            let Some(shard) = shared.shards.get(conn.shard()) else {
                return false;
            };
            for (_, frame) in l.recent.iter().filter(|(seq, _)| *seq > since.seq) {
                let cmd = Command::Send {
                    conn,
                    kind: crate::protocol::MessageKind::Binary,
                    payload: frame.clone(),
                };
                if shared.command(shard, cmd).is_err() {
                    add(&self.counters.reset);
                    self.handover(conn, topic, Recovery::Reset, at, done);
                    return true;
                }
                add(&self.counters.replayed);
            }
        }
        add(&self.counters.recovered);
        self.handover(conn, topic, Recovery::Recovered, at, done);
        true
    }

    /// Whether the history still holds everything after `seq` of `topic`:
    /// Err on a failed request (JetStream electing a leader, the link
    /// down), which the caller retries.
    async fn holds_once(&self, topic: &[u8], seq: u64) -> Result<bool, String> {
        let mut stream = self
            .js
            .get_stream(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        if seq == 0 {
            // Held only if the stream never dropped a message.
            let info = stream.info().await.map_err(|e| e.to_string())?;
            return Ok(
                info.state.first_sequence <= 1 && info.state.messages == info.state.last_sequence
            );
        }
        match stream.get_raw_message(seq).await {
            Ok(m) => Ok(m.subject.as_str() == self.subject(topic)),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// [`History::holds_once`], retried until it answers (the recovery's
    /// timeout bounds it).
    async fn holds(&self, topic: &[u8], seq: u64) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.holds_once(topic, seq).await {
                Ok(held) => return held,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: recovery: history not answering; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn handover(
        &self,
        conn: ConnId,
        topic: &Bytes,
        recovery: Recovery,
        position: Position,
        done: &Mutex<Option<ResumeDone>>,
    ) {
        let Some(done) = done.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        handover(
            &self.shared,
            &self.wanted,
            conn,
            topic.clone(),
            Resumed { recovery, position },
            done,
        );
    }
}

/// Subscribes `conn` on its shard (behind every command queued to it so
/// far) and runs `done` there with `resumed`; releases the recovery's hold
/// on the topic's interest (taken by the link when the recovery began).
pub(in crate::cluster) fn handover(
    shared: &Weak<ServerShared>,
    wanted: &Arc<Wanted>,
    conn: ConnId,
    topic: Bytes,
    resumed: Resumed,
    done: ResumeDone,
) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let Some(shard) = shared.shards.get(conn.shard()) else {
        wanted.change(&topic, false);
        return;
    };
    let release = topic.clone();
    let hold = wanted.clone();
    let run = move |ctx: &mut crate::handler::Context<'_>| {
        let subscribed = ctx.subscribe(conn, &topic);
        // The shard reports its own interest through its outbox: the hold
        // is released behind that report (in order), never before it, so
        // the topic's live reader does not stop in between.
        let held = topic.clone();
        let holder = hold.clone();
        if !ctx
            .core
            .after_interest(Box::new(move || holder.change(&held, false)))
        {
            hold.change(&topic, false);
        }
        done(ctx, subscribed.map(|_| resumed));
    };
    if shared.command(shard, Command::Run(Box::new(run))).is_err() {
        wanted.change(&release, false);
    }
}
