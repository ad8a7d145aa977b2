//! Moving a partition's replicas: what the cluster image holds of a move
//! under way, the controller commands that start it, record its progress
//! and end it, and [`next_step`], the step the partition's leader takes
//! next, decided from the image and its group's state alone (no I/O).
//!
//! A move runs through the partition group's own membership changes
//! (`rill_replication::conf`), as Kafka's reassignment and Redpanda's
//! partition movement do, one step at a time, each proposed by whichever
//! replica leads the group then:
//!
//! 1. [`MetadataCommand::ReassignPartition`](crate::metadata::MetadataCommand)
//!    records the target replicas in the image.
//! 2. The leader adds each new replica as a learner, then records in the
//!    image where that replica starts ([`Seed`]: a Raft index and the
//!    membership as of it, both from the leader's applied state); the new
//!    broker opens its replica from the seed, so the membership changes at
//!    or below that index, already in the seed, are not applied twice as
//!    the log reaches it.
//! 3. Once every new learner has caught up (its match index within
//!    [`CAUGHT_UP_ENTRIES_MAX`] of the commit index), a leader that is
//!    itself leaving hands leadership to a caught-up replica that stays,
//!    then the voters are swapped by joint consensus: every decision needs
//!    a majority of the old voters and of the new until the joint
//!    configuration is left, so no acknowledged entry can be lost on the
//!    way (a leader that leaves steps down once the leave applies).
//! 4. With the voters the target, the image's replicas become the target
//!    and the membership as of the leave becomes the partition's origin,
//!    from which any later new replica of it (a broker that lost its disk)
//!    starts; each broker no longer placed on it removes its replica's
//!    files once the controller's commit saying so is durable.
//!
//! Every step is idempotent: a leader that fails at any point leaves the
//! membership and the image as they were, and the next leader reads the
//! next step from them.

use std::collections::BTreeMap;

use rill_client::protocol::ErrorCode;
use rill_replication::conf::MembershipChange;
use rill_replication::state::{MEMBERS_MAX, Membership};
use rill_replication::{BrokerId, GroupStatus};
use rill_storage::RaftIndex;
use serde::{Deserialize, Serialize};

use crate::metadata::{ClusterImage, Outcome, TopicImage};

/// Most replicas a partition may be moved to.
pub const TARGET_REPLICAS_MAX: usize = 8;

/// How far behind the commit index a new replica may still be when the
/// voters are swapped: its log need not be complete (the old voters'
/// majority keeps committing meanwhile), only close enough that the new
/// majority does not stall while it catches up.
pub const CAUGHT_UP_ENTRIES_MAX: u64 = 64;

/// Where a replica added to a running group starts: the Raft index of a
/// membership change and the membership as of it, which names the replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// The Raft index of the membership change `voters` and `learners`
    /// hold as of.
    pub index: u64,
    /// The voters then.
    pub voters: Vec<u64>,
    /// The learners then.
    pub learners: Vec<u64>,
}

impl Seed {
    /// The seed of a group's membership `m` as of `index`.
    pub fn of(m: &Membership, index: RaftIndex) -> Seed {
        let ids = |l: &[BrokerId]| {
            let mut v: Vec<u64> = l.iter().map(|b| b.get()).collect();
            v.sort_unstable();
            v
        };
        Seed {
            index: index.get(),
            voters: ids(&m.voters),
            learners: ids(&m.learners),
        }
    }

    /// The membership it describes.
    pub fn membership(&self) -> Membership {
        Membership {
            voters: self.voters.iter().copied().map(BrokerId).collect(),
            learners: self.learners.iter().copied().map(BrokerId).collect(),
            ..Membership::default()
        }
    }

    /// Why it cannot describe a group's membership naming `broker` after
    /// a change, if it cannot.
    fn check(&self, broker: BrokerId) -> Result<(), String> {
        let m = self.membership();
        if self.index == 0 {
            return Err("a seed at Raft index 0".into());
        }
        if m.member_count() > MEMBERS_MAX || !m.is_valid() || !m.contains(broker) {
            return Err(format!(
                "a seed membership {:?} / {:?} that is not valid or does not name broker {broker}",
                self.voters, self.learners
            ));
        }
        Ok(())
    }
}

