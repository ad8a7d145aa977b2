//! Helpers for the consumer group tests: finding a group's coordinator
//! among brokers that may be down or still electing, the group requests
//! in their plainest form, a group's commits sampled as they move, and a
//! producer writing one record to every partition per round.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill_client::protocol::messages::*;
use rill_client::protocol::*;
use rill_client::{Cluster, Producer, ProducerConfig, ProducerRecord};

use super::Client;

/// Sends `request` on `client`; `None` when the broker is gone or the
/// answer does not come.
pub fn try_call(client: &mut Client, request: &Request) -> Option<Response> {
    let id = client.try_send(request).ok()?;
    let payload = client.next_frame().ok()??;
    let (h, r) = decode_response(payload, request.api_key()).ok()?;
    (h.correlation_id == id && h.error == ErrorCode::None)
        .then_some(r)
        .flatten()
}

/// A connection to `group`'s coordinator, asked of each of `brokers` in
/// turn until one names a coordinator that answers, for at most 60 s.
pub fn coordinator(brokers: &[SocketAddr], group: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(c) = try_coordinator(brokers, group) {
            return c;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A connection to `group`'s coordinator, asking each of `brokers` once;
/// `None` when none names a coordinator that answers.
pub fn try_coordinator(brokers: &[SocketAddr], group: &str) -> Option<Client> {
    for addr in brokers {
        let Ok(stream) = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1)) else {
            continue;
        };
        let mut c = Client::from_stream(stream);
        let find = Request::FindCoordinator(FindCoordinatorRequest {
            group: group.into(),
        });
        if let Some(Response::FindCoordinator(f)) = try_call(&mut c, &find)
            && f.error == ErrorCode::None
        {
            let at = SocketAddr::from(([127, 0, 0, 1], f.port));
            if let Ok(s) = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(1)) {
                return Some(Client::from_stream(s));
            }
        }
    }
    None
}

/// Whether `e` says to ask for the coordinator again.
pub fn moved(e: ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

/// An OffsetCommit of `offsets` (partition, offset) in `topic`.
pub fn commit_request(
    group: &str,
    member: (&str, i32),
    topic: &str,
    offsets: &[(u32, u64)],
    metadata: Option<&str>,
) -> Request {
    Request::OffsetCommit(OffsetCommitRequest {
        group: group.into(),
        member_id: member.0.into(),
        member_epoch: member.1,
        topics: vec![OffsetCommitTopic {
            name: topic.into(),
            partitions: offsets
                .iter()
                .map(|&(partition, offset)| OffsetCommitPartition {
                    partition,
                    offset,
                    leader_epoch: 0,
                    metadata: metadata.map(str::to_string),
                })
                .collect(),
        }],
    })
}

/// The per-partition errors of a commit answer, in order.
pub fn commit_errors(r: Option<Response>) -> Option<Vec<ErrorCode>> {
    match r? {
        Response::OffsetCommit(c) => Some(
            c.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error))
                .collect(),
        ),
        _ => None,
    }
}

/// An OffsetFetch of every commit of `group`.
pub fn fetch_all(group: &str) -> Request {
    Request::OffsetFetch(OffsetFetchRequest {
        group: group.into(),
        topics: None,
    })
}

/// A heartbeat: join with `subscribed` (member epoch 0), or beat with the
/// member's id, epoch and what it owns.
pub fn heartbeat(
    group: &str,
    member_id: &str,
    member_epoch: i32,
    subscribed: Option<&[&str]>,
    owned: &[TopicPartitions],
) -> Request {
    Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
        group: group.into(),
        member_id: member_id.into(),
        member_epoch,
        subscribed_topics: subscribed.map(|s| s.iter().map(|t| t.to_string()).collect()),
        owned: Some(owned.to_vec()),
    })
}

/// The answer to a heartbeat, which must come.
pub fn beat(client: &mut Client, request: Request) -> ConsumerGroupHeartbeatResponse {
    match client.call(request) {
        (_, Some(Response::ConsumerGroupHeartbeat(h))) => h,
        other => panic!("a heartbeat answer, not {other:?}"),
    }
}

