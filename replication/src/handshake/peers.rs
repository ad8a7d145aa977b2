//! The two ends of a handshake ([`End`]), what one learns of the other
//! ([`Met`]), and what a broker remembers of its peers' incarnations
//! ([`PeerBook`]). A peer of another cluster is refused here, by either
//! end; one that has not learnt its cluster yet meets any.

use super::{ClusterSecret, HandshakeError};
use crate::ids::{BrokerId, ClusterId, Incarnation};

/// What a broker remembers of its peers' incarnations, and learns of them
/// as they connect. The broker keeps it on disk; tests keep it in memory
/// ([`MemoryPeerBook`]).
pub trait PeerBook: Send + Sync + std::fmt::Debug + 'static {
    /// The incarnation last seen of `peer` ([`Incarnation::UNKNOWN`]:
    /// never seen).
    fn known(&self, peer: BrokerId) -> Incarnation;
    /// A peer passed the handshake: called before any of its frames is
    /// handed on, so what it learns (for instance that the peer knew this
    /// broker in an earlier life) is in force for the peer's first
    /// message.
    fn met(&self, met: &Met);
}

/// A [`PeerBook`] in memory: what it was told, forgotten with it (a
/// broker keeps one behind its file).
#[derive(Debug, Default)]
pub struct MemoryPeerBook {
    /// Incarnations seen, by peer. Guards the map only.
    seen: std::sync::Mutex<std::collections::BTreeMap<BrokerId, Incarnation>>,
}

impl MemoryPeerBook {
    /// A book that already knows `seen`.
    pub fn with(seen: std::collections::BTreeMap<BrokerId, Incarnation>) -> MemoryPeerBook {
        MemoryPeerBook {
            seen: std::sync::Mutex::new(seen),
        }
    }

    /// Records `peer`'s incarnation; returns the one recorded before.
    pub fn remember(&self, peer: BrokerId, incarnation: Incarnation) -> Option<Incarnation> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, incarnation)
    }

    /// Every incarnation recorded, by peer.
    pub fn all(&self) -> std::collections::BTreeMap<BrokerId, Incarnation> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl PeerBook for MemoryPeerBook {
    fn known(&self, peer: BrokerId) -> Incarnation {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
            .unwrap_or(Incarnation::UNKNOWN)
    }

    fn met(&self, met: &Met) {
        self.remember(met.peer.id, met.peer.incarnation);
    }
}

/// How a broker shows itself to its peers: the secret it proves, its
/// incarnation, and what it remembers of them.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// This broker's incarnation.
    pub incarnation: Incarnation,
    /// Its cluster's id, once learnt (set once, by whoever learns it).
    pub cluster: std::sync::Arc<std::sync::OnceLock<ClusterId>>,
    /// What it remembers of its peers.
    pub book: std::sync::Arc<dyn PeerBook>,
}

impl PeerIdentity {
    /// How broker `id` shows itself in a handshake starting now.
    pub fn end(&self, id: BrokerId) -> End {
        End {
            id,
            incarnation: self.incarnation,
            cluster: self.cluster.get().copied().unwrap_or(ClusterId::UNKNOWN),
        }
    }
}

/// One end of a handshake: a broker and the life of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The broker.
    pub id: BrokerId,
    /// Its data directory's incarnation.
    pub incarnation: Incarnation,
    /// Its cluster ([`ClusterId::UNKNOWN`]: not learnt yet).
    pub cluster: ClusterId,
}

impl End {
    /// Refuses a peer of another cluster; one that has not learnt its
    /// cluster yet, or a broker that has not, meets any.
    pub(super) fn check_cluster(&self, theirs: ClusterId) -> Result<(), HandshakeError> {
        if self.cluster.is_known() && theirs.is_known() && self.cluster != theirs {
            return Err(HandshakeError::OtherCluster {
                mine: self.cluster,
                theirs,
            });
        }
        Ok(())
    }
}

/// What a handshake tells one side about the other, authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Met {
    /// The other broker and its incarnation.
    pub peer: End,
    /// This broker's incarnation as the other last saw it
    /// ([`Incarnation::UNKNOWN`]: never).
    pub knew_me_as: Incarnation,
}
