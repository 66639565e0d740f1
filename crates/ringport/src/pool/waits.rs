//! The table of registered waits: a slab indexed by the epoll user data.
//!
//! Each wait owns a duplicate of its source's descriptor (`reg`), and that
//! duplicate is what is registered with epoll: epoll keys registrations by
//! (file, descriptor number), so two waits on clones of one [`EventObject`]
//! (one shared descriptor) or on `dup`s of one file never collide, and
//! `EPOLL_CTL_DEL` always names a descriptor the wait still holds open.
//!
//! [`EventObject`]: super::Event

use std::os::fd::{AsFd, OwnedFd};

use super::wheel::NIL;

/// A type-erased wait: its source and callback.
pub(super) trait WaitObj<S>: Send {
    /// Runs the callback with the worker's state and the source.
    fn fire(&mut self, state: &mut S);
}

/// A wait's source and callback.
pub(super) struct WaitItem<F, C> {
    pub source: F,
    pub callback: C,
}

impl<S, F, C> WaitObj<S> for WaitItem<F, C>
where
    F: AsFd + Send,
    C: FnMut(&mut S, &F) + Send,
{
    fn fire(&mut self, state: &mut S) {
        (self.callback)(state, &self.source)
    }
}

/// How a wait is registered with epoll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaitKind {
    /// Level-triggered one-shot; re-armed with `EPOLL_CTL_MOD` after each
    /// callback (any descriptor; a manual-reset event with `Once`).
    Level,
    /// As `Level`, and the dispatcher reads the eventfd before queuing the
    /// callback (an auto-reset [`EventObject`](super::Event)): the wait consumes
    /// the signal, and a wait that finds it already consumed by another
    /// wait does not fire.
    AutoEvent,
    /// Edge-triggered, never one-shot (a manual-reset event with `Repeat`):
    /// one event per set edge. An edge that arrives while the callback is
    /// running sets `pending`, and the callback runs once more.
    Edge,
}

impl WaitKind {
    /// The epoll interest for this kind.
    pub fn events(self) -> u32 {
        match self {
            WaitKind::Level | WaitKind::AutoEvent => (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
            WaitKind::Edge => (libc::EPOLLIN | libc::EPOLLET) as u32,
        }
    }
}

/// Where a wait is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaitState {
    Vacant,
    /// Registered, waiting for readiness; `obj` is here.
    Armed,
    /// Ready: its callback is in the work queue (`obj` is in the job).
    Queued,
    /// A repeating wait's callback is running (`obj` is on the worker).
    Running,
}

pub(super) struct WaitEntry<S> {
    pub id: u64,
    /// The descriptor registered with epoll (a dup of the source's).
    pub reg: Option<OwnedFd>,
    pub obj: Option<Box<dyn WaitObj<S>>>,
    pub kind: WaitKind,
    pub repeat: bool,
    pub state: WaitState,
    pub cancelled: bool,
    pub pending: bool,
    next_free: u32,
}

/// What a freed entry held, to be dropped after the lock is released (a
/// source's or callback's `Drop` may call back into the pool).
pub(super) type Freed<S> = (Option<OwnedFd>, Option<Box<dyn WaitObj<S>>>);

pub(super) struct WaitTable<S> {
    entries: Vec<WaitEntry<S>>,
    free: u32,
    live: usize,
    next_id: u64,
    /// Set at shutdown: no new waits, no re-arming.
    pub closed: bool,
    pub fired: u64,
    pub cancelled: u64,
}

impl<S> WaitTable<S> {
    pub fn new() -> Self {
        WaitTable {
            entries: Vec::new(),
            free: NIL,
            live: 0,
            next_id: 1,
            closed: false,
            fired: 0,
            cancelled: 0,
        }
    }

    /// Waits alive (armed, queued or running).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Adds an armed wait; returns its index and id.
    pub fn insert(
        &mut self,
        reg: OwnedFd,
        obj: Box<dyn WaitObj<S>>,
        kind: WaitKind,
        repeat: bool,
    ) -> (u32, u64) {
        let id = self.next_id;
        self.next_id += 1;
        let entry = WaitEntry {
            id,
            reg: Some(reg),
            obj: Some(obj),
            kind,
            repeat,
            state: WaitState::Armed,
            cancelled: false,
            pending: false,
            next_free: NIL,
        };
        let index = if self.free != NIL {
            let index = self.free;
            self.free = self.entries[index as usize].next_free;
            self.entries[index as usize] = entry;
            index
        } else {
            assert!(self.entries.len() < NIL as usize, "too many waits");
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        };
        self.live += 1;
        (index, id)
    }

    /// The entry at `index` if it still holds wait `id`.
    pub fn get_mut(&mut self, index: u32, id: u64) -> Option<&mut WaitEntry<S>> {
        self.entries
            .get_mut(index as usize)
            .filter(|e| e.id == id && e.state != WaitState::Vacant)
    }

    /// The entry at `index` whose id's low 32 bits are `tag` (epoll data).
    pub fn get_tagged(&mut self, index: u32, tag: u32) -> Option<&mut WaitEntry<S>> {
        self.entries
            .get_mut(index as usize)
            .filter(|e| e.id as u32 == tag && e.state != WaitState::Vacant)
    }

    /// Frees an entry (the caller has removed it from epoll), returning what
    /// it held.
    pub fn free(&mut self, index: u32) -> Freed<S> {
        let e = &mut self.entries[index as usize];
        debug_assert!(e.state != WaitState::Vacant);
        let freed = (e.reg.take(), e.obj.take());
        e.state = WaitState::Vacant;
        e.id = 0;
        e.next_free = self.free;
        self.free = index;
        self.live -= 1;
        if self.live == 0 && self.entries.len() > super::wheel::SHRINK_ABOVE {
            self.entries = Vec::new();
            self.free = NIL;
        }
        freed
    }

    /// Index and id of every armed entry (for shutdown).
    pub fn armed(&self) -> Vec<(u32, u64)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == WaitState::Armed)
            .map(|(i, e)| (i as u32, e.id))
            .collect()
    }
}
