//! The membership state machine: scenarios, then properties over random
//! runs of answers, failures, takes, releases and commits checked against
//! a model of the consumer.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::protocol::messages::{LEAVE_GROUP_MEMBER_EPOCH, TopicPartitions};

const INTERVAL_MS: u32 = 3_000;

fn key(topic: &str, partition: u32) -> Key {
    (topic.to_string(), partition)
}

fn keys(list: &[(&str, u32)]) -> BTreeSet<Key> {
    list.iter().map(|(t, p)| key(t, *p)).collect()
}

fn ok(member_id: Option<&str>, epoch: i32, assignment: Option<&[(&str, u32)]>) -> Answer {
    Answer {
        error: ErrorCode::None,
        member_id: member_id.map(str::to_string),
        member_epoch: epoch,
        heartbeat_interval_ms: INTERVAL_MS,
        assignment: assignment.map(|a| to_topic_partitions(&keys(a))),
    }
}

type Answer = ConsumerGroupHeartbeatResponse;

fn refused(code: ErrorCode) -> Answer {
    Answer {
        error: code,
        member_id: None,
        member_epoch: 0,
        heartbeat_interval_ms: 0,
        assignment: None,
    }
}

fn owned_of(r: &ConsumerGroupHeartbeatRequest) -> BTreeSet<Key> {
    from_topic_partitions(r.owned.as_deref().unwrap_or_default())
}

/// A member that joined as `m-1` at epoch 1 and took `assignment`, at
/// time 0; its next heartbeat is due at [`INTERVAL_MS`].
fn joined(assignment: &[(&str, u32)]) -> Membership {
    let mut m = Membership::new("g".into(), vec!["a".into(), "b".into()], 0);
    m.heartbeat(0).unwrap();
    m.on_answer(0, ok(Some("m-1"), 1, Some(assignment)));
    assert_eq!(m.take_changes().assigned, keys(assignment));
    m
}

fn commit_of(partitions: &[(&str, u32)]) -> BTreeMap<Key, CommitOffset> {
    partitions
        .iter()
        .map(|(t, p)| {
            (
                key(t, *p),
                CommitOffset {
                    offset: 10,
                    leader_epoch: 2,
                },
            )
        })
        .collect()
}

#[test]
fn the_first_heartbeat_joins_at_once_with_epoch_0_its_topics_and_nothing_owned() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 5);
    assert_eq!(m.next_heartbeat_at_ms(), Some(5));
    assert!(m.heartbeat(4).is_none(), "not due before its time");
    let r = m.heartbeat(5).unwrap();
    assert_eq!(r.group, "g");
    // The member names itself, so a join retried after a lost answer is
    // the same member.
    assert_eq!(r.member_id.len(), 32);
    assert_eq!(m.member_id(), r.member_id);
    assert_eq!(r.member_epoch, JOIN_GROUP_MEMBER_EPOCH);
    assert_eq!(r.subscribed_topics, Some(vec!["a".to_string()]));
    assert_eq!(r.owned, Some(Vec::new()));
    assert!(m.heartbeat(100_000).is_none(), "one heartbeat in flight");
    assert_eq!(m.next_heartbeat_at_ms(), None);
}

#[test]
fn an_answer_gives_id_epoch_and_assignment_and_the_next_heartbeat_is_due_an_interval_later() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    m.on_answer(7, ok(Some("m-1"), 3, Some(&[("a", 0), ("a", 2)])));
    assert!(matches!(m.phase(), Phase::Member));
    assert_eq!((m.member_id(), m.member_epoch()), ("m-1", 3));
    assert_eq!(m.next_heartbeat_at_ms(), Some(7 + u64::from(INTERVAL_MS)));
    assert!(m.has_changes());
    let c = m.take_changes();
    assert_eq!(c.assigned, keys(&[("a", 0), ("a", 2)]));
    assert!(c.revoked.is_empty() && c.lost.is_empty());
    assert!(!m.has_changes());
    assert!(m.heartbeat(7 + u64::from(INTERVAL_MS) - 1).is_none());
    let r = m.heartbeat(7 + u64::from(INTERVAL_MS)).unwrap();
    assert_eq!((r.member_id.as_str(), r.member_epoch), ("m-1", 3));
    assert_eq!(r.subscribed_topics, None, "unchanged after the join");
    assert_eq!(owned_of(&r), keys(&[("a", 0), ("a", 2)]));
}

