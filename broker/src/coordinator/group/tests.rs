//! The membership state machine's behaviour: partitions move in two steps,
//! unmoved partitions are never touched, leaving and expiring hand over,
//! stale members are fenced.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rill_client::protocol::ErrorCode;

use super::{GroupState, Heartbeat, HeartbeatAnswer, Membership};
use crate::coordinator::assignor::TopicPartition;

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 30_000;

fn topics() -> BTreeMap<String, u32> {
    BTreeMap::from([("t".to_string(), 6)])
}

fn join(g: &mut Membership, id: &str, now_ms: u64) -> HeartbeatAnswer {
    g.heartbeat(
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: 0,
            subscribed: Some(BTreeSet::from(["t".to_string()])),
            owned: Some(BTreeSet::new()),
            client_id: "c".into(),
            host: "h".into(),
        },
        now_ms,
        &topics(),
        || unreachable!("ids are given"),
        100,
    )
    .expect("join")
}

fn beat(
    g: &mut Membership,
    id: &str,
    epoch: i32,
    owned: &BTreeSet<TopicPartition>,
    now_ms: u64,
) -> Result<HeartbeatAnswer, ErrorCode> {
    g.heartbeat(
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: epoch,
            subscribed: None,
            owned: Some(owned.clone()),
            client_id: "c".into(),
            host: "h".into(),
        },
        now_ms,
        &topics(),
        || unreachable!("ids are given"),
        100,
    )
}

fn assignment(a: &HeartbeatAnswer) -> BTreeSet<TopicPartition> {
    a.assignment.clone().expect("an assignment")
}

#[test]
fn a_joining_member_gets_partitions_only_after_their_owner_releases_them() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let a_owned = assignment(&a);
    assert_eq!(a_owned.len(), 6);
    assert_eq!(g.state(), GroupState::Stable);

    let b = join(&mut g, "b", 1);
    assert!(assignment(&b).is_empty(), "a still owns everything");
    assert_eq!(g.state(), GroupState::Reconciling);

    // a hears it must give up three, and keeps the other three.
    let a2 = beat(&mut g, "a", a.member_epoch, &a_owned, 2).expect("a beats");
    let kept = assignment(&a2);
    assert_eq!(kept.len(), 3);
    assert!(kept.is_subset(&a_owned));
    // b asks again before a released them: still nothing.
    let b2 = beat(&mut g, "b", b.member_epoch, &BTreeSet::new(), 3).expect("b beats");
    assert!(assignment(&b2).is_empty());
    // a releases; then b gets them.
    let a3 = beat(&mut g, "a", a2.member_epoch, &kept, 4).expect("a releases");
    assert_eq!(assignment(&a3), kept);
    let b3 = beat(&mut g, "b", b2.member_epoch, &BTreeSet::new(), 5).expect("b beats");
    let moved = assignment(&b3);
    assert_eq!(moved.len(), 3);
    assert!(moved.is_disjoint(&kept));
    assert_eq!(g.state(), GroupState::Stable);
    assert!(b3.member_epoch >= b.member_epoch);
}

#[test]
fn a_member_that_leaves_hands_its_partitions_over_at_once() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let b = join(&mut g, "b", 0);
    let a_owned = assignment(&beat(&mut g, "a", a.member_epoch, &assignment(&a), 1).unwrap());
    // a releases what it was told to give up; b then gets it.
    beat(&mut g, "a", a.member_epoch, &a_owned, 1).unwrap();
    let b_owned = assignment(&beat(&mut g, "b", b.member_epoch, &BTreeSet::new(), 1).unwrap());
    assert_eq!(a_owned.len(), 3);
    assert_eq!(b_owned.len(), 3);
    let left = beat(&mut g, "b", -1, &BTreeSet::new(), 2).expect("leave");
    assert_eq!(left.assignment, None);
    let a2 = beat(&mut g, "a", a.member_epoch, &a_owned, 3).expect("a beats");
    assert_eq!(assignment(&a2).len(), 6);
}

