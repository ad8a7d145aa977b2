//! The durability step: the sync jobs a round asks for, and deferred syncs,
//! whose Readies go back to raft-rs before their syncs ran.
//!
//! Invariants kept here:
//! - deferred sync rounds run in the order they were made and come back to
//!   [`Node::complete_syncs`] in that order (the caller's part); a group's
//!   Readies count as persisted (`on_persist_ready`) only once the sync
//!   round holding their syncs is back;
//! - the messages a deferred Ready holds (its `persisted_messages()`)
//!   leave only once it is durable, but for heartbeat responses of a Ready
//!   whose term and vote need no sync;
//! - a one-voter group, and a Ready with a snapshot, are never deferred;
//! - a sync that fails stops its group (an fsync error is not retried); a
//!   sync of a group closed since is kept for the caller
//!   ([`Node::take_closed_syncs`]) or dropped, never fails anything.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{Message, MessageType};
use rill_storage::{LogError, SyncDone, SyncPlan};

use super::round::push_messages;
use super::{Event, Failure, Node, Outgoing, Round};
use crate::contain::raft_call;
use crate::error::ReplicationError;
use crate::ids::GroupId;
use crate::state::StateSync;

/// A Ready handed back to raft-rs whose syncs have not completed.
#[derive(Debug)]
pub(super) struct Unsynced {
    /// The Ready's number.
    number: u64,
    /// Its `persisted_messages()`, held until it is durable.
    persisted: Vec<Message>,
    /// The index it lets the group apply through (0 for none).
    applies: u64,
}

/// One opening of a group on this node. A group stopped and opened again
/// (a replica reopened after an I/O error) is a new life: a sync planned for
/// the old one never completes the new one, whose Ready numbers start
/// again and whose log was reopened from its files. Counting the old
/// Ready's number as persisted there would acknowledge entries no sync
/// covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Life {
    /// The group.
    pub(super) group: GroupId,
    /// Which opening of it.
    generation: u64,
}

impl super::Replica {
    /// This replica's life, as `group`.
    pub(super) fn life(&self, group: GroupId) -> Life {
        Life {
            group,
            generation: self.generation,
        }
    }
}

impl Node {
    /// The replica of `life`, if that life of its group is still open.
    fn live_mut(&mut self, life: Life) -> Option<&mut super::Replica> {
        self.groups
            .get_mut(&life.group)
            .filter(|r| r.generation == life.generation)
    }
}

/// A work item of a round's durability step. `Send`: run it anywhere.
/// What it syncs is the node's business: the caller only runs it and hands
/// the result back.
#[derive(Debug)]
#[must_use = "a round is not finished until its syncs ran and were handed back"]
pub struct SyncJob(Job);

/// What a [`SyncJob`] syncs.
#[derive(Debug)]
enum Job {
    /// Sync a group's log.
    Log(Life, SyncPlan),
    /// Sync a group's hard state.
    State(Life, StateSync),
}

/// A job that ran, with what it synced and how long it took.
#[derive(Debug)]
pub struct SyncResult {
    ran: Ran,
    /// What it synced (for metrics).
    pub synced: SyncedFiles,
}

/// What one [`SyncJob`] synced and how long its `fdatasync`s took: the
/// broker reports each as one fsync's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedFiles {
    /// Whether it was a log's segments (else a replica's hard state).
    pub log: bool,
    /// Bytes of segment data made durable (0 for hard state).
    pub bytes: u64,
    /// Time the job's syncs took, µs.
    pub elapsed_us: u64,
}

/// How a [`SyncJob`] went.
#[derive(Debug)]
enum Ran {
    /// A log sync's outcome.
    Log(Life, Result<SyncDone, LogError>),
    /// A state sync's outcome.
    State(Life, Result<StateSync, ReplicationError>),
}

impl SyncJob {
    /// A sync of the log of the group in `life`.
    pub(super) fn log(life: Life, plan: SyncPlan) -> SyncJob {
        SyncJob(Job::Log(life, plan))
    }

