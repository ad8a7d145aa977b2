//! How the rest of the broker reaches the Raft thread: the [`Command`]s it
//! takes, the [`RaftHandle`] that queues them, and the two tasks that feed
//! it, the ticker ([`tick`]) and the inbound forwarder
//! ([`forward_inbound`]).
//!
//! Commands queue in one bounded channel (`COMMANDS_QUEUED_MAX`), handled
//! in the order they were queued: proposals queued one after another
//! through a handle are proposed in that order. At most one
//! [`Command::Tick`] waits in it: the ticker marks a tick queued, and the
//! Raft thread clears the mark when it takes the tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rill_replication::transport::Inbound;
use rill_replication::{CheckedBatch, GroupId, Proposed, ReplicationError, SyncedRound};
use tokio::sync::{mpsc, oneshot};

use super::{NotController, TICK_MS};
use crate::metadata::{MetadataCommand, Outcome};

/// A request to the Raft thread.
#[derive(Debug)]
pub enum Command {
    /// Propose batches as the group's leader, in order.
    Propose {
        /// The group.
        group: GroupId,
        /// Whole, checked batches.
        batches: Vec<CheckedBatch>,
        /// Where each lands, or why it could not be proposed.
        reply: oneshot::Sender<Proposal>,
        /// When it was queued: the Raft thread measures the wait.
        queued_at: std::time::Instant,
    },
    /// Propose a metadata command (on the controller's leader only); the
    /// reply comes once it is applied here.
    Metadata {
        /// The command.
        command: MetadataCommand,
        /// Its outcome.
        reply: oneshot::Sender<Result<Outcome, NotController>>,
    },
    /// Messages from a peer.
    Step(Inbound),
    /// One tick for every group.
    Tick,
    /// Apply retention to every group.
    Retention,
    /// Where tombstones of a group's log may be compacted away: on its
    /// leader, below the Raft index every replica holds; elsewhere none.
    HeldByEveryReplica {
        /// The group.
        group: GroupId,
        /// The index, `None` off the leader.
        reply: oneshot::Sender<Option<rill_storage::RaftIndex>>,
    },
    /// Remove the files of a segment a compaction pass merged away (sent
    /// by the compactor thread, one at a time, syncing the directory
    /// between).
    RemoveMergedAway {
        /// The group.
        group: GroupId,
        /// The segment.
        merged: rill_storage::MergedAway,
        /// Whether it was removed.
        reply: oneshot::Sender<Result<bool, ReplicationError>>,
    },
    /// Install a compaction pass's files in a group's log (sent by the
    /// compactor thread, which syncs the directory after).
    InstallCleaned {
        /// The group.
        group: GroupId,
        /// The pass's files.
        cleaned: rill_storage::Cleaned,
        /// What was installed.
        reply: oneshot::Sender<Result<rill_storage::InstallOutcome, ReplicationError>>,
    },
    /// Hand leaderships over, sync every log, and stop the thread.
    Stop {
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// A deferred sync round ran (sent by the sync thread only).
    Synced(SyncedRound),
    /// Retention's sync round of state syncs ran (sent by the retention
    /// sync thread only).
    RetentionSynced(SyncedRound),
}

/// The handle the rest of the broker uses to reach the Raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    commands: mpsc::Sender<Command>,
    /// Whether a [`Command::Tick`] is queued and not yet handled; see
    /// [`tick`].
    tick_queued: Arc<AtomicBool>,
}

/// Where a queued proposal's outcome arrives.
pub type ProposalOutcome = oneshot::Receiver<Proposal>;

/// What the Raft thread made of a queued proposal.
#[derive(Debug)]
pub struct Proposal {
    /// Where each batch landed, or why the rest were not proposed.
    pub result: Result<Vec<Proposed>, ReplicationError>,
    /// When the Raft thread proposed them: the produce path measures the
    /// Raft commit from here.
    pub proposed_at: std::time::Instant,
}

/// The Raft thread has stopped (the broker is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the replication thread has stopped")]
pub struct Stopped;

impl RaftHandle {
    /// A handle queueing on `commands`, sharing `tick_queued` with the Raft
    /// thread, which clears it when it takes a tick.
    pub(super) fn new(commands: mpsc::Sender<Command>, tick_queued: Arc<AtomicBool>) -> Self {
        Self {
            commands,
            tick_queued,
        }
    }

