//! A damaged or full disk hurts one replica, not the broker: a segment file
//! cut short under a running broker, or a hole found in the middle of a
//! replica's log at start, fails that replica (its clients are answered a
//! retriable `StorageError`) while every other partition keeps serving,
//! and a replica stopped by a full disk answers producers a retriable
//! error and is reopened once space returns.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rill_client::protocol::ErrorCode;

/// The replica directories (`<topic id>-<partition>`) in `data_dir`.
fn replica_dirs(data_dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap() != "controller")
        .collect()
}

/// Creates a one-partition topic and returns its replica's directory.
fn create(client: &mut Client, data_dir: &Path, name: &str) -> PathBuf {
    let before = replica_dirs(data_dir);
    assert!(client.create_topic(name, 1, &[]).error.is_ok());
    let mut new: Vec<_> = replica_dirs(data_dir)
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "one new replica directory for {name}");
    new.pop().unwrap()
}

fn produce_ok(client: &mut Client, topic: &str, range: std::ops::Range<u64>) {
    let r = client.produce(topic, 0, -1, batch(&values(range), now_ms()));
    assert!(r.error.is_ok(), "produce to {topic}: {:?}", r.error);
}

/// The error of a `ListOffsets` for the latest offset of partition 0.
fn latest_offset_error(client: &mut Client, topic: &str) -> ErrorCode {
    use rill_client::protocol::messages::*;
    let (_, r) = client.call(rill_client::protocol::Request::ListOffsets(
        ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition: 0,
                    timestamp_ms: LATEST_TIMESTAMP,
                }],
            }],
        },
    ));
    let Some(rill_client::protocol::Response::ListOffsets(r)) = r else {
        panic!("list offsets response")
    };
    r.topics[0].partitions[0].error
}