    /// A sync of the hard state of the group in `life`.
    pub(super) fn state(life: Life, sync: StateSync) -> SyncJob {
        SyncJob(Job::State(life, sync))
    }

    /// Runs the sync (`fdatasync` of the files written).
    pub fn run(self) -> SyncResult {
        let started = std::time::Instant::now();
        let bytes = self.bytes();
        let (log, ran) = match self.0 {
            Job::Log(g, plan) => (true, Ran::Log(g, plan.run())),
            Job::State(g, sync) => (false, Ran::State(g, sync.run())),
        };
        SyncResult {
            ran,
            synced: SyncedFiles {
                log,
                bytes,
                elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            },
        }
    }

    /// The group it belongs to.
    pub(super) fn group(&self) -> GroupId {
        match &self.0 {
            Job::Log(life, _) | Job::State(life, _) => life.group,
        }
    }

    /// Bytes of log data it syncs.
    pub fn bytes(&self) -> u64 {
        match &self.0 {
            Job::Log(_, plan) => plan.bytes(),
            Job::State(..) => 0,
        }
    }
}

/// The syncs of Readies that were handed back to raft-rs before they ran
/// ([`Node::defer_syncs`]). Sync rounds must run in the order they were
/// made, one after another (the jobs inside one may run in parallel), and
/// each outcome goes back to [`Node::complete_syncs`] in that order.
/// Retention's sync rounds ([`Node::apply_retention`]) are apart from that
/// order.
#[derive(Debug)]
#[must_use = "the groups of a deferred sync round wait until it is completed"]
pub struct SyncRound {
    /// The syncs to run.
    pub(super) jobs: Vec<SyncJob>,
    /// The deferred Readies: group life and Ready number.
    pub(super) readies: Vec<(Life, u64)>,
}

/// A [`SyncRound`] whose jobs ran.
#[derive(Debug)]
pub struct SyncedRound {
    results: Vec<SyncResult>,
    readies: Vec<(Life, u64)>,
}

impl SyncRound {
    /// Whether it has nothing to sync and no Ready waits for it.
    pub fn is_empty(&self) -> bool {
        self.readies.is_empty() && self.jobs.is_empty()
    }

    /// How many Readies wait for the sync round.
    pub fn readies(&self) -> usize {
        self.readies.len()
    }

    /// How many syncs it runs.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Folds `later` (made after this sync round, which has not run) into
    /// this one, so that one run syncs both: group commit across rounds
    /// while an earlier sync round keeps the disk busy. A group's newer log plan
    /// covers its older one (nothing of the group completed in between,
    /// so every file still unsynced then is still unsynced now, and
    /// `fdatasync` works on whole files): the older plan is dropped.
    pub fn merge(&mut self, later: SyncRound) {
        let mut logs: BTreeMap<Life, usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match &j.0 {
                Job::Log(life, _) => Some((*life, i)),
                Job::State(..) => None,
            })
            .collect();
        for job in later.jobs {
            if let Job::Log(group, _) = &job.0 {
                if let Some(&i) = logs.get(group) {
                    self.jobs[i] = job;
                    continue;
                }
                logs.insert(*group, self.jobs.len());
            }
            self.jobs.push(job);
        }
        self.readies.extend(later.readies);
    }

    /// Runs the jobs with `run`, which returns one result per job.
    pub fn run_with(self, run: impl FnOnce(Vec<SyncJob>) -> Vec<SyncResult>) -> SyncedRound {
        SyncedRound {
            results: run(self.jobs),
            readies: self.readies,
        }
    }

    /// Runs the jobs one after another, here.
    pub fn run(self) -> SyncedRound {
        self.run_with(|jobs| jobs.into_iter().map(SyncJob::run).collect())
    }
}

