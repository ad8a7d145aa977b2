//! What a producer or an admin can make a broker hold is bounded: a batch
//! takes one offset per record, record timestamps stay near the broker's
//! clock, topic configs stay within their ranges, and no broker hosts more
//! partition replicas than its setting allows. Each refusal is a typed error
//! with a message, and the broker keeps serving afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{BrokerProcess, batch, now_ms, read_all, values};
use rill_client::protocol::ErrorCode;
use rill_storage::batch::{BatchHeader, compute_crc};

/// `bytes` with its header rewritten by `edit` and its CRC made to match,
/// as a hostile producer would send it.
fn resealed(bytes: &Bytes, edit: impl FnOnce(&mut BatchHeader)) -> Bytes {
    let mut out = bytes.to_vec();
    let mut header = BatchHeader::decode(&out).unwrap();
    edit(&mut header);
    header.encode_into(&mut out);
    header.crc = compute_crc(&out);
    header.encode_into(&mut out);
    Bytes::from(out)
}

#[test]
fn produce_refuses_a_batch_claiming_more_offsets_than_records_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    let good = batch(&values(0..3), now_ms());
    // Three records claiming four billion offsets.
    let bomb = resealed(&good, |h| h.last_offset_delta = u32::MAX - 1);
    let r = c.produce("t", 0, -1, bomb);
    assert_eq!(r.error, ErrorCode::InvalidRecord);
    assert!(!r.error.is_retriable());
    // Nothing was taken: the next batch starts at offset 0.
    let r = c.produce("t", 0, -1, good);
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
    let want: Vec<(u64, String)> = (0..3).map(|i| (i, format!("value-{i}"))).collect();
    assert_eq!(read_all(&mut c, "t", 0), want);
}

#[test]
fn create_topic_refuses_configs_out_of_range_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    for configs in [
        [("retention.ms", "9223372036854775808")],
        [("retention.bytes", "-2")],
        [("segment.bytes", "100")],
        [("segment.ms", "1")],
        [("max.message.bytes", "104857600")],
    ] {
        let r = c.create_topic("t", 1, &configs);
        assert_eq!(r.error, ErrorCode::InvalidConfig, "{configs:?}");
        let message = r.message;
        assert!(message.contains(configs[0].0), "{configs:?}: {message}");
    }
    let r = c.create_topic("t", 1, &[("retention.ms", "1"), ("retention.ms", "2")]);
    assert_eq!(r.error, ErrorCode::InvalidConfig);
    assert!(r.message.contains("more than once"), "{}", r.message);
    assert_eq!(
        c.create_topic("t", 1, &[("retention.ms", "9223372036854775807")])
            .error,
        ErrorCode::None
    );
}

#[test]
fn produce_refuses_a_record_stamped_ten_years_ahead_and_takes_an_ordinary_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    const TEN_YEARS_MS: i64 = 10 * 365 * 24 * 3600 * 1000;
    let r = c.produce("t", 0, -1, batch(&values(0..1), now_ms() + TEN_YEARS_MS));
    assert_eq!(r.error, ErrorCode::InvalidTimestamp);
    assert!(!r.error.is_retriable());
    // A far-future record cannot hide behind a header that claims now.
    let mut b = rill_storage::BatchBuilder::new(1 << 20);
    assert!(
        b.push(&rill_storage::NewRecord::value(b"now", now_ms()))
            .unwrap()
    );
    let later = now_ms() + TEN_YEARS_MS;
    assert!(
        b.push(&rill_storage::NewRecord::value(b"later", later))
            .unwrap()
    );
    let hiding = Bytes::from(b.finish().unwrap());
    let hiding = resealed(&hiding, |h| h.max_timestamp_ms = h.first_timestamp_ms);
    let r = c.produce("t", 0, -1, hiding);
    assert_eq!(r.error, ErrorCode::InvalidTimestamp);
    // The default bound is one hour ahead; no bound behind.
    let r = c.produce("t", 0, -1, batch(&values(0..1), now_ms() + 60_000));
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
    let r = c.produce("t", 0, -1, batch(&values(1..2), 1000));
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 1));

    // A topic's own bound wins over the broker's, both ways.
    let day_ms = 24 * 3600 * 1000;
    let configs = [("message.timestamp.difference.max.ms", "86400000")];
    assert_eq!(c.create_topic("day", 1, &configs).error, ErrorCode::None);
    let r = c.produce("day", 0, -1, batch(&values(0..1), now_ms() - 2 * day_ms));
    assert_eq!(r.error, ErrorCode::InvalidTimestamp);
    let r = c.produce(
        "day",
        0,
        -1,
        batch(&values(0..1), now_ms() + 2 * 3600 * 1000),
    );
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
}

#[test]
fn the_broker_setting_bounds_timestamps_behind_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with(
        dir.path(),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--message-timestamp-before-max-ms".into(),
            "60000".into(),
        ],
    );
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    let r = c.produce("t", 0, -1, batch(&values(0..1), 1000));
    assert_eq!(r.error, ErrorCode::InvalidTimestamp);
    let r = c.produce("t", 0, -1, batch(&values(0..1), now_ms()));
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
}

#[test]
fn create_topic_refuses_partitions_past_the_broker_replica_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "max_partition_replicas = 10\n").unwrap();
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config.display().to_string(),
        ],
    );
    let mut c = broker.connect();
    let r = c.create_topic("eleven", 11, &[]);
    assert_eq!(r.error, ErrorCode::InvalidPartitions);
    assert!(
        r.message.contains("limit of 10") && r.message.contains("--max-partition-replicas"),
        "{}",
        r.message
    );
    assert_eq!(c.create_topic("ten", 10, &[]).error, ErrorCode::None);
    // The broker is full now: one more is refused, and the flag wins over
    // the file.
    assert_eq!(
        c.create_topic("one", 1, &[]).error,
        ErrorCode::InvalidPartitions
    );
    broker.terminate();
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config.display().to_string(),
            "--max-partition-replicas".into(),
            "11".into(),
        ],
    );
    let mut c = broker.connect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The controller may still be electing itself after the restart.
    let r = loop {
        let r = c.create_topic("one", 1, &[]);
        if r.error != ErrorCode::NotController || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(r.error, ErrorCode::None, "{}", r.message);
}
