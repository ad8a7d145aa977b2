//! Load for the tests that change a cluster under clients: an idempotent
//! `acks=all` producer that records every acknowledgement, a reader of a
//! whole topic, and the check that every acknowledged record is where its
//! producer was told, once, in send order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rill_client::{
    Acks, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

/// A record the producer had acknowledged: partition, offset, value.
pub type Acked = (u32, u64, String);

/// A producer of keyed records `sent-N` (N counting up in send order) to
/// one topic, with `acks=all` and idempotence (the defaults), as fast as
/// they are acknowledged, at most 2,000 in flight, until finished.
pub struct AckedProducer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckedProducer {
    /// Starts producing to `topic` through `bootstrap` on `rt`.
    pub fn start(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> AckedProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
            rt.spawn(async move {
                let cluster = Cluster::new(&bootstrap, "producer").unwrap();
                let config = ProducerConfig {
                    acks: Acks::All,
                    delivery_timeout_ms: 60_000,
                    ..ProducerConfig::default()
                };
                let producer = Producer::new(cluster, config);
                let mut in_flight = VecDeque::new();
                let mut n = 0u64;
                let record = |value: &str, n: u64| ProducerRecord {
                    topic: topic.clone(),
                    key: Some(Bytes::from(format!("key-{}", n % 97))),
                    value: Some(Bytes::from(value.to_string())),
                    ..ProducerRecord::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("sent-{n}");
                    let delivery = producer.send(record(&value, n)).await.unwrap();
                    in_flight.push_back((value, delivery));
                    n += 1;
                    while in_flight.len() > 2_000 {
                        let (value, d) = in_flight.pop_front().unwrap();
                        if let Ok(m) = d.await {
                            acked
                                .lock()
                                .unwrap()
                                .push((m.partition, m.offset.unwrap(), value));
                        }
                    }
                    if n % 64 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                for (value, d) in in_flight {
                    if let Ok(m) = d.await {
                        acked
                            .lock()
                            .unwrap()
                            .push((m.partition, m.offset.unwrap(), value));
                    }
                }
                producer.close().await;
            })
        };
        AckedProducer { stop, acked, task }
    }

    /// How many records were acknowledged so far (collected in send
    /// order: one held up holds up the count behind it).
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops sending, waits for every record in flight, and returns the
    /// acknowledged ones.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(self.task).unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Every record of every partition of `topic`: (partition, offset) ->
/// value, read until three polls in a row come back empty. Panics on an
/// offset read twice.
pub async fn read_all(bootstrap: &str, topic: &str) -> BTreeMap<(u32, u64), String> {
    let cluster = Cluster::new(bootstrap, "reader").unwrap();
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer
        .assign(topic, None, SeekTo::Earliest)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    let mut idle = 0;
    while idle < 3 {
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        if records.is_empty() {
            idle += 1;
        }
        for r in records {
            idle = 0;
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            assert!(
                out.insert((r.partition, r.offset), value).is_none(),
                "offset {} of partition {} read twice",
                r.offset,
                r.partition
            );
        }
    }
    out
}

/// Every acknowledged record is in `stored` where its producer was told,
/// and each partition holds the producer's records at most once, in the
/// order sent (values `sent-N` count up; other values are ignored).
pub fn assert_acknowledged_once_in_order(
    acked: &[Acked],
    stored: &BTreeMap<(u32, u64), String>,
    partitions: u32,
) {
    for (p, offset, value) in acked {
        assert_eq!(
            stored.get(&(*p, *offset)),
            Some(value),
            "acknowledged record at partition {p} offset {offset}"
        );
    }
    for p in 0..partitions {
        let sent: Vec<u64> = stored
            .range((p, 0)..(p + 1, 0))
            .filter_map(|(_, v)| v.strip_prefix("sent-")?.parse().ok())
            .collect();
        for pair in sent.windows(2) {
            assert!(
                pair[0] < pair[1],
                "partition {p} holds sent-{} before sent-{}: stored twice or out of order",
                pair[0],
                pair[1]
            );
        }
    }
}

/// A consumer reading every partition of a topic from the start, as
/// records come, until finished: each record it was handed, in the order
/// it was handed them.
pub struct LiveReader {
    stop: Arc<AtomicBool>,
    read: Arc<Mutex<Vec<Acked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveReader {
    /// Starts reading `topic` through `bootstrap` on `rt`.
    pub fn start(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> LiveReader {
        let stop = Arc::new(AtomicBool::new(false));
        let read: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let task = {
            let (stop, read) = (stop.clone(), read.clone());
            let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
            rt.spawn(async move {
                let cluster = Cluster::new(&bootstrap, "reader").unwrap();
                let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
                consumer
                    .assign(&topic, None, SeekTo::Earliest)
                    .await
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                        let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                        read.lock().unwrap().push((r.partition, r.offset, value));
                    }
                }
            })
        };
        LiveReader { stop, read, task }
    }

    /// Records read so far.
    pub fn count(&self) -> usize {
        self.read.lock().unwrap().len()
    }

    /// Records read so far of partition `p`.
    pub fn count_of(&self, p: u32) -> usize {
        self.read
            .lock()
            .unwrap()
            .iter()
            .filter(|(rp, _, _)| *rp == p)
            .count()
    }

    /// Stops reading and returns every record read, in the order read.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(self.task).unwrap();
        std::mem::take(&mut *self.read.lock().unwrap())
    }
}
