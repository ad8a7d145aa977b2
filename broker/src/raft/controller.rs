//! The controller's group from this broker's side: its committed entries
//! applied to the cluster image, and metadata commands proposed to it.
//!
//! Every broker applies the same entries in the same order, so every image
//! agrees. A command is checked when proposed and again when applied, as
//! another may come first. Who waits for a command hears its outcome only
//! once its entry is applied here in the term it was proposed in (an entry
//! another leader replaced answers [`NotController`]), and only once no
//! replica it assigns here is left to open: the answer is held until then
//! (see `published.rs`). Only the controller's leader proposes; a follower
//! forwards its own broker's registration and the progress of the
//! partition moves it leads (`moves.rs`), over the authenticated peer
//! link, and a leader takes nothing else from its peers.

use bytes::Bytes;
use rill_replication::state::Membership;
use rill_replication::{BrokerId, CheckedBatch, GroupId, ReplicaDir, ReplicationError};
use rill_storage::{BatchBuilder, LogConfig, NewRecord, RaftIndex};
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::metadata::{ClusterImage, MetadataCommand, Outcome};

/// Largest controller entry, bytes.
const CONTROLLER_BATCH_BYTES_MAX: usize = 1 << 20;

/// Why a metadata command got no outcome here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotController {
    /// The controller as known here.
    pub leader: Option<BrokerId>,
}

/// A metadata command's answer and who waits for it.
pub(super) type Answer = (
    oneshot::Sender<Result<Outcome, NotController>>,
    Option<Outcome>,
);

fn controller_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        grow_step_bytes: 1 << 20,
        retention_ms: None,
        retention_bytes: None,
        segment_ms: None,
        max_batch_bytes: CONTROLLER_BATCH_BYTES_MAX,
        // The broker holds its data directory's lock.
        lock_dir: false,
        ..LogConfig::default()
    }
}

impl RaftLoop {
    /// Opens the controller's replica and replays what it has committed.
    pub(super) fn open_controller(&mut self) -> Result<(), ReplicationError> {
        let dir = self.config.data_dir.join("controller");
        std::fs::create_dir_all(&dir)
            .map_err(ReplicationError::io("create controller directory", &dir))?;
        let opened = self.node.open_replica(ReplicaDir {
            group: GroupId::CONTROLLER,
            dir: &dir,
            log_config: controller_log_config(),
            fsync: true,
            membership: Membership::voters(self.config.voters.iter().copied()),
            membership_index: RaftIndex(0),
        })?;
        let single =
            opened.membership.voters == [self.me()] && opened.membership.voters_outgoing.is_empty();
        self.controller_log = Some(opened.log);
        // The image starts from the cluster's first voters, whatever the
        // group's membership is now: placements replayed from the log must
        // be those computed when it was written. A broker leaves the
        // hosts by a command in the log (`RemoveBroker`), not by leaving
        // the group.
        self.image = ClusterImage::new(self.config.voters.clone());
        // The commit index as validated against the log on open (never
        // past the last entry that survived).
        let commit = self
            .node
            .status(GroupId::CONTROLLER)
            .expect("the controller was just added")
            .commit;
        self.apply_controller(commit)?;
        if single {
            self.node.campaign(GroupId::CONTROLLER)?;
            self.with_driver(|d, io| d.round(io));
        }
        Ok(())
    }

    /// Applies the controller's entries up to `through` to the image, then
    /// opens and closes replicas to match it.
    pub(super) fn apply_controller(&mut self, through: RaftIndex) -> Result<(), ReplicationError> {
        if through <= self.applied {
            return Ok(());
        }
        let log = self
            .controller_log
            .clone()
            .expect("the controller is open before anything is applied");
        // Only this thread writes the log: it holds still between the two
        // reads.
        let from = self.applied.next().max(log.first_raft_index());
        // Owned copies: applying decodes the commands inside.
        let batches = log.read_entries_owned(from, through.next(), u64::MAX)?;
        let mut answers = Vec::new();
        for b in batches {
            let (index, term) = (b.header().raft_index, b.header().raft_term);
            let outcome = if b.header().is_control() {
                None
            } else {
                let record = b.records().next().and_then(Result::ok);
                match record
                    .and_then(|r| r.value)
                    .and_then(|v| MetadataCommand::decode(&v))
                {
                    Some(cmd) => Some(self.image.apply(&cmd)),
                    None => {
                        tracing::error!(%index, "controller entry is not a metadata command; skipped");
                        None
                    }
                }
            };
            self.applied = index;
            if let Some((t, reply)) = self.pending.remove(&index) {
                answers.push((reply, outcome.filter(|_| t == term)));
            }
        }
        // Proposals at or below the applied index that were not answered
        // were replaced by another leader's entries.
        let lost: Vec<RaftIndex> = self
            .pending
            .range(..=self.applied)
            .map(|(i, _)| *i)
            .collect();
        for i in lost {
            if let Some((_, reply)) = self.pending.remove(&i) {
                answers.push((reply, None));
            }
        }
        self.learn_cluster_id();
        // Replicas open (and one-voter ones lead) before anyone hears the
        // outcome.
        self.held_answers.extend(answers);
        self.reconcile();
        Ok(())
    }

