//! A peer's Raft message is checked against the replica before raft-rs
//! takes it: raft-rs 0.7 trusts its peers and aborts on a message that
//! breaks Raft's rules (an entry conflicting with a committed one, a gap in
//! an append, a commit past the log, a snapshot it cannot restore), which
//! took the whole broker down. Each such message is refused with
//! [`ReplicationError::RefusedMessage`], raft-rs never sees it, and the
//! group goes on serving its real leader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use helpers::{
    GROUP, data_batch, data_entry, node_123, node_in, settle, small_config, to_leader, voters_123,
};
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use rill_replication::storage::snapshot_data;
use rill_replication::{BrokerId, Event, GroupId, Node, Outgoing, ReplicationError};
use rill_storage::{Offset, RaftIndex};

/// Broker `me`'s node with one `fsync=true` group of voters 1, 2 and 3.
fn node(me: u64, dir: &std::path::Path) -> Node {
    node_123(me, dir, small_config())
}

/// `from`'s append to broker 2 in `term`: `entries` after the entry at
/// `index` of term `log_term`, with the sender's commit index `commit`.
fn append_from(
    from: u64,
    term: u64,
    (index, log_term): (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = 2;
    m.term = term;
    m.index = index;
    m.log_term = log_term;
    m.commit = commit;
    m.set_entries(entries.into());
    m
}

/// A case of a refused append: what is wrong, and the message's term,
/// position after which it appends, and entries.
type AppendCase = (&'static str, u64, (u64, u64), Vec<Entry>);

/// A data entry at `index` of `term`, holding two records.
fn entry(index: u64, term: u64) -> Entry {
    data_entry(index, term, &data_batch(index, 2))
}

/// The indexes acknowledged by the accepted append responses in `out`.
fn acknowledged(out: &[Outgoing]) -> Vec<u64> {
    out.iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppendResponse)
        .filter(|o| !o.message.reject)
        .map(|o| o.message.index)
        .collect()
}

/// Follower 2 of leader 1 (term 1) with entries 1 to 3 written, synced and
/// committed.
fn follower_with_three_committed(dir: &std::path::Path) -> Node {
    let mut follower = node(2, dir);
    let entries = (1..=3).map(|i| entry(i, 1)).collect();
    follower
        .step(GROUP, append_from(1, 1, (0, 0), entries, 3))
        .unwrap();
    let (out, events) = settle(&mut follower);
    assert_eq!(acknowledged(&out), vec![3]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Committed { index, .. } if index.get() == 3)),
        "entries 1 to 3 committed: {events:?}"
    );
    follower
}

/// Asserts that `result` is a refusal of a peer's message, and that
/// raft-rs never saw the message: no Ready, nothing said.
fn assert_refused(follower: &mut Node, result: Result<(), ReplicationError>, what: &str) {
    let err = result.expect_err(what);
    assert!(
        matches!(err, ReplicationError::RefusedMessage { group: GROUP, .. }),
        "{what}: {err}"
    );
    let (out, events) = settle(follower);
    assert!(out.is_empty(), "{what}: raft-rs never saw it, got {out:?}");
    assert!(events.is_empty(), "{what}: {events:?}");
}

/// Asserts that the follower still serves leader 1 in term 1: the next
/// entry is taken, synced and acknowledged, and nothing failed.
fn assert_serves_leader_1(follower: &mut Node, next: u64) {
    follower
        .step(
            GROUP,
            append_from(1, 1, (next - 1, 1), vec![entry(next, 1)], next),
        )
        .unwrap();
    let (out, events) = settle(follower);
    assert_eq!(acknowledged(&out), vec![next]);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Failed { .. })),
        "no group failed: {events:?}"
    );
    let status = follower.status(GROUP).unwrap();
    assert_eq!(status.leader, Some(BrokerId(1)));
    assert_eq!(
        status.term.get(),
        1,
        "the refused messages' term was never taken"
    );
    assert_eq!(status.last_index, RaftIndex(next));
    assert_eq!(status.commit, RaftIndex(next));
}

