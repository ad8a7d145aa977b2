//! The idempotent producers a log holds batches of, and the check that
//! keeps a retried batch from being stored twice.
//!
//! An idempotent producer stamps each batch with its producer id, an epoch
//! and the sequence number of the batch's first record; sequences count
//! records per partition, from 0, and wrap from `i32::MAX` to 0. For each
//! producer the table keeps its epoch and the last
//! [`PRODUCER_WINDOW_BATCHES`] batches the log holds: their sequences and
//! where they were stored (offsets, Raft index and term). A batch is then:
//! - a *duplicate* when its epoch and first and last sequence match one of
//!   those: it is stored already, and its producer is told where;
//! - *fenced* when its epoch is older than the producer's;
//! - *in order* when it starts at sequence 0 under a newer epoch, or right
//!   after the newest batch under the same epoch, or when the producer is
//!   unknown here (new, expired, or its batches were cut away);
//! - *out of order* otherwise: a batch before it is missing.
//!
//! Invariants: the table never names a batch the log does not hold or did
//! not hold (retention may take a batch it still names: that batch was
//! committed and applied). [`crate::Log`] records every producer batch it
//! appends (leader or follower alike), drops the ones a suffix truncation
//! cuts (a producer whose whole window is cut keeps the sequence it must
//! continue with), empties the table on a reset to a snapshot point, and
//! rebuilds it from the retained segments on open. So a new leader knows every batch its log
//! holds, committed or not, including a previous leader's entries it will
//! commit: a retry sent to it is recognised without waiting for anything.
//! Idle producers are forgotten after `producer_expiration_ms`, and the
//! table holds at most [`PRODUCERS_PER_LOG_MAX`] producers (the longest
//! idle make room), so no client can make it grow without bound.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::types::{Offset, RaftIndex, Term};

/// Batches remembered per producer: as many as a producer may have sent
/// and not yet heard back about per partition. Kafka's producer keeps 5
/// requests of one batch each in flight; rill's packs the batches it sends
/// for the first time into shared requests (5 requests of up to 32 batches
/// of 256 KiB: measured on 3 brokers, capping a partition at 32 unanswered
/// batches, one request's worth, cost W7a about a tenth of its throughput)
/// and holds its unanswered batches per partition to this bound, so a
/// retry of any of them is recognised.
pub const PRODUCER_WINDOW_BATCHES: usize = 160;

/// Batches remembered per log over all its producers, at most (48 bytes
/// each, 3 MiB): past it the idlest producers are forgotten.
pub const PRODUCER_BATCHES_PER_LOG_MAX: usize = 65_536;

/// Producers remembered per log, at most (each holds at most
/// [`PRODUCER_WINDOW_BATCHES`] entries of 48 bytes). Producer ids come
/// from the cluster, one per producer instance; a log written by more at
/// once than this forgets the ones idle longest, whose next batches are
/// then taken as a new producer's.
pub const PRODUCERS_PER_LOG_MAX: usize = 10_000;

/// How often a log looks for producers idle past their expiry, ms.
pub const PRODUCER_SWEEP_MS: i64 = 60_000;

/// The producer fields of a batch: who sent it and which records it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSequence {
    /// The producer id, never negative.
    pub producer_id: i64,
    /// The producer's epoch.
    pub epoch: i16,
    /// Sequence of the batch's first record.
    pub first: i32,
    /// Sequence of its last record.
    pub last: i32,
}

impl ProducerSequence {
    /// The producer fields of `header`; `None` for a batch of no
    /// idempotent producer (producer id -1) and for control batches.
    pub fn of(header: &BatchHeader) -> Option<ProducerSequence> {
        if header.producer_id < 0 || header.is_control() {
            return None;
        }
        // From the offsets, not the records: compaction removes records
        // and keeps the batch's offsets, and the sequence spans them.
        Some(ProducerSequence {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first: header.base_sequence,
            last: sequence_after(header.base_sequence, header.last_offset_delta),
        })
    }

    /// The sequence the producer's next batch starts at.
    pub fn next(&self) -> i32 {
        sequence_after(self.last, 1)
    }
}

/// `sequence` moved on by `records`, wrapping from `i32::MAX` to 0 (as
/// Kafka's sequences do).
pub fn sequence_after(sequence: i32, records: u32) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    let next = (i64::from(sequence.max(0)) + i64::from(records)) % modulus;
    i32::try_from(next).expect("a value below 2^31 fits an i32")
}