/// A move under way: where the partition goes, and where each new replica
/// added so far starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reassignment {
    /// The replicas it moves to, the preferred leader first.
    pub target: Vec<BrokerId>,
    /// Each new replica added as a learner, and where it starts.
    pub seeds: BTreeMap<BrokerId, Seed>,
}

/// The membership and Raft index a new replica of partition `p` of `t`
/// starts from on broker `me`, or `None` when the partition is not placed
/// there: a replica of the placement starts from the partition's origin
/// (the first voters at index 0 until a move ends), a replica a move adds
/// from its seed.
pub fn placed_here(t: &TopicImage, p: u32, me: BrokerId) -> Option<(Membership, RaftIndex)> {
    let replicas = t.replicas.get(p as usize)?;
    if replicas.contains(&me) {
        return Some(match t.origins.get(&p) {
            Some(o) => (o.membership(), RaftIndex(o.index)),
            None => (Membership::voters(replicas.iter().copied()), RaftIndex(0)),
        });
    }
    let seed = t.moving.get(&p)?.seeds.get(&me)?;
    Some((seed.membership(), RaftIndex(seed.index)))
}

fn refused(code: ErrorCode, message: String) -> Outcome {
    Outcome::Refused(code, message)
}

/// The partition `partition` of topic `name`, or why there is none.
fn topic_partition<'a>(
    image: &'a ClusterImage,
    name: &str,
    partition: u32,
) -> Result<&'a TopicImage, Outcome> {
    match image.topics.get(name) {
        Some(t) if partition < t.partitions() => Ok(t),
        Some(t) => Err(refused(
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic {name:?} has {} partitions: there is no partition {partition}",
                t.partitions()
            ),
        )),
        None => Err(refused(
            ErrorCode::UnknownTopicOrPartition,
            format!("no topic {name:?}"),
        )),
    }
}

/// Partition `partition` of topic `name` and its move under way, or why
/// there is none.
fn moving_partition<'a>(
    image: &'a ClusterImage,
    name: &str,
    partition: u32,
) -> Result<(&'a TopicImage, &'a Reassignment), Outcome> {
    let t = topic_partition(image, name, partition)?;
    match t.moving.get(&partition) {
        Some(m) => Ok((t, m)),
        None => Err(refused(
            ErrorCode::InvalidRequest,
            format!("partition {name}/{partition} is not moving"),
        )),
    }
}

/// Checks a request to move partition `partition` of `name` to
/// `replicas`: distinct brokers of the cluster, at most
/// [`TARGET_REPLICAS_MAX`], and no other move of it under way (the same
/// one again is accepted and changes nothing).
pub fn check_reassign(
    image: &ClusterImage,
    name: &str,
    partition: u32,
    replicas: &[u64],
) -> Outcome {
    let t = match topic_partition(image, name, partition) {
        Ok(t) => t,
        Err(o) => return o,
    };
    if replicas.is_empty() || replicas.len() > TARGET_REPLICAS_MAX {
        return refused(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "a partition moves to 1 to {TARGET_REPLICAS_MAX} replicas, not {}",
                replicas.len()
            ),
        );
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return refused(
            ErrorCode::InvalidRequest,
            format!("replicas {replicas:?} name a broker twice"),
        );
    }
    if let Some(b) = replicas
        .iter()
        .find(|b| !image.voters.contains(&BrokerId(**b)))
    {
        return refused(
            ErrorCode::InvalidRequest,
            format!(
                "broker {b} is not a broker of this cluster (brokers: {:?})",
                image.voters.iter().map(|b| b.get()).collect::<Vec<_>>()
            ),
        );
    }
    if let Some(b) = replicas
        .iter()
        .find(|b| image.removed.contains(&BrokerId(**b)))
    {
        return refused(
            ErrorCode::InvalidRequest,
            format!(
                "broker {b} is removed from hosting replicas (rill cluster add-broker {b} takes it back)"
            ),
        );
    }
    let target: Vec<BrokerId> = replicas.iter().copied().map(BrokerId).collect();
    if let Some(m) = t.moving.get(&partition)
        && m.target != target
    {
        return refused(
            ErrorCode::InvalidRequest,
            format!(
                "partition {name}/{partition} is moving to {:?} already: wait until that move ends",
                m.target.iter().map(|b| b.get()).collect::<Vec<_>>()
            ),
        );
    }
    Outcome::Done
}

