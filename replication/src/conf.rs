//! Membership changes of a group: rill's own description of a raft-rs
//! `ConfChangeV2`, the byte layout a conf-change entry carries it in, and
//! the membership each change leads to.
//!
//! rill moves a replica in four kinds of step, each one entry:
//! [`MembershipChange::AddLearner`] (a new replica receives the log but
//! does not vote), [`MembershipChange::EnterJoint`] (voters swapped by
//! joint consensus: from then on every decision needs a majority of the
//! old voters and of the new), [`MembershipChange::LeaveJoint`] (the new
//! voters alone), and [`MembershipChange::RemoveLearner`] (a move
//! cancelled before the swap). Only raft-rs's explicit transition is used:
//! rill proposes the leave itself, from whichever replica leads then,
//! instead of raft-rs appending it on the leader that applied the enter.
//!
//! A conf-change entry holds the change twice: `context` in the layout
//! below, which is the only form rill ever decodes, and `data`, raft-rs's
//! protobuf of the same change, which raft-rs parses on the leader that
//! proposes it. A replica that receives such an entry decodes the context
//! and checks that `data` is exactly what encoding it gives
//! ([`check_entry`]): protobuf from the network is compared, never parsed.
//!
//! # Context layout (little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 add learner, 2 remove learner, 3 enter joint, 4 leave joint |
//! | 1 | 1 | `a`: ids added (1 for a learner change, the voters added when entering joint, else 0) |
//! | 2 | 1 | `r`: voters removed (entering joint only, else 0) |
//! | 3 | 8 × (a + r) | the ids added, then the ids removed |
//!
//! At most [`CHANGE_IDS_MAX`] ids in all, checked before anything is
//! allocated; nothing may follow them.

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use crate::ids::BrokerId;
use crate::state::Membership;

/// Most broker ids one change names (added and removed together).
pub const CHANGE_IDS_MAX: usize = 16;

const KIND_ADD_LEARNER: u8 = 1;
const KIND_REMOVE_LEARNER: u8 = 2;
const KIND_ENTER_JOINT: u8 = 3;
const KIND_LEAVE_JOINT: u8 = 4;

/// One step of a membership change, as rill proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds a learner: it receives every entry but neither votes nor
    /// counts for a commit.
    AddLearner(BrokerId),
    /// Removes a learner (a move cancelled before its voters changed).
    RemoveLearner(BrokerId),
    /// Enters the joint configuration of the voters now and the voters
    /// with `add` (learners now) and without `remove`.
    EnterJoint {
        /// Learners that become voters.
        add: Vec<BrokerId>,
        /// Voters that leave.
        remove: Vec<BrokerId>,
    },
    /// Leaves the joint configuration: the new voters alone decide.
    LeaveJoint,
}

/// Why a change or its encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// The context bytes do not hold a change in rill's layout.
    #[error("conf change context: {0}")]
    Malformed(&'static str),
    /// The entry's raft-rs data is not the encoding of its context.
    #[error("conf change data does not match its context")]
    DataMismatch,
    /// The change cannot apply to the membership it was given.
    #[error("conf change {change:?} does not apply to {membership:?}: {why}")]
    DoesNotApply {
        /// The change.
        change: MembershipChange,
        /// The membership it met.
        membership: Box<Membership>,
        /// Why not.
        why: &'static str,
    },
}

