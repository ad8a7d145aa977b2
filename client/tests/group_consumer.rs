//! The group consumer against a scripted broker on 127.0.0.1 that plays a
//! small coordinator of the kind the groups contract describes: it
//! assigns a topic's partitions round-robin over the members, hands a
//! revoked partition on only once its owner's heartbeat no longer lists
//! it, bumps a member's epoch when its assignment changes, and refuses
//! commits from stale epochs or of partitions a member does not own. It
//! also serves metadata, fetches and list-offsets for one topic whose
//! records the test appends.
//!
//! What is checked: members split a topic with no partition read by two;
//! one that joins takes its share from the others' commits while the
//! partitions that do not move are read on; a member removed by the
//! coordinator loses its partitions uncommitted, rejoins, and reads on
//! from the group's commits; close commits and leaves; offsets reset
//! where the group has no commit; explicit commits; a dropped consumer's
//! heartbeats stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rill_client::protocol::messages::*;
use rill_client::protocol::{
    ErrorCode, Request, Response, decode_request, encode_response, take_frame,
};
use rill_client::{
    ClientError, Cluster, CommitOffset, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig,
    OffsetReset, RebalanceListener,
};
use rill_storage::batch::stamp;
use rill_storage::{BatchBuilder, NewRecord, Offset, RaftIndex, Term};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

const TOPIC: &str = "t";
const GROUP: &str = "g";
const HEARTBEAT_INTERVAL_MS: u32 = 50;
const LEADER_EPOCH: u64 = 4;

/// A member as the scripted coordinator knows it.
#[derive(Debug, Default)]
struct Member {
    epoch: i32,
    /// What its last heartbeat said it owns.
    owned: BTreeSet<u32>,
    /// What the last answer assigned it.
    assigned: BTreeSet<u32>,
}

#[derive(Debug, Default)]
struct State {
    partitions: u32,
    /// Record values per partition; offsets are indexes.
    logs: Vec<Vec<String>>,
    members: BTreeMap<String, Member>,
    joined: u32,
    /// Members to refuse as fenced at their next heartbeat.
    to_fence: BTreeSet<String>,
    commits: BTreeMap<u32, CommitOffset>,
    /// Every commit taken: member, epoch, partition, offset.
    commit_log: Vec<(String, i32, u32, u64)>,
    heartbeats: u64,
    leaves: Vec<String>,
}

impl State {
    /// Round-robin over the members in id order.
    fn target(&self, id: &str) -> BTreeSet<u32> {
        let ids: Vec<&String> = self.members.keys().collect();
        let Some(i) = ids.iter().position(|m| *m == id) else {
            return BTreeSet::new();
        };
        (0..self.partitions)
            .filter(|p| *p as usize % ids.len() == i)
            .collect()
    }

    fn heartbeat(&mut self, h: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        self.heartbeats += 1;
        let refuse = |error| ConsumerGroupHeartbeatResponse {
            error,
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment: None,
        };
        let id = match h.member_epoch {
            0 => {
                self.joined += 1;
                let id = format!("m-{}", self.joined);
                self.members.insert(id.clone(), Member::default());
                id
            }
            -1 => {
                self.members.remove(&h.member_id);
                self.leaves.push(h.member_id.clone());
                return refuse(ErrorCode::None);
            }
            epoch => {
                if self.to_fence.remove(&h.member_id) {
                    self.members.remove(&h.member_id);
                    return refuse(ErrorCode::FencedMemberEpoch);
                }
                match self.members.get(&h.member_id) {
                    None => return refuse(ErrorCode::UnknownMemberId),
                    Some(m) if m.epoch != epoch => return refuse(ErrorCode::FencedMemberEpoch),
                    Some(_) => h.member_id.clone(),
                }
            }
        };
        if let Some(owned) = &h.owned {
            let owned: BTreeSet<u32> = owned
                .iter()
                .filter(|t| t.topic == TOPIC)
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            self.members.get_mut(&id).expect("a member").owned = owned;
        }
        // A partition goes to its new owner once no one else lists it.
        let held_elsewhere: BTreeSet<u32> = self
            .members
            .iter()
            .filter(|(m, _)| **m != id)
            .flat_map(|(_, m)| m.owned.iter().copied())
            .collect();
        let assignment: BTreeSet<u32> = self
            .target(&id)
            .into_iter()
            .filter(|p| !held_elsewhere.contains(p))
            .collect();
        let member = self.members.get_mut(&id).expect("a member");
        if member.assigned != assignment || member.epoch == 0 {
            member.epoch += 1;
            member.assigned = assignment.clone();
        }
        ConsumerGroupHeartbeatResponse {
            error: ErrorCode::None,
            member_id: Some(id),
            member_epoch: member.epoch,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment: Some(vec![TopicPartitions {
                topic: TOPIC.into(),
                partitions: assignment.into_iter().collect(),
            }]),
        }
    }

