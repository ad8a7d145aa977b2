//! raft-rs's `Storage` over the segment log, its entries: a fresh replica,
//! entries read back as they were appended (across reopens and segments),
//! conflicts that replace the suffix, and appends refused with the log left
//! as it was.
#![allow(clippy::unwrap_used)]

mod helpers;

use bytes::Bytes;
use helpers::replica_log::*;
use helpers::{
    conf_change, data_batch, data_entry, noop, open_memory, small_config, stored_batch, unstamped,
    value,
};
use raft::Storage;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState as RaftHardState};
use rill_replication::ReplicationError;
use rill_replication::state::MemoryStateStore;
use rill_replication::storage::ReplicaLog;
use rill_storage::{Offset, RaftIndex};

#[test]
fn a_fresh_replica_has_its_membership_a_default_hard_state_and_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let rl = open_memory(dir.path(), &MemoryStateStore::default());
    let rs = rl.initial_state().unwrap();
    assert_eq!(rs.hard_state, RaftHardState::default());
    assert_eq!(
        rs.conf_state,
        ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        }
    );
    assert_eq!(rl.first_index().unwrap(), 1);
    assert_eq!(last_index(&rl), 0);
    assert_eq!(rl.term(0).unwrap(), 0);
    assert!(is_unavailable(rl.term(1)));
    assert!(is_unavailable(rl.entries(1, 2, None, ctx())));
    assert_eq!(rl.entries(1, 1, None, ctx()).unwrap(), Vec::<Entry>::new());
    assert_eq!(rl.next_offset_after(RaftIndex(0)).unwrap(), Offset(0));
    let snap = rl.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 0);
    assert_eq!(snap.get_metadata().term, 0);
}

// ---------------------------------------------------------------------------
// Appending and reading back.
// ---------------------------------------------------------------------------

