//! Wake-ups for code that waits outside the shards (async tasks): the
//! event consumer waiting for events ([`ConsumerWake`]) and senders waiting
//! for room in a shard's command queue or a connection's send queue
//! ([`SpaceWaiters`]).
//!
//! Both cost the shards one atomic load on their path when nobody waits
//! (no lock, no system call); a waiter first announces itself with a flag,
//! then checks its condition again, so a wake-up is never lost between the
//! check and the wait.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::task::Waker;

use crate::sys::eventfd;

/// Signals the consumer of the event queue through an eventfd when an
/// event arrives and the consumer said it waits (the async event stream
/// registers the descriptor with its reactor).
pub(crate) struct ConsumerWake {
    fd: OwnedFd,
    /// Set by the consumer before it waits, cleared by the first producer
    /// that writes the eventfd: one write per wait, not per event.
    waiting: AtomicBool,
    /// Set once the server has stopped and no event will come.
    closed: AtomicBool,
}

impl ConsumerWake {
    pub fn new() -> io::Result<Self> {
        Ok(ConsumerWake {
            fd: eventfd::eventfd()?,
            waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Called by a producer after it queued an event.
    #[inline]
    pub fn notify(&self) {
        // Pairs with the fence in `announce`: either the consumer sees the
        // event on its second look, or this load sees `waiting`.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            self.signal();
        }
    }

    /// The server stopped: wake the consumer for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.signal();
    }

    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Called by the consumer before it waits; it must then look at the
    /// queue once more before sleeping.
    // Used by the async pieces (feature `tokio`) only.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn announce(&self) {
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn signal(&self) {
        // A failure (counter overflow) still leaves the eventfd readable.
        let _ = eventfd::eventfd_add(self.fd.as_fd(), 1);
    }

    /// Empties the eventfd counter (after the reactor reported it
    /// readable), so the next signal makes it readable again.
    #[cfg(feature = "tokio")]
    pub fn drain(&self) {
        eventfd::eventfd_reset(self.fd.as_fd());
    }

    // Used by the async pieces (feature `tokio`) only.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Tasks waiting for room on one shard: in its command queue (woken after
/// the shard drained commands) or in a connection's send queue (woken after
/// a send completed). Every waiter is woken and checks again: waiting is
/// rare (a full queue), so a simple list beats precise bookkeeping.
#[derive(Default)]
pub(crate) struct SpaceWaiters {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl SpaceWaiters {
    /// Adds a waiter. The caller must check its condition again after
    /// this, before it returns `Pending`.
    // Used by the async pieces (feature `tokio`) only.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        self.waiting.store(true, Ordering::Relaxed);
        drop(wakers);
        fence(Ordering::SeqCst);
    }

    /// Called by the shard after it made room (drained commands, completed
    /// a send). One fence and a load when nobody waits.
    #[inline]
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            self.wake_all();
        }
    }

    /// Wakes every waiter (also when the server stops).
    pub fn wake_all(&self) {
        let wakers = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.waiting.store(false, Ordering::Relaxed);
            std::mem::take(&mut *wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for an open descriptor; zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn space_waiters_wake_once_per_registration_and_only_when_waiting() {
        let waiters = SpaceWaiters::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        waiters.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        waiters.register(&waker);
        waiters.register(&waker); // the same task twice: one entry
        waiters.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        waiters.notify(); // the list was emptied
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn consumer_wake_signals_only_an_announced_consumer() {
        let wake = ConsumerWake::new().unwrap();
        wake.notify();
        assert!(!readable(wake.raw_fd()), "signalled with nobody waiting");
        wake.announce();
        wake.notify();
        assert!(readable(wake.raw_fd()));
        eventfd::eventfd_reset(wake.fd.as_fd());
        wake.notify(); // the first producer cleared `waiting`
        assert!(!readable(wake.raw_fd()));
        assert!(!wake.is_closed());
        wake.close();
        assert!(wake.is_closed() && readable(wake.raw_fd()));
    }
}
