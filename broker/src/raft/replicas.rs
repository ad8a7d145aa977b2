//! Replicas' lifecycle here: opened as the image places them (a move's
//! new replica from its seed), closed and removed with their topics or
//! once moved away, stopped when their storage fails, reopened after a
//! backoff.
//!
//! A stopped replica is reopened from its files alone: recovery trusts
//! nothing a failed write or sync left in memory. Damage (a hole, a file
//! cut short, a corrupt state file) is never retried, as reopening cannot
//! fix it and recovery could take a cut for a torn tail: it waits for an
//! operator. An I/O error is, after a wait that doubles while the failure
//! repeats. Meanwhile the replica stays published, marked failed, so its
//! clients are told of a storage error rather than sent to another broker.
//! Opening creates or recovers files on the Raft thread, which every
//! group's heartbeats wait for: once the broker runs, a pass opens replicas
//! for a bounded time and the loop comes back for the rest, and files are
//! checked for damage a few replicas a tick, never all at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_replication::state::Membership;
use rill_replication::{GroupId, ReplicaDir, ReplicationError};
use rill_storage::{RaftIndex, Term};

use super::{EAGER_CAMPAIGN_TICKS_MAX, RaftLoop};
use crate::metadata::TopicImage;
use crate::partition::{Partition, TimestampBounds};
use crate::reassignment::placed_here;
use crate::topics::partition_dir;

/// First wait before reopening a replica that an I/O error stopped.
const REOPEN_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to reopen a stopped replica; the wait
/// doubles from [`REOPEN_BACKOFF_FIRST`] with every failure in a row.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Replicas whose segment files' lengths are checked (`fstat`) at each
/// tick, in turn: a file cut short under an idle replica stops it before
/// Raft (which treats a failed read of its log as fatal) or a reader meets
/// the damage, without a pass over thousands of replicas holding up a tick.
const VERIFY_PER_TICK: usize = 64;

/// Whether opening a replica failed on damaged files (a hole in its log, a
/// corrupt state file), which reopening cannot fix.
fn open_error_is_damage(e: &ReplicationError) -> bool {
    match e {
        ReplicationError::Storage(e) => e.is_damage(),
        ReplicationError::CorruptState { .. } => true,
        _ => false,
    }
}

/// The wait before reopening a replica stopped at `now`, given the wait
/// before its last reopening and when it stopped then: doubled (up to
/// [`REOPEN_BACKOFF_MAX`]) when it failed again within that wait plus the
/// longest one after it was due, as the failure has not gone away;
/// [`REOPEN_BACKOFF_FIRST`] otherwise.
fn reopen_backoff(last: Option<(Duration, Instant)>, now: Instant) -> Duration {
    match last {
        Some((wait, at)) if now.saturating_duration_since(at) <= wait + REOPEN_BACKOFF_MAX => {
            (wait * 2).min(REOPEN_BACKOFF_MAX)
        }
        _ => REOPEN_BACKOFF_FIRST,
    }
}

