//! The pool's kernel boundary: epoll, eventfd, poll and pidfd_open through
//! `libc`. Every `unsafe` block of the pool lives here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Converts a `-1`-on-error return value into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor a syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: `fd` was just returned by a successful syscall that creates a
    // new descriptor; nothing else owns it, so `OwnedFd` may close it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new epoll instance (close-on-exec).
pub(super) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    Ok(owned(fd))
}

/// `epoll_ctl(op)` for `fd` with interest `events` and user data `data`.
pub(super) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: both descriptors are borrowed, so open for the call; `event` is
    // a valid epoll_event the kernel only reads (and ignores for DEL).
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut event) })?;
    Ok(())
}

/// Waits for events on `epoll` for at most `timeout_ms` (-1: forever).
/// Returns how many entries of `events` were filled (0 on timeout or EINTR).
fn epoll_wait(
    epoll: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ms: libc::c_int,
) -> io::Result<usize> {
    let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `events` is a writable buffer of at least `max` entries and the
    // epoll descriptor is borrowed, so open for the call.
    let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    match check(n) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Set once `epoll_pwait2` turned out to be missing (Linux < 5.11, or
/// filtered by seccomp).
static PWAIT2_MISSING: AtomicBool = AtomicBool::new(false);

/// Waits for events for at most `timeout` (`None`: forever) with
/// nanosecond precision through `epoll_pwait2` (Linux 5.11), falling back
/// to `epoll_wait` with the timeout rounded up to whole milliseconds.
pub(super) fn epoll_wait_timeout(
    epoll: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if let Some(t) = timeout
        && !PWAIT2_MISSING.load(Ordering::Relaxed)
    {
        let ts = libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as _,
        };
        let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: `events` is a writable buffer of at least `max` entries,
        // `ts` a valid timespec that outlives the call, and a null sigmask
        // (size 0) means "leave the signal mask alone"; the epoll descriptor
        // is borrowed, so open for the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => return Ok(0),
            Some(libc::ENOSYS | libc::EPERM) => PWAIT2_MISSING.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    let ms = timeout.map_or(-1, |t| {
        t.as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int
    });
    epoll_wait(epoll, events, ms)
}

pub(super) use crate::sys::eventfd::{eventfd, eventfd_add};

/// Reads (and so resets) an eventfd counter; `WouldBlock` when it is 0.
pub(super) fn eventfd_take(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is 8 writable bytes, the size an eventfd read needs;
    // the descriptor is borrowed, so open for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// Whether `fd` is readable right now (poll with a zero timeout).
pub(super) fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd; the descriptor is borrowed, so open
    // for the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// `pidfd_open(pid, 0)` (Linux 5.3): a close-on-exec descriptor that becomes
/// readable when the process exits.
pub(super) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned(ret as RawFd))
}
