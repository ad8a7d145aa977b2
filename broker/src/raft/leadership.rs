//! Who leads what, from this broker's side: leaderships handed over before
//! it stops and handed back to preferred leaders, new partitions' first
//! elections hurried, and rejoining after this broker lost its data.
//!
//! Leadership moves only by transfer, which raft-rs completes once the
//! target has caught up: at shutdown to the most caught-up follower, so a
//! stopping broker costs its groups no election timeout; in balance to the
//! preferred leader, and only once it holds every entry. A new partition's
//! preferred leader campaigns at every tick, for a bounded number of ticks,
//! rather than waiting out an election timeout for a group that has never
//! had a leader, but never cuts short an election under way. A broker that
//! lost what it had acknowledged rejoins: its replicas vote only once
//! caught up, and its identity says so across restarts until every replica
//! the metadata places here, and the metadata itself, has caught up.

use std::sync::atomic::Ordering;

use rill_replication::{BrokerId, GroupId};

use super::RaftLoop;

impl RaftLoop {
    /// Hands leadership back to preferred leaders that have caught up.
    /// The preferred leader is the image's first replica (of the move's
    /// target while one is under way), and only a voter.
    pub(super) fn balance(&mut self) {
        let me = self.me();
        let preferred: Vec<(GroupId, BrokerId)> = self
            .image
            .topics
            .values()
            .flat_map(|t| {
                t.replicas
                    .iter()
                    .enumerate()
                    .filter_map(move |(p, replicas)| {
                        let first = match t.moving.get(&(p as u32)) {
                            Some(m) => m.target.first(),
                            None => replicas.first(),
                        };
                        first.filter(|b| **b != me).map(|b| (t.group(p as u32), *b))
                    })
            })
            .filter(|(g, _)| self.node.leader(*g) == Some(me))
            .collect();
        for (group, to) in preferred {
            self.hand_to_preferred(group, to);
        }
    }

    /// Hands `group`, if led here, to `preferred` once it is a voter holding
    /// every entry.
    fn hand_to_preferred(&mut self, group: GroupId, preferred: BrokerId) {
        let Some(s) = self.node.status(group) else {
            return;
        };
        let caught_up = s
            .matched
            .iter()
            .any(|(b, m)| *b == preferred && *m >= s.last_index);
        if s.leader == Some(self.me()) && s.membership.is_voter(preferred) && caught_up {
            let _ = self.node.transfer_leader(group, preferred);
        }
    }

    /// Campaigns again in the new partitions of [`RaftLoop::eager`] that
    /// still have no leader, and forgets those that have one, are no longer
    /// open here or have hurried for long enough.
    pub(super) fn campaign_eagerly(&mut self) {
        let (node, ticks) = (&mut self.node, self.ticks);
        self.eager.retain(|&group, &mut until| {
            let waiting = ticks <= until && node.has_group(group) && node.leader(group).is_none();
            waiting && (node.is_candidate(group) || node.campaign(group).is_ok())
        });
    }

    /// Takes a peer's word that this broker lost what it had acknowledged
    /// (see [`crate::identity`]): every replica catches up before it votes
    /// again, and the identity says so across restarts.
    pub(super) fn take_rejoin(&mut self) {
        if !self.config.rejoin_requested.swap(false, Ordering::AcqRel)
            || self.config.identity.rejoining
        {
            return;
        }
        self.node.set_rejoining(true);
        self.config.identity.rejoining = true;
        if let Err(e) = self.config.identity.save(&self.config.data_dir) {
            tracing::error!(error = %e, "could not record that this broker rejoins");
        }
    }

    /// Ends rejoining once every replica the metadata places here is open
    /// and caught up, and the metadata itself is: a replica opened after
    /// that is new, with nothing to have lost.
    pub(super) fn check_rejoined(&mut self) {
        if !self.config.identity.rejoining || self.node.catching_up() > 0 {
            return;
        }
        let controller_applied = self
            .node
            .status(GroupId::CONTROLLER)
            .is_some_and(|s| self.applied >= s.commit);
        let me = self.me();
        // A stopped replica (its storage failed, a reopen pending) is not
        // caught up: reopened after the broker stopped rejoining, it would
        // vote with what its files hold, which may be less than it once
        // acknowledged. The broker stays rejoining until it is open and
        // caught up (a replica that never reopens costs only this: replicas
        // opened later catch up before they vote, as they would anyway).
        let all_open = self.image.topics.values().all(|t| {
            (0..t.partitions()).all(|p| {
                let g = t.group(p);
                !t.replicas[p as usize].contains(&me) || self.node.has_group(g)
            })
        });
        if !(controller_applied && all_open) {
            return;
        }
        self.node.set_rejoining(false);
        self.config.identity.rejoining = false;
        match self.config.identity.save(&self.config.data_dir) {
            Ok(()) => tracing::info!("caught up in every group: this broker votes again"),
            Err(e) => tracing::error!(error = %e, "could not record that this broker has rejoined"),
        }
    }
}
