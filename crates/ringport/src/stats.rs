//! Counters: what a server is doing, readable from any thread.
//!
//! Each shard keeps plain counters on its own thread and publishes them to
//! its shared counters once per loop turn, so the per-message path does not
//! touch shared cache lines.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes of receive-buffer memory currently allocated by all shards in this
/// process (for leak checks and memory accounting).
pub static RECV_BUFFER_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Send-pool chunks currently allocated by all shards in this process.
pub static SEND_CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// Upper bounds, in microseconds, of the buckets of the shard loop-turn
/// duration histogram ([`TurnDurations`]); a last bucket takes the rest.
pub const TURN_BUCKETS_US: [u64; 10] =
    [10, 50, 100, 250, 500, 1_000, 5_000, 10_000, 50_000, 100_000];

/// How long the shards' loop turns took: the time a shard is busy between
/// two waits (commands, timers, completions and their handler calls).
/// Long turns delay every connection of that shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnDurations {
    /// Turns that took at most `TURN_BUCKETS_US[i]` (not cumulative); the
    /// last entry counts the longer ones.
    pub buckets: [u64; TURN_BUCKETS_US.len() + 1],
    /// Turns counted.
    pub count: u64,
    /// Their total duration.
    pub sum: std::time::Duration,
}

impl std::ops::AddAssign for TurnDurations {
    fn add_assign(&mut self, o: TurnDurations) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

/// A shard's turn histogram, written by the shard, read by anyone.
#[derive(Default)]
pub(crate) struct TurnHistogram {
    buckets: [AtomicU64; TURN_BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl TurnHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        let i = TURN_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TurnDurations {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        TurnDurations {
            count: buckets.iter().sum(),
            buckets,
            sum: std::time::Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        }
    }
}

/// One open connection, as [`crate::Server::connections`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its id.
    pub conn: crate::ConnId,
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// Time since it opened.
    pub age: std::time::Duration,
    /// Bytes received on it (framing included).
    pub bytes_in: u64,
    /// Bytes sent on it (framing included).
    pub bytes_out: u64,
    /// Bytes queued for it, not yet written to the kernel.
    pub queued: usize,
}

/// A snapshot of a server's counters (summed over shards, or one shard's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Connections closed (inbound and outbound).
    pub closed: u64,
    /// Messages received (whole frames handed to the handler).
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Bytes received (framing included).
    pub bytes_in: u64,
    /// Bytes sent (framing included).
    pub bytes_out: u64,
    /// Bytes queued for sending, not yet written to the kernel.
    pub send_queue_bytes: u64,
    /// Bytes held for partially received frames.
    pub reassembly_bytes: u64,
    /// Bytes of large frame buffers kept for reuse (`ServerConfig::frame_pool_limit`).
    pub frame_pool_bytes: u64,
    /// Connections closed because they sent a frame over the maximum.
    pub frames_too_large: u64,
    /// Connections closed (or messages dropped) by the slow-consumer policy.
    pub slow_consumers: u64,
    /// Times a connection's reading was paused because its send queue was
    /// at the high-water mark.
    pub read_pauses: u64,
    /// Multishot receives ended by an empty buffer ring (re-armed).
    pub recv_no_buffers: u64,
    /// Direct receives posted: the rest of a large frame received straight
    /// into its reassembly buffer (no copy).
    pub direct_recvs: u64,
    /// Accept failures (ENFILE, ENOMEM, ...), each followed by a back-off.
    pub accept_errors: u64,
    /// Clients accepted over the connection limit and closed at once
    /// (`LimitPolicy::Refuse`).
    pub rejected: u64,
    /// Clients accepted over the connection limit and held, unread, until
    /// a place frees (`LimitPolicy::Wait`), now.
    pub waiting: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed because a frame did not complete in time.
    pub frame_timeouts: u64,
    /// Connections whose peer closed in the middle of a frame.
    pub truncated_frames: u64,
    /// Connections closed because the shard's partial-frame memory went
    /// past `reassembly_limit`.
    pub input_limit_closes: u64,
    /// Heartbeats (empty messages) sent.
    pub heartbeats: u64,
    /// Handler timers armed now.
    pub timers: u64,
    /// Cross-shard commands a shard still held for another shard's full
    /// queue when it stopped (while running, such commands wait in the
    /// sending shard's outbox instead of being dropped).
    pub commands_dropped: u64,
    /// TLS handshakes completed (feature `tls`).
    pub tls_handshakes: u64,
    /// TLS connections closed for a TLS failure ([`crate::CloseReason::Tls`]):
    /// failed handshakes (timeouts included), corrupt records.
    pub tls_failures: u64,
    /// Of `tls_failures`: handshakes not complete within their timeout.
    pub tls_handshake_timeouts: u64,
    /// Protocol upgrades (WebSocket opening handshakes) accepted.
    pub upgrades: u64,
    /// Protocol upgrades refused (by the protocol or the upgrade hook).
    pub upgrades_refused: u64,
    /// Connections closed because their opening handshake did not
    /// complete in time.
    pub upgrade_timeouts: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.connections += o.connections;
        self.accepted += o.accepted;
        self.connected += o.connected;
        self.closed += o.closed;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.send_queue_bytes += o.send_queue_bytes;
        self.reassembly_bytes += o.reassembly_bytes;
        self.frame_pool_bytes += o.frame_pool_bytes;
        self.frames_too_large += o.frames_too_large;
        self.slow_consumers += o.slow_consumers;
        self.read_pauses += o.read_pauses;
        self.recv_no_buffers += o.recv_no_buffers;
        self.direct_recvs += o.direct_recvs;
        self.accept_errors += o.accept_errors;
        self.rejected += o.rejected;
        self.waiting += o.waiting;
        self.idle_timeouts += o.idle_timeouts;
        self.frame_timeouts += o.frame_timeouts;
        self.truncated_frames += o.truncated_frames;
        self.input_limit_closes += o.input_limit_closes;
        self.heartbeats += o.heartbeats;
        self.timers += o.timers;
        self.commands_dropped += o.commands_dropped;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_failures += o.tls_failures;
        self.tls_handshake_timeouts += o.tls_handshake_timeouts;
        self.upgrades += o.upgrades;
        self.upgrades_refused += o.upgrades_refused;
        self.upgrade_timeouts += o.upgrade_timeouts;
    }
}

