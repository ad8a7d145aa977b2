//! What the transport sees of each peer being alive, for the groups that
//! hibernate (see `node::hibernate`): when its last frame arrived, whether
//! a connection to it is open, and whether this broker is behind reading
//! it (then its silence says nothing of it). Every live peer sends at
//! least a beacon frame a tick ([`super::Transport::beacon`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::ids::BrokerId;

/// What the transport sees of one peer being alive, shared by its
/// connection's reader and [`super::Transport::liveness`]. Times are ms since
/// the transport started.
#[derive(Debug)]
pub(super) struct Liveness {
    pub(super) epoch: std::time::Instant,
    /// When the last frame from the peer arrived.
    pub(super) last_frame_ms: AtomicU64,
    /// Connections to the peer being read (a new one may start before the
    /// old one's reader ends).
    pub(super) connections: AtomicU32,
    /// When `connections` last went to or from zero.
    pub(super) changed_ms: AtomicU64,
    /// Connections to the peer opened so far: one more than last seen is a
    /// reconnection, however briefly it was closed (a broker restarted
    /// faster than it could be found down).
    pub(super) opened: AtomicU64,
    /// Readers of the peer's connections waiting on this broker (for the
    /// inbound budget or queue): this broker is behind, which says
    /// nothing of the peer.
    pub(super) backlogged: AtomicU32,
}

impl Liveness {
    /// A peer known from now on: silent since now, not since `epoch` (a
    /// peer added long after the transport started is not down at once).
    pub(super) fn new(epoch: std::time::Instant) -> Liveness {
        let now = epoch.elapsed().as_millis() as u64;
        Liveness {
            epoch,
            last_frame_ms: AtomicU64::new(now),
            connections: AtomicU32::new(0),
            changed_ms: AtomicU64::new(now),
            opened: AtomicU64::new(0),
            backlogged: AtomicU32::new(0),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A connection opened. The peer counts as heard from only once a
    /// frame arrives on it: a broker whose runtime accepts connections
    /// while its Raft thread is stuck is not up.
    pub(super) fn connected(&self) {
        let now = self.now_ms();
        self.opened.fetch_add(1, Ordering::AcqRel);
        if self.connections.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed_ms.store(now, Ordering::Relaxed);
        }
    }

    pub(super) fn disconnected(&self) {
        if self.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }
}

/// One peer's liveness as the transport sees it ([`super::Transport::liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLiveness {
    /// The peer.
    pub peer: BrokerId,
    /// Whether a connection to it is open.
    pub connected: bool,
    /// Since the connection opened or closed, ms.
    pub since_change_ms: u64,
    /// Since its last frame arrived, ms (every live peer sends one per
    /// [`super::Transport::beacon`] at least).
    pub silent_ms: u64,
    /// Whether this broker is behind reading it (its silence says nothing
    /// then).
    pub backlogged: bool,
    /// Connections to it opened so far (see [`Liveness::opened`]).
    pub connections_opened: u64,
}

/// A reader waiting on this broker with a peer's frame: counted in the
/// peer's [`Liveness::backlogged`] until dropped, when the frame counts as
/// just heard.
pub(super) struct Backlogged<'a>(&'a Liveness);

impl<'a> Backlogged<'a> {
    pub(super) fn new(live: &'a Liveness) -> Backlogged<'a> {
        live.backlogged.fetch_add(1, Ordering::AcqRel);
        Backlogged(live)
    }
}

impl Drop for Backlogged<'_> {
    fn drop(&mut self) {
        let live = self.0;
        live.last_frame_ms.store(live.now_ms(), Ordering::Relaxed);
        live.backlogged.fetch_sub(1, Ordering::AcqRel);
    }
}