/// Applies a checked move: recorded, unless it moves nowhere.
pub fn apply_reassign(t: &mut TopicImage, partition: u32, replicas: &[u64]) {
    let target: Vec<BrokerId> = replicas.iter().copied().map(BrokerId).collect();
    let current = &t.replicas[partition as usize];
    if t.moving.contains_key(&partition) {
        return;
    }
    if *current == target {
        return;
    }
    t.moving.insert(
        partition,
        Reassignment {
            target,
            seeds: BTreeMap::new(),
        },
    );
}

/// Checks where a new replica of a move starts: the move is under way,
/// the broker is new to the partition and in the target, the seed valid;
/// a broker seeded already keeps its first seed (the same again changes
/// nothing).
pub fn check_seed(
    image: &ClusterImage,
    name: &str,
    partition: u32,
    broker: BrokerId,
    seed: &Seed,
) -> Outcome {
    let (t, m) = match moving_partition(image, name, partition) {
        Ok(found) => found,
        Err(o) => return o,
    };
    if !m.target.contains(&broker) || t.replicas[partition as usize].contains(&broker) {
        return refused(
            ErrorCode::InvalidRequest,
            format!("broker {broker} is not a new replica of partition {name}/{partition}"),
        );
    }
    if let Err(why) = seed.check(broker) {
        return refused(ErrorCode::InvalidRequest, why);
    }
    match m.seeds.get(&broker) {
        Some(first) if first != seed => refused(
            ErrorCode::InvalidRequest,
            format!(
                "broker {broker} was seeded already at index {}",
                first.index
            ),
        ),
        _ => Outcome::Done,
    }
}

/// Applies a checked seed.
pub fn apply_seed(t: &mut TopicImage, partition: u32, broker: BrokerId, seed: &Seed) {
    if let Some(m) = t.moving.get_mut(&partition) {
        m.seeds.entry(broker).or_insert_with(|| seed.clone());
    }
}

/// Checks the end of a move: under way, to exactly `replicas`, whose
/// group has exactly those voters as of `origin`.
pub fn check_complete(
    image: &ClusterImage,
    name: &str,
    partition: u32,
    replicas: &[u64],
    origin: &Seed,
) -> Outcome {
    let (_, m) = match moving_partition(image, name, partition) {
        Ok(found) => found,
        Err(o) => return o,
    };
    let target: Vec<u64> = m.target.iter().map(|b| b.get()).collect();
    let mut sorted_target = target.clone();
    sorted_target.sort_unstable();
    if target != replicas || origin.voters != sorted_target || !origin.learners.is_empty() {
        return refused(
            ErrorCode::InvalidRequest,
            format!(
                "partition {name}/{partition} moves to {target:?}, not to {replicas:?} with voters {:?} and learners {:?}",
                origin.voters, origin.learners
            ),
        );
    }
    if let Err(why) = m.target.first().map_or(Ok(()), |b| origin.check(*b)) {
        return refused(ErrorCode::InvalidRequest, why);
    }
    Outcome::Done
}

/// Applies a checked end of a move.
pub fn apply_complete(t: &mut TopicImage, partition: u32, origin: &Seed) {
    if let Some(m) = t.moving.remove(&partition) {
        t.replicas[partition as usize] = m.target;
        t.origins.insert(partition, origin.clone());
    }
}

