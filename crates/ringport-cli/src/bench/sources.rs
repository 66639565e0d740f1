//! Parsing of `--sources` (a range `127.0.0.1-127.0.0.64` or a comma list)
//! and the default sources, which follow the target's address family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Default sources for an IPv4 loopback target: 16 addresses, room for
/// about 16 × 36,000 connections.
pub const DEFAULT_V4: &str = "127.0.0.1-127.0.0.16";

/// The sources and the target address of a run.
///
/// With `--sources`, the target is the first address of `addr` in the
/// sources' family. Without it, the family is the target's (a name that
/// resolves to both takes IPv4): an IPv4 loopback target gets
/// 127.0.0.1-127.0.0.16, an IPv6 loopback target `::1`, any other target
/// the unspecified address of its family (the kernel picks the source
/// address of the route).
pub fn choose(spec: Option<&str>, addr: &str) -> Result<(Vec<IpAddr>, SocketAddr), String> {
    let targets: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .collect();
    let Some(spec) = spec else {
        let target = targets
            .iter()
            .find(|a| a.is_ipv4())
            .or(targets.first())
            .copied()
            .ok_or_else(|| format!("--addr {addr} resolves to no address"))?;
        return Ok((default_for(target.ip()), target));
    };
    let sources = parse(spec)?;
    let v4 = sources[0].is_ipv4();
    if sources.iter().any(|s| s.is_ipv4() != v4) {
        return Err("--sources mixes IPv4 and IPv6 addresses".into());
    }
    let target = targets
        .into_iter()
        .find(|a| a.is_ipv4() == v4)
        .ok_or_else(|| {
            format!(
                "--addr {addr} has no {} address, the family of --sources",
                if v4 { "IPv4" } else { "IPv6" }
            )
        })?;
    Ok((sources, target))
}

/// The default sources for a target address.
fn default_for(target: IpAddr) -> Vec<IpAddr> {
    match target {
        IpAddr::V4(ip) if ip.is_loopback() => parse(DEFAULT_V4).expect("a valid default"),
        IpAddr::V4(_) => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        IpAddr::V6(ip) if ip.is_loopback() => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
        IpAddr::V6(_) => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
    }
}

pub fn parse(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let parse = |s: &str| {
                s.trim()
                    .parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("--sources: {s:?} is not an IPv4 address"))
            };
            let (a, b) = (u32::from(parse(a)?), u32::from(parse(b)?));
            if b < a || b - a >= 65_536 {
                return Err(format!("--sources: bad range {part:?}"));
            }
            out.extend((a..=b).map(|ip| IpAddr::from(std::net::Ipv4Addr::from(ip))));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("--sources: {part:?} is not an IP address"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("--sources names no address".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2].to_string(), "127.0.0.3");
        assert_eq!(v[3].to_string(), "127.0.1.9");
        assert_eq!(parse("::1").unwrap()[0].to_string(), "::1");
        assert!(parse("127.0.0.5-127.0.0.1").is_err());
        assert!(parse("nope").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn default_sources_follow_the_target_family() {
        let (s, t) = choose(None, "[::1]:7005").unwrap();
        assert_eq!(s, vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(t.to_string(), "[::1]:7005");
        let (s, t) = choose(None, "127.0.0.1:7005").unwrap();
        assert_eq!(s.len(), 16);
        assert!(s.iter().all(|a| a.is_ipv4() && a.is_loopback()));
        assert_eq!(t.to_string(), "127.0.0.1:7005");
        let (s, _) = choose(None, "10.1.2.3:7005").unwrap();
        assert_eq!(s, vec!["0.0.0.0".parse::<IpAddr>().unwrap()]);
        let (s, _) = choose(None, "[2001:db8::1]:7005").unwrap();
        assert_eq!(s, vec!["::".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn explicit_sources_pick_the_target_of_their_family() {
        let (s, t) = choose(Some("::1"), "[::1]:7005").unwrap();
        assert_eq!((s.len(), t.is_ipv6()), (1, true));
        let e = choose(Some("127.0.0.1"), "[::1]:7005").unwrap_err();
        assert!(e.contains("has no IPv4 address"), "{e}");
        let e = choose(Some("127.0.0.1,::1"), "127.0.0.1:7005").unwrap_err();
        assert!(e.contains("mixes"), "{e}");
    }
}
