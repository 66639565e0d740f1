//! The server's counters in the Prometheus text exposition format, for
//! `ringport serve --metrics-addr` (`GET /metrics`).
//!
//! [`render`] turns per-shard [`Stats`] snapshots (atomics read by
//! `Server::shard_stats`, so scraping never blocks a shard) into text. The
//! series are listed in one table, [`SERIES`]: adding one is adding a row.
//! Rendering uses the `prometheus` crate (the most used Rust client, by
//! TiKV) so that names, label escaping, HELP/TYPE lines and ordering follow
//! the Prometheus text format 0.0.4, which `promtool check metrics` checks.
//! (The `prometheus-client` crate writes OpenMetrics text, whose counter
//! samples `promtool check metrics` reads as untyped series without help.)

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use ringport::TurnDurations;
use ringport::stats::TURN_BUCKETS_US;
use ringport::{ClusterStats, Stats};

/// The media type of [`render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How a [`Stats`] field is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (exposed with the `_total` suffix).
    Counter,
    /// A level that goes up and down.
    Gauge,
    /// A level per shard, with a `shard` label.
    ShardGauge,
}

/// One series: name without the `ringport_` prefix (and without `_total`),
/// help text, kind, and the field it reads.
pub struct Series {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: fn(&Stats) -> u64,
}

/// Every series [`render`] writes besides `ringport_backend_info` and
/// `ringport_shards`.
pub const SERIES: &[Series] = &[
    Series {
        name: "connections",
        help: "Connections open now, per shard",
        kind: Kind::ShardGauge,
        value: |s| s.connections,
    },
    Series {
        name: "accepted",
        help: "Connections accepted",
        kind: Kind::Counter,
        value: |s| s.accepted,
    },
    Series {
        name: "connected",
        help: "Outbound connections established",
        kind: Kind::Counter,
        value: |s| s.connected,
    },
    Series {
        name: "closed",
        help: "Connections closed, for any reason",
        kind: Kind::Counter,
        value: |s| s.closed,
    },
    Series {
        name: "messages_in",
        help: "Messages received",
        kind: Kind::Counter,
        value: |s| s.messages_in,
    },
    Series {
        name: "messages_out",
        help: "Messages sent",
        kind: Kind::Counter,
        value: |s| s.messages_out,
    },
    Series {
        name: "bytes_in",
        help: "Bytes received",
        kind: Kind::Counter,
        value: |s| s.bytes_in,
    },
    Series {
        name: "bytes_out",
        help: "Bytes sent",
        kind: Kind::Counter,
        value: |s| s.bytes_out,
    },
    Series {
        name: "send_queue_bytes",
        help: "Bytes queued for sending, not yet written to the kernel",
        kind: Kind::Gauge,
        value: |s| s.send_queue_bytes,
    },
    Series {
        name: "reassembly_bytes",
        help: "Bytes held for partially received frames",
        kind: Kind::Gauge,
        value: |s| s.reassembly_bytes,
    },
    Series {
        name: "frame_pool_bytes",
        help: "Bytes of large frame buffers kept for reuse by the next large frames",
        kind: Kind::Gauge,
        value: |s| s.frame_pool_bytes,
    },
    Series {
        name: "frames_too_large",
        help: "Connections closed because they sent a frame over the maximum",
        kind: Kind::Counter,
        value: |s| s.frames_too_large,
    },
    Series {
        name: "slow_consumers",
        help: "Connections closed or messages dropped by the slow-consumer policy",
        kind: Kind::Counter,
        value: |s| s.slow_consumers,
    },
    Series {
        name: "read_pauses",
        help: "Times reading a connection paused because its send queue was at the high-water mark",
        kind: Kind::Counter,
        value: |s| s.read_pauses,
    },
    Series {
        name: "recv_no_buffers",
        help: "Multishot receives ended by an empty buffer ring",
        kind: Kind::Counter,
        value: |s| s.recv_no_buffers,
    },
    Series {
        name: "direct_recvs",
        help: "Receives straight into a large frame's buffer (the rest of a frame, or a bulk-mode frame): no copy",
        kind: Kind::Counter,
        value: |s| s.direct_recvs,
    },
    Series {
        name: "accept_errors",
        help: "Accept failures, each followed by a back-off",
        kind: Kind::Counter,
        value: |s| s.accept_errors,
    },
    Series {
        name: "rejected",
        help: "Clients accepted over the connection limit and closed at once (--at-limit refuse)",
        kind: Kind::Counter,
        value: |s| s.rejected,
    },
    Series {
        name: "waiting",
        help: "Clients accepted over the connection limit, held until a place frees",
        kind: Kind::Gauge,
        value: |s| s.waiting,
    },
    Series {
        name: "frame_timeouts",
        help: "Connections closed because a frame did not complete within the frame timeout",
        kind: Kind::Counter,
        value: |s| s.frame_timeouts,
    },
    Series {
        name: "truncated_frames",
        help: "Connections whose peer closed in the middle of a frame",
        kind: Kind::Counter,
        value: |s| s.truncated_frames,
    },
    Series {
        name: "idle_timeouts",
        help: "Connections closed by the idle timeout",
        kind: Kind::Counter,
        value: |s| s.idle_timeouts,
    },
    Series {
        name: "heartbeats",
        help: "Heartbeats (empty messages) sent",
        kind: Kind::Counter,
        value: |s| s.heartbeats,
    },
    Series {
        name: "timers",
        help: "Handler timers armed now",
        kind: Kind::Gauge,
        value: |s| s.timers,
    },
    Series {
        name: "commands_dropped",
        help: "Cross-shard commands dropped because the target shard's queue was full",
        kind: Kind::Counter,
        value: |s| s.commands_dropped,
    },
    Series {
        name: "tls_handshakes",
        help: "TLS handshakes completed",
        kind: Kind::Counter,
        value: |s| s.tls_handshakes,
    },
    Series {
        name: "tls_failures",
        help: "TLS connections closed for a TLS failure (failed or timed-out handshakes, corrupt records)",
        kind: Kind::Counter,
        value: |s| s.tls_failures,
    },
    Series {
        name: "tls_handshake_timeouts",
        help: "TLS handshakes not complete within the handshake timeout",
        kind: Kind::Counter,
        value: |s| s.tls_handshake_timeouts,
    },
    Series {
        name: "upgrades",
        help: "WebSocket opening handshakes accepted",
        kind: Kind::Counter,
        value: |s| s.upgrades,
    },
    Series {
        name: "upgrades_refused",
        help: "WebSocket opening handshakes refused (malformed, or by the upgrade hook)",
        kind: Kind::Counter,
        value: |s| s.upgrades_refused,
    },
    Series {
        name: "upgrade_timeouts",
        help: "Connections closed because their opening handshake did not complete in time",
        kind: Kind::Counter,
        value: |s| s.upgrade_timeouts,
    },
];

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn register(registry: &Registry, metric: impl Collector + 'static) {
    registry
        .register(Box::new(metric))
        .expect("series names are unique and valid");
}

