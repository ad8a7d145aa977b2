//! One `__consumer_offsets` partition replica as its coordinator sees it:
//! the groups it holds, rebuilt from its log by a tailing task, and the
//! writes that go through Raft into it.
//!
//! Invariants: the committed offsets and stored memberships in memory are
//! exactly the log's records below `applied`, applied in log order (the
//! newest record per key wins; a tombstone removes); a write is
//! acknowledged only once it is committed and applied here, so an
//! OffsetFetch after an OffsetCommit's answer sees it. The live membership
//! a leader changes is valid only for the leadership term it was built in
//! (`members_term`): a new term starts from the stored one. Membership
//! changes are proposed in the order they were made (`writer`), so the log
//! ends with the latest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use rill_client::protocol::ErrorCode;
use rill_replication::Proposed;
use rill_storage::{BatchBuilder, Batches, NewRecord, Term};
use tokio::sync::watch;

use super::assignor::TopicPartition;
use super::group::Membership;
use super::record::{self, GroupValue, Key, MemberValue, Value};
use super::{COMMIT_TIMEOUT_MS, GroupSettings};
use crate::handlers::produce::{proposal_outcome, wait_acks};
use crate::partition::Partition;
use crate::state::Broker;

/// How often a request waiting for its coordinator to load looks again,
/// ms.
const LOAD_RECHECK_MS: u64 = 20;
/// Most bytes the tailer reads from the log at a time.
const TAIL_READ_BYTES: u64 = 1 << 20;
/// Most bytes of one batch the coordinator writes: well under any topic's
/// smallest `max.message.bytes`.
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// Milliseconds since the Unix epoch on this broker's clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One group on its coordinator.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Its committed offsets.
    pub commits: BTreeMap<TopicPartition, record::CommitValue>,
    /// Its members as the leader changes them (this term).
    pub membership: Membership,
    /// Its epochs as the log stores them.
    stored_epochs: GroupValue,
    /// Its members as the log stores them.
    stored_members: BTreeMap<String, MemberValue>,
    /// When it last had members or a commit, ms since the epoch: its
    /// commits expire this long after it went empty.
    pub last_active_wall_ms: i64,
}

impl Group {
    fn is_unused(&self) -> bool {
        self.commits.is_empty()
            && self.membership.members.is_empty()
            && self.stored_members.is_empty()
            && self.stored_epochs == GroupValue::default()
    }
}

/// The groups of one offsets partition.
#[derive(Debug, Default)]
pub struct ShardState {
    /// By group id.
    pub groups: BTreeMap<String, Group>,
    /// The leadership term the memberships were built in.
    members_term: Term,
}

impl ShardState {
    /// Applies one record of the log.
    fn apply(&mut self, key: Key, value: Option<Value>) {
        let id = key.group().to_string();
        let group = self.groups.entry(id.clone()).or_default();
        match (key, value) {
            (Key::Commit(k), Some(Value::Commit(v))) => {
                group.last_active_wall_ms = group.last_active_wall_ms.max(v.commit_timestamp_ms);
                group.commits.insert((k.topic, k.partition), v);
            }
            (Key::Commit(k), None) => {
                group.commits.remove(&(k.topic, k.partition));
            }
            (Key::Member { member_id, .. }, Some(Value::Member(m))) => {
                group.stored_members.insert(member_id, m);
            }
            (Key::Member { member_id, .. }, None) => {
                group.stored_members.remove(&member_id);
            }
            (Key::Group { .. }, Some(Value::Group(g))) => group.stored_epochs = g,
            (Key::Group { .. }, None) => group.stored_epochs = GroupValue::default(),
            (key, Some(_)) => {
                tracing::warn!(
                    ?key,
                    "an offsets record whose value is not of its key's kind"
                );
            }
        }
        if group.is_unused() {
            self.groups.remove(&id);
        }
    }

