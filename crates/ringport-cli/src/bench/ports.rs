//! Source ports chosen by the bench itself: every outbound connection
//! binds an explicit (source address, port), taken from a cursor per
//! source address.
//!
//! Why: with port 0 (and IP_BIND_ADDRESS_NO_PORT) the kernel searches the
//! ephemeral range of the source address for a free 4-tuple on every
//! connect; once that range is nearly full each search walks tens of
//! thousands of taken ports (`__inet_check_established`) and the connect
//! rate collapses (about 100 connects/s past 900,000 connections over 64
//! sources). A bind to an explicit port is one hash lookup, and a connect
//! from an explicitly bound port skips the search.
//!
//! Which ports: 65535 down to 1024 minus the kernel's ephemeral range
//! (`ip_local_port_range`) and `ip_local_reserved_ports`. An explicitly
//! bound port is taken out of every address's ephemeral search (the
//! kernel skips ports whose bind bucket came from bind()), so using the
//! ephemeral range would make every other program's connects on the
//! machine fail while the bench holds its connections. A port somebody
//! else holds (a listener, a TIME_WAIT left by an earlier run) fails the
//! bind with EADDRINUSE; the bench then moves on to the next port.

use std::net::{IpAddr, SocketAddr};

/// The lowest port an unprivileged program may bind.
const FIRST_PORT: u16 = 1024;

/// Ports the bench may bind on each source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpace {
    /// Inclusive ranges, ascending.
    ranges: Vec<(u16, u16)>,
    /// The kernel's ephemeral range, left out (for messages).
    ephemeral: (u16, u16),
}

impl PortSpace {
    /// The ports of this machine: 1024-65535 minus the ephemeral range and
    /// the reserved ports read from /proc (the kernel defaults when
    /// /proc/sys is not readable).
    pub fn of_this_machine() -> PortSpace {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            })
            .unwrap_or((32_768, 60_999));
        let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .unwrap_or_default();
        PortSpace::new(range, &reserved)
    }

    /// `ephemeral`: the kernel's range (inclusive); `reserved`: the
    /// `ip_local_reserved_ports` text ("8080,9000-9010" or empty).
    pub fn new(ephemeral: (u16, u16), reserved: &str) -> PortSpace {
        let mut excluded = vec![ephemeral];
        for part in reserved.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                excluded.push((a.min(b), a.max(b)));
            }
        }
        excluded.sort_unstable();
        let mut ranges = Vec::new();
        let mut next = u32::from(FIRST_PORT);
        for (a, b) in excluded {
            if u32::from(a) > next {
                ranges.push((next as u16, a - 1));
            }
            next = next.max(u32::from(b) + 1);
        }
        if next <= u32::from(u16::MAX) {
            ranges.push((next as u16, u16::MAX));
        }
        PortSpace { ranges, ephemeral }
    }

    /// Usable ports per source address.
    pub fn per_source(&self) -> usize {
        self.ranges
            .iter()
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }

    /// The port at `index` (0-based) of the usable ports counted from the
    /// top (65535 down), if any: low ports are where fixed services
    /// listen (7000, 8080, ...), and a server that binds one the bench holds
    /// (or left in TIME_WAIT) fails, so they are used last.
    fn nth(&self, mut index: usize) -> Option<u16> {
        for &(a, b) in self.ranges.iter().rev() {
            let len = usize::from(b - a) + 1;
            if index < len {
                return Some(b - index as u16);
            }
            index -= len;
        }
        None
    }

    /// The explanation of the space, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ports per source address: {FIRST_PORT}-65535 without the ephemeral range \
             {}-{} (net.ipv4.ip_local_port_range) and reserved ports",
            self.per_source(),
            self.ephemeral.0,
            self.ephemeral.1
        )
    }
}

/// Hands out (source address, port) pairs: round robin over the source
/// addresses, each with its own cursor through the port space.
#[derive(Debug)]
pub struct PortPlan {
    sources: Vec<IpAddr>,
    space: PortSpace,
    /// Next port index per source.
    cursors: Vec<usize>,
    /// Next source to use.
    turn: usize,
    /// Sources whose ports are all handed out.
    spent: usize,
    /// A pair handed out but not used (the engine was busy): next again.
    returned: Option<SocketAddr>,
}