/// What the leader of a moving partition does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet: a change is being applied, a leadership is being
    /// handed over, a new replica is catching up, or this replica does not
    /// lead.
    Wait,
    /// Propose this membership change.
    Change(MembershipChange),
    /// Hand leadership to this replica, which stays.
    HandOver(BrokerId),
    /// Tell the controller where this new replica starts.
    Seed(BrokerId, Seed),
    /// Tell the controller the move is done, with the membership as of the
    /// last change.
    Complete(Seed),
}

/// The next step of moving a partition to `target` (preferred leader
/// first), taken by broker `me` from its replica's `status`, given the new
/// replicas the image has seeds for (`seeded`).
pub fn next_step(
    me: BrokerId,
    target: &[BrokerId],
    seeded: &BTreeMap<BrokerId, Seed>,
    status: &GroupStatus,
) -> Step {
    if status.leader != Some(me) || status.membership_change_pending {
        return Step::Wait;
    }
    let m = &status.membership;
    if m.is_joint() {
        return Step::Change(MembershipChange::LeaveJoint);
    }
    let matched = |b: BrokerId| {
        status
            .matched
            .iter()
            .find(|(id, _)| *id == b)
            .map_or(0, |(_, i)| i.get())
    };
    if let Some(&b) = target.iter().find(|b| !m.contains(**b)) {
        return Step::Change(MembershipChange::AddLearner(b));
    }
    if let Some(&b) = m
        .learners
        .iter()
        .find(|b| target.contains(b) && !seeded.contains_key(b))
    {
        return Step::Seed(b, Seed::of(m, status.membership_index));
    }
    let voters_are_target =
        m.voters.len() == target.len() && target.iter().all(|b| m.voters.contains(b));
    if !voters_are_target {
        let caught_up =
            |b: BrokerId| matched(b).saturating_add(CAUGHT_UP_ENTRIES_MAX) >= status.commit.get();
        let new: Vec<BrokerId> = target
            .iter()
            .copied()
            .filter(|b| !m.voters.contains(b))
            .collect();
        if !new.iter().all(|b| caught_up(*b)) {
            return Step::Wait;
        }
        if !target.contains(&me) {
            // Leadership goes to a replica that stays before the swap, so
            // the partition keeps a leader through it; with none staying,
            // this leader steps down once the swap ends.
            let staying = target.iter().copied().filter(|b| m.voters.contains(b));
            let mut ready = staying.filter(|b| matched(*b) >= status.last_index.get());
            if let Some(b) = ready.next() {
                return Step::HandOver(b);
            }
            if target.iter().any(|b| m.voters.contains(b)) {
                return Step::Wait;
            }
        }
        let remove = m
            .voters
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        return Step::Change(MembershipChange::EnterJoint { add: new, remove });
    }
    if let Some(&b) = m.learners.iter().find(|b| !target.contains(b)) {
        return Step::Change(MembershipChange::RemoveLearner(b));
    }
    Step::Complete(Seed::of(m, status.membership_index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_storage::{Offset, Term};

    fn ids(v: &[u64]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    fn status(me: u64, m: Membership, matched: &[(u64, u64)]) -> GroupStatus {
        GroupStatus {
            group: rill_replication::GroupId(1),
            leader: Some(BrokerId(me)),
            term: Term(2),
            commit: RaftIndex(100),
            last_index: RaftIndex(100),
            high_watermark: Offset(100),
            matched: matched
                .iter()
                .map(|(b, i)| (BrokerId(*b), RaftIndex(*i)))
                .collect(),
            log_end_offset: Offset(0),
            matched_offsets: Vec::new(),
            membership: m,
            membership_index: RaftIndex(7),
            membership_change_pending: false,
        }
    }

    fn learners(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: ids(voters),
            learners: ids(learners),
            ..Membership::default()
        }
    }

    /// Walks a move of {1,2,3} to {1,2,4} led by broker 1, applying each
    /// step as raft-rs and the controller would.
    #[test]
    fn a_move_adds_a_learner_seeds_it_waits_for_it_then_swaps_by_joint_consensus() {
        let target = ids(&[1, 2, 4]);
        let mut seeded = BTreeMap::new();
        let mut m = Membership::voters(ids(&[1, 2, 3]));
        let all = [(1, 100), (2, 100), (3, 100)];
        let s = status(1, m.clone(), &all);
        assert_eq!(
            next_step(BrokerId(1), &target, &seeded, &s),
            Step::Change(MembershipChange::AddLearner(BrokerId(4)))
        );
        m = m.apply(&MembershipChange::AddLearner(BrokerId(4))).unwrap();
        let behind = [(1, 100), (2, 100), (3, 100), (4, 0)];
        let Step::Seed(b, seed) = next_step(
            BrokerId(1),
            &target,
            &seeded,
            &status(1, m.clone(), &behind),
        ) else {
            panic!("the new learner is seeded next")
        };
        assert_eq!((b, seed.index), (BrokerId(4), 7));
        assert_eq!(seed.membership().normalized(), m.normalized());
        seeded.insert(b, seed);
        // Not caught up: the voters wait.
        assert_eq!(
            next_step(
                BrokerId(1),
                &target,
                &seeded,
                &status(1, m.clone(), &behind)
            ),
            Step::Wait
        );
        let close = [
            (1, 100),
            (2, 100),
            (3, 100),
            (4, 100 - CAUGHT_UP_ENTRIES_MAX),
        ];
        let enter = MembershipChange::EnterJoint {
            add: ids(&[4]),
            remove: ids(&[3]),
        };
        assert_eq!(
            next_step(BrokerId(1), &target, &seeded, &status(1, m.clone(), &close)),
            Step::Change(enter.clone())
        );
        m = m.apply(&enter).unwrap();
        assert_eq!(
            next_step(BrokerId(1), &target, &seeded, &status(1, m.clone(), &close)),
            Step::Change(MembershipChange::LeaveJoint)
        );
        m = m.apply(&MembershipChange::LeaveJoint).unwrap();
        let Step::Complete(origin) =
            next_step(BrokerId(1), &target, &seeded, &status(1, m.clone(), &close))
        else {
            panic!("the move ends")
        };
        assert_eq!(origin.voters, [1, 2, 4]);
        assert!(origin.learners.is_empty());
    }

    #[test]
    fn a_leader_that_leaves_hands_over_to_a_caught_up_replica_that_stays_first() {
        let target = ids(&[2, 3, 4]);
        let m = learners(&[1, 2, 3], &[4]);
        let mut seeded = BTreeMap::new();
        seeded.insert(BrokerId(4), Seed::of(&m, RaftIndex(7)));
        let lagging = [(1, 100), (2, 90), (3, 100), (4, 100)];
        assert_eq!(
            next_step(
                BrokerId(1),
                &target,
                &seeded,
                &status(1, m.clone(), &lagging)
            ),
            Step::HandOver(BrokerId(3))
        );
        // Nobody stays: the leader swaps and steps down after.
        let far = ids(&[4, 5, 6]);
        let m = learners(&[1, 2, 3], &[4, 5, 6]);
        let mut seeded = BTreeMap::new();
        for b in [4, 5, 6] {
            seeded.insert(BrokerId(b), Seed::of(&m, RaftIndex(9)));
        }
        let all = [(1, 100), (2, 100), (3, 100), (4, 100), (5, 100), (6, 100)];
        assert!(matches!(
            next_step(BrokerId(1), &far, &seeded, &status(1, m, &all)),
            Step::Change(MembershipChange::EnterJoint { .. })
        ));
    }

    #[test]
    fn only_a_leader_with_no_change_pending_takes_a_step() {
        let target = ids(&[1, 2, 4]);
        let m = Membership::voters(ids(&[1, 2, 3]));
        let mut s = status(1, m, &[(1, 100)]);
        assert_eq!(
            next_step(BrokerId(2), &target, &BTreeMap::new(), &s),
            Step::Wait
        );
        s.membership_change_pending = true;
        assert_eq!(
            next_step(BrokerId(1), &target, &BTreeMap::new(), &s),
            Step::Wait
        );
    }

    #[test]
    fn the_image_records_a_move_its_seeds_and_its_end_and_places_replicas_by_them() {
        use crate::metadata::MetadataCommand as C;
        let mut image = ClusterImage::new(ids(&[1, 2, 3, 4]));
        let create = C::CreateTopic {
            name: "t".into(),
            id: "00000000-0000-4000-8000-000000000001".into(),
            partitions: 1,
            replication_factor: 3,
            configs: vec![],
            max_partition_replicas: None,
        };
        assert_eq!(image.apply(&create), Outcome::Done);
        let before = image.topics["t"].replicas[0].clone();
        assert_eq!(before, ids(&[1, 2, 3]));
        let reassign = |replicas: &[u64]| C::ReassignPartition {
            name: "t".into(),
            partition: 0,
            replicas: replicas.to_vec(),
        };
        for bad in [
            &[][..],
            &[1, 1, 2],
            &[1, 2, 5],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            assert!(
                matches!(image.check(&reassign(bad)), Outcome::Refused(..)),
                "{bad:?}"
            );
        }
        assert_eq!(image.apply(&reassign(&[4, 2, 3])), Outcome::Done);
        // The same again changes nothing; another is refused meanwhile.
        assert_eq!(image.apply(&reassign(&[4, 2, 3])), Outcome::Done);
        assert!(matches!(
            image.apply(&reassign(&[1, 2, 4])),
            Outcome::Refused(..)
        ));
        let t = &image.topics["t"];
        assert_eq!(placed_here(t, 0, BrokerId(4)), None, "not before its seed");
        let m = learners(&[1, 2, 3], &[4]);
        let seed = |broker: u64, s: Seed| C::SeedReplica {
            name: "t".into(),
            partition: 0,
            broker: BrokerId(broker),
            seed: s,
        };
        assert!(matches!(
            image.apply(&seed(2, Seed::of(&m, RaftIndex(3)))),
            Outcome::Refused(..)
        ));
        assert_eq!(
            image.apply(&seed(4, Seed::of(&m, RaftIndex(3)))),
            Outcome::Done
        );
        let t = &image.topics["t"];
        assert_eq!(
            placed_here(t, 0, BrokerId(4)),
            Some((Seed::of(&m, RaftIndex(3)).membership(), RaftIndex(3)))
        );
        let done = Membership::voters(ids(&[2, 3, 4]));
        let complete = |replicas: &[u64]| C::CompleteReassignment {
            name: "t".into(),
            partition: 0,
            replicas: replicas.to_vec(),
            origin: Seed::of(&done, RaftIndex(6)),
        };
        assert!(matches!(
            image.apply(&complete(&[2, 3, 4])),
            Outcome::Refused(..)
        ));
        assert_eq!(image.apply(&complete(&[4, 2, 3])), Outcome::Done);
        let t = &image.topics["t"];
        assert_eq!(t.replicas[0], ids(&[4, 2, 3]));
        assert!(t.moving.is_empty());
        assert_eq!(placed_here(t, 0, BrokerId(1)), None);
        // A new replica of the moved partition starts from the end of the
        // move, not from index 0.
        assert_eq!(
            placed_here(t, 0, BrokerId(2)),
            Some((Seed::of(&done, RaftIndex(6)).membership(), RaftIndex(6)))
        );
        // Every command round-trips through its encoding.
        for cmd in [
            reassign(&[4, 2, 3]),
            seed(4, Seed::of(&m, RaftIndex(3))),
            complete(&[4, 2, 3]),
        ] {
            assert_eq!(C::decode(&cmd.encode()), Some(cmd));
        }
    }

    #[test]
    fn a_seed_must_name_its_broker_in_a_valid_membership() {
        let m = learners(&[1, 2, 3], &[4]);
        assert!(Seed::of(&m, RaftIndex(3)).check(BrokerId(4)).is_ok());
        assert!(Seed::of(&m, RaftIndex(3)).check(BrokerId(5)).is_err());
        assert!(Seed::of(&m, RaftIndex(0)).check(BrokerId(4)).is_err());
        let twice = Seed {
            index: 3,
            voters: vec![1, 2, 3],
            learners: vec![3],
        };
        assert!(twice.check(BrokerId(3)).is_err());
    }
}