#[test]
fn partitions_assigned_but_not_yet_taken_are_not_reported_owned() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    m.on_answer(0, ok(Some("m-1"), 1, Some(&[("a", 0)])));
    let r = m.heartbeat(u64::from(INTERVAL_MS)).unwrap();
    assert_eq!(r.owned, Some(Vec::new()));
}

#[test]
fn a_revoked_partition_stays_owned_until_released_then_the_next_heartbeat_goes_at_once() {
    let mut m = joined(&[("a", 0), ("a", 1)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_010, ok(None, 2, Some(&[("a", 0)])));
    assert_eq!(
        m.next_heartbeat_at_ms(),
        Some(3_010 + u64::from(INTERVAL_MS))
    );
    let c = m.take_changes();
    assert_eq!(c.revoked, keys(&[("a", 1)]));
    assert!(c.assigned.is_empty());
    assert!(!m.has_changes(), "a revocation is handed out once");
    // Not released yet: a heartbeat still lists it.
    let r = m.heartbeat(6_010).unwrap();
    assert_eq!(owned_of(&r), keys(&[("a", 0), ("a", 1)]));
    assert_eq!(r.member_epoch, 2);
    m.on_answer(6_020, ok(None, 2, Some(&[("a", 0)])));
    m.released(6_500, &keys(&[("a", 1)]));
    assert_eq!(
        m.next_heartbeat_at_ms(),
        Some(6_500),
        "at once after a release"
    );
    let r = m.heartbeat(6_500).unwrap();
    assert_eq!(owned_of(&r), keys(&[("a", 0)]));
}

#[test]
fn a_release_while_a_heartbeat_is_in_flight_sends_the_next_one_when_it_is_answered() {
    let mut m = joined(&[("a", 0), ("a", 1)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 2, Some(&[("a", 0)])));
    assert_eq!(m.take_changes().revoked, keys(&[("a", 1)]));
    let r = m.heartbeat(6_000).unwrap();
    assert_eq!(owned_of(&r), keys(&[("a", 0), ("a", 1)]));
    m.released(6_001, &keys(&[("a", 1)]));
    assert_eq!(m.next_heartbeat_at_ms(), None, "still in flight");
    m.on_answer(6_050, ok(None, 2, Some(&[("a", 0)])));
    assert_eq!(m.next_heartbeat_at_ms(), Some(6_050));
    assert_eq!(owned_of(&m.heartbeat(6_050).unwrap()), keys(&[("a", 0)]));
}

#[test]
fn a_partition_revoked_and_given_back_before_the_consumer_looked_is_not_paused() {
    let mut m = joined(&[("a", 0), ("a", 1)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 2, Some(&[("a", 0)])));
    m.heartbeat(6_000).unwrap();
    m.on_answer(6_000, ok(None, 3, Some(&[("a", 0), ("a", 1)])));
    assert!(!m.has_changes());
    assert!(m.take_changes().is_empty());
}

#[test]
fn releasing_what_was_not_revoked_changes_nothing() {
    let mut m = joined(&[("a", 0)]);
    m.released(10, &keys(&[("a", 0), ("b", 9)]));
    assert_eq!(m.owned(), &keys(&[("a", 0)]));
    assert_eq!(m.next_heartbeat_at_ms(), Some(u64::from(INTERVAL_MS)));
}

#[test]
fn an_answer_without_an_assignment_keeps_the_last_one() {
    let mut m = joined(&[("a", 0)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 1, None));
    assert_eq!(m.target(), &keys(&[("a", 0)]));
    assert!(m.take_changes().is_empty());
}

#[test]
fn a_removed_member_loses_everything_it_owned_and_rejoins_at_once_with_epoch_0() {
    for code in [ErrorCode::UnknownMemberId, ErrorCode::FencedMemberEpoch] {
        let mut m = joined(&[("a", 0), ("b", 1)]);
        let old_id = m.member_id().to_string();
        m.heartbeat(3_000).unwrap();
        m.on_answer(3_005, refused(code));
        assert!(matches!(m.phase(), Phase::Joining));
        assert_eq!((m.member_id(), m.member_epoch()), ("", 0));
        assert!(m.owned().is_empty());
        assert!(matches!(
            m.commit_request(&commit_of(&[("a", 0)])),
            Err(ClientError::Fenced { .. })
        ));
        let c = m.take_changes();
        assert_eq!(c.lost, keys(&[("a", 0), ("b", 1)]), "{code}");
        assert!(c.revoked.is_empty() && c.assigned.is_empty());
        let r = m.heartbeat(3_005).unwrap();
        // A new incarnation: a fresh id, epoch 0.
        assert_eq!((r.member_id.len(), r.member_epoch), (32, 0));
        assert_ne!(r.member_id, old_id);
        assert_eq!(r.subscribed_topics.as_ref().map(Vec::len), Some(2));
        assert_eq!(r.owned, Some(Vec::new()));
    }
}

#[test]
fn a_partition_revoked_then_lost_is_lost_and_its_release_is_ignored() {
    let mut m = joined(&[("a", 0), ("a", 1)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 2, Some(&[("a", 0)])));
    assert_eq!(m.take_changes().revoked, keys(&[("a", 1)]));
    m.heartbeat(6_000).unwrap();
    m.on_answer(6_000, refused(ErrorCode::FencedMemberEpoch));
    m.released(6_001, &keys(&[("a", 1)]));
    assert_eq!(m.take_changes().lost, keys(&[("a", 0), ("a", 1)]));
}

#[test]
fn a_newcomer_refused_as_unknown_backs_off_instead_of_spinning() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    m.on_answer(0, refused(ErrorCode::UnknownMemberId));
    assert_eq!(m.next_heartbeat_at_ms(), Some(HEARTBEAT_RETRY_MS_MIN));
}