    /// Drops groups that hold nothing any more (a member-less join that
    /// never committed).
    pub fn forget_unused(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(Group::is_unused) {
            self.groups.remove(group);
        }
    }
}

/// One offsets partition replica's groups.
#[derive(Debug)]
pub struct Shard {
    partition: Arc<Partition>,
    /// Guards the groups; held only to read or change them in memory,
    /// never across I/O or an await.
    state: Mutex<ShardState>,
    /// Offsets below this are applied to `state`.
    applied: watch::Sender<u64>,
    /// Held from a membership change until its records are proposed, so
    /// they reach the log in the order the changes were made.
    pub writer: tokio::sync::Mutex<()>,
    /// The coordinator's session clock.
    clock: std::time::Instant,
}

impl Shard {
    /// A shard over `partition`, its tailer started.
    pub(super) fn start(partition: Arc<Partition>, clock: std::time::Instant) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            applied: watch::Sender::new(partition.log_start_offset()),
            partition,
            state: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
            clock,
        });
        tokio::spawn(tail(Arc::downgrade(&shard)));
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

    /// Whether it leads and has applied everything committed.
    pub fn is_loaded(&self) -> bool {
        self.partition.not_leader().is_none()
            && self.partition.is_high_watermark_current()
            && *self.applied.borrow() >= self.partition.high_watermark()
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

    /// The groups, for this leadership term: memberships built in an
    /// earlier term are dropped first.
    pub fn state(&self) -> MutexGuard<'_, ShardState> {
        let term = self.partition.leadership().term;
        let mut state = self.state.lock().expect("shard state poisoned");
        if state.members_term != term {
            state.members_term = term;
            let now_ms = self.clock.elapsed().as_millis() as u64;
            for group in state.groups.values_mut() {
                group.membership =
                    Membership::restore(group.stored_epochs, &group.stored_members, now_ms);
            }
        }
        state
    }

    /// Writes `records` (key, value or tombstone) through Raft, and waits
    /// until they are committed and applied here.
    pub async fn write(
        &self,
        broker: &Broker,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<(), ErrorCode> {
        match self.propose(broker, records).await? {
            Some(last) => self.committed(&last).await,
            None => Ok(()),
        }
    }

    /// As [`Shard::write`], letting `writer` (the shard's [`Shard::writer`])
    /// go once the records are proposed: membership changes reach the log
    /// in the order they were made.
    pub async fn write_in_order(
        &self,
        broker: &Broker,
        records: &[(Bytes, Option<Bytes>)],
        writer: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), ErrorCode> {
        let proposed = self.propose(broker, records).await;
        drop(writer);
        match proposed? {
            Some(last) => self.committed(&last).await,
            None => Ok(()),
        }
    }

    /// Proposes `records` in as few batches as fit; the last entry
    /// proposed, or `None` for no records.
    async fn propose(
        &self,
        broker: &Broker,
        records: &[(Bytes, Option<Bytes>)],
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
        let (_, last) = proposal_outcome(&partition.topic, partition, outcome)
            .await
            .map_err(|(e, _)| coordinator_error(e))?;
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

    /// Removes every commit of `group` (all partitions, or those of
    /// `topics` only) with tombstones. `Ok(false)`, writing nothing, when
    /// the group has members.
    pub async fn delete_commits(
        &self,
        broker: &Broker,
        group: &str,
        topics: Option<&BTreeSet<String>>,
    ) -> Result<bool, ErrorCode> {
        let tombstones: Vec<(Bytes, Option<Bytes>)> = {
            let state = self.state();
            let Some(g) = state.groups.get(group) else {
                return Ok(true);
            };
            if !g.membership.members.is_empty() {
                return Ok(false);
            }
            g.commits
                .keys()
                .filter(|(t, _)| topics.is_none_or(|only| only.contains(t)))
                .map(|(topic, partition)| {
                    let key = record::CommitKey {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (key.encode(), None)
                })
                .collect()
        };
        self.write(broker, &tombstones).await?;
        Ok(true)
    }

    /// One sweep at `now_ms` (session clock) and `wall_ms`: expires
    /// members and follows topics' partition counts, storing what changed,
    /// and returns the groups whose commits are past the offsets retention.
    pub(super) async fn sweep(
        &self,
        broker: &Broker,
        now_ms: u64,
        wall_ms: i64,
        settings: &GroupSettings,
        partitions: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let writer = self.writer.lock().await;
        let mut expired = Vec::new();
        let mut records = Vec::new();
        {
            let mut state = self.state();
            for (id, group) in &mut state.groups {
                let m = &mut group.membership;
                if !m.members.is_empty() {
                    let before = m.stored();
                    for gone in m.expire(now_ms, settings.session_timeout_ms, partitions) {
                        tracing::info!(group = id, member = gone, "member's session timed out");
                    }
                    m.refresh_partitions(partitions);
                    records.extend(membership_records(id, &before, &m.stored()));
                    group.last_active_wall_ms = wall_ms;
                } else if !group.commits.is_empty()
                    && wall_ms.saturating_sub(group.last_active_wall_ms)
                        > settings.offsets_retention_ms as i64
                {
                    expired.push(id.clone());
                }
            }
        }
        if let Err(e) = self.write_in_order(broker, &records, writer).await {
            tracing::debug!(error = ?e, "storing expired members failed; stored with the next change");
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
) -> Vec<(Bytes, Option<Bytes>)> {
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

/// Reads the shard's log into its state as the high watermark moves, until
/// the shard is dropped or its replica closes.
async fn tail(shard: Weak<Shard>) {
    let Some(mut next) = shard.upgrade().map(|s| s.partition.log_start_offset()) else {
        return;
    };
    loop {
        // Only the watch is held across the wait, never the shard or its
        // replica: once both are dropped the watch resolves and this ends.
        let Some(s) = shard.upgrade() else {
            return;
        };
        let partition = &s.partition;
        // Taken before reading, so a commit after the read wakes the wait.
        let mut watch = partition.watch();
        let caught_up = match partition.read(next, TAIL_READ_BYTES) {
            Ok((chunks, hw, start)) => {
                if next < start {
                    // Retention took records not yet read: nothing sets it
                    // on this topic, but a log must never be read past a
                    // hole silently.
                    tracing::warn!(
                        from = next,
                        to = start,
                        "offsets log starts past what was applied"
                    );
                    next = start;
                }
                for chunk in chunks {
                    next = apply_chunk(&s, chunk, next);
                }
                s.applied.send_if_modified(|a| {
                    let moved = *a != next;
                    *a = next;
                    moved
                });
                next >= hw
            }
            Err(ErrorCode::OffsetOutOfRange) => {
                next = partition.log_start_offset();
                false
            }
            Err(_) => true,
        };
        let failed = partition.is_failed();
        drop(s);
        if caught_up {
            if failed {
                return;
            }
            watch.changed().await;
        }
    }
}

/// Applies the records of one read chunk from offset `next` on; returns
/// the offset after the last batch applied.
fn apply_chunk(shard: &Shard, chunk: Bytes, mut next: u64) -> u64 {
    let mut state = shard.state.lock().expect("shard state poisoned");
    for batch in Batches::new(chunk, usize::MAX) {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable batch in the offsets log");
                break;
            }
        };
        let batch_next = batch.header().next_offset().get();
        if batch_next <= next || batch.header().is_control() {
            next = next.max(batch_next);
            continue;
        }
        for r in batch.records() {
            match r {
                Ok(r) if r.offset.get() >= next => match record::decode(r.key, r.value) {
                    Ok((key, value)) => state.apply(key, value),
                    Err(e) => {
                        tracing::warn!(offset = r.offset.get(), error = %e, "skipped an offsets record")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable record in the offsets log");
                    break;
                }
            }
        }
        next = batch_next;
    }
    next
}
