//! Consumer groups through failures, against real brokers: a member
//! SIGKILLed (`rill consume --group`, a process of its own) has its
//! partitions moved to the others once its session times out, from its
//! commits on, every record is processed at least once and the group's
//! committed offsets never go backwards; a group whose coordinator's
//! broker is SIGKILLed carries on at the new coordinator, commits
//! succeed again, and none that was acknowledged is lost.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::TestCluster;
use common::groups::{CommitSampler, Writer, committed, coordinator, partitions_of};
use common::{rill_cli, runtime};
use rill_client::admin::GroupDescription;
use rill_client::partitioner::partition_for_key;
use rill_client::{Admin, Cluster, Consumer, ConsumerConfig, GroupConfig, OffsetReset};
use tokio::time::Instant;

const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;
const GROUP: &str = "workers";
/// The client id of the members run by the test (`rill consume` has its
/// own).
const CLIENT_ID: &str = "groups-failures-test";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
const OFFSETS_PARTITIONS: u32 = 16;
/// Rounds the background writer writes, at most.
const ROUNDS_MAX: u64 = 2_000;
/// How often the group's commits are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A record as a member processed it.
#[derive(Debug, Clone)]
struct Processed {
    partition: u32,
    offset: u64,
    value: String,
}

/// A member run by the test, without auto-commit: it commits
/// (`commit_sync`) after every poll, and keeps what it processed and what
/// its acknowledged commits covered.
struct Member {
    name: &'static str,
    consumer: Consumer,
    processed: Vec<Processed>,
    /// Per partition, the highest offset an acknowledged commit set: the
    /// offset after the last record of the poll before it.
    acknowledged: BTreeMap<u32, u64>,
    /// When the last acknowledged commit of a member holding partitions
    /// was asked for.
    last_ok_asked: Option<Instant>,
    commit_errors: usize,
}

impl Member {
    fn join(bootstrap: &str, name: &'static str) -> Member {
        let cluster = Cluster::new(bootstrap, CLIENT_ID).unwrap();
        let mut consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                max_wait_ms: 100,
                ..ConsumerConfig::default()
            },
        );
        consumer
            .subscribe(
                GroupConfig {
                    auto_commit: false,
                    auto_offset_reset: OffsetReset::Earliest,
                    close_timeout_ms: 10_000,
                    ..GroupConfig::new(GROUP)
                },
                vec![TOPIC.into()],
            )
            .unwrap();
        Member {
            name,
            consumer,
            processed: Vec::new(),
            acknowledged: BTreeMap::new(),
            last_ok_asked: None,
            commit_errors: 0,
        }
    }

    /// The partitions it reads.
    fn partitions(&self) -> BTreeSet<u32> {
        self.consumer.positions().keys().map(|(_, p)| *p).collect()
    }

    /// Polls once (at most 100 ms), processes what came, and commits it.
    async fn step(&mut self) {
        let records = self
            .consumer
            .poll(Duration::from_millis(100))
            .await
            .unwrap_or_else(|e| panic!("{} could not poll: {e}", self.name));
        let mut last = BTreeMap::new();
        for r in records {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            last.insert(r.partition, r.offset + 1);
            self.processed.push(Processed {
                partition: r.partition,
                offset: r.offset,
                value,
            });
        }
        let holds = !self.partitions().is_empty();
        let asked = Instant::now();
        match self.consumer.commit_sync().await {
            Ok(()) => {
                for (p, next) in last {
                    let a = self.acknowledged.entry(p).or_default();
                    *a = (*a).max(next);
                }
                if holds {
                    self.last_ok_asked = Some(asked);
                }
            }
            Err(e) => {
                eprintln!(
                    "{}: a commit failed after {:?}: {e}",
                    self.name,
                    asked.elapsed()
                );
                self.commit_errors += 1;
            }
        }
    }

    /// Whether its last acknowledged commit was asked for after `at`.
    fn committed_since(&self, at: Instant) -> bool {
        self.last_ok_asked.is_some_and(|t| t > at)
    }
}

/// Steps each member in turn until `done` holds, for at most `timeout`.
async fn step_until(
    members: &mut [&mut Member],
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[&mut Member]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(members) {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        for m in members.iter_mut() {
            m.step().await;
        }
    }
}

/// The values of every record processed by `members` and `also`.
fn values_processed(members: &[&mut Member], also: &[Processed]) -> BTreeSet<String> {
    members
        .iter()
        .flat_map(|m| m.processed.iter())
        .chain(also)
        .map(|r| r.value.clone())
        .collect()
}