    /// Queues a command, waiting while the queue is full.
    pub async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    /// Queues the command `ask` makes with a reply channel and waits for
    /// the reply, blocking: for the compactor's OS thread, never a tokio
    /// task.
    fn call_blocking<T>(
        &self,
        ask: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .blocking_send(ask(reply))
            .map_err(|_| Stopped)?;
        rx.blocking_recv().map_err(|_| Stopped)
    }

    /// The Raft index every replica of `group` holds the log below, when
    /// this broker leads it (see [`Command::HeldByEveryReplica`]),
    /// blocking.
    pub fn held_by_every_replica_blocking(
        &self,
        group: GroupId,
    ) -> Result<Option<rill_storage::RaftIndex>, Stopped> {
        self.call_blocking(|reply| Command::HeldByEveryReplica { group, reply })
    }

    /// Removes a segment merged away (see [`Command::RemoveMergedAway`]),
    /// blocking.
    pub fn remove_merged_away_blocking(
        &self,
        group: GroupId,
        merged: rill_storage::MergedAway,
    ) -> Result<Result<bool, ReplicationError>, Stopped> {
        self.call_blocking(|reply| Command::RemoveMergedAway {
            group,
            merged,
            reply,
        })
    }

    /// Installs a compaction pass's files in `group`'s log (see
    /// [`Command::InstallCleaned`]), blocking.
    pub fn install_cleaned_blocking(
        &self,
        group: GroupId,
        cleaned: rill_storage::Cleaned,
    ) -> Result<Result<rill_storage::InstallOutcome, ReplicationError>, Stopped> {
        self.call_blocking(|reply| Command::InstallCleaned {
            group,
            cleaned,
            reply,
        })
    }

    /// Queues a proposal (see [`Command::Propose`]) and returns where its
    /// outcome will arrive: proposals queued one after another are
    /// proposed in that order, and a caller may queue several before
    /// waiting for any.
    pub async fn propose_queued(
        &self,
        group: GroupId,
        batches: Vec<CheckedBatch>,
    ) -> Result<ProposalOutcome, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Propose {
            group,
            batches,
            reply,
            queued_at: std::time::Instant::now(),
        })
        .await?;
        Ok(rx)
    }

    /// Proposes a metadata command; see [`Command::Metadata`].
    pub async fn metadata(
        &self,
        command: MetadataCommand,
    ) -> Result<Result<Outcome, NotController>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Metadata { command, reply }).await?;
        rx.await.map_err(|_| Stopped)
    }

    /// Hands leaderships over, syncs every log and stops the thread.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Sends a tick every [`TICK_MS`] until the Raft thread stops.
///
/// At most one tick waits in the queue: ticks the Raft thread could not take
/// in time are dropped, not delivered in a burst (as etcd's ticker drops
/// them). A thread held up for seconds (a disk stall, starved CPU) would
/// otherwise come back to a run of ticks with no messages between them, and
/// a leader would count its followers' silence over time in which it sent
/// them nothing: check-quorum deposed leaders right after each such stall.
pub async fn tick(handle: RaftHandle) {
    let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        if handle.tick_queued.swap(true, Ordering::AcqRel) {
            continue;
        }
        if handle.send(Command::Tick).await.is_err() {
            return;
        }
    }
}

/// Hands messages from peers to the Raft thread.
pub async fn forward_inbound(mut inbound: mpsc::Receiver<Inbound>, handle: RaftHandle) {
    while let Some(i) = inbound.recv().await {
        if handle.send(Command::Step(i)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_the_raft_thread_has_not_taken_are_dropped_not_queued() {
        let (tx, mut rx) = mpsc::channel(64);
        let tick_queued = Arc::new(AtomicBool::new(false));
        let handle = RaftHandle {
            commands: tx,
            tick_queued: Arc::clone(&tick_queued),
        };
        let ticker = tokio::spawn(tick(handle));
        // Five tick periods with nobody taking ticks: one waits, not five.
        tokio::time::sleep(Duration::from_millis(5 * TICK_MS)).await;
        assert!(matches!(rx.try_recv(), Ok(Command::Tick)));
        assert!(rx.try_recv().is_err(), "missed ticks are not queued");
        // Taken (as the Raft thread marks it), the next tick comes.
        tick_queued.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(3 * TICK_MS)).await;
        assert!(matches!(rx.try_recv(), Ok(Command::Tick)));
        assert!(rx.try_recv().is_err());
        ticker.abort();
    }
}