impl MembershipChange {
    /// The context bytes of this change (see the module's layout).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, added, removed): (u8, &[BrokerId], &[BrokerId]) = match self {
            MembershipChange::AddLearner(b) => (KIND_ADD_LEARNER, std::slice::from_ref(b), &[]),
            MembershipChange::RemoveLearner(b) => {
                (KIND_REMOVE_LEARNER, std::slice::from_ref(b), &[])
            }
            MembershipChange::EnterJoint { add, remove } => (KIND_ENTER_JOINT, add, remove),
            MembershipChange::LeaveJoint => (KIND_LEAVE_JOINT, &[], &[]),
        };
        assert!(
            added.len() + removed.len() <= CHANGE_IDS_MAX,
            "a change names at most CHANGE_IDS_MAX brokers (checked by whoever builds it)"
        );
        let mut out = Vec::with_capacity(3 + 8 * (added.len() + removed.len()));
        out.push(kind);
        out.push(added.len() as u8);
        out.push(removed.len() as u8);
        for id in added.iter().chain(removed) {
            out.extend_from_slice(&id.get().to_le_bytes());
        }
        out
    }

    /// Decodes context bytes written by [`MembershipChange::encode`].
    pub fn decode(bytes: &[u8]) -> Result<MembershipChange, ConfError> {
        let [kind, added, removed, ids @ ..] = bytes else {
            return Err(ConfError::Malformed("shorter than its 3-byte header"));
        };
        let (added, removed) = (usize::from(*added), usize::from(*removed));
        if added + removed > CHANGE_IDS_MAX {
            return Err(ConfError::Malformed(
                "names more than CHANGE_IDS_MAX brokers",
            ));
        }
        if ids.len() != 8 * (added + removed) {
            return Err(ConfError::Malformed("length disagrees with its id counts"));
        }
        let mut all: Vec<BrokerId> = ids
            .chunks_exact(8)
            .map(|c| BrokerId(u64::from_le_bytes(c.try_into().expect("chunks of 8"))))
            .collect();
        if all.iter().any(|b| b.get() == 0) {
            return Err(ConfError::Malformed("broker id 0"));
        }
        let removed_ids = all.split_off(added);
        let one = |ids: &[BrokerId]| match (ids, removed) {
            ([b], 0) => Ok(*b),
            _ => Err(ConfError::Malformed(
                "a learner change names exactly one broker",
            )),
        };
        let change = match *kind {
            KIND_ADD_LEARNER => MembershipChange::AddLearner(one(&all)?),
            KIND_REMOVE_LEARNER => MembershipChange::RemoveLearner(one(&all)?),
            KIND_ENTER_JOINT => {
                if all.is_empty() && removed_ids.is_empty() {
                    return Err(ConfError::Malformed("entering joint changes nothing"));
                }
                MembershipChange::EnterJoint {
                    add: all,
                    remove: removed_ids,
                }
            }
            KIND_LEAVE_JOINT if all.is_empty() && removed_ids.is_empty() => {
                MembershipChange::LeaveJoint
            }
            KIND_LEAVE_JOINT => return Err(ConfError::Malformed("leaving joint names brokers")),
            _ => return Err(ConfError::Malformed("unknown kind")),
        };
        Ok(change)
    }

    /// The same change as raft-rs's type, to propose and to apply.
    pub fn to_raft(&self) -> ConfChangeV2 {
        let single = |id: BrokerId, ty: ConfChangeType| {
            let mut s = ConfChangeSingle {
                node_id: id.get(),
                ..ConfChangeSingle::default()
            };
            s.set_change_type(ty);
            s
        };
        let mut cc = ConfChangeV2::default();
        match self {
            MembershipChange::AddLearner(b) => {
                cc.mut_changes()
                    .push(single(*b, ConfChangeType::AddLearnerNode));
            }
            MembershipChange::RemoveLearner(b) => {
                cc.mut_changes()
                    .push(single(*b, ConfChangeType::RemoveNode));
            }
            MembershipChange::EnterJoint { add, remove } => {
                cc.set_transition(ConfChangeTransition::Explicit);
                for b in add {
                    cc.mut_changes().push(single(*b, ConfChangeType::AddNode));
                }
                for b in remove {
                    cc.mut_changes()
                        .push(single(*b, ConfChangeType::RemoveNode));
                }
            }
            MembershipChange::LeaveJoint => {}
        }
        cc
    }

    /// raft-rs's encoding of [`MembershipChange::to_raft`]: the `data` of
    /// the entry that proposes this change.
    pub fn raft_data(&self) -> Vec<u8> {
        use protobuf::Message as _;
        self.to_raft()
            .write_to_bytes()
            .expect("encoding a ConfChangeV2 into memory cannot fail")
    }
}

/// Checks a conf-change entry that came from a peer or from disk: its
/// `context` must decode and its `data` must be exactly raft-rs's encoding
/// of it. Returns the change.
pub fn check_entry(data: &[u8], context: &[u8]) -> Result<MembershipChange, ConfError> {
    let change = MembershipChange::decode(context)?;
    if change.raft_data() != data {
        return Err(ConfError::DataMismatch);
    }
    Ok(change)
}

impl Membership {
    /// Whether the group is in a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `b` is a member in any role.
    pub fn contains(&self, b: BrokerId) -> bool {
        self.voters.contains(&b)
            || self.learners.contains(&b)
            || self.voters_outgoing.contains(&b)
            || self.learners_next.contains(&b)
    }