#[test]
fn forged_append_conflicting_with_a_committed_entry_is_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_with_three_committed(dir.path());

    // Voter 3, in a higher term, claims index 3 (committed, term 1) holds
    // a term-2 entry. raft-rs 0.7 aborts on it ("entry 3 conflict with
    // committed entry 3"), and the broker with it, at every restart.
    let forged = append_from(3, 2, (3, 1), vec![entry(3, 2)], 3);
    let result = follower.step(GROUP, forged);
    assert_refused(&mut follower, result, "an entry at the committed index");

    // The same claim made consistently (after index 2) is refused too: a
    // committed entry is final.
    let forged = append_from(3, 2, (2, 1), vec![entry(3, 2), entry(4, 2)], 4);
    let result = follower.step(GROUP, forged);
    assert_refused(&mut follower, result, "a committed entry replaced");

    // And so is a claim that the committed entry before the append has
    // another term.
    let forged = append_from(3, 2, (3, 2), vec![entry(4, 2)], 4);
    let result = follower.step(GROUP, forged);
    assert_refused(&mut follower, result, "a committed entry's term denied");

    assert_serves_leader_1(&mut follower, 4);
}

#[test]
fn append_with_non_consecutive_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_with_three_committed(dir.path());

    let cases: [(&str, (u64, u64), Vec<Entry>); 4] = [
        ("a gap after the index", (3, 1), vec![entry(5, 1)]),
        (
            "a gap between entries",
            (3, 1),
            vec![entry(4, 1), entry(6, 1)],
        ),
        ("an entry repeated", (3, 1), vec![entry(4, 1), entry(4, 1)]),
        (
            "entries out of order",
            (3, 1),
            vec![entry(5, 1), entry(4, 1)],
        ),
    ];
    for (what, after, entries) in cases {
        let result = follower.step(GROUP, append_from(1, 1, after, entries, 3));
        assert_refused(&mut follower, result, what);
    }
    // Indexes that would overflow.
    let result = follower.step(
        GROUP,
        append_from(1, 1, (u64::MAX, 1), vec![entry(0, 1)], 3),
    );
    assert_refused(&mut follower, result, "an index past u64::MAX");

    assert_serves_leader_1(&mut follower, 4);
}

#[test]
fn append_whose_terms_break_raft_ordering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_with_three_committed(dir.path());

    let cases: [AppendCase; 5] = [
        (
            "an entry term above the message's",
            1,
            (3, 1),
            vec![entry(4, 2)],
        ),
        (
            "entry terms going down",
            2,
            (3, 1),
            vec![entry(4, 2), entry(5, 1)],
        ),
        (
            "an entry term below the previous entry's",
            2,
            (3, 2),
            vec![entry(4, 1)],
        ),
        // raft-rs reads a term of 0 past its log: it would take this
        // append as matching, and abort on the gap it leaves.
        (
            "term 0 for an index past the log",
            1,
            (9, 0),
            vec![entry(10, 1)],
        ),
        // ... and take this entry as present, then commit past its log.
        ("an entry of term 0", 1, (3, 1), vec![entry(4, 0)]),
    ];
    for (what, term, after, entries) in cases {
        let result = follower.step(GROUP, append_from(1, term, after, entries, 4));
        assert_refused(&mut follower, result, what);
    }

    assert_serves_leader_1(&mut follower, 4);
}

#[test]
fn message_not_addressed_here_or_not_from_another_member_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_with_three_committed(dir.path());

    let mut to_other = append_from(1, 1, (3, 1), vec![entry(4, 1)], 4);
    to_other.to = 3;
    let mut from_stranger = append_from(1, 1, (3, 1), vec![entry(4, 1)], 4);
    from_stranger.from = 9;
    let mut from_itself = append_from(1, 1, (3, 1), vec![entry(4, 1)], 4);
    from_itself.from = 2;
    let mut read_index = Message::default();
    read_index.set_msg_type(MessageType::MsgReadIndex);
    read_index.from = 1;
    read_index.to = 2;
    read_index.term = 1;
    for (what, m) in [
        ("addressed to another broker", to_other),
        ("from a broker outside the group", from_stranger),
        ("from this broker itself", from_itself),
        ("a read-index request, which rill never sends", read_index),
    ] {
        let result = follower.step(GROUP, m);
        assert_refused(&mut follower, result, what);
    }

    assert_serves_leader_1(&mut follower, 4);
}

