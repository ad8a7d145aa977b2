//! A scripted broker on 127.0.0.1 for the group consumer's tests (the
//! library's and the CLI's): it plays a small coordinator of the kind the
//! groups contract describes (partitions assigned round-robin over the
//! members; a revoked partition handed on only once its owner's heartbeat
//! no longer lists it; a member's epoch bumped when its assignment
//! changes; commits refused from stale epochs or of partitions a member
//! does not own) and serves metadata, fetches and list-offsets for one
//! topic whose records the test appends. Each request is answered on a
//! task of its own, so a parked fetch never holds a heartbeat up.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rill_client::protocol::messages::*;
use rill_client::protocol::{
    ErrorCode, Request, Response, decode_request, encode_response, take_frame,
};
use rill_client::{Cluster, CommitOffset, Consumer, ConsumerConfig, GroupConfig};
use rill_storage::batch::stamp;
use rill_storage::{BatchBuilder, NewRecord, Offset, RaftIndex, Term};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const TOPIC: &str = "t";
pub const GROUP: &str = "g";
pub const HEARTBEAT_INTERVAL_MS: u32 = 50;
pub const LEADER_EPOCH: u64 = 4;

/// A member as the scripted coordinator knows it.
#[derive(Debug, Default)]
pub struct Member {
    pub epoch: i32,
    /// What its last heartbeat said it owns.
    pub owned: BTreeSet<u32>,
    /// What the last answer assigned it.
    pub assigned: BTreeSet<u32>,
}

#[derive(Debug, Default)]
pub struct State {
    pub partitions: u32,
    /// Record values per partition; offsets are indexes.
    pub logs: Vec<Vec<String>>,
    pub members: BTreeMap<String, Member>,
    pub joined: u32,
    /// Members to refuse as fenced at their next heartbeat.
    pub to_fence: BTreeSet<String>,
    pub commits: BTreeMap<u32, CommitOffset>,
    /// Every commit taken: member, epoch, partition, offset.
    pub commit_log: Vec<(String, i32, u32, u64)>,
    pub heartbeats: u64,
    pub leaves: Vec<String>,
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
pub struct Scripted {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

impl Scripted {
    pub async fn start(partitions: u32) -> Scripted {
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

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state")
    }

    /// Appends `n` records to each partition, named by partition and
    /// offset.
    pub fn append(&self, n: usize) {
        let mut s = self.state();
        for (p, log) in s.logs.iter_mut().enumerate() {
            for _ in 0..n {
                let offset = log.len();
                log.push(format!("{p}/{offset}"));
            }
        }
    }

    pub fn total(&self) -> usize {
        self.state().logs.iter().map(Vec::len).sum()
    }

    pub fn consumer(&self, config: GroupConfig) -> Consumer {
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
            super::answers::list_offsets(&l, |p| {
                if p.timestamp_ms == EARLIEST_TIMESTAMP {
                    0
                } else {
                    s.logs[p.partition as usize].len() as i64
                }
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