#[test]
fn a_silent_member_expires_after_the_session_timeout_and_its_partitions_move() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let b = join(&mut g, "b", 0);
    let a_owned = assignment(&beat(&mut g, "a", a.member_epoch, &assignment(&a), 1).unwrap());
    beat(&mut g, "a", a.member_epoch, &a_owned, 1).unwrap();
    beat(&mut g, "b", b.member_epoch, &BTreeSet::new(), 1).unwrap();
    assert!(
        g.expire(SESSION_MS, SESSION_MS, REBALANCE_MS, &topics())
            .is_empty()
    );
    let a2 = beat(&mut g, "a", a.member_epoch, &a_owned, SESSION_MS).unwrap();
    let gone = g.expire(SESSION_MS + 2, SESSION_MS, REBALANCE_MS, &topics());
    assert_eq!(gone, vec!["b".to_string()]);
    let a3 = beat(
        &mut g,
        "a",
        a2.member_epoch,
        &assignment(&a2),
        SESSION_MS + 3,
    )
    .unwrap();
    assert_eq!(assignment(&a3).len(), 6);
    assert_eq!(
        beat(
            &mut g,
            "b",
            b.member_epoch,
            &BTreeSet::new(),
            SESSION_MS + 4
        ),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn a_member_that_never_releases_is_removed_after_the_rebalance_timeout() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let a_owned = assignment(&a);
    join(&mut g, "b", 0);
    // a keeps heartbeating but keeps claiming everything.
    let mut now = 0;
    while now <= SESSION_MS {
        now += 1_000;
        let _ = beat(&mut g, "a", a.member_epoch, &a_owned, now);
        let _ = beat(&mut g, "b", 1, &BTreeSet::new(), now);
        g.expire(now, SESSION_MS, REBALANCE_MS, &topics());
    }
    // Heartbeating, it outlives its session: only the rebalance timeout
    // removes it.
    assert!(g.members.contains_key("a"));
    while now <= 2 * REBALANCE_MS {
        now += 1_000;
        let _ = beat(&mut g, "a", a.member_epoch, &a_owned, now);
        let _ = beat(&mut g, "b", 1, &BTreeSet::new(), now);
        g.expire(now, SESSION_MS, REBALANCE_MS, &topics());
    }
    assert!(!g.members.contains_key("a"));
}

#[test]
fn commits_from_unknown_stale_or_non_owning_members_are_fenced() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let tp = ("t".to_string(), 0);
    assert_eq!(g.check_commit("a", a.member_epoch, &tp), Ok(()));
    assert_eq!(g.check_commit("x", 1, &tp), Err(ErrorCode::UnknownMemberId));
    assert_eq!(
        g.check_commit("a", a.member_epoch + 1, &tp),
        Err(ErrorCode::FencedMemberEpoch)
    );
    // Once a partition went to b, a may no longer commit it.
    join(&mut g, "b", 1);
    let a2 = beat(&mut g, "a", a.member_epoch, &assignment(&a), 2).unwrap();
    let released: BTreeSet<_> = assignment(&a)
        .difference(&assignment(&a2))
        .cloned()
        .collect();
    let gone = released.iter().next().cloned().expect("a gave one up");
    // While it is still releasing it, a may commit it.
    assert_eq!(g.check_commit("a", a2.member_epoch, &gone), Ok(()));
    beat(&mut g, "a", a2.member_epoch, &assignment(&a2), 3).unwrap();
    assert_eq!(
        g.check_commit("a", a2.member_epoch, &gone),
        Err(ErrorCode::FencedMemberEpoch)
    );
}

#[test]
fn a_join_without_a_subscription_and_a_full_group_are_refused() {
    let mut g = Membership::default();
    let no_subscription = g.heartbeat(
        Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscribed: None,
            owned: None,
            client_id: "c".into(),
            host: "h".into(),
        },
        0,
        &topics(),
        || "x".into(),
        1,
    );
    assert_eq!(no_subscription, Err(ErrorCode::InvalidRequest));
    join(&mut g, "a", 0);
    let full = g.heartbeat(
        Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscribed: Some(BTreeSet::from(["t".to_string()])),
            owned: None,
            client_id: "c".into(),
            host: "h".into(),
        },
        0,
        &topics(),
        || "y".into(),
        1,
    );
    assert_eq!(full, Err(ErrorCode::GroupMaxSizeReached));
}

