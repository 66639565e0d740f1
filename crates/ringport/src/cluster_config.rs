//! How a node joins a cluster: [`ClusterConfig`], and which topics keep a
//! history: [`HistoryConfig`]. A leaf (it names only the cluster's plain
//! types), so [`crate::config::ServerConfig`] holds a cluster
//! configuration without depending on the cluster link; their documented
//! home is [`crate::cluster`], which re-exports them.

use std::time::Duration;

use crate::cluster_types::Position;

/// Which topic publishes a node receives from NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interest {
    /// Only those of topics it has local subscribers for (one NATS
    /// subscription per such topic, made when the first subscriber on the
    /// node appears, ended when the last one leaves).
    #[default]
    PerTopic,
    /// Every publish (one wildcard subscription).
    All,
}

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS servers, e.g. `nats://127.0.0.1:4222`: the client connects
    /// to one of them (in random order) and moves to another when it is
    /// lost. Servers of the same NATS cluster it connects to are learnt
    /// too.
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster: 1 to 64 of
    /// `A-Z a-z 0-9 _ -`.
    pub node: String,
    /// First token of every subject (clusters sharing one NATS server use
    /// different prefixes). Default `ringport`.
    pub subject_prefix: String,
    /// Messages for other nodes queued at most; past it (or while the link
    /// is down) they are dropped and counted. Default 65,536.
    pub buffer: usize,
    /// How often this node announces itself. Default 500 ms.
    pub heartbeat: Duration,
    /// A node not heard from for this long is down. Default 3 s.
    pub node_timeout: Duration,
    /// How long `Server::start` waits for the first connection to NATS
    /// (it then goes on, reconnecting in the background). Default 2 s.
    pub connect_wait: Duration,
    /// Which topic publishes this node receives. Default
    /// [`Interest::PerTopic`].
    pub interest: Interest,
    /// Topic history on JetStream (the NATS servers run with JetStream:
    /// `nats-server -js`), for the topics it covers. Default none.
    pub history: Option<HistoryConfig>,
}

impl ClusterConfig {
    /// Node `node` on the NATS servers `urls` (one URL, or several
    /// separated by commas), with default settings.
    pub fn new(urls: impl AsRef<str>, node: impl Into<String>) -> Self {
        ClusterConfig {
            urls: split_urls(urls.as_ref()),
            node: node.into(),
            subject_prefix: "ringport".into(),
            buffer: 65_536,
            heartbeat: Duration::from_millis(500),
            node_timeout: Duration::from_secs(3),
            connect_wait: Duration::from_secs(2),
            interest: Interest::PerTopic,
            history: None,
        }
    }
}

/// `a,b, c` -> `[a, b, c]` (empty items dropped).
pub fn split_urls(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// Which topics keep a history, and how much.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Topic name prefixes with a history; `""` covers every topic.
    pub namespaces: Vec<String>,
    /// Messages kept per topic (the oldest leave first). Default 1,000.
    pub max_messages: u32,
    /// Messages older than this leave the history. Default 1 hour.
    pub max_age: Duration,
    /// Copies of the history in a NATS cluster (JetStream replicas, 1 to
    /// 5; at most the number of JetStream servers). Default 1.
    pub replicas: usize,
    /// Builds the frame a subscriber gets for a message of the history:
    /// from the topic, the message's position and the published payload.
    /// Called once per message per node (the frame is shared by the node's
    /// subscribers) and once per message replayed to a recovering one.
    pub encode: fn(&[u8], Position, &[u8]) -> Vec<u8>,
    /// Messages of each topic kept in memory on every node with
    /// subscribers for it (the last ones delivered live), from which a
    /// recovery that needs no older one is served without asking
    /// JetStream. Default 100; 0 keeps none.
    pub recent: usize,
    /// How long a recovery may take before the subscriber is given up on
    /// (told [`crate::cluster::Recovery::Reset`], subscribed live). Default 30 s.
    pub recovery_timeout: Duration,
}

impl HistoryConfig {
    /// History for topics starting with any of `namespaces`, framed by
    /// `encode`, with the default bounds.
    pub fn new(namespaces: Vec<String>, encode: fn(&[u8], Position, &[u8]) -> Vec<u8>) -> Self {
        HistoryConfig {
            namespaces,
            max_messages: 1000,
            max_age: Duration::from_secs(3600),
            replicas: 1,
            encode,
            recent: 100,
            recovery_timeout: Duration::from_secs(30),
        }
    }

    /// Whether `topic` keeps a history.
    pub fn covers(&self, topic: &[u8]) -> bool {
        self.namespaces
            .iter()
            .any(|ns| topic.starts_with(ns.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_on_commas() {
        assert_eq!(
            split_urls("nats://a:1, nats://b:2,,"),
            vec!["nats://a:1".to_string(), "nats://b:2".to_string()]
        );
        let c = ClusterConfig::new("nats://a:1,nats://b:2", "n1");
        assert_eq!(c.urls.len(), 2);
    }

    fn frame(_: &[u8], _: Position, data: &[u8]) -> Vec<u8> {
        data.to_vec()
    }

    #[test]
    fn namespaces_are_prefixes() {
        let c = HistoryConfig::new(vec!["chat.".into(), "game".into()], frame);
        assert!(c.covers(b"chat.room1"));
        assert!(c.covers(b"games"));
        assert!(!c.covers(b"news"));
        assert!(!c.covers(b"chat"));
        let all = HistoryConfig::new(vec![String::new()], frame);
        assert!(all.covers(b"anything"));
        let none = HistoryConfig::new(vec![], frame);
        assert!(!none.covers(b"x"));
    }
}
