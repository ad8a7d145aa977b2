//! What the Raft thread shows the rest of the broker, and how a round's
//! events reach it.
//!
//! [`Published`] is all that other threads read of the thread's state: the
//! image, the controller's leader, the open replicas, the status report and
//! the stopped groups. Only the Raft thread changes what it holds; readers
//! take short locks or borrow watch channels and never wait for the thread
//! (a status request only raises a flag the next tick answers). `publish`
//! hands a round's [`Event`]s to each [`Partition`], applies the
//! controller's newly committed entries and stops replicas whose storage
//! failed. The image is published, and the answers to metadata commands
//! sent, only once no replica it assigns here is left to open
//! (`answer_held`): a client told its topic was created finds it in the
//! next metadata it asks for, with its replicas behind it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rill_replication::{BrokerId, Event, GroupId, GroupStatus};
use tokio::sync::watch;

use super::{NotController, RaftLoop, STATUS_WAIT_MS};
use crate::metadata::ClusterImage;
use crate::partition::Partition;

/// What the rest of the broker reads of the Raft thread's state.
#[derive(Debug)]
pub struct Published {
    /// The cluster metadata as applied here.
    pub image: watch::Sender<Arc<ClusterImage>>,
    /// The controller group's leader as known here.
    pub controller: watch::Sender<Option<BrokerId>>,
    /// The partition replicas open here, by group. Guards the map only:
    /// lookups, inserts and removals.
    pub partitions: RwLock<BTreeMap<GroupId, Arc<Partition>>>,
    /// Every group's replication state, as of the last tick at which
    /// someone asked for it: however many requests ask, the Raft thread
    /// computes it at most once a tick, never per request.
    pub status: watch::Sender<Arc<StatusReport>>,
    /// Whether someone waits for a fresher [`Published::status`].
    pub status_wanted: AtomicBool,
    /// The last controller leader known here (0 before any): a change
    /// counts only from one leader to another, not through "none".
    pub last_controller: std::sync::atomic::AtomicU64,
    /// Groups whose replica here stopped after a storage failure and is
    /// not open (a reopen pending or failed): their clients are answered
    /// `StorageError` rather than sent to another broker.
    pub stopped: RwLock<std::collections::BTreeSet<GroupId>>,
}

impl Published {
    /// Whether `group`'s replica here stopped after a storage failure.
    pub fn is_stopped(&self, group: GroupId) -> bool {
        self.stopped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&group)
    }

    pub(super) fn set_stopped(&self, group: GroupId, stopped: bool) {
        let mut set = self.stopped.write().unwrap_or_else(|p| p.into_inner());
        if stopped {
            set.insert(group);
        } else {
            set.remove(&group);
        }
    }

    /// Every group's replication state, at most about a tick old: asks the
    /// Raft thread for the next tick's report and waits for it (at most
    /// [`STATUS_WAIT_MS`]), else answers the last one.
    pub async fn fresh_status(&self) -> Arc<StatusReport> {
        let mut rx = self.status.subscribe();
        rx.mark_unchanged();
        self.status_wanted.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_millis(STATUS_WAIT_MS), rx.changed()).await;
        rx.borrow().clone()
    }

    /// The replica of `group` here, if any.
    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// Takes the replica of `group` out of what is published, if there.
    pub fn remove_partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
    }

    /// Every replica open here.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// A report of every group here.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    /// The controller's leader as known here.
    pub controller: Option<BrokerId>,
    /// Every group's state (the controller's included).
    pub groups: Vec<GroupStatus>,
}

impl RaftLoop {
    /// Publishes the image and sends the held answers, once every replica
    /// the image assigns here is open.
    pub(super) fn answer_held(&mut self) {
        // Published before anyone hears the outcome: a client that created
        // a topic finds it in the next metadata it asks for.
        self.published
            .image
            .send_replace(Arc::new(self.image.clone()));
        let leader = self.node.leader(GroupId::CONTROLLER);
        for (reply, outcome) in self.held_answers.drain(..) {
            let _ = reply.send(outcome.ok_or(NotController { leader }));
        }
    }