impl RaftLoop {
    /// Opens the replicas the image assigns here; closes and removes those
    /// of topics no longer in it. Opening one creates or recovers its files
    /// on this thread, which every group's heartbeats wait for: once the
    /// broker runs, a pass stops opening after [`Self::open_pass_ms_max`]
    /// and the loop calls again after its next round ([`Self::reconciling`]).
    /// A pass that leaves nothing to open publishes the image and answers
    /// the commands applied meanwhile.
    pub(super) fn reconcile(&mut self) {
        let me = self.me();
        // One copy of the image per pass (opening a replica needs `&mut
        // self`), never one of a topic per partition: with thousands of
        // partitions that was quadratic, and held the Raft thread for
        // minutes while a large topic's replicas opened.
        let image = self.image.clone();
        let wanted: Vec<(&TopicImage, u32, Membership, RaftIndex)> = image
            .topics
            .values()
            .flat_map(|t| {
                (0..t.partitions())
                    .filter_map(move |p| placed_here(t, p, me).map(|(m, index)| (t, p, m, index)))
            })
            .collect();
        let placed: BTreeSet<GroupId> = wanted.iter().map(|(t, p, ..)| t.group(*p)).collect();
        // Groups the node dropped since the last round are stopped first:
        // one not yet marked failed would look merely unopened, and be
        // opened again before its failure is heard of.
        let stopped = self.node.take_stopped();
        if !stopped.is_empty() {
            self.publish(stopped);
        }
        let started = Instant::now();
        let mut left = false;
        for (t, p, membership, membership_index) in wanted {
            let group = t.group(p);
            if self.node.has_group(group) {
                if self.configs.get(&group) != Some(&t.config) {
                    self.apply_config(t, group);
                }
                continue;
            }
            let retrying = match self.failed.get(&group) {
                None => false,
                Some(Some(at)) if *at <= started => true,
                Some(_) => continue,
            };
            if self
                .open_pass_ms_max
                .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms))
            {
                left = true;
                break;
            }
            if retrying {
                // The stopped replica's partition goes first: the new one
                // takes its place (its readers keep the old log's files).
                self.published.remove_partition(group);
            }
            match self.open(t, p, membership, membership_index) {
                Ok(()) if retrying => {
                    self.failed.remove(&group);
                    self.published.set_stopped(group, false);
                    tracing::info!("replica {}/{p} reopened", t.name);
                }
                Ok(()) => {}
                Err(e) => {
                    // Retried only after a backoff, as a replica whose
                    // storage failed: a pass retrying a slow failure first
                    // would never reach the replicas after it.
                    let retry = !open_error_is_damage(&e);
                    tracing::error!("replica {}/{p} failed: cannot open: {e}", t.name);
                    self.stop_replica(group, retry);
                }
            }
        }
        self.reconciling = left;
        if !self.deletions_durable(&placed) {
            if !self.reconciling {
                self.answer_held();
            }
            return;
        }
        // Stopped replicas no longer placed here: their directories go too.
        let gone: Vec<GroupId> = self
            .failed
            .keys()
            .copied()
            .filter(|g| *g != GroupId::CONTROLLER && !placed.contains(g))
            .collect();
        for group in gone {
            self.failed.remove(&group);
            self.published.set_stopped(group, false);
            self.backoffs.remove(&group);
            let removed = self.published.remove_partition(group);
            if let Some(p) = removed {
                let dir = p.dir().to_path_buf();
                if let Err(e) = self.janitor.remove_dir(&dir, p) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's replica");
                }
            }
        }
        let open: Vec<GroupId> = self
            .node
            .groups()
            .filter(|g| *g != GroupId::CONTROLLER)
            .collect();
        for group in open {
            if placed.contains(&group) {
                continue;
            }
            let started = Instant::now();
            let removed = self.published.remove_partition(group);
            // The replica's own hold on its log goes first, so that the
            // partition handed to the janitor is usually the last; a sync
            // in flight, a fetch or a queued send may outlast it (the
            // first comes back to the janitor too, see `RoundIo::release`).
            let _ = self.node.remove_group(group);
            self.configs.remove(&group);
            if let Some(p) = removed {
                p.set_failed();
                let (topic, index, dir) = (p.topic.clone(), p.index, p.dir().to_path_buf());
                if let Err(e) = self.janitor.remove_dir(&dir, p) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's replica");
                }
                tracing::info!(
                    %topic,
                    partition = index,
                    us = started.elapsed().as_micros() as u64,
                    "removed a replica no longer placed here (its topic deleted or its partition moved)"
                );
            }
        }
        if !self.reconciling {
            self.answer_held();
        }
    }

    /// Whether the replicas no longer `placed` here (their topic deleted,
    /// their partition moved away) may go: only once the controller's
    /// commit index that covers that change is durable. Saved without a
    /// sync, a power cut could take it back past the change; the broker
    /// would then replay its metadata without it and open the removed
    /// replicas again, empty, as voters that forgot their votes. `false`
    /// (and a retry at the next tick) while the controller's state has a
    /// sync in flight or cannot be saved.
    fn deletions_durable(&mut self, placed: &BTreeSet<GroupId>) -> bool {
        let deleted = |g: &GroupId| *g != GroupId::CONTROLLER && !placed.contains(g);
        let any = self.failed.keys().any(deleted) || self.node.groups().any(|g| deleted(&g));
        if !any {
            self.deletions_pending = false;
            return true;
        }
        match self.node.persist_state(GroupId::CONTROLLER) {
            Ok(true) => {
                self.deletions_pending = false;
                true
            }
            Ok(false) => {
                self.deletions_pending = true;
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "could not make the controller's commit durable; deleted replicas stay until it is");
                self.deletions_pending = true;
                false
            }
        }
    }

    /// Stops `group`'s replica after a storage failure (the node may have
    /// dropped it already) and schedules its reopening when `retry`. Its
    /// partition stays published, marked failed.
    pub(super) fn stop_replica(&mut self, group: GroupId, retry: bool) {
        let _ = self.node.remove_group(group);
        self.configs.remove(&group);
        self.eager.remove(&group);
        if let Some(p) = self.published.partition(group) {
            p.set_failed();
        }
        let now = Instant::now();
        let retry_at = retry.then(|| {
            let backoff = reopen_backoff(self.backoffs.get(&group).copied(), now);
            self.backoffs.insert(group, (backoff, now));
            match self.published.partition(group) {
                Some(p) => tracing::warn!(
                    "replica {}/{} will be reopened in {} ms",
                    p.topic,
                    p.index,
                    backoff.as_millis()
                ),
                None => tracing::warn!(%group, backoff_ms = backoff.as_millis() as u64, "replica will be reopened after a backoff"),
            }
            now + backoff
        });
        self.failed.insert(group, retry_at);
        self.published.set_stopped(group, true);
    }

    /// Checks the segment files of the next [`VERIFY_PER_TICK`] open
    /// replicas, and stops those cut short under them.
    pub(super) fn verify_some(&mut self) {
        let next: Vec<Arc<Partition>> = {
            let partitions = self
                .published
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let after = match self.verified_up_to {
                Some(g) => {
                    partitions.range((std::ops::Bound::Excluded(g), std::ops::Bound::Unbounded))
                }
                None => partitions.range(..),
            };
            after
                .take(VERIFY_PER_TICK)
                .map(|(_, p)| Arc::clone(p))
                .collect()
        };
        self.verified_up_to = next.last().map(|p| p.group);
        for p in next {
            if p.is_failed() {
                continue;
            }
            if let Err(e) = p.verify_files()
                && e.is_damage()
            {
                tracing::error!("replica {}/{} failed: {e}", p.topic, p.index);
                self.stop_replica(p.group, false);
            }
        }
    }

    /// Takes the stops partitions' reads asked for, and reopens the stopped
    /// replicas whose backoff is over.
    pub(super) fn stops_and_reopens(&mut self) {
        while let Ok(r) = self.stops_requested.try_recv() {
            if self.node.has_group(r.group) {
                tracing::debug!(group = %r.group, reason = %r.reason, "stopping a replica whose read failed");
                self.stop_replica(r.group, r.retry);
            }
        }
        let now = Instant::now();
        if !self.reconciling
            && self
                .failed
                .values()
                .any(|at| at.is_some_and(|at| at <= now))
        {
            self.reconcile();
        }
    }

    /// Pushes a topic's settings, changed live, to its open replica
    /// `group`: the log's retention and segment bounds, the timestamp
    /// bounds and `compression.type` its produces are checked against, and
    /// whether (and with which tombstone delay) it is compacted.
    fn apply_config(&mut self, t: &TopicImage, group: GroupId) {
        if let Err(e) = self.node.set_log_config(group, self.log_config(t)) {
            tracing::warn!(topic = %t.name, %group, error = %e, "could not apply the topic's new settings");
            return;
        }
        if let Some(partition) = self.published.partition(group) {
            partition.set_timestamps(self.timestamp_bounds(t));
            partition.set_compression(t.config.compression);
            partition.set_compaction(t.config.compaction());
        }
        tracing::info!(topic = %t.name, %group, "applied the topic's new settings");
        self.configs.insert(group, t.config.clone());
    }

    /// The storage settings of a topic's replicas here: the topic's, and
    /// this broker's producer expiry. No lock per log: the broker holds
    /// its data directory's.
    fn log_config(&self, t: &TopicImage) -> rill_storage::LogConfig {
        rill_storage::LogConfig {
            producer_expiration_ms: self.config.producer_id_expiration_ms,
            lock_dir: false,
            ..t.config.log_config()
        }
    }

    /// The bounds a topic's produces are checked against: its own, else
    /// this broker's.
    fn timestamp_bounds(&self, t: &TopicImage) -> TimestampBounds {
        TimestampBounds {
            after_max_ms: t
                .config
                .timestamp_after_max_ms
                .or(self.config.timestamps.after_max_ms),
            before_max_ms: t
                .config
                .timestamp_before_max_ms
                .or(self.config.timestamps.before_max_ms),
        }
    }

    /// Opens partition `p` of `t` here, a new replica starting from
    /// `membership` as of `membership_index` (see [`placed_here`]).
    fn open(
        &mut self,
        t: &TopicImage,
        p: u32,
        membership: Membership,
        membership_index: RaftIndex,
    ) -> Result<(), ReplicationError> {
        let group = t.group(p);
        let dir = partition_dir(&self.config.data_dir, &t.id, p);
        std::fs::create_dir_all(&dir)
            .map_err(ReplicationError::io("create replica directory", &dir))?;
        let log_config = self.log_config(t);
        let max_batch_bytes = log_config.max_batch_bytes;
        let opened = self.node.open_replica(ReplicaDir {
            group,
            dir: &dir,
            log_config,
            fsync: t.config.fsync,
            membership,
            membership_index,
        })?;
        let single_voter =
            opened.membership.voters == [self.me()] && opened.membership.voters_outgoing.is_empty();
        let status = self.node.status(group).expect("the group was just added");
        let partition = Arc::new(
            Partition::new(
                &t.name,
                p,
                group,
                dir,
                opened.log,
                t.config.fsync,
                max_batch_bytes,
                self.timestamp_bounds(t),
                status.high_watermark,
            )
            .reporting_stops_to(self.stop_requests.clone())
            .with_compression(t.config.compression)
            .with_compaction(t.config.compaction()),
        );
        self.published
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, partition);
        self.configs.insert(group, t.config.clone());
        if single_voter {
            // A one-voter group need not wait out an election timeout: it
            // leads at once, before its topic's creation is answered.
            self.node.campaign(group)?;
            if let Some(s) = self.node.status(group)
                && s.leader == Some(self.me())
                && let Some(p) = self.published.partition(group)
            {
                p.set_leader(s.leader, true, s.term);
            }
        } else if status.term == Term(0) && t.replicas[p as usize].first() == Some(&self.me()) {
            // A group that has never had a leader (just created): its
            // preferred leader campaigns now and at every tick until one
            // is elected (see `eager`). A replica of a rejoining broker
            // (its term 0 because its data went) starts no election: it
            // waits to hear from a leader and catch up, which is no failure
            // of the open.
            match self.node.campaign(group) {
                Ok(()) => {
                    self.eager
                        .insert(group, self.ticks + EAGER_CAMPAIGN_TICKS_MAX);
                }
                Err(ReplicationError::CatchingUp { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_backoff_doubles_from_one_second_to_a_minute_while_failures_repeat() {
        let t0 = Instant::now();
        let mut last = None;
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..9 {
            let wait = reopen_backoff(last, now);
            waits.push(wait.as_secs());
            last = Some((wait, now));
            // Reopened when due, and failed again at once.
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // A replica that then ran for longer than its wait plus a minute
        // starts over.
        let (wait, at) = last.unwrap();
        let later = at + wait + REOPEN_BACKOFF_MAX + Duration::from_secs(1);
        assert_eq!(reopen_backoff(last, later), REOPEN_BACKOFF_FIRST);
    }
}
