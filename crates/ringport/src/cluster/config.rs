//! How a node joins a cluster: [`ClusterConfig`].

use std::time::Duration;

use super::history::HistoryConfig;

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

/// The wait before connect attempt `attempt` (counted per server tried
/// since the last success): every known server once at once (a lost server
/// is left for another without delay), then 100 ms doubling to 2 s.
pub(super) fn reconnect_delay(attempt: usize, servers: usize) -> Duration {
    match attempt.checked_sub(servers.max(1)) {
        None | Some(0) => Duration::ZERO,
        Some(n) => Duration::from_millis((100u64 << (n - 1).min(5)).min(2000)),
    }
}

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

    #[test]
    fn urls_are_split_on_commas() {
        assert_eq!(
            split_urls("nats://a:1, nats://b:2,,"),
            vec!["nats://a:1".to_string(), "nats://b:2".to_string()]
        );
        let c = ClusterConfig::new("nats://a:1,nats://b:2", "n1");
        assert_eq!(c.urls.len(), 2);
    }
}
