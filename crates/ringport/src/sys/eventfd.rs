//! eventfd: the wake-up counter behind a shard's cross-thread wake-up and
//! the pool's `Event` and dispatcher (Linux 2.6.27+ for the flags).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A new non-blocking, close-on-exec eventfd with counter 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful eventfd(2); nothing
    // else owns it, so `OwnedFd` may close it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `value` to an eventfd counter (making it readable).
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let bytes = value.to_ne_bytes();
    // SAFETY: `bytes` is 8 readable bytes, the size an eventfd write takes;
    // the descriptor is borrowed, so open for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads (and so resets) an eventfd counter; nothing happens when it is
/// already 0 (the descriptor is non-blocking).
#[cfg(any(feature = "tokio", test))]
pub(crate) fn eventfd_reset(fd: BorrowedFd<'_>) {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is 8 writable bytes, the size an eventfd read needs;
    // the descriptor is borrowed, so open for the call.
    let _ = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
}
