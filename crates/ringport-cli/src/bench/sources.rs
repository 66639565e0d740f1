//! Parsing of `--sources`: a range `127.0.0.1-127.0.0.64` or a comma list.

use std::net::IpAddr;

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
}