/// One step a random test takes.
#[derive(Debug, Clone)]
enum Step {
    Join(u8),
    Leave(u8),
    /// A member heartbeats, releasing what it was told to give up.
    Beat(u8),
    /// Time passes by this many ms, and silent members expire.
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..5).prop_map(Step::Join),
        (0u8..5).prop_map(Step::Leave),
        (0u8..5).prop_map(Step::Beat),
        (0u16..15_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever members do, no partition is ever owned twice (asserted
    /// inside every change), and once every member heartbeats twice the
    /// group is stable with every partition owned.
    #[test]
    fn members_converge_and_never_share_a_partition(steps in proptest::collection::vec(step(), 0..60)) {
        let mut g = Membership::default();
        let mut now = 0u64;
        let mut known: BTreeMap<String, (i32, BTreeSet<TopicPartition>)> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Join(m) => {
                    let id = format!("m{m}");
                    let a = join(&mut g, &id, now);
                    known.insert(id, (a.member_epoch, assignment(&a)));
                }
                Step::Leave(m) => {
                    let id = format!("m{m}");
                    let _ = beat(&mut g, &id, -1, &BTreeSet::new(), now);
                    known.remove(&id);
                }
                Step::Beat(m) => {
                    let id = format!("m{m}");
                    if let Some((epoch, owned)) = known.get(&id).cloned() {
                        match beat(&mut g, &id, epoch, &owned, now) {
                            Ok(a) => { known.insert(id, (a.member_epoch, assignment(&a))); }
                            Err(_) => { known.remove(&id); }
                        }
                    }
                }
                Step::Wait(ms) => {
                    now += u64::from(ms);
                    for id in g.expire(now, SESSION_MS, REBALANCE_MS, &topics()) {
                        known.remove(&id);
                    }
                }
            }
        }
        for _ in 0..3 {
            for (id, (epoch, owned)) in known.clone() {
                let a = beat(&mut g, &id, epoch, &owned, now).expect("a live member beats");
                known.insert(id, (a.member_epoch, assignment(&a)));
            }
        }
        if !known.is_empty() {
            prop_assert_eq!(g.state(), GroupState::Stable);
            let all: BTreeSet<TopicPartition> = known.values().flat_map(|(_, o)| o.clone()).collect();
            prop_assert_eq!(all.len(), 6);
        }
    }
}

#[test]
fn a_restored_group_carries_on_and_never_gives_a_partition_to_two_members() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    join(&mut g, "b", 0);
    beat(&mut g, "a", a.member_epoch, &assignment(&a), 1).unwrap();
    let (epochs, mut stored) = g.stored();
    let restored = Membership::restore(epochs, &stored, 50);
    assert_eq!(restored.stored(), (epochs, stored.clone()));
    assert_eq!(restored.state(), g.state());
    // A store that lost a write names partition 0 under both: the first
    // member keeps it.
    let tp = ("t".to_string(), 0);
    for m in stored.values_mut() {
        m.assigned.retain(|p| *p != tp);
        m.revoking.retain(|p| *p != tp);
        m.assigned.push(tp.clone());
        m.assigned.sort();
    }
    let restored = Membership::restore(epochs, &stored, 50);
    assert!(restored.members["a"].assigned.contains(&tp));
    assert!(!restored.members["b"].assigned.contains(&tp));
}

#[test]
fn a_member_claiming_partitions_it_was_not_given_is_fenced() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    let b = join(&mut g, "b", 0);
    let a_owned = assignment(&beat(&mut g, "a", a.member_epoch, &assignment(&a), 1).unwrap());
    beat(&mut g, "a", a.member_epoch, &a_owned, 1).unwrap();
    // b claims one of a's partitions at its own current epoch.
    let stolen: BTreeSet<_> = a_owned.iter().take(1).cloned().collect();
    assert_eq!(
        beat(&mut g, "b", b.member_epoch, &stolen, 2),
        Err(ErrorCode::FencedMemberEpoch)
    );
}

#[test]
fn stored_targets_that_overlap_never_hand_a_partition_to_two_members() {
    let mut g = Membership::default();
    let a = join(&mut g, "a", 0);
    join(&mut g, "b", 0);
    beat(&mut g, "a", a.member_epoch, &assignment(&a), 1).unwrap();
    let (epochs, mut stored) = g.stored();
    // Both targets name every partition; nobody owns anything.
    let all: Vec<TopicPartition> = (0..6).map(|p| ("t".to_string(), p)).collect();
    for m in stored.values_mut() {
        m.target = all.clone();
        m.assigned.clear();
        m.revoking.clear();
    }
    let a_epoch = stored["a"].member_epoch;
    let mut restored = Membership::restore(epochs, &stored, 5);
    // Reconciling (asserted inside: never owned twice) gives each
    // partition to one member only.
    let r = restored
        .heartbeat(
            Heartbeat {
                member_id: "a".into(),
                member_epoch: a_epoch,
                subscribed: None,
                owned: Some(BTreeSet::new()),
                client_id: "c".into(),
                host: "h".into(),
            },
            6,
            &topics(),
            || unreachable!("ids are given"),
            100,
        )
        .expect("a beats");
    let a_has = assignment(&r);
    let b_has = &restored.members["b"].assigned;
    assert!(a_has.is_disjoint(b_has));
}
