//! The membership task against a scripted coordinator, on tokio's paused
//! clock: heartbeats on time with nobody polling, at once after a release,
//! commits built from the membership of the moment, leaving, and ending
//! with the consumer.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use super::*;
use crate::consumer::membership::Changes;
use crate::protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, OffsetCommitPartitionResponse,
    OffsetCommitResponse, OffsetCommitTopicResponse, TopicPartitions,
};

const INTERVAL_MS: u32 = 1_000;

type Script = Box<dyn FnMut(&Request) -> (u64, Result<Response, ClientError>) + Send>;

/// A coordinator answering with a script: each answer comes after the
/// delay the script gives, ms; every request is logged with the time it
/// was sent (ms since the test began).
struct Scripted {
    began: Instant,
    log: Mutex<Vec<(u64, Request)>>,
    script: Mutex<Script>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Coordinator for Scripted {
    fn request(
        &self,
        request: Request,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, ClientError>> {
        let at = self.began.elapsed().as_millis() as u64;
        self.log.lock().unwrap().push((at, request.clone()));
        let (delay_ms, answer) = (self.script.lock().unwrap())(&request);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            answer
        })
    }
}

impl Scripted {
    fn heartbeats(&self) -> Vec<(u64, ConsumerGroupHeartbeatRequest)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, r)| match r {
                Request::ConsumerGroupHeartbeat(h) => Some((*at, h.clone())),
                _ => None,
            })
            .collect()
    }

    fn commits(&self) -> Vec<(u64, OffsetCommitRequest)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, r)| match r {
                Request::OffsetCommit(c) => Some((*at, c.clone())),
                _ => None,
            })
            .collect()
    }
}

fn partitions(list: &[u32]) -> Vec<TopicPartitions> {
    vec![TopicPartitions {
        topic: "t".into(),
        partitions: list.to_vec(),
    }]
}

fn beat(epoch: i32, assignment: &[u32]) -> Result<Response, ClientError> {
    Ok(Response::ConsumerGroupHeartbeat(
        ConsumerGroupHeartbeatResponse {
            error: ErrorCode::None,
            member_id: Some("m-1".into()),
            member_epoch: epoch,
            heartbeat_interval_ms: INTERVAL_MS,
            assignment: Some(partitions(assignment)),
        },
    ))
}

