//! Outbound connections of the io_uring backend: TCP_NODELAY, an optional
//! bind to a chosen source and the connect, as linked submissions on the
//! socket's direct descriptor.

use std::io;
use std::net::SocketAddr;

use io_uring::{opcode, squeue, types};

use super::UringDriver;
use crate::sys::uring::{OpKind, UserData};

/// A connect in flight: the addresses the kernel reads, and the first error
/// of the steps before it.
pub(super) struct PendingConnect {
    pub generation: u32,
    pub remote: socket2::SockAddr,
    pub local: Option<socket2::SockAddr>,
    pub step_error: Option<i32>,
}

impl UringDriver {
    pub(super) fn connect(
        &mut self,
        slot: u32,
        generation: u32,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> io::Result<()> {
        let unit = self.unit_of(slot);
        let fixed = self.fixed(slot);
        let pending = Box::new(PendingConnect {
            generation,
            remote: remote.into(),
            local: local.map(Into::into),
            step_error: None,
        });
        let step = UserData::new(OpKind::ConnectStep, slot, generation).encode();
        let nodelay = int_option(fixed, libc::IPPROTO_TCP, libc::TCP_NODELAY)
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        // With a source address and no port: IP_BIND_ADDRESS_NO_PORT lets
        // connect pick the port per destination (and reuse loopback TIME_WAIT ports), so
        // one source is not limited to one set of ports for all
        // destinations; hard-linked so that bind runs after it even if the
        // option is refused.
        let no_port = int_option(fixed, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        // No SKIP_SUCCESS on the bind: when a request that carries it
        // fails, the kernel skips the -ECANCELED completions of the rest of
        // its link too, so the connect would never complete (measured on
        // 6.18: a bind to a foreign source address posted its error and
        // nothing more). A successful bind posts one completion, ignored.
        let bind = pending.local.as_ref().map(|local| {
            opcode::Bind::new(fixed, local.as_ptr().cast(), local.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(step)
        });
        let connect =
            opcode::Connect::new(fixed, pending.remote.as_ptr().cast(), pending.remote.len())
                .build()
                .user_data(UserData::new(OpKind::Connect, slot, generation).encode());
        // The box keeps the addresses in place until the connect completes.
        self.connects.insert(slot, pending);
        // TCP_NODELAY is best effort (URING_CMD sockets need 6.7+) and not
        // linked: its failure must not cancel the connect.
        self.push(unit, nodelay)?;
        if let Some(bind) = bind {
            // A source port chosen by the caller is bound as it is.
            if local.is_some_and(|l| l.port() == 0) {
                self.push(unit, no_port)?;
            }
            self.push(unit, bind)?;
        }
        self.push(unit, connect)
    }
}

/// Sets a boolean socket option to 1 on a direct descriptor (a setsockopt
/// cannot reach it; IORING_OP_URING_CMD can, Linux 6.7+).
fn int_option(fd: types::Fixed, level: libc::c_int, name: libc::c_int) -> squeue::Entry {
    static ONE: libc::c_int = 1;
    opcode::SetSockOpt::new(
        fd,
        level as u32,
        name as u32,
        (&ONE as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as u32,
    )
    .build()
}
