//! Property test: any sequence of appends (data and control batches),
//! rolls, suffix truncations, retention passes, flushes and reopens keeps the
//! log equal to a plain in-memory model, and lookups by offset, Raft index
//! and time agree with the model's answers.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{batches, small_config};
use proptest::prelude::*;
use rill_storage::{
    BatchBuilder, Log, LogConfig, ManualClock, NewRecord, Offset, RaftIndex, Term, control_batch,
};

#[derive(Debug, Clone)]
enum Op {
    /// A data batch: one value length per record, and a timestamp jitter.
    Append {
        values: Vec<usize>,
        ts_jitter: i64,
    },
    /// A zero-record control batch.
    Control,
    /// A new term for later appends.
    NewTerm,
    Roll,
    /// Truncate the suffix from the entry at this fraction of the log.
    Truncate(f64),
    /// Advance the clock and apply time retention.
    RetainByTime(i64),
    /// Apply size retention with this many bytes kept.
    RetainBySize(u64),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(0usize..300, 1..6), -50i64..50)
            .prop_map(|(values, ts_jitter)| Op::Append { values, ts_jitter }),
        1 => Just(Op::Control),
        1 => Just(Op::NewTerm),
        1 => Just(Op::Roll),
        1 => (0.0f64..1.0).prop_map(Op::Truncate),
        1 => (0i64..20_000).prop_map(Op::RetainByTime),
        1 => (1_000u64..40_000).prop_map(Op::RetainBySize),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    raft_index: u64,
    term: u64,
    base_offset: u64,
    /// (timestamp, value) of each record; empty for a control batch.
    records: Vec<(i64, Vec<u8>)>,
    max_timestamp_ms: i64,
}

#[derive(Debug, Default)]
struct Model {
    entries: Vec<Entry>,
    start_offset: u64,
    start_raft_index: u64,
    next_offset: u64,
    next_raft_index: u64,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        retention_ms: Some(10_000),
        ..small_config()
    }
}

fn value(offset: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
}

