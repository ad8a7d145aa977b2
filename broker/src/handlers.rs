//! Request handlers: one function per API, each turning a decoded request
//! into a response. Errors a client should see are typed codes inside the
//! response; nothing here closes a connection.

use std::sync::Arc;
use std::time::Duration;

use rill_client::protocol::messages::*;
use rill_client::protocol::{ApiKey, ErrorCode, Request, Response};
use rill_replication::{BrokerId, ReplicationError};

use crate::metadata::ClusterImage;
use crate::partition::LeaderHint;
use crate::state::{Broker, Lookup};

/// Longest a fetch may park, ms, whatever the client asks.
pub const FETCH_MAX_WAIT_MS_LIMIT: u32 = 30_000;
/// Longest a produce waits for durability, ms, whatever the client asks.
pub const PRODUCE_TIMEOUT_MS_LIMIT: u32 = 300_000;

/// The client id brokers use when they forward admin requests to the
/// controller; such a request is never forwarded again.
pub const FORWARDED_CLIENT_ID: &str = "rill-broker-forward";

/// Handles one request; `None` for a produce with `acks=0` (no response).
/// `forwarded`: it came from another broker on a client's behalf.
pub async fn handle(broker: &Arc<Broker>, request: Request, forwarded: bool) -> Option<Response> {
    Some(match request {
        Request::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
            apis: ApiKey::ALL
                .iter()
                .map(|&k| ApiVersionRange {
                    api_key: k as u16,
                    min_version: k.versions().0,
                    max_version: k.versions().1,
                })
                .collect(),
        }),
        Request::Metadata(m) => Response::Metadata(metadata(broker, m)),
        Request::CreateTopics(c) => {
            let mut results = Vec::new();
            for t in c.topics {
                let outcome = broker
                    .create_topic(
                        &t.name,
                        t.partitions,
                        t.replication_factor,
                        &t.configs,
                        forwarded,
                    )
                    .await;
                results.push(topic_result(t.name, outcome));
            }
            Response::CreateTopics(TopicResults { results })
        }
        Request::DeleteTopics(d) => {
            let mut results = Vec::new();
            for name in d.names {
                let outcome = broker.delete_topic(&name, forwarded).await;
                results.push(topic_result(name, outcome));
            }
            Response::DeleteTopics(TopicResults { results })
        }
        Request::Produce(p) => return finish_produce(stage_produce(broker, p).await).await,
        Request::Fetch(f) => Response::Fetch(fetch(broker, f).await),
        // Brokers register over their authenticated peer connections; on
        // a client port anyone could point clients at their own host.
        Request::RegisterBroker(b) => {
            tracing::warn!(
                broker = b.broker_id,
                "refused a RegisterBroker request on the client port"
            );
            Response::RegisterBroker(RegisterBrokerResponse {
                error: ErrorCode::InvalidRequest,
                controller_id: hint(broker.controller()),
            })
        }
        Request::ClusterStatus => Response::ClusterStatus(cluster_status(broker).await),
        Request::ListOffsets(l) => Response::ListOffsets(ListOffsetsResponse {
            topics: l
                .topics
                .into_iter()
                .map(|t| ListOffsetsTopicResponse {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let r = match broker.lookup(&t.name, p.partition) {
                                Lookup::Here(part) => match part.not_leader() {
                                    Some((error, leader)) => Err((error, leader)),
                                    None => part
                                        .offset_for(p.timestamp_ms)
                                        .map_err(|e| (e, LeaderHint::default())),
                                },
                                Lookup::Elsewhere { leader } => {
                                    Err((ErrorCode::NotLeader, LeaderHint::guess(leader)))
                                }
                                Lookup::Unknown => {
                                    Err((ErrorCode::UnknownTopicOrPartition, LeaderHint::default()))
                                }
                                Lookup::Stopped => {
                                    Err((ErrorCode::StorageError, LeaderHint::default()))
                                }
                            };
                            let (error, leader) =
                                r.err().unwrap_or((ErrorCode::None, LeaderHint::default()));
                            ListOffsetsPartitionResponse {
                                partition: p.partition,
                                error,
                                leader_hint: hint(leader.leader),
                                leader_epoch: leader.epoch.get(),
                                offset: r.unwrap_or(-1),
                            }
                        })
                        .collect(),
                    name: t.name,
                })
                .collect(),
        }),
    })
}

