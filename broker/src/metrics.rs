//! What the broker measures, through the `metrics` facade, and how it is
//! rendered as Prometheus text for `/metrics` (see [`crate::http`]).
//!
//! Names follow Prometheus's conventions: the `rill_` prefix, base units
//! (`_bytes`, `_seconds`), `_total` for counters. Every name is a constant
//! here, so a newcomer finds what exists in one place. Per-partition
//! counters are registered once, when the replica opens
//! ([`PartitionMetrics`]), and the produce and fetch paths only add to
//! their handles: no label lookup per request.
//!
//! Process gauges (memory, open files) are read from `/proc/self` when
//! `/metrics` is scraped, not on a timer. Histograms hold their samples
//! until the recorder's upkeep drains them into buckets: [`upkeep`] runs
//! it every [`UPKEEP_MS`], scraped or not, so memory stays flat.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests handled, by API (`api` label).
pub const REQUESTS_TOTAL: &str = "rill_requests_total";
/// Errors answered, by API and error code (`api`, `error` labels): one per
/// partition, topic or group a response refused.
pub const REQUEST_ERRORS_TOTAL: &str = "rill_request_errors_total";
/// Time from a request's frame read to its response queued, by API.
pub const REQUEST_DURATION_SECONDS: &str = "rill_request_duration_seconds";
/// Client connections open now.
pub const CONNECTIONS_OPEN: &str = "rill_connections_open";
/// Client connections refused by the connection limits.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "rill_connections_refused_total";
/// Bytes of batches produced to a partition and stored (labels `topic`,
/// `partition`).
pub const PARTITION_BYTES_IN_TOTAL: &str = "rill_partition_bytes_in_total";
/// Records produced to a partition and stored.
pub const PARTITION_RECORDS_IN_TOTAL: &str = "rill_partition_records_in_total";
/// Bytes of batches fetched from a partition.
pub const PARTITION_BYTES_OUT_TOTAL: &str = "rill_partition_bytes_out_total";
/// Time the Raft thread took for one round over every group.
pub const RAFT_ROUND_DURATION_SECONDS: &str = "rill_raft_round_duration_seconds";
/// Time one sync round took (`deferred`: on the sync thread, or within a
/// round for one-voter groups).
pub const SYNC_DURATION_SECONDS: &str = "rill_sync_duration_seconds";
/// Bytes one sync round made durable.
pub const SYNC_ROUND_BYTES: &str = "rill_sync_round_bytes";
/// A produce's time in each stage, for the partitions it wrote (`stage`
/// label, see [`ProduceStage`]). The sync share of `commit` is
/// [`FSYNC_DURATION_SECONDS`]; the whole request is
/// [`REQUEST_DURATION_SECONDS`] with `api="produce"`.
pub const PRODUCE_STAGE_SECONDS: &str = "rill_produce_stage_seconds";
/// Time one replica's sync took within a sync round (`file`: `log`, its
/// segment files, or `state`, its hard state file): the latency of the
/// `fdatasync`s a produce with `acks=all` waits for.
pub const FSYNC_DURATION_SECONDS: &str = "rill_fsync_duration_seconds";
/// Bytes of segment data one replica's log sync made durable.
pub const FSYNC_BYTES: &str = "rill_fsync_bytes";
/// Leader changes seen by this broker's replicas (partitions; the
/// controller's group has [`CONTROLLER_LEADER_CHANGES_TOTAL`]).
pub const LEADER_CHANGES_TOTAL: &str = "rill_leader_changes_total";
/// Elections this broker's replicas won, by `group` kind (`partition`
/// or `controller`): each time one becomes leader.
pub const ELECTIONS_WON_TOTAL: &str = "rill_elections_won_total";
/// Leader changes of the controller's group seen here.
pub const CONTROLLER_LEADER_CHANGES_TOTAL: &str = "rill_controller_leader_changes_total";
/// Partition replicas here that lead, now.
pub const PARTITION_LEADERS: &str = "rill_partition_leaders";
/// Partition replicas here that follow, now.
pub const PARTITION_FOLLOWERS: &str = "rill_partition_followers";
/// Raft groups here that tick (all but those hibernating), updated every
/// second.
pub const RAFT_GROUPS_AWAKE: &str = "rill_raft_groups_awake";
/// Peers this broker finds down (for hibernating groups' sake), updated
/// every second.
pub const PEERS_DOWN: &str = "rill_peers_down";
/// Resident memory of the process.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "rill_process_resident_memory_bytes";
/// Anonymous resident memory (`RssAnon`): the heap, without the page
/// cache the segment mappings share.
pub const PROCESS_ANONYMOUS_MEMORY_BYTES: &str = "rill_process_anonymous_memory_bytes";
/// File descriptors open.
pub const PROCESS_OPEN_FDS: &str = "rill_process_open_fds";