    fn commit(&mut self, c: &OffsetCommitRequest) -> OffsetCommitResponse {
        let error_for = |s: &State, p: u32| match s.members.get(&c.member_id) {
            None => ErrorCode::UnknownMemberId,
            Some(m) if m.epoch != c.member_epoch => ErrorCode::FencedMemberEpoch,
            Some(m) if !m.owned.contains(&p) && !m.assigned.contains(&p) => {
                ErrorCode::FencedMemberEpoch
            }
            Some(_) => ErrorCode::None,
        };
        let mut topics = Vec::new();
        for t in &c.topics {
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let error = error_for(self, p.partition);
                if error.is_ok() {
                    self.commits.insert(
                        p.partition,
                        CommitOffset {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                        },
                    );
                    self.commit_log.push((
                        c.member_id.clone(),
                        c.member_epoch,
                        p.partition,
                        p.offset,
                    ));
                }
                partitions.push(OffsetCommitPartitionResponse {
                    partition: p.partition,
                    error,
                });
            }
            topics.push(OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions,
            });
        }
        OffsetCommitResponse { topics }
    }

    fn offset_fetch(&self, f: &OffsetFetchRequest) -> OffsetFetchResponse {
        let wanted = f.topics.clone().unwrap_or_default();
        OffsetFetchResponse {
            error: ErrorCode::None,
            topics: wanted
                .into_iter()
                .map(|t| OffsetFetchTopicResponse {
                    name: t.topic,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let c = self.commits.get(&p);
                            OffsetFetchPartitionResponse {
                                partition: p,
                                offset: c.map_or(NO_COMMITTED_OFFSET, |c| c.offset as i64),
                                leader_epoch: c.map_or(0, |c| c.leader_epoch),
                                metadata: None,
                                error: ErrorCode::None,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The records of `partition` from `offset`, as one batch.
    fn read(&self, partition: u32, offset: u64) -> Vec<Bytes> {
        let log = &self.logs[partition as usize];
        if offset as usize >= log.len() {
            return Vec::new();
        }
        let mut b = BatchBuilder::new(1 << 20);
        for v in &log[offset as usize..] {
            assert!(b.push(&NewRecord::value(v.as_bytes(), 1)).expect("push"));
        }
        let mut batch = b.finish().expect("a batch");
        stamp(&mut batch, Offset(offset), Term(LEADER_EPOCH), RaftIndex(1));
        vec![Bytes::from(batch)]
    }
}

/// The scripted broker: its address and state.
struct Scripted {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Scripted {
    async fn start(partitions: u32) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            partitions,
            logs: vec![Vec::new(); partitions as usize],
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, port, Arc::clone(&shared)));
            }
        });
        Scripted {
            addr: format!("127.0.0.1:{port}"),
            state,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state")
    }

    /// Appends `n` records to each partition, named by partition and
    /// offset.
    fn append(&self, n: usize) {
        let mut s = self.state();
        for (p, log) in s.logs.iter_mut().enumerate() {
            for _ in 0..n {
                let offset = log.len();
                log.push(format!("{p}/{offset}"));
            }
        }
    }

    fn total(&self) -> usize {
        self.state().logs.iter().map(Vec::len).sum()
    }

    fn consumer(&self, config: GroupConfig) -> Consumer {
        let cluster = Cluster::new(&self.addr, "group-consumer-test").expect("cluster");
        let mut c = Consumer::new(
            cluster,
            ConsumerConfig {
                max_wait_ms: 50,
                ..ConsumerConfig::default()
            },
        );
        c.subscribe(config, vec![TOPIC.into()]).expect("subscribe");
        c
    }
}