fn topic_result(name: String, outcome: Result<(), (ErrorCode, String)>) -> TopicResult {
    match outcome {
        Ok(()) => TopicResult {
            name,
            error: ErrorCode::None,
            message: String::new(),
        },
        Err((error, message)) => TopicResult {
            name,
            error,
            message,
        },
    }
}

fn metadata(broker: &Arc<Broker>, m: MetadataRequest) -> MetadataResponse {
    let image = broker.image();
    let describe = |name: &str| match image.topics.get(name) {
        None => TopicMetadata {
            error: ErrorCode::UnknownTopicOrPartition,
            name: name.to_string(),
            topic_id: [0; 16],
            partitions: Vec::new(),
        },
        Some(t) => TopicMetadata {
            error: ErrorCode::None,
            name: t.name.clone(),
            topic_id: uuid::Uuid::parse_str(&t.id).map_or([0; 16], |u| *u.as_bytes()),
            partitions: (0..t.partitions())
                .map(|i| {
                    let replicas = &t.replicas[i as usize];
                    // A replica here knows its leader; otherwise the
                    // preferred leader is the best guess (it answers
                    // NotLeader with the real one if it is wrong).
                    let (leader, start, hw) = match broker.published.partition(t.group(i)) {
                        Some(p) => (
                            p.leadership().hint(),
                            p.log_start_offset(),
                            p.high_watermark(),
                        ),
                        None => (LeaderHint::guess(replicas.first().copied()), 0, 0),
                    };
                    PartitionMetadata {
                        partition: i,
                        error: ErrorCode::None,
                        leader: hint(leader.leader),
                        leader_epoch: leader.epoch.get(),
                        replicas: replicas.iter().map(|b| b.get() as u32).collect(),
                        log_start_offset: start,
                        high_watermark: hw,
                    }
                })
                .collect(),
        },
    };
    let topics = match m.topics {
        // Each topic described once however often it is named (one
        // request naming a large topic many times asked for terabytes),
        // and no more than `metadata_max_topics` of them.
        Some(names) => {
            let mut seen = std::collections::HashSet::new();
            let mut described = 0;
            names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .map(|name| {
                    described += 1;
                    if described > broker.limits.metadata_max_topics {
                        TopicMetadata {
                            error: ErrorCode::InvalidRequest,
                            name,
                            topic_id: [0; 16],
                            partitions: Vec::new(),
                        }
                    } else {
                        describe(&name)
                    }
                })
                .collect()
        }
        None => image.topics.keys().map(|n| describe(n)).collect(),
    };
    MetadataResponse {
        brokers: brokers(broker, &image),
        controller_id: hint(broker.controller()),
        topics,
    }
}

/// The registered brokers, with this one as it is now: its registration
/// may still carry the port of its previous run.
fn brokers(broker: &Broker, image: &ClusterImage) -> Vec<BrokerMetadata> {
    let mut all: Vec<BrokerMetadata> = image
        .brokers
        .iter()
        .filter(|(id, _)| **id != broker.id())
        .map(|(id, b)| BrokerMetadata {
            broker_id: id.get() as u32,
            host: b.host.clone(),
            port: b.port,
        })
        .collect();
    all.push(BrokerMetadata {
        broker_id: broker.node_id.get() as u32,
        host: broker.advertised_host.clone(),
        port: broker.advertised_port,
    });
    all.sort_by_key(|b| b.broker_id);
    all
}