    /// Whether `b` votes (in either half of a joint configuration).
    pub fn is_voter(&self, b: BrokerId) -> bool {
        self.voters.contains(&b) || self.voters_outgoing.contains(&b)
    }

    /// The same membership with every list sorted: raft-rs lists members
    /// in no particular order, so memberships compare in this form.
    pub fn normalized(&self) -> Membership {
        let sorted = |l: &[BrokerId]| {
            let mut v = l.to_vec();
            v.sort_unstable();
            v
        };
        Membership {
            voters: sorted(&self.voters),
            learners: sorted(&self.learners),
            voters_outgoing: sorted(&self.voters_outgoing),
            learners_next: sorted(&self.learners_next),
            auto_leave: self.auto_leave,
        }
    }

    /// Whether this is a membership rill can be in: voters; no broker
    /// twice in a list; learners never voters; next learners only among
    /// the outgoing voters, and only while joint; never raft-rs's
    /// automatic leave (rill leaves joint configurations itself).
    pub fn is_valid(&self) -> bool {
        let distinct = |l: &[BrokerId]| {
            let mut v = l.to_vec();
            v.sort_unstable();
            v.windows(2).all(|w| w[0] != w[1]) && v.iter().all(|b| b.get() != 0)
        };
        !self.voters.is_empty()
            && !self.auto_leave
            && distinct(&self.voters)
            && distinct(&self.learners)
            && distinct(&self.voters_outgoing)
            && distinct(&self.learners_next)
            && self.learners.iter().all(|b| !self.is_voter(*b))
            && self
                .learners_next
                .iter()
                .all(|b| self.voters_outgoing.contains(b) && !self.voters.contains(b))
            && (self.is_joint() || self.learners_next.is_empty())
    }

