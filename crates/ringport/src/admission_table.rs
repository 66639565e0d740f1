//! The per-source connection count behind `ServerConfig::max_connections_per_ip`:
//! one table shared by every shard (and both backends), lock-free, of a
//! fixed size chosen at start.
//!
//! A *source* is the peer's IPv4 address, or its IPv6 address cut to
//! `ipv6_prefix` bits (an IPv4-mapped IPv6 peer of a dual-stack listener
//! counts as its IPv4 address). Its key is the whole 128-bit masked
//! address: two different sources never share a count, so a hash collision
//! never refuses an address under its limit.
//!
//! ## The table
//!
//! Open addressing with linear probing over a window of [`WINDOW`] entries
//! from the key's hash. An entry is a state word (a count, a version, a
//! "being written" bit) and the two key words. Entries are never deleted:
//! one whose count fell to 0 is free and is reused by whichever key claims
//! it first (the claim bumps its version, so a reader that saw the old key
//! fails its compare-and-swap and looks again). Every step is a load or a
//! compare-and-swap: no thread ever waits for another, except that a reader
//! meeting an entry in the instant between its claim and the store of its
//! key re-reads it a bounded number of times and then passes it by.
//!
//! ## Where it can be less strict, never more
//!
//! Two cases admit a connection without counting it (`Ticket::Untracked`,
//! counted in `Stats::per_ip_untracked`): no entry for the key and no free
//! entry in its window (the table is sized at twice the connections it can
//! count, so this needs a pathological pile-up), and a key whose entry was
//! being written by another shard at that instant (the connection then
//! gets an entry of its own, a second count for the same source). Both can
//! only let a source hold more than its limit; neither can refuse one
//! under it. A connection that was not counted is not uncounted at close
//! (the engine remembers which were, in a slot flag), so the counts stay
//! exact sums.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries probed from a key's home position.
pub(crate) const WINDOW: usize = 64;

/// Re-reads of an entry that is being written before passing it by.
const WRITING_RETRIES: usize = 64;

const COUNT_MASK: u64 = 0xFFFF_FFFF;
const WRITING: u64 = 1 << 63;
const VERSION_ONE: u64 = 1 << 32;
const VERSION_MASK: u64 = !COUNT_MASK & !WRITING;

/// The key of a source: its address masked to the grouping prefix, as the
/// 128 bits of an IPv6 address (IPv4 as `::ffff:a.b.c.d`).
pub(crate) fn source_key(ip: IpAddr, ipv6_prefix: u8) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            match ipv6_prefix {
                0 => 0,
                p if p >= 128 => bits,
                p => bits & !(u128::MAX >> p),
            }
        }
    }
}

/// What [`SourceTable::acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Counted: release it with [`SourceTable::release`] when the
    /// connection closes.
    Counted,
    /// Admitted without a count (see the module docs): nothing to release.
    Untracked,
    /// The source holds `limit` connections already.
    Refused,
}

#[derive(Default)]
struct Entry {
    state: AtomicU64,
    key_hi: AtomicU64,
    key_lo: AtomicU64,
}

/// Connections per source over all shards.
pub(crate) struct SourceTable {
    entries: Box<[Entry]>,
    mask: usize,
    limit: u32,
    ipv6_prefix: u8,
}

enum Probe {
    Done(Ticket),
    /// An entry changed under the probe: look again.
    Again,
}

impl SourceTable {
    /// A table for at most `connections` counted connections at once, each
    /// source up to `limit` of them. Memory: 24 bytes x the next power of
    /// two above twice `connections` (at least [`WINDOW`] entries).
    pub fn new(connections: usize, limit: u32, ipv6_prefix: u8) -> Self {
        let size = connections
            .saturating_mul(2)
            .max(WINDOW)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        SourceTable {
            entries: (0..size).map(|_| Entry::default()).collect(),
            mask: size - 1,
            limit: limit.max(1),
            ipv6_prefix,
        }
    }

    /// The table `config` asks for, if it sets a per-source limit: room for
    /// every connection that can be open or waiting at once.
    pub fn for_config(config: &crate::ServerConfig) -> Option<Self> {
        let limit = config.max_connections_per_ip?;
        let waiting = config.shards.saturating_mul(config.accepts_in_flight);
        Some(SourceTable::new(
            config.max_connections.saturating_add(waiting),
            limit,
            config.ipv6_prefix,
        ))
    }

    /// The per-source limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The key of `ip` under this table's grouping.
    pub fn key(&self, ip: IpAddr) -> u128 {
        source_key(ip, self.ipv6_prefix)
    }