/// Partitions led here with a replica that has not reached, for at least
/// [`UNDER_REPLICATED_AFTER_MS`], the commit index of then.
pub const PARTITIONS_UNDER_REPLICATED: &str = "rill_partitions_under_replicated";

/// How long a replica may stay short of a commit index before its
/// partition counts as under-replicated, ms (Kafka's
/// `replica.lag.time.max.ms` is 30 s; a rill follower catches up within
/// rounds).
pub const UNDER_REPLICATED_AFTER_MS: u64 = 10_000;

/// How long the commit indexes of past scrapes are kept, ms.
const LAG_SAMPLES_KEPT_MS: u64 = 120_000;

/// Tracks, across scrapes, each led partition's commit index over time,
/// to tell a replica that keeps up from one that stays behind.
#[derive(Debug, Default)]
pub struct LagTracker {
    /// Per group led here: (when, commit index then), oldest first.
    samples: std::collections::BTreeMap<u64, std::collections::VecDeque<(std::time::Instant, u64)>>,
}

impl LagTracker {
    /// Takes in the groups' state at `now` (`(group, commit, every
    /// replica's match index)` of each group led here) and returns how
    /// many are under-replicated: a replica's match index below the
    /// commit index of the newest sample at least
    /// [`UNDER_REPLICATED_AFTER_MS`] old.
    pub fn observe(&mut self, now: std::time::Instant, led: &[(u64, u64, Vec<u64>)]) -> u32 {
        let after = Duration::from_millis(UNDER_REPLICATED_AFTER_MS);
        let kept = Duration::from_millis(LAG_SAMPLES_KEPT_MS);
        self.samples
            .retain(|g, _| led.iter().any(|(group, _, _)| group == g));
        let mut under = 0;
        for (group, commit, matched) in led {
            let samples = self.samples.entry(*group).or_default();
            while samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > kept)
            {
                samples.pop_front();
            }
            let then = samples
                .iter()
                .rev()
                .find(|(at, _)| now.duration_since(*at) >= after)
                .map(|(_, c)| *c);
            if then.is_some_and(|c| matched.iter().any(|m| *m < c)) {
                under += 1;
            }
            samples.push_back((now, *commit));
        }
        under
    }
}

/// Buckets of [`SYNC_ROUND_BYTES`] and [`FSYNC_BYTES`]: 4 KiB to 256 MiB.
const SYNC_BYTES_BUCKETS: [f64; 9] = [
    4096.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    134_217_728.0,
    268_435_456.0,
];

/// Buckets of every `_seconds` histogram: 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// How often histogram samples are drained into their buckets, ms.
pub const UPKEEP_MS: u64 = 5_000;

