//! One ring of a shard: its direct-descriptor table, its provided buffer
//! ring, and the submissions the kernel refused for the moment.
//!
//! Why a shard may have several: the kernel caps one ring's table of
//! direct descriptors at the open-files limit (`io_sqe_files_register`
//! refuses more than `RLIMIT_NOFILE` entries), but direct descriptors do
//! not use the process's fd table, so a shard holds many times that many
//! connections on several rings. The first ring is the one the thread
//! waits on; the others are created when the ones before them are full and,
//! while the thread sleeps, signal a shared eventfd, which the first ring
//! keeps a read posted on, when they have completions (a registered eventfd
//! is signalled as soon as work for the ring is queued, DEFER_TASKRUN
//! included: checked on 6.18). Awake, the thread enters only the rings the
//! kernel flagged.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, squeue};

use super::bufring::BufRing;
use crate::config::ServerConfig;

/// The buffer group every ring's receives pick from (one group per ring).
pub(super) const BUFFER_GROUP: u16 = 0;

/// Submission queue entries of the rings after the first: they carry the
/// operations of connections that are mostly idle, and an `EBUSY` only
/// delays submissions (see [`Unit::push`]).
const SECONDARY_ENTRIES: u32 = 1024;

pub(super) struct Unit {
    pub ring: IoUring,
    pub bufs: BufRing,
    /// Entries of this ring's direct-descriptor table.
    pub table: u32,
    /// Table entries in use or promised: sockets in the table, posted
    /// accepts, requested sockets. Never above `table`.
    pub reserved: u32,
    /// Accepts posted on this ring.
    pub accepts_posted: u32,
    /// Submissions the kernel refused with EBUSY, in order.
    overflow: VecDeque<squeue::Entry>,
    /// The setup that was accepted (`single_issuer+defer_taskrun`, ...).
    pub mode: &'static str,
}

impl Unit {
    /// A ring with a sparse direct table of `table` entries and its own
    /// buffer ring. `first`: the ring the thread waits on (full-size
    /// queues); the others signal `ring_event` when they have completions.
    pub fn new(
        config: &ServerConfig,
        table: u32,
        first: bool,
        ring_event: Option<RawFd>,
    ) -> io::Result<Self> {
        let entries = if first {
            config.ring_entries
        } else {
            config.ring_entries.min(SECONDARY_ENTRIES)
        };
        let (mut ring, mode) = super::new_ring(entries)?;
        ring.submitter().register_files_sparse(table).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering a direct file table of {table} entries: {e}"),
            )
        })?;
        if let Some(fd) = ring_event {
            ring.submitter().register_eventfd(fd)?;
            // Armed only while the thread sleeps (`signal_work`).
            ring.completion().disable_eventfd();
        }
        let mut bufs = BufRing::new(
            &ring,
            BUFFER_GROUP,
            config.recv_buffers,
            config.recv_buffer_size,
        )?;
        if mode == "single_issuer+defer_taskrun" {
            bufs.allow_trim_in_ring();
        }
        Ok(Unit {
            ring,
            bufs,
            table,
            reserved: 0,
            accepts_posted: 0,
            overflow: VecDeque::new(),
            mode,
        })
    }

    pub fn has_room(&self) -> bool {
        self.reserved < self.table
    }

    pub fn has_overflow(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// Queues a submission. While the kernel refuses submissions
    /// (`EBUSY`: its completion queue overflowed, until this thread reaps),
    /// entries wait in `overflow`, in order, and go in at the next
    /// [`Unit::flush_overflow`]: the shard never fails or spins on a full
    /// ring.
    ///
    /// # Safety
    /// As [`super::push`]: the memory the entry points at stays valid and in
    /// place until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if !self.overflow.is_empty() {
            self.overflow.push_back(entry);
            return Ok(());
        }
        // SAFETY: the caller's guarantee, passed on.
        match unsafe { super::push(&mut self.ring, &entry) } {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::debug!("io_uring completion queue full; submissions wait for reaping");
                self.overflow.push_back(entry);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves entries held back by `EBUSY` into the ring, as far as the
    /// kernel takes them.
    pub fn flush_overflow(&mut self) -> io::Result<()> {
        while let Some(entry) = self.overflow.pop_front() {
            // SAFETY: these entries were accepted by `push`, whose caller
            // guaranteed that their memory stays put until completion.
            match unsafe { super::push(&mut self.ring, &entry) } {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.overflow.push_front(entry);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Submits what is queued and runs the ring's deferred work when the
    /// kernel flagged some, without waiting. Interruptions are not errors.
    pub fn submit_now(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Arms (`true`) or disarms the eventfd this ring signals when work
    /// for it arrives (`IORING_CQ_EVENTFD_DISABLED`, Linux 5.8+).
    pub fn signal_work(&mut self, on: bool) {
        let cq = self.ring.completion();
        if on {
            cq.enable_eventfd();
        } else {
            cq.disable_eventfd();
        }
    }

    /// Whether the thread has anything to do for this ring: completions
    /// to reap, or a reason to enter it ([`Unit::needs_enter`]).
    pub fn has_work(&mut self) -> bool {
        !self.ring.completion().is_empty() || self.needs_enter()
    }

    /// Whether the kernel holds deferred completions for this ring, or
    /// submissions wait to be handed over.
    pub fn needs_enter(&mut self) -> bool {
        let sq = self.ring.submission();
        !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
    }
}
