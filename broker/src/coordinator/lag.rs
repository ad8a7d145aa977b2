//! Consumer group lag for `/metrics`: for each group coordinated here, per
//! partition it committed, the committed offset and the records between
//! it and the partition's high watermark.
//!
//! A task ([`refresh`]) rebuilds the table every `--group-lag-refresh-ms`
//! ([`LAG_REFRESH_MS_DEFAULT`]); a
//! scrape renders the last table as it is ([`GroupLag::render`]). The
//! table is rendered by hand rather than through the `metrics` facade,
//! which never forgets a series: a group deleted or a partition no longer
//! committed would be reported for ever at its last value.
//!
//! High watermarks come from a replica here when there is one (a
//! follower's trails its leader's by at most a round trip), else from the
//! partition's leader by ListOffsets: one request per broker per refresh,
//! sent to the preferred leader and, when that answers `NotLeader`, once
//! more to the leader it names. A partition whose high watermark could not
//! be had this time is reported without lag.
//!
//! Bounds: at most [`GROUP_LAG_ROWS_MAX`] (group, partition) rows; the
//! rest are left out and counted in `rill_consumer_group_lag_rows_omitted`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_client::protocol::messages::{
    LATEST_TIMESTAMP, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use rill_client::protocol::{ErrorCode, Request, Response};
use rill_replication::BrokerId;

use crate::state::{Broker, Lookup};

/// How often the lag table is rebuilt by default, ms.
pub const LAG_REFRESH_MS_DEFAULT: u64 = 10_000;

/// Most (group, partition) rows reported: each is two series, and a
/// scrape must stay small whatever clients commit.
pub const GROUP_LAG_ROWS_MAX: usize = 10_000;

/// The committed offset of `group` in a partition.
pub const CONSUMER_GROUP_COMMITTED_OFFSET: &str = "rill_consumer_group_committed_offset";
/// Records between a group's committed offset and the partition's high
/// watermark.
pub const CONSUMER_GROUP_LAG: &str = "rill_consumer_group_lag";
/// Rows left out of the last table for [`GROUP_LAG_ROWS_MAX`].
pub const CONSUMER_GROUP_LAG_ROWS_OMITTED: &str = "rill_consumer_group_lag_rows_omitted";

/// One group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its committed offset.
    pub committed: u64,
    /// The partition's high watermark, when it could be had.
    pub high_watermark: Option<u64>,
}

impl LagRow {
    /// Records left to read: 0 when the commit is at or past the high
    /// watermark (a high watermark read from a follower may trail).
    pub fn lag(&self) -> Option<u64> {
        self.high_watermark
            .map(|hw| hw.saturating_sub(self.committed))
    }
}

/// The last lag table, shared by the refresh task and the scrapes.
#[derive(Debug, Default)]
pub struct GroupLag {
    /// Guards the swap of the table only: it is built and rendered
    /// outside, from a clone of the `Arc`.
    table: Mutex<Arc<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    rows: Vec<LagRow>,
    omitted: usize,
}

impl GroupLag {
    /// The last table's rows.
    pub fn rows(&self) -> Vec<LagRow> {
        self.current().rows.clone()
    }

    fn current(&self) -> Arc<Table> {
        Arc::clone(&self.table.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, table: Table) {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// The table in Prometheus text format.
    pub fn render(&self) -> String {
        let table = self.current();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {CONSUMER_GROUP_COMMITTED_OFFSET} The group's committed offset in the partition (groups coordinated here)."
        );
        let _ = writeln!(out, "# TYPE {CONSUMER_GROUP_COMMITTED_OFFSET} gauge");
        for r in &table.rows {
            let _ = writeln!(
                out,
                "{CONSUMER_GROUP_COMMITTED_OFFSET}{} {}",
                labels(r),
                r.committed
            );
        }
        let _ = writeln!(
            out,
            "# HELP {CONSUMER_GROUP_LAG} Records between the group's committed offset and the partition's high watermark."
        );
        let _ = writeln!(out, "# TYPE {CONSUMER_GROUP_LAG} gauge");
        for r in &table.rows {
            if let Some(lag) = r.lag() {
                let _ = writeln!(out, "{CONSUMER_GROUP_LAG}{} {lag}", labels(r));
            }
        }
        let _ = writeln!(out, "# TYPE {CONSUMER_GROUP_LAG_ROWS_OMITTED} gauge");
        let _ = writeln!(out, "{CONSUMER_GROUP_LAG_ROWS_OMITTED} {}", table.omitted);
        out
    }
}

/// `{group="..",topic="..",partition=".."}`, values escaped as the text
/// format asks (a group id is the client's free text).
fn labels(r: &LagRow) -> String {
    format!(
        "{{group=\"{}\",topic=\"{}\",partition=\"{}\"}}",
        escape(&r.group),
        escape(&r.topic),
        r.partition
    )
}

/// A label value escaped for the Prometheus text format: backslash,
/// double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Rebuilds `lag` every `refresh_ms` until aborted.
pub async fn refresh(broker: Arc<Broker>, lag: Arc<GroupLag>, refresh_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(refresh_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lag.set(build(&broker).await);
    }
}

/// The table now: the commits of every group led here, with high
/// watermarks.
async fn build(broker: &Arc<Broker>) -> Table {
    let mut rows = Vec::new();
    let mut omitted = 0;
    for shard in broker.groups.leading_shards() {
        let Ok(state) = shard.state() else { continue };
        for (group, g) in &state.groups {
            for ((topic, partition), commit) in &g.commits {
                if rows.len() == GROUP_LAG_ROWS_MAX {
                    omitted += 1;
                    continue;
                }
                rows.push(LagRow {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: commit.offset,
                    high_watermark: None,
                });
            }
        }
    }
    let marks = high_watermarks(broker, &rows).await;
    for r in &mut rows {
        r.high_watermark = marks.get(&(r.topic.clone(), r.partition)).copied();
    }
    rows.sort_by(|a, b| (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition)));
    Table { rows, omitted }
}