fn committed(error: ErrorCode, request: &OffsetCommitRequest) -> Result<Response, ClientError> {
    Ok(Response::OffsetCommit(OffsetCommitResponse {
        topics: request
            .topics
            .iter()
            .map(|t| OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitPartitionResponse {
                        partition: p.partition,
                        error,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// A running task and the consumer's ends of it.
struct Running {
    coordinator: Arc<Scripted>,
    commands: mpsc::Sender<Command>,
    news: watch::Receiver<u64>,
    changes: tokio::sync::Mutex<mpsc::Receiver<Taken>>,
    task: tokio::task::JoinHandle<()>,
}

fn start(script: Script) -> Running {
    let coordinator = Arc::new(Scripted {
        began: Instant::now(),
        log: Mutex::default(),
        script: Mutex::new(script),
    });
    let (commands, queue) = mpsc::channel(COMMANDS_MAX);
    let (notify, news) = watch::channel(0);
    let (changes_to, changes) = mpsc::channel(1);
    let task = tokio::spawn(run(
        Arc::clone(&coordinator) as Arc<dyn Coordinator>,
        Membership::new("g".into(), vec!["t".into()], 0),
        queue,
        notify,
        changes_to,
        Duration::from_secs(30),
    ));
    Running {
        coordinator,
        commands,
        news,
        changes: tokio::sync::Mutex::new(changes),
        task,
    }
}

impl Running {
    async fn take(&self) -> Result<Changes, ClientError> {
        self.commands.send(Command::Take).await.unwrap();
        self.changes.lock().await.recv().await.unwrap()
    }

    async fn commit(&self, partition: u32, offset: u64) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let offsets = [(
            ("t".to_string(), partition),
            CommitOffset {
                offset,
                leader_epoch: 1,
            },
        )]
        .into_iter()
        .collect();
        self.commands
            .send(Command::Commit { offsets, reply })
            .await
            .unwrap();
        answer.await.unwrap()
    }
}

fn keys(list: &[u32]) -> BTreeSet<Key> {
    list.iter().map(|p| ("t".to_string(), *p)).collect()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_go_on_time_while_nobody_polls_and_the_news_waits_in_one_slot() {
    let mut r = start(Box::new(|_| (5, beat(1, &[0, 1]))));
    sleep_ms(10_500).await;
    let times: Vec<u64> = r
        .coordinator
        .heartbeats()
        .iter()
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(times.len(), 11, "{times:?}");
    assert_eq!(times[0], 0, "the join goes at once");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], u64::from(INTERVAL_MS) + 5, "{times:?}");
    }
    assert!(r.news.has_changed().unwrap());
    r.news.borrow_and_update();
    assert_eq!(r.take().await.unwrap().assigned, keys(&[0, 1]));
    sleep_ms(3_000).await;
    assert!(!r.news.has_changed().unwrap(), "nothing new since");
    // What the consumer took is what heartbeats report owned from then on.
    let (_, last) = r.coordinator.heartbeats().pop().unwrap();
    assert_eq!(last.owned, Some(partitions(&[0, 1])));
}

#[tokio::test(start_paused = true)]
async fn a_release_sends_the_next_heartbeat_at_once() {
    let beats = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&beats);
    let r = start(Box::new(move |_| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        // The second heartbeat revokes partition 1.
        (0, beat(*n, if *n == 1 { &[0, 1] } else { &[0] }))
    }));
    sleep_ms(10).await;
    assert_eq!(r.take().await.unwrap().assigned, keys(&[0, 1]));
    sleep_ms(1_000).await;
    assert_eq!(r.take().await.unwrap().revoked, keys(&[1]));
    sleep_ms(490).await;
    r.commands
        .send(Command::Released(keys(&[1])))
        .await
        .unwrap();
    sleep_ms(1).await;
    let beats = r.coordinator.heartbeats();
    let (at, last) = beats.last().unwrap();
    assert_eq!(*at, 1_500, "at once, not at 2,000");
    assert_eq!(last.owned, Some(partitions(&[0])));
    assert_eq!(last.member_epoch, 2);
}

#[tokio::test(start_paused = true)]
async fn a_commit_carries_the_latest_epoch_and_is_sent_again_when_an_answer_moved_it_in_flight() {
    let epoch = Arc::new(Mutex::new(1));
    let e = Arc::clone(&epoch);
    let r = start(Box::new(move |req| match req {
        Request::ConsumerGroupHeartbeat(_) => (0, beat(*e.lock().unwrap(), &[0])),
        // A slow coordinator: the commit is answered after the member's
        // epoch moved, and refused as stale.
        Request::OffsetCommit(c) if c.member_epoch != *e.lock().unwrap() => {
            (1_500, committed(ErrorCode::FencedMemberEpoch, c))
        }
        Request::OffsetCommit(c) => (0, committed(ErrorCode::None, c)),
        _ => (0, Err(ClientError::Timeout { ms: 0 })),
    }));
    sleep_ms(10).await;
    r.take().await.unwrap();
    sleep_ms(500).await;
    // Sent at epoch 1; the heartbeat at 1,000 brings epoch 2.
    *epoch.lock().unwrap() = 2;
    r.commit(0, 42).await.unwrap();
    let commits = r.coordinator.commits();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0].1.member_epoch, 1);
    assert_eq!(commits[1].1.member_epoch, 2);
    assert_eq!(commits[1].1.member_id, "m-1");
    assert_eq!(commits[1].1.topics[0].partitions[0].offset, 42);
}