/// Renders one scrape: every [`SERIES`] row (counters and gauges summed
/// over the shards, per-shard gauges labelled `shard="i"`), the number of
/// shards, and `ringport_backend_info{backend="..."} 1` naming the I/O
/// backend (e.g. `"io_uring"`).
pub fn render(shards: &[Stats], backend: &str) -> String {
    render_with_turns(shards, backend, None)
}

/// [`render`], plus the shard loop-turn duration histogram
/// (`ringport_loop_turn_seconds`) when given.
pub fn render_with_turns(shards: &[Stats], backend: &str, turns: Option<&TurnDurations>) -> String {
    let registry = Registry::new_custom(Some("ringport".into()), None).expect("valid prefix");
    let mut total = Stats::default();
    for s in shards {
        total += *s;
    }
    let info = IntGaugeVec::new(
        Opts::new(
            "backend_info",
            "The I/O backend serving connections (value 1)",
        ),
        &["backend"],
    )
    .expect("valid series");
    info.with_label_values(&[backend]).set(1);
    register(&registry, info);
    let count = IntGauge::new("shards", "Shard threads, each with its own ring").expect("valid");
    count.set(to_i64(shards.len() as u64));
    register(&registry, count);
    for series in SERIES {
        let value = (series.value)(&total);
        match series.kind {
            Kind::Counter => {
                let c = IntCounter::new(format!("{}_total", series.name), series.help)
                    .expect("valid series");
                c.inc_by(value);
                register(&registry, c);
            }
            Kind::Gauge => {
                let g = IntGauge::new(series.name, series.help).expect("valid series");
                g.set(to_i64(value));
                register(&registry, g);
            }
            Kind::ShardGauge => {
                let family = IntGaugeVec::new(Opts::new(series.name, series.help), &["shard"])
                    .expect("valid series");
                for (i, s) in shards.iter().enumerate() {
                    family
                        .with_label_values(&[i.to_string()])
                        .set(to_i64((series.value)(s)));
                }
                register(&registry, family);
            }
        }
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding to memory cannot fail");
    let mut text = String::from_utf8(out).expect("the text format is UTF-8");
    if let Some(turns) = turns {
        text.push_str(&turn_histogram(turns));
    }
    text
}

/// The cluster link's series (`ringport_cluster_*`), for a node that is
/// part of a cluster: link state, peers up, topics subscribed on the bus,
/// and the link's counters. Appended to [`render`]'s text.
pub fn render_cluster(c: &ClusterStats) -> String {
    let registry = Registry::new_custom(Some("ringport_cluster".into()), None).expect("valid");
    let gauges: [(&str, &str, u64); 3] = [
        (
            "link_up",
            "1 while the link to the NATS bus is up, 0 while it is down (cross-node messages are then dropped)",
            u64::from(c.connected),
        ),
        (
            "nodes_up",
            "Other nodes heard from within the node timeout",
            c.nodes_up as u64,
        ),
        (
            "topics",
            "Topics with subscribers on this node, whose publishes it takes from the bus",
            c.topics as u64,
        ),
    ];
    for (name, help, value) in gauges {
        let g = IntGauge::new(name, help).expect("valid series");
        g.set(to_i64(value));
        register(&registry, g);
    }
    let counters: [(&str, &str, u64); 12] = [
        ("sent", "Messages handed to the bus", c.sent),
        ("received", "Messages received from other nodes", c.received),
        (
            "dropped_out",
            "Messages for other nodes dropped: link down, queue full, or refused by the bus",
            c.dropped_out,
        ),
        (
            "dropped_in",
            "Messages from other nodes not delivered here (shard queue full, connection closed)",
            c.dropped_in,
        ),
        (
            "undeliverable",
            "Sends to another node's connection that found a stale id",
            c.undeliverable,
        ),
        (
            "unreachable",
            "Sends refused at once: the node was not heard from or the link was down",
            c.unreachable,
        ),
        (
            "reconnects",
            "Times the link to the bus came back after being lost (to any NATS server)",
            c.reconnects,
        ),
        (
            "history_written",
            "Publishes written to the topic history (acknowledged by JetStream)",
            c.history_written,
        ),
        (
            "history_failed",
            "Publishes to topics with a history that were lost (link down, refused or not acknowledged)",
            c.history_failed,
        ),
        (
            "recovered",
            "Subscriptions since a position that got every missed message",
            c.recovered,
        ),
        (
            "reset",
            "Subscriptions since a position the history no longer held (or of another epoch)",
            c.reset,
        ),
        (
            "replayed",
            "Messages replayed from the history to recovering subscribers",
            c.replayed,
        ),
    ];
    for (name, help, value) in counters {
        let c = IntCounter::new(format!("{name}_total"), help).expect("valid series");
        c.inc_by(value);
        register(&registry, c);
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding to memory cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// The loop-turn histogram in the text format (written by hand: the
/// `prometheus` crate builds histograms from observations, and the shards
/// keep bucket counts).
fn turn_histogram(turns: &TurnDurations) -> String {
    const NAME: &str = "ringport_loop_turn_seconds";
    let mut out = format!(
        "# HELP {NAME} Time a shard was busy between two waits (commands, timers, completions, handler calls)\n# TYPE {NAME} histogram\n"
    );
    let mut cumulative = 0;
    for (i, &bound_us) in TURN_BUCKETS_US.iter().enumerate() {
        cumulative += turns.buckets[i];
        out.push_str(&format!(
            "{NAME}_bucket{{le=\"{}\"}} {cumulative}\n",
            bound_us as f64 / 1e6
        ));
    }
    out.push_str(&format!("{NAME}_bucket{{le=\"+Inf\"}} {}\n", turns.count));
    out.push_str(&format!("{NAME}_sum {}\n", turns.sum.as_secs_f64()));
    out.push_str(&format!("{NAME}_count {}\n", turns.count));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_values() {
        let a = Stats {
            connections: 3,
            messages_in: 10,
            bytes_in: 100,
            ..Stats::default()
        };
        let b = Stats {
            connections: 4,
            messages_in: 5,
            send_queue_bytes: 7,
            ..Stats::default()
        };
        let text = render(&[a, b], "io_uring");
        for line in [
            "ringport_backend_info{backend=\"io_uring\"} 1",
            "ringport_shards 2",
            "ringport_connections{shard=\"0\"} 3",
            "ringport_connections{shard=\"1\"} 4",
            "ringport_messages_in_total 15",
            "ringport_bytes_in_total 100",
            "ringport_send_queue_bytes 7",
            "ringport_commands_dropped_total 0",
            "# TYPE ringport_accepted_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        for series in SERIES {
            let suffix = if series.kind == Kind::Counter {
                "_total"
            } else {
                ""
            };
            let help = format!("# HELP ringport_{}{suffix} ", series.name);
            assert!(text.contains(&help), "{help} missing:\n{text}");
        }
    }

    #[test]
    fn renders_the_cluster_series() {
        let c = ClusterStats {
            connected: true,
            nodes_up: 2,
            sent: 5,
            dropped_out: 3,
            reconnects: 1,
            topics: 7,
            ..ClusterStats::default()
        };
        let text = render_cluster(&c);
        for line in [
            "ringport_cluster_link_up 1",
            "ringport_cluster_nodes_up 2",
            "ringport_cluster_topics 7",
            "ringport_cluster_sent_total 5",
            "ringport_cluster_dropped_out_total 3",
            "ringport_cluster_reconnects_total 1",
            "# TYPE ringport_cluster_received_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let down = render_cluster(&ClusterStats::default());
        assert!(down.lines().any(|l| l == "ringport_cluster_link_up 0"));
    }
}