/// A [`Writer`] writing rounds in the background, with a short pause
/// between them, until stopped (or [`ROUNDS_MAX`]).
struct Writing {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Writer>,
}

impl Writing {
    fn start(mut writer: Writer) -> Writing {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::Relaxed) && writer.round < ROUNDS_MAX {
                writer.round().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            writer
        });
        Writing { stop, task }
    }

    /// Stops writing; every value acknowledged.
    async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer").written
    }
}

/// `rill consume TOPIC --group GROUP --format json`: a member in a
/// process of its own, whose stdout is what it processed.
struct CliMember {
    child: Child,
    printed: Arc<Mutex<Vec<Processed>>>,
    /// Lines of stdout that were not a whole record.
    garbled: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl CliMember {
    fn start(bootstrap: &str) -> CliMember {
        let mut child = Command::new(rill_cli())
            .args(["consume", TOPIC, "--group", GROUP, "--format", "json"])
            .env("RILL_BOOTSTRAP", bootstrap)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let garbled = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let (p, g) = (Arc::clone(&printed), Arc::clone(&garbled));
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match parse_printed(&line) {
                    Some(r) => p.lock().unwrap().push(r),
                    None => g.lock().unwrap().push(line),
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        CliMember {
            child,
            printed,
            garbled,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// What it printed so far.
    fn printed(&self) -> Vec<Processed> {
        self.printed.lock().unwrap().clone()
    }

    /// SIGKILLs it, waits for it to be gone and its output read to the
    /// end, and returns what it printed.
    fn sigkill(mut self) -> Vec<Processed> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        if !stderr.is_empty() {
            eprintln!("rill consume's stderr:\n{stderr}");
        }
        // A SIGKILL may cut the last line short, never an earlier one.
        let garbled = self.garbled.lock().unwrap().clone();
        assert!(garbled.len() <= 1, "rill consume printed {garbled:?}");
        self.printed()
    }
}

impl Drop for CliMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of `rill consume --format json`, if whole.
fn parse_printed(line: &str) -> Option<Processed> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Processed {
        partition: u32::try_from(v["partition"].as_u64()?).ok()?,
        offset: v["offset"].as_u64()?,
        value: v["value"].as_str()?.to_string(),
    })
}

/// Each member of `d`: its client id and the partitions of [`TOPIC`] it
/// is assigned.
fn assignments(d: &GroupDescription) -> Vec<(String, BTreeSet<u32>)> {
    d.members
        .iter()
        .map(|m| {
            (
                m.client_id.clone(),
                partitions_of(&m.assigned, TOPIC).into_iter().collect(),
            )
        })
        .collect()
}

/// The group's committed offset of each partition of [`TOPIC`], as `d`
/// shows them.
fn committed_offsets(d: &GroupDescription) -> BTreeMap<u32, u64> {
    d.partitions
        .iter()
        .filter(|p| p.topic == TOPIC)
        .map(|p| (p.partition, p.committed_offset))
        .collect()
}

#[test]
fn a_sigkilled_member_s_partitions_move_to_the_others_and_every_record_is_processed_at_least_once()
{
    let session = Duration::from_millis(3_000);
    let session_ms = session.as_millis().to_string();
    let cluster = TestCluster::start_with(
        3,
        &[
            "--group-session-timeout-ms",
            &session_ms,
            "--group-heartbeat-interval-ms",
            "500",
        ],
    );
    cluster.create_topic(TOPIC, PARTITIONS);
    cluster.wait_for("the topic to settle", 60, |c| c.settled(TOPIC, PARTITIONS));
    let bootstrap = cluster.bootstrap();
    let addrs: Vec<_> = (1..=cluster.size()).map(|b| cluster.addr(b)).collect();
    let sampler = CommitSampler::start(&addrs, GROUP, SAMPLE_EVERY);
    runtime().block_on(async {
        let admin = Admin::new(Cluster::new(&bootstrap, "groups-failures-admin").unwrap());
        let mut writer = Writer::new(&bootstrap, TOPIC, PARTITIONS);
        for _ in 0..5 {
            writer.round().await;
        }
        let writing = Writing::start(writer);
        let mut a = Member::join(&bootstrap, "a");
        let mut b = Member::join(&bootstrap, "b");
        step_until(
            &mut [&mut a, &mut b],
            "a and b to split the topic",
            Duration::from_secs(60),
            |m| m.iter().all(|m| m.partitions().len() == 3),
        )
        .await;

        // The CLI joins and takes its share; it reads and commits (its
        // automatic commits cover what it printed) past where it started,
        // and is killed with records printed since its last commit.
        let cli = CliMember::start(&bootstrap);
        let deadline = Instant::now() + Duration::from_secs(60);
        let cli_partitions = loop {
            assert!(
                Instant::now() < deadline,
                "three members with partitions, rill consume printing past its commits"
            );
            a.step().await;
            b.step().await;
            let Ok(d) = admin.describe_group(GROUP).await else {
                continue;
            };
            let members = assignments(&d);
            if members.len() != 3 || members.iter().any(|(_, ps)| ps.is_empty()) {
                continue;
            }
            let Some((_, cli_partitions)) = members.iter().find(|(id, _)| id != CLIENT_ID) else {
                continue;
            };
            let mut printed: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for r in cli.printed() {
                printed
                    .entry(r.partition)
                    .and_modify(|(_, last)| *last = r.offset)
                    .or_insert((r.offset, r.offset));
            }
            let committed = committed_offsets(&d);
            if cli_partitions.iter().all(|p| {
                printed.get(p).is_some_and(|(first, last)| {
                    committed
                        .get(p)
                        .is_some_and(|c| first < c && last >= c)
                })
            }) {
                break cli_partitions.clone();
            }
        };

        let killed_at = Instant::now();
        let cli_printed = cli.sigkill();
        let read_before_kill = [a.processed.len(), b.processed.len()];
        // The group's commits once it is gone (one it sent may still land:
        // they only rise).
        let at_kill = loop {
            assert!(killed_at.elapsed() < Duration::from_secs(30));
            if let Ok(d) = admin.describe_group(GROUP).await {
                break committed_offsets(&d);
            }
        };

        // Its partitions move to a and b once its session times out.
        let deadline = killed_at + Duration::from_secs(60);
        let moved_after = loop {
            a.step().await;
            b.step().await;
            let read: BTreeSet<u32> = a.partitions().union(&b.partitions()).copied().collect();
            if let Ok(d) = admin.describe_group(GROUP).await {
                let members = assignments(&d);
                let assigned: BTreeSet<u32> =
                    members.iter().flat_map(|(_, ps)| ps.iter().copied()).collect();
                if members.len() == 2
                    && members.iter().all(|(id, _)| id == CLIENT_ID)
                    && assigned.len() == PARTITIONS as usize
                    && cli_partitions.is_subset(&read)
                {
                    break killed_at.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "rill consume's partitions {cli_partitions:?} never moved to a and b"
            );
        };
        eprintln!("rill consume's partitions {cli_partitions:?} moved {moved_after:?} after its SIGKILL");
        let bound = session + Duration::from_secs(10);
        assert!(
            moved_after <= bound,
            "its partitions moved {moved_after:?} after the SIGKILL, more than the session timeout and 10 s"
        );

        // Every record written, before, during and after, was processed by
        // someone at least once.
        let written = writing.finish().await;
        step_until(
            &mut [&mut a, &mut b],
            "every record to be processed",
            Duration::from_secs(60),
            |m| written.is_subset(&values_processed(m, &cli_printed)),
        )
        .await;
        assert!(!cli_printed.is_empty());
        // a and b took the moved partitions on from its commits: none of
        // what it committed was processed again.
        for (m, before) in [&a, &b].into_iter().zip(read_before_kill) {
            for r in &m.processed[before..] {
                if cli_partitions.contains(&r.partition) {
                    assert!(
                        r.offset >= at_kill[&r.partition],
                        "{} read {r:?}, below the commit {} of the killed member",
                        m.name,
                        at_kill[&r.partition]
                    );
                }
            }
        }
        a.consumer.close().await.unwrap();
        b.consumer.close().await.unwrap();
    });
    let sampled = sampler.stop();
    assert!(sampled.answered >= 10, "{sampled:?}");
    assert_eq!(sampled.history.len(), PARTITIONS as usize, "{sampled:?}");
    sampled.assert_never_backwards();
}

#[test]
fn a_group_carries_on_through_its_coordinator_s_sigkill_and_no_acknowledged_commit_is_lost() {
    let mut cluster = TestCluster::start(3);
    cluster.create_topic(TOPIC, PARTITIONS);
    let addrs: Vec<_> = (1..=cluster.size()).map(|b| cluster.addr(b)).collect();
    // Asking for the coordinator creates the offsets topic.
    drop(coordinator(&addrs, GROUP));
    cluster.wait_for("the topic and the offsets topic to settle", 60, |c| {
        c.settled(TOPIC, PARTITIONS) && c.settled(OFFSETS_TOPIC, OFFSETS_PARTITIONS)
    });
    let bootstrap = cluster.bootstrap();
    let sampler = CommitSampler::start(&addrs, GROUP, SAMPLE_EVERY);
    let offsets_partition = partition_for_key(GROUP.as_bytes(), OFFSETS_PARTITIONS);
    let mut killed = None;
    let acknowledged = runtime().block_on(async {
        let writing = Writing::start(Writer::new(&bootstrap, TOPIC, PARTITIONS));
        let mut a = Member::join(&bootstrap, "a");
        let mut b = Member::join(&bootstrap, "b");
        let since = Instant::now();
        step_until(
            &mut [&mut a, &mut b],
            "a and b to split the topic and commit",
            Duration::from_secs(60),
            |m| {
                m.iter().all(|m| {
                    let partitions = m.partitions();
                    partitions.len() == 3
                        && partitions.iter().all(|p| m.acknowledged.contains_key(p))
                        && m.committed_since(since)
                })
            },
        )
        .await;

        let mut leader = 0;
        cluster.wait_for("a leader of the group's offsets partition", 30, |c| {
            leader = c.leader_of(OFFSETS_TOPIC, offsets_partition).unwrap_or(0);
            leader > 0
        });
        cluster.kill(leader);
        killed = Some(leader);
        let killed_at = Instant::now();

        // Both find the new coordinator, and their commits are taken again.
        step_until(
            &mut [&mut a, &mut b],
            "commits asked for after the SIGKILL to be acknowledged",
            Duration::from_secs(90),
            |m| m.iter().all(|m| m.committed_since(killed_at)),
        )
        .await;
        let resumed_after = killed_at.elapsed();
        eprintln!("commits acknowledged again {resumed_after:?} after broker {leader}'s SIGKILL");
        assert!(
            resumed_after <= Duration::from_secs(30),
            "commits were acknowledged again only {resumed_after:?} after the SIGKILL"
        );

        // And both read on: records written from now on, committed.
        let resumed_at = Instant::now();
        let read = [a.processed.len(), b.processed.len()];
        let mut members = [&mut a, &mut b];
        step_until(
            &mut members,
            "both to read and commit on",
            Duration::from_secs(60),
            |m| {
                m.iter()
                    .zip(read)
                    .all(|(m, read)| m.processed.len() > read && m.committed_since(resumed_at))
            },
        )
        .await;
        let written = writing.finish().await;
        step_until(
            &mut members,
            "every record to be processed",
            Duration::from_secs(60),
            |m| written.is_subset(&values_processed(m, &[])),
        )
        .await;
        // The last records processed are committed too.
        let done = Instant::now();
        step_until(
            &mut members,
            "a last commit each",
            Duration::from_secs(60),
            |m| m.iter().all(|m| m.committed_since(done)),
        )
        .await;
        assert_eq!(
            a.partitions().len() + b.partitions().len(),
            PARTITIONS as usize
        );
        eprintln!(
            "commit errors: a {}, b {}",
            a.commit_errors, b.commit_errors
        );
        let mut acknowledged = a.acknowledged.clone();
        for (p, next) in &b.acknowledged {
            let at = acknowledged.entry(*p).or_default();
            *at = (*at).max(*next);
        }
        a.consumer.close().await.unwrap();
        b.consumer.close().await.unwrap();
        acknowledged
    });
    let killed = killed.unwrap();
    assert_eq!(acknowledged.len(), PARTITIONS as usize, "{acknowledged:?}");

    let sampled = sampler.stop();
    sampled.assert_never_backwards();

    // The new coordinator holds, for every partition, at least the last
    // acknowledged commit.
    let up: Vec<_> = (1..=cluster.size())
        .filter(|b| cluster.is_up(*b))
        .map(|b| cluster.addr(b))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (at, commits) = loop {
        let mut c = coordinator(&up, GROUP);
        let at = c.stream.peer_addr().unwrap();
        if let Some(commits) = committed(&mut c, GROUP) {
            break (at, commits);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new coordinator never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(at, cluster.addr(killed), "the coordinator moved");
    for (p, next) in &acknowledged {
        let (offset, _) = commits[&(TOPIC.to_string(), *p)];
        assert!(
            offset >= *next as i64,
            "partition {p}: committed {offset}, below the acknowledged {next}"
        );
    }
}
