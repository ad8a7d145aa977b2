//! The async client library against a real broker process: keyed records
//! land on murmur2's partition, arrive once and in order, survive a restart,
//! and nothing acknowledged is lost to a SIGKILL.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProcess, runtime};
use rill_client::partitioner::partition_for_key;
use rill_client::{
    Acks, Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
    SeekTo,
};

const RECORDS: u64 = 100_000;

/// Reads every partition of `topic` from the start until `expected` records
/// arrived (or 60 s passed); returns (partition, offset, key, value).
async fn read_everything(
    addr: &str,
    topic: &str,
    expected: usize,
) -> Vec<(u32, u64, String, String)> {
    let cluster = Cluster::new(addr, "test").unwrap();
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer
        .assign(topic, None, SeekTo::Earliest)
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let key = r
                .key
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .unwrap_or_default();
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.push((r.partition, r.offset, key, value));
        }
    }
    out
}

fn check_keyed(records: &[(u32, u64, String, String)]) {
    assert_eq!(
        records.len() as u64,
        RECORDS,
        "every record arrives exactly once"
    );
    let mut per_partition: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (p, offset, key, value) in records {
        assert_eq!(
            *p,
            partition_for_key(key.as_bytes(), 3),
            "key {key} on murmur2's partition"
        );
        let n: u64 = value.strip_prefix("value-").unwrap().parse().unwrap();
        assert_eq!(key, &format!("key-{}", n % 1000));
        per_partition.entry(*p).or_default().push((*offset, n));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (p, list) in &per_partition {
        // Offsets gap-free from 0, and values in the order they were sent.
        for (i, (offset, n)) in list.iter().enumerate() {
            assert_eq!(*offset, i as u64, "partition {p}");
            assert!(seen.insert(*n), "value-{n} twice");
        }
        assert!(
            list.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} keeps send order"
        );
    }
}

#[test]
fn keyed_records_arrive_once_in_order_on_murmur2_partitions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let addr = broker.addr.to_string();
    let rt = runtime();
    rt.block_on(async {
        let cluster = Cluster::new(&addr, "test").unwrap();
        Admin::new(cluster.clone())
            .create_topic("keyed", 3, 1, vec![])
            .await
            .unwrap();
        // Small batches: each partition has several requests in flight at
        // once, each carrying several batches, and send order must hold.
        let config = ProducerConfig {
            batch_size_bytes: 16 * 1024,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(cluster, config);
        let mut deliveries = Vec::with_capacity(RECORDS as usize);
        for n in 0..RECORDS {
            let record = ProducerRecord {
                topic: "keyed".into(),
                key: Some(Bytes::from(format!("key-{}", n % 1000))),
                value: Some(Bytes::from(format!("value-{n}"))),
                ..ProducerRecord::default()
            };
            deliveries.push(producer.send(record).await.unwrap());
        }
        let mut acknowledged = BTreeMap::new();
        for (n, d) in deliveries.into_iter().enumerate() {
            let m = d.await.unwrap();
            assert_eq!(
                m.partition,
                partition_for_key(format!("key-{}", n as u64 % 1000).as_bytes(), 3)
            );
            acknowledged.insert((m.partition, m.offset.unwrap()), format!("value-{n}"));
        }
        producer.close().await;
        let stored = read_everything(&addr, "keyed", RECORDS as usize).await;
        check_keyed(&stored);
        for (p, offset, _, value) in &stored {
            assert_eq!(
                acknowledged.get(&(*p, *offset)),
                Some(value),
                "the offset a delivery reported holds its record"
            );
        }
    });
    broker.terminate();
    let broker = BrokerProcess::start(dir.path());
    let addr = broker.addr.to_string();
    rt.block_on(async { check_keyed(&read_everything(&addr, "keyed", RECORDS as usize).await) });
}

#[test]
fn nothing_acknowledged_is_lost_when_the_broker_is_killed_during_acks_all_produce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let addr = broker.addr.to_string();
    let rt = runtime();
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<(u32, u64, String)>();
    let producing = {
        let addr = addr.clone();
        rt.spawn(async move {
            let cluster = Cluster::new(&addr, "test").unwrap();
            Admin::new(cluster.clone())
                .create_topic("durable", 2, 1, vec![])
                .await
                .unwrap();
            let config = ProducerConfig {
                acks: Acks::All,
                delivery_timeout_ms: 3_000,
                ..ProducerConfig::default()
            };
            let producer = Producer::new(cluster, config);
            for n in 0u64.. {
                let value = format!("value-{n}");
                let record = ProducerRecord {
                    topic: "durable".into(),
                    value: Some(Bytes::from(value.clone())),
                    ..ProducerRecord::default()
                };
                let Ok(d) = producer.send(record).await else {
                    return;
                };
                let tx = acked_tx.clone();
                tokio::spawn(async move {
                    if let Ok(m) = d.await {
                        let _ = tx.send((m.partition, m.offset.unwrap(), value));
                    }
                });
                if n % 64 == 63 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    // Kill once a good number of records were acknowledged.
    let mut acked = Vec::new();
    while acked.len() < 20_000 {
        acked.push(acked_rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    broker.kill();
    std::thread::sleep(Duration::from_secs(4));
    producing.abort();
    while let Ok(a) = acked_rx.try_recv() {
        acked.push(a);
    }
    let broker = BrokerProcess::start(dir.path());
    let addr = broker.addr.to_string();
    let stored = rt.block_on(read_everything(&addr, "durable", acked.len()));
    let stored: std::collections::HashMap<(u32, u64), String> =
        stored.into_iter().map(|(p, o, _, v)| ((p, o), v)).collect();
    for (p, o, v) in &acked {
        assert_eq!(
            stored.get(&(*p, *o)),
            Some(v),
            "acknowledged record at {p}/{o} is there"
        );
    }
    eprintln!(
        "{} acknowledged records all found after SIGKILL",
        acked.len()
    );
}
