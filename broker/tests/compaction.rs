//! Log compaction against a real broker: a `cleanup.policy=compact` topic
//! ends with exactly the newest value of each key, its tombstones gone
//! once their delay is over, while a consumer reading it over and over
//! sees a consistent log throughout (every record it reads is the one
//! written at that offset, in offset order, and no key's newest value is
//! ever missing); the compacted log survives a SIGKILL, also one in the
//! middle of its passes; a record without a key is refused; a leader keeps
//! tombstones while a follower is down, and the follower catches up from
//! the compacted entries to the same records at the same offsets, the
//! tombstones with them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::TestCluster;
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

/// The topic's settings: compacted, small segments, tombstones kept 3 s.
const CONFIGS: [(&str, &str); 4] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "8192"),
    ("max.message.bytes", "4096"),
    ("delete.retention.ms", "3000"),
];

/// Writes the test's records through `client`: [`ROUNDS`] rounds of a
/// value for each of [`KEYS`] keys, tombstones for the first [`DELETED`],
/// then filler under a key of its own so the segments holding them are
/// sealed (the active segment is never compacted). Returns what was
/// written, by offset.
fn write_all(client: &mut Client) -> BTreeMap<u64, Kv> {
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
        write(client, records);
    }
    write(
        client,
        (0..DELETED).map(|k| (format!("key-{k}"), None)).collect(),
    );
    for i in 0..12 {
        write(
            client,
            vec![("filler".to_string(), Some(format!("{i:0>1000}")))],
        );
    }
    written
}

/// What the test's keys end as once compacted: the deleted ones gone, the
/// others with their last round's value only.
fn compacted_keys() -> BTreeMap<String, Vec<Option<String>>> {
    (DELETED..KEYS)
        .map(|k| {
            (
                format!("key-{k}"),
                vec![Some(format!("key-{k} round {}", ROUNDS - 1))],
            )
        })
        .collect()
}

/// Reads the log once the partition has a leader that has every record
/// written (at most 60 s).
fn read_when_ready(client: &mut Client, written: &BTreeMap<u64, Kv>) -> BTreeMap<u64, Kv> {
    let end = *written.keys().last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f = client.fetch(TOPIC, 0, 0, 0);
        if f.error.is_ok() && f.high_watermark > end {
            return read_log(client);
        }
        assert!(Instant::now() < deadline, "not readable: {:?}", f.error);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`compacted_keys`] with the deleted keys' tombstones still there.
fn compacted_keys_with_tombstones() -> BTreeMap<String, Vec<Option<String>>> {
    let mut keys = compacted_keys();
    keys.extend((0..DELETED).map(|k| (format!("key-{k}"), vec![None])));
    keys
}

/// Waits (at most 120 s) until the log read through `client` holds the
/// test's keys compacted, checking every read on the way.
fn wait_compacted(client: &mut Client, written: &BTreeMap<u64, Kv>) -> BTreeMap<u64, Kv> {
    wait_for_keys(client, written, &compacted_keys())
}

/// Waits (at most 120 s) until the test's keys read through `client` are
/// `expected`, checking every read on the way.
fn wait_for_keys(
    client: &mut Client,
    written: &BTreeMap<u64, Kv>,
    expected: &BTreeMap<String, Vec<Option<String>>>,
) -> BTreeMap<u64, Kv> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let read = read_log(client);
        assert_consistent(&read, written);
        if &data_keys(&read) == expected {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 120 s: {:?}",
            data_keys(&read)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let r = client.create_topic(TOPIC, 1, &CONFIGS);
    assert!(r.error.is_ok(), "{:?}", r.error);

    // A record without a key has nothing to be compacted by.
    let keyless = client.produce(TOPIC, 0, -1, batch(&values(0..1), now_ms()));
    assert_eq!(keyless.error, ErrorCode::InvalidRecord);

    let written = Arc::new(write_all(&mut client));

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
    let compacted = wait_compacted(&mut client, &written);
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);

    // The compacted log is what a restart after SIGKILL finds.
    broker.kill();
    let broker = BrokerProcess::start_with(dir.path(), &args);
    let mut client = broker.connect();
    let after = read_when_ready(&mut client, &written);
    assert_consistent(&after, &written);
    assert_eq!(data_keys(&after), compacted_keys());
    // The filler's newest records may have been compacted further since.
    assert!(after.len() <= compacted.len());
}

