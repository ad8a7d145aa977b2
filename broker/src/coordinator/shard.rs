//! One `__consumer_offsets` partition replica as its coordinator sees it:
//! its groups (`state.rs`, kept up to date by the tailer in `tail.rs`) and
//! the writes that go through Raft into its log.
//!
//! Writes are serialised by the shard's `writer` lock, which also holds
//! the offset after the last proposal:
//! - a commit holds it from its checks until its records are proposed, so
//!   the log takes commits in the order they were checked;
//! - a membership change holds it until its records are committed and
//!   applied, so no heartbeat is ever answered from a membership the log
//!   does not hold; a change whose write fails is undone by restarting
//!   the group's live membership from the stored one;
//! - removing a group's commits (deletion, expiry) first waits until
//!   everything proposed is applied, so it removes exactly the commits it
//!   checked.
//!
//! A write is acknowledged only once committed and applied here, so an
//! OffsetFetch after an OffsetCommit's answer sees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill_client::protocol::ErrorCode;
use rill_replication::Proposed;
use rill_storage::{BatchBuilder, MAX_BATCH_BYTES_DEFAULT, NewRecord};
use tokio::sync::watch;

use super::record::{self, GroupValue, Key, MemberValue, Value};
use super::state::ShardState;
use super::{COMMIT_TIMEOUT_MS, GroupSettings};
use crate::handlers::produce::{proposal_outcome, wait_acks};
use crate::partition::Partition;
use crate::state::Broker;

/// How often a request waiting for its coordinator to load looks again,
/// ms.
const LOAD_RECHECK_MS: u64 = 20;
/// Most bytes of one batch the coordinator writes: the default
/// `max.message.bytes`, which the offsets topic keeps.
const WRITE_BATCH_BYTES: usize = MAX_BATCH_BYTES_DEFAULT;

/// Milliseconds since the Unix epoch on this broker's clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The shard's writer lock, held by one write at a time; it holds the
/// offset after the last proposal.
pub type Writer<'a> = tokio::sync::MutexGuard<'a, u64>;

/// Records to write: key, and value or tombstone.
pub type Records = Vec<(Bytes, Option<Bytes>)>;

/// One offsets partition replica's groups.
#[derive(Debug)]
pub struct Shard {
    partition: Arc<Partition>,
    /// Guards the groups; held only to read or change them in memory,
    /// never across I/O or an await.
    state: Mutex<ShardState>,
    /// Offsets below this are applied to `state`.
    applied: watch::Sender<u64>,
    /// Serialises writes (see the module documentation); holds the offset
    /// after the last proposal.
    writer: tokio::sync::Mutex<u64>,
    /// The coordinator's session clock.
    clock: Instant,
}

