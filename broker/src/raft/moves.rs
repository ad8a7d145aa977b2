//! Partition moves from this broker's side: for each moving partition led
//! here, the next step ([`crate::reassignment::next_step`]) taken every
//! [`MOVE_TICKS`] on this thread, where the group's state is at hand; and
//! on the controller's leader, the controller group's own voters following
//! the brokers removed and added.
//! Progress the controller must record goes to it as a metadata command:
//! proposed here when this broker leads the controller, sent to its leader
//! over the authenticated peer link otherwise, and sent again at most once
//! per [`TELL_AGAIN_TICKS`] until the image shows it (a command lost on
//! the way is sent again; one applied twice changes nothing).

use std::collections::BTreeMap;

use bytes::Bytes;
use rill_replication::{BrokerId, GroupId};
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::metadata::MetadataCommand;
use crate::reassignment::{Seed, Step, next_step};

/// Ticks between two steps of the moves led here.
pub const MOVE_TICKS: u64 = 2;
/// Ticks before the same progress is sent to the controller again.
pub const TELL_AGAIN_TICKS: u64 = 10;

impl RaftLoop {
    /// Takes the next step of every move whose partition this broker leads.
    pub(super) fn drive_moves(&mut self) {
        let me = self.me();
        let moving: Vec<_> = self
            .image
            .topics
            .values()
            .flat_map(|t| {
                t.moving
                    .iter()
                    .map(move |(p, m)| (t.name.clone(), *p, t.group(*p), m.clone()))
            })
            .filter(|(_, _, g, _)| self.node.leader(*g) == Some(me))
            .collect();
        self.told
            .retain(|g, _| moving.iter().any(|(_, _, m, _)| m == g));
        for (name, partition, group, m) in moving {
            let Some(status) = self.node.status(group) else {
                continue;
            };
            match next_step(me, &m.target, &m.seeds, &status) {
                Step::Wait => {}
                Step::Change(change) => match self.node.propose_membership_change(group, &change) {
                    Ok(index) => tracing::info!(
                        topic = %name,
                        partition,
                        %index,
                        ?change,
                        "moving the partition: proposed a membership change"
                    ),
                    Err(e) => {
                        tracing::debug!(topic = %name, partition, error = %e, "moving the partition: a membership change must wait")
                    }
                },
                Step::HandOver(to) => {
                    tracing::info!(topic = %name, partition, %to, "moving the partition away from this broker: handing its leadership over first");
                    let _ = self.node.transfer_leader(group, to);
                }
                Step::Seed(broker, seed) => self.tell_controller(
                    group,
                    MetadataCommand::SeedReplica {
                        name,
                        partition,
                        broker,
                        seed,
                    },
                ),
                Step::Complete(origin) => self.tell_controller(
                    group,
                    MetadataCommand::CompleteReassignment {
                        name,
                        partition,
                        replicas: m.target.iter().map(|b| b.get()).collect(),
                        origin,
                    },
                ),
            }
        }
    }

    /// Moves the controller group's voters towards the brokers of the
    /// cluster: a broker removed from hosting replicas leaves the group
    /// once it holds none, one added back or new joins it (a learner
    /// first), by the same steps as a partition move, on the controller's
    /// leader. A new controller replica needs no seed: it opens from the
    /// cluster's first voters at index 0 (the first brokers' `--peers`, or
    /// what a joining broker was told, `crate::join`) and applies every
    /// change after.
    pub(super) fn drive_controller_membership(&mut self) {
        let me = self.me();
        if self.node.leader(GroupId::CONTROLLER) != Some(me) {
            return;
        }
        let nothing = crate::balance::holding_nothing(&self.image);
        let target: Vec<BrokerId> = self
            .image
            .voters
            .iter()
            .copied()
            .filter(|b| !(self.image.removed.contains(b) && nothing.contains(b)))
            .collect();
        let Some(status) = self.node.status(GroupId::CONTROLLER) else {
            return;
        };
        let m = &status.membership;
        let settled = !m.is_joint()
            && m.learners.is_empty()
            && m.voters.len() == target.len()
            && target.iter().all(|b| m.voters.contains(b));
        if settled || target.is_empty() {
            return;
        }
        let seeded: BTreeMap<BrokerId, Seed> = m
            .learners
            .iter()
            .map(|b| (*b, Seed::of(m, status.membership_index)))
            .collect();
        match next_step(me, &target, &seeded, &status) {
            Step::Change(change) => {
                match self
                    .node
                    .propose_membership_change(GroupId::CONTROLLER, &change)
                {
                    Ok(index) => tracing::info!(%index, ?change, "the controller's voters change"),
                    Err(e) => {
                        tracing::debug!(error = %e, "a change of the controller's voters must wait")
                    }
                }
            }
            Step::HandOver(to) => {
                tracing::info!(%to, "leaving the controller's voters: handing its leadership over first");
                let _ = self.node.transfer_leader(GroupId::CONTROLLER, to);
            }
            Step::Wait | Step::Seed(..) | Step::Complete(_) => {}
        }
    }

    /// Has the controller record a move's progress (see the module
    /// documentation).
    fn tell_controller(&mut self, group: GroupId, command: MetadataCommand) {
        if self
            .told
            .get(&group)
            .is_some_and(|(c, at)| *c == command && self.ticks < at + TELL_AGAIN_TICKS)
        {
            return;
        }
        self.told.insert(group, (command.clone(), self.ticks));
        match self.node.leader(GroupId::CONTROLLER) {
            Some(l) if l == self.me() => {
                // Nobody waits: the outcome shows in the image.
                let (reply, _) = oneshot::channel();
                self.propose_metadata(command, reply);
            }
            Some(l) => {
                let out = rill_replication::forward::forward_proposal(
                    self.me(),
                    l,
                    GroupId::CONTROLLER,
                    Bytes::from(command.encode()),
                );
                // Dropped when the link is full: sent again later.
                let _ = self.send(vec![out]);
            }
            None => {}
        }
    }

    /// Whether peer `from` may have the controller record `command`: a
    /// move's progress, from a broker among the partition's replicas or
    /// its target (one of them leads it).
    pub(super) fn may_record_for(&self, from: BrokerId, command: &MetadataCommand) -> bool {
        let (MetadataCommand::SeedReplica {
            name, partition, ..
        }
        | MetadataCommand::CompleteReassignment {
            name, partition, ..
        }) = command
        else {
            return false;
        };
        self.image.topics.get(name).is_some_and(|t| {
            t.replicas
                .get(*partition as usize)
                .is_some_and(|r| r.contains(&from))
                || t.moving
                    .get(partition)
                    .is_some_and(|m| m.target.contains(&from))
        })
    }
}