    fn home(&self, key: u128) -> usize {
        // SplitMix64-style mixing of both halves: keys of one network differ
        // in few bits.
        let mut x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x as usize) & self.mask
    }

    /// The state of `e` once it is not being written, or None if it stays
    /// so for `WRITING_RETRIES` reads.
    fn settled(e: &Entry) -> Option<u64> {
        for _ in 0..WRITING_RETRIES {
            let s = e.state.load(Ordering::Acquire);
            if s & WRITING == 0 {
                return Some(s);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Whether `e` holds `key` in the version of `state` (the key words are
    /// read between two reads of the state: the same version means they
    /// belong to it).
    fn holds(e: &Entry, key: u128, state: u64) -> bool {
        let hi = e.key_hi.load(Ordering::Acquire);
        let lo = e.key_lo.load(Ordering::Acquire);
        let again = e.state.load(Ordering::Acquire);
        again & VERSION_MASK == state & VERSION_MASK
            && again & WRITING == 0
            && (u128::from(hi) << 64 | u128::from(lo)) == key
    }

    /// Counts one more connection of `ip`, unless its source is at the
    /// limit.
    pub fn acquire(&self, ip: IpAddr) -> Ticket {
        let key = self.key(ip);
        loop {
            if let Probe::Done(ticket) = self.try_acquire(key) {
                return ticket;
            }
        }
    }

    fn try_acquire(&self, key: u128) -> Probe {
        let home = self.home(key);
        let mut free = None;
        for i in 0..WINDOW {
            let e = &self.entries[(home + i) & self.mask];
            // An entry being written for too long is passed by: it may be
            // this key's (a second count for one source: less strict).
            let Some(mut state) = Self::settled(e) else {
                continue;
            };
            if state & COUNT_MASK == 0 {
                free.get_or_insert((e, state));
                continue;
            }
            if !Self::holds(e, key, state) {
                continue;
            }
            // `key`'s entry: one more, below the limit.
            loop {
                let count = state & COUNT_MASK;
                if count == 0 || state & WRITING != 0 {
                    // Freed (and maybe reused) meanwhile.
                    return Probe::Again;
                }
                if count >= u64::from(self.limit) {
                    return Probe::Done(Ticket::Refused);
                }
                match e.state.compare_exchange_weak(
                    state,
                    state + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Probe::Done(Ticket::Counted),
                    Err(now) if now & VERSION_MASK == state & VERSION_MASK => state = now,
                    Err(_) => return Probe::Again,
                }
            }
        }
        let Some((e, state)) = free else {
            return Probe::Done(Ticket::Untracked);
        };
        let version = (state & VERSION_MASK).wrapping_add(VERSION_ONE) & VERSION_MASK;
        if e.state
            .compare_exchange(
                state,
                WRITING | version,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Probe::Again;
        }
        e.key_hi.store((key >> 64) as u64, Ordering::Release);
        e.key_lo.store(key as u64, Ordering::Release);
        e.state.store(version | 1, Ordering::Release);
        Probe::Done(Ticket::Counted)
    }

    /// Counts one connection of `ip` less (one that `acquire` counted).
    pub fn release(&self, ip: IpAddr) {
        let key = self.key(ip);
        loop {
            match self.try_release(key) {
                Some(true) => return,
                Some(false) => {
                    // Not found: a bug in the caller (released twice, or
                    // never counted). Nothing to undo.
                    debug_assert!(false, "released a source that holds no count");
                    return;
                }
                None => continue,
            }
        }
    }

    /// Some(found), or None to look again.
    fn try_release(&self, key: u128) -> Option<bool> {
        let home = self.home(key);
        let mut passed_by = false;
        for i in 0..WINDOW {
            let e = &self.entries[(home + i) & self.mask];
            let Some(mut state) = Self::settled(e) else {
                passed_by = true;
                continue;
            };
            if state & COUNT_MASK == 0 || !Self::holds(e, key, state) {
                continue;
            }
            loop {
                if state & COUNT_MASK == 0 || state & WRITING != 0 {
                    return None;
                }
                match e.state.compare_exchange_weak(
                    state,
                    state - 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(true),
                    Err(now) if now & VERSION_MASK == state & VERSION_MASK => state = now,
                    Err(_) => return None,
                }
            }
        }
        // An entry being written may hold the count (it cannot stay so:
        // its writer is between two stores).
        if passed_by { None } else { Some(false) }
    }

    /// Connections counted for `ip`'s source now (tests).
    #[cfg(test)]
    pub fn count(&self, ip: IpAddr) -> u32 {
        let key = self.key(ip);
        let home = self.home(key);
        (0..WINDOW)
            .map(|i| &self.entries[(home + i) & self.mask])
            .filter_map(|e| {
                let s = Self::settled(e)?;
                (s & COUNT_MASK != 0 && Self::holds(e, key, s)).then_some((s & COUNT_MASK) as u32)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(text: &str) -> IpAddr {
        text.parse::<Ipv6Addr>().unwrap().into()
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_prefix() {
        let a = v6("2001:db8:1:2:aaaa::1");
        let b = v6("2001:db8:1:2:bbbb::2");
        let c = v6("2001:db8:1:3::1");
        assert_eq!(source_key(a, 64), source_key(b, 64));
        assert_ne!(source_key(a, 64), source_key(c, 64));
        assert_eq!(source_key(a, 48), source_key(c, 48));
        assert_ne!(source_key(a, 128), source_key(b, 128));
        assert_eq!(source_key(a, 0), source_key(c, 0));
        // A /56 keeps bits 48..56 (the fourth group's high byte).
        assert_ne!(
            source_key(v6("2001:db8:1:100::1"), 56),
            source_key(v6("2001:db8:1:200::1"), 56)
        );
        assert_eq!(
            source_key(v6("2001:db8:1:1ff::1"), 56),
            source_key(v6("2001:db8:1:100::1"), 56)
        );
    }

    #[test]
    fn ipv4_is_per_address_and_mapped_addresses_count_as_ipv4() {
        assert_ne!(
            source_key(v4(10, 0, 0, 1), 64),
            source_key(v4(10, 0, 0, 2), 64)
        );
        assert_eq!(
            source_key(v6("::ffff:10.0.0.1"), 64),
            source_key(v4(10, 0, 0, 1), 64)
        );
        // An IPv4 address and an IPv6 one never share a key.
        assert_ne!(source_key(v4(0, 0, 0, 0), 0), source_key(v6("::"), 0));
    }

    #[test]
    fn a_source_is_refused_at_its_limit_and_admitted_again_after_a_release() {
        let t = SourceTable::new(100, 3, 64);
        let a = v4(127, 0, 0, 2);
        for _ in 0..3 {
            assert_eq!(t.acquire(a), Ticket::Counted);
        }
        assert_eq!(t.acquire(a), Ticket::Refused);
        assert_eq!(t.acquire(v4(127, 0, 0, 3)), Ticket::Counted);
        assert_eq!(t.count(a), 3);
        t.release(a);
        assert_eq!(t.count(a), 2);
        assert_eq!(t.acquire(a), Ticket::Counted);
        assert_eq!(t.acquire(a), Ticket::Refused);
        // A whole /64 is one source.
        assert_eq!(t.acquire(v6("2001:db8::1")), Ticket::Counted);
        assert_eq!(t.acquire(v6("2001:db8::2")), Ticket::Counted);
        assert_eq!(t.acquire(v6("2001:db8::3:4")), Ticket::Counted);
        assert_eq!(t.acquire(v6("2001:db8::ffff")), Ticket::Refused);
        assert_eq!(t.acquire(v6("2001:db8:0:1::1")), Ticket::Counted);
    }

    /// The smallest table (one window) full of distinct sources: every one
    /// of them is admitted up to its own limit (a pile-up can only make it
    /// less strict), and freed entries are reused by other keys.
    #[test]
    fn collisions_never_refuse_an_address_under_its_limit() {
        let t = SourceTable::new(1, 2, 64);
        assert_eq!(t.entries.len(), WINDOW);
        let ips: Vec<IpAddr> = (0..WINDOW as u32 + 10)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let mut untracked = 0;
        for ip in &ips {
            match t.acquire(*ip) {
                Ticket::Counted => {}
                Ticket::Untracked => untracked += 1,
                Ticket::Refused => panic!("{ip} refused under its limit"),
            }
        }
        // Every entry holds a source; the rest were admitted untracked.
        assert_eq!(untracked, 10);
        for ip in &ips[..WINDOW] {
            assert_eq!(t.acquire(*ip), Ticket::Counted);
            assert_eq!(t.acquire(*ip), Ticket::Refused);
        }
        for ip in &ips[..WINDOW] {
            t.release(*ip);
            t.release(*ip);
            assert_eq!(t.count(*ip), 0);
        }
        // Free entries are taken by new keys.
        for ip in &ips[WINDOW..] {
            assert_eq!(t.acquire(*ip), Ticket::Counted);
        }
    }

    #[test]
    fn threads_racing_on_one_source_never_exceed_its_limit_with_room() {
        let t = Arc::new(SourceTable::new(10_000, 50, 64));
        let a = v4(192, 0, 2, 7);
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut held = 0u32;
                    let mut counted = 0u32;
                    for i in 0..20_000u32 {
                        // Others churn around it, in the same table.
                        let other = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n * 1000 + i % 100));
                        if t.acquire(other) == Ticket::Counted {
                            t.release(other);
                        }
                        if i % 3 == 2 && held > 0 {
                            t.release(a);
                            held -= 1;
                        } else {
                            match t.acquire(a) {
                                Ticket::Counted => {
                                    held += 1;
                                    counted += 1;
                                }
                                Ticket::Refused => {}
                                Ticket::Untracked => panic!("table has room"),
                            }
                        }
                        assert!(t.count(a) <= 50 + 3, "count over the limit");
                    }
                    for _ in 0..held {
                        t.release(a);
                    }
                    counted
                })
            })
            .collect();
        let counted: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(counted > 0);
        assert_eq!(t.count(a), 0);
        for e in t.entries.iter() {
            assert_eq!(e.state.load(Ordering::Acquire) & COUNT_MASK, 0);
        }
    }
}
