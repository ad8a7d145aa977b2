//! The broker as a real process: records go in and come out, survive a
//! restart and a SIGKILL, and bad input gets a typed error or a closed
//! connection without disturbing anyone else.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BrokerProcess, Client, batch, fetch_request, read_all, try_read_from, values};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

#[test]
fn records_produced_come_back_in_order_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("orders", 2, &[]).error, ErrorCode::None);
    assert_eq!(
        c.create_topic("orders", 2, &[]).error,
        ErrorCode::TopicAlreadyExists
    );
    for (i, acks) in [(0u64, -1i8), (1, 1), (2, -1)] {
        let r = c.produce(
            "orders",
            1,
            acks,
            batch(&values(i * 10..i * 10 + 10), 1000 + i as i64),
        );
        assert_eq!((r.error, r.base_offset), (ErrorCode::None, i * 10));
    }
    let expect: Vec<(u64, String)> = (0..30).map(|i| (i, format!("value-{i}"))).collect();
    assert_eq!(read_all(&mut c, "orders", 1), expect);
    assert!(read_all(&mut c, "orders", 0).is_empty());
    // ListOffsets: earliest, latest, by time.
    let (_, r) = c.call(Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: "orders".into(),
            partitions: vec![
                ListOffsetsPartition {
                    partition: 1,
                    timestamp_ms: EARLIEST_TIMESTAMP,
                },
                ListOffsetsPartition {
                    partition: 1,
                    timestamp_ms: LATEST_TIMESTAMP,
                },
                ListOffsetsPartition {
                    partition: 1,
                    timestamp_ms: 1001,
                },
                ListOffsetsPartition {
                    partition: 1,
                    timestamp_ms: 5000,
                },
            ],
        }],
    }));
    let Some(Response::ListOffsets(l)) = r else {
        panic!()
    };
    let offsets: Vec<i64> = l.topics[0].partitions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![0, 30, 10, -1]);
    broker.terminate();

    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(read_all(&mut c, "orders", 1), expect);
    let (_, r) = c.call(Request::Metadata(MetadataRequest { topics: None }));
    let Some(Response::Metadata(m)) = r else {
        panic!()
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].partitions[1].high_watermark, 30);
    assert_eq!(m.topics[0].partitions[1].leader, 1);
}

#[test]
fn a_topic_of_many_partitions_is_answered_once_every_partition_is_open_and_led() {
    // Opening this many replicas takes the Raft thread several passes
    // (it runs rounds in between): the creation is answered only after
    // the last one, so every partition is led, and takes a produce, at
    // once.
    const PARTITIONS: u32 = 600;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(
        c.create_topic("wide", PARTITIONS, &[]).error,
        ErrorCode::None
    );
    let (_, r) = c.call(Request::Metadata(MetadataRequest {
        topics: Some(vec!["wide".into()]),
    }));
    let Some(Response::Metadata(m)) = r else {
        panic!("metadata response")
    };
    let leaders: Vec<i32> = m.topics[0].partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, vec![1; PARTITIONS as usize]);
    for p in [PARTITIONS - 1, PARTITIONS / 2, 0] {
        let r = c.produce("wide", p, 1, batch(&values(0..1), 1000));
        assert_eq!((p, r.error, r.base_offset), (p, ErrorCode::None, 0));
    }
}