async fn cluster_status(broker: &Arc<Broker>) -> ClusterStatusResponse {
    let report = broker.published.fresh_status().await;
    let image = broker.image();
    let replicas = report
        .groups
        .iter()
        .map(|g| {
            let (topic, partition, voters) = match image.partition_of(g.group) {
                Some((t, p)) => (t.name.clone(), p, t.replicas[p as usize].clone()),
                None => (String::new(), 0, image.voters.clone()),
            };
            ReplicaStatus {
                topic,
                partition,
                group: g.group.get(),
                leader: hint(g.leader),
                term: g.term.get(),
                commit: g.commit.get(),
                last_index: g.last_index.get(),
                high_watermark: g.high_watermark.get(),
                replicas: voters.iter().map(|b| b.get() as u32).collect(),
                matched: g
                    .matched
                    .iter()
                    .map(|(b, i)| (b.get() as u32, i.get()))
                    .collect(),
            }
        })
        .collect();
    ClusterStatusResponse {
        broker_id: broker.node_id.get() as u32,
        controller_id: hint(report.controller),
        brokers: brokers(broker, &image),
        replicas,
    }
}

fn produce_error(partition: u32, error: ErrorCode, leader: LeaderHint) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error,
        leader_hint: hint(leader.leader),
        leader_epoch: leader.epoch.get(),
        base_offset: 0,
        log_start_offset: 0,
    }
}

/// A leader hint for the wire.
fn hint(leader: Option<BrokerId>) -> i32 {
    leader.map_or(NO_BROKER, |b| b.get() as i32)
}

/// A produce request after its first stage: every partition checked and
/// its proposal queued for the Raft thread (or refused).
pub struct StagedProduce {
    acks: i8,
    deadline: tokio::time::Instant,
    topics: Vec<(String, Vec<Staged>)>,
}

/// The first stage of a produce: every partition is checked and its
/// proposal queued, in request order, before any is waited for (the
/// partitions replicate together instead of one commit round trip after
/// another). Produce requests staged one after another are proposed in
/// that order.
pub async fn stage_produce(broker: &Arc<Broker>, p: ProduceRequest) -> StagedProduce {
    let acks_valid = (-1..=1).contains(&p.acks);
    let timeout = Duration::from_millis(u64::from(p.timeout_ms.min(PRODUCE_TIMEOUT_MS_LIMIT)));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut staged = Vec::with_capacity(p.topics.len());
    for t in p.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for part in t.partitions {
            partitions.push(if acks_valid {
                propose_partition(broker, &t.name, part.partition, &part.records).await
            } else {
                Staged::Answered(produce_error(
                    part.partition,
                    ErrorCode::InvalidRequiredAcks,
                    LeaderHint::default(),
                ))
            });
        }
        staged.push((t.name, partitions));
    }
    StagedProduce {
        acks: p.acks,
        deadline,
        topics: staged,
    }
}

/// The second stage of a produce: each partition waited for at its `acks`
/// level, until one deadline for the whole request. No response for
/// `acks=0`.
pub async fn finish_produce(staged: StagedProduce) -> Option<Response> {
    let StagedProduce {
        acks,
        deadline,
        topics: staged,
    } = staged;
    let mut topics = Vec::with_capacity(staged.len());
    for (name, partitions) in staged {
        let mut answers = Vec::with_capacity(partitions.len());
        for s in partitions {
            answers.push(match s {
                Staged::Answered(r) => r,
                Staged::Proposed(q) => answer_partition(&name, q, acks, deadline).await,
            });
        }
        topics.push(ProduceTopicResponse {
            name,
            partitions: answers,
        });
    }
    (acks != 0).then_some(Response::Produce(ProduceResponse { topics }))
}

/// A partition of a produce after its first stage.
pub enum Staged {
    /// Refused before anything was proposed.
    Answered(ProducePartitionResponse),
    /// Proposed: the outcome is on its way from the Raft thread.
    Proposed(Queued),
}

/// A proposal queued for the Raft thread.
pub struct Queued {
    partition: Arc<crate::partition::Partition>,
    index: u32,
    outcome: crate::raft::ProposalOutcome,
}

