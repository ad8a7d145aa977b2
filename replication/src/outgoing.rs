//! Messages leaving this broker for its peers: what the node emits
//! ([`Outgoing`]) and what the transport reports it could not send
//! ([`Dropped`]).
//!
//! Both sides speak these types and neither depends on the other: the
//! node hands `Outgoing`s to whatever carries them and learns of drops
//! through `Dropped`s; the transport sends the one and reports the other.
//! A message is dropped, never queued without bound, when its peer is
//! unknown or far behind, as Raft expects of a lossy network.

use raft::eraftpb::Message;

use crate::ids::{BrokerId, GroupId};

/// A message for another broker.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The broker it is for.
    pub to: BrokerId,
    /// The group it belongs to.
    pub group: GroupId,
    /// The Raft message.
    pub message: Message,
    /// Where its entries lie in this broker's segment files, once written
    /// there ([`Node::attach_file_spans`]): a sender may send them from the
    /// files rather than from memory. Empty for none.
    ///
    /// [`Node::attach_file_spans`]: crate::node::Node::attach_file_spans
    pub spans: crate::wire::EntrySpans,
}

/// A message that could not be queued (its peer is unknown or far behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The group it belonged to.
    pub group: GroupId,
    /// The peer it was for.
    pub to: BrokerId,
    /// Whether it carried a snapshot.
    pub snapshot: bool,
}