/// Bytes of whole batches at the start of a segment file.
/// Cuts `segment` to `bytes` under the broker, as a faulty disk or a
/// careless operator would.
fn cut_to(segment: &Path, bytes: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

fn batch_bytes(segment: &Path) -> u64 {
    let bytes = bytes::Bytes::from(fs::read(segment).unwrap());
    rill_storage::Batches::new(bytes, usize::MAX)
        .map_while(Result::ok)
        .map(|b| b.bytes().len() as u64)
        .sum()
}

/// The segment files of a replica, oldest first.
fn segments_of(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn segment_of(dir: &Path) -> PathBuf {
    segments_of(dir).pop().unwrap()
}

#[test]
fn a_segment_truncated_under_a_running_broker_fails_its_replica_and_others_keep_serving() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    let damaged_dir = create(&mut client, data.path(), "damaged");
    create(&mut client, data.path(), "healthy");
    for i in 0..20 {
        produce_ok(&mut client, "damaged", i * 50..(i + 1) * 50);
        produce_ok(&mut client, "healthy", i * 50..(i + 1) * 50);
    }
    assert_eq!(read_all(&mut client, "damaged", 0).len(), 1000);

    let segment = segment_of(&damaged_dir);
    let written = batch_bytes(&segment);
    assert!(written > 10_000, "the segment holds the batches produced");
    cut_to(&segment, written / 2);

    let f = client.fetch("damaged", 0, 0, 0);
    assert_eq!(
        f.error,
        ErrorCode::StorageError,
        "the damaged partition answers a storage error"
    );
    assert!(f.error.is_retriable());
    assert!(f.records.is_empty());
    assert!(broker.is_running(), "the broker survives the damaged file");

    // Every other partition keeps serving, reads and writes.
    let healthy = read_all(&mut client, "healthy", 0);
    assert_eq!(healthy.len(), 1000);
    produce_ok(&mut client, "healthy", 1000..1050);
    let healthy = read_all(&mut client, "healthy", 0);
    assert_eq!(
        healthy.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        values(0..1050)
    );

    // A segment cut short and then written to: the append finds the
    // damage before anything reads the hole a write past the end leaves.
    let cut_dir = create(&mut client, data.path(), "cut-then-produced");
    produce_ok(&mut client, "cut-then-produced", 0..200);
    let segment = segment_of(&cut_dir);
    cut_to(&segment, batch_bytes(&segment) / 2);
    let r = client.produce(
        "cut-then-produced",
        0,
        -1,
        batch(&values(200..210), now_ms()),
    );
    assert_eq!(r.error, ErrorCode::StorageError);
    assert_eq!(
        client.fetch("cut-then-produced", 0, 0, 0).error,
        ErrorCode::StorageError
    );
    assert!(broker.is_running());

    // The damaged replica stays failed: fetches and produces are refused
    // with the same retriable error, from a new connection too.
    let mut other = broker.connect();
    assert_eq!(
        other.fetch("damaged", 0, 0, 0).error,
        ErrorCode::StorageError
    );
    let r = other.produce("damaged", 0, -1, batch(&values(0..3), now_ms()));
    assert_eq!(r.error, ErrorCode::StorageError);
    assert!(broker.is_running());
    broker.terminate();
}

#[test]
fn a_replica_stopped_by_a_full_disk_answers_producers_retriably_and_reopens_once_space_returns() {
    let data = tempfile::tempdir().unwrap();
    let trigger = data.path().join("enospc-trigger");
    let mut broker = BrokerProcess::start_with_env(
        &data.path().join("data"),
        &["--listen".into(), "127.0.0.1:0".into()],
        &[(
            rill_storage::fault::ENOSPC_TRIGGER_ENV,
            trigger.to_str().unwrap(),
        )],
    );
    let data_dir = data.path().join("data");
    let mut client = broker.connect();
    let full_dir = create(&mut client, &data_dir, "full");
    create(&mut client, &data_dir, "other");
    produce_ok(&mut client, "full", 0..10);

    // The disk under the replica fills up.
    fs::write(&trigger, full_dir.to_str().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let r = client.produce("full", 0, -1, batch(&values(10..20), now_ms()));
        if !r.error.is_ok() {
            break r.error;
        }
        assert!(
            Instant::now() < deadline,
            "a produce to a full disk is refused"
        );
    };
    assert_eq!(refused, ErrorCode::StorageError);
    assert!(refused.is_retriable());
    assert!(broker.is_running());
    produce_ok(&mut client, "other", 0..10);

    // Space returns: the replica is reopened (after a backoff of seconds)
    // and takes produces again, with every acknowledged record.
    fs::remove_file(&trigger).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.produce("full", 0, -1, batch(&values(100..110), now_ms()));
        if r.error.is_ok() {
            break;
        }
        assert!(r.error.is_retriable(), "{:?}", r.error);
        assert!(
            Instant::now() < deadline,
            "the replica is reopened once space returns (last error {:?})",
            r.error
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got: Vec<String> = read_all(&mut client, "full", 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(&got[..10], &values(0..10)[..]);
    assert_eq!(&got[got.len() - 10..], &values(100..110)[..]);
    broker.terminate();
}

#[test]
fn a_segment_cut_short_under_an_idle_replica_fails_it_before_anyone_reads_it() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    let idle_dir = create(&mut client, data.path(), "idle");
    produce_ok(&mut client, "idle", 0..200);
    let segment = segment_of(&idle_dir);
    cut_to(&segment, batch_bytes(&segment) / 2);
    // Nothing reads or writes the replica's files (the latest offset is
    // known in memory): the periodic check finds the damage.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error = latest_offset_error(&mut client, "idle");
        if error == ErrorCode::StorageError {
            break;
        }
        assert!(error.is_ok(), "{error:?}");
        assert!(
            Instant::now() < deadline,
            "the damage is found without a read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(broker.is_running());
    broker.terminate();
}

#[test]
fn a_hole_in_the_middle_of_a_replica_log_fails_that_replica_at_start_and_others_keep_serving() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    let before = replica_dirs(data.path());
    assert!(
        client
            .create_topic(
                "holed",
                1,
                &[("segment.bytes", "8192"), ("max.message.bytes", "4096")]
            )
            .error
            .is_ok()
    );
    let holed_dir = replica_dirs(data.path())
        .difference(&before)
        .next()
        .cloned()
        .unwrap();
    create(&mut client, data.path(), "healthy");
    for i in 0..40 {
        produce_ok(&mut client, "holed", i * 50..(i + 1) * 50);
    }
    produce_ok(&mut client, "healthy", 0..50);
    broker.terminate();

    // A disk fault flips a byte in the middle of the first of several
    // segments; its index files are gone, so the next start scans it.
    let segments = segments_of(&holed_dir);
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let first = &segments[0];
    let mut bytes = fs::read(first).unwrap();
    let middle = (batch_bytes(first) / 2) as usize;
    bytes[middle] ^= 0x5a;
    fs::write(first, &bytes).unwrap();
    for ext in ["index", "timeindex"] {
        let _ = fs::remove_file(first.with_extension(ext));
    }

    let mut broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    assert_eq!(
        client.fetch("holed", 0, 0, 0).error,
        ErrorCode::StorageError
    );
    let r = client.produce("holed", 0, -1, batch(&values(0..3), now_ms()));
    assert_eq!(r.error, ErrorCode::StorageError);
    assert_eq!(
        segments_of(&holed_dir),
        segments,
        "nothing after the hole is deleted"
    );
    assert_eq!(read_all(&mut client, "healthy", 0).len(), 50);
    produce_ok(&mut client, "healthy", 50..60);
    assert_eq!(read_all(&mut client, "healthy", 0).len(), 60);
    assert!(broker.is_running());
    broker.terminate();
}

#[test]
fn a_controller_log_cut_short_under_a_running_broker_stops_it_with_a_clear_line() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    create(&mut client, data.path(), "before");
    // The controller's segment is cut to nothing: its next append (the
    // next topic's creation) finds the damage. Without its replica of the
    // controller a broker can apply no metadata, so it stops.
    cut_to(&segment_of(&data.path().join("controller")), 0);
    // Sent, not awaited: the broker may stop before it answers.
    let _ = client.try_send(&rill_client::protocol::Request::CreateTopics(
        rill_client::protocol::messages::CreateTopicsRequest {
            topics: vec![rill_client::protocol::messages::NewTopic {
                name: "after".into(),
                partitions: 1,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            timeout_ms: 10_000,
        },
    ));
    let status = broker
        .wait_exit(Duration::from_secs(30))
        .expect("the broker stops");
    assert_eq!(
        status.code(),
        Some(rill_broker::raft::REPLICATION_STOPPED_EXIT_CODE)
    );
    // The reader thread may still be taking the last lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = broker.log_lines();
        if lines.iter().any(|l| {
            l.contains("the controller's replica failed") && l.contains("stopping the broker")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no clear line: {lines:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