#[test]
fn retriable_failures_keep_id_and_epoch_and_back_off_doubling_up_to_a_bound() {
    let mut m = joined(&[("a", 0)]);
    let mut now = 3_000;
    let mut pauses = Vec::new();
    for i in 0..6 {
        m.heartbeat(now).unwrap();
        if i % 2 == 0 {
            m.on_answer(now, refused(ErrorCode::NotCoordinator));
        } else {
            m.on_failure(now, ClientError::Timeout { ms: 10 });
        }
        let next = m.next_heartbeat_at_ms().unwrap();
        pauses.push(next - now);
        now = next;
    }
    assert_eq!(pauses, [100, 200, 400, 800, 1_000, 1_000]);
    let r = m.heartbeat(now).unwrap();
    assert_eq!((r.member_id.as_str(), r.member_epoch), ("m-1", 1));
    m.on_answer(now, ok(None, 1, None));
    m.heartbeat(now + u64::from(INTERVAL_MS)).unwrap();
    m.on_answer(now, refused(ErrorCode::CoordinatorLoadInProgress));
    assert_eq!(
        m.next_heartbeat_at_ms(),
        Some(now + 100),
        "reset by a success"
    );
}

#[test]
fn a_full_group_or_an_invalid_group_id_fails_the_member_for_good() {
    for code in [ErrorCode::GroupMaxSizeReached, ErrorCode::InvalidGroupId] {
        let mut m = Membership::new("g".into(), vec!["a".into()], 0);
        m.heartbeat(0).unwrap();
        m.on_answer(0, refused(code));
        let Phase::Failed(ClientError::Broker { code: got, .. }) = m.phase() else {
            panic!("failed: {:?}", m.phase())
        };
        assert_eq!(*got, code);
        assert_eq!(m.next_heartbeat_at_ms(), None);
        assert!(m.heartbeat(1_000_000).is_none());
    }
    // A broker that does not serve the API at all.
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    m.on_failure(0, ClientError::code(ErrorCode::UnsupportedApi));
    assert!(matches!(m.phase(), Phase::Failed(_)));
}

#[test]
fn a_zero_interval_from_the_coordinator_does_not_make_a_busy_loop() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    let mut a = ok(Some("m"), 1, None);
    a.heartbeat_interval_ms = 0;
    m.on_answer(0, a);
    assert_eq!(m.next_heartbeat_at_ms(), Some(HEARTBEAT_INTERVAL_MS_MIN));
}