#[test]
fn every_acknowledged_record_survives_a_sigkill_during_acks_all_produce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("events", 1, &[]).error, ErrorCode::None);
    let addr = broker.addr;
    let (tx, rx) = std::sync::mpsc::channel();
    let producer = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let mut next = 0u64;
        loop {
            let records = batch(&values(next..next + 5), 0);
            // The kill may land between a response and the next request.
            let Ok(id) = c.try_send(&Request::Produce(ProduceRequest {
                acks: -1,
                timeout_ms: 30_000,
                topics: vec![ProduceTopic {
                    name: "events".into(),
                    partitions: vec![ProducePartition {
                        partition: 0,
                        records: vec![records],
                    }],
                }],
            })) else {
                return;
            };
            let Some(payload) = c.read_frame() else {
                return;
            };
            let Ok((h, Some(Response::Produce(r)))) = decode_response(payload, ApiKey::Produce)
            else {
                return;
            };
            assert_eq!(h.correlation_id, id);
            let p = &r.topics[0].partitions[0];
            if !p.error.is_ok() {
                return;
            }
            assert_eq!(p.base_offset, next);
            next += 5;
            if tx.send(next).is_err() {
                return;
            }
        }
    });
    // Let a few hundred acknowledged writes through, then kill mid-stream.
    let mut acked = 0;
    while acked < 500 {
        acked = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    broker.kill();
    while let Ok(n) = rx.recv_timeout(Duration::from_millis(500)) {
        acked = n;
    }
    producer.join().unwrap();

    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    let got = read_all(&mut c, "events", 0);
    assert!(
        got.len() as u64 >= acked,
        "{} records after restart, {acked} acknowledged",
        got.len()
    );
    for (i, (offset, value)) in got.iter().enumerate() {
        assert_eq!(
            (*offset, value.as_str()),
            (i as u64, format!("value-{i}").as_str())
        );
    }
}

/// `.log` files of topic partitions under `data_dir` (the controller's
/// own log aside).
fn partition_segment_files(data_dir: &std::path::Path) -> usize {
    let mut n = 0;
    for dir in std::fs::read_dir(data_dir).unwrap().flatten() {
        if dir.file_name() == "controller" || !dir.path().is_dir() {
            continue;
        }
        n += std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "log"))
            .count();
    }
    n
}

#[test]
fn retention_deletes_the_oldest_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "retention_check_ms = 100\n").unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start_with(
        &data,
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config.display().to_string(),
        ],
    );
    let mut c = broker.connect();
    let configs = [
        ("max.message.bytes", "4096"),
        ("segment.bytes", "8192"),
        ("retention.bytes", "16384"),
    ];
    assert_eq!(c.create_topic("r", 1, &configs).error, ErrorCode::None);
    // 40 batches of 10 records of 300 bytes: about 15 segments.
    let value = |offset: u64| format!("{offset:0>300}");
    const RECORDS: u64 = 400;
    // Timestamped now: only retention.bytes applies, not the age limit.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for first in (0..RECORDS).step_by(10) {
        let values: Vec<String> = (first..first + 10).map(value).collect();
        let r = c.produce("r", 0, -1, batch(&values, now_ms));
        assert_eq!((r.error, r.base_offset), (ErrorCode::None, first));
    }
    // 124 KB in segments of 8 KiB, of which retention keeps 16 KiB and the
    // active segment. It runs every 100 ms, in passes that may each take
    // some segments, and moves the log start before the janitor unlinks
    // the files it took: the log start is read on both sides of the file
    // count, and taken as settled only once it has not moved for a second
    // (ten passes).
    let deadline = Instant::now() + Duration::from_secs(20);
    let log_start_of = |c: &mut Client| {
        let f = c.fetch("r", 0, RECORDS - 10, 0);
        assert!(f.error.is_ok(), "fetch error {:?}", f.error);
        f.log_start_offset
    };
    let mut seen = 0;
    let mut unmoved_since = Instant::now();
    let mut log_start = loop {
        let before = log_start_of(&mut c);
        let files = partition_segment_files(&data);
        let after = log_start_of(&mut c);
        assert!(
            seen <= before && before <= after,
            "the log start never moves back: {seen}, then {before}, then {after}"
        );
        if after != seen {
            seen = after;
            unmoved_since = Instant::now();
        }
        let settled = before == after && unmoved_since.elapsed() >= Duration::from_secs(1);
        if after > 0 && files <= 4 && settled {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "retention: log start {after} and {files} segment files after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // A pass that runs late (a starved broker) may still move the log
    // start: what is below it is then gone by right, and the rest is read
    // again from the new start, which only ever moves forward.
    let read = loop {
        match try_read_from(&mut c, "r", 0, log_start) {
            Ok(read) => break read,
            Err(ErrorCode::OffsetOutOfRange) => {
                let newer = log_start_of(&mut c);
                assert!(
                    newer > log_start,
                    "offset {log_start} out of range while the log still starts there"
                );
                log_start = newer;
            }
            Err(e) => panic!("fetch error {e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the log start kept moving, now {log_start}"
        );
    };
    assert_eq!(log_start % 10, 0, "the log starts at a batch");
    assert!(
        RECORDS - log_start >= 16384 / 310,
        "retention kept at least retention.bytes, from {log_start}"
    );
    let want: Vec<(u64, String)> = (log_start..RECORDS).map(|o| (o, value(o))).collect();
    assert_eq!(read, want);
    // Below the log start nothing is served.
    assert_eq!(c.fetch("r", 0, 0, 0).error, ErrorCode::OffsetOutOfRange);
}

#[test]
fn a_parked_fetch_does_not_hold_up_a_produce_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    let fetch_id = c.send(&fetch_request("t", 0, 0, 10_000));
    let produce_id = c.send(&Request::Produce(ProduceRequest {
        acks: 1,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: vec![batch(&values(0..3), 0)],
            }],
        }],
    }));
    // The produce is handled while the fetch is parked, and its data
    // completes the fetch, long before the fetch's 10 s wait. Had the
    // produce waited behind the fetch, the fetch would have ended empty.
    // Which answer is written first is not pinned: with one voter the
    // entry commits in the round that appends it, and the produce's
    // answer and the fetch's wake-up race.
    let started = Instant::now();
    let mut fetched = None;
    let mut produced = None;
    for _ in 0..2 {
        let frame = c.read_frame().unwrap();
        let header = decode_response_header(&frame).unwrap();
        if header.correlation_id == fetch_id {
            fetched = Some(decode_response(frame, ApiKey::Fetch).unwrap());
        } else {
            assert_eq!(header.correlation_id, produce_id);
            produced = Some(decode_response(frame, ApiKey::Produce).unwrap());
        }
    }
    let Some((_, Some(Response::Produce(p)))) = produced else {
        panic!("the produce is answered")
    };
    assert!(p.topics[0].partitions[0].error.is_ok());
    let Some((_, Some(Response::Fetch(f)))) = fetched else {
        panic!("the fetch is answered")
    };
    assert!(
        !f.topics[0].partitions[0].records.is_empty(),
        "the parked fetch was completed by the produce's records"
    );
    eprintln!(
        "parked fetch completed {:?} after the produce was sent",
        started.elapsed()
    );
}

