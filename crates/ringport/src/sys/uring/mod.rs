//! The io_uring backend: ring setup with feature fallback, the 64-bit tag
//! carried by every submission, the provided buffer ring ([`bufring`]) and
//! the driver that turns the engine's ops into submissions ([`driver`]).
//! This module tree is the only place that builds io_uring entries.
//!
//! Kernel requirements (checked by [`probe`]):
//! - 6.0: multishot recv (`IORING_RECV_MULTISHOT`), which ringport needs.
//! - 5.19: provided buffer rings (`IORING_REGISTER_PBUF_RING`), accept into
//!   an allocated direct descriptor (`IORING_FILE_INDEX_ALLOC`).
//! - 6.1: `IORING_SETUP_DEFER_TASKRUN` (optional: used when accepted).
//! - 6.0: `IORING_SETUP_SINGLE_ISSUER` (optional).
//! - 5.19: `IORING_OP_SOCKET` into a direct descriptor, 6.11: `IORING_OP_BIND`
//!   (outbound connections from a chosen source address), 6.7: socket
//!   options through `IORING_OP_URING_CMD` (TCP_NODELAY on outbound sockets;
//!   best effort).

pub(crate) mod bufring;
pub(crate) mod driver;
mod unit;

use std::io;

use io_uring::{IoUring, squeue};

/// What an operation is, stored in the top byte of its user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Close = 4,
    /// A cancel request; its own completion carries nothing we need.
    Cancel = 5,
    /// The cross-thread wake-up: a read of the shard's eventfd.
    Wake = 6,
    // 7 was the tick timeout; the loop's wait timeout replaced it.
    /// Creation of an outbound socket (slot field: pending-connect token).
    Socket = 8,
    /// A step before connect (bind, setsockopt) that failed; successful
    /// steps post no completion.
    ConnectStep = 9,
    Connect = 10,
    /// A read of the eventfd that the shard's other rings signal when they
    /// have completions (posted on the first ring).
    RingEvent = 11,
    /// A direct receive (`IORING_OP_RECV`, Linux 5.6+) into the engine's
    /// memory.
    RecvInto = 12,
}

/// The user_data of a submission: the IOCP "extended OVERLAPPED" in 64 bits.
/// Layout: kind (8 bits) | slot (24 bits) | generation (32 bits). The
/// generation lets a completion that outlived its connection be recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData {
    pub kind: OpKind,
    pub slot: u32,
    pub generation: u32,
}

/// Slots are 24 bits in [`UserData`] (the bound is the config's, which
/// sizes the tables).
pub(crate) use crate::config::MAX_DIRECT_SLOTS as MAX_SLOTS;

impl UserData {
    pub fn new(kind: OpKind, slot: u32, generation: u32) -> Self {
        debug_assert!(slot < MAX_SLOTS);
        UserData {
            kind,
            slot,
            generation,
        }
    }

    pub fn encode(self) -> u64 {
        ((self.kind as u64) << 56) | ((self.slot as u64 & 0xff_ffff) << 32) | self.generation as u64
    }

    pub fn decode(raw: u64) -> Option<Self> {
        let kind = match (raw >> 56) as u8 {
            1 => OpKind::Accept,
            2 => OpKind::Recv,
            3 => OpKind::Send,
            4 => OpKind::Close,
            5 => OpKind::Cancel,
            6 => OpKind::Wake,
            8 => OpKind::Socket,
            9 => OpKind::ConnectStep,
            10 => OpKind::Connect,
            11 => OpKind::RingEvent,
            12 => OpKind::RecvInto,
            _ => return None,
        };
        Some(UserData {
            kind,
            slot: ((raw >> 32) & 0xff_ffff) as u32,
            generation: raw as u32,
        })
    }
}

/// Checks that io_uring can be used here with the features ringport needs,
/// and says why not otherwise (disabled by sysctl, blocked by seccomp, kernel
/// too old).
///
/// The probe ring lives on a short-lived thread of its own: tearing a ring
/// down interrupts the threads that used it, and the caller's next blocking
/// call must not see a spurious EINTR.
pub fn probe() -> io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(probe_here)
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("io_uring probe panicked")))
    })
}

fn probe_here() -> io::Result<()> {
    let (major, minor) = kernel_version().unwrap_or((0, 0));
    if (major, minor) < (6, 0) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring backend needs Linux 6.0+ (multishot recv); this kernel is {major}.{minor}"
            ),
        ));
    }
    let ring = IoUring::new(8).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPERM) => {
                "io_uring is disabled (kernel.io_uring_disabled) or blocked by a seccomp profile"
            }
            Some(libc::ENOSYS) => "io_uring is not available in this kernel",
            _ => "io_uring_setup failed",
        };
        io::Error::new(e.kind(), format!("{why}: {e}"))
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (io_uring::opcode::Accept::CODE, "accept"),
        (io_uring::opcode::RecvMulti::CODE, "recv"),
        (io_uring::opcode::SendMsg::CODE, "sendmsg"),
        (io_uring::opcode::AsyncCancel::CODE, "async_cancel"),
        (io_uring::opcode::Close::CODE, "close"),
        (io_uring::opcode::Timeout::CODE, "timeout"),
        (io_uring::opcode::Read::CODE, "read"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring opcode {name} is not supported by this kernel"),
            ));
        }
    }
    Ok(())
}

fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Creates a ring for one shard thread. Tries SINGLE_ISSUER + DEFER_TASKRUN
/// (6.1+: completions are processed only when this thread waits, so no
/// interrupting task work), then COOP_TASKRUN (5.19+), then plain. With
/// either of the first two, TASKRUN_FLAG (5.19+) makes the kernel flag
/// deferred work in the submission queue's flags, so a submit without a
/// wait still runs it when there is some. Must be called on the thread
/// that will use the ring (single issuer).
pub fn new_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let cq = entries.saturating_mul(4);
    type Configure = fn(&mut io_uring::Builder);
    let attempts: [(&'static str, Configure); 3] = [
        ("single_issuer+defer_taskrun", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }),
        ("coop_taskrun", |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }),
        ("plain", |_| {}),
    ];
    let mut last = None;
    for (name, configure) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_submit_all();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// Pushes one submission, flushing the queue to the kernel first if it is
/// full.
///
/// # Safety
/// Every buffer and pointer the entry refers to must stay valid, and must not
/// be moved or freed, until the completion with the entry's user_data has
/// been reaped.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the caller guarantees the entry's buffers outlive its
        // completion (this function's contract).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        match ring.submit() {
            Ok(_) => {}
            // The completion queue is full: the caller reaps and retries via
            // the normal loop; the submission stays queued in the meantime.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(e);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for kind in [
            OpKind::Accept,
            OpKind::Recv,
            OpKind::Send,
            OpKind::Close,
            OpKind::Cancel,
            OpKind::Wake,
            OpKind::Socket,
            OpKind::ConnectStep,
            OpKind::Connect,
            OpKind::RingEvent,
            OpKind::RecvInto,
        ] {
            let ud = UserData::new(kind, MAX_SLOTS - 1, u32::MAX);
            assert_eq!(UserData::decode(ud.encode()), Some(ud));
            let ud = UserData::new(kind, 0, 1);
            assert_eq!(UserData::decode(ud.encode()), Some(ud));
        }
        assert_eq!(UserData::decode(0), None);
    }
}