type Marks = BTreeMap<(String, u32), u64>;

/// The high watermark of every partition `rows` name that could be had:
/// from a replica here, else from its leader.
async fn high_watermarks(broker: &Arc<Broker>, rows: &[LagRow]) -> Marks {
    let mut marks = Marks::new();
    let mut ask: BTreeMap<BrokerId, Vec<(String, u32)>> = BTreeMap::new();
    for r in rows {
        let key = (r.topic.clone(), r.partition);
        if marks.contains_key(&key) {
            continue;
        }
        match broker.lookup(&r.topic, r.partition) {
            Lookup::Here(p) => {
                marks.insert(key, p.high_watermark());
            }
            Lookup::Elsewhere {
                leader: Some(leader),
            } => {
                let wanted = ask.entry(leader).or_default();
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
            _ => {}
        }
    }
    let mut moved: BTreeMap<BrokerId, Vec<(String, u32)>> = BTreeMap::new();
    for (to, wanted) in ask {
        ask_leader(broker, to, &wanted, &mut marks, Some(&mut moved)).await;
    }
    for (to, wanted) in moved {
        ask_leader(broker, to, &wanted, &mut marks, None).await;
    }
    marks
}

/// Asks broker `to` for the high watermarks of `wanted`; a partition it
/// does not lead goes to `moved` under the leader it names, when there is
/// a `moved` to follow.
async fn ask_leader(
    broker: &Arc<Broker>,
    to: BrokerId,
    wanted: &[(String, u32)],
    marks: &mut Marks,
    mut moved: Option<&mut BTreeMap<BrokerId, Vec<(String, u32)>>>,
) {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (topic, partition) in wanted {
        topics
            .entry(topic.as_str())
            .or_default()
            .push(ListOffsetsPartition {
                partition: *partition,
                timestamp_ms: LATEST_TIMESTAMP,
            });
    }
    let request = Request::ListOffsets(ListOffsetsRequest {
        topics: topics
            .into_iter()
            .map(|(name, partitions)| ListOffsetsTopic {
                name: name.to_string(),
                partitions,
            })
            .collect(),
    });
    let response = match broker.request_to(to, request).await {
        Ok(Response::ListOffsets(r)) => r,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(broker = to.get(), error = %e, "group lag: high watermarks not had");
            return;
        }
    };
    for t in response.topics {
        for p in t.partitions {
            let key = (t.name.clone(), p.partition);
            match (p.error, u64::try_from(p.offset)) {
                (ErrorCode::None, Ok(offset)) => {
                    marks.insert(key, offset);
                }
                (ErrorCode::NotLeader, _) => {
                    if let (Some(moved), Ok(leader)) =
                        (moved.as_deref_mut(), u64::try_from(p.leader_hint))
                    {
                        let leader = BrokerId(leader);
                        if leader != to {
                            moved.entry(leader).or_default().push(key);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, committed: u64, high_watermark: Option<u64>) -> LagRow {
        LagRow {
            group: group.into(),
            topic: "t".into(),
            partition: 3,
            committed,
            high_watermark,
        }
    }

    #[test]
    fn lag_is_the_records_between_commit_and_high_watermark_never_negative() {
        assert_eq!(row("g", 10, Some(25)).lag(), Some(15));
        assert_eq!(row("g", 30, Some(25)).lag(), Some(0));
        assert_eq!(row("g", 10, None).lag(), None);
    }

    #[test]
    fn render_escapes_group_ids_and_leaves_out_unknown_lag() {
        let lag = GroupLag::default();
        lag.set(Table {
            rows: vec![row("a\"b\\c\nd", 10, Some(25)), row("plain", 5, None)],
            omitted: 2,
        });
        let text = lag.render();
        assert!(text.contains(
            "rill_consumer_group_lag{group=\"a\\\"b\\\\c\\nd\",topic=\"t\",partition=\"3\"} 15\n"
        ));
        assert!(text.contains(
            "rill_consumer_group_committed_offset{group=\"plain\",topic=\"t\",partition=\"3\"} 5\n"
        ));
        assert!(!text.contains("rill_consumer_group_lag{group=\"plain\""));
        assert!(text.contains("rill_consumer_group_lag_rows_omitted 2\n"));
        // Every line is a comment or one sample: no label value broke out.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.split("} ").count() <= 2,
                "{line}"
            );
        }
    }
}