macro_rules! shard_counters {
    ($($field:ident),* $(,)?) => {
        /// One shard's published counters.
        #[derive(Default)]
        pub(crate) struct ShardCounters {
            $($field: AtomicU64,)*
        }

        impl ShardCounters {
            pub fn publish(&self, s: &Stats) {
                $(self.$field.store(s.$field, Ordering::Relaxed);)*
            }

            pub fn snapshot(&self) -> Stats {
                Stats { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

shard_counters!(
    connections,
    accepted,
    connected,
    closed,
    messages_in,
    messages_out,
    bytes_in,
    bytes_out,
    send_queue_bytes,
    reassembly_bytes,
    frame_pool_bytes,
    frames_too_large,
    slow_consumers,
    read_pauses,
    recv_no_buffers,
    direct_recvs,
    accept_errors,
    rejected,
    waiting,
    idle_timeouts,
    frame_timeouts,
    truncated_frames,
    input_limit_closes,
    heartbeats,
    timers,
    commands_dropped,
    tls_handshakes,
    tls_failures,
    tls_handshake_timeouts,
    upgrades,
    upgrades_refused,
    upgrade_timeouts,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_snapshot_round_trips() {
        let c = ShardCounters::default();
        let s = Stats {
            connections: 3,
            bytes_out: 99,
            commands_dropped: 1,
            ..Stats::default()
        };
        c.publish(&s);
        assert_eq!(c.snapshot(), s);
        let mut sum = s;
        sum += s;
        assert_eq!(sum.connections, 6);
        assert_eq!(sum.bytes_out, 198);
    }
}