/// Where a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// The offset after its last record.
    pub next_offset: Offset,
    /// Its Raft index.
    pub raft_index: RaftIndex,
    /// Its term.
    pub term: Term,
}

/// A producer's batch and where it was stored (or is being proposed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Who sent it and which records it holds.
    pub sequence: ProducerSequence,
    /// Where it is.
    pub at: StoredAt,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Store it.
    Append,
    /// Stored already, there: answer with that, store nothing.
    Duplicate(StoredAt),
    /// A batch before it is missing.
    OutOfOrder {
        /// The sequence the producer's next batch must start at.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// Its epoch is older than the producer's newest.
    Fenced {
        /// The producer's epoch.
        epoch: i16,
        /// The batch's.
        got: i16,
    },
}

/// One producer's state.
#[derive(Debug, Clone)]
struct Producer {
    epoch: i16,
    /// Newest last; at most [`PRODUCER_WINDOW_BATCHES`], all of `epoch`.
    batches: VecDeque<ProducerBatch>,
    /// Set when a truncation cut every batch of the window while older
    /// ones of the producer stay in the log: the epoch and sequence its
    /// next batch must have. Anything else is refused (stored already, or
    /// a gap) rather than taken as a new producer's.
    next_after_cut: Option<(i16, i32)>,
    /// When its newest batch was recorded, ms since the epoch.
    last_append_ms: i64,
}

/// Every producer of one log. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, Producer>,
    /// Batches remembered over every producer.
    batches_total: usize,
    /// When idle producers were last looked for, ms since the epoch.
    swept_ms: i64,
}

