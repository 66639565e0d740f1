//! The CLI's library: the load generator (`ringport bench`) and helpers
//! shared by the `ringport` and `ringport-hold` binaries (human sizes and
//! durations on the command line, the open-files limit).

pub mod bench;

use std::io;
use std::time::Duration;

/// Parses a byte size: a plain number of bytes (`1048576`) or a number with
/// a unit. Binary units are powers of 1024 (`K`, `KiB`, `M`, `MiB`, `G`,
/// `GiB`), decimal units powers of 1000 (`kB`, `MB`, `GB`); `B` is bytes.
/// Units are case-insensitive, a space before the unit and `_` between
/// digits are allowed, and a fraction is accepted with a unit (`1.5MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number = number.replace('_', "");
    if number.is_empty() {
        return Err(format!(
            "'{text}' is not a size: expected a number of bytes, optionally with a unit \
             (e.g. 1048576, 64KiB, 16MiB)"
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use B, KiB, MiB, GiB, kB, MB or GB)"
            ));
        }
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("size '{text}' is too large"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: '{number}' is not a number"))?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size '{text}' is too large"));
    }
    Ok(bytes as u64)
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

/// The longest duration [`parse_secs`] accepts: one year.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// Parses a duration in seconds, fractions allowed (`5`, `0.5`), from 0 to
/// [`MAX_SECS`].
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=MAX_SECS as f64).contains(&value) {
        return Err(format!(
            "{text} seconds is out of range (0 to {MAX_SECS}, one year)"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("'{text}' is not a number of seconds"))
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
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
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
    fn seconds() {
        assert_eq!(parse_secs("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("1e30").is_err());
        assert_eq!(parse_secs("31536000"), Ok(Duration::from_secs(MAX_SECS)));
        assert!(parse_secs("soon").is_err());
    }
}
