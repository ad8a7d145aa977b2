//! `rill cluster status` (how replication stands, merged from every
//! broker's own report: `crate::status`) and `rill cluster health`
//! (whether the cluster is healthy, from the same reports, with exit code
//! 0 only when it is).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use rill_client::Cluster;

use crate::DescribeFormat;
use crate::status::{Gathered, PartitionView, ReplicaView, gather};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Ask every broker how replication stands: which brokers are up, the
    /// controller, and per partition the leader, the replicas, which are
    /// in sync (have everything committed) and how many records the
    /// others lag. Exits 1 when a broker is down or a partition has no
    /// leader.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
        /// Also show Raft's view: each group's term, commit index and each
        /// replica's match index.
        #[arg(long)]
        raft: bool,
    },
    /// Whether the cluster is healthy: every broker up, a controller, no
    /// partition without a leader, none under-replicated (a replica down,
    /// or one that has not reached, a second later, the commit its leader
    /// reported: a follower a few entries behind under load is fine).
    /// Exits 0 only when healthy, 1 otherwise (as rpk cluster health).
    Health {
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Spread partition replicas, then preferred leaders, evenly over the
    /// brokers, moving as few as it can (each move as `rill topic
    /// reassign` does, a bounded number at a time). Returns once every
    /// move has ended.
    Balance {
        /// How long to wait for the moves, ms.
        #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 600_000)]
        timeout_ms: u64,
    },
    /// Take a broker out of the cluster's replicas: no new replica goes to
    /// it, and every replica it holds moves to the other brokers while
    /// the partitions serve. Returns once it holds none; it may then be
    /// stopped, and it leaves the metadata. (It stays a member of the
    /// controller's group.)
    RemoveBroker {
        /// The broker.
        id: u32,
        /// How long to wait for the moves, ms.
        #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 600_000)]
        timeout_ms: u64,
    },
    /// Take a removed broker back, or have a new broker join the cluster
    /// (give its peer address; a broker started with `--join` joins by
    /// itself): it hosts replicas, and replicas are spread onto it as
    /// `balance` does (moves onto a broker not running yet wait for it).
    AddBroker {
        /// The broker.
        id: u32,
        /// Its peer listener, HOST:PORT: for a broker new to the cluster.
        peer_addr: Option<String>,
        /// How long to wait for the moves, ms.
        #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 600_000)]
        timeout_ms: u64,
    },
}

/// Between `cluster health`'s two looks at the replicas.
const HEALTH_SETTLE: Duration = Duration::from_secs(1);

