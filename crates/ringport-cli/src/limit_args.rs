//! `ringport serve`'s admission-control options: the per-source connection
//! limit, allow/deny lists (the library's accept filter), the message rate
//! limit and the handshake places.

use clap::Args;
use ipnet::IpNet;
use ringport::ServerConfig;
use ringport::limits::{AcceptFilter, MessageRateLimit, RateLimitPolicy};

/// The options of `serve` that bound what one client may take.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most connections one source may hold at once, over all shards (off
    /// by default).
    ///
    /// A source is an IPv4 address, or an IPv6 network of --ipv6-prefix
    /// bits. A connection over the limit is closed at accept, before any
    /// byte is read, and counted in rejected_per_ip; it never waits at
    /// --max-connections nor takes a waiting place there.
    #[arg(long, value_name = "N", env = "RINGPORT_MAX_CONNECTIONS_PER_IP",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: Option<u32>,

    /// Prefix length by which IPv6 clients are grouped into one source for
    /// --max-connections-per-ip (0 to 128; a host usually gets a /64).
    #[arg(long, value_name = "BITS", default_value_t = 64, env = "RINGPORT_IPV6_PREFIX",
          value_parser = clap::value_parser!(u8).range(0..=128))]
    pub ipv6_prefix: u8,

    /// Admit only clients from these networks (CIDRs or addresses,
    /// comma-separated: 10.0.0.0/8,::1). Others are closed at accept,
    /// unread, and counted in refused_by_filter.
    #[arg(long, value_name = "CIDRS", env = "RINGPORT_ALLOW", value_delimiter = ',',
          value_parser = parse_net)]
    pub allow: Vec<IpNet>,

    /// Refuse clients from these networks (CIDRs or addresses,
    /// comma-separated), even if --allow lists them. Closed at accept,
    /// unread, and counted in refused_by_filter.
    #[arg(long, value_name = "CIDRS", env = "RINGPORT_DENY", value_delimiter = ',',
          value_parser = parse_net)]
    pub deny: Vec<IpNet>,

    /// Most messages per second one connection may send (off by default):
    /// a token bucket of --message-burst messages.
    ///
    /// Past it, --rate-limit-policy pause stops reading from that
    /// connection until its budget allows the next message (TCP flow
    /// control then holds the sender back; counted in rate_limit_pauses);
    /// close closes it (rate_limit_closes).
    #[arg(long, value_name = "N", env = "RINGPORT_MAX_MESSAGE_RATE",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_rate: Option<u32>,

    /// With --max-message-rate: messages a connection may send back to back
    /// after a quiet spell [default: the rate, one second's worth].
    #[arg(long, value_name = "N", env = "RINGPORT_MESSAGE_BURST",
          value_parser = clap::value_parser!(u32).range(1..), requires = "max_message_rate")]
    pub message_burst: Option<u32>,

    /// With --max-message-rate: pause (stop reading until the budget allows
    /// the next message) or close (the connection).
    #[arg(long, value_name = "POLICY", default_value = "pause", env = "RINGPORT_RATE_LIMIT_POLICY",
          value_parser = parse_policy)]
    pub rate_limit_policy: RateLimitPolicy,

    /// Connections of one shard that may be in a TLS handshake at once.
    /// Past it, new connections wait unread, in arrival order (their
    /// --tls-handshake-timeout runs meanwhile); established connections
    /// are served as usual.
    #[arg(long, value_name = "N", default_value_t = 256, env = "RINGPORT_MAX_HANDSHAKES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_handshakes: u64,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("'{text}' is not a CIDR (10.0.0.0/8, 2001:db8::/32) or an address"))
}

fn parse_policy(text: &str) -> Result<RateLimitPolicy, String> {
    text.parse()
}

/// The name of `policy` as written on the command line.
pub fn policy_name(policy: RateLimitPolicy) -> &'static str {
    match policy {
        RateLimitPolicy::Pause => "pause",
        RateLimitPolicy::Close => "close",
    }
}

/// Whether a client from `ip` passes the lists: not denied, and allowed
/// when there is an allow list. An IPv4-mapped IPv6 address is checked as
/// IPv4.
pub fn admitted(allow: &[IpNet], deny: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    !deny.iter().any(|n| n.contains(&ip))
        && (allow.is_empty() || allow.iter().any(|n| n.contains(&ip)))
}

impl LimitArgs {
    /// Sets these limits in `config`.
    pub fn apply(&self, config: &mut ServerConfig) {
        config.max_connections_per_ip = self.max_connections_per_ip;
        config.ipv6_prefix = self.ipv6_prefix;
        if !self.allow.is_empty() || !self.deny.is_empty() {
            let (allow, deny) = (self.allow.clone(), self.deny.clone());
            config.accept_filter = Some(AcceptFilter::new(move |peer, _local| {
                admitted(&allow, &deny, peer.ip())
            }));
        }
        config.max_message_rate = self.max_message_rate.map(|rate| MessageRateLimit {
            per_second: rate,
            burst: self.message_burst.unwrap_or(rate),
            policy: self.rate_limit_policy,
        });
        config.max_handshakes_per_shard =
            usize::try_from(self.max_handshakes).unwrap_or(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|t| parse_net(t).unwrap()).collect()
    }

    #[test]
    fn deny_wins_over_allow_and_an_empty_allow_list_admits_all() {
        let allow = nets(&["10.0.0.0/8", "::1"]);
        let deny = nets(&["10.1.0.0/16"]);
        let ip = |t: &str| t.parse().unwrap();
        assert!(admitted(&allow, &deny, ip("10.2.3.4")));
        assert!(!admitted(&allow, &deny, ip("10.1.3.4")));
        assert!(!admitted(&allow, &deny, ip("192.168.0.1")));
        assert!(admitted(&allow, &deny, ip("::1")));
        assert!(admitted(&allow, &deny, ip("::ffff:10.2.3.4")));
        assert!(admitted(&[], &deny, ip("192.168.0.1")));
        assert!(!admitted(&[], &deny, ip("::ffff:10.1.0.1")));
    }

    #[test]
    fn cidrs_and_bare_addresses_parse_and_garbage_does_not() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("127.0.0.2").unwrap().to_string(), "127.0.0.2/32");
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("nope").is_err());
    }
}
