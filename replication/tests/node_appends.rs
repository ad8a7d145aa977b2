//! A node's appends: one carrying an invalid entry is refused whole before
//! raft-rs takes it, and the group goes on; a leader's appends name where
//! their entries lie in its segments once the round is written, so the
//! transport can send them from the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use bytes::Bytes;
use helpers::deferred_rounds::{acknowledged, append, elected_leader_and_log, node_and_log, round};
use helpers::{GROUP, data_batch, data_entry, small_config, voters_123};
use raft::eraftpb::{Message, MessageType};
use rill_replication::{CheckedBatch, Outgoing, ReplicationError, SyncJob};
use rill_storage::RaftIndex;

/// Damage done to a batch's bytes.
type Spoiler = fn(&mut Vec<u8>);

/// Leader 1's append, in term 1, of entries 2 and 3 after entry 1, the
/// second with `spoil` applied to its batch.
fn append_spoiled(spoil: impl FnOnce(&mut Vec<u8>)) -> Message {
    let mut m = append(2);
    let mut bad = data_batch(3, 2);
    spoil(&mut bad);
    m.set_entries(vec![data_entry(2, 1, &data_batch(2, 2)), data_entry(3, 1, &bad)].into());
    m
}

#[test]
fn an_append_with_an_invalid_entry_is_refused_whole_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut follower, log) = node_and_log(2, voters_123(), dir.path());
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());

    let spoilers: [(&str, Spoiler); 3] = [
        ("a record byte flipped under the CRC", |b| {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        }),
        ("the batch cut short", |b| b.truncate(b.len() - 3)),
        ("the length field changed", |b| b[0] ^= 0x01),
    ];
    for (what, spoil) in spoilers {
        let err = follower.step(GROUP, append_spoiled(spoil)).unwrap_err();
        assert!(
            matches!(err, ReplicationError::RefusedEntry { index: 3, .. }),
            "{what}: {err}"
        );
        let (syncs, out) = round(&mut follower);
        assert!(
            syncs.is_empty() && out.is_empty(),
            "{what}: raft-rs never saw the append (no Ready, no response)"
        );
        assert_eq!(
            log.next_raft_index(),
            RaftIndex(2),
            "{what}: not even the valid entry before it was taken"
        );
    }

    // The leader's resend, intact, is taken as if nothing had happened.
    follower.step(GROUP, append_spoiled(|_| {})).unwrap();
    let (syncs, _) = round(&mut follower);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    follower.complete_syncs(syncs.run(), &mut out, &mut events);
    assert_eq!(acknowledged(&out), vec![3]);
    assert!(events.is_empty(), "no group failed: {events:?}");
    assert_eq!(log.next_raft_index(), RaftIndex(4));
}

#[test]
fn a_leaders_appends_name_where_their_written_entries_lie_in_its_segments() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _log) = elected_leader_and_log(dir.path(), small_config());
    let data = Bytes::from(data_batch(9, 200));
    assert!(data.len() >= rill_replication::wire::ZERO_COPY_BYTES_MIN);
    leader
        .propose(
            GROUP,
            CheckedBatch::new(data.clone(), 1 << 20).unwrap().unwrap(),
        )
        .unwrap();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut jobs = Vec::new();
    let mut round = leader.start_round(&mut out, &mut events);
    let carrying = |out: &[Outgoing]| {
        out.iter()
            .filter(|o| o.message.get_msg_type() == MessageType::MsgAppend)
            .filter(|o| o.message.get_entries().iter().any(|e| e.data == data))
            .count()
    };
    assert_eq!(carrying(&out), 2, "the batch goes to both followers");
    leader.attach_file_spans(&mut out);
    assert!(
        out.iter().all(|o| o.spans.iter().all(Option::is_none)),
        "nothing is in the segments before the round is written"
    );
    leader.write_round(&mut round, &mut jobs, &mut events);
    leader.attach_file_spans(&mut out);
    let mut spans = 0;
    for o in out
        .iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppend)
    {
        let entries = o.message.get_entries();
        for (j, e) in entries.iter().enumerate() {
            let span = o.spans.get(j).and_then(Option::as_ref);
            if e.data.len() < rill_replication::wire::ZERO_COPY_BYTES_MIN {
                assert!(span.is_none(), "small entries go from memory");
                continue;
            }
            let span = span.expect("a written data entry has a span");
            spans += 1;
            let mut stored = vec![0; span.len as usize];
            span.file.read_exact_at(&mut stored, span.offset).unwrap();
            // The stored copy is the batch, stamped (offset, term, index)
            // in the header fields the CRC does not cover.
            assert_eq!(stored.len(), data.len());
            assert_eq!(stored[32..], data[32..]);
            assert_eq!(&stored[..4], &data[..4]);
        }
    }
    assert_eq!(spans, 2, "one per follower's append");
    let syncs = leader.defer_syncs(&mut round, &mut jobs);
    let results = jobs.into_iter().map(SyncJob::run).collect();
    leader.finish_round(round, results, &mut out, &mut events);
    leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());
}

#[test]
fn an_append_with_a_membership_change_rill_did_not_encode_is_refused_whole() {
    use raft::eraftpb::{Entry, EntryType};
    use rill_replication::conf::MembershipChange;
    let dir = tempfile::tempdir().unwrap();
    let (mut follower, log) = node_and_log(2, voters_123(), dir.path());
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());

    let change = MembershipChange::AddLearner(rill_replication::BrokerId(4));
    let entry = |ty, data: Vec<u8>, context: Vec<u8>| {
        let mut e = Entry {
            term: 1,
            index: 3,
            data: data.into(),
            context: context.into(),
            ..Entry::default()
        };
        e.set_entry_type(ty);
        e
    };
    let other = MembershipChange::AddLearner(rill_replication::BrokerId(5));
    let refused = [
        (
            "version 1",
            entry(
                EntryType::EntryConfChange,
                change.raft_data(),
                change.encode(),
            ),
        ),
        (
            "data of another change",
            entry(
                EntryType::EntryConfChangeV2,
                other.raft_data(),
                change.encode(),
            ),
        ),
        (
            "no context",
            entry(EntryType::EntryConfChangeV2, change.raft_data(), vec![]),
        ),
        (
            "a context cut short",
            entry(
                EntryType::EntryConfChangeV2,
                change.raft_data(),
                change.encode()[..5].to_vec(),
            ),
        ),
        (
            "a no-op with a context",
            entry(EntryType::EntryNormal, vec![], b"ctx".to_vec()),
        ),
    ];
    for (what, bad) in refused {
        let mut m = append(2);
        m.set_entries(vec![data_entry(2, 1, &data_batch(2, 2)), bad].into());
        let err = follower.step(GROUP, m).unwrap_err();
        assert!(
            matches!(err, ReplicationError::RefusedEntry { index: 3, .. }),
            "{what}: {err}"
        );
        assert_eq!(log.next_raft_index(), RaftIndex(2), "{what}");
    }

    // The change as rill encodes it is taken.
    let mut m = append(2);
    m.set_entries(
        vec![
            data_entry(2, 1, &data_batch(2, 2)),
            entry(
                EntryType::EntryConfChangeV2,
                change.raft_data(),
                change.encode(),
            ),
        ]
        .into(),
    );
    follower.step(GROUP, m).unwrap();
    let (syncs, _) = round(&mut follower);
    follower.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());
    assert_eq!(log.next_raft_index(), RaftIndex(4));
}