impl PortPlan {
    /// Fails, with what would fit, when `connections` cannot fit the
    /// sources' port space (before anything connects).
    pub fn new(sources: &[IpAddr], space: PortSpace, connections: usize) -> Result<Self, String> {
        let capacity = sources.len() * space.per_source();
        if connections > capacity {
            let needed = connections.div_ceil(space.per_source().max(1));
            return Err(format!(
                "{connections} connections do not fit the address/port space of --sources: \
                 {} source address(es) x {} = {capacity}; use at least {needed} source \
                 addresses (for example --sources 127.0.0.1-{})",
                sources.len(),
                space.describe(),
                loopback_end(needed)
            ));
        }
        Ok(PortPlan {
            cursors: vec![0; sources.len()],
            sources: sources.to_vec(),
            space,
            turn: 0,
            spent: 0,
            returned: None,
        })
    }

    /// The next local address to bind, or `None` once every port of every
    /// source has been handed out.
    pub fn next_local(&mut self) -> Option<SocketAddr> {
        if let Some(local) = self.returned.take() {
            return Some(local);
        }
        while self.spent < self.sources.len() {
            let i = self.turn;
            self.turn = (self.turn + 1) % self.sources.len();
            match self.space.nth(self.cursors[i]) {
                Some(port) => {
                    self.cursors[i] += 1;
                    return Some(SocketAddr::new(self.sources[i], port));
                }
                None if self.cursors[i] == self.space.per_source() => {
                    // Count each source once.
                    self.cursors[i] += 1;
                    self.spent += 1;
                }
                None => {}
            }
        }
        None
    }
}

impl PortPlan {
    /// Takes back the pair `next_local` just returned, unused.
    pub fn give_back(&mut self, local: SocketAddr) {
        self.returned = Some(local);
    }
}

/// The last address of a 127.0.0.1-based range of `count` addresses.
fn loopback_end(count: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1)) + count as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_leaves_out_ephemeral_and_reserved_ports() {
        let space = PortSpace::new((32_768, 60_999), "");
        assert_eq!(
            space.per_source(),
            (32_767 - 1024 + 1) + (65_535 - 61_000 + 1)
        );
        // From the top down.
        assert_eq!(space.nth(0), Some(65_535));
        assert_eq!(space.nth(65_535 - 61_000), Some(61_000));
        assert_eq!(space.nth(65_535 - 61_000 + 1), Some(32_767));
        assert_eq!(space.nth(space.per_source() - 1), Some(1024));
        assert_eq!(space.nth(space.per_source()), None);
        let reserved = PortSpace::new((32_768, 60_999), "1024-1030, 8080,65535\n");
        assert_eq!(reserved.per_source(), space.per_source() - 9);
        assert_eq!(reserved.nth(0), Some(65_534));
        assert_eq!(reserved.nth(reserved.per_source() - 1), Some(1031));
        // A range reaching the top leaves nothing above it.
        assert_eq!(PortSpace::new((2000, 65_535), "").per_source(), 2000 - 1024);
    }

    #[test]
    fn plan_spreads_over_sources_and_ends() {
        let sources: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        // 1024-1026 usable, then the ephemeral range to the top.
        let space = PortSpace::new((1027, 65_535), "");
        assert_eq!(space.per_source(), 3);
        assert!(PortPlan::new(&sources, space.clone(), 7).is_err());
        let mut plan = PortPlan::new(&sources, space, 6).unwrap();
        let got: Vec<String> = std::iter::from_fn(|| plan.next_local())
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "127.0.0.1:1026",
                "127.0.0.2:1026",
                "127.0.0.1:1025",
                "127.0.0.2:1025",
                "127.0.0.1:1024",
                "127.0.0.2:1024"
            ]
        );
        assert_eq!(plan.next_local(), None);
    }

    #[test]
    fn too_many_connections_say_how_many_sources_fit() {
        let sources: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let space = PortSpace::new((32_768, 60_999), "");
        let e = PortPlan::new(&sources, space, 1_000_000).unwrap_err();
        assert!(e.contains("use at least 28 source addresses"), "{e}");
        assert!(e.contains("127.0.0.1-127.0.0.28"), "{e}");
    }
}