impl Node {
    /// Completed syncs of groups closed since they were planned (their
    /// topics deleted). Each still holds its segment files open, and the
    /// last close of a deleted file is where the filesystem frees it (with
    /// `discard`, a synchronous trim): the caller may drop them on a thread
    /// where that wait harms nothing.
    pub fn take_closed_syncs(&mut self) -> Vec<SyncDone> {
        std::mem::take(&mut self.closed_syncs)
    }

    /// Between steps 2 and 3: hands back to raft-rs, before their syncs
    /// run, the Readies of every group that has other voters and either
    /// needs a sync this round or still waits for an earlier deferred one.
    /// Their jobs move from `jobs` to the returned sync round, and their
    /// `persisted_messages()` are held until [`Node::complete_syncs`],
    /// except heartbeat responses of a Ready whose term and vote need no
    /// sync: those go out with the round ([`Node::finish_round`]). The
    /// thread driving the node is then free to step messages (a leader
    /// learns that followers have an entry while its own sync runs) and run
    /// further rounds, whose writes the next sync round syncs. What stays in
    /// `round` and `jobs` finishes as before, through
    /// [`Node::finish_round`]. A one-voter group is never deferred: it
    /// commits only through its own sync, and raft-rs makes it leader at
    /// once when it campaigns, which it refuses with entries still
    /// unpersisted.
    pub fn defer_syncs(&mut self, round: &mut Round, jobs: &mut Vec<SyncJob>) -> SyncRound {
        let needs_sync: BTreeSet<GroupId> = jobs.iter().map(SyncJob::group).collect();
        let term_or_vote_syncs: BTreeSet<GroupId> = jobs
            .iter()
            .filter_map(|j| match &j.0 {
                Job::State(life, _) => Some(life.group),
                Job::Log(..) => None,
            })
            .collect();
        let mut deferred = BTreeSet::new();
        let mut syncs = SyncRound {
            jobs: Vec::new(),
            readies: Vec::new(),
        };
        for (group, mut rd, applies) in std::mem::take(&mut round.readies) {
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            let waits = needs_sync.contains(&group) || !r.unsynced.is_empty();
            // `may_ready` held the snapshot back until nothing was unsynced.
            let inline = r.unsynced.is_empty()
                && (r.raw.raft.prs().is_singleton() || !rd.snapshot().is_empty());
            if !waits || inline {
                round.readies.push((group, rd, applies));
                continue;
            }
            // Committed entries were applied when the round was written;
            // raft-rs hears of it once the Ready is persisted (a snapshot's
            // index may not count as applied before).
            debug_assert!(rd.committed_entries().is_empty(), "applied when written");
            let number = rd.number();
            let mut persisted = rd.take_persisted_messages();
            let is_heartbeat_response =
                |m: &Message| m.get_msg_type() == MessageType::MsgHeartbeatResponse;
            if !term_or_vote_syncs.contains(&group) && persisted.iter().any(is_heartbeat_response) {
                // A heartbeat response vouches for nothing a log sync
                // holds: only for the follower's term, durable already
                // (a term or vote change is synced with a State job, and
                // `may_ready` starts no Ready while one runs). The commit
                // index it carries may pass the durable log, but raft-rs
                // only records it (`Progress::committed_index`) and decides
                // no commit by it. It also lets the leader resume sending
                // appends, as an fsync=false follower's does. Held back,
                // it would wait for an fsync=true group's log sync, which
                // under heavy writeback takes seconds: longer than the
                // leader's check-quorum allows.
                let (now, held): (Vec<Message>, Vec<Message>) =
                    persisted.into_iter().partition(is_heartbeat_response);
                push_messages(group, now, &mut round.early, &mut round.snapshots);
                persisted = held;
            }
            r.unsynced.push_back(Unsynced {
                number,
                persisted,
                applies,
            });
            let life = r.life(group);
            if let Err(e) = raft_call(group, &mut r.raw, |raw| raw.advance_append_async(rd)) {
                // Its syncs still run, and come back for a closed group.
                self.stop_unreadable(group, &e);
                continue;
            }
            syncs.readies.push((life, number));
            deferred.insert(group);
        }
        let (later, now): (Vec<SyncJob>, Vec<SyncJob>) = std::mem::take(jobs)
            .into_iter()
            .partition(|j| deferred.contains(&j.group()));
        *jobs = now;
        syncs.jobs = later;
        syncs
    }

