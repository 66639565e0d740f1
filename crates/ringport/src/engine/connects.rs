//! Outbound connects, from the request until the connection is open or
//! the failure is reported to the handler.
//!
//! A connect first waits for its socket (pending, by token: the driver's
//! `Op::Socket` names no slot), then for the connect itself (connecting,
//! by slot). A connect that fails after its socket exists is reported
//! once the socket is closed, with the error it saw; failures are queued
//! here and handed to the handler by the engine.
//!
//! The part keeps the bookkeeping; the engine does the rest (the global
//! limit, slots, ops, transports; see `admission`).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

/// An outbound connect waiting for its socket.
pub(super) struct PendingConnect {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    pub transport: crate::transport::ClientSetup,
}

/// What only an outbound connection needs until it is open.
struct Connecting {
    remote: SocketAddr,
    /// Why the connect failed (reported once the socket is closed).
    error: Option<i32>,
}

/// A shard's outbound connects.
#[derive(Default)]
pub(super) struct Connects {
    /// Connects waiting for their socket, by token.
    pending: Vec<Option<PendingConnect>>,
    /// Tokens free for reuse.
    free: Vec<u32>,
    /// Connects waiting for their socket (each promises a slot).
    pending_count: usize,
    /// Outbound connections until they are open (or their slot is free).
    connecting: BTreeMap<u32, Connecting>,
    /// Connects that failed, to report to the handler.
    failed: Vec<(SocketAddr, io::Error)>,
}

impl Connects {
    /// Connects waiting for their socket.
    #[inline]
    pub fn pending(&self) -> usize {
        self.pending_count
    }

    /// Keeps a connect until its socket is created; returns the token
    /// that names it in `Op::Socket` (tokens are reused).
    pub fn wait_for_socket(&mut self, connect: PendingConnect) -> u32 {
        self.pending_count += 1;
        match self.free.pop() {
            Some(t) => {
                self.pending[t as usize] = Some(connect);
                t
            }
            None => {
                self.pending.push(Some(connect));
                (self.pending.len() - 1) as u32
            }
        }
    }

    /// The connect whose socket creation completed (None: an unknown or
    /// already completed token).
    pub fn socket_done(&mut self, token: u32) -> Option<PendingConnect> {
        let connect = self
            .pending
            .get_mut(token as usize)
            .and_then(Option::take)?;
        self.free.push(token);
        self.pending_count -= 1;
        Some(connect)
    }

    /// `slot` holds the socket of a connect to `remote`; `error`: it
    /// failed already (reported when the slot is freed).
    pub fn connecting(&mut self, slot: u32, remote: SocketAddr, error: Option<i32>) {
        self.connecting.insert(slot, Connecting { remote, error });
    }

    /// The connect of `slot` failed with `errno` (reported when the slot
    /// is freed).
    pub fn connect_failed(&mut self, slot: u32, errno: i32) {
        if let Some(c) = self.connecting.get_mut(&slot) {
            c.error = Some(errno);
        }
    }

    /// The connect of `slot` succeeded: returns its remote address.
    pub fn connected(&mut self, slot: u32) -> Option<SocketAddr> {
        self.connecting.remove(&slot).map(|c| c.remote)
    }

    /// The slots of the connects in flight.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.connecting.keys().copied()
    }

    /// `slot` is free. If it held a connect that never opened, returns
    /// its remote address and the error to report (`ECONNREFUSED` if
    /// none was seen).
    pub fn slot_freed(&mut self, slot: u32) -> Option<(SocketAddr, io::Error)> {
        let Connecting { remote, error } = self.connecting.remove(&slot)?;
        let errno = error.unwrap_or(libc::ECONNREFUSED);
        Some((remote, io::Error::from_raw_os_error(errno)))
    }

    /// Queues a failed connect to `remote` for the handler.
    pub fn fail(&mut self, remote: SocketAddr, error: io::Error) {
        self.failed.push((remote, error));
    }

    /// The next failed connect to report to the handler.
    pub fn next_failed(&mut self) -> Option<(SocketAddr, io::Error)> {
        self.failed.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn connect(port: u16) -> PendingConnect {
        PendingConnect {
            remote: remote(port),
            local: None,
            transport: Default::default(),
        }
    }

    #[test]
    fn tokens_are_reused_and_counted() {
        let mut c = Connects::default();
        let a = c.wait_for_socket(connect(1));
        let b = c.wait_for_socket(connect(2));
        assert_ne!(a, b);
        assert_eq!(c.pending(), 2);
        assert_eq!(c.socket_done(a).map(|p| p.remote), Some(remote(1)));
        assert_eq!(c.pending(), 1);
        assert!(c.socket_done(a).is_none(), "a token completes once");
        assert_eq!(c.pending(), 1);
        assert!(c.socket_done(99).is_none(), "unknown token");
        let d = c.wait_for_socket(connect(3));
        assert_eq!(d, a, "the freed token is reused");
        assert_eq!(c.socket_done(d).map(|p| p.remote), Some(remote(3)));
        assert_eq!(c.socket_done(b).map(|p| p.remote), Some(remote(2)));
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn a_connect_that_opens_is_not_reported() {
        let mut c = Connects::default();
        c.connecting(4, remote(1), None);
        assert_eq!(c.slots().collect::<Vec<_>>(), [4]);
        assert_eq!(c.connected(4), Some(remote(1)));
        assert_eq!(c.connected(4), None);
        assert!(
            c.slot_freed(4).is_none(),
            "an open connection closes normally"
        );
        assert_eq!(c.slots().count(), 0);
    }

    #[test]
    fn a_failed_connect_is_reported_with_its_error_when_freed() {
        let mut c = Connects::default();
        c.connecting(4, remote(1), None);
        c.connect_failed(4, libc::ETIMEDOUT);
        let (at, error) = c.slot_freed(4).unwrap();
        assert_eq!(at, remote(1));
        assert_eq!(error.raw_os_error(), Some(libc::ETIMEDOUT));
        // A socket closed before any error was seen: refused.
        c.connecting(5, remote(2), None);
        assert_eq!(
            c.slot_freed(5).unwrap().1.raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        // Failed at its start (its transport could not be made).
        c.connecting(6, remote(3), Some(libc::EINVAL));
        assert_eq!(
            c.slot_freed(6).unwrap().1.raw_os_error(),
            Some(libc::EINVAL)
        );
        c.connect_failed(7, libc::EIO);
        assert!(c.slot_freed(7).is_none(), "no connect in slot 7");
    }

    #[test]
    fn failures_are_queued_for_the_handler() {
        let mut c = Connects::default();
        c.fail(remote(1), io::Error::other("one"));
        c.fail(remote(2), io::Error::other("two"));
        let mut got: Vec<_> = std::iter::from_fn(|| c.next_failed())
            .map(|(at, _)| at.port())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    }
}