    pub(super) fn propose_metadata(
        &mut self,
        mut command: MetadataCommand,
        reply: oneshot::Sender<Result<Outcome, NotController>>,
    ) {
        let leader = self.node.leader(GroupId::CONTROLLER);
        if leader != Some(self.me()) {
            // This broker's own registration goes to the controller over
            // the authenticated peer connection, never a client port.
            if let (Some(l), MetadataCommand::RegisterBroker { id, .. }) = (leader, &command)
                && *id == self.me()
            {
                let out = rill_replication::forward::forward_proposal(
                    self.me(),
                    l,
                    GroupId::CONTROLLER,
                    Bytes::from(command.encode()),
                );
                // Dropped when the link is full: the broker asks again.
                let _ = self.send(vec![out]);
            }
            let _ = reply.send(Err(NotController { leader }));
            return;
        }
        // The limit is a per-broker setting, so it travels in the command:
        // every broker then applies the same check with the same number,
        // and two creations proposed before either applied cannot both
        // pass it.
        if let MetadataCommand::CreateTopic {
            max_partition_replicas,
            ..
        }
        | MetadataCommand::AddPartitions {
            max_partition_replicas,
            ..
        } = &mut command
        {
            *max_partition_replicas = Some(self.config.max_partition_replicas);
        }
        // Refused now if it would be refused when applied (it is checked
        // again then: another command may come first).
        if let refused @ Outcome::Refused(..) = self.image.check(&command) {
            let _ = reply.send(Ok(refused));
            return;
        }
        let mut builder = BatchBuilder::new(CONTROLLER_BATCH_BYTES_MAX);
        let value = command.encode();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = builder
            .push(&NewRecord::value(&value, now_ms))
            .ok()
            .filter(|fits| *fits)
            .and_then(|_| builder.finish().ok())
            .and_then(|b| CheckedBatch::new(Bytes::from(b), CONTROLLER_BATCH_BYTES_MAX).ok())
            .flatten();
        let Some(batch) = batch else {
            let _ = reply.send(Ok(Outcome::Refused(
                rill_client::protocol::ErrorCode::InvalidRequest,
                "metadata command too large".into(),
            )));
            return;
        };
        match self.node.propose(GroupId::CONTROLLER, batch) {
            Ok(p) => {
                self.pending.insert(p.index, (p.term, reply));
            }
            Err(_) => {
                let _ = reply.send(Err(NotController {
                    leader: self.node.leader(GroupId::CONTROLLER),
                }));
            }
        }
    }

    /// Proposes what peer `from` asked this broker to propose for it: its
    /// own registration, or the progress of a move of a partition it holds
    /// a replica of, on the controller, which must lead here (the peer
    /// asks again otherwise). Anything else is dropped and logged.
    pub(super) fn take_forwarded(&mut self, group: GroupId, from: BrokerId, data: Vec<Bytes>) {
        for d in data {
            match MetadataCommand::decode(&d) {
                Some(command @ MetadataCommand::RegisterBroker { id, .. })
                    if group == GroupId::CONTROLLER && id == from =>
                {
                    // Nobody here waits for the outcome: the peer sees its
                    // address in the metadata it applies.
                    let (reply, _) = oneshot::channel();
                    self.propose_metadata(command, reply);
                }
                Some(command)
                    if group == GroupId::CONTROLLER && self.may_record_for(from, &command) =>
                {
                    // A move's progress, sent by the partition's leader,
                    // which sees it in the image once applied.
                    let (reply, _) = oneshot::channel();
                    self.propose_metadata(command, reply);
                }
                _ => {
                    tracing::warn!(%group, peer = %from, "a peer asked for a proposal it may not make; dropped")
                }
            }
        }
    }
}