#[test]
fn leaving_sends_epoch_minus_1_with_the_member_id_and_then_nothing() {
    let mut m = joined(&[("a", 0)]);
    m.leave(10);
    assert_eq!(m.next_heartbeat_at_ms(), Some(10));
    let r = m.heartbeat(10).unwrap();
    assert_eq!(
        (r.member_id.as_str(), r.member_epoch),
        ("m-1", LEAVE_GROUP_MEMBER_EPOCH)
    );
    m.on_answer(20, ok(None, LEAVE_GROUP_MEMBER_EPOCH, None));
    assert!(matches!(m.phase(), Phase::Left));
    assert!(m.heartbeat(1_000_000).is_none());
}

#[test]
fn leaving_before_any_id_sends_nothing() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.leave(0);
    assert!(m.heartbeat(0).is_none());
    assert!(matches!(m.phase(), Phase::Left));
}

#[test]
fn leaving_while_the_join_is_in_flight_leaves_with_the_id_it_brings() {
    let mut m = Membership::new("g".into(), vec!["a".into()], 0);
    m.heartbeat(0).unwrap();
    m.leave(1);
    assert!(m.heartbeat(1).is_none(), "the join is in flight");
    m.on_answer(5, ok(Some("m-9"), 4, Some(&[("a", 0)])));
    assert!(
        m.take_changes().assigned.is_empty(),
        "nothing new while leaving"
    );
    let r = m.heartbeat(5).unwrap();
    assert_eq!((r.member_id.as_str(), r.member_epoch), ("m-9", -1));
    m.on_failure(6, ClientError::Timeout { ms: 1 });
    assert!(
        matches!(m.phase(), Phase::Left),
        "a failed leave is not retried"
    );
}

#[test]
fn a_commit_covers_owned_partitions_under_the_latest_epoch_grouped_by_topic() {
    let mut m = joined(&[("a", 0), ("a", 1), ("b", 0)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 7, None));
    let r = m
        .commit_request(&commit_of(&[("a", 0), ("a", 1), ("b", 0)]))
        .unwrap();
    assert_eq!((r.group.as_str(), r.member_id.as_str()), ("g", "m-1"));
    assert_eq!(r.member_epoch, 7);
    assert_eq!(r.topics.len(), 2);
    assert_eq!(r.topics[0].name, "a");
    assert_eq!(r.topics[0].partitions.len(), 2);
    assert_eq!(r.topics[0].partitions[1].offset, 10);
    assert_eq!(r.topics[0].partitions[1].leader_epoch, 2);
    assert!(matches!(
        m.commit_request(&commit_of(&[("a", 0), ("c", 0)])),
        Err(ClientError::Fenced {
            code: ErrorCode::FencedMemberEpoch,
            ..
        })
    ));
}

#[test]
fn a_revoked_partition_may_be_committed_until_it_is_released() {
    let mut m = joined(&[("a", 0), ("a", 1)]);
    m.heartbeat(3_000).unwrap();
    m.on_answer(3_000, ok(None, 2, Some(&[("a", 0)])));
    m.take_changes();
    assert!(m.commit_request(&commit_of(&[("a", 1)])).is_ok());
    m.released(3_001, &keys(&[("a", 1)]));
    assert!(m.commit_request(&commit_of(&[("a", 1)])).is_err());
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes; a heartbeat is built if one is due.
    Tick(u64),
    /// The heartbeat in flight is answered: a success with an epoch and
    /// maybe an assignment (a bit set over the partitions), or an error.
    Answer(Reply),
    /// The heartbeat in flight fails without an answer.
    Fail,
    /// The consumer takes the changes.
    Take,
    /// The consumer releases some of the revoked partitions it holds.
    Release(u8),
    /// The consumer commits some of the partitions it holds, or (with
    /// `true`) any partitions at all.
    Commit(u8, bool),
    /// The consumer leaves.
    Leave,
}

#[derive(Debug, Clone)]
enum Reply {
    Ok { epoch: i32, assignment: Option<u8> },
    Removed(ErrorCode),
    Retriable,
}

const UNIVERSE: [(&str, u32); 8] = [
    ("a", 0),
    ("a", 1),
    ("a", 2),
    ("a", 3),
    ("b", 0),
    ("b", 1),
    ("b", 2),
    ("b", 3),
];

/// The members of `set` that `bits` picks, by their place in it.
fn pick(bits: u8, set: &BTreeSet<Key>) -> BTreeSet<Key> {
    set.iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << (i % 8)) != 0)
        .map(|(_, k)| k.clone())
        .collect()
}

