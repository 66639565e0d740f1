//! The CLI's library: the load generator (`ringport bench`), the Prometheus
//! rendering of the server's counters (`ringport serve --metrics-addr`) and
//! helpers shared by the `ringport` and `ringport-hold` binaries (sizes,
//! durations and addresses on the command line, the open-files limit).

pub mod bench;
pub mod metrics;
pub mod pubsub;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Parses a byte size: a plain number of bytes (`1048576`) or a number with
/// a unit, by the `parse-size` crate. Binary units are powers of 1024 (`Ki`,
/// `KiB`, `MiB`, `GiB`, ...), decimal units powers of 1000 (`K`, `kB`, `MB`,
/// `GB`, ...); the unit is case-insensitive, its `B` optional, a space
/// before it and `_` between digits are allowed, and so is a fraction
/// (`1.5MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text.trim()).map_err(|e| {
        format!(
            "'{text}' is not a size ({e}): expected a number of bytes, optionally with a unit \
             (e.g. 1048576, 64KiB, 16MiB, 2MB)"
        )
    })
}

/// A size as `parse_size` reads it back, in the largest binary unit that
/// divides it exactly: `16MiB`, `1536`, `3KiB`.
pub fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Formats a byte count with a binary unit: `512 B`, `64.0 KiB`, `1.50 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// The longest duration [`parse_duration`] accepts: one year.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// Parses a duration, from 0 to [`MAX_SECS`]: a bare number is seconds,
/// fractions allowed (`5`, `0.5`); otherwise a number with a unit, by the
/// `humantime` crate (`500ms`, `2s`, `1m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let duration = if t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        let secs: f64 = t
            .parse()
            .map_err(|_| format!("'{text}' is not a number of seconds"))?;
        Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is out of range"))?
    } else {
        humantime::parse_duration(t).map_err(|e| {
            format!(
                "'{text}' is not a duration ({e}): expected seconds (5, 0.5) or a number \
                 with a unit (500ms, 2s, 1m)"
            )
        })?
    };
    if duration > Duration::from_secs(MAX_SECS) {
        return Err(format!(
            "'{text}' is out of range (0 to {MAX_SECS} seconds, one year)"
        ));
    }
    Ok(duration)
}

/// [`parse_duration`], refusing zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// A duration as [`parse_duration`] reads it back: `5s`, `500ms`, `1m 30s`.
pub fn duration_text(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Resolves HOST:PORT (an IP address or a host name) to its first address.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("'{addr}': {e} (expected HOST:PORT, e.g. 127.0.0.1:7000)"))?
        .next()
        .ok_or_else(|| format!("'{addr}' resolves to no address"))
}

/// A `--backend` name: auto, io-uring or epoll.
pub fn parse_backend(text: &str) -> Result<ringport::Backend, String> {
    text.parse()
}

/// An `--at-limit` policy: wait or refuse.
pub fn parse_limit_policy(text: &str) -> Result<ringport::LimitPolicy, String> {
    text.parse()
}

/// A `--recv-buffers` count: a power of two from 1 to 32768 (the kernel's
/// limit for one provided buffer ring).
pub fn parse_recv_buffers(text: &str) -> Result<u16, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if !n.is_power_of_two() || n > 32768 {
        return Err(format!(
            "{n} is not a power of two from 1 to 32768 (e.g. 256, 1024, 4096)"
        ));
    }
    Ok(n as u16)
}

/// The open-files limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now (the hard limit unless raising it failed).
    pub soft: u64,
    /// Hard limit (only root can raise it, and it is not raised here).
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. ringport sizes each
/// shard's direct-descriptor table from the soft limit, and a client holding
/// many sockets needs one descriptor per socket.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the rlimit struct we pass, which is
    // a valid, exclusively borrowed local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the rlimit struct we pass, a valid
        // local; raising the soft limit up to the hard limit is always
        // permitted and affects only this process's descriptor limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(NofileLimit {
        before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16 mib"), Ok(16 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64ki"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert_eq!(parse_size("10B"), Ok(10));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.2.3").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        for n in [0, 1, 1536, 1024, 3 << 10, 16 << 20, 5 << 30, (1 << 32) - 1] {
            assert_eq!(parse_size(&size_text(n)), Ok(n), "{}", size_text(n));
        }
        assert_eq!(size_text(16 << 20), "16MiB");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(16 << 20), "16.0 MiB");
        assert_eq!(format_bytes(300 << 20), "300 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("1e30").is_err());
        assert!(parse_duration("2y").is_err());
        assert_eq!(
            parse_duration("31536000"),
            Ok(Duration::from_secs(MAX_SECS))
        );
        assert!(parse_duration("31536001").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
        for d in [0, 1, 500, 5000, 90_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&duration_text(d)), Ok(d));
        }
    }

    #[test]
    fn recv_buffers() {
        assert_eq!(parse_recv_buffers("256"), Ok(256));
        assert_eq!(parse_recv_buffers("1"), Ok(1));
        assert_eq!(parse_recv_buffers("32768"), Ok(32768));
        assert!(parse_recv_buffers("100").is_err());
        assert!(parse_recv_buffers("0").is_err());
        assert!(parse_recv_buffers("65536").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            resolve("127.0.0.1:7000"),
            Ok("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(resolve("localhost:7000").unwrap().port(), 7000);
        assert!(resolve("127.0.0.1").is_err());
    }
}
