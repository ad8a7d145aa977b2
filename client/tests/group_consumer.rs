//! The group consumer against a scripted broker playing a small
//! coordinator (`common/group_broker.rs`).
//!
//! What is checked: members split a topic with no partition read by two;
//! one that joins takes its share from the others' commits while the
//! partitions that do not move are read on; a member removed by the
//! coordinator loses its partitions uncommitted, rejoins, and reads on
//! from the group's commits; close commits and leaves; offsets reset
//! where the group has no commit; explicit commits; a dropped consumer's
//! heartbeats stop.

#[path = "common/answers.rs"]
mod answers;
#[path = "common/group_broker.rs"]
mod group_broker;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use group_broker::{LEADER_EPOCH, Scripted, TOPIC};
use rill_client::{
    ClientError, Cluster, CommitOffset, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig,
    OffsetReset, RebalanceListener,
};
use tokio::time::Instant;

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
        ..GroupConfig::new(group_broker::GROUP)
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
