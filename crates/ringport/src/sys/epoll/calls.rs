//! The system calls of the epoll backend that mio does not make, and how
//! their errors are read.

use std::io;
use std::os::fd::RawFd;

/// What an accept error means for the accept loop.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AcceptError {
    /// No client waiting: wait for the next edge.
    Drained,
    /// The client went away (or a signal came): try the next one.
    Retry,
    /// Report it (EMFILE, ENFILE, ENOBUFS, ENOMEM...); the engine backs off
    /// and asks again later, so the budget unit is used up.
    Fail(i32),
}

pub(super) fn classify_accept_error(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => AcceptError::Drained,
        Some(libc::ECONNABORTED | libc::EINTR) => AcceptError::Retry,
        _ => AcceptError::Fail(errno(e)),
    }
}

/// The errno of `e` (EIO if it has none).
pub(super) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().filter(|&n| n > 0).unwrap_or(libc::EIO)
}

/// Shortens `iov` to cover at most `max` bytes (results are `i32`).
pub(super) fn clamp_iovecs(iov: &mut Vec<libc::iovec>, max: usize) {
    let mut total = 0usize;
    for i in 0..iov.len() {
        let room = max - total;
        if iov[i].iov_len >= room {
            iov[i].iov_len = room;
            iov.truncate(if room == 0 { i } else { i + 1 });
            return;
        }
        total += iov[i].iov_len;
    }
}

/// recv into a direct receive's target; retries on EINTR.
pub(super) fn recv_into(fd: RawFd, target: crate::sys::RecvTarget) -> io::Result<usize> {
    loop {
        // SAFETY: the target is engine memory of `target.len` bytes, valid
        // and left alone by the engine until the receive's completion (the
        // contract in `sys`); recv writes at most that many bytes there.
        let n = unsafe { libc::recv(fd, target.ptr.cast(), target.len, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// sendmsg with MSG_NOSIGNAL (a peer that went away gives EPIPE, not
/// SIGPIPE); retries on EINTR.
pub(super) fn send_iovecs(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    loop {
        let n = match iov {
            // One segment (the common case for small messages): a plain
            // send, which spares the kernel importing a msghdr and an
            // iovec array.
            // SAFETY: the iovec covers bytes of the engine's send queue,
            // valid and unchanged until the send's completion (the
            // contract); send only reads them; `fd` is a socket the caller
            // holds open.
            [one] => unsafe { libc::send(fd, one.iov_base, one.iov_len, libc::MSG_NOSIGNAL) },
            // SAFETY: `msg` points to `iov`, `iov.len()` entries, each over
            // bytes of the engine's send queue, which stay valid and
            // unchanged until the send's completion (the contract); sendmsg
            // only reads them, and `fd` is a socket the caller holds open.
            _ => unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) },
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Resets the eventfd counter; false if it was not signalled.
pub(super) fn read_eventfd(fd: RawFd) -> bool {
    let mut value = 0u64;
    loop {
        // SAFETY: reads at most 8 bytes into `value`, a live u64; `fd` is
        // the shard's eventfd, open as long as the driver (see `new`).
        let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
        if n == 8 {
            return true;
        }
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// setsockopt of an int option.
pub(super) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: i32,
) -> io::Result<()> {
    let value: libc::c_int = value;
    // SAFETY: passes a pointer to a live c_int and its size; `fd` is a
    // socket the caller holds open.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
