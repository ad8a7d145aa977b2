//! The cluster's id: named once, by the controller, and kept by every
//! broker in its data directory's identity.
//!
//! The first controller leader that finds the cluster unnamed (a new
//! cluster, or one from before cluster ids) proposes
//! [`MetadataCommand::InitCluster`]: the id its own identity already holds,
//! if any, else a fresh one. The first such command applied names the
//! cluster for good. Each broker, applying it, writes the id into
//! `identity.json` and hands it to the peer handshake, which from then on
//! refuses brokers of another cluster. A data directory whose identity
//! names another cluster than the controller's log does belongs elsewhere:
//! the broker refuses to run on it.

use rill_replication::GroupId;
use rill_replication::ids::ClusterId;
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::metadata::MetadataCommand;

/// Exit status of a broker refusing a data directory of another cluster
/// (`EX_CONFIG`).
pub const OTHER_CLUSTER_EXIT_CODE: i32 = 78;

impl RaftLoop {
    /// Takes the cluster's id from the applied image into the identity and
    /// the handshake. A data directory of another cluster stops the broker.
    pub(super) fn learn_cluster_id(&mut self) {
        let named = self.image.cluster_id;
        let mine = self.config.identity.cluster_id;
        if !named.is_known() || named == mine {
            return;
        }
        if mine.is_known() {
            tracing::error!(
                "data directory {} belongs to cluster {mine}, but the controller's log names \
                 cluster {named}: give this broker its own data directory of this cluster, or an \
                 empty one",
                self.config.data_dir.display()
            );
            crate::logwriter::flush();
            std::process::exit(OTHER_CLUSTER_EXIT_CODE);
        }
        self.config.identity.cluster_id = named;
        // Set once: a later call finds the identity already naming it.
        let _ = self.config.cluster.set(named);
        match self.config.identity.save(&self.config.data_dir) {
            Ok(()) => tracing::info!(cluster = %named, "this broker belongs to cluster {named}"),
            Err(e) => tracing::error!(error = %e, "could not record the cluster id"),
        }
    }

    /// As the controller's leader, names an unnamed cluster (once per
    /// term once proposed: a proposal lost to a leader change is made again
    /// by the next leader, one refused here at the next tick).
    pub(super) fn propose_cluster_id(&mut self) {
        if self.image.cluster_id.is_known()
            || self.node.leader(GroupId::CONTROLLER) != Some(self.me())
        {
            return;
        }
        let Some(status) = self.node.status(GroupId::CONTROLLER) else {
            return;
        };
        // Everything committed applied. An id committed in an earlier term
        // but not yet known committed here may still be proposed again:
        // the first one applied names the cluster, the other is refused.
        if self.applied < status.commit || self.cluster_id_proposed == Some(status.term) {
            return;
        }
        let id = match self.config.identity.cluster_id {
            known if known.is_known() => known,
            _ => ClusterId::fresh(),
        };
        tracing::info!(cluster = %id, "naming the cluster");
        // Nobody waits for the outcome: applying it is what counts.
        let (reply, _) = oneshot::channel();
        let pending = self.pending.len();
        self.propose_metadata(
            MetadataCommand::InitCluster {
                cluster_id: id.to_string(),
                voters: Some(self.image.voters.iter().map(|b| b.get()).collect()),
            },
            reply,
        );
        if self.pending.len() > pending {
            self.cluster_id_proposed = Some(status.term);
        }
    }
}
