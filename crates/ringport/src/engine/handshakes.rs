//! The handshake part: a shard's handshake places, the clients waiting for
//! one, the connections in a transport handshake (checked at the tick
//! against their deadline), and the plaintext scratch buffer of a receive
//! through a transport. `handshake.rs` coordinates it with the connection
//! table and the transports (see its docs for the rules).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::scratch::Scratch;

/// A shard's bookkeeping of handshakes (see the module docs).
pub(crate) struct Handshakes {
    /// Plaintext of the receive being handled.
    scratch: Scratch,
    /// Connections in their transport's handshake: (slot, generation).
    pending: VecDeque<(u32, u32)>,
    /// Handshake places taken, and how many there are.
    in_progress: usize,
    places: usize,
    /// Accepted clients waiting (unread, state `Waiting`, no transport
    /// state yet) for a place, in arrival order.
    waiting: VecDeque<Waiting>,
}

/// A client waiting for a handshake place: its transport is made when it
/// gets one (as of its accept, so its deadline still runs from then).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Waiting {
    pub slot: u32,
    pub peer: SocketAddr,
    pub accepted: Instant,
    pub deadline: Option<Instant>,
}

impl Handshakes {
    /// `places` handshake places (at least 1).
    pub fn new(places: usize) -> Self {
        Handshakes {
            scratch: Scratch::default(),
            pending: VecDeque::new(),
            in_progress: 0,
            places: places.max(1),
            waiting: VecDeque::new(),
        }
    }

    /// Whether a handshake place is free.
    pub fn place_free(&self) -> bool {
        self.in_progress < self.places
    }

    /// A handshake place is taken (outbound connections take one without
    /// waiting, so the count may pass the places).
    pub fn enter(&mut self) {
        self.in_progress += 1;
    }

    /// A handshake place is given back.
    pub fn leave(&mut self) {
        self.in_progress = self.in_progress.saturating_sub(1);
    }

    /// A client waits for a place; returns how many wait.
    pub fn wait(&mut self, client: Waiting) -> usize {
        self.waiting.push_back(client);
        self.waiting.len()
    }

    /// The client waiting longest, if any (it stays waiting).
    pub fn first_waiting(&self) -> Option<&Waiting> {
        self.waiting.front()
    }

    /// Takes the client waiting longest, if any.
    pub fn next_waiting(&mut self) -> Option<Waiting> {
        self.waiting.pop_front()
    }

    /// Clients waiting for a place.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The connection of `generation` in `slot` started its transport's
    /// handshake.
    pub fn track(&mut self, slot: usize, generation: u32) {
        self.pending.push_back((slot as u32, generation));
    }

    /// The connections in a transport handshake, to check against their
    /// deadlines; give back those still in it with [`Self::keep_tracking`].
    pub fn take_tracked(&mut self) -> VecDeque<(u32, u32)> {
        std::mem::take(&mut self.pending)
    }

    /// Gives back the connections still in their handshake, ahead of any
    /// tracked meanwhile.
    pub fn keep_tracking(&mut self, mut still: VecDeque<(u32, u32)>) {
        still.append(&mut self.pending);
        self.pending = still;
    }

    /// The plaintext scratch buffer, empty.
    pub fn take_scratch(&mut self) -> Vec<u8> {
        self.scratch.take()
    }

    /// Gives the scratch buffer back ([`Scratch::put`]).
    pub fn put_scratch(&mut self, plain: Vec<u8>) {
        self.scratch.put(plain);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::virtual_t0;
    use super::*;

    fn client(slot: u32, accepted: Instant) -> Waiting {
        Waiting {
            slot,
            peer: SocketAddr::from(([127, 0, 0, 1], 1000 + slot as u16)),
            accepted,
            deadline: None,
        }
    }

    #[test]
    fn places_are_taken_and_given_back() {
        let mut h = Handshakes::new(2);
        assert!(h.place_free());
        h.enter();
        h.enter();
        assert!(!h.place_free());
        h.leave();
        assert!(h.place_free());
        h.leave();
        h.leave();
        h.enter();
        h.enter();
        assert!(!h.place_free(), "a surplus leave does not add a place");
        assert!(Handshakes::new(0).place_free(), "at least one place");
    }

    #[test]
    fn waiting_clients_come_out_in_arrival_order() {
        let (mut h, t0) = (Handshakes::new(1), virtual_t0());
        assert_eq!(h.wait(client(5, t0)), 1);
        assert_eq!(h.wait(client(2, t0)), 2);
        assert_eq!(h.first_waiting().map(|w| w.slot), Some(5));
        assert_eq!(h.next_waiting(), Some(client(5, t0)));
        assert_eq!(h.waiting(), 1);
        assert_eq!(h.next_waiting(), Some(client(2, t0)));
        assert_eq!(h.next_waiting(), None);
    }

    #[test]
    fn tracked_handshakes_given_back_stay_ahead_of_new_ones() {
        let mut h = Handshakes::new(1);
        h.track(1, 10);
        h.track(2, 20);
        let mut tracked = h.take_tracked();
        assert_eq!(tracked.len(), 2);
        tracked.retain(|&(slot, _)| slot != 1);
        h.track(3, 30);
        h.keep_tracking(tracked);
        assert_eq!(Vec::from(h.take_tracked()), vec![(2, 20), (3, 30)]);
    }
}