/// `rill cluster status`: every broker's report, merged and printed in
/// user terms (leaders, in-sync replicas, lag in records), with Raft's
/// details (term, commit, match indexes) only with `raft`. Returns the
/// exit code: 1 when a broker is down or a partition (or the controller)
/// has no leader.
pub(crate) async fn cluster_status(
    cluster: Arc<Cluster>,
    format: DescribeFormat,
    raft: bool,
) -> anyhow::Result<i32> {
    let Gathered {
        brokers,
        partitions,
        controller,
    } = gather(cluster).await?;
    let is_up = |id: u32| brokers.get(&id).is_some_and(|b| b.status.is_ok());
    let (group, topics): (Vec<&PartitionView>, Vec<&PartitionView>) =
        partitions.iter().partition(|p| p.topic.is_empty());
    match format {
        DescribeFormat::Json => {
            let brokers: Vec<_> = brokers
                .iter()
                .map(|(id, b)| {
                    serde_json::json!({
                        "id": id,
                        "address": b.address,
                        "up": b.status.is_ok(),
                    })
                })
                .collect();
            let describe = |p: &PartitionView| {
                let replicas: Vec<_> = p
                    .replicas
                    .iter()
                    .map(|r| {
                        let mut o = serde_json::json!({
                            "id": r.id,
                            "up": is_up(r.id),
                            "in_sync": p.leader.map(|_| r.in_sync(p.commit)),
                            "lag_records": r.lag_records,
                        });
                        if raft {
                            o["match"] = serde_json::json!(r.matched);
                            o["lag"] = serde_json::json!(r.lag);
                        }
                        o
                    })
                    .collect();
                let mut o = serde_json::json!({
                    "leader": p.leader,
                    "replicas": replicas,
                });
                if !p.topic.is_empty() {
                    o["topic"] = serde_json::json!(p.topic);
                    o["partition"] = serde_json::json!(p.partition);
                    o["high_watermark"] = serde_json::json!(p.high_watermark);
                }
                if raft {
                    o["group"] = serde_json::json!(p.group);
                    o["term"] = serde_json::json!(p.term);
                    o["commit"] = serde_json::json!(p.commit);
                }
                o
            };
            println!(
                "{}",
                serde_json::json!({
                    "controller": controller,
                    "controller_group": group.first().map(|p| describe(p)),
                    "brokers": brokers,
                    "partitions": topics.iter().map(|p| describe(p)).collect::<Vec<_>>(),
                })
            );
        }
        DescribeFormat::Text => {
            let or_none = |b: Option<u32>| b.map_or("none".to_string(), |b| b.to_string());
            for (id, b) in &brokers {
                match &b.status {
                    Ok(_) => println!("broker {id}  {}  up", b.address),
                    Err(e) => println!("broker {id}  {}  down ({e})", b.address),
                }
            }
            let line = |name: String, p: &PartitionView| {
                let list = |ids: Vec<u32>| {
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                    }
                };
                let mut text = format!(
                    "{name}  leader {}  replicas {}",
                    or_none(p.leader),
                    list(p.replicas.iter().map(|r| r.id).collect())
                );
                if p.leader.is_some() {
                    let (in_sync, lagging): (Vec<&ReplicaView>, Vec<&ReplicaView>) =
                        p.replicas.iter().partition(|r| r.in_sync(p.commit));
                    text += &format!("  in sync {}", list(in_sync.iter().map(|r| r.id).collect()));
                    if !lagging.is_empty() {
                        let behind = lagging
                            .iter()
                            .map(|r| {
                                let records =
                                    r.lag_records.map_or("lag unknown".to_string(), |n| {
                                        format!(
                                            "{n} record{} behind",
                                            if n == 1 { "" } else { "s" }
                                        )
                                    });
                                let down = if is_up(r.id) { "" } else { ", down" };
                                format!("{} ({records}{down})", r.id)
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        text += &format!("  lagging {behind}");
                    }
                }
                if raft {
                    let matched = p
                        .replicas
                        .iter()
                        .map(|r| match (r.matched, r.lag) {
                            (Some(m), Some(lag)) => format!("{}:{m} (lag {lag})", r.id),
                            _ => format!("{}:unknown", r.id),
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    text += &format!(
                        "  [raft group {}  term {}  commit {}  match {matched}]",
                        p.group, p.term, p.commit
                    );
                }
                text
            };
            match group.first() {
                Some(p) => println!("{}", line("controller".to_string(), p)),
                None => println!("controller  leader {}", or_none(controller)),
            }
            for p in &topics {
                let name = format!(
                    "topic {}  partition {}  high watermark {}",
                    p.topic, p.partition, p.high_watermark
                );
                println!("{}", line(name, p));
            }
        }
    }
    let down: Vec<u32> = brokers
        .iter()
        .filter(|(_, b)| b.status.is_err())
        .map(|(id, _)| *id)
        .collect();
    let leaderless = partitions
        .iter()
        .filter(|p| !p.topic.is_empty() && p.leader.is_none())
        .count();
    if down.is_empty() && leaderless == 0 && controller.is_some() {
        return Ok(0);
    }
    let mut why = Vec::new();
    if !down.is_empty() {
        why.push(format!(
            "broker{} {} down",
            if down.len() == 1 { "" } else { "s" },
            down.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if leaderless > 0 {
        why.push(format!(
            "{leaderless} partition{} without a leader",
            if leaderless == 1 { "" } else { "s" }
        ));
    }
    if controller.is_none() {
        why.push("no controller".into());
    }
    eprintln!(
        "rill: not every broker is up and every partition led: {}",
        why.join("; ")
    );
    Ok(1)
}

/// What `rill cluster health` found wrong; healthy when all is empty.
#[derive(Debug, Default, PartialEq, Eq)]
struct Health {
    /// Brokers that did not answer, with why.
    brokers_down: Vec<(u32, String)>,
    /// Whether a controller is known.
    controller: Option<u32>,
    /// Partitions without a leader, as `topic/partition`.
    leaderless: Vec<String>,
    /// Partitions with a replica down or still short of an earlier
    /// commit, as `topic/partition` and the replicas.
    under_replicated: Vec<(String, Vec<u32>)>,
}

impl Health {
    fn is_healthy(&self) -> bool {
        self.brokers_down.is_empty()
            && self.controller.is_some()
            && self.leaderless.is_empty()
            && self.under_replicated.is_empty()
    }
}

/// Each partition's commit index, by topic and partition.
fn commits(g: &Gathered) -> BTreeMap<(String, u32), u64> {
    g.partitions
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.commit))
        .collect()
}

/// Judges the merged reports `g` against the commit indexes `before` a
/// moment earlier (see [`ClusterCommand::Health`]). The controller's own
/// group counts as a partition named `controller`.
fn judge(g: &Gathered, before: &BTreeMap<(String, u32), u64>) -> Health {
    let down = |id: u32| g.brokers.get(&id).is_none_or(|b| b.status.is_err());
    let mut health = Health {
        controller: g.controller,
        brokers_down: g
            .brokers
            .iter()
            .filter_map(|(id, b)| b.status.as_ref().err().map(|e| (*id, e.clone())))
            .collect(),
        ..Health::default()
    };
    for p in &g.partitions {
        let name = if p.topic.is_empty() {
            "controller".to_string()
        } else {
            format!("{}/{}", p.topic, p.partition)
        };
        if p.leader.is_none() {
            health.leaderless.push(name);
            continue;
        }
        let commit = before
            .get(&(p.topic.clone(), p.partition))
            .copied()
            .unwrap_or(p.commit)
            .min(p.commit);
        let behind: Vec<u32> = p
            .replicas
            .iter()
            .filter(|r| down(r.id) || r.matched.is_none_or(|m| m < commit))
            .map(|r| r.id)
            .collect();
        if !behind.is_empty() {
            health.under_replicated.push((name, behind));
        }
    }
    health
}

/// `rill cluster health`: 0 when healthy, 1 otherwise.
pub(crate) async fn cluster_health(
    cluster: Arc<Cluster>,
    format: DescribeFormat,
) -> anyhow::Result<i32> {
    // Two looks a second apart: a replica is behind only if it has not
    // reached, by the second, the commit the first saw.
    let first = commits(&gather(Arc::clone(&cluster)).await?);
    tokio::time::sleep(HEALTH_SETTLE).await;
    let health = judge(&gather(cluster).await?, &first);
    let healthy = health.is_healthy();
    match format {
        DescribeFormat::Json => println!(
            "{}",
            serde_json::json!({
                "healthy": healthy,
                "controller": health.controller,
                "brokers_down": health.brokers_down.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "leaderless_partitions": health.leaderless,
                "under_replicated_partitions": health
                    .under_replicated
                    .iter()
                    .map(|(p, r)| serde_json::json!({"partition": p, "replicas": r}))
                    .collect::<Vec<_>>(),
            })
        ),
        DescribeFormat::Text => {
            println!("healthy: {}", if healthy { "yes" } else { "no" });
            match health.controller {
                Some(c) => println!("controller: broker {c}"),
                None => println!("controller: none known"),
            }
            let list = |items: Vec<String>| {
                if items.is_empty() {
                    "none".to_string()
                } else {
                    items.join(", ")
                }
            };
            println!(
                "brokers down: {}",
                list(
                    health
                        .brokers_down
                        .iter()
                        .map(|(id, why)| format!("{id} ({why})"))
                        .collect()
                )
            );
            println!("leaderless partitions: {}", list(health.leaderless.clone()));
            println!(
                "under-replicated partitions: {}",
                list(
                    health
                        .under_replicated
                        .iter()
                        .map(|(p, r)| {
                            let r: Vec<String> = r.iter().map(u32::to_string).collect();
                            format!("{p} (replicas {} behind or down)", r.join(", "))
                        })
                        .collect()
                )
            );
        }
    }
    Ok(if healthy { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BrokerState, merge_partitions};
    use rill_client::protocol::messages::{ClusterStatusResponse, ReplicaStatus};

    fn up(id: u32) -> (u32, BrokerState) {
        (
            id,
            BrokerState {
                address: format!("b{id}:9092"),
                status: Ok(report(id, Vec::new())),
            },
        )
    }

    fn gathered(partitions: Vec<PartitionView>, down: &[u32]) -> Gathered {
        let mut brokers: BTreeMap<u32, BrokerState> = [up(1), up(2), up(3)].into_iter().collect();
        for id in down {
            brokers.get_mut(id).unwrap().status = Err("no answer".into());
        }
        Gathered {
            brokers,
            partitions,
            controller: Some(1),
        }
    }

    fn partition(leader: Option<u32>, matched: &[Option<u64>]) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            group: 7,
            leader,
            term: 2,
            commit: 10,
            high_watermark: 10,
            replicas: matched
                .iter()
                .enumerate()
                .map(|(i, m)| ReplicaView {
                    id: i as u32 + 1,
                    matched: *m,
                    lag: None,
                    lag_records: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_cluster_is_healthy_only_with_every_broker_a_controller_and_every_replica_caught_up() {
        let same = |g: &Gathered| judge(g, &commits(g));
        let fine = gathered(
            vec![partition(Some(1), &[Some(10), Some(12), Some(10)])],
            &[],
        );
        assert!(same(&fine).is_healthy());

        let behind = same(&gathered(
            vec![partition(Some(1), &[Some(10), Some(9), Some(10)])],
            &[],
        ));
        assert_eq!(behind.under_replicated, vec![("t/0".to_string(), vec![2])]);
        assert!(!behind.is_healthy());

        // Behind the commit now, but past the one seen a moment before:
        // a follower keeping up under load.
        let keeping_up = gathered(
            vec![partition(Some(1), &[Some(10), Some(9), Some(10)])],
            &[],
        );
        let earlier = BTreeMap::from([(("t".to_string(), 0), 8)]);
        assert!(judge(&keeping_up, &earlier).is_healthy());

        let down = same(&gathered(
            vec![partition(Some(1), &[Some(10), Some(10), Some(10)])],
            &[3],
        ));
        assert_eq!(down.brokers_down, vec![(3, "no answer".to_string())]);
        assert_eq!(down.under_replicated, vec![("t/0".to_string(), vec![3])]);

        let leaderless = same(&gathered(vec![partition(None, &[None, None, None])], &[]));
        assert_eq!(leaderless.leaderless, vec!["t/0".to_string()]);
        assert!(leaderless.under_replicated.is_empty());

        let mut no_controller = gathered(Vec::new(), &[]);
        no_controller.controller = None;
        assert!(!same(&no_controller).is_healthy());
    }

    fn replica(topic: &str, leader: i32, term: u64, matched: &[(u32, u64)]) -> ReplicaStatus {
        ReplicaStatus {
            topic: topic.to_string(),
            partition: 0,
            group: 7,
            leader,
            term,
            commit: 8,
            last_index: 10,
            high_watermark: 5,
            replicas: vec![1, 2, 3],
            matched: matched.to_vec(),
            log_end_offset: 0,
            matched_offsets: Vec::new(),
        }
    }

    fn report(broker_id: u32, replicas: Vec<ReplicaStatus>) -> ClusterStatusResponse {
        ClusterStatusResponse {
            broker_id,
            controller_id: 1,
            brokers: Vec::new(),
            replicas,
        }
    }

    #[test]
    fn the_leaders_report_gives_match_indexes_and_lag() {
        let follower = report(1, vec![replica("t", 2, 4, &[])]);
        let leader = report(2, vec![replica("t", 2, 4, &[(1, 9), (2, 10), (3, 4)])]);
        let merged = merge_partitions(&[&follower, &leader]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].leader, Some(2));
        let lags: Vec<_> = merged[0]
            .replicas
            .iter()
            .map(|r| (r.id, r.matched, r.lag))
            .collect();
        assert_eq!(
            lags,
            [
                (1, Some(9), Some(1)),
                (2, Some(10), Some(0)),
                (3, Some(4), Some(6))
            ]
        );
    }

    #[test]
    fn without_a_claimed_leader_the_row_has_no_leader_and_unknown_lags() {
        // Broker 1 believes 3 leads, but 3 did not answer.
        let a = report(1, vec![replica("t", 3, 5, &[])]);
        let b = report(2, vec![replica("t", 3, 4, &[])]);
        let merged = merge_partitions(&[&a, &b]);
        assert_eq!(merged[0].leader, None);
        assert_eq!(merged[0].term, 5);
        assert!(merged[0].replicas.iter().all(|r| r.matched.is_none()));
    }

    #[test]
    fn a_deposed_leader_loses_to_the_newer_term_and_rows_are_sorted() {
        let old = report(
            1,
            vec![replica("b", 1, 3, &[(1, 10)]), replica("", 1, 2, &[(1, 1)])],
        );
        let new = report(2, vec![replica("b", 2, 4, &[(2, 10)])]);
        let merged = merge_partitions(&[&old, &new]);
        let rows: Vec<_> = merged
            .iter()
            .map(|p| (p.topic.as_str(), p.leader))
            .collect();
        assert_eq!(rows, [("", Some(1)), ("b", Some(2))]);
    }
}
