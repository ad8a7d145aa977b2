//! The log's table of idempotent producers: every batch appended is
//! recorded, a truncation forgets what it cut, a reset forgets everything,
//! and reopening rebuilds the table from the segments.
#![allow(clippy::unwrap_used)]

mod common;

use common::small_config;
use rill_storage::producers::{ProducerSequence, SequenceCheck, StoredAt};
use rill_storage::{
    BatchBuilder, Log, LogPosition, NewRecord, Offset, ProducerStamp, RaftIndex, Term,
};

/// A batch of `records` records from producer `id` at `epoch`, its first
/// sequence `first`.
fn producer_batch(id: i64, epoch: i16, first: i32, records: u32) -> Vec<u8> {
    let mut b = BatchBuilder::new(16 * 1024);
    b.producer(ProducerStamp {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: first,
    });
    for i in 0..records {
        let value = format!("p{id}-{:0>100}", first as u32 + i);
        assert!(b.push(&NewRecord::value(value.as_bytes(), 1_000)).unwrap());
    }
    b.finish().unwrap()
}

fn sequence(id: i64, epoch: i16, first: i32, records: u32) -> ProducerSequence {
    ProducerSequence {
        producer_id: id,
        epoch,
        first,
        last: first + records as i32 - 1,
    }
}

#[test]
fn appended_batches_are_recognised_when_sent_again_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let first = log.append(&producer_batch(5, 0, 0, 3), Term(1)).unwrap();
    log.append(&producer_batch(5, 0, 3, 2), Term(1)).unwrap();
    let table = log.producers();
    assert_eq!(
        table.check(&sequence(5, 0, 0, 3), &[]),
        SequenceCheck::Duplicate(StoredAt {
            base_offset: Offset(0),
            next_offset: Offset(3),
            raft_index: first.raft_index,
            term: Term(1),
        })
    );
    assert_eq!(
        table.check(&sequence(5, 0, 5, 1), &[]),
        SequenceCheck::Append
    );
    assert!(matches!(
        table.check(&sequence(5, 0, 6, 1), &[]),
        SequenceCheck::OutOfOrder { expected: 5, .. }
    ));
}

#[test]
fn batches_without_a_producer_are_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&common::batch_at(0, 3, 10, 1_000), Term(1))
        .unwrap();
    assert!(log.producers().is_empty());
}

#[test]
fn a_truncated_batch_is_forgotten_and_may_be_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&producer_batch(5, 0, 0, 1), Term(1)).unwrap();
    let cut = log.append(&producer_batch(5, 0, 1, 1), Term(1)).unwrap();
    log.truncate_suffix(cut.raft_index).unwrap();
    assert_eq!(
        log.producers().check(&sequence(5, 0, 1, 1), &[]),
        SequenceCheck::Append
    );
    log.append(&producer_batch(5, 0, 1, 1), Term(2)).unwrap();
    assert!(matches!(
        log.producers().check(&sequence(5, 0, 1, 1), &[]),
        SequenceCheck::Duplicate(at) if at.term == Term(2)
    ));
}

#[test]
fn a_reset_to_a_snapshot_point_forgets_every_producer() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&producer_batch(5, 0, 0, 1), Term(1)).unwrap();
    let next = LogPosition {
        offset: Offset(100),
        raft_index: RaftIndex(50),
    };
    let _expired = log.reset_to(next, Term(3)).unwrap();
    assert!(log.producers().is_empty());
}

#[test]
fn reopening_rebuilds_the_table_from_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut appended = Vec::new();
    {
        let mut log = Log::open(dir.path(), small_config()).unwrap();
        // Enough batches to roll several segments, from two producers.
        for i in 0..60 {
            let (id, first) = (i % 2, (i / 2) * 40);
            let a = log
                .append(&producer_batch(id, 1, first as i32, 40), Term(1))
                .unwrap();
            appended.push((id, first, a));
        }
        assert!(log.segment_count() > 2);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers().len(), 2);
    for (id, first, a) in appended.iter().rev().take(10) {
        assert_eq!(
            log.producers()
                .check(&sequence(*id, 1, *first as i32, 40), &[]),
            SequenceCheck::Duplicate(StoredAt {
                base_offset: a.base_offset,
                next_offset: a.next_offset,
                raft_index: a.raft_index,
                term: a.term,
            })
        );
    }
    assert_eq!(
        log.producers().check(&sequence(0, 1, 1200, 1), &[]),
        SequenceCheck::Append
    );
}

#[test]
fn producers_idle_past_their_expiry_are_forgotten_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), small_config()).unwrap();
        log.append(&producer_batch(5, 0, 0, 1), Term(1)).unwrap();
        log.close().unwrap();
    }
    let clock = std::sync::Arc::new(rill_storage::ManualClock::new(
        rill_storage::Clock::now_ms(&rill_storage::SystemClock) + 2 * 24 * 3600 * 1000,
    ));
    let log = Log::open_with_clock(dir.path(), small_config(), clock).unwrap();
    assert!(log.producers().is_empty());
}

#[test]
fn a_restamped_batch_validates_and_carries_its_new_epoch_and_sequence() {
    let mut bytes = producer_batch(5, 0, 40, 3);
    rill_storage::batch::restamp_producer(&mut bytes, 1, 0);
    let header = rill_storage::batch::validate(&bytes, 16 * 1024).unwrap();
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (5, 1, 0)
    );
}
