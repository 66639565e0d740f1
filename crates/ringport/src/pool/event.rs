//! Waitable kernel objects: [`EventObject`] (an eventfd) and [`pidfd`].

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Child;
use std::sync::{Arc, Mutex, PoisonError};

use super::sys;

/// How an [`EventObject`] behaves once set (the two kinds of Win32 event objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventMode {
    /// Stays set until [`EventObject::reset`]; every wait registered on it sees it
    /// set. A [`WaitMode::Repeat`](super::WaitMode::Repeat) wait on a
    /// manual-reset event fires once per *set edge* (a `set()` that finds
    /// the event reset), not continuously while it stays set.
    ManualReset,
    /// Set until one wait consumes it: the wait that fires reads the
    /// eventfd (resetting it) before its callback is queued, so one `set()`
    /// (or several `set()`s before anyone consumes them) wakes exactly one
    /// callback, even with several waits registered on the event.
    AutoReset,
}

/// An event object backed by an eventfd (`EFD_CLOEXEC | EFD_NONBLOCK`),
/// for signalling a [`Pool::wait`](super::Pool::wait) from any thread (or,
/// through its descriptor, any process).
///
/// Cloning is cheap and every clone is the same event (they share one
/// descriptor), so one clone can be handed to a wait (which owns its source)
/// while others keep calling [`set`](Self::set).
///
/// `set`, `reset` and `is_set` are one or two syscalls each; they cannot
/// fail on an eventfd this type created, so they return nothing.
#[derive(Clone)]
pub struct EventObject {
    inner: Arc<EventInner>,
}

struct EventInner {
    fd: OwnedFd,
    mode: EventMode,
    /// Serialises `set`/`reset` of a manual-reset event so that a `set()`
    /// writes only when the event was reset (one write per set edge).
    lock: Mutex<()>,
}

impl EventObject {
    /// Creates a reset event.
    pub fn new(mode: EventMode) -> io::Result<EventObject> {
        Ok(EventObject {
            inner: Arc::new(EventInner {
                fd: sys::eventfd()?,
                mode,
                lock: Mutex::new(()),
            }),
        })
    }

    /// This event's mode.
    pub fn mode(&self) -> EventMode {
        self.inner.mode
    }

    /// Sets the event (a no-op on a manual-reset event that is already set).
    pub fn set(&self) {
        let fd = self.inner.fd.as_fd();
        match self.inner.mode {
            EventMode::AutoReset => {
                // Adding to the counter is idempotent for waiters: whoever
                // consumes it reads the whole count at once.
                let _ = sys::eventfd_add(fd, 1);
            }
            EventMode::ManualReset => {
                let _guard = self
                    .inner
                    .lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !sys::is_readable(fd) {
                    let _ = sys::eventfd_add(fd, 1);
                }
            }
        }
    }

    /// Resets the event (drains the eventfd counter).
    pub fn reset(&self) {
        let _guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = sys::eventfd_take(self.inner.fd.as_fd());
    }

    /// Whether the event is set now (a zero-timeout poll).
    pub fn is_set(&self) -> bool {
        sys::is_readable(self.inner.fd.as_fd())
    }
}

impl AsFd for EventObject {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl fmt::Debug for EventObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventObject")
            .field("mode", &self.inner.mode)
            .field("fd", &self.inner.fd)
            .field("set", &self.is_set())
            .finish()
    }
}

/// Opens a pidfd for `child` (`pidfd_open(2)`, Linux 5.3 or newer): a
/// close-on-exec descriptor that becomes readable when the child exits, to
/// pass to [`Pool::wait`](super::Pool::wait) (use
/// [`WaitMode::Once`](super::WaitMode::Once): it stays readable).
///
/// Call it while the child has not been reaped (before `Child::wait` or a
/// successful `Child::try_wait`): after that its pid may already belong to
/// another process. Readiness does not reap the child; call `Child::wait`
/// (it returns at once then) to collect its status and free the zombie.
///
/// Fails with `ENOSYS` on kernels before 5.3 and `ESRCH` if the process is
/// gone.
pub fn pidfd(child: &Child) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    sys::pidfd_open(pid)
}