/// The first stage of one partition of a produce: looked up, checked in
/// full, and queued for its Raft group (waiting only for room in the
/// queue).
async fn propose_partition(
    broker: &Arc<Broker>,
    topic: &str,
    index: u32,
    records: &[bytes::Bytes],
) -> Staged {
    let partition = match broker.lookup(topic, index) {
        Lookup::Here(p) => p,
        Lookup::Elsewhere { leader } => {
            return Staged::Answered(produce_error(
                index,
                ErrorCode::NotLeader,
                LeaderHint::guess(leader),
            ));
        }
        Lookup::Unknown => {
            return Staged::Answered(produce_error(
                index,
                ErrorCode::UnknownTopicOrPartition,
                LeaderHint::default(),
            ));
        }
        Lookup::Stopped => {
            return Staged::Answered(produce_error(
                index,
                ErrorCode::StorageError,
                LeaderHint::default(),
            ));
        }
    };
    if let Some((error, leader)) = partition.not_leader() {
        return Staged::Answered(produce_error(index, error, leader));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batches = match partition.check(records, now_ms) {
        Ok(b) => b,
        Err(e) => return Staged::Answered(produce_error(index, e, LeaderHint::default())),
    };
    match broker.raft.propose_queued(partition.group, batches).await {
        Ok(outcome) => Staged::Proposed(Queued {
            partition,
            index,
            outcome,
        }),
        Err(_stopped) => Staged::Answered(produce_error(
            index,
            ErrorCode::NotLeader,
            partition.retry_hint(),
        )),
    }
}

/// The second stage: the proposal's outcome, then the wait for the `acks`
/// level, until `deadline`.
async fn answer_partition(
    topic: &str,
    q: Queued,
    acks: i8,
    deadline: tokio::time::Instant,
) -> ProducePartitionResponse {
    let Queued {
        partition,
        index,
        outcome,
    } = q;
    let proposed = match outcome.await {
        Ok(Ok(p)) => p,
        Ok(Err(ReplicationError::NotLeader { leader, .. })) => {
            return produce_error(index, ErrorCode::NotLeader, partition.hint_for(leader));
        }
        Ok(Err(e)) if e.is_retriable() => {
            return produce_error(index, ErrorCode::NotLeader, partition.retry_hint());
        }
        Ok(Err(e)) => {
            tracing::warn!(topic, partition = index, error = %e, "proposal failed");
            return produce_error(index, ErrorCode::StorageError, LeaderHint::default());
        }
        Err(_stopped) => {
            return produce_error(index, ErrorCode::NotLeader, partition.retry_hint());
        }
    };
    let (Some(first), Some(last)) = (proposed.first(), proposed.last()) else {
        return produce_error(index, ErrorCode::InvalidRequest, LeaderHint::default());
    };
    let mut error = ErrorCode::None;
    if acks != 0 {
        let committed = acks == -1;
        match tokio::time::timeout_at(
            deadline,
            partition.wait_for(last.index, last.term, committed),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = e,
            Err(_) => error = ErrorCode::RequestTimedOut,
        }
    }
    let leader = if error == ErrorCode::NotLeader {
        partition.leadership().hint()
    } else {
        LeaderHint::default()
    };
    ProducePartitionResponse {
        partition: index,
        error,
        leader_hint: hint(leader.leader),
        leader_epoch: leader.epoch.get(),
        base_offset: first.base_offset.get(),
        log_start_offset: partition.log_start_offset(),
    }
}

/// A fetch request made safe to answer: each topic named once with each
/// of its partitions once (the first mention wins), and its response
/// budget clamped to `fetch_max_bytes`. `None` when it names more than
/// `fetch_max_partitions` partitions, with the answer to give instead.
fn bound_fetch(broker: &Broker, mut f: FetchRequest) -> Result<FetchRequest, FetchResponse> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut seen: std::collections::HashSet<(String, u32)> = std::collections::HashSet::new();
    for t in f.topics {
        let partitions: Vec<FetchPartition> = t
            .partitions
            .into_iter()
            .filter(|p| seen.insert((t.name.clone(), p.partition)))
            .collect();
        match topics.iter_mut().find(|k| k.name == t.name) {
            Some(known) => known.partitions.extend(partitions),
            None => topics.push(FetchTopic {
                name: t.name,
                partitions,
            }),
        }
    }
    f.max_bytes = f.max_bytes.min(broker.limits.fetch_max_bytes);
    if seen.len() > broker.limits.fetch_max_partitions {
        // Each refusal is smaller than the request's own mention of it.
        return Err(FetchResponse {
            topics: topics
                .into_iter()
                .map(|t| FetchTopicResponse {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| FetchPartitionResponse {
                            partition: p.partition,
                            error: ErrorCode::InvalidRequest,
                            leader_hint: NO_BROKER,
                            leader_epoch: 0,
                            high_watermark: 0,
                            log_start_offset: 0,
                            records: Vec::new(),
                        })
                        .collect(),
                })
                .collect(),
        });
    }
    f.topics = topics;
    Ok(f)
}

