//! `group-join`: how long a consumer group takes to settle when a member
//! joins while records flow. Producers write at `--rate` for
//! `--duration-s`; `--consumers` members of `--group` read; once the
//! coordinator calls the group stable, one more member joins, and the
//! time until the coordinator calls it stable again (every partition
//! owned, the newcomer with its share) is the measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rill_client::{Admin, ClientError, Cluster, Consumer, ConsumerConfig, GroupConfig};

use crate::report::Summary;
use crate::workload::{Options, Progress, ensure_topic, run_producers};

/// Longest the group may take to settle, before or after the join, ms.
const SETTLE_MS_MAX: u64 = 60_000;
/// How long the group stays settled before the join, ms: longer than the
/// default heartbeat interval (5 s), so every member is on its steady
/// interval, as in a group that has been stable a while, and the join is
/// not helped by the quicker heartbeats of the first settling.
const STEADY_MS: u64 = 6_000;
/// How often the group's state is asked for while it settles, ms.
const DESCRIBE_EVERY_MS: u64 = 20;

/// One member reading until `stop`: counts records into `read`, then
/// commits and leaves.
async fn member(
    o: Options,
    group: String,
    name: String,
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
) -> Result<(), ClientError> {
    let cluster = Cluster::new(&o.bootstrap, &name)?;
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer.subscribe(GroupConfig::new(group), vec![o.topic.clone()])?;
    while !stop.load(Ordering::Relaxed) {
        let records = consumer.poll(Duration::from_millis(100)).await?;
        read.fetch_add(records.len() as u64, Ordering::Relaxed);
    }
    consumer.close().await
}

/// Waits until the coordinator calls `group` stable with `members`
/// members and every one of `partitions` partitions assigned.
async fn settled(
    admin: &Admin,
    group: &str,
    members: usize,
    partitions: u32,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_MS_MAX);
    loop {
        if let Ok(d) = admin.describe_group(group).await {
            let assigned: usize = d
                .members
                .iter()
                .flat_map(|m| m.assigned.iter())
                .map(|t| t.partitions.len())
                .sum();
            if d.state == "Stable" && d.members.len() == members && assigned == partitions as usize
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Invalid(format!(
                "group {group:?} did not settle with {members} members within {SETTLE_MS_MAX} ms"
            )));
        }
        tokio::time::sleep(Duration::from_millis(DESCRIBE_EVERY_MS)).await;
    }
}

/// Runs the workload; the summary's `seconds` is the time to settle after
/// the join, its records those the members read meanwhile.
pub async fn group_join(o: &Options, progress: Arc<Progress>) -> Result<Summary, ClientError> {
    ensure_topic(o).await?;
    let group = o
        .group
        .clone()
        .unwrap_or_else(|| format!("rill-bench-join-{}", std::process::id()));
    let admin = Admin::new(Cluster::new(&o.bootstrap, "rill-bench-admin")?);
    let partitions = admin.describe_topic(&o.topic).await?.partitions.len() as u32;
    let load = {
        let mut load = o.clone();
        load.messages = None;
        let progress = Arc::clone(&progress);
        tokio::spawn(async move { run_producers(&load, progress, false).await })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let spawn_member = |i: usize| {
        tokio::spawn(member(
            o.clone(),
            group.clone(),
            format!("rill-bench-member-{i}"),
            Arc::clone(&stop),
            Arc::clone(&read),
        ))
    };
    let mut members: Vec<_> = (0..o.consumers.max(1)).map(spawn_member).collect();
    let outcome = async {
        settled(&admin, &group, members.len(), partitions).await?;
        tokio::time::sleep(Duration::from_millis(STEADY_MS)).await;
        settled(&admin, &group, members.len(), partitions).await?;
        let before = read.load(Ordering::Relaxed);
        let joined = Instant::now();
        members.push(spawn_member(members.len()));
        settled(&admin, &group, members.len(), partitions).await?;
        Ok::<_, ClientError>((joined.elapsed(), read.load(Ordering::Relaxed) - before))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for m in members {
        m.await
            .map_err(|e| ClientError::Invalid(format!("group member failed: {e}")))??;
    }
    load.abort();
    let (settle, records) = outcome?;
    Ok(Summary {
        workload: "group-join".into(),
        messages: records,
        bytes: records * o.message_size_bytes as u64,
        seconds: settle.as_secs_f64(),
        latency_us: None,
    })
}