/// `from`'s snapshot for broker 2, in `term`, at `index` of `snap_term`,
/// of `members`, whose log restarts at offset `next_offset`.
fn snapshot_from(
    from: u64,
    term: u64,
    (index, snap_term): (u64, u64),
    members: ConfState,
    next_offset: u64,
) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = 2;
    m.term = term;
    let mut meta = SnapshotMetadata {
        index,
        term: snap_term,
        ..SnapshotMetadata::default()
    };
    meta.set_conf_state(members);
    let mut snap = Snapshot {
        data: snapshot_data(Offset(next_offset), RaftIndex(0)),
        ..Snapshot::default()
    };
    snap.set_metadata(meta);
    m.set_snapshot(snap);
    m
}

#[test]
fn snapshot_that_cannot_be_restored_consistently_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_with_three_committed(dir.path());
    // Entries 1 to 3 hold two records each: the high watermark is 6.
    let members = voters_123().to_raft();
    let both_voter_and_learner = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![3],
        ..ConfState::default()
    };
    let members_without_me = ConfState {
        voters: vec![1, 3, 4],
        ..ConfState::default()
    };
    // The group moved a replica from broker 3 to 4 while this one lagged.
    let moved_on = ConfState {
        voters: vec![1, 2, 4],
        ..ConfState::default()
    };
    let mut bad_data = snapshot_from(1, 1, (10, 1), members.clone(), 100);
    bad_data.mut_snapshot().data = bytes::Bytes::from_static(b"not an offset");
    let mut no_snapshot = snapshot_from(1, 1, (10, 1), members.clone(), 100);
    no_snapshot.clear_snapshot();
    for (what, m) in [
        (
            "a membership raft-rs cannot restore",
            snapshot_from(1, 1, (10, 1), both_voter_and_learner, 100),
        ),
        (
            "a membership without this broker",
            snapshot_from(1, 1, (10, 1), members_without_me, 100),
        ),
        (
            "a log start below the high watermark",
            snapshot_from(1, 1, (10, 1), members.clone(), 2),
        ),
        (
            "a snapshot term above the message's",
            snapshot_from(1, 1, (10, 2), members.clone(), 100),
        ),
        (
            "a snapshot term of 0",
            snapshot_from(1, 1, (10, 0), members.clone(), 100),
        ),
        ("data that is not a log start", bad_data),
        ("no snapshot at all", no_snapshot),
    ] {
        let result = follower.step(GROUP, m);
        assert_refused(&mut follower, result, what);
    }
    assert_serves_leader_1(&mut follower, 4);

    // A consistent one is installed, with the membership the group has
    // moved on to.
    follower
        .step(GROUP, snapshot_from(1, 1, (10, 1), moved_on, 100))
        .unwrap();
    let (out, events) = settle(&mut follower);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Restored { index, .. } if index.get() == 10)),
        "{events:?}"
    );
    assert_eq!(acknowledged(&out), vec![10]);
    let voters = follower.status(GROUP).unwrap().membership.voters;
    assert_eq!(voters, [BrokerId(1), BrokerId(2), BrokerId(4)]);
}

/// Broker 1 as the leader of the group; see [`helpers::elected_leader`].
fn elected_leader(dir: &std::path::Path) -> (Node, u64) {
    helpers::elected_leader(dir, small_config())
}

