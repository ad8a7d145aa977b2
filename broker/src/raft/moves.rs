//! Partition moves from this broker's side: for each moving partition led
//! here, the next step ([`crate::reassignment::next_step`]) taken every
//! [`MOVE_TICKS`] on this thread, where the group's state is at hand.
//! Progress the controller must record goes to it as a metadata command:
//! proposed here when this broker leads the controller, sent to its leader
//! over the authenticated peer link otherwise, and sent again at most once
//! per [`TELL_AGAIN_TICKS`] until the image shows it (a command lost on
//! the way is sent again; one applied twice changes nothing).

use bytes::Bytes;
use rill_replication::{BrokerId, GroupId};
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::metadata::MetadataCommand;
use crate::reassignment::{Step, next_step};

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