#[test]
fn sigkills_in_the_middle_of_compaction_passes_lose_no_newest_value() {
    let dir = tempfile::tempdir().unwrap();
    // About a second a pass: the kills land inside them.
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--compaction-check-ms",
        "50",
        "--compaction-bytes-per-sec",
        "30000",
    ]
    .map(String::from)
    .to_vec();
    let mut broker = BrokerProcess::start_with(dir.path(), &args);
    let mut client = broker.connect();
    let r = client.create_topic(TOPIC, 1, &CONFIGS);
    assert!(r.error.is_ok(), "{:?}", r.error);
    let written = write_all(&mut client);
    for kill in 0..5u64 {
        // A fault's timing, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(250 + 200 * kill));
        broker.kill();
        broker = BrokerProcess::start_with(dir.path(), &args);
        client = broker.connect();
        let read = read_when_ready(&mut client, &written);
        assert_consistent(&read, &written);
    }
    wait_compacted(&mut client, &written);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_dir(e.unwrap().path()).ok())
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every record of the replica log in `dir` (its broker stopped), read
/// from the files.
fn read_replica_files(dir: &std::path::Path) -> BTreeMap<u64, Kv> {
    let config = rill_storage::LogConfig {
        segment_bytes: 8192,
        max_batch_bytes: 4096,
        ..rill_storage::LogConfig::default()
    };
    let log = rill_storage::Log::open(dir, config).unwrap();
    let chunks = log.read(log.log_start_offset(), u64::MAX).unwrap();
    let mut out = BTreeMap::new();
    for b in rill_storage::batches_of(&chunks, usize::MAX) {
        let b = b.unwrap();
        b.verify_crc().unwrap();
        for r in b.records() {
            let r = r.unwrap();
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            out.insert(r.offset.get(), (key, value));
        }
    }
    out
}

#[test]
fn a_follower_catching_up_from_a_compacted_leader_holds_the_same_records_at_the_same_offsets() {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--compaction-check-ms",
            "100",
            "--compaction-bytes-per-sec",
            "0",
        ],
    );
    runtime().block_on(async {
        let admin = rill_client::Admin::new(
            rill_client::Cluster::new(&cluster.bootstrap(), "test").unwrap(),
        );
        let configs = CONFIGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        admin.create_topic(TOPIC, 1, 3, configs).await.unwrap();
    });
    cluster.wait_for("a leader", 60, |c| c.leader_of(TOPIC, 0).is_some());
    let leader = cluster.leader_of(TOPIC, 0).unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    cluster.terminate(follower);

    let mut client = Client::connect(cluster.addr(leader));
    let written = write_all(&mut client);
    // The leader compacts the values away while the follower is down, and
    // keeps the tombstones, which the follower does not hold yet, past
    // their delay.
    wait_for_keys(&mut client, &written, &compacted_keys_with_tombstones());
    // Past the 3 s delay and many passes: what must not happen had time to.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        data_keys(&read_log(&mut client)),
        compacted_keys_with_tombstones()
    );

    cluster.restart(follower);
    let end = *written.keys().last().unwrap() + 1;
    cluster.wait_for("the follower to catch up", 60, |c| {
        c.status(follower).is_some_and(|s| {
            s.replicas
                .iter()
                .any(|r| r.topic == TOPIC && r.high_watermark >= end)
        })
    });
    // Every replica holds the tombstones now: the leader removes them.
    wait_compacted(&mut client, &written);
    cluster.terminate(follower);
    let replica = std::fs::read_dir(cluster.broker_dir(follower))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().unwrap() != "controller")
        .expect("the follower's replica directory");
    let on_disk = read_replica_files(&replica);
    assert_consistent(&on_disk, &written);
    // It took the leader's compacted entries: no older value of a key,
    // and the tombstones, which only a leader removes.
    assert_eq!(data_keys(&on_disk), compacted_keys_with_tombstones());
}