#[test]
fn a_parked_fetch_is_answered_when_its_own_partition_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut producer = broker.connect();
    assert_eq!(producer.create_topic("t", 2, &[]).error, ErrorCode::None);
    let mut consumer = broker.connect();
    // Well before the fetch's longest wait (30 s): an answer within it
    // came from the write, not from the wait running out.
    consumer
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let fetch_id = consumer.send(&fetch_request("t", 0, 0, 30_000));
    // Answered after the fetch was routed: it is parked, or about to be.
    consumer.call(Request::ApiVersions);
    // Another partition moves; then the fetch's own.
    let other = producer.produce("t", 1, -1, batch(&values(0..5), 0));
    assert_eq!(other.error, ErrorCode::None);
    let own = producer.produce("t", 0, -1, batch(&values(0..3), 0));
    assert_eq!(own.error, ErrorCode::None);
    let frame = consumer
        .read_frame()
        .expect("the parked fetch is answered once its partition is written");
    let (h, r) = decode_response(frame, ApiKey::Fetch).unwrap();
    assert_eq!(h.correlation_id, fetch_id);
    let Some(Response::Fetch(f)) = r else {
        panic!("a fetch response")
    };
    let p = &f.topics[0].partitions[0];
    assert_eq!(p.error, ErrorCode::None);
    let got: Vec<String> = rill_storage::batches_of(&p.records, usize::MAX)
        .flat_map(|b| {
            let b = b.unwrap();
            b.verify_crc().unwrap();
            b.records()
                .map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, values(0..3));
}

