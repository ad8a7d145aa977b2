//! `rill topic`: create, list, describe, alter, reassign and delete
//! topics.
//!
//! What scripts read goes to stdout (the names of `list`, or with `--format
//! json` each topic's partitions, replication factor and settings; the
//! partitions of `describe`, as text or one JSON object a topic); `create`
//! and `delete` confirm on stderr and leave stdout empty. `describe` takes
//! each partition's leader, leader epoch, in-sync replicas and high
//! watermark from every broker's replication report (`crate::status`), so a
//! partition without a leader keeps the epoch its replicas are at, and its
//! log start offset from the broker that leads it. A partition without a
//! leader shows as `none` or `null`, never as the wire's -1, so no one
//! mistakes it for a broker id. A `--config` that is not KEY=VALUE is
//! refused before any request goes out. `create` answers once every
//! partition has a leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use rill_client::protocol::messages::{
    ConfigEntry, ConfigSource, INTERNAL_TOPIC_PREFIX, MetadataRequest,
};
use rill_client::protocol::{Request, Response};
use rill_client::{Admin, Cluster, TopicInfo};

use crate::DescribeFormat;
use crate::status::{Gathered, gather};

/// How often `create` looks for its partitions' leaders.
const LEADER_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name: [A-Za-z0-9._-]{1,249}.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// A topic setting, KEY=VALUE (fsync, retention.ms, retention.bytes,
        /// segment.bytes, segment.ms, max.message.bytes,
        /// message.timestamp.after.max.ms, message.timestamp.before.max.ms,
        /// message.timestamp.difference.max.ms); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// How long to wait for the controller to create the topic and for
        /// every partition to have a leader, ms.
        #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// List topic names (internal ones, beginning `__`, only with
    /// `--internal`); with `--format json`, each with its partitions,
    /// replication factor and the settings set on it.
    List {
        /// Also list the broker's internal topics (`__consumer_offsets`).
        #[arg(long)]
        internal: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Show topics' partitions (leader and its epoch, replicas, which are
    /// in sync and which offline, log start offset, high watermark) and
    /// every setting, with where it comes from (default or set on the
    /// topic).
    Describe {
        /// The topics.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output format (json: one object a line, a topic each).
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Change a live topic: add partitions, or change its settings
    /// (retention.ms, retention.bytes, segment.bytes, segment.ms and the
    /// message.timestamp bounds; fsync and max.message.bytes are set at
    /// creation).
    Alter {
        /// The topic.
        name: String,
        /// Grow the topic to this many partitions (never fewer); producers
        /// pick the new ones up with their next metadata.
        #[arg(long)]
        partitions: Option<u32>,
        /// A setting to set, KEY=VALUE; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// A setting to take back to its default; repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Move a partition's replicas to other brokers while it serves: each
    /// new replica joins as a learner and catches up, then the voters are
    /// swapped by joint consensus (nothing acknowledged can be lost on the
    /// way) and the old replicas' files are removed. Waits until the move
    /// has ended, or --timeout-ms has passed (the move carries on anyway:
    /// `rill topic describe` shows the replicas once it has ended).
    Reassign {
        /// The topic.
        name: String,
        /// The partition.
        #[arg(long)]
        partition: u32,
        /// The brokers it moves to, comma-separated, the preferred leader
        /// first.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// How long to wait for the move to end, ms (0: do not wait).
        #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 120_000)]
        timeout_ms: u64,
    },
    /// Delete topics and their data.
    Delete {
        /// The topics.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// One partition as `topic describe` shows it.
#[derive(Debug)]
struct PartitionReport {
    partition: u32,
    leader: Option<u32>,
    leader_epoch: u64,
    /// The preferred leader first.
    replicas: Vec<u32>,
    /// `None` without a leader to say.
    in_sync: Option<Vec<u32>>,
    /// Replicas on brokers that are down.
    offline: Vec<u32>,
    log_start_offset: u64,
    high_watermark: u64,
}

/// `topic`'s partitions from the metadata `info` and every broker's
/// report `g`, with log start offsets `starts` from the leaders.
fn partition_reports(
    info: &TopicInfo,
    g: &Gathered,
    starts: &BTreeMap<(String, u32), u64>,
) -> Vec<PartitionReport> {
    let up = |b: u32| g.brokers.get(&b).is_some_and(|s| s.status.is_ok());
    info.partitions
        .iter()
        .map(|p| {
            let view = g
                .partitions
                .iter()
                .find(|v| v.topic == info.name && v.partition == p.partition);
            let leader = view.and_then(|v| v.leader);
            PartitionReport {
                partition: p.partition,
                leader,
                leader_epoch: view.map_or(p.leader_epoch, |v| v.term.max(p.leader_epoch)),
                replicas: p.replicas.clone(),
                in_sync: view.filter(|v| v.leader.is_some()).map(|v| {
                    v.replicas
                        .iter()
                        .filter(|r| r.in_sync(v.commit))
                        .map(|r| r.id)
                        .collect()
                }),
                offline: p.replicas.iter().copied().filter(|b| !up(*b)).collect(),
                log_start_offset: starts
                    .get(&(info.name.clone(), p.partition))
                    .copied()
                    .unwrap_or(p.log_start_offset),
                high_watermark: view
                    .filter(|v| v.leader.is_some())
                    .map_or(p.high_watermark, |v| v.high_watermark),
            }
        })
        .collect()
}

/// Each partition's log start offset of `names` as the broker leading it
/// says (one metadata request per leader); partitions without a leader
/// are left out.
async fn leaders_log_starts(
    cluster: &Cluster,
    g: &Gathered,
    names: &[String],
) -> BTreeMap<(String, u32), u64> {
    let mut leaders: BTreeMap<u32, Vec<(String, u32)>> = BTreeMap::new();
    for v in g.partitions.iter().filter(|v| names.contains(&v.topic)) {
        if let Some(l) = v.leader {
            leaders
                .entry(l)
                .or_default()
                .push((v.topic.clone(), v.partition));
        }
    }
    let mut starts = BTreeMap::new();
    for (leader, led) in leaders {
        let Some(addr) = g.brokers.get(&leader).map(|b| b.address.clone()) else {
            continue;
        };
        let Ok(c) = cluster.connection(&addr).await else {
            continue;
        };
        let request = Request::Metadata(MetadataRequest {
            topics: Some(names.to_vec()),
        });
        let Ok(Response::Metadata(m)) = c.request(request, crate::status::STATUS_TIMEOUT).await
        else {
            continue;
        };
        for t in &m.topics {
            for p in &t.partitions {
                let key = (t.name.clone(), p.partition);
                if led.contains(&key) {
                    starts.insert(key, p.log_start_offset);
                }
            }
        }
    }
    starts
}

/// Waits until every partition of `name` (`partitions` of them) has a
/// leader known to a broker holding it (a leader epoch past 0), for at
/// most `timeout`; the partitions still without one, if any (all of them
/// while no broker describes the topic yet).
async fn await_leaders(
    cluster: &Cluster,
    name: &str,
    partitions: u32,
    timeout: Duration,
) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        cluster.invalidate(name);
        let leaderless: Vec<u32> = match cluster.topic(name).await {
            Ok(t) => t
                .partitions
                .iter()
                .filter(|p| p.leader < 0 || p.leader_epoch == 0)
                .map(|p| p.partition)
                .collect(),
            Err(_) => (0..partitions).collect(),
        };
        if leaderless.is_empty() || Instant::now() >= deadline {
            return leaderless;
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}

fn ids(list: &[u32]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub(crate) async fn topic(cluster: Arc<Cluster>, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::new(cluster);
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            timeout_ms,
        } => {
            let configs = key_values(&configs)?;
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            let admin = admin.with_timeout_ms(timeout_ms);
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await?;
            let partitions_word = if partitions == 1 {
                "partition"
            } else {
                "partitions"
            };
            let leaderless = await_leaders(
                admin.cluster(),
                &name,
                partitions,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
            if !leaderless.is_empty() {
                anyhow::bail!(
                    "created topic {name} with {partitions} {partitions_word}, but after {timeout_ms} ms partitions {} have no leader yet (`rill cluster status` shows why)",
                    ids(&leaderless)
                );
            }
            eprintln!("created topic {name} with {partitions} {partitions_word}");
        }
        TopicCommand::List { internal, format } => {
            let names: Vec<String> = admin
                .list_topics()
                .await?
                .into_iter()
                .filter(|n| internal || !n.starts_with(INTERNAL_TOPIC_PREFIX))
                .collect();
            match format {
                DescribeFormat::Text => {
                    for name in names {
                        println!("{name}");
                    }
                }
                DescribeFormat::Json => {
                    let configs = admin.describe_topics_configs(&names).await?;
                    let mut topics = Vec::new();
                    for name in &names {
                        let Ok(info) = admin.cluster().topic(name).await else {
                            // Deleted meanwhile.
                            continue;
                        };
                        let set: serde_json::Map<String, serde_json::Value> = configs
                            .get(name)
                            .into_iter()
                            .flatten()
                            .filter(|c| c.source == ConfigSource::Topic)
                            .map(|c| (c.key.clone(), serde_json::json!(c.value)))
                            .collect();
                        topics.push(serde_json::json!({
                            "name": name,
                            "partitions": info.partitions.len(),
                            "replication_factor": info.partitions.first().map_or(0, |p| p.replicas.len()),
                            "configs": set,
                        }));
                    }
                    println!("{}", serde_json::Value::Array(topics));
                }
            }
        }
        TopicCommand::Describe { names, format } => {
            let mut described = Vec::new();
            let mut missing = Vec::new();
            for name in &names {
                match admin.describe_topic(name).await {
                    Ok(info) => {
                        let configs = admin.describe_topic_configs(name).await?;
                        described.push((info, configs));
                    }
                    Err(rill_client::ClientError::UnknownTopic(_)) => missing.push(name.as_str()),
                    Err(e) => return Err(e.into()),
                }
            }
            let g = gather(Arc::clone(admin.cluster())).await?;
            let starts = leaders_log_starts(admin.cluster(), &g, &names).await;
            let source = |c: &ConfigEntry| match c.source {
                ConfigSource::Default => "default",
                ConfigSource::Topic => "set",
            };
            for (info, configs) in &described {
                let reports = partition_reports(info, &g, &starts);
                match format {
                    DescribeFormat::Json => {
                        let partitions: Vec<_> = reports
                            .iter()
                            .map(|p| {
                                serde_json::json!({
                                    "partition": p.partition,
                                    "leader": p.leader,
                                    "leader_epoch": p.leader_epoch,
                                    "replicas": p.replicas,
                                    "in_sync": p.in_sync,
                                    "offline": p.offline,
                                    "log_start_offset": p.log_start_offset,
                                    "high_watermark": p.high_watermark,
                                })
                            })
                            .collect();
                        let configs: Vec<_> = configs
                            .iter()
                            .map(|c| {
                                serde_json::json!({"key": c.key, "value": c.value, "source": source(c)})
                            })
                            .collect();
                        println!(
                            "{}",
                            serde_json::json!({"topic": info.name, "partitions": partitions, "configs": configs})
                        );
                    }
                    DescribeFormat::Text => {
                        println!("topic {}", info.name);
                        for p in &reports {
                            let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
                            let in_sync = p.in_sync.as_deref().map_or("unknown".to_string(), ids);
                            let offline = if p.offline.is_empty() {
                                String::new()
                            } else {
                                format!("  offline {}", ids(&p.offline))
                            };
                            println!(
                                "  partition {}  leader {leader} (epoch {})  replicas {}  in sync {in_sync}{offline}  log start {}  high watermark {}",
                                p.partition,
                                p.leader_epoch,
                                ids(&p.replicas),
                                p.log_start_offset,
                                p.high_watermark
                            );
                        }
                        println!("configs");
                        for c in configs {
                            println!("  {} = {}  ({})", c.key, c.value, source(c));
                        }
                    }
                }
            }
            match missing.as_slice() {
                [] => {}
                [one] => anyhow::bail!("topic {one:?} does not exist"),
                many => anyhow::bail!("topics {} do not exist", many.join(", ")),
            }
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            if configs.is_empty() && delete_configs.is_empty() && partitions.is_none() {
                anyhow::bail!(
                    "nothing to change: give --partitions N, --config KEY=VALUE or --delete-config KEY"
                );
            }
            let set = key_values(&configs)?;
            if let Some(n) = partitions {
                admin.add_partitions(&name, n).await?;
                eprintln!("topic {name} has {n} partitions");
            }
            if !set.is_empty() || !delete_configs.is_empty() {
                admin.alter_topic_config(&name, set, delete_configs).await?;
                eprintln!("changed the settings of topic {name}");
            }
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            timeout_ms,
        } => {
            admin
                .reassign_partition(&name, partition, &replicas)
                .await?;
            if timeout_ms == 0 {
                eprintln!("moving partition {name}/{partition} to brokers {replicas:?}");
                return Ok(());
            }
            let moved = admin
                .await_replicas(
                    &name,
                    partition,
                    &replicas,
                    std::time::Duration::from_millis(200),
                    std::time::Duration::from_millis(timeout_ms),
                )
                .await?;
            if !moved {
                anyhow::bail!(
                    "partition {name}/{partition} is still moving to brokers {replicas:?} after {timeout_ms} ms: the move carries on; `rill topic describe {name}` shows its replicas once it has ended"
                );
            }
            eprintln!("moved partition {name}/{partition} to brokers {replicas:?}");
        }
        TopicCommand::Delete { names } => {
            let mut failed = Vec::new();
            for name in &names {
                match admin.delete_topic(name).await {
                    Ok(()) => eprintln!("deleted topic {name}"),
                    Err(e) => {
                        eprintln!("rill: topic {name:?}: {e}");
                        failed.push(name.as_str());
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {} topics not deleted: {}",
                    failed.len(),
                    names.len(),
                    failed.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// `KEY=VALUE` flags as pairs; one that is not is refused before any
/// request goes out.
fn key_values(flags: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--config {c:?} is not KEY=VALUE"))
        })
        .collect()
}
