//! The compactor: one OS thread (`rill-compactor`) that keeps compacted
//! topics' partitions compacted (see `rill_storage::compaction`).
//!
//! Every `check_ms` it looks at each local replica (leader or follower:
//! each replica compacts its own log) of a topic whose `cleanup.policy`
//! holds `compact`, and runs a pass over it when one is due: the first
//! time this process sees it, when sealed segments below the high
//! watermark (and the local durable end) were added since its last pass
//! and make up at least the topic's `min.cleanable.dirty.ratio` of its
//! sealed bytes,
//! when a tombstone the last pass kept has outlived its delay, or when
//! every replica now holds one it kept for them (asked of the Raft thread:
//! only a leader removes tombstones, below the index every replica
//! holds). A failed pass is tried again a minute later, or at the next
//! sealed segment. A pass reads the published segments
//! and writes new files without the log's lock; the Raft thread, the only
//! writer of logs, installs them ([`RaftHandle::install_cleaned_blocking`],
//! renames only), and this thread then syncs the log's directory before
//! any later pass over it, which a tombstone's removal relies on, and has
//! the Raft thread remove the segments merged into a new file one at a
//! time, syncing the directory after each. Every
//! byte a pass reads or writes goes through one budget of
//! `bytes_per_sec`, so compaction never takes the disk from produces.
//!
//! Invariants: one pass at a time, broker-wide; a pass that fails leaves
//! the log as it was (its files are removed), and damage it finds stops
//! the replica as a read's would. The thread stops within one batch's
//! work once its stop channel is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rill_replication::GroupId;
use rill_storage::{CompactionSettings, IoBudget, Offset, RaftIndex};

use crate::config::CompactorSettings;
use crate::partition::Partition;
use crate::raft::{Published, RaftHandle};

/// What the last pass over a partition left.
#[derive(Debug, Clone, Copy)]
struct LastPass {
    /// Where the segments it looked at ended: a pass is due again once
    /// sealed segments reach past.
    pass_end: Offset,
    /// When a tombstone it kept may be removed.
    tombstone_due_ms: Option<i64>,
    /// The Raft index every replica must hold the log below before a
    /// tombstone it kept for them may be removed.
    waits_for_raft_index: Option<RaftIndex>,
}

/// How long after a failed pass the next is tried, whatever else happens
/// (a new sealed segment tries at once), ms.
const RETRY_AFTER_FAILURE_MS: i64 = 60_000;

/// The compactor thread's state. See the module documentation.
pub struct Compactor {
    raft: RaftHandle,
    published: Arc<Published>,
    settings: CompactorSettings,
    /// Disconnected when the broker stops.
    stop: Receiver<()>,
    passes: HashMap<GroupId, LastPass>,
}

impl Compactor {
    /// A compactor of `published`'s replicas, installing through `raft`,
    /// stopping once `stop`'s sender is dropped.
    pub fn new(
        raft: RaftHandle,
        published: Arc<Published>,
        settings: CompactorSettings,
        stop: Receiver<()>,
    ) -> Compactor {
        Compactor {
            raft,
            published,
            settings,
            stop,
            passes: HashMap::new(),
        }
    }