#[test]
fn data_noop_and_conf_change_entries_read_back_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let mut v2 = conf_change(6, 2);
    v2.set_entry_type(EntryType::EntryConfChangeV2);
    v2.context = Bytes::new();
    let appended = vec![
        noop(1, 1),
        data_entry(2, 1, &data_batch(2, 3)),
        conf_change(3, 1),
        data_entry(4, 2, &data_batch(4, 5)),
        noop(5, 2),
        v2,
        data_entry(7, 3, &data_batch(7, 1)),
    ];
    // Offsets each entry starts at: no-ops and conf changes take none.
    let offsets = [0, 0, 3, 3, 8, 8, 8];
    let after = [0, 3, 3, 8, 8, 8, 9];
    // As a follower would: in two Readies.
    rl.append(&appended[..3], false).unwrap();
    rl.append(&appended[3..], false).unwrap();

    assert_eq!(rl.first_index().unwrap(), 1);
    assert_eq!(last_index(&rl), 7);
    let read = entries(&rl, 1, 8);
    assert_eq!(read.len(), 7);
    for (i, (r, a)) in read.iter().zip(&appended).enumerate() {
        assert_same_entry(r, a, Offset(offsets[i]));
        assert_eq!(rl.term(a.index).unwrap(), a.term);
        assert_eq!(
            rl.next_offset_after(RaftIndex(a.index)).unwrap(),
            Offset(after[i]),
            "next offset after {}",
            a.index
        );
    }
    // The records of the data entries carry the offsets they were given.
    let rec_offsets: Vec<(u64, Vec<u8>)> = [&read[1], &read[3], &read[6]]
        .iter()
        .flat_map(|e| {
            let b = stored_batch(e);
            b.records()
                .map(|r| {
                    let r = r.unwrap();
                    (r.offset.get(), r.value.unwrap().to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = (0..3)
        .map(|i| (i, value(2, i)))
        .chain((0..5).map(|i| (3 + i, value(4, i))))
        .chain([(8, value(7, 0))])
        .collect();
    assert_eq!(rec_offsets, expected);
    // Sub-ranges read the same.
    for lo in 1..=7 {
        for hi in lo..=8 {
            let part = entries(&rl, lo, hi);
            assert_eq!(
                part,
                read[(lo - 1) as usize..(hi - 1) as usize],
                "[{lo}, {hi})"
            );
        }
    }
    assert_eq!(rl.term(0).unwrap(), 0);
    assert!(is_unavailable(rl.term(8)));
}

#[test]
fn entries_read_back_the_same_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    let appended = vec![
        noop(1, 1),
        data_entry(2, 1, &data_batch(2, 2)),
        conf_change(3, 1),
        data_entry(4, 1, &data_batch(4, 1)),
    ];
    rl.append(&appended, false).unwrap();
    let before = entries(&rl, 1, 5);
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 4);
    assert_eq!(entries(&rl, 1, 5), before);
}

#[test]
fn max_size_limits_the_entries_returned_but_never_below_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let all = entries(&rl, 1, 6);
    let size: Vec<u64> = all.iter().map(|e| e.data.len() as u64).collect();
    let count = |max: Option<u64>| rl.entries(1, 6, max, ctx()).unwrap().len();
    assert_eq!(count(None), 5);
    assert_eq!(count(Some(u64::MAX)), 5);
    assert_eq!(count(Some(0)), 1);
    assert_eq!(count(Some(1)), 1);
    assert_eq!(count(Some(size[0])), 1);
    assert_eq!(count(Some(size[0] + size[1] - 1)), 1);
    assert_eq!(count(Some(size[0] + size[1])), 2);
    assert_eq!(count(Some(size[..4].iter().sum::<u64>())), 4);
    assert_eq!(count(Some(size.iter().sum::<u64>())), 5);
    // What is returned is a prefix.
    let two = rl.entries(1, 6, Some(size[0] + size[1]), ctx()).unwrap();
    assert_eq!(two, all[..2]);
    // Never past `high` whatever the budget.
    assert_eq!(rl.entries(2, 4, None, ctx()).unwrap(), all[1..3]);
}

#[test]
fn entries_spanning_several_segments_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    // ~1.3 KiB batches: 150 of them fill several 64 KiB segments.
    let big = |i: u64| {
        let mut b = rill_storage::BatchBuilder::new(small_config().max_batch_bytes);
        let v = vec![b'a' + (i % 26) as u8; 1200];
        assert!(b.push(&rill_storage::NewRecord::value(&v, 0)).unwrap());
        b.finish().unwrap()
    };
    let appended: Vec<Entry> = (1..=150)
        .map(|i| {
            if i % 10 == 0 {
                noop(i, 1 + i / 50)
            } else {
                data_entry(i, 1 + i / 50, &big(i))
            }
        })
        .collect();
    for chunk in appended.chunks(7) {
        rl.append(chunk, false).unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments > 2);
    let check = |rl: &ReplicaLog| {
        let read = entries(rl, 1, 151);
        let mut offset = 0;
        for (r, a) in read.iter().zip(&appended) {
            assert_same_entry(r, a, Offset(offset));
            assert_eq!(rl.term(a.index).unwrap(), a.term);
            if !a.data.is_empty() {
                offset += 1;
            }
            assert_eq!(
                rl.next_offset_after(RaftIndex(a.index)).unwrap(),
                Offset(offset)
            );
        }
        assert_eq!(read.len(), 150);
    };
    check(&rl);
    drop(rl);
    check(&open_memory(dir.path(), &store));
}

#[test]
fn a_conflicting_append_replaces_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    let old = data_entries(1, 6, 1);
    rl.append(&old, false).unwrap();
    let after_3 = rl.next_offset_after(RaftIndex(3)).unwrap();
    // A new leader of term 2 overwrites from index 4, with fewer entries.
    let new = vec![data_entry(4, 2, &data_batch(40, 2)), conf_change(5, 2)];
    rl.append(&new, false).unwrap();
    assert_eq!(last_index(&rl), 5);
    let read = entries(&rl, 1, 6);
    for (r, a) in read[..3].iter().zip(&old[..3]) {
        assert_eq!((r.term, r.index), (a.term, a.index));
        assert_eq!(unstamped(&r.data), a.data.to_vec());
    }
    assert_same_entry(&read[3], &new[0], after_3);
    assert_same_entry(&read[4], &new[1], Offset(after_3.get() + 2));
    assert_eq!(
        (1..=5).map(|i| rl.term(i).unwrap()).collect::<Vec<_>>(),
        vec![1, 1, 1, 2, 2]
    );
    assert!(is_unavailable(rl.term(6)));
    assert!(is_unavailable(rl.entries(1, 7, None, ctx())));
    assert_eq!(
        rl.next_offset_after(RaftIndex(5)).unwrap(),
        Offset(after_3.get() + 2)
    );
    // The old entry 6 is gone for good, and appends continue after 5.
    rl.append(&[data_entry(6, 3, &data_batch(60, 1))], false)
        .unwrap();
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 6);
    let read = entries(&rl, 4, 7);
    assert_eq!(
        read.iter().map(|e| e.term).collect::<Vec<_>>(),
        vec![2, 2, 3]
    );
    assert_eq!(unstamped(&read[0].data), data_batch(40, 2));
    assert_eq!(unstamped(&read[2].data), data_batch(60, 1));
}

