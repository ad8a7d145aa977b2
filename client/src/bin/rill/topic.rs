//! `rill topic`: create, list, describe, alter, reassign and delete
//! topics.
//!
//! What scripts read goes to stdout (the names of `list`, the partitions of
//! `describe`, as text or one JSON object); `create` and `delete` confirm
//! on stderr and leave stdout empty. A partition without a leader shows as
//! `none` or `null`, never as the wire's -1, so no one mistakes it for a
//! broker id. A `--config` that is not KEY=VALUE is refused before any
//! request goes out.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use rill_client::protocol::messages::{ConfigEntry, ConfigSource, INTERNAL_TOPIC_PREFIX};
use rill_client::{Admin, Cluster};

use crate::DescribeFormat;

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
    },
    /// List topic names (internal ones, beginning `__`, only with
    /// `--internal`).
    List {
        /// Also list the broker's internal topics (`__consumer_offsets`).
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, log start offset, high
    /// watermark) and every setting, with where it comes from (default or
    /// set on the topic).
    Describe {
        /// The topic.
        name: String,
        /// Output format.
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
        #[arg(long, default_value_t = 120_000)]
        timeout_ms: u64,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic.
        name: String,
    },
}

pub(crate) async fn topic(cluster: Arc<Cluster>, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::new(cluster);
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = key_values(&configs)?;
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await?;
            eprintln!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { internal } => {
            for name in admin.list_topics().await? {
                if internal || !name.starts_with(INTERNAL_TOPIC_PREFIX) {
                    println!("{name}");
                }
            }
        }
        TopicCommand::Describe { name, format } => {
            let info = admin.describe_topic(&name).await?;
            let configs = admin.describe_topic_configs(&name).await?;
            let source = |c: &ConfigEntry| match c.source {
                ConfigSource::Default => "default",
                ConfigSource::Topic => "set",
            };
            match format {
                DescribeFormat::Json => {
                    let partitions: Vec<_> = info
                        .partitions
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "partition": p.partition,
                                "leader": u32::try_from(p.leader).ok(),
                                "leader_epoch": p.leader_epoch,
                                "replicas": p.replicas,
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
                    for p in &info.partitions {
                        let leader =
                            u32::try_from(p.leader).map_or("none".to_string(), |l| l.to_string());
                        println!(
                            "  partition {}  leader {} (epoch {})  replicas {:?}  log start {}  high watermark {}",
                            p.partition,
                            leader,
                            p.leader_epoch,
                            p.replicas,
                            p.log_start_offset,
                            p.high_watermark
                        );
                    }
                    println!("configs");
                    for c in &configs {
                        println!("  {} = {}  ({})", c.key, c.value, source(c));
                    }
                }
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
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
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