#[test]
fn leader_refuses_answers_past_its_log_and_read_index_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, term) = elected_leader(dir.path());
    let last = leader.status(GROUP).unwrap().last_index.get();

    let mut past_the_log = to_leader(MessageType::MsgAppendResponse, term);
    past_the_log.index = last + 100;
    // raft-rs 0.7 reads the first entry of a read-index request without
    // looking: an empty one aborts it.
    let read_index = to_leader(MessageType::MsgReadIndex, term);
    let mut snapshot_request = to_leader(MessageType::MsgAppendResponse, term);
    snapshot_request.reject = true;
    snapshot_request.index = last;
    snapshot_request.request_snapshot = last;
    // raft-rs probes broker 3 (sent the entries after `last - 1` when the
    // leader was elected) again from the hint plus one, unchecked.
    let mut hint_past_the_log = to_leader(MessageType::MsgAppendResponse, term);
    hint_past_the_log.from = 3;
    hint_past_the_log.reject = true;
    hint_past_the_log.index = last - 1;
    hint_past_the_log.log_term = term;
    hint_past_the_log.reject_hint = u64::MAX;
    for (what, m) in [
        ("an acknowledgement past the leader's log", past_the_log),
        (
            "a rejection hinting past the leader's log",
            hint_past_the_log,
        ),
        ("a read-index request", read_index),
        ("a snapshot request", snapshot_request),
    ] {
        let err = leader.step(GROUP, m).expect_err(what);
        assert!(
            matches!(err, ReplicationError::RefusedMessage { .. }),
            "{what}: {err}"
        );
        let status = leader.status(GROUP).unwrap();
        assert_eq!(
            status.matched,
            vec![
                (BrokerId(1), RaftIndex(last)),
                (BrokerId(2), RaftIndex(last)),
                (BrokerId(3), RaftIndex(0)),
            ],
            "{what}: no match index moved"
        );
    }

    // The leader goes on: a proposal commits with broker 2's acknowledgement.
    let batch = rill_replication::CheckedBatch::new(
        bytes::Bytes::from(data_batch(1, 2)),
        small_config().max_batch_bytes,
    )
    .unwrap()
    .expect("a data batch");
    let proposed = leader.propose(GROUP, batch).unwrap();
    settle(&mut leader);
    let mut ack = to_leader(MessageType::MsgAppendResponse, term);
    ack.index = proposed.index.get();
    leader.step(GROUP, ack).unwrap();
    let (_, events) = settle(&mut leader);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Committed { index, .. } if *index == proposed.index)),
        "{events:?}"
    );
}

#[test]
fn the_controllers_replicas_take_a_leader_outside_their_membership_partitions_do_not() {
    // Broker 4 joins the controller, whose first voters are 1, 2 and 3,
    // led now by broker 5, which joined after them: it replays the log
    // from the start, so it learns of broker 5 only from what broker 5
    // sends it.
    let dir = tempfile::tempdir().unwrap();
    let (mut joining, _) = node_in(
        GroupId::CONTROLLER,
        4,
        voters_123(),
        dir.path(),
        small_config(),
    );
    let mut append = append_from(5, 3, (0, 0), vec![entry(1, 1), entry(2, 3)], 2);
    append.to = 4;
    joining.step(GroupId::CONTROLLER, append).unwrap();
    let (out, _) = settle(&mut joining);
    assert_eq!(acknowledged(&out), vec![2]);
    assert!(out.iter().all(|o| o.to == BrokerId(5)));
    // Its other rules still hold: an append with a gap is refused.
    let mut gap = append_from(5, 3, (2, 3), vec![entry(4, 3)], 2);
    gap.to = 4;
    let err = joining.step(GroupId::CONTROLLER, gap).unwrap_err();
    assert!(
        matches!(err, ReplicationError::RefusedMessage { .. }),
        "{err}"
    );

    // A partition's replica takes its members alone, in its membership
    // or not.
    let dir = tempfile::tempdir().unwrap();
    let mut outside = node(4, dir.path());
    let mut stranger = append_from(5, 3, (0, 0), vec![entry(1, 1)], 1);
    stranger.to = 4;
    let result = outside.step(GROUP, stranger);
    assert_refused(
        &mut outside,
        result,
        "a partition's message from a non-member",
    );
}