#[test]
fn a_conflicting_append_from_the_first_index_replaces_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 4, 1), false).unwrap();
    let new = vec![noop(1, 2), data_entry(2, 2, &data_batch(9, 2))];
    rl.append(&new, false).unwrap();
    assert_eq!(last_index(&rl), 2);
    let read = entries(&rl, 1, 3);
    assert_same_entry(&read[0], &new[0], Offset(0));
    assert_same_entry(&read[1], &new[1], Offset(0));
    assert_eq!(rl.next_offset_after(RaftIndex(2)).unwrap(), Offset(2));
}

#[test]
fn an_append_whose_term_is_below_the_last_entrys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 3, 2), false).unwrap();
    let before = entries(&rl, 1, 4);
    assert!(
        rl.append(&[data_entry(4, 1, &data_batch(4, 1))], false)
            .is_err()
    );
    assert!(rl.append(&[noop(4, 1)], false).is_err());
    assert_eq!(last_index(&rl), 3);
    assert_eq!(entries(&rl, 1, 4), before);
    // Terms within a Ready must not decrease either.
    assert!(rl.append(&[noop(4, 3), noop(5, 2)], false).is_err());
    assert!(rl.term(5).is_err());
}

#[test]
fn an_append_leaving_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 3, 1), false).unwrap();
    assert!(rl.append(&[noop(5, 1)], false).is_err());
    assert_eq!(last_index(&rl), 3);
}

#[test]
fn a_refused_append_leaves_the_log_unchanged_wherever_the_fault_lies() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let before = entries(&rl, 1, 6);
    let mut corrupt = data_batch(9, 2);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x40;
    let good = data_batch(8, 2);
    let refused: [Vec<Entry>; 4] = [
        // A good entry, then a corrupt one: neither lands.
        vec![data_entry(6, 1, &good), data_entry(7, 1, &corrupt)],
        // A conflicting suffix whose replacement is corrupt: nothing cut.
        vec![data_entry(3, 2, &corrupt)],
        // A term lower than the entry before it.
        vec![noop(2, 0)],
        // Indexes that skip.
        vec![data_entry(6, 1, &good), data_entry(8, 1, &good)],
    ];
    for case in refused {
        assert!(rl.append(&case, false).is_err());
        assert_eq!(last_index(&rl), 5);
        assert_eq!(entries(&rl, 1, 6), before);
    }
}

#[test]
fn a_corrupt_data_entry_is_refused_and_the_log_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 3, 1), false).unwrap();
    let before = entries(&rl, 1, 4);
    let good = data_batch(4, 3);
    // Flip a byte in each part of the record area in turn.
    for at in [
        rill_storage::batch::HEADER_BYTES,
        (rill_storage::batch::HEADER_BYTES + good.len()) / 2,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let err = rl.append(&[data_entry(4, 1, &bad)], false).unwrap_err();
        assert!(matches!(err, ReplicationError::Storage(_)), "{err}");
        assert_eq!(last_index(&rl), 3);
        assert_eq!(entries(&rl, 1, 4), before);
        assert_eq!(
            rl.reader().next_offset(),
            Offset(before.iter().map(records_of).sum())
        );
    }
    // The log takes the intact entry at the same index afterwards.
    rl.append(&[data_entry(4, 1, &good)], false).unwrap();
    assert_eq!(last_index(&rl), 4);
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 4);
}

#[test]
fn a_control_batch_as_entry_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let control = rill_storage::control_batch(b"sneaky", -1);
    let err = rl.append(&[data_entry(1, 1, &control)], false).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 1, .. }),
        "{err}"
    );
    assert_eq!(last_index(&rl), 0);
}

#[test]
fn a_data_entry_with_a_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let mut e = data_entry(1, 1, &data_batch(1, 1));
    e.context = Bytes::from_static(b"ctx");
    let err = rl.append(&[e], false).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 1, .. }),
        "{err}"
    );
    assert_eq!(last_index(&rl), 0);
}