#[test]
fn produce_requests_pipelined_on_one_connection_are_appended_in_the_order_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    // Sent back to back without waiting for answers: request i carries
    // records [i * 5, i * 5 + 5), with acks 1, all and 0 in turn.
    const REQUESTS: u64 = 12;
    let mut sent = Vec::new();
    for i in 0..REQUESTS {
        let acks = [1, -1, 0][(i % 3) as usize];
        let id = c.send(&Request::Produce(ProduceRequest {
            acks,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: vec![batch(&values(i * 5..i * 5 + 5), 0)],
                }],
            }],
        }));
        sent.push((id, acks));
    }
    let answered = sent.iter().filter(|(_, acks)| *acks != 0).count();
    let mut offsets = std::collections::BTreeMap::new();
    for _ in 0..answered {
        let (h, r) = decode_response(c.read_frame().unwrap(), ApiKey::Produce).unwrap();
        let Some(Response::Produce(r)) = r else {
            panic!("produce response")
        };
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error, ErrorCode::None);
        offsets.insert(h.correlation_id, p.base_offset);
    }
    // Answered requests got base offsets in the order they were sent...
    let in_order: Vec<u64> = sent
        .iter()
        .filter_map(|(id, _)| offsets.get(id).copied())
        .collect();
    let mut sorted = in_order.clone();
    sorted.sort_unstable();
    assert_eq!(in_order, sorted, "offsets by request order");
    // ...and the log holds every request's records in that order.
    let records = read_all(&mut c, "t", 0);
    let expected: Vec<String> = values(0..REQUESTS * 5);
    let got: Vec<String> = records.into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, expected);
}

/// Opens a connection, sends `bytes`, and reports whether the broker closed
/// it within 2 s.
fn closes_within_2s(broker: &BrokerProcess, bytes: &[u8], then_half_close: bool) -> bool {
    let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
    s.write_all(bytes).unwrap();
    if then_half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0))
}

#[test]
fn bad_input_gets_a_typed_error_or_a_closed_connection_and_disturbs_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut good = broker.connect();
    assert_eq!(good.create_topic("t", 1, &[]).error, ErrorCode::None);
    assert_eq!(
        good.produce("t", 0, -1, batch(&values(0..10), 0)).error,
        ErrorCode::None
    );
    let before = read_all(&mut good, "t", 0);

    // Garbage, a 4 GiB length prefix, a frame cut short: each closes only its own connection.
    assert!(closes_within_2s(
        &broker,
        &[7, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        false
    ));
    assert!(closes_within_2s(&broker, &[0xff, 0xff, 0xff, 0xff], false));
    assert!(closes_within_2s(&broker, &[100, 0, 0, 0, 1, 2, 3], true));
    assert_eq!(
        read_all(&mut good, "t", 0),
        before,
        "the other connection still works"
    );

    // An unknown API key: an error response, and the connection stays.
    let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
    let header = RequestHeader {
        api_key: 99,
        api_version: 0,
        correlation_id: 5,
        client_id: "x".into(),
    };
    for p in encode_request(&header, &Request::ApiVersions) {
        s.write_all(&p).unwrap();
    }
    let mut raw = Client::from_stream(s);
    let h = decode_response_header(&raw.read_frame().unwrap()).unwrap();
    assert_eq!((h.correlation_id, h.error), (5, ErrorCode::UnsupportedApi));
    let (h, _) = raw.call(Request::ApiVersions);
    assert!(h.error.is_ok(), "still serving after the unknown API");

    // A batch whose CRC is wrong, and one over the maximum size.
    let mut bad = batch(&values(0..3), 0).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        good.produce("t", 0, -1, Bytes::from(bad)).error,
        ErrorCode::CorruptMessage
    );
    let big = vec!["x".repeat(1000); 1100];
    let mut builder = rill_storage::BatchBuilder::new(4 << 20);
    for v in &big {
        assert!(
            builder
                .push(&rill_storage::NewRecord::value(v.as_bytes(), 0))
                .unwrap()
        );
    }
    let too_large = Bytes::from(builder.finish().unwrap());
    assert_eq!(
        good.produce("t", 0, -1, too_large).error,
        ErrorCode::RecordTooLarge
    );
    // A fetch for a topic that does not exist; a topic named ../x.
    assert_eq!(
        good.fetch("nope", 0, 0, 0).error,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        good.create_topic("../x", 1, &[]).error,
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        good.produce("t", 0, 3, batch(&values(0..1), 0)).error,
        ErrorCode::InvalidRequiredAcks
    );
    // None of it changed the stored data.
    assert_eq!(read_all(&mut good, "t", 0), before);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries
            .iter()
            .all(|n| n.to_str().is_some_and(|n| !n.contains(".."))),
        "{entries:?}"
    );
}