/// The partitions of `topic` in an assignment.
pub fn partitions_of(assignment: &[TopicPartitions], topic: &str) -> Vec<u32> {
    assignment
        .iter()
        .filter(|t| t.topic == topic)
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

/// Committed offsets as (topic, partition) → (offset, metadata).
pub type Commits = BTreeMap<(String, u32), (i64, Option<String>)>;

/// `group`'s commits, or `None` when its coordinator does not answer.
pub fn committed(c: &mut Client, group: &str) -> Option<Commits> {
    let Some(Response::OffsetFetch(f)) = try_call(c, &fetch_all(group)) else {
        return None;
    };
    if f.error != ErrorCode::None {
        return None;
    }
    Some(
        f.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        (t.name.clone(), p.partition),
                        (p.offset, p.metadata.clone()),
                    )
                })
            })
            .collect(),
    )
}

/// What a [`CommitSampler`] saw.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Samples its coordinator answered.
    pub answered: usize,
    /// Per partition, each committed offset seen, in order, a repeat of
    /// the one before left out; [`NO_COMMITTED_OFFSET`] when a partition
    /// seen committed before was missing from an answer.
    pub history: BTreeMap<(String, u32), Vec<i64>>,
}

impl Sampled {
    /// Panics, naming the partition and what was seen of it, if a
    /// committed offset ever went backwards (or vanished).
    pub fn assert_never_backwards(&self) {
        for (key, seen) in &self.history {
            assert!(
                seen.windows(2).all(|w| w[0] <= w[1]),
                "the committed offset of {key:?} went backwards: {seen:?}"
            );
        }
    }

    fn note(&mut self, commits: &Commits) {
        self.answered += 1;
        for (key, seen) in &mut self.history {
            if !commits.contains_key(key) && seen.last() != Some(&NO_COMMITTED_OFFSET) {
                seen.push(NO_COMMITTED_OFFSET);
            }
        }
        for (key, (offset, _)) in commits {
            let seen = self.history.entry(key.clone()).or_default();
            if seen.last() != Some(offset) {
                seen.push(*offset);
            }
        }
    }
}

/// A thread that reads a group's committed offsets through OffsetFetch at
/// its coordinator, found again through `brokers` whenever it stops
/// answering, every `every` until stopped.
pub struct CommitSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

impl CommitSampler {
    pub fn start(brokers: &[SocketAddr], group: &str, every: Duration) -> CommitSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let (brokers, group) = (brokers.to_vec(), group.to_string());
        let thread = std::thread::spawn(move || {
            let mut sampled = Sampled::default();
            let mut coord: Option<Client> = None;
            while !stopping.load(Ordering::Relaxed) {
                if coord.is_none() {
                    coord = try_coordinator(&brokers, &group);
                }
                if let Some(c) = &mut coord {
                    match committed(c, &group) {
                        Some(commits) => sampled.note(&commits),
                        None => coord = None,
                    }
                }
                std::thread::sleep(every);
            }
            sampled
        });
        CommitSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; what was seen.
    pub fn stop(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the sampler thread")
    }
}

impl Drop for CommitSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes, each round, one record `p-n` to every partition `p` of a
/// topic, `n` counting rounds, and waits for each to be acknowledged
/// (`acks=all`).
pub struct Writer {
    producer: Producer,
    topic: String,
    partitions: u32,
    /// Rounds written.
    pub round: u64,
    /// Every value acknowledged.
    pub written: BTreeSet<String>,
}

impl Writer {
    pub fn new(bootstrap: &str, topic: &str, partitions: u32) -> Writer {
        let cluster = Cluster::new(bootstrap, "groups-writer").unwrap();
        Writer {
            producer: Producer::new(cluster, ProducerConfig::default()),
            topic: topic.into(),
            partitions,
            round: 0,
            written: BTreeSet::new(),
        }
    }

    pub async fn round(&mut self) {
        let mut pending = Vec::new();
        for p in 0..self.partitions {
            let value = format!("{p}-{}", self.round);
            let d = self
                .producer
                .send(ProducerRecord {
                    topic: self.topic.clone(),
                    partition: Some(p),
                    key: None,
                    value: Some(Bytes::from(value.clone())),
                    timestamp_ms: None,
                    headers: Vec::new(),
                })
                .await
                .unwrap();
            pending.push((d, value));
        }
        for (d, value) in pending {
            d.await.unwrap();
            self.written.insert(value);
        }
        self.round += 1;
    }
}