    /// The membership after `change`, as raft-rs computes it, or why the
    /// change does not apply. Stricter than raft-rs where rill never goes:
    /// a learner is only added as a broker not yet a member, and a voter
    /// is only ever removed, never made a learner.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, ConfError> {
        let refuse = |why| ConfError::DoesNotApply {
            change: change.clone(),
            membership: Box::new(self.clone()),
            why,
        };
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(b) => {
                if self.is_joint() {
                    return Err(refuse("joint: leave it first"));
                }
                if self.contains(*b) {
                    return Err(refuse("already a member"));
                }
                next.learners.push(*b);
            }
            MembershipChange::RemoveLearner(b) => {
                if self.is_joint() {
                    return Err(refuse("joint: leave it first"));
                }
                if !self.learners.contains(b) {
                    return Err(refuse("not a learner"));
                }
                next.learners.retain(|l| l != b);
            }
            MembershipChange::EnterJoint { add, remove } => {
                if self.is_joint() {
                    return Err(refuse("joint already"));
                }
                if add.iter().any(|b| !self.learners.contains(b)) {
                    return Err(refuse("a voter added is not a learner"));
                }
                if remove.iter().any(|b| !self.voters.contains(b)) {
                    return Err(refuse("a voter removed is not a voter"));
                }
                let all: Vec<BrokerId> = add.iter().chain(remove).copied().collect();
                let mut sorted = all.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != all.len() {
                    return Err(refuse("a broker named twice"));
                }
                next.voters_outgoing = self.voters.clone();
                next.voters.retain(|v| !remove.contains(v));
                next.voters.extend(add.iter().copied());
                next.learners.retain(|l| !add.contains(l));
                if next.voters.is_empty() {
                    return Err(refuse("no voter left"));
                }
            }
            MembershipChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err(refuse("not joint"));
                }
                next.voters_outgoing.clear();
                let promoted = std::mem::take(&mut next.learners_next);
                next.learners.extend(promoted);
            }
        }
        debug_assert!(
            next.is_valid() || !self.is_valid(),
            "a valid membership stays valid"
        );
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(v: &[u64]) -> Vec<BrokerId> {
        v.iter().map(|&b| BrokerId(b)).collect()
    }

    #[test]
    fn the_context_layout_is_pinned() {
        assert_eq!(
            MembershipChange::AddLearner(BrokerId(4)).encode(),
            [1, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            MembershipChange::RemoveLearner(BrokerId(0x0102)).encode(),
            [2, 1, 0, 2, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            MembershipChange::EnterJoint {
                add: ids(&[4]),
                remove: ids(&[3]),
            }
            .encode(),
            [3, 1, 1, 4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(MembershipChange::LeaveJoint.encode(), [4, 0, 0]);
    }

    #[test]
    fn malformed_contexts_are_refused_before_allocating() {
        for bad in [
            &[][..],
            &[1, 1],
            &[9, 0, 0],
            &[4, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            &[1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 1, 0, 1, 0, 0],
            &[3, 0, 0],
            &[3, 200, 200],
        ] {
            assert!(MembershipChange::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_entry_whose_data_is_not_its_contexts_encoding_is_refused() {
        let add = MembershipChange::AddLearner(BrokerId(4));
        assert_eq!(
            check_entry(&add.raft_data(), &add.encode()),
            Ok(add.clone())
        );
        let other = MembershipChange::AddLearner(BrokerId(5));
        assert_eq!(
            check_entry(&other.raft_data(), &add.encode()),
            Err(ConfError::DataMismatch)
        );
        assert_eq!(
            check_entry(b"", &MembershipChange::LeaveJoint.encode()),
            Ok(MembershipChange::LeaveJoint),
            "raft-rs encodes the empty change as no bytes"
        );
    }

    #[test]
    fn a_move_goes_learner_joint_then_the_new_voters() {
        let start = Membership::voters(ids(&[1, 2, 3]));
        let learning = start
            .apply(&MembershipChange::AddLearner(BrokerId(4)))
            .unwrap();
        assert_eq!(learning.learners, ids(&[4]));
        let joint = learning
            .apply(&MembershipChange::EnterJoint {
                add: ids(&[4]),
                remove: ids(&[3]),
            })
            .unwrap();
        assert_eq!(joint.normalized().voters, ids(&[1, 2, 4]));
        assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
        assert!(joint.learners.is_empty() && joint.is_valid() && joint.is_voter(BrokerId(3)));
        let done = joint.apply(&MembershipChange::LeaveJoint).unwrap();
        assert_eq!(done.normalized(), Membership::voters(ids(&[1, 2, 4])));
        // Steps out of order are refused.
        assert!(start.apply(&MembershipChange::LeaveJoint).is_err());
        assert!(
            joint
                .apply(&MembershipChange::AddLearner(BrokerId(5)))
                .is_err()
        );
        assert!(
            start
                .apply(&MembershipChange::EnterJoint {
                    add: ids(&[4]),
                    remove: vec![]
                })
                .is_err(),
            "a voter is added only once it learned the log"
        );
    }

    /// A random step, valid or not, among brokers 1 to 6.
    fn any_change() -> impl Strategy<Value = MembershipChange> {
        let id = (1u64..=6).prop_map(BrokerId);
        prop_oneof![
            id.clone().prop_map(MembershipChange::AddLearner),
            id.clone().prop_map(MembershipChange::RemoveLearner),
            (
                proptest::collection::vec(id.clone(), 0..3),
                proptest::collection::vec(id, 0..3)
            )
                .prop_map(|(add, remove)| MembershipChange::EnterJoint { add, remove }),
            Just(MembershipChange::LeaveJoint),
        ]
    }

    proptest! {
        /// Every change `Membership::apply` accepts, raft-rs applies to
        /// the same membership; and every change context round-trips.
        #[test]
        fn apply_agrees_with_raft_rs(changes in proptest::collection::vec(any_change(), 1..24)) {
            let start = Membership::voters(ids(&[1, 2, 3]));
            let storage = raft::storage::MemStorage::new_with_conf_state(start.to_raft());
            let config = raft::Config { id: 1, ..raft::Config::default() };
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let mut raw = raft::RawNode::new(&config, storage, &logger).unwrap();
            let mut ours = start;
            for change in changes {
                if let MembershipChange::EnterJoint { add, remove } = &change
                    && add.len() + remove.len() == 0
                {
                    continue;
                }
                prop_assert_eq!(MembershipChange::decode(&change.encode()).unwrap(), change.clone());
                let Ok(next) = ours.apply(&change) else { continue };
                let theirs = raw.apply_conf_change(&change.to_raft()).unwrap();
                prop_assert_eq!(Membership::from_raft(&theirs).normalized(), next.normalized());
                prop_assert!(next.is_valid());
                ours = next;
            }
        }
    }
}