    /// Records a deferred sync round's syncs: each group's Readies up to
    /// the sync round's count as persisted (raft-rs may now commit them and
    /// answer from them), and the messages they held leave. A group whose
    /// sync failed stops.
    pub fn complete_syncs(
        &mut self,
        done: SyncedRound,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<Event>,
    ) {
        let failed = self.record_syncs(done.results);
        let mut snapshots = Vec::new();
        let mut unreadable = Vec::new();
        for (life, number) in done.readies {
            let group = life.group;
            if failed.contains_key(&group) {
                continue;
            }
            self.mark(group);
            let Some(r) = self.live_mut(life) else {
                continue;
            };
            let mut released = Vec::new();
            let persisted = raft_call(group, &mut r.raw, |raw| {
                raw.on_persist_ready(number);
                while r.unsynced.front().is_some_and(|u| u.number <= number) {
                    let u = r.unsynced.pop_front().expect("front exists");
                    if u.applies > raw.raft.raft_log.applied {
                        raw.advance_apply_to(u.applies);
                    }
                    released.push(u.persisted);
                }
            });
            match persisted {
                Ok(()) => {
                    for messages in released {
                        push_messages(group, messages, out, &mut snapshots);
                    }
                }
                Err(e) => unreadable.push((group, e)),
            }
        }
        for (group, e) in unreadable {
            self.fail(group, (&e).into(), events);
        }
        // A snapshot is sent by a leader, whose messages leave at once; one
        // held here was queued by a leader that stepped down before its
        // Ready was taken (raft-rs then holds all of them as persisted
        // messages). The progress it would report belonged to a leadership
        // that ended: nothing to report.
        drop(snapshots);
        for (group, failure) in failed {
            self.fail(group, failure, events);
        }
    }

    /// Records the outcome of sync jobs; returns the groups whose sync
    /// failed, with why.
    pub(super) fn record_syncs(&mut self, results: Vec<SyncResult>) -> BTreeMap<GroupId, Failure> {
        let mut failed: BTreeMap<GroupId, Failure> = BTreeMap::new();
        for SyncResult { ran: result, .. } in results {
            // Durable now: its group may take a Ready it held back.
            let (Ran::Log(life, _) | Ran::State(life, _)) = &result;
            let life = *life;
            self.mark(life.group);
            match result {
                Ran::Log(life, Ok(done)) => match self.live_mut(life) {
                    Some(r) => {
                        if let Err(e) = r.raw.mut_store().complete_log_sync(done) {
                            failed.insert(life.group, (&e).into());
                        }
                    }
                    None => self.closed_syncs.push(done),
                },
                Ran::State(life, Ok(done)) => {
                    if let Some(r) = self.live_mut(life) {
                        r.raw.mut_store().complete_state_sync(done);
                        // The new snapshot point is durable: what retention
                        // took below it may go.
                        if let Some(taken) = self.retention_waiting.remove(&life.group) {
                            self.expired.push(taken);
                        }
                    }
                }
                // A group closed since (its topic deleted, or stopped and
                // opened again) may have lost its directory under the
                // sync: nothing to stop.
                Ran::Log(life, Err(e)) if self.live_mut(life).is_some() => {
                    failed.insert(life.group, (&e).into());
                }
                Ran::State(life, Err(e)) if self.live_mut(life).is_some() => {
                    failed.insert(life.group, (&e).into());
                }
                Ran::Log(..) | Ran::State(..) => {}
            }
        }
        failed
    }
}
