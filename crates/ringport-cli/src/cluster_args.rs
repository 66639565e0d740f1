//! The `--cluster*` options of `ringport serve` (flattened into its
//! arguments) and the cluster configuration they make.

use std::time::Duration;

use clap::{Args, ValueEnum};
use ringport_cli::parse_positive_duration;

/// Cluster options of `ringport serve`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Join a cluster over NATS: one URL (nats://HOST:PORT) or several,
    /// separated by commas (servers of one NATS cluster: when the one in
    /// use is lost, the node moves to another). Broadcasts (chat mode),
    /// topic publishes and direct sends (pubsub mode) reach clients on
    /// every node. Needs --node-id.
    #[arg(
        long,
        value_name = "URL",
        env = "RINGPORT_CLUSTER",
        requires = "node_id"
    )]
    pub cluster: Option<String>,

    /// This node's name in the cluster, unique among the nodes: 1 to 64 of
    /// A-Z a-z 0-9 _ - (it names the node in cluster connection ids,
    /// NODE/SHARD.SLOT.GEN).
    #[arg(
        long,
        value_name = "NAME",
        env = "RINGPORT_NODE_ID",
        requires = "cluster"
    )]
    pub node_id: Option<String>,

    /// Which topic publishes of other nodes this node receives from NATS:
    /// `topic`, only those of topics it has subscribers for (one NATS
    /// subscription per topic); `all`, every publish.
    #[arg(
        long,
        value_name = "WHICH",
        env = "RINGPORT_CLUSTER_INTEREST",
        default_value = "topic"
    )]
    pub cluster_interest: ClusterInterest,

    /// Keep a history of the topics starting with these prefixes
    /// (comma-separated; `*` for every topic) on NATS JetStream (the NATS
    /// servers run with -js). Their messages reach subscribers with a
    /// position (`N` frames in pubsub mode) and a client resumes from one
    /// with `R` (see docs/cluster.md).
    #[arg(
        long,
        value_name = "PREFIXES",
        env = "RINGPORT_CLUSTER_HISTORY",
        requires = "cluster"
    )]
    pub cluster_history: Option<String>,

    /// Messages kept per topic in the history (the oldest leave first).
    #[arg(
        long,
        value_name = "N",
        env = "RINGPORT_CLUSTER_HISTORY_SIZE",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub cluster_history_size: u32,

    /// Messages older than this leave the history (e.g. 10m, 1h).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RINGPORT_CLUSTER_HISTORY_AGE",
        default_value = "1h",
        value_parser = parse_positive_duration
    )]
    pub cluster_history_age: Duration,

    /// Copies of the history in a NATS cluster (JetStream replicas, 1-5).
    #[arg(
        long,
        value_name = "N",
        env = "RINGPORT_CLUSTER_HISTORY_REPLICAS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub cluster_history_replicas: u8,

    /// How long a recovery (a subscription since a position) may wait for
    /// the history (JetStream electing a leader after losing a server);
    /// past it the client is told "reset" and gets live messages.
    #[arg(
        long,
        value_name = "DURATION",
        env = "RINGPORT_CLUSTER_RECOVERY_TIMEOUT",
        default_value = "30s",
        value_parser = parse_positive_duration
    )]
    pub cluster_recovery_timeout: Duration,
}

/// `--cluster-interest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterInterest {
    /// Only publishes of topics with subscribers on this node.
    Topic,
    /// Every publish.
    All,
}

impl ClusterArgs {
    /// The cluster configuration, None without --cluster.
    pub fn config(&self) -> Result<Option<ringport::ClusterConfig>, String> {
        let (Some(url), Some(node)) = (&self.cluster, &self.node_id) else {
            return Ok(None);
        };
        if !ringport::cluster::valid_node_name(node) {
            return Err(format!(
                "invalid --node-id '{node}': 1 to 64 of A-Z a-z 0-9 _ -"
            ));
        }
        let mut cluster = ringport::ClusterConfig::new(url, node.clone());
        if cluster.urls.is_empty() {
            return Err("--cluster: no NATS server URL given".into());
        }
        cluster.interest = match self.cluster_interest {
            ClusterInterest::Topic => ringport::cluster::Interest::PerTopic,
            ClusterInterest::All => ringport::cluster::Interest::All,
        };
        if let Some(prefixes) = &self.cluster_history {
            let namespaces = prefixes
                .split(',')
                .map(|p| if p.trim() == "*" { "" } else { p.trim() })
                .map(String::from)
                .collect();
            let mut history = ringport::cluster::HistoryConfig::new(
                namespaces,
                ringport_cli::pubsub::history_frame,
            );
            history.max_messages = self.cluster_history_size;
            history.max_age = self.cluster_history_age;
            history.replicas = usize::from(self.cluster_history_replicas);
            history.recovery_timeout = self.cluster_recovery_timeout;
            cluster.history = Some(history);
        }
        Ok(Some(cluster))
    }
}