#[tokio::test(start_paused = true)]
async fn a_commit_of_a_partition_not_owned_or_after_the_member_was_removed_is_refused_unsent() {
    let fenced = Arc::new(Mutex::new(false));
    let f = Arc::clone(&fenced);
    let r = start(Box::new(move |req| match req {
        Request::ConsumerGroupHeartbeat(h) if *f.lock().unwrap() && !h.member_id.is_empty() => (
            0,
            Ok(Response::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatResponse {
                    error: ErrorCode::FencedMemberEpoch,
                    member_id: None,
                    member_epoch: 0,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                },
            )),
        ),
        // Rejoining takes a while.
        Request::ConsumerGroupHeartbeat(h) if h.member_id.is_empty() && *f.lock().unwrap() => {
            (10_000, beat(5, &[0]))
        }
        Request::ConsumerGroupHeartbeat(_) => (0, beat(1, &[0])),
        Request::OffsetCommit(c) => (0, committed(ErrorCode::None, c)),
        _ => (0, Err(ClientError::Timeout { ms: 0 })),
    }));
    sleep_ms(10).await;
    r.take().await.unwrap();
    assert!(matches!(
        r.commit(3, 1).await,
        Err(ClientError::Fenced {
            code: ErrorCode::FencedMemberEpoch,
            ..
        })
    ));
    r.commit(0, 1).await.unwrap();
    *fenced.lock().unwrap() = true;
    sleep_ms(1_000).await;
    // Removed; its partition is lost and may not be committed, even
    // though the consumer has not taken the loss yet.
    assert!(matches!(
        r.commit(0, 2).await,
        Err(ClientError::Fenced { .. })
    ));
    assert_eq!(r.coordinator.commits().len(), 1);
    assert_eq!(r.take().await.unwrap().lost, keys(&[0]));
}

#[tokio::test(start_paused = true)]
async fn leaving_sends_epoch_minus_1_and_ends_the_task() {
    let r = start(Box::new(|_| (0, beat(3, &[0]))));
    sleep_ms(10).await;
    let (reply, left) = oneshot::channel();
    r.commands.send(Command::Leave(reply)).await.unwrap();
    left.await.unwrap();
    r.task.await.unwrap();
    let (_, last) = r.coordinator.heartbeats().pop().unwrap();
    assert_eq!(last.member_epoch, -1);
    assert_eq!(last.member_id, "m-1");
}

#[tokio::test(start_paused = true)]
async fn the_task_ends_when_the_consumer_drops_its_end_even_with_a_heartbeat_in_flight() {
    let r = start(Box::new(|_| (60_000, beat(1, &[0]))));
    sleep_ms(10).await;
    drop(r.commands);
    tokio::time::timeout(Duration::from_millis(10), r.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fatal_refusal_is_news_and_every_take_returns_it() {
    let r = start(Box::new(|_| {
        (
            0,
            Ok(Response::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatResponse {
                    error: ErrorCode::GroupMaxSizeReached,
                    member_id: None,
                    member_epoch: 0,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                },
            )),
        )
    }));
    sleep_ms(10).await;
    assert!(r.news.has_changed().unwrap());
    for _ in 0..2 {
        assert!(matches!(
            r.take().await,
            Err(ClientError::Broker {
                code: ErrorCode::GroupMaxSizeReached,
                ..
            })
        ));
    }
    sleep_ms(10_000).await;
    assert_eq!(r.coordinator.heartbeats().len(), 1, "no heartbeat after");
}

#[tokio::test(start_paused = true)]
async fn commits_go_one_at_a_time_in_the_order_asked() {
    let r = start(Box::new(|req| match req {
        Request::ConsumerGroupHeartbeat(_) => (0, beat(1, &[0])),
        Request::OffsetCommit(c) => (1_000, committed(ErrorCode::None, c)),
        _ => (0, Err(ClientError::Timeout { ms: 0 })),
    }));
    sleep_ms(10).await;
    r.take().await.unwrap();
    let (first, second) = tokio::join!(r.commit(0, 1), async {
        // Asked just after the first.
        sleep_ms(1).await;
        r.commit(0, 2).await
    });
    first.unwrap();
    second.unwrap();
    let commits = r.coordinator.commits();
    let sent: Vec<(u64, u64)> = commits
        .iter()
        .map(|(at, c)| (*at, c.topics[0].partitions[0].offset))
        .collect();
    assert_eq!(
        sent,
        [(10, 1), (1_010, 2)],
        "the second once the first was answered"
    );
}