impl Shard {
    /// A shard over `partition`, its tailer started.
    pub(super) fn start(partition: Arc<Partition>, clock: Instant) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            applied: watch::Sender::new(partition.log_start_offset()),
            writer: tokio::sync::Mutex::new(0),
            partition,
            state: Mutex::default(),
            clock,
        });
        tokio::spawn(super::tail::tail(Arc::downgrade(&shard)));
        shard
    }

    /// The replica it tails.
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// Offsets below this are applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Called by the tailer: offsets below `offset` are applied.
    pub(super) fn set_applied(&self, offset: u64) {
        self.applied.send_if_modified(|a| {
            let moved = offset > *a;
            *a = (*a).max(offset);
            moved
        });
    }

    /// The state as it is, for the tailer.
    pub(super) fn lock_state(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().expect("shard state poisoned")
    }

    /// Whether it leads and has applied everything committed.
    pub fn is_loaded(&self) -> bool {
        self.partition.not_leader().is_none()
            && self.partition.is_high_watermark_current()
            && self.applied() >= self.partition.high_watermark()
    }

    /// Waits until [`Shard::is_loaded`]; false once it no longer leads.
    pub(super) async fn loaded(&self) -> bool {
        let mut applied = self.applied.subscribe();
        loop {
            let mut watch = self.partition.watch();
            if self.partition.not_leader().is_some() {
                return false;
            }
            if self.is_loaded() {
                return true;
            }
            // Whether the high watermark is of this term flips without
            // the watch firing (a quiet partition's first commit moves no
            // offset): look again every `LOAD_RECHECK_MS` as well.
            tokio::select! {
                _ = watch.changed() => {}
                r = applied.changed() => if r.is_err() { return false },
                _ = tokio::time::sleep(Duration::from_millis(LOAD_RECHECK_MS)) => {}
            }
        }
    }

    /// The groups, for the leader: live memberships that cannot be trusted
    /// (built in an earlier term, or a change to them not stored) restart
    /// from the stored ones first, which needs everything committed
    /// applied (`CoordinatorLoadInProgress` until then).
    pub fn state(&self) -> Result<MutexGuard<'_, ShardState>, ErrorCode> {
        let term = self.partition.leadership().term;
        let mut state = self.lock_state();
        if self.partition.not_leader().is_some() {
            return Err(ErrorCode::NotCoordinator);
        }
        let new_term = state.members_term != term;
        if new_term || !state.restore_pending.is_empty() {
            if !self.is_loaded() {
                return Err(ErrorCode::CoordinatorLoadInProgress);
            }
            let now_ms = self.clock.elapsed().as_millis() as u64;
            let pending = std::mem::take(&mut state.restore_pending);
            for (id, group) in &mut state.groups {
                if new_term || pending.contains(id) {
                    group.restore(now_ms);
                }
            }
            state.members_term = term;
        }
        Ok(state)
    }

    /// Takes the writer lock (see the module documentation).
    pub async fn writer(&self) -> Writer<'_> {
        self.writer.lock().await
    }

    /// Waits, holding `writer`, until everything proposed is applied (or
    /// the commit timeout passes: `RequestTimedOut`).
    pub async fn quiesce(&self, writer: &Writer<'_>) -> Result<(), ErrorCode> {
        let through = **writer;
        let mut applied = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(COMMIT_TIMEOUT_MS);
        match tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= through)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ErrorCode::NotCoordinator),
            Err(_) => Err(ErrorCode::RequestTimedOut),
        }
    }

    /// Proposes `records` (key, value or tombstone) under `writer`, then
    /// lets it go and waits until they are committed and applied here.
    pub async fn write(
        &self,
        broker: &Broker,
        records: &[(Bytes, Option<Bytes>)],
        mut writer: Writer<'_>,
    ) -> Result<(), ErrorCode> {
        let proposed = self.propose(broker, records, &mut writer, false).await;
        drop(writer);
        match proposed? {
            Some(last) => self.committed(&last).await,
            None => Ok(()),
        }
    }

    /// Stores a change to `group`'s membership: `records` proposed as one
    /// entry and waited for while holding `writer`. If they cannot be
    /// stored, the group's live membership restarts from the stored one.
    pub async fn store_membership(
        &self,
        broker: &Broker,
        group: &str,
        records: &[(Bytes, Option<Bytes>)],
        mut writer: Writer<'_>,
    ) -> Result<(), ErrorCode> {
        let stored = match self.propose(broker, records, &mut writer, true).await {
            Ok(Some(last)) => self.committed(&last).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if stored.is_err() {
            self.lock_state().restore_pending.insert(group.to_string());
        }
        drop(writer);
        stored
    }

    /// Proposes `records` in as few batches as fit (in one when `whole`,
    /// refused with `RecordTooLarge` otherwise), moving `writer` past them;
    /// the last entry proposed, or `None` for no records.
    async fn propose(
        &self,
        broker: &Broker,
        records: &[(Bytes, Option<Bytes>)],
        writer: &mut Writer<'_>,
        whole: bool,
    ) -> Result<Option<Proposed>, ErrorCode> {
        let now_ms = wall_clock_ms();
        let mut chunks = Vec::new();
        let mut builder = BatchBuilder::new(WRITE_BATCH_BYTES);
        for (key, value) in records {
            let r = NewRecord {
                key: Some(key),
                value: value.as_deref(),
                headers: &[],
                timestamp_ms: now_ms,
            };
            if !builder.push(&r).map_err(|_| ErrorCode::RecordTooLarge)? {
                if whole {
                    return Err(ErrorCode::RecordTooLarge);
                }
                let full = std::mem::replace(&mut builder, BatchBuilder::new(WRITE_BATCH_BYTES));
                chunks.push(Bytes::from(
                    full.finish().map_err(|_| ErrorCode::InvalidRecord)?,
                ));
                if !builder.push(&r).map_err(|_| ErrorCode::RecordTooLarge)? {
                    return Err(ErrorCode::RecordTooLarge);
                }
            }
        }
        if !builder.is_empty() {
            chunks.push(Bytes::from(
                builder.finish().map_err(|_| ErrorCode::InvalidRecord)?,
            ));
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        let partition = &self.partition;
        let batches = partition.check(&chunks, now_ms)?;
        let outcome = broker
            .raft
            .propose_queued(partition.group, batches)
            .await
            .map_err(|_| ErrorCode::NotCoordinator)?;
        let (_, last, _) = proposal_outcome(&partition.topic, partition, outcome)
            .await
            .map_err(|(e, _)| coordinator_error(e))?;
        **writer = (**writer).max(last.next_offset.get());
        Ok(Some(last))
    }

    /// Waits until `last` is committed and applied here.
    async fn committed(&self, last: &Proposed) -> Result<(), ErrorCode> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(COMMIT_TIMEOUT_MS);
        match wait_acks(&self.partition, last, true, deadline).await {
            ErrorCode::None => {}
            e => return Err(coordinator_error(e)),
        }
        let mut applied = self.applied.subscribe();
        let caught_up = applied.wait_for(|a| *a >= last.next_offset.get());
        match tokio::time::timeout_at(deadline, caught_up).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ErrorCode::NotCoordinator),
            Err(_) => Err(ErrorCode::RequestTimedOut),
        }
    }

    /// Removes `group`'s commits with tombstones: all of them, or (with
    /// `committed_before_ms`) those committed before then, and only if
    /// the group still has no members. `Ok(false)`, writing nothing, when
    /// it has members. Everything proposed before is applied first, so
    /// exactly the commits checked are removed.
    pub async fn delete_commits(
        &self,
        broker: &Broker,
        group: &str,
        committed_before_ms: Option<i64>,
    ) -> Result<bool, ErrorCode> {
        let writer = self.writer().await;
        self.quiesce(&writer).await?;
        let tombstones: Records = {
            let state = self.state()?;
            let Some(g) = state.groups.get(group) else {
                return Ok(true);
            };
            if !g.membership.members.is_empty() {
                return Ok(false);
            }
            g.commits
                .iter()
                .filter(|(_, c)| committed_before_ms.is_none_or(|t| c.commit_timestamp_ms < t))
                .map(|((topic, partition), _)| {
                    let key = record::CommitKey {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (key.encode(), None)
                })
                .collect()
        };
        self.write(broker, &tombstones, writer).await?;
        Ok(true)
    }

    /// One sweep at `now_ms` (session clock) and `wall_ms`: expires
    /// members and follows topics' partition counts, storing what changed
    /// group by group, and returns the groups whose commits are past the
    /// offsets retention.
    pub(super) async fn sweep(
        &self,
        broker: &Broker,
        now_ms: u64,
        wall_ms: i64,
        settings: &GroupSettings,
        partitions: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let mut expired = Vec::new();
        let mut changed: Vec<(String, Records)> = Vec::new();
        let writer = self.writer().await;
        {
            let Ok(mut state) = self.state() else {
                return expired;
            };
            for (id, group) in &mut state.groups {
                let m = &mut group.membership;
                if !m.members.is_empty() {
                    let before = m.stored();
                    let gone = m.expire(
                        now_ms,
                        settings.session_timeout_ms,
                        settings.rebalance_timeout_ms,
                        partitions,
                    );
                    for member in gone {
                        tracing::info!(
                            group = id,
                            member,
                            "member removed: its session or rebalance timed out"
                        );
                    }
                    m.refresh_partitions(partitions);
                    let records = membership_records(id, &before, &m.stored());
                    if !records.is_empty() {
                        changed.push((id.clone(), records));
                    }
                    group.last_active_wall_ms = wall_ms;
                } else if !group.commits.is_empty()
                    && wall_ms.saturating_sub(group.last_active_wall_ms)
                        > i64::try_from(settings.offsets_retention_ms).unwrap_or(i64::MAX)
                {
                    expired.push(id.clone());
                }
            }
        }
        let mut writer = Some(writer);
        for (id, records) in changed {
            let w = match writer.take() {
                Some(w) => w,
                None => self.writer().await,
            };
            if let Err(e) = self.store_membership(broker, &id, &records, w).await {
                tracing::debug!(group = id, error = ?e, "storing expired members failed; the group restarts from what is stored");
            }
        }
        expired
    }
}

