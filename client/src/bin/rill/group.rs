//! `rill group`: list consumer groups, describe one (members, committed
//! offsets, high watermarks, lag), reset a group's offsets on a topic, and
//! delete a group.
//!
//! What scripts read goes to stdout (the groups of `list`, the description
//! of `describe`, as text or one JSON value; the offsets `reset-offsets`
//! set); `delete` and `reset-offsets` confirm on stderr. A high watermark
//! or lag that cannot be known (the partition's topic was deleted) shows
//! as `unknown` or `null`. A `--to` that is not earliest, latest, an offset
//! or `@TIMESTAMP_MS` is refused before any request goes out.

use std::sync::Arc;

use clap::Subcommand;
use rill_client::admin::{GroupDescription, GroupListing, ResetTo};
use rill_client::{Admin, Cluster};
use serde_json::{Value, json};

use crate::DescribeFormat;

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List every consumer group with its state.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Show a group's state, members and their partitions, and per
    /// partition its committed offset, the high watermark and the lag.
    Describe {
        /// The group.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Set a group's committed offsets on every partition of a topic; the
    /// group must have no members.
    ResetOffsets {
        /// The group.
        group: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// earliest, latest, an offset (kept within each partition's log),
        /// or @TIMESTAMP_MS (the first record at or after that time).
        // Hyphen values too, so `--to -1` gets the one-line refusal that
        // says what is accepted rather than clap's "unexpected argument".
        #[arg(
            long,
            value_name = "earliest|latest|OFFSET|@TIMESTAMP_MS",
            allow_hyphen_values = true
        )]
        to: String,
    },
    /// Delete a group and its committed offsets; the group must have no
    /// members.
    Delete {
        /// The group.
        group: String,
    },
}

pub(crate) async fn group(cluster: Arc<Cluster>, command: GroupCommand) -> anyhow::Result<()> {
    let admin = Admin::new(cluster);
    match command {
        GroupCommand::List { format } => {
            let groups = admin.list_groups().await?;
            match format {
                DescribeFormat::Json => println!("{}", list_json(&groups)),
                DescribeFormat::Text => {
                    let width = groups.iter().map(|g| g.group.len()).max().unwrap_or(0);
                    for g in &groups {
                        println!("{:<width$}  {}", g.group, g.state);
                    }
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let d = admin.describe_group(&group).await?;
            match format {
                DescribeFormat::Json => println!("{}", describe_json(&d)),
                DescribeFormat::Text => print!("{}", describe_text(&d)),
            }
        }
        GroupCommand::ResetOffsets { group, topic, to } => {
            let to: ResetTo = to.parse()?;
            let set = admin.reset_offsets(&group, &topic, to).await?;
            for p in &set {
                println!(
                    "topic {}  partition {}  offset {}",
                    p.topic, p.partition, p.offset
                );
            }
            eprintln!(
                "reset group {group}'s offsets on topic {topic} to {to} ({} partition(s))",
                set.len()
            );
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            eprintln!("deleted group {group}");
        }
    }
    Ok(())
}

/// `group list --format json`: `[{"group", "state"}]`.
fn list_json(groups: &[GroupListing]) -> Value {
    groups
        .iter()
        .map(|g| json!({"group": g.group, "state": g.state}))
        .collect()
}

/// `group describe --format json`.
fn describe_json(d: &GroupDescription) -> Value {
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<Value> = m
                .assigned
                .iter()
                .map(|t| json!({"topic": t.topic, "partitions": t.partitions}))
                .collect();
            json!({
                "member_id": m.member_id,
                "client_id": m.client_id,
                "host": m.host,
                "assigned": assigned,
            })
        })
        .collect();
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed_offset": p.committed_offset,
                "high_watermark": p.high_watermark,
                "lag": p.lag,
            })
        })
        .collect();
    json!({
        "group": d.group,
        "state": d.state,
        "members": members,
        "partitions": partitions,
    })
}

/// `group describe` as text, one line per member and per partition.
fn describe_text(d: &GroupDescription) -> String {
    let or_unknown = |v: Option<u64>| v.map_or("unknown".to_string(), |v| v.to_string());
    let mut out = format!("group {}  state {}\n", d.group, d.state);
    out.push_str(&format!("members ({})\n", d.members.len()));
    for m in &d.members {
        let assigned = if m.assigned.is_empty() {
            "none".to_string()
        } else {
            m.assigned
                .iter()
                .map(|t| format!("{} {:?}", t.topic, t.partitions))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  member {}  client {}  host {}  assigned {assigned}\n",
            m.member_id, m.client_id, m.host
        ));
    }
    out.push_str(&format!("partitions ({})\n", d.partitions.len()));
    for p in &d.partitions {
        out.push_str(&format!(
            "  topic {}  partition {}  committed {}  high watermark {}  lag {}\n",
            p.topic,
            p.partition,
            p.committed_offset,
            or_unknown(p.high_watermark),
            or_unknown(p.lag)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_client::admin::{GroupMember, PartitionLag};
    use rill_client::protocol::messages::TopicPartitions;

    fn description() -> GroupDescription {
        GroupDescription {
            group: "g".into(),
            state: "Stable".into(),
            members: vec![GroupMember {
                member_id: "m1".into(),
                client_id: "c1".into(),
                host: "/127.0.0.1".into(),
                assigned: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: vec![0, 1],
                }],
            }],
            partitions: vec![
                PartitionLag::new("t", 0, 3, Some(10)),
                PartitionLag::new("t", 1, 12, Some(9)),
                PartitionLag::new("gone", 0, 5, None),
            ],
        }
    }

    #[test]
    fn describe_json_has_exactly_the_documented_shape() {
        assert_eq!(
            describe_json(&description()),
            json!({
                "group": "g",
                "state": "Stable",
                "members": [{
                    "member_id": "m1",
                    "client_id": "c1",
                    "host": "/127.0.0.1",
                    "assigned": [{"topic": "t", "partitions": [0, 1]}],
                }],
                "partitions": [
                    {"topic": "t", "partition": 0, "committed_offset": 3, "high_watermark": 10, "lag": 7},
                    {"topic": "t", "partition": 1, "committed_offset": 12, "high_watermark": 9, "lag": 0},
                    {"topic": "gone", "partition": 0, "committed_offset": 5, "high_watermark": null, "lag": null},
                ],
            })
        );
    }

    #[test]
    fn list_json_is_an_array_of_groups_and_states() {
        let groups = [
            GroupListing {
                group: "a".into(),
                state: "Empty".into(),
            },
            GroupListing {
                group: "b".into(),
                state: "Stable".into(),
            },
        ];
        assert_eq!(
            list_json(&groups),
            json!([{"group": "a", "state": "Empty"}, {"group": "b", "state": "Stable"}])
        );
        assert_eq!(list_json(&[]), json!([]));
    }

    #[test]
    fn describe_text_shows_members_and_lag() {
        let text = describe_text(&description());
        assert_eq!(
            text,
            "group g  state Stable\n\
             members (1)\n\
             \x20 member m1  client c1  host /127.0.0.1  assigned t [0, 1]\n\
             partitions (3)\n\
             \x20 topic t  partition 0  committed 3  high watermark 10  lag 7\n\
             \x20 topic t  partition 1  committed 12  high watermark 9  lag 0\n\
             \x20 topic gone  partition 0  committed 5  high watermark unknown  lag unknown\n"
        );
    }
}