/// Drains histogram samples every [`UPKEEP_MS`], until aborted.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_millis(UPKEEP_MS));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Installs the process's recorder and returns the handle that renders
/// it. Once per process; a second call fails.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full(SYNC_ROUND_BYTES.into()), &SYNC_BYTES_BUCKETS)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full(FSYNC_BYTES.into()), &SYNC_BYTES_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The Prometheus text of every metric, the process gauges and the
/// replicas' roles (from `published`, when recovery is done) read now, and
/// the partitions under-replicated by `status` (a fresh report of every
/// group here) as `lag` tracks them.
pub fn render(
    handle: &PrometheusHandle,
    published: Option<&crate::raft::Published>,
    status: Option<&crate::raft::StatusReport>,
    lag: &mut LagTracker,
) -> String {
    record_process();
    if let Some(report) = status {
        let led: Vec<(u64, u64, Vec<u64>)> = report
            .groups
            .iter()
            .filter(|g| !g.matched.is_empty() && g.group != rill_replication::GroupId::CONTROLLER)
            .map(|g| {
                (
                    g.group.0,
                    g.commit.get(),
                    g.matched.iter().map(|(_, m)| m.get()).collect(),
                )
            })
            .collect();
        let under = lag.observe(std::time::Instant::now(), &led);
        metrics::gauge!(PARTITIONS_UNDER_REPLICATED).set(f64::from(under));
    }
    if let Some(published) = published {
        let (mut leaders, mut followers) = (0u32, 0u32);
        for p in published.all_partitions() {
            if p.leadership().is_leader {
                leaders += 1;
            } else {
                followers += 1;
            }
        }
        metrics::gauge!(PARTITION_LEADERS).set(f64::from(leaders));
        metrics::gauge!(PARTITION_FOLLOWERS).set(f64::from(followers));
    }
    handle.run_upkeep();
    handle.render()
}

/// Reads the process's memory and open files from `/proc/self`.
fn record_process() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for (field, name) in [
            ("VmRSS:", PROCESS_RESIDENT_MEMORY_BYTES),
            ("RssAnon:", PROCESS_ANONYMOUS_MEMORY_BYTES),
        ] {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            {
                metrics::gauge!(name).set(kib * 1024.0);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(PROCESS_OPEN_FDS).set(fds.count() as f64);
    }
}

/// The `api` label of requests of `key`.
pub fn api_name(key: rill_client::protocol::ApiKey) -> &'static str {
    use rill_client::protocol::ApiKey as K;
    match key {
        K::ApiVersions => "api_versions",
        K::Metadata => "metadata",
        K::CreateTopics => "create_topics",
        K::DeleteTopics => "delete_topics",
        K::Produce => "produce",
        K::Fetch => "fetch",
        K::ListOffsets => "list_offsets",
        K::RegisterBroker => "register_broker",
        K::ClusterStatus => "cluster_status",
        K::FindCoordinator => "find_coordinator",
        K::OffsetCommit => "offset_commit",
        K::OffsetFetch => "offset_fetch",
        K::ConsumerGroupHeartbeat => "consumer_group_heartbeat",
        K::ListGroups => "list_groups",
        K::DescribeGroups => "describe_groups",
        K::DeleteGroups => "delete_groups",
        K::AlterTopicConfigs => "alter_topic_configs",
        K::DescribeTopicConfigs => "describe_topic_configs",
        K::CreatePartitions => "create_partitions",
        K::InitProducerId => "init_producer_id",
        K::ReassignPartitions => "reassign_partitions",
        K::ChangeBrokers => "change_brokers",
        K::JoinCluster => "join_cluster",
    }
}

/// Every API's request counter and latency histogram, registered on
/// first use (after the recorder is installed: the broker installs it
/// before it serves), so a request adds to handles, never looks up
/// labels.
fn api_metrics(key: rill_client::protocol::ApiKey) -> &'static (Counter, Histogram) {
    static HANDLES: OnceLock<Vec<(Counter, Histogram)>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        rill_client::protocol::ApiKey::ALL
            .iter()
            .map(|&k| {
                let api = api_name(k);
                (
                    metrics::counter!(REQUESTS_TOTAL, "api" => api),
                    metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api),
                )
            })
            .collect()
    });
    &handles[key as usize]
}

/// Records one request of `key` that took `elapsed`, answered with
/// `response` (none for a request that gets no answer).
pub fn request_handled(
    key: rill_client::protocol::ApiKey,
    elapsed: Duration,
    response: Option<&rill_client::protocol::Response>,
) {
    let (count, duration) = api_metrics(key);
    count.increment(1);
    duration.record(elapsed.as_secs_f64());
    // Rare: the label lookup per error is no cost on the paths that work.
    for error in response.map(response_errors).unwrap_or_default() {
        metrics::counter!(REQUEST_ERRORS_TOTAL, "api" => api_name(key), "error" => format!("{error:?}"))
            .increment(1);
    }
}