    pub(super) fn publish(&mut self, events: Vec<Event>) {
        let mut controller_commit = None;
        for e in events {
            match e {
                Event::Committed { group, index, .. } if group == GroupId::CONTROLLER => {
                    controller_commit = Some(index);
                }
                Event::RoleChanged {
                    group,
                    leader,
                    is_leader,
                    ..
                } if group == GroupId::CONTROLLER => {
                    if !is_leader {
                        // Proposals of a leadership that ended may never
                        // be applied: their proposers retry elsewhere.
                        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
                            let _ = reply.send(Err(NotController { leader }));
                        }
                    }
                    let before = self.published.controller.send_replace(leader);
                    if is_leader && before != leader {
                        crate::metrics::election_won(true);
                    }
                    if let Some(l) = leader {
                        let last = self
                            .published
                            .last_controller
                            .swap(l.get(), std::sync::atomic::Ordering::Relaxed);
                        if last != 0 && last != l.get() {
                            crate::metrics::leader_changed(true);
                        }
                    }
                    tracing::info!(leader = ?leader.map(|l| l.get()), "controller leader changed");
                }
                Event::Appended { group, index, term } => {
                    if let Some(p) = self.published.partition(group) {
                        p.set_appended(term, index);
                    }
                }
                Event::Committed {
                    group,
                    index,
                    high_watermark,
                } => {
                    // Wakes the fetches parked on this partition only.
                    if let Some(p) = self.published.partition(group) {
                        p.set_committed(index, high_watermark);
                    }
                }
                Event::RoleChanged {
                    group,
                    leader,
                    is_leader,
                    term,
                } => {
                    if let Some(p) = self.published.partition(group) {
                        p.set_leader(leader, is_leader, term);
                    }
                }
                Event::Restored {
                    group,
                    index,
                    next_offset,
                } => {
                    tracing::info!(%group, %index, %next_offset, "replica restored from its leader's snapshot");
                    if let Some(p) = self.published.partition(group) {
                        p.refresh_log_start();
                    }
                }
                Event::Failed { group, reason, .. } if group == GroupId::CONTROLLER => {
                    // Without its replica of the controller a broker can
                    // apply no metadata: it stops, as Kafka's does when its
                    // metadata log directory fails, rather than serve on
                    // with a frozen image.
                    tracing::error!(
                        "the controller's replica failed: {reason}; stopping the broker"
                    );
                    crate::logwriter::flush();
                    std::process::exit(super::REPLICATION_STOPPED_EXIT_CODE);
                }
                // Stopped here already: a reopen that failed reports its
                // own error, and the group it dropped reports it again.
                Event::Failed { group, .. } if self.failed.contains_key(&group) => {}
                Event::Failed {
                    group,
                    reason,
                    damaged,
                } => {
                    // A write or sync failed (ENOSPC, EIO): reopened after
                    // a backoff, from what its files hold, unless they are
                    // damaged: found so by the read that failed, or cut
                    // short under it (recovery would take that for a torn
                    // tail and quietly lose what was cut).
                    let mut retry = !damaged;
                    match self.published.partition(group) {
                        Some(p) => {
                            tracing::error!("replica {}/{} failed: {reason}", p.topic, p.index);
                            if let Err(e) = p.verify_files().map_err(|e| e.is_damage().then_some(e))
                                && let Some(e) = e
                            {
                                tracing::error!(
                                    "replica {}/{} is not reopened: {e}",
                                    p.topic,
                                    p.index
                                );
                                retry = false;
                            }
                        }
                        None => tracing::error!(%group, %reason, "replica stopped"),
                    }
                    self.stop_replica(group, retry);
                }
            }
        }
        if let Some(index) = controller_commit
            && let Err(e) = self.apply_controller(index)
        {
            tracing::error!(error = %e, "applying the controller's log failed");
        }
    }
}