fn subset(bits: u8) -> BTreeSet<Key> {
    UNIVERSE
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, (t, p))| key(t, *p))
        .collect()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => prop_oneof![0u64..200, 3_000u64..5_000].prop_map(Step::Tick),
        5 => (1i32..50, proptest::option::weighted(0.8, any::<u8>()))
            .prop_map(|(epoch, assignment)| Step::Answer(Reply::Ok { epoch, assignment })),
        1 => prop_oneof![
            Just(ErrorCode::UnknownMemberId),
            Just(ErrorCode::FencedMemberEpoch)
        ]
        .prop_map(|c| Step::Answer(Reply::Removed(c))),
        1 => Just(Step::Answer(Reply::Retriable)),
        1 => Just(Step::Fail),
        3 => Just(Step::Take),
        2 => any::<u8>().prop_map(Step::Release),
        3 => (any::<u8>(), proptest::bool::weighted(0.2)).prop_map(|(b, any)| Step::Commit(b, any)),
        // Rare: nothing happens after the member has left.
        1 => (0u8..8).prop_filter_map("mostly no leave", |n| (n == 0).then_some(Step::Leave)),
    ]
}

/// What the consumer holds, as it learned from its takes.
#[derive(Debug, Default)]
struct Model {
    held: BTreeSet<Key>,
    revoking: BTreeSet<Key>,
    /// Held when the member was last removed: lost, never to be
    /// committed until handed out again.
    lost: BTreeSet<Key>,
    /// Released and not assigned again since.
    released: BTreeSet<Key>,
    /// The id and epoch of the latest successful answer.
    member: Option<(String, i32)>,
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut m = Membership::new("g".into(), vec!["a".into(), "b".into()], 0);
    let mut model = Model::default();
    let mut now = 0u64;
    let mut in_flight: Option<ConsumerGroupHeartbeatRequest> = None;
    let mut ids = 0;
    for step in steps {
        match step {
            Step::Tick(ms) => {
                now += ms;
                let due = m.next_heartbeat_at_ms();
                if let Some(r) = m.heartbeat(now) {
                    prop_assert!(in_flight.is_none(), "one heartbeat in flight");
                    prop_assert!(due.is_some_and(|d| d <= now), "sent only when due");
                    // The epoch is the latest answer's, or a fixed value.
                    match &model.member {
                        // A member whose join may have reached the
                        // coordinator leaves under the id it joined with.
                        _ if r.member_epoch == LEAVE_GROUP_MEMBER_EPOCH => match &model.member {
                            Some((id, _)) => prop_assert_eq!(&r.member_id, id),
                            None => prop_assert_eq!(r.member_id.len(), 32),
                        },
                        None => {
                            prop_assert_eq!(r.member_epoch, JOIN_GROUP_MEMBER_EPOCH);
                            prop_assert_eq!(r.member_id.len(), 32);
                            prop_assert!(r.subscribed_topics.is_some());
                        }
                        Some((id, epoch)) => {
                            prop_assert_eq!(&r.member_id, id);
                            prop_assert_eq!(r.member_epoch, *epoch);
                            prop_assert!(r.subscribed_topics.is_none());
                        }
                    }
                    // It reports exactly what the consumer holds and has
                    // not lost, and never a partition released and not
                    // handed out since.
                    let owned = owned_of(&r);
                    let expected: BTreeSet<Key> =
                        model.held.difference(&model.lost).cloned().collect();
                    prop_assert_eq!(&owned, &expected);
                    prop_assert!(owned.is_disjoint(&model.released));
                    in_flight = Some(r);
                }
            }
            Step::Answer(reply) => {
                let Some(sent) = in_flight.take() else {
                    continue;
                };
                let was_leave = sent.member_epoch == LEAVE_GROUP_MEMBER_EPOCH;
                let answer = match reply {
                    Reply::Ok { epoch, assignment } => {
                        let id = sent.member_id.is_empty().then(|| {
                            ids += 1;
                            format!("m-{ids}")
                        });
                        let a = assignment.map(subset);
                        let mut answer = ok(None, epoch, None);
                        answer.member_id = id.clone();
                        answer.assignment = a.as_ref().map(to_topic_partitions);
                        if !was_leave {
                            let id = id.unwrap_or_else(|| sent.member_id.clone());
                            model.member = Some((id, epoch));
                        }
                        answer
                    }
                    Reply::Removed(code) => {
                        if !was_leave {
                            model.lost.extend(model.held.iter().cloned());
                            model.member = None;
                        }
                        refused(code)
                    }
                    Reply::Retriable => refused(ErrorCode::CoordinatorNotAvailable),
                };
                let released_before = m.released_since_sent;
                m.on_answer(now, answer.clone());
                if was_leave {
                    prop_assert!(matches!(m.phase(), Phase::Left));
                } else if answer.error.is_ok() && matches!(m.phase(), Phase::Member) {
                    let next = if released_before {
                        now
                    } else {
                        now + u64::from(INTERVAL_MS)
                    };
                    prop_assert_eq!(m.next_heartbeat_at_ms(), Some(next));
                }
            }
            Step::Fail => {
                if in_flight.take().is_some() {
                    m.on_failure(now, ClientError::Timeout { ms: 1 });
                }
            }
            Step::Take => {
                let target = m.target().clone();
                let c = m.take_changes();
                prop_assert!(c.assigned.is_subset(&target));
                prop_assert!(c.revoked.is_disjoint(&target));
                prop_assert!(c.revoked.is_subset(&model.held));
                let still_held: BTreeSet<Key> =
                    model.held.difference(&model.lost).cloned().collect();
                prop_assert!(c.assigned.is_disjoint(&still_held));
                // Everything the model knows lost is reported lost.
                prop_assert!(
                    model
                        .lost
                        .intersection(&model.held)
                        .all(|p| c.lost.contains(p))
                );
                for p in &c.lost {
                    model.held.remove(p);
                    model.revoking.remove(p);
                }
                model.lost.clear();
                model.revoking.extend(c.revoked.iter().cloned());
                for p in &c.assigned {
                    model.held.insert(p.clone());
                    model.released.remove(p);
                }
            }
            Step::Release(bits) => {
                let chosen = pick(bits, &model.revoking);
                let was_due = m.next_heartbeat_at_ms();
                m.released(now, &chosen);
                for p in &chosen {
                    model.held.remove(p);
                    model.revoking.remove(p);
                    model.released.insert(p.clone());
                }
                let actually = chosen.iter().any(|p| !model.lost.contains(p));
                if actually && was_due.is_some() && matches!(m.phase(), Phase::Member) {
                    prop_assert!(
                        m.next_heartbeat_at_ms().is_some_and(|t| t <= now),
                        "at once"
                    );
                }
            }
            Step::Commit(bits, any) => {
                let chosen = if any {
                    subset(bits)
                } else {
                    pick(bits, &model.held)
                };
                let offsets: BTreeMap<Key, CommitOffset> = chosen
                    .into_iter()
                    .map(|k| {
                        (
                            k,
                            CommitOffset {
                                offset: 1,
                                leader_epoch: 0,
                            },
                        )
                    })
                    .collect();
                if let Ok(r) = m.commit_request(&offsets) {
                    let committed = from_topic_partitions(
                        &r.topics
                            .iter()
                            .map(|t| TopicPartitions {
                                topic: t.name.clone(),
                                partitions: t.partitions.iter().map(|p| p.partition).collect(),
                            })
                            .collect::<Vec<_>>(),
                    );
                    prop_assert!(committed.is_disjoint(&model.lost), "a lost partition");
                    prop_assert!(committed.is_subset(&model.held));
                    prop_assert!(committed.is_disjoint(&model.released));
                    let Some((id, epoch)) = model.member.clone() else {
                        return Err(TestCaseError::fail("a commit while not a member"));
                    };
                    prop_assert_eq!(r.member_id, id);
                    prop_assert_eq!(r.member_epoch, epoch);
                }
            }
            Step::Leave => m.leave(now),
        }
        // The machine's own bookkeeping agrees with the model.
        prop_assert!(m.revoking.is_subset(&m.owned));
        let expected: BTreeSet<Key> = model.held.difference(&model.lost).cloned().collect();
        prop_assert_eq!(m.owned(), &expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_runs_keep_the_membership_invariants(
        steps in proptest::collection::vec(step(), 0..120)
    ) {
        run(steps)?;
    }
}
