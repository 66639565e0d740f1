//! Outbound connections of the epoll backend: a non-blocking socket in a
//! free slot, TCP_NODELAY, an optional bind to a chosen source, connect,
//! and the writable edge that finishes it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::{Interest, Token};
use socket2::{Domain, SockRef, Type};

use super::calls::{errno, set_int_option};
use super::{Completion, EpollDriver};

impl EpollDriver {
    /// Abandons the connect in progress of `slot` if it is the one of
    /// `generation`.
    pub(super) fn cancel_connect(&mut self, slot: u32, generation: u32) {
        if let Some(s) = self.open(slot).filter(|s| s.connect == Some(generation)) {
            s.connect = None;
            self.push(Completion::Connected {
                slot,
                generation,
                result: -libc::ECANCELED,
            });
        }
    }

    /// A new non-blocking socket for `remote` in a free slot (registered
    /// at its connect).
    pub(super) fn socket(&mut self, remote: SocketAddr) -> Result<u32, i32> {
        let Some(&slot) = self.free.last() else {
            return Err(libc::ENFILE);
        };
        let socket = socket2::Socket::new(
            Domain::for_address(remote),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )
        .map_err(|e| errno(&e))?;
        self.free.pop();
        let s = &mut self.slots[slot as usize];
        s.stream = Some(TcpStream::from_std(socket.into()));
        Ok(slot)
    }

    /// Starts a connect: `Some(result)` if it finished at once.
    pub(super) fn connect(
        &mut self,
        slot: u32,
        generation: u32,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Option<i32> {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Some(-libc::EBADF);
        };
        let Some(stream) = s.stream.as_mut().filter(|_| !s.registered) else {
            return Some(-libc::EBADF);
        };
        let sock = SockRef::from(&*stream);
        let _ = sock.set_tcp_nodelay(true);
        if let Some(local) = local {
            // Without a port: lets connect pick the port per destination
            // (see the io_uring driver); best effort. With a port, the
            // caller chose it (a load generator spreading its connections
            // over source ports, so the kernel never searches a nearly full
            // ephemeral range).
            if local.port() == 0 {
                let _ = set_int_option(
                    stream.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    1,
                );
            }
            if let Err(e) = sock.bind(&local.into()) {
                return Some(-errno(&e));
            }
        }
        let in_progress = match sock.connect(&remote.into()) {
            Ok(()) => false,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => true,
            Err(e) => return Some(-errno(&e)),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(stream, Token(slot as usize), interest)
        {
            return Some(-errno(&e));
        }
        s.registered = true;
        s.readable = true;
        if in_progress {
            // Registering reports a connect already finished: no edge lost.
            s.connect = Some(generation);
            None
        } else {
            s.writable = true;
            Some(0)
        }
    }

    /// The connect of `slot` is writable: finished, or a spurious edge.
    pub(super) fn finish_connect(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let (Some(generation), Some(stream)) = (s.connect, s.stream.as_ref()) else {
            return;
        };
        let result = match stream.take_error() {
            Ok(Some(e)) | Err(e) => -errno(&e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => 0,
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    s.writable = false;
                    return;
                }
                Err(e) => -errno(&e),
            },
        };
        s.connect = None;
        self.push(Completion::Connected {
            slot,
            generation,
            result,
        });
    }
}