/// Answers one connection, each request on a task of its own (a parked
/// fetch must not hold a heartbeat up), responses through one writer.
async fn serve(socket: tokio::net::TcpStream, port: u16, state: Arc<Mutex<State>>) {
    let (mut rd, mut wr) = socket.into_split();
    let (out, mut outgoing) = mpsc::channel::<Vec<Bytes>>(64);
    tokio::spawn(async move {
        while let Some(parts) = outgoing.recv().await {
            for part in parts {
                if wr.write_all(&part).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut buf = BytesMut::new();
    loop {
        let payload = loop {
            if let Some(p) = take_frame(&mut buf, 1 << 20).expect("frame") {
                break p;
            }
            match rd.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        };
        let (header, request) = decode_request(payload).expect("request");
        let (state, out) = (Arc::clone(&state), out.clone());
        tokio::spawn(async move {
            let response = answer(&state, port, request).await;
            let _ = out
                .send(encode_response(header.correlation_id, &response))
                .await;
        });
    }
}

async fn answer(state: &Mutex<State>, port: u16, request: Request) -> Response {
    let lock = || state.lock().expect("state");
    match request {
        Request::Metadata(_) => {
            let partitions = lock().partitions;
            Response::Metadata(MetadataResponse {
                brokers: vec![BrokerMetadata {
                    broker_id: 1,
                    host: "127.0.0.1".into(),
                    port,
                }],
                controller_id: 1,
                topics: vec![TopicMetadata {
                    error: ErrorCode::None,
                    name: TOPIC.into(),
                    topic_id: [1; 16],
                    partitions: (0..partitions)
                        .map(|partition| PartitionMetadata {
                            partition,
                            error: ErrorCode::None,
                            leader: 1,
                            leader_epoch: LEADER_EPOCH,
                            replicas: vec![1],
                            log_start_offset: 0,
                            high_watermark: 0,
                        })
                        .collect(),
                }],
            })
        }
        Request::FindCoordinator(_) => Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::None,
            coordinator: 1,
            host: "127.0.0.1".into(),
            port,
        }),
        Request::ConsumerGroupHeartbeat(h) => {
            Response::ConsumerGroupHeartbeat(lock().heartbeat(&h))
        }
        Request::OffsetCommit(c) => Response::OffsetCommit(lock().commit(&c)),
        Request::OffsetFetch(f) => Response::OffsetFetch(lock().offset_fetch(&f)),
        Request::ListOffsets(l) => {
            let s = lock();
            Response::ListOffsets(ListOffsetsResponse {
                topics: l
                    .topics
                    .iter()
                    .map(|t| ListOffsetsTopicResponse {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| ListOffsetsPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                leader_hint: NO_BROKER,
                                leader_epoch: 0,
                                offset: if p.timestamp_ms == EARLIEST_TIMESTAMP {
                                    0
                                } else {
                                    s.logs[p.partition as usize].len() as i64
                                },
                            })
                            .collect(),
                    })
                    .collect(),
            })
        }
        Request::Fetch(f) => {
            let deadline = Instant::now() + Duration::from_millis(u64::from(f.max_wait_ms));
            loop {
                let response = {
                    let s = lock();
                    FetchResponse {
                        topics: f
                            .topics
                            .iter()
                            .map(|t| FetchTopicResponse {
                                name: t.name.clone(),
                                partitions: t
                                    .partitions
                                    .iter()
                                    .map(|p| FetchPartitionResponse {
                                        partition: p.partition,
                                        error: ErrorCode::None,
                                        leader_hint: NO_BROKER,
                                        leader_epoch: 0,
                                        high_watermark: s.logs[p.partition as usize].len() as u64,
                                        log_start_offset: 0,
                                        records: s.read(p.partition, p.fetch_offset),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    }
                };
                let any = response
                    .topics
                    .iter()
                    .any(|t| t.partitions.iter().any(|p| !p.records.is_empty()));
                if any || Instant::now() >= deadline {
                    return Response::Fetch(response);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        other => panic!("the scripted broker was not asked for {other:?}"),
    }
}

/// Records every call, by kind.
#[derive(Debug, Default)]
struct Calls {
    assigned: Vec<Vec<(String, u32)>>,
    revoked: Vec<Vec<(String, u32)>>,
    lost: Vec<Vec<(String, u32)>>,
}

struct Listener(Arc<Mutex<Calls>>);

impl RebalanceListener for Listener {
    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        self.0
            .lock()
            .expect("calls")
            .assigned
            .push(partitions.to_vec());
    }
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        self.0
            .lock()
            .expect("calls")
            .revoked
            .push(partitions.to_vec());
    }
    fn on_partitions_lost(&mut self, partitions: &[(String, u32)]) {
        self.0.lock().expect("calls").lost.push(partitions.to_vec());
    }
}

fn config(auto_commit: bool) -> GroupConfig {
    GroupConfig {
        auto_commit,
        auto_commit_interval_ms: 100,
        auto_offset_reset: OffsetReset::Earliest,
        close_timeout_ms: 5_000,
        ..GroupConfig::new(GROUP)
    }
}

fn listened(auto_commit: bool) -> (GroupConfig, Arc<Mutex<Calls>>) {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let mut c = config(auto_commit);
    c.listener = Some(Box::new(Listener(Arc::clone(&calls))));
    (c, calls)
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn partitions_of(c: &Consumer) -> BTreeSet<u32> {
    c.positions().keys().map(|(_, p)| *p).collect()
}

/// Polls every consumer in turn until `done` holds of what they have
/// returned so far, for at most 20 s.
async fn poll_until(
    consumers: &mut [&mut Consumer],
    read: &mut [Vec<ConsumerRecord>],
    what: &str,
    done: impl Fn(&[&mut Consumer], &[Vec<ConsumerRecord>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(consumers, read) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for (c, r) in consumers.iter_mut().zip(read.iter_mut()) {
            r.extend(c.poll(Duration::from_millis(20)).await.expect("poll"));
        }
    }
}

fn no_duplicates(read: &[Vec<ConsumerRecord>]) -> BTreeSet<String> {
    let all: Vec<String> = read.iter().flat_map(|r| values(r)).collect();
    let distinct: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "a record was read twice");
    distinct
}

#[tokio::test]
async fn members_split_the_partitions_and_a_newcomer_takes_its_share_while_the_rest_read_on() {
    let broker = Scripted::start(6).await;
    broker.append(10);
    let (config_a, calls_a) = listened(true);
    let mut a = broker.consumer(config_a);
    let mut b = broker.consumer(config(true));
    let mut read = vec![Vec::new(), Vec::new()];
    poll_until(
        &mut [&mut a, &mut b],
        &mut read,
        "the first 60 records",
        |c, r| {
            partitions_of(c[0]).len() == 3
                && partitions_of(c[1]).len() == 3
                && no_duplicates(r).len() == 60
        },
    )
    .await;
    assert!(partitions_of(&a).is_disjoint(&partitions_of(&b)));

    // A third member joins; records keep arriving meanwhile.
    let before_a: BTreeSet<u32> = partitions_of(&a);
    let revoked_before = calls_a.lock().expect("calls").revoked.len();
    let mut c = broker.consumer(config(true));
    read.push(Vec::new());
    let mut rounds = 0;
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        &mut read,
        "three members of two partitions each",
        |c, _| {
            c.iter().all(|c| partitions_of(c).len() == 2)
                && partitions_of(c[0]).is_disjoint(&partitions_of(c[1]))
                && partitions_of(c[0]).is_disjoint(&partitions_of(c[2]))
                && partitions_of(c[1]).is_disjoint(&partitions_of(c[2]))
        },
    )
    .await;
    while broker.total() < 240 {
        broker.append(1);
        rounds += 1;
        assert!(rounds < 1_000);
    }
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        &mut read,
        "every record",
        |_, r| no_duplicates(r).len() == 240,
    )
    .await;
    // A gave up exactly the partitions that moved away from it, and was
    // never told to stop those it kept.
    let after: BTreeSet<u32> = partitions_of(&a);
    let kept: BTreeSet<u32> = after.intersection(&before_a).copied().collect();
    let calls = calls_a.lock().expect("calls");
    let revoked: BTreeSet<u32> = calls.revoked[revoked_before..]
        .iter()
        .flatten()
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(revoked, before_a.difference(&after).copied().collect());
    assert!(revoked.is_disjoint(&kept));
    assert!(calls.lost.is_empty());
    // Its kept partitions were read by it alone, from first record to
    // last, through the rebalance.
    for p in &kept {
        let mine = values(&read[0])
            .into_iter()
            .filter(|v| v.starts_with(&format!("{p}/")))
            .count();
        assert_eq!(mine, 40, "partition {p}");
    }
    // What C read of the moved partitions started where A's commit at
    // revocation left off: no record of them was read twice (above) nor
    // skipped (every record was read).
    let moved: Vec<u32> = partitions_of(&c).into_iter().collect();
    assert!(
        values(&read[2])
            .iter()
            .all(|v| moved.iter().any(|p| v.starts_with(&format!("{p}/"))))
    );
}

#[tokio::test]
async fn polls_cut_short_at_any_point_lose_no_change_and_no_record() {
    let broker = Scripted::start(4).await;
    broker.append(25);
    let mut consumers = vec![broker.consumer(config(true))];
    let mut read: Vec<Vec<ConsumerRecord>> = vec![Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut cut_us = 0u64;
    let mut round = 0u32;
    loop {
        round += 1;
        if round == 20 {
            consumers.push(broker.consumer(config(true)));
            read.push(Vec::new());
        }
        if round % 10 == 0 {
            broker.append(1);
        }
        for (c, r) in consumers.iter_mut().zip(read.iter_mut()) {
            // Dropped at whatever await point it reached.
            cut_us = (cut_us * 7 + 13) % 10_000;
            if let Ok(got) = tokio::time::timeout(
                Duration::from_micros(cut_us),
                c.poll(Duration::from_millis(20)),
            )
            .await
            {
                r.extend(got.expect("poll"));
            }
        }
        let split = consumers.len() == 2 && consumers.iter().all(|c| partitions_of(c).len() == 2);
        if split && no_duplicates(&read).len() == broker.total() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {round} rounds: {:?} {:?} {} of {}",
            consumers.iter().map(partitions_of).collect::<Vec<_>>(),
            read.iter().map(Vec::len).collect::<Vec<_>>(),
            no_duplicates(&read).len(),
            broker.total(),
        );
    }
}

#[tokio::test]
async fn a_removed_member_loses_its_partitions_uncommitted_and_reads_on_from_the_group_commits() {
    let broker = Scripted::start(2).await;
    broker.append(5);
    let (config, calls) = listened(false);
    let mut a = broker.consumer(config);
    let mut read = vec![Vec::new()];
    poll_until(&mut [&mut a], &mut read, "the first records", |_, r| {
        r[0].len() == 10
    })
    .await;
    a.commit_sync().await.expect("commit");
    broker.append(5);
    poll_until(&mut [&mut a], &mut read, "the next records", |_, r| {
        r[0].len() == 20
    })
    .await;
    // Removed by the coordinator before it commits the next ones.
    let member = broker
        .state()
        .members
        .keys()
        .next()
        .cloned()
        .expect("a member");
    broker.state().to_fence.insert(member.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.state().members.contains_key(&member) {
        assert!(Instant::now() < deadline, "the member is fenced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = a.commit_sync().await;
    assert!(
        matches!(refused, Err(ClientError::Fenced { .. })),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("no longer owns"), "{message}");
    // It rejoins and reads the uncommitted records again.
    let mut again = vec![Vec::new()];
    poll_until(&mut [&mut a], &mut again, "the records again", |_, r| {
        r[0].len() == 10
    })
    .await;
    let mut again = values(&again[0]);
    again.sort();
    assert_eq!(
        again,
        [
            "0/5", "0/6", "0/7", "0/8", "0/9", "1/5", "1/6", "1/7", "1/8", "1/9"
        ]
    );
    let calls = calls.lock().expect("calls");
    assert_eq!(calls.lost.len(), 1);
    assert_eq!(calls.lost[0].len(), 2);
    assert!(calls.revoked.is_empty(), "lost, not revoked");
    // Nothing was committed between the first commit and the loss.
    assert!(
        broker
            .state()
            .commit_log
            .iter()
            .all(|(m, _, _, offset)| *m != member || *offset == 5)
    );
}

#[tokio::test]
async fn close_commits_what_poll_returned_and_leaves() {
    let broker = Scripted::start(2).await;
    broker.append(3);
    let mut a = broker.consumer(config(true));
    let mut read = vec![Vec::new()];
    poll_until(&mut [&mut a], &mut read, "every record", |_, r| {
        r[0].len() == 6
    })
    .await;
    a.close().await.expect("close");
    let s = broker.state();
    assert_eq!(s.commits.get(&0).map(|c| c.offset), Some(3));
    assert_eq!(s.commits.get(&1).map(|c| c.offset), Some(3));
    assert_eq!(
        s.commits.get(&1).map(|c| c.leader_epoch),
        Some(LEADER_EPOCH),
        "the epoch of the batch read"
    );
    assert_eq!(s.leaves.len(), 1);
    assert!(s.members.is_empty());
}

#[tokio::test]
async fn a_partition_without_a_commit_starts_at_auto_offset_reset() {
    let broker = Scripted::start(1).await;
    broker.append(4);
    broker.state().commits.insert(
        0,
        CommitOffset {
            offset: 3,
            leader_epoch: 0,
        },
    );
    let mut a = broker.consumer(config(false));
    let mut read = vec![Vec::new()];
    poll_until(
        &mut [&mut a],
        &mut read,
        "the record after the commit",
        |_, r| !r[0].is_empty(),
    )
    .await;
    assert_eq!(values(&read[0]), ["0/3"]);
    a.close().await.expect("close");

    // Latest: only what comes after.
    broker.state().commits.clear();
    let mut b = broker.consumer(GroupConfig {
        auto_offset_reset: OffsetReset::Latest,
        ..config(true)
    });
    let mut read = vec![Vec::new()];
    poll_until(&mut [&mut b], &mut read, "a start", |c, _| {
        !c[0].positions().is_empty()
    })
    .await;
    assert_eq!(b.positions().values().copied().collect::<Vec<_>>(), [4]);
    broker.append(1);
    poll_until(&mut [&mut b], &mut read, "the new record", |_, r| {
        !r[0].is_empty()
    })
    .await;
    assert_eq!(values(&read[0]), ["0/4"]);
    b.close().await.expect("close");

    // None: a clear error naming the partition.
    broker.state().commits.clear();
    let mut n = broker.consumer(GroupConfig {
        auto_offset_reset: OffsetReset::None,
        ..config(false)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        assert!(Instant::now() < deadline, "the error comes");
        match n.poll(Duration::from_millis(50)).await {
            Ok(r) => assert!(r.is_empty()),
            Err(e) => break e,
        }
    };
    assert!(
        error
            .to_string()
            .contains("no committed offset for topic \"t\" partition 0"),
        "{error}"
    );
}

#[tokio::test]
async fn commit_async_may_be_dropped_and_commit_offsets_sync_commits_exactly_what_it_is_given() {
    let broker = Scripted::start(1).await;
    broker.append(5);
    let mut a = broker.consumer(config(true));
    let mut read = vec![Vec::new()];
    poll_until(&mut [&mut a], &mut read, "every record", |_, r| {
        r[0].len() == 5
    })
    .await;
    // Dropped at once, it is sent all the same.
    drop(a.commit_async());
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.state().commits.get(&0).map(|c| c.offset) != Some(5) {
        assert!(Instant::now() < deadline, "the dropped commit lands");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.commit_async().await.expect("awaited");
    // Exactly what it is given, even behind what poll returned...
    let exact = [(
        (TOPIC.to_string(), 0),
        CommitOffset {
            offset: 2,
            leader_epoch: 9,
        },
    )]
    .into_iter()
    .collect();
    a.commit_offsets_sync(exact).await.expect("commit");
    let exact = Some(CommitOffset {
        offset: 2,
        leader_epoch: 9,
    });
    assert_eq!(broker.state().commits.get(&0).copied(), exact);
    // ...outside the group's assignment, refused before it is sent...
    let other = [(
        (TOPIC.to_string(), 7),
        CommitOffset {
            offset: 1,
            leader_epoch: 0,
        },
    )]
    .into_iter()
    .collect();
    assert!(matches!(
        a.commit_offsets_sync(other).await,
        Err(ClientError::Fenced { .. })
    ));
    // ...and close's automatic commit does not go past it.
    a.close().await.expect("close");
    assert_eq!(broker.state().commits.get(&0).copied(), exact);
}

#[tokio::test]
async fn a_dropped_member_stops_heartbeating_and_a_group_consumer_refuses_manual_assignment() {
    let broker = Scripted::start(1).await;
    let mut a = broker.consumer(config(true));
    assert!(
        a.assign(TOPIC, None, rill_client::SeekTo::Earliest)
            .await
            .is_err()
    );
    let mut read = vec![Vec::new()];
    poll_until(&mut [&mut a], &mut read, "an assignment", |c, _| {
        !c[0].positions().is_empty()
    })
    .await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = broker.state().heartbeats;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        broker.state().heartbeats,
        before,
        "no heartbeat after the drop"
    );
}

#[test]
fn a_consumer_and_its_futures_may_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Consumer>();
    let cluster = Cluster::new("127.0.0.1:1", "never-connects").expect("cluster");
    let mut c = Consumer::new(cluster, ConsumerConfig::default());
    send(&c.poll(Duration::from_millis(1)));
    send(&c.commit_sync());
    send(&c.commit_async());
    send(&c.close());
}
