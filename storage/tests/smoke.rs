//! Smoke test: append, read, reopen.

use rill_storage::{BatchBuilder, Log, LogConfig, NewRecord, Offset, Term, batches_of};

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..10u64 {
        let mut b = BatchBuilder::new(1 << 20);
        let v = format!("value-{i}");
        assert!(b.push(&NewRecord::value(v.as_bytes(), i as i64)).unwrap());
        let a = log.append(&b.finish().unwrap(), Term(1)).unwrap();
        assert_eq!(a.base_offset, Offset(i));
    }
    log.flush().unwrap();
    let chunks = log.read(Offset(3), 1 << 20).unwrap();
    let batches: Vec<_> = batches_of(&chunks, 1 << 20)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 7);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.next_offset(), Offset(10));
}
