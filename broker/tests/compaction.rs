//! Log compaction against a real broker: a `cleanup.policy=compact` topic
//! ends with exactly the newest value of each key, its tombstones gone
//! once their delay is over, while a consumer reading it over and over
//! sees a consistent log throughout (every record it reads is the one
//! written at that offset, in offset order, and no key's newest value is
//! ever missing); the compacted log survives a SIGKILL; a record without
//! a key is refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rill_client::protocol::ErrorCode;
use rill_storage::{BatchBuilder, Batches, NewRecord};

const TOPIC: &str = "kv";
const KEYS: usize = 20;
const ROUNDS: usize = 30;
/// Keys 0 to 4 are deleted (a tombstone each) after the last round.
const DELETED: usize = 5;

/// One record as written or read: key and value (`None`, a tombstone).
type Kv = (String, Option<String>);

fn keyed_batch(records: &[Kv]) -> Bytes {
    let mut b = BatchBuilder::new(4096);
    for (k, v) in records {
        assert!(
            b.push(&NewRecord {
                key: Some(k.as_bytes()),
                value: v.as_deref().map(str::as_bytes),
                headers: &[],
                timestamp_ms: now_ms(),
            })
            .unwrap()
        );
    }
    Bytes::from(b.finish().unwrap())
}

/// Produces `records` in one batch with `acks=all`; returns its first offset.
fn produce(client: &mut Client, records: &[Kv]) -> u64 {
    let r = client.produce(TOPIC, 0, -1, keyed_batch(records));
    assert!(r.error.is_ok(), "{:?}", r.error);
    r.base_offset
}

/// Every record of the partition up to its high watermark, by offset,
/// moving past batches compaction emptied as a consumer does.
fn read_log(client: &mut Client) -> BTreeMap<u64, Kv> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let f = client.fetch(TOPIC, 0, offset, 0);
        assert!(f.error.is_ok(), "{:?}", f.error);
        let mut moved = false;
        for chunk in &f.records {
            for b in Batches::new(chunk.clone(), usize::MAX) {
                let b = b.unwrap();
                b.verify_crc().unwrap();
                for r in b.records() {
                    let r = r.unwrap();
                    if r.offset.get() < offset {
                        continue;
                    }
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                    assert!(out.insert(r.offset.get(), (key, value)).is_none());
                }
                let next = b.header().next_offset().get();
                if next > offset {
                    offset = next;
                    moved = true;
                }
            }
        }
        if !moved {
            return out;
        }
    }
}

/// Checks one read of the log against what was written: every record is
/// the one written at its offset, and every key's newest record that is
/// not a tombstone is there.
fn assert_consistent(read: &BTreeMap<u64, Kv>, written: &BTreeMap<u64, Kv>) {
    for (offset, kv) in read {
        assert_eq!(written.get(offset), Some(kv), "the record at {offset}");
    }
    for (offset, (key, value)) in newest(written) {
        if value.is_some() {
            assert_eq!(
                read.get(&offset),
                Some(&(key.clone(), value.clone())),
                "{key}'s newest value, at {offset}"
            );
        }
    }
}

/// Each key's newest record, by offset.
fn newest(written: &BTreeMap<u64, Kv>) -> BTreeMap<u64, Kv> {
    let mut by_key = BTreeMap::new();
    for (offset, (key, value)) in written {
        by_key.insert(key.clone(), (*offset, value.clone()));
    }
    by_key.into_iter().map(|(k, (o, v))| (o, (k, v))).collect()
}

/// The keys the test wrote (not the filler), with their values as read.
fn data_keys(read: &BTreeMap<u64, Kv>) -> BTreeMap<String, Vec<Option<String>>> {
    let mut out: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for (key, value) in read.values() {
        if key.starts_with("key-") {
            out.entry(key.clone()).or_default().push(value.clone());
        }
    }
    out
}

#[test]
fn a_compacted_topic_keeps_the_newest_value_per_key_drops_tombstones_and_reads_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--compaction-check-ms",
        "100",
        // Slow enough that passes overlap the reader's fetches.
        "--compaction-bytes-per-sec",
        "200000",
    ]
    .map(String::from)
    .to_vec();
    let broker = BrokerProcess::start_with(dir.path(), &args);
    let mut client = broker.connect();
    let r = client.create_topic(
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "8192"),
            ("max.message.bytes", "4096"),
            ("delete.retention.ms", "3000"),
        ],
    );
    assert!(r.error.is_ok(), "{:?}", r.error);

    // A record without a key has nothing to be compacted by.
    let keyless = client.produce(TOPIC, 0, -1, batch(&values(0..1), now_ms()));
    assert_eq!(keyless.error, ErrorCode::InvalidRecord);

    let mut written = BTreeMap::new();
    let mut write = |client: &mut Client, records: Vec<Kv>| {
        let base = produce(client, &records);
        for (i, kv) in records.into_iter().enumerate() {
            written.insert(base + i as u64, kv);
        }
    };
    for round in 0..ROUNDS {
        let records = (0..KEYS)
            .map(|k| (format!("key-{k}"), Some(format!("key-{k} round {round}"))))
            .collect();
        write(&mut client, records);
    }
    write(
        &mut client,
        (0..DELETED).map(|k| (format!("key-{k}"), None)).collect(),
    );
    // Filler under one key of its own, so the segments holding the test's
    // keys are sealed and compacted; the active segment never is.
    for i in 0..12 {
        write(
            &mut client,
            vec![("filler".to_string(), Some(format!("{i:0>1000}")))],
        );
    }
    let written = Arc::new(written);

    // A consumer reading the whole log again and again while the passes run.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        let mut client = broker.connect();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) && reads < 100_000 {
                assert_consistent(&read_log(&mut client), &written);
                reads += 1;
            }
            reads
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let expected: BTreeMap<String, Vec<Option<String>>> = (DELETED..KEYS)
        .map(|k| {
            (
                format!("key-{k}"),
                vec![Some(format!("key-{k} round {}", ROUNDS - 1))],
            )
        })
        .collect();
    loop {
        let read = read_log(&mut client);
        assert_consistent(&read, &written);
        if data_keys(&read) == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 120 s: {:?}",
            data_keys(&read)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);

    // The compacted log is what a restart after SIGKILL finds.
    let before = read_log(&mut client);
    broker.kill();
    let broker = BrokerProcess::start_with(dir.path(), &args);
    let mut client = broker.connect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let f = client.fetch(TOPIC, 0, 0, 0);
        if f.error.is_ok() && f.high_watermark > *written.keys().last().unwrap() {
            break read_log(&mut client);
        }
        assert!(
            Instant::now() < deadline,
            "no leader after restart: {:?}",
            f.error
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_consistent(&after, &written);
    assert_eq!(data_keys(&after), expected);
    // The filler's newest records may have been compacted further since.
    assert!(after.len() <= before.len());
}