/// The error codes in `response`: one per partition, topic or group it
/// refused.
pub fn response_errors(
    response: &rill_client::protocol::Response,
) -> Vec<rill_client::protocol::ErrorCode> {
    use rill_client::protocol::Response as R;
    let mut codes = Vec::new();
    match response {
        R::ApiVersions(_) | R::ClusterStatus(_) => {}
        R::Metadata(m) => {
            for t in &m.topics {
                codes.push(t.error);
                codes.extend(t.partitions.iter().map(|p| p.error));
            }
        }
        R::CreateTopics(t)
        | R::DeleteTopics(t)
        | R::AlterTopicConfigs(t)
        | R::CreatePartitions(t)
        | R::ReassignPartitions(t) => {
            codes.extend(t.results.iter().map(|r| r.error));
        }
        R::Produce(r) => {
            codes.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        R::Fetch(r) => {
            codes.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        R::ListOffsets(r) => {
            codes.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        R::RegisterBroker(r) => codes.push(r.error),
        R::JoinCluster(r) => codes.push(r.error),
        R::FindCoordinator(r) => codes.push(r.error),
        R::OffsetCommit(r) => {
            codes.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        R::OffsetFetch(r) => {
            codes.push(r.error);
            codes.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        R::ConsumerGroupHeartbeat(r) => codes.push(r.error),
        R::ListGroups(r) => codes.push(r.error),
        R::DescribeGroups(r) => codes.extend(r.groups.iter().map(|g| g.error)),
        R::DeleteGroups(r) => codes.extend(r.groups.iter().map(|g| g.error)),
        R::DescribeTopicConfigs(r) => codes.extend(r.topics.iter().map(|t| t.error)),
        R::InitProducerId(r) => codes.push(r.error),
        R::ChangeBrokers(r) => codes.push(r.error),
    }
    codes.retain(|c| !c.is_ok());
    codes
}

/// Records one Raft round that took `elapsed`.
pub fn raft_round(elapsed: Duration) {
    metrics::histogram!(RAFT_ROUND_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Records one sync round of `bytes` that took `elapsed`.
pub fn sync_round(deferred: bool, bytes: u64, elapsed: Duration) {
    let deferred = if deferred { "true" } else { "false" };
    metrics::histogram!(SYNC_DURATION_SECONDS, "deferred" => deferred)
        .record(elapsed.as_secs_f64());
    metrics::histogram!(SYNC_ROUND_BYTES, "deferred" => deferred).record(bytes as f64);
}

/// A stage of a produce, as [`PRODUCE_STAGE_SECONDS`] splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceStage {
    /// Checked batches queued until the Raft thread proposes them (also
    /// the group coordinator's writes, which take the same queue).
    Queue,
    /// Proposed until committed in Raft and applied here (`acks=all`):
    /// the leader's append and sync, the followers' append, sync and
    /// answer.
    Commit,
    /// Proposed until appended to the leader's log (`acks=1`).
    Append,
}

/// Records a produce's time in `stage`.
pub fn produce_stage(stage: ProduceStage, elapsed: Duration) {
    static HANDLES: OnceLock<[Histogram; 3]> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        ["queue", "commit", "append"]
            .map(|stage| metrics::histogram!(PRODUCE_STAGE_SECONDS, "stage" => stage))
    });
    let i = match stage {
        ProduceStage::Queue => 0,
        ProduceStage::Commit => 1,
        ProduceStage::Append => 2,
    };
    handles[i].record(elapsed.as_secs_f64());
}

/// Records one replica's sync of a sync round.
pub fn fsync(synced: rill_replication::SyncedFiles) {
    static HANDLES: OnceLock<(Histogram, Histogram, Histogram)> = OnceLock::new();
    let (log, state, bytes) = HANDLES.get_or_init(|| {
        (
            metrics::histogram!(FSYNC_DURATION_SECONDS, "file" => "log"),
            metrics::histogram!(FSYNC_DURATION_SECONDS, "file" => "state"),
            metrics::histogram!(FSYNC_BYTES),
        )
    });
    let seconds = synced.elapsed_us as f64 / 1e6;
    if synced.log {
        log.record(seconds);
        bytes.record(synced.bytes as f64);
    } else {
        state.record(seconds);
    }
}

/// How many Raft groups here tick, and how many peers are found down.
pub fn raft_liveness(groups_awake: usize, peers_down: usize) {
    metrics::gauge!(RAFT_GROUPS_AWAKE).set(groups_awake as f64);
    metrics::gauge!(PEERS_DOWN).set(peers_down as f64);
}

/// Counts a leader change of a partition replica here, or of the
/// controller's group.
pub fn leader_changed(controller: bool) {
    let name = if controller {
        CONTROLLER_LEADER_CHANGES_TOTAL
    } else {
        LEADER_CHANGES_TOTAL
    };
    metrics::counter!(name).increment(1);
}

/// Counts an election a replica here won (`controller`: of the
/// controller's group).
pub fn election_won(controller: bool) {
    let kind = if controller {
        "controller"
    } else {
        "partition"
    };
    metrics::counter!(ELECTIONS_WON_TOTAL, "group" => kind).increment(1);
}

/// A client connection opened; closed again when the guard drops.
pub fn connection_opened() -> ConnectionOpen {
    let gauge = metrics::gauge!(CONNECTIONS_OPEN);
    gauge.increment(1.0);
    ConnectionOpen(gauge)
}

/// Counts an open connection in [`CONNECTIONS_OPEN`] while it lives.
pub struct ConnectionOpen(Gauge);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A client connection refused by a limit (`limit` label: which one).
pub fn connection_refused(limit: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED_TOTAL, "limit" => limit).increment(1);
}

/// One partition replica's counters, registered when it opens.
#[derive(Debug, Clone)]
pub struct PartitionMetrics {
    /// [`PARTITION_BYTES_IN_TOTAL`].
    pub bytes_in: Counter,
    /// [`PARTITION_RECORDS_IN_TOTAL`].
    pub records_in: Counter,
    /// [`PARTITION_BYTES_OUT_TOTAL`].
    pub bytes_out: Counter,
}

impl PartitionMetrics {
    /// The counters of partition `index` of `topic`.
    pub fn new(topic: &str, index: u32) -> PartitionMetrics {
        let labels = [
            ("topic", topic.to_string()),
            ("partition", index.to_string()),
        ];
        PartitionMetrics {
            bytes_in: metrics::counter!(PARTITION_BYTES_IN_TOTAL, &labels),
            records_in: metrics::counter!(PARTITION_RECORDS_IN_TOTAL, &labels),
            bytes_out: metrics::counter!(PARTITION_BYTES_OUT_TOTAL, &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_replica_short_of_a_commit_for_the_threshold_is_under_replicated_one_keeping_up_is_not() {
        let mut lag = LagTracker::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(UNDER_REPLICATED_AFTER_MS + 1000);
        // Group 1 keeps up (its slowest replica is past the old commit);
        // group 2's replica 3 is stuck below it.
        assert_eq!(
            lag.observe(t0, &[(1, 10, vec![10, 9, 10]), (2, 10, vec![10, 9, 5])]),
            0
        );
        let soon = t0 + Duration::from_millis(1000);
        assert_eq!(
            lag.observe(soon, &[(1, 12, vec![12, 11, 12]), (2, 12, vec![12, 12, 5])]),
            0,
            "no sample is old enough yet"
        );
        assert_eq!(
            lag.observe(
                later,
                &[(1, 20, vec![20, 15, 12]), (2, 20, vec![20, 20, 8])]
            ),
            1
        );
        // Caught up: no longer counted.
        let after = later + Duration::from_millis(UNDER_REPLICATED_AFTER_MS + 1000);
        assert_eq!(lag.observe(after, &[(2, 20, vec![20, 20, 20])]), 0);
        // A group no longer led here is forgotten.
        assert_eq!(lag.samples.len(), 1);
    }
}
