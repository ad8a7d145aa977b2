//! Proposals a broker asks a group's leader to make on its behalf, over the
//! authenticated peer connection (the controller's broker registrations).
//!
//! They travel as raft-rs's `MsgPropose`, but the leader never steps one
//! into raft-rs ([`crate::Node::step`] refuses it): raft-rs would append
//! whatever a peer sent. The leader's broker reads the data with
//! [`forwarded_data`], checks what it asks for and who asks, and proposes
//! it itself through the path its own requests take.

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};

use crate::ids::{BrokerId, GroupId};
use crate::outgoing::Outgoing;

/// Entries one forwarded proposal may carry, at most.
pub const FORWARDED_ENTRIES_MAX: usize = 1;

/// Asks `leader`, the leader of `group`, to propose `data` for broker `me`.
pub fn forward_proposal(me: BrokerId, leader: BrokerId, group: GroupId, data: Bytes) -> Outgoing {
    let mut message = Message {
        from: me.get(),
        to: leader.get(),
        ..Message::default()
    };
    message.set_msg_type(MessageType::MsgPropose);
    message.set_entries(
        vec![Entry {
            data,
            ..Entry::default()
        }]
        .into(),
    );
    Outgoing {
        to: leader,
        group,
        message,
        spans: Vec::new(),
    }
}

/// The data a peer asks this broker to propose, when `message` is such a
/// request ([`forward_proposal`]) with at most [`FORWARDED_ENTRIES_MAX`]
/// entries; `None` for any other message.
pub fn forwarded_data(message: &Message) -> Option<Vec<Bytes>> {
    (message.get_msg_type() == MessageType::MsgPropose
        && message.get_entries().len() <= FORWARDED_ENTRIES_MAX)
        .then(|| {
            message
                .get_entries()
                .iter()
                .map(|e| e.data.clone())
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_proposal_carries_its_data_and_nothing_else_is_one() {
        let out = forward_proposal(BrokerId(2), BrokerId(1), GroupId(0), Bytes::from("x"));
        assert_eq!((out.to, out.group), (BrokerId(1), GroupId(0)));
        assert_eq!(forwarded_data(&out.message), Some(vec![Bytes::from("x")]));
        let mut append = out.message.clone();
        append.set_msg_type(MessageType::MsgAppend);
        assert_eq!(forwarded_data(&append), None);
        let mut two = out.message;
        two.mut_entries().push(Entry::default());
        assert_eq!(forwarded_data(&two), None, "more entries than allowed");
    }
}