/// The records that take the stored membership `before` to `after`: the
/// members that changed, tombstones for those gone, and the group's epochs
/// (removed once it has no members).
pub fn membership_records(
    group: &str,
    before: &(GroupValue, BTreeMap<String, MemberValue>),
    after: &(GroupValue, BTreeMap<String, MemberValue>),
) -> Records {
    let mut records = Vec::new();
    for (id, m) in &after.1 {
        if before.1.get(id) != Some(m) {
            let key = Key::Member {
                group: group.to_string(),
                member_id: id.clone(),
            };
            records.push((key.encode(), Some(Value::Member(m.clone()).encode())));
        }
    }
    for id in before.1.keys().filter(|id| !after.1.contains_key(*id)) {
        let key = Key::Member {
            group: group.to_string(),
            member_id: id.clone(),
        };
        records.push((key.encode(), None));
    }
    let key = Key::Group {
        group: group.to_string(),
    };
    if after.1.is_empty() {
        if !before.1.is_empty() {
            records.push((key.encode(), None));
        }
    } else if after.0 != before.0 {
        records.push((key.encode(), Some(Value::Group(after.0).encode())));
    }
    records
}

/// The code a coordinator answers with when its write failed: a lost
/// leadership is a moved coordinator.
fn coordinator_error(e: ErrorCode) -> ErrorCode {
    match e {
        ErrorCode::NotLeader => ErrorCode::NotCoordinator,
        e => e,
    }
}