async fn fetch(broker: &Arc<Broker>, f: FetchRequest) -> FetchResponse {
    let f = match bound_fetch(broker, f) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::from(f.max_wait_ms.min(FETCH_MAX_WAIT_MS_LIMIT)));
    loop {
        // Register for wake-ups before reading, so data that lands between
        // the read and the wait is not missed.
        let arrived = broker.data_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let (response, bytes) = fetch_once(broker, &f);
        let any_error = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| !p.error.is_ok());
        if bytes >= u64::from(f.min_bytes.max(1))
            || any_error
            || tokio::time::Instant::now() >= deadline
        {
            return response;
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return fetch_once(broker, &f).0;
        }
    }
}

fn fetch_once(broker: &Arc<Broker>, f: &FetchRequest) -> (FetchResponse, u64) {
    let mut budget = u64::from(f.max_bytes);
    let mut total = 0u64;
    let topics = f
        .topics
        .iter()
        .map(|t| FetchTopicResponse {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let refused = |error, leader: LeaderHint| FetchPartitionResponse {
                        partition: p.partition,
                        error,
                        leader_hint: hint(leader.leader),
                        leader_epoch: leader.epoch.get(),
                        high_watermark: 0,
                        log_start_offset: 0,
                        records: Vec::new(),
                    };
                    let partition = match broker.lookup(&t.name, p.partition) {
                        Lookup::Here(p) => p,
                        Lookup::Elsewhere { leader } => {
                            return refused(ErrorCode::NotLeader, LeaderHint::guess(leader));
                        }
                        Lookup::Unknown => {
                            return refused(
                                ErrorCode::UnknownTopicOrPartition,
                                LeaderHint::default(),
                            );
                        }
                        Lookup::Stopped => {
                            return refused(ErrorCode::StorageError, LeaderHint::default());
                        }
                    };
                    if let Some((error, leader)) = partition.not_leader() {
                        return refused(error, leader);
                    }
                    // What the response budget still allows; the first
                    // partition with data gets at least one whole batch
                    // whatever the budget (the read always returns one).
                    let max = u64::from(p.partition_max_bytes).min(budget);
                    match partition.read(p.fetch_offset, max.max(1)) {
                        Ok((records, high_watermark, log_start_offset)) => {
                            let n: u64 = records.iter().map(|b| b.len() as u64).sum();
                            let records = if total > 0 && n > budget {
                                Vec::new()
                            } else {
                                records
                            };
                            let n: u64 = records.iter().map(|b| b.len() as u64).sum();
                            total += n;
                            budget = budget.saturating_sub(n);
                            FetchPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                leader_hint: NO_BROKER,
                                leader_epoch: 0,
                                high_watermark,
                                log_start_offset,
                                records,
                            }
                        }
                        Err(error) => FetchPartitionResponse {
                            partition: p.partition,
                            error,
                            leader_hint: NO_BROKER,
                            leader_epoch: 0,
                            high_watermark: partition.high_watermark(),
                            log_start_offset: partition.log_start_offset(),
                            records: Vec::new(),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    (FetchResponse { topics }, total)
}