impl ProducerTable {
    /// Checks `batch` against what the log holds and then against
    /// `pending`: batches accepted for the log but not written to it yet,
    /// oldest first (a leader's proposals of the current round).
    pub fn check(&self, batch: &ProducerSequence, pending: &[ProducerBatch]) -> SequenceCheck {
        let stored = self.producers.get(&batch.producer_id);
        let pending = pending
            .iter()
            .filter(|p| p.sequence.producer_id == batch.producer_id);
        // The producer as it will be once the pending batches are written:
        // each batch of a newer epoch starts the window again.
        let mut epoch = stored.map(|p| p.epoch);
        let mut window: Vec<&ProducerBatch> = stored
            .map(|p| p.batches.iter().collect())
            .unwrap_or_default();
        let mut next_after_cut = stored.and_then(|p| p.next_after_cut);
        for p in pending {
            if epoch != Some(p.sequence.epoch) {
                window.clear();
                epoch = Some(p.sequence.epoch);
            }
            window.push(p);
            next_after_cut = None;
        }
        let Some(epoch) = epoch else {
            return SequenceCheck::Append;
        };
        if batch.epoch < epoch {
            return SequenceCheck::Fenced {
                epoch,
                got: batch.epoch,
            };
        }
        if batch.epoch > epoch {
            return if batch.first == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: batch.first,
                }
            };
        }
        let window = &window[window.len().saturating_sub(PRODUCER_WINDOW_BATCHES)..];
        if let Some(same) = window
            .iter()
            .find(|p| (p.sequence.first, p.sequence.last) == (batch.first, batch.last))
        {
            return SequenceCheck::Duplicate(same.at);
        }
        match window.last() {
            None => match next_after_cut {
                Some((_, next)) if next != batch.first => SequenceCheck::OutOfOrder {
                    expected: next,
                    got: batch.first,
                },
                _ => SequenceCheck::Append,
            },
            Some(newest) if newest.sequence.next() == batch.first => SequenceCheck::Append,
            Some(newest) => SequenceCheck::OutOfOrder {
                expected: newest.sequence.next(),
                got: batch.first,
            },
        }
    }

    /// Records a batch the log now holds, at `now_ms`.
    pub fn record(&mut self, batch: ProducerBatch, now_ms: i64) {
        let id = batch.sequence.producer_id;
        if !self.producers.contains_key(&id) && self.producers.len() >= PRODUCERS_PER_LOG_MAX {
            self.evict_idlest();
        }
        let p = self.producers.entry(id).or_insert_with(|| Producer {
            epoch: batch.sequence.epoch,
            batches: VecDeque::new(),
            next_after_cut: None,
            last_append_ms: now_ms,
        });
        p.next_after_cut = None;
        if p.epoch != batch.sequence.epoch {
            // The log follows whatever its leader stored: a new epoch
            // starts the window again.
            p.epoch = batch.sequence.epoch;
            self.batches_total -= p.batches.len();
            p.batches.clear();
        }
        if p.batches.len() == PRODUCER_WINDOW_BATCHES {
            p.batches.pop_front();
            self.batches_total -= 1;
        }
        p.batches.push_back(batch);
        self.batches_total += 1;
        p.last_append_ms = p.last_append_ms.max(now_ms);
        if self.batches_total > PRODUCER_BATCHES_PER_LOG_MAX {
            self.evict_idlest();
        }
    }

    /// Counts the batches remembered again (after producers or batches
    /// were dropped in bulk).
    fn recount(&mut self) {
        self.batches_total = self.producers.values().map(|p| p.batches.len()).sum();
    }

    /// Forgets the batches at Raft index `from` and later (a suffix the log
    /// truncated). A producer whose window the cut empties is remembered
    /// by the epoch and sequence its next batch must have when the window
    /// was full (older batches of it stay in the log), else forgotten.
    pub fn truncate_from(&mut self, from: RaftIndex) {
        self.producers.retain(|_, p| {
            let full = p.batches.len() == PRODUCER_WINDOW_BATCHES;
            let mut earliest_cut = None;
            while p.batches.back().is_some_and(|b| b.at.raft_index >= from) {
                earliest_cut = p.batches.pop_back();
            }
            if let (true, true, Some(cut)) = (p.batches.is_empty(), full, earliest_cut) {
                p.epoch = cut.sequence.epoch;
                p.next_after_cut = Some((cut.sequence.epoch, cut.sequence.first));
            }
            !p.batches.is_empty() || p.next_after_cut.is_some()
        });
        self.recount();
    }

    /// Forgets every producer (the log was reset to a snapshot point).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.batches_total = 0;
    }

    /// Forgets producers whose newest batch was recorded more than
    /// `expiration_ms` before `now_ms`, at most once per
    /// [`PRODUCER_SWEEP_MS`].
    pub fn expire(&mut self, now_ms: i64, expiration_ms: u64) {
        if now_ms.saturating_sub(self.swept_ms) < PRODUCER_SWEEP_MS {
            return;
        }
        self.swept_ms = now_ms;
        let expiration_ms = i64::try_from(expiration_ms).unwrap_or(i64::MAX);
        self.producers
            .retain(|_, p| now_ms.saturating_sub(p.last_append_ms) <= expiration_ms);
        self.recount();
    }

    /// Batches remembered, over every producer.
    pub fn batches_len(&self) -> usize {
        self.batches_total
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The batches remembered of `producer_id`, oldest first.
    pub fn batches_of(&self, producer_id: i64) -> Vec<ProducerBatch> {
        self.producers
            .get(&producer_id)
            .map(|p| p.batches.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Makes room for one producer: a tenth of the table, idlest first, so
    /// a run of new producers pays the scan once per many.
    fn evict_idlest(&mut self) {
        let mut idle: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(id, p)| (p.last_append_ms, *id))
            .collect();
        let n = (idle.len() / 10).max(1);
        let last = idle.len().saturating_sub(1);
        if idle.is_empty() {
            return;
        }
        idle.select_nth_unstable(n.min(last));
        for (_, id) in idle.into_iter().take(n) {
            self.producers.remove(&id);
        }
        self.recount();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seq(id: i64, epoch: i16, first: i32, records: u32) -> ProducerSequence {
        ProducerSequence {
            producer_id: id,
            epoch,
            first,
            last: sequence_after(first, records - 1),
        }
    }

    fn at(index: u64) -> StoredAt {
        StoredAt {
            base_offset: Offset(index * 10),
            next_offset: Offset(index * 10 + 10),
            raft_index: RaftIndex(index),
            term: Term(1),
        }
    }

    fn batch(s: ProducerSequence, index: u64) -> ProducerBatch {
        ProducerBatch {
            sequence: s,
            at: at(index),
        }
    }

    #[test]
    fn sequences_wrap_from_the_largest_i32_to_zero() {
        assert_eq!(sequence_after(0, 10), 10);
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn an_unknown_producer_starts_anywhere() {
        let t = ProducerTable::default();
        assert_eq!(t.check(&seq(7, 0, 0, 3), &[]), SequenceCheck::Append);
        assert_eq!(t.check(&seq(7, 3, 500, 3), &[]), SequenceCheck::Append);
    }

    #[test]
    fn a_batch_continuing_the_newest_is_appended_and_a_gap_is_out_of_order() {
        let mut t = ProducerTable::default();
        t.record(batch(seq(7, 0, 0, 3), 1), 0);
        assert_eq!(t.check(&seq(7, 0, 3, 2), &[]), SequenceCheck::Append);
        assert_eq!(
            t.check(&seq(7, 0, 4, 2), &[]),
            SequenceCheck::OutOfOrder {
                expected: 3,
                got: 4
            }
        );
    }

    #[test]
    fn a_retried_batch_in_the_window_is_a_duplicate_with_its_place() {
        let mut t = ProducerTable::default();
        let n = PRODUCER_WINDOW_BATCHES as u64 + 2;
        for i in 0..n {
            t.record(batch(seq(7, 0, (i * 2) as i32, 2), i + 1), 0);
        }
        // Every batch but the first two is remembered.
        assert_eq!(
            t.check(&seq(7, 0, 4, 2), &[]),
            SequenceCheck::Duplicate(at(3))
        );
        let newest = (n - 1) as i32 * 2;
        assert_eq!(
            t.check(&seq(7, 0, newest, 2), &[]),
            SequenceCheck::Duplicate(at(n))
        );
        assert!(matches!(
            t.check(&seq(7, 0, 2, 2), &[]),
            SequenceCheck::OutOfOrder { .. }
        ));
    }

    #[test]
    fn a_cut_that_empties_a_full_window_keeps_the_sequence_the_producer_must_continue() {
        let mut t = ProducerTable::default();
        let w = PRODUCER_WINDOW_BATCHES as u64;
        for i in 0..2 * w {
            t.record(batch(seq(7, 0, i as i32, 1), i + 1), 0);
        }
        // The window (the newest w batches) is cut whole; the older ones
        // stay in the log.
        t.truncate_from(RaftIndex(w + 1));
        let first_cut = w as i32;
        assert_eq!(
            t.check(&seq(7, 0, first_cut, 1), &[]),
            SequenceCheck::Append
        );
        assert!(
            matches!(
                t.check(&seq(7, 0, first_cut - 1, 1), &[]),
                SequenceCheck::OutOfOrder { .. }
            ),
            "a batch still in the log is not stored again"
        );
        t.record(batch(seq(7, 0, first_cut, 1), w + 1), 0);
        assert_eq!(t.batches_of(7).len(), 1);
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_starts_at_zero() {
        let mut t = ProducerTable::default();
        t.record(batch(seq(7, 2, 0, 1), 1), 0);
        assert_eq!(
            t.check(&seq(7, 1, 1, 1), &[]),
            SequenceCheck::Fenced { epoch: 2, got: 1 }
        );
        assert_eq!(t.check(&seq(7, 3, 0, 1), &[]), SequenceCheck::Append);
        assert_eq!(
            t.check(&seq(7, 3, 1, 1), &[]),
            SequenceCheck::OutOfOrder {
                expected: 0,
                got: 1
            }
        );
    }

    #[test]
    fn pending_batches_count_as_stored() {
        let mut t = ProducerTable::default();
        t.record(batch(seq(7, 0, 0, 1), 1), 0);
        let pending = [batch(seq(7, 0, 1, 1), 2), batch(seq(9, 0, 0, 1), 3)];
        assert_eq!(
            t.check(&seq(7, 0, 1, 1), &pending),
            SequenceCheck::Duplicate(at(2))
        );
        assert_eq!(t.check(&seq(7, 0, 2, 1), &pending), SequenceCheck::Append);
        assert_eq!(
            t.check(&seq(9, 0, 0, 1), &pending),
            SequenceCheck::Duplicate(at(3))
        );
        // A pending batch of a newer epoch fences the older one.
        let bumped = [batch(seq(7, 1, 0, 1), 2)];
        assert_eq!(
            t.check(&seq(7, 0, 1, 1), &bumped),
            SequenceCheck::Fenced { epoch: 1, got: 0 }
        );
    }

    #[test]
    fn truncation_forgets_the_batches_cut_and_producers_left_without_any() {
        let mut t = ProducerTable::default();
        t.record(batch(seq(7, 0, 0, 1), 1), 0);
        t.record(batch(seq(7, 0, 1, 1), 2), 0);
        t.record(batch(seq(9, 0, 0, 1), 3), 0);
        t.truncate_from(RaftIndex(2));
        assert_eq!(t.batches_of(7), vec![batch(seq(7, 0, 0, 1), 1)]);
        assert!(t.batches_of(9).is_empty());
        assert_eq!(t.len(), 1);
        // The batch cut may be sent again and is stored anew.
        assert_eq!(t.check(&seq(7, 0, 1, 1), &[]), SequenceCheck::Append);
    }

    #[test]
    fn idle_producers_expire_and_the_sweep_runs_at_most_once_a_minute() {
        let mut t = ProducerTable::default();
        t.record(batch(seq(7, 0, 0, 1), 1), 1_000_000);
        t.record(batch(seq(9, 0, 0, 1), 2), 1_100_000);
        t.expire(1_050_000, 100_000);
        assert_eq!(t.len(), 2, "neither is idle that long yet");
        t.expire(1_050_000 + PRODUCER_SWEEP_MS - 1, 100_000);
        assert_eq!(t.len(), 2, "swept less than a minute ago");
        t.expire(1_050_000 + PRODUCER_SWEEP_MS, 100_000);
        assert_eq!(t.len(), 1);
        assert!(t.batches_of(7).is_empty());
    }

    #[test]
    fn the_table_holds_a_bounded_number_of_batches() {
        let mut t = ProducerTable::default();
        let producers = PRODUCER_BATCHES_PER_LOG_MAX / PRODUCER_WINDOW_BATCHES + 10;
        for id in 0..producers as i64 {
            for s in 0..PRODUCER_WINDOW_BATCHES as i32 {
                t.record(batch(seq(id, 0, s, 1), 1), id);
            }
        }
        assert!(t.batches_len() <= PRODUCER_BATCHES_PER_LOG_MAX);
        let counted: usize = (0..producers as i64).map(|id| t.batches_of(id).len()).sum();
        assert_eq!(counted, t.batches_len());
        assert!(t.batches_of(0).is_empty(), "the idlest went first");
    }

    #[test]
    fn the_table_holds_a_bounded_number_of_producers() {
        let mut t = ProducerTable::default();
        for id in 0..(PRODUCERS_PER_LOG_MAX as i64 + 5) {
            t.record(batch(seq(id, 0, 0, 1), id as u64 + 1), id);
        }
        assert!(t.len() <= PRODUCERS_PER_LOG_MAX);
        assert!(t.batches_of(0).is_empty(), "the idlest went first");
        assert!(!t.batches_of(PRODUCERS_PER_LOG_MAX as i64 + 4).is_empty());
    }

    proptest! {
        /// A producer's batches recorded in order: every one of the last
        /// five is a duplicate with its own place, the next one is in
        /// order, and anything else of the epoch is out of order.
        #[test]
        fn the_window_answers_like_the_producers_history(
            sizes in proptest::collection::vec(1u32..50, 1..250),
            start in prop_oneof![Just(0i32), Just(i32::MAX - 60), 0i32..1000],
            probe in 0i32..2000,
        ) {
            let mut t = ProducerTable::default();
            let mut first = start;
            let mut sent = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let s = seq(3, 0, first, *n);
                t.record(batch(s, i as u64 + 1), 0);
                sent.push(batch(s, i as u64 + 1));
                first = s.next();
            }
            for b in sent.iter().rev().take(PRODUCER_WINDOW_BATCHES) {
                prop_assert_eq!(t.check(&b.sequence, &[]), SequenceCheck::Duplicate(b.at));
            }
            prop_assert_eq!(t.check(&seq(3, 0, first, 1), &[]), SequenceCheck::Append);
            let window: Vec<_> = sent.iter().rev().take(PRODUCER_WINDOW_BATCHES).collect();
            let s = seq(3, 0, probe, 1);
            let expected = if let Some(b) = window.iter().find(|b| (b.sequence.first, b.sequence.last) == (s.first, s.last)) {
                SequenceCheck::Duplicate(b.at)
            } else if probe == first {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: first, got: probe }
            };
            prop_assert_eq!(t.check(&s, &[]), expected);
        }
    }
}