    /// Runs until stopped.
    pub fn run(mut self) {
        loop {
            match self
                .stop
                .recv_timeout(Duration::from_millis(self.settings.check_ms))
            {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if !self.check_all() {
                return;
            }
        }
    }

    /// Looks at every compacted replica and runs the passes due. `false`
    /// once stopped.
    fn check_all(&mut self) -> bool {
        let partitions = self.published.all_partitions();
        self.passes
            .retain(|g, _| partitions.iter().any(|p| p.group == *g));
        for p in partitions {
            let Some(policy) = p.compaction() else {
                self.passes.remove(&p.group);
                continue;
            };
            if p.is_failed() {
                continue;
            }
            let now = now_ms();
            let last_end = self.passes.get(&p.group).map(|l| l.pass_end);
            let cleanable = p.cleanable(last_end.unwrap_or(Offset(0)));
            let end = cleanable.end;
            // Kafka's min.cleanable.dirty.ratio: a pass rereads the whole
            // log, so it waits for enough new bytes to be worth it.
            let dirty_enough = cleanable.dirty_bytes.saturating_mul(1000)
                >= cleanable
                    .bytes
                    .saturating_mul(u64::from(policy.min_cleanable_dirty_permille));
            let held = || self.raft.held_by_every_replica_blocking(p.group);
            let due = match self.passes.get(&p.group) {
                None => end.get() > p.log_start_offset(),
                Some(last) => {
                    (end > last.pass_end && dirty_enough)
                        || last.tombstone_due_ms.is_some_and(|d| d <= now)
                        || match last.waits_for_raft_index {
                            Some(wait) => match held() {
                                Ok(held) => held.is_some_and(|h| h >= wait),
                                Err(_) => return false,
                            },
                            None => false,
                        }
                }
            };
            if !due {
                continue;
            }
            let Ok(held) = held() else {
                return false;
            };
            let settings = CompactionSettings {
                delete_retention_ms: policy.delete_retention_ms,
                key_map_bytes_max: self.settings.key_map_bytes_max,
                tombstones_below_raft_index: held.unwrap_or(RaftIndex(0)),
            };
            match self.pass(&p, &settings, now) {
                Ok(Some(last)) => {
                    self.passes.insert(p.group, last);
                }
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "compaction pass failed");
                    self.passes.insert(
                        p.group,
                        LastPass {
                            pass_end: end,
                            tombstone_due_ms: Some(now.saturating_add(RETRY_AFTER_FAILURE_MS)),
                            waits_for_raft_index: None,
                        },
                    );
                }
            }
        }
        true
    }

    /// One pass over `p`, installed and made durable. `Ok(None)` when the
    /// broker is stopping.
    fn pass(
        &self,
        p: &Partition,
        settings: &CompactionSettings,
        now_ms: i64,
    ) -> Result<Option<LastPass>, String> {
        let started = Instant::now();
        let mut budget = Budget {
            bytes_per_sec: self.settings.bytes_per_sec,
            started,
            spent: 0,
            stop: &self.stop,
        };
        let Some(cleaned) = p
            .compact(settings, now_ms, &mut budget)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let stats = cleaned.stats;
        if stats.segments_cleaned == 0 && stats.pass_end > stats.clean_end {
            tracing::warn!(topic = %p.topic, partition = p.index, key_map_bytes_max = settings.key_map_bytes_max, "compaction: the keys of the first segment do not fit the key map; nothing cleaned");
        }
        let last = LastPass {
            pass_end: stats.pass_end,
            tombstone_due_ms: stats.tombstone_due_ms,
            waits_for_raft_index: stats.tombstone_waits_for_raft_index,
        };
        if cleaned.is_empty() {
            return Ok(Some(last));
        }
        let outcome = match self.raft.install_cleaned_blocking(p.group, cleaned) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                // Renames done before the failure are made durable all the
                // same: a later pass may remove a tombstone on their
                // strength.
                rill_storage::sync_dir(p.dir()).map_err(|e| e.to_string())?;
                return Err(e.to_string());
            }
            Err(_) => return Ok(None),
        };
        if let Some(dir) = &outcome.dir_to_sync {
            rill_storage::sync_dir(dir).map_err(|e| e.to_string())?;
        }
        // Oldest first, each removal durable before the next: the log on
        // disk is always the new file, then the old segments left.
        for merged in outcome.merged_away.iter().cloned() {
            match self.raft.remove_merged_away_blocking(p.group, merged) {
                Ok(Ok(true)) => rill_storage::sync_dir(p.dir()).map_err(|e| e.to_string())?,
                Ok(Ok(false)) => break,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Ok(None),
            }
        }
        tracing::debug!(
            topic = %p.topic,
            partition = p.index,
            segments = stats.segments_cleaned,
            rewritten = stats.segments_rewritten,
            files = outcome.installed,
            merged_away = outcome.merged_away.len(),
            stale = outcome.stale,
            records_removed = stats.records_removed,
            tombstones_removed = stats.tombstones_removed,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted"
        );
        Ok(Some(last))
    }
}

/// A pass's pace: bytes read and written, at most `bytes_per_sec` on
/// average since the pass started; stops when the broker does.
struct Budget<'a> {
    bytes_per_sec: Option<u64>,
    started: Instant,
    spent: u64,
    stop: &'a Receiver<()>,
}

impl IoBudget for Budget<'_> {
    fn spend(&mut self, bytes: u64) -> bool {
        self.spent = self.spent.saturating_add(bytes);
        let wait = self.bytes_per_sec.and_then(|rate| {
            let due = Duration::from_secs_f64(self.spent as f64 / rate as f64);
            due.checked_sub(self.started.elapsed())
        });
        match wait {
            Some(wait) => matches!(self.stop.recv_timeout(wait), Err(RecvTimeoutError::Timeout)),
            None => matches!(self.stop.try_recv(), Err(TryRecvError::Empty)),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_paces_to_its_rate_and_stops_when_told() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut budget = Budget {
            bytes_per_sec: Some(1_000_000),
            started: Instant::now(),
            spent: 0,
            stop: &rx,
        };
        // 50 ms worth of bytes: the call waits about that long.
        assert!(budget.spend(50_000));
        assert!(budget.started.elapsed() >= Duration::from_millis(50));
        drop(tx);
        assert!(!budget.spend(1));
        let mut unlimited = Budget {
            bytes_per_sec: None,
            started: Instant::now(),
            spent: 0,
            stop: &rx,
        };
        assert!(!unlimited.spend(u64::MAX), "stopped");
    }
}