fn check(log: &Log, m: &Model) {
    assert_eq!(log.log_start_offset().get(), m.start_offset);
    assert_eq!(log.first_raft_index().get(), m.start_raft_index);
    assert_eq!(log.next_offset().get(), m.next_offset);
    assert_eq!(log.next_raft_index().get(), m.next_raft_index);
    assert_eq!(
        log.last_term().get(),
        m.entries.last().map_or(log.last_term().get(), |e| e.term)
    );
    // The whole log, batch by batch.
    let all = batches(&log.read(log.log_start_offset(), u64::MAX).unwrap());
    let data: Vec<&Entry> = m.entries.iter().filter(|e| !e.records.is_empty()).collect();
    let read_data: Vec<_> = all.iter().filter(|b| !b.header().is_control()).collect();
    assert_eq!(read_data.len(), data.len());
    for (b, e) in read_data.iter().zip(&data) {
        assert_eq!(b.header().raft_index.get(), e.raft_index);
        assert_eq!(b.header().raft_term.get(), e.term);
        assert_eq!(b.header().base_offset.get(), e.base_offset);
        let recs: Vec<_> = b.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), e.records.len());
        for (i, (r, (ts, v))) in recs.iter().zip(&e.records).enumerate() {
            assert_eq!(r.offset.get(), e.base_offset + i as u64);
            assert_eq!(r.timestamp_ms, *ts);
            assert_eq!(r.value.as_deref(), Some(&v[..]));
        }
    }
    // Lookups by Raft index and term.
    for e in &m.entries {
        let got = log
            .read_entries(RaftIndex(e.raft_index), RaftIndex(e.raft_index + 1), 1)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header().raft_index.get(), e.raft_index);
        assert_eq!(got[0].header().base_offset.get(), e.base_offset);
        assert_eq!(log.term_of(RaftIndex(e.raft_index)).unwrap().get(), e.term);
    }
    // Lookups by offset: the first data batch holding it.
    for e in &data {
        for o in e.base_offset..e.base_offset + e.records.len() as u64 {
            let got = batches(&log.read(Offset(o), 1).unwrap());
            let b = got.iter().find(|b| !b.header().is_control()).unwrap();
            assert_eq!(b.header().base_offset.get(), e.base_offset, "offset {o}");
        }
    }
    // Lookups by time: the first record, in log order, at or after T.
    let mut stamps: Vec<i64> = data
        .iter()
        .flat_map(|e| e.records.iter().map(|r| r.0))
        .collect();
    stamps.push(i64::MAX);
    stamps.push(0);
    for t in stamps {
        let expected = data.iter().find_map(|e| {
            e.records
                .iter()
                .position(|r| r.0 >= t)
                .map(|i| e.base_offset + i as u64)
        });
        assert_eq!(
            log.offset_for_timestamp(t).unwrap().map(|o| o.get()),
            expected,
            "timestamp {t}"
        );
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(100_000);
    let open = || Log::open_with_clock(dir.path(), config(), Arc::new(clock.clone())).unwrap();
    let mut log = open();
    let mut m = Model {
        next_raft_index: 1,
        start_raft_index: 1,
        ..Model::default()
    };
    let mut term = 1u64;
    for op in ops {
        match op {
            Op::Append { values, ts_jitter } => {
                let now = clock.now_ms_for_test();
                let mut b = BatchBuilder::new(config().max_batch_bytes);
                let mut records = Vec::new();
                for (i, len) in values.iter().enumerate() {
                    let off = m.next_offset + i as u64;
                    let ts = now + ts_jitter + i as i64;
                    let v = value(off, *len);
                    assert!(b.push(&NewRecord::value(&v, ts)).unwrap());
                    records.push((ts, v));
                }
                let a = log.append(&b.finish().unwrap(), Term(term)).unwrap();
                assert_eq!(a.base_offset.get(), m.next_offset);
                assert_eq!(a.raft_index.get(), m.next_raft_index);
                let max_timestamp_ms = records.iter().map(|r| r.0).max().unwrap();
                m.entries.push(Entry {
                    raft_index: m.next_raft_index,
                    term,
                    base_offset: m.next_offset,
                    records,
                    max_timestamp_ms,
                });
                m.next_offset += values.len() as u64;
                m.next_raft_index += 1;
            }
            Op::Control => {
                let now = clock.now_ms_for_test();
                let a = log.append(&control_batch(b"", now), Term(term)).unwrap();
                assert_eq!(a.base_offset.get(), m.next_offset);
                assert_eq!(
                    a.next_offset.get(),
                    m.next_offset,
                    "control batches take no offset"
                );
                m.entries.push(Entry {
                    raft_index: m.next_raft_index,
                    term,
                    base_offset: m.next_offset,
                    records: Vec::new(),
                    max_timestamp_ms: now,
                });
                m.next_raft_index += 1;
            }
            Op::NewTerm => term += 1,
            Op::Roll => log.roll().unwrap(),
            Op::Truncate(f) => {
                let span = m.next_raft_index - m.start_raft_index;
                let at = m.start_raft_index + (span as f64 * f) as u64;
                log.truncate_suffix(RaftIndex(at)).unwrap();
                if let Some(i) = m.entries.iter().position(|e| e.raft_index >= at) {
                    m.next_offset = m.entries[i].base_offset;
                    m.entries.truncate(i);
                }
                m.next_raft_index = at;
            }
            Op::RetainByTime(advance) => {
                clock.advance_ms(advance);
                let before = log.log_start_offset();
                let out = log.apply_retention().unwrap();
                let cutoff = clock.now_ms_for_test() - 10_000;
                let removed = retain(&mut m, &log);
                assert!(log.log_start_offset() >= before);
                assert_eq!(out.log_start_offset, log.log_start_offset());
                for e in removed {
                    assert!(
                        e.max_timestamp_ms < cutoff,
                        "only segments older than retention_ms go"
                    );
                }
            }
            Op::RetainBySize(bytes) => {
                let mut c = config();
                c.retention_bytes = Some(bytes);
                c.retention_ms = None;
                drop(log);
                log = Log::open_with_clock(dir.path(), c, Arc::new(clock.clone())).unwrap();
                log.apply_retention().unwrap();
                assert!(log.segment_count() == 1 || log.size_bytes() <= bytes + 16 * 1024);
                retain(&mut m, &log);
                drop(log);
                log = open();
            }
            Op::Flush => {
                let d = log.flush().unwrap();
                assert_eq!(d, log.end());
            }
            Op::Reopen => {
                drop(log);
                log = open();
            }
        }
        check(&log, &m);
    }
}

/// Drops the model's entries that retention removed from the log, and
/// returns them.
fn retain(m: &mut Model, log: &Log) -> Vec<Entry> {
    let first = log.first_raft_index().get();
    assert!(first >= m.start_raft_index);
    let keep_from = m
        .entries
        .iter()
        .position(|e| e.raft_index >= first)
        .unwrap_or(m.entries.len());
    let removed = m.entries.drain(..keep_from).collect();
    m.start_raft_index = first;
    m.start_offset = log.log_start_offset().get();
    removed
}

trait NowForTest {
    fn now_ms_for_test(&self) -> i64;
}
impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> i64 {
        rill_storage::Clock::now_ms(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_operation_sequence_keeps_the_log_equal_to_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
