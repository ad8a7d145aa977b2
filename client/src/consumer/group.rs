//! Reading as a member of a consumer group: subscribing, applying the
//! coordinator's assignment inside `poll`, committing, and leaving.
//!
//! The membership itself (heartbeats, the member's id and epoch, building
//! commits) lives in the background task of `heartbeat`; this side holds
//! what the consumer read. Changes to the assignment are applied at the
//! start of a poll, or while a poll waits: partitions lost are dropped
//! without a commit; partitions revoked are committed first (with
//! auto-commit), shown to the listener, dropped with their buffered
//! records, then released so the next heartbeat says so at once;
//! partitions newly assigned start from the group's committed offsets, or
//! from `auto_offset_reset` where it has none. A partition that stays
//! assigned is never paused: its prefetch goes on.
//!
//! Every step of applying changes is kept as state before it is awaited
//! (changes taken are recorded at once; revoked partitions wait in
//! `revoking`, then `releasing`; new ones in `starting`, with what is
//! learnt of their commits), so a poll dropped at any await point (a
//! `select!`, a timeout) loses nothing: the next call goes on where it
//! stopped.
//!
//! Invariants: `consumed` holds, for every partition read and started, the
//! offset after the last record `poll` returned (with that record's leader
//! epoch), or the starting offset; only `poll`, a seek and an explicit
//! commit move it, so a commit of it never covers a record the caller has
//! not been given. A partition is in at most one of the consumer's
//! positions, `starting`, `revoking` and `releasing`; only partitions in
//! the positions are fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::heartbeat::{self, ClusterCoordinator, Command, Coordinator, Taken, unexpected};
use super::membership::{Changes, Membership};
use super::{Consumer, ConsumerRecord, Key, SeekTo, offsets};
use crate::error::ClientError;
use crate::protocol::messages::{NO_COMMITTED_OFFSET, OffsetFetchRequest, TopicPartitions};
use crate::protocol::{Request, Response};

pub use super::membership::CommitOffset;

/// Where a group member starts a partition the group has no commit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on (Kafka's
    /// default).
    #[default]
    Latest,
    /// No default: `poll` fails, naming the partition.
    None,
}

/// Told when partitions move to or from this consumer; called from inside
/// `poll` (and `close`), on the caller's task.
pub trait RebalanceListener: Send {
    /// These partitions were assigned; reading starts from the group's
    /// committed offsets.
    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// These partitions were revoked: no record of them comes after this
    /// call. With auto-commit, their positions were committed just before.
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// These partitions were lost: the coordinator removed this consumer
    /// from the group (its session timed out, or it was fenced), so they
    /// may be someone else's already and were not committed. By default,
    /// the same as a revocation.
    fn on_partitions_lost(&mut self, partitions: &[(String, u32)]) {
        self.on_partitions_revoked(partitions);
    }
}

/// Default of [`GroupConfig::auto_commit_interval_ms`].
pub const AUTO_COMMIT_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Default of [`GroupConfig::close_timeout_ms`].
pub const CLOSE_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// How a consumer reads as a member of a group.
pub struct GroupConfig {
    /// The group id: 1 to 255 bytes.
    pub group_id: String,
    /// Whether `poll` commits what it returned every
    /// `auto_commit_interval_ms`, revoked partitions are committed before
    /// they are given up, and `close` commits. Default true.
    pub auto_commit: bool,
    /// How often `poll` commits, ms. Default 5,000.
    pub auto_commit_interval_ms: u64,
    /// Where to start a partition the group has no commit for. Default
    /// [`OffsetReset::Latest`].
    pub auto_offset_reset: OffsetReset,
    /// How long `close` may take to commit and leave, ms. Default 30,000.
    pub close_timeout_ms: u64,
    /// Told of partitions assigned, revoked and lost, if given.
    pub listener: Option<Box<dyn RebalanceListener>>,
}

impl GroupConfig {
    /// The defaults, for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            auto_commit: true,
            auto_commit_interval_ms: AUTO_COMMIT_INTERVAL_MS_DEFAULT,
            auto_offset_reset: OffsetReset::default(),
            close_timeout_ms: CLOSE_TIMEOUT_MS_DEFAULT,
            listener: None,
        }
    }
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("group_id", &self.group_id)
            .field("auto_commit", &self.auto_commit)
            .field("auto_commit_interval_ms", &self.auto_commit_interval_ms)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("close_timeout_ms", &self.close_timeout_ms)
            .field("listener", &self.listener.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A commit on its way: await it for the outcome, or drop it (the commit
/// goes ahead all the same).
#[derive(Debug)]
pub struct CommitFuture {
    state: CommitState,
}

#[derive(Debug)]
enum CommitState {
    Waiting(oneshot::Receiver<Result<(), ClientError>>),
    Done(Option<Result<(), ClientError>>),
}

impl CommitFuture {
    fn waiting(answer: oneshot::Receiver<Result<(), ClientError>>) -> CommitFuture {
        CommitFuture {
            state: CommitState::Waiting(answer),
        }
    }

    fn done(result: Result<(), ClientError>) -> CommitFuture {
        CommitFuture {
            state: CommitState::Done(Some(result)),
        }
    }

    /// The outcome if it is known already, without waiting.
    fn try_outcome(&mut self) -> Option<Result<(), ClientError>> {
        match &mut self.state {
            CommitState::Done(result) => result.take(),
            CommitState::Waiting(answer) => match answer.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(task_ended())),
            },
        }
    }
}

impl Future for CommitFuture {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            CommitState::Done(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err(ClientError::Invalid("commit polled again".into()))),
            ),
            CommitState::Waiting(answer) => Pin::new(answer)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(task_ended()))),
        }
    }
}

fn task_ended() -> ClientError {
    ClientError::Invalid("the consumer's group membership has ended".into())
}

/// How far starting an assigned partition has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starting {
    /// The group's committed offset for it is not known yet.
    Unknown,
    /// The group has no commit for it: it starts at `auto_offset_reset`.
    NoCommit,
}

/// A consumer's membership of a group, from the consumer's side.
pub(super) struct Group {
    group_id: String,
    auto_commit: bool,
    auto_commit_interval: Duration,
    auto_offset_reset: OffsetReset,
    close_timeout: Duration,
    /// Behind a lock only so that the consumer stays `Sync` (a listener
    /// need only be `Send`); it is only ever taken by the `&mut` owner.
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    coordinator: Arc<dyn Coordinator>,
    commands: mpsc::Sender<Command>,
    /// Moves when the task has something to take.
    pub(super) news: watch::Receiver<u64>,
    /// Where the task answers [`Command::Take`].
    changes: mpsc::Receiver<Taken>,
    /// Whether a [`Command::Take`] awaits its answer.
    taking: bool,
    task: JoinHandle<()>,
    /// Per partition read: the offset to commit (see the module's
    /// invariants).
    consumed: BTreeMap<Key, CommitOffset>,
    /// What the group holds for a partition, as last committed or fetched.
    committed: BTreeMap<Key, CommitOffset>,
    /// Assigned partitions not read yet, and what is known of where they
    /// start.
    starting: BTreeMap<Key, Starting>,
    /// Revoked partitions no longer read, to commit (with auto-commit) and
    /// tell the listener of.
    revoking: BTreeSet<Key>,
    /// Revoked partitions done with, to tell the task of.
    releasing: BTreeSet<Key>,
    next_auto_commit: Instant,
    auto_commit_in_flight: Option<(BTreeMap<Key, CommitOffset>, CommitFuture)>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("group_id", &self.group_id)
            .field("consumed", &self.consumed)
            .field("starting", &self.starting)
            .field("revoking", &self.revoking)
            .field("releasing", &self.releasing)
            .field("taking", &self.taking)
            .finish_non_exhaustive()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Group {
    /// Calls the listener, if any, with `keys`.
    fn tell(
        &mut self,
        keys: &BTreeSet<Key>,
        call: fn(&mut dyn RebalanceListener, &[(String, u32)]),
    ) {
        if keys.is_empty() {
            return;
        }
        if let Some(l) = &mut self.listener {
            let l = l.get_mut().unwrap_or_else(|p| p.into_inner());
            call(l.as_mut(), &keys.iter().cloned().collect::<Vec<_>>());
        }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| task_ended())?;
        answer.await.map_err(|_| task_ended())
    }

    fn commit(&self, offsets: BTreeMap<Key, CommitOffset>) -> CommitFuture {
        if offsets.is_empty() {
            return CommitFuture::done(Ok(()));
        }
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(Command::Commit { offsets, reply }) {
            Ok(()) => CommitFuture::waiting(answer),
            Err(mpsc::error::TrySendError::Full(_)) => {
                CommitFuture::done(Err(ClientError::Invalid(
                    "too many commits waiting to be sent: await some before starting more".into(),
                )))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => CommitFuture::done(Err(task_ended())),
        }
    }

    /// Takes the outcome of the automatic commit in flight, if any, before
    /// a commit that waits: its bookkeeping then follows the order the
    /// commits land in (the task sends them in order).
    async fn settle_auto_commit(&mut self) {
        if let Some((offsets, future)) = self.auto_commit_in_flight.take() {
            let outcome = future.await;
            self.auto_committed(offsets, outcome);
        }
    }

    fn auto_committed(
        &mut self,
        offsets: BTreeMap<Key, CommitOffset>,
        outcome: Result<(), ClientError>,
    ) {
        match outcome {
            Ok(()) => {
                // Partitions given up since are not ours to remember.
                for (k, c) in offsets {
                    if self.consumed.contains_key(&k) {
                        self.committed.insert(k, c);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.group_id, error = %e, "automatic commit failed")
            }
        }
    }

    async fn commit_and_wait(
        &mut self,
        offsets: BTreeMap<Key, CommitOffset>,
    ) -> Result<(), ClientError> {
        self.settle_auto_commit().await;
        if offsets.is_empty() {
            return Ok(());
        }
        let sent = offsets.clone();
        self.ask(|reply| Command::Commit { offsets, reply })
            .await??;
        self.committed.extend(sent);
        Ok(())
    }

    /// What `poll` has returned and the group does not hold yet.
    fn uncommitted(&self, of: Option<&BTreeSet<Key>>) -> BTreeMap<Key, CommitOffset> {
        self.consumed
            .iter()
            .filter(|(k, _)| of.is_none_or(|of| of.contains(*k)))
            .filter(|(k, c)| self.committed.get(*k) != Some(*c))
            .map(|(k, c)| (k.clone(), *c))
            .collect()
    }

    /// The starting offset of each partition in `keys` the group has a
    /// commit for.
    async fn committed_offsets(
        &self,
        keys: &BTreeSet<Key>,
        timeout: Duration,
    ) -> Result<BTreeMap<Key, CommitOffset>, ClientError> {
        let mut topics: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (t, p) in keys {
            topics.entry(t).or_default().push(*p);
        }
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: self.group_id.clone(),
            topics: Some(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| TopicPartitions {
                        topic: topic.to_string(),
                        partitions,
                    })
                    .collect(),
            ),
        });
        let response = self.coordinator.request(request, timeout).await?;
        let Response::OffsetFetch(fetched) = response else {
            return Err(unexpected(&response));
        };
        if !fetched.error.is_ok() {
            return Err(ClientError::Broker {
                code: fetched.error,
                message: format!("fetching group {:?}'s committed offsets", self.group_id),
            });
        }
        let mut out = BTreeMap::new();
        for t in fetched.topics {
            for p in t.partitions {
                let key = (t.name.clone(), p.partition);
                if !keys.contains(&key) {
                    continue;
                }
                if !p.error.is_ok() {
                    return Err(ClientError::Broker {
                        code: p.error,
                        message: format!(
                            "fetching group {:?}'s committed offset of topic {:?} partition {}",
                            self.group_id, t.name, p.partition
                        ),
                    });
                }
                if p.offset == NO_COMMITTED_OFFSET {
                    continue;
                }
                let offset = u64::try_from(p.offset).map_err(|_| {
                    ClientError::Invalid(format!(
                        "the coordinator of group {:?} gave offset {} for topic {:?} partition {}",
                        self.group_id, p.offset, t.name, p.partition
                    ))
                })?;
                out.insert(
                    key,
                    CommitOffset {
                        offset,
                        leader_epoch: p.leader_epoch,
                    },
                );
            }
        }
        Ok(out)
    }
}

impl Consumer {
    /// Joins the consumer group `group.group_id`, reading the partitions of
    /// `topics` its coordinator assigns to this consumer from the group's
    /// committed offsets. Heartbeats go from a background task from now
    /// until [`Consumer::close`] (or the consumer is dropped); assignment
    /// changes are applied inside [`Consumer::poll`].
    ///
    /// Refused for a consumer already reading partitions or in a group,
    /// for no topics, a group id the coordinator would refuse, and outside
    /// a tokio runtime.
    pub fn subscribe(
        &mut self,
        group: GroupConfig,
        topics: Vec<String>,
    ) -> Result<(), ClientError> {
        let config = group;
        if let Some(g) = &self.group {
            return Err(ClientError::Invalid(format!(
                "this consumer is in group {:?} already",
                g.group_id
            )));
        }
        if !self.positions.is_empty() {
            return Err(ClientError::Invalid(
                "this consumer reads partitions it assigned itself; a group member takes the ones its group assigns".into(),
            ));
        }
        if topics.is_empty() {
            return Err(ClientError::Invalid(
                "subscribe to at least one topic".into(),
            ));
        }
        crate::coordinator::check_group_id(&config.group_id)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ClientError::Invalid("subscribe needs a tokio runtime".into()))?;
        let coordinator: Arc<dyn Coordinator> = Arc::new(ClusterCoordinator {
            cluster: Arc::clone(&self.cluster),
            group: config.group_id.clone(),
        });
        let membership = Membership::new(config.group_id.clone(), topics, 0);
        let (commands, queue) = mpsc::channel(heartbeat::COMMANDS_MAX);
        let (notify, news) = watch::channel(0);
        // One slot: one take is asked for at a time.
        let (changes_to, changes) = mpsc::channel(1);
        let task = runtime.spawn(heartbeat::run(
            Arc::clone(&coordinator),
            membership,
            queue,
            notify,
            changes_to,
            Duration::from_millis(self.config.request_timeout_ms),
        ));
        let auto_commit_interval = Duration::from_millis(config.auto_commit_interval_ms);
        self.group = Some(Group {
            group_id: config.group_id,
            auto_commit: config.auto_commit,
            auto_commit_interval,
            auto_offset_reset: config.auto_offset_reset,
            close_timeout: Duration::from_millis(config.close_timeout_ms),
            listener: config.listener.map(std::sync::Mutex::new),
            coordinator,
            commands,
            news,
            changes,
            taking: false,
            task,
            consumed: BTreeMap::new(),
            committed: BTreeMap::new(),
            starting: BTreeMap::new(),
            revoking: BTreeSet::new(),
            releasing: BTreeSet::new(),
            next_auto_commit: Instant::now() + auto_commit_interval,
            auto_commit_in_flight: None,
        });
        Ok(())
    }

    /// The group this consumer reads as a member of, if any.
    pub fn group_id(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.group_id.as_str())
    }

    fn group_or_refuse(&mut self) -> Result<&mut Group, ClientError> {
        self.group.as_mut().ok_or_else(|| {
            ClientError::Invalid("this consumer is in no group: subscribe first".into())
        })
    }

    /// Commits, for every partition read, the offset after the last record
    /// `poll` returned from it, and waits for the group to take it.
    /// Refused with [`ClientError::Fenced`] when the consumer no longer
    /// owns a partition.
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        let group = self.group_or_refuse()?;
        let offsets = group.consumed.clone();
        group.commit_and_wait(offsets).await
    }

    /// Commits exactly `offsets` (each the next offset to read, with the
    /// leader epoch of the record before it, or 0), and waits for the
    /// group to take them. The caller says with it how far it processed
    /// those partitions, so an automatic commit (or `close`) does not
    /// commit past it until `poll` returns more of their records.
    pub async fn commit_offsets_sync(
        &mut self,
        offsets: BTreeMap<(String, u32), CommitOffset>,
    ) -> Result<(), ClientError> {
        let group = self.group_or_refuse()?;
        group.commit_and_wait(offsets.clone()).await?;
        for (k, c) in offsets {
            if let Some(consumed) = group.consumed.get_mut(&k) {
                *consumed = c;
            }
        }
        Ok(())
    }

    /// As [`Consumer::commit_sync`], without waiting: the commit is sent
    /// whether or not the returned future is awaited.
    pub fn commit_async(&mut self) -> CommitFuture {
        match self.group_or_refuse() {
            Ok(group) => group.commit(group.consumed.clone()),
            Err(e) => CommitFuture::done(Err(e)),
        }
    }

    /// Leaves the group: commits first with auto-commit, tells the
    /// listener every partition is revoked, then sends the last heartbeat
    /// so the coordinator hands the partitions on at once; all within the
    /// group's `close_timeout_ms`. Returns the commit's error, if any; the
    /// group is left either way (or, if its coordinator cannot be reached,
    /// drops the member when its session times out). A consumer outside a
    /// group just stops.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.invalidate_prefetch();
        let Some(mut group) = self.group.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + group.close_timeout;
        let mut outcome = Ok(());
        if group.auto_commit {
            let offsets = group.uncommitted(None);
            outcome = match tokio::time::timeout_at(deadline, group.commit_and_wait(offsets)).await
            {
                Ok(r) => r,
                Err(_) => Err(ClientError::Timeout {
                    ms: group.close_timeout.as_millis() as u64,
                }),
            };
        }
        let held: BTreeSet<Key> = self
            .positions
            .keys()
            .chain(group.starting.keys())
            .chain(group.revoking.iter())
            .cloned()
            .collect();
        group.tell(&held, |l, p| l.on_partitions_revoked(p));
        match tokio::time::timeout_at(deadline, group.ask(Command::Leave)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(group = %group.group_id, error = %e, "leaving the group"),
            Err(_) => tracing::warn!(
                group = %group.group_id,
                "the group was not left in time; the coordinator drops the member when its session times out"
            ),
        }
        outcome
    }

    /// Notes a seek: a commit from now on commits the new position.
    pub(super) fn sought(&mut self, key: &Key, offset: u64) {
        if let Some(group) = &mut self.group {
            group.consumed.insert(
                key.clone(),
                CommitOffset {
                    offset,
                    leader_epoch: 0,
                },
            );
        }
    }

    /// Notes the records a poll returns: their partitions' offsets to
    /// commit move past them.
    pub(super) fn returned(&mut self, records: &[ConsumerRecord]) {
        let Some(group) = &mut self.group else {
            return;
        };
        for r in records {
            let next = CommitOffset {
                offset: r.offset + 1,
                leader_epoch: r.leader_epoch,
            };
            group.consumed.insert((r.topic.clone(), r.partition), next);
        }
    }

    /// Commits what earlier polls returned when it is time to (with
    /// auto-commit), without waiting; takes the outcome of the last such
    /// commit.
    pub(super) fn auto_commit(&mut self) {
        let Some(group) = &mut self.group else {
            return;
        };
        if !group.auto_commit {
            return;
        }
        if let Some((offsets, future)) = &mut group.auto_commit_in_flight {
            let Some(outcome) = future.try_outcome() else {
                return;
            };
            let offsets = std::mem::take(offsets);
            group.auto_commit_in_flight = None;
            group.auto_committed(offsets, outcome);
        }
        let now = Instant::now();
        if now < group.next_auto_commit {
            return;
        }
        group.next_auto_commit = now + group.auto_commit_interval;
        let offsets = group.uncommitted(None);
        if !offsets.is_empty() {
            let future = group.commit(offsets.clone());
            group.auto_commit_in_flight = Some((offsets, future));
        }
    }

    /// Applies the changes to the assignment the membership task has, if
    /// it has any, finishes revocations, and starts assigned partitions
    /// whose starting offset is not known yet.
    pub(super) async fn reconcile(&mut self) -> Result<(), ClientError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        if !group.taking && group.news.has_changed().map_err(|_| task_ended())? {
            group
                .commands
                .send(Command::Take)
                .await
                .map_err(|_| task_ended())?;
            // Seen only once asked for, so a poll dropped before that asks
            // at its next call.
            group.news.borrow_and_update();
            group.taking = true;
        }
        if group.taking {
            let taken = group.changes.recv().await.ok_or_else(task_ended)?;
            group.taking = false;
            self.note(taken?);
        }
        self.finish_revocations().await?;
        self.start_assigned().await
    }

    /// Records changes taken from the task, before anything is awaited:
    /// lost partitions are dropped uncommitted, revoked ones stop being
    /// read and wait to be committed and released, new ones wait to start.
    fn note(&mut self, changes: Changes) {
        let Changes {
            lost,
            revoked,
            assigned,
        } = changes;
        if !lost.is_empty() {
            let mut held = self.stop_reading(&lost);
            if let Some(group) = &mut self.group {
                for k in &lost {
                    if group.revoking.remove(k) {
                        held.insert(k.clone());
                    }
                    group.releasing.remove(k);
                    group.consumed.remove(k);
                    group.committed.remove(k);
                }
                group.tell(&held, |l, p| l.on_partitions_lost(p));
            }
        }
        if !revoked.is_empty() {
            self.stop_reading(&revoked);
            if let Some(group) = &mut self.group {
                group.revoking.extend(revoked);
            }
        }
        if let Some(group) = &mut self.group
            && !assigned.is_empty()
        {
            group
                .starting
                .extend(assigned.iter().map(|k| (k.clone(), Starting::Unknown)));
            group.tell(&assigned, |l, p| l.on_partitions_assigned(p));
        }
    }

    /// Commits revoked partitions (with auto-commit), tells the listener,
    /// forgets them and tells the task they are released.
    async fn finish_revocations(&mut self) -> Result<(), ClientError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        if !group.revoking.is_empty() {
            if group.auto_commit {
                let offsets = group.uncommitted(Some(&group.revoking));
                if let Err(e) = group.commit_and_wait(offsets).await {
                    tracing::warn!(group = %group.group_id, error = %e, "commit of revoked partitions failed");
                }
            }
            let revoked = std::mem::take(&mut group.revoking);
            group.tell(&revoked, |l, p| l.on_partitions_revoked(p));
            for k in &revoked {
                group.consumed.remove(k);
                group.committed.remove(k);
            }
            group.releasing.extend(revoked);
        }
        if !group.releasing.is_empty() {
            group
                .commands
                .send(Command::Released(group.releasing.clone()))
                .await
                .map_err(|_| task_ended())?;
            group.releasing.clear();
        }
        Ok(())
    }

    /// Stops reading `keys`: no fetch, no buffered record, no start;
    /// returns those that were being read or started.
    fn stop_reading(&mut self, keys: &BTreeSet<Key>) -> BTreeSet<Key> {
        let mut held = BTreeSet::new();
        for k in keys {
            if self.positions.remove(k).is_some() {
                held.insert(k.clone());
            }
            if let Some(group) = &mut self.group
                && group.starting.remove(k).is_some()
            {
                held.insert(k.clone());
            }
        }
        // Prefetched records of those partitions are dropped; the prefetch
        // in flight goes on for the others and its answer for these is
        // ignored, as they have no position any more.
        self.buffered
            .retain(|r| !keys.contains(&(r.topic.clone(), r.partition)));
        if self.positions.is_empty() {
            // Nothing left that its answer could feed.
            self.invalidate_prefetch();
        }
        held
    }

    /// Finds where each assigned partition not started yet starts: the
    /// group's commit, else `auto_offset_reset`.
    async fn start_assigned(&mut self) -> Result<(), ClientError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let unknown: BTreeSet<Key> = group
            .starting
            .iter()
            .filter(|(_, s)| **s == Starting::Unknown)
            .map(|(k, _)| k.clone())
            .collect();
        if !unknown.is_empty() {
            let committed = group.committed_offsets(&unknown, timeout).await?;
            // What was learnt is kept at once: a poll dropped while the
            // others reset does not ask again.
            for key in unknown {
                match committed.get(&key) {
                    Some(&start) => self.start(key, start, true),
                    None => {
                        if let Some(group) = &mut self.group {
                            group.starting.insert(key, Starting::NoCommit);
                        }
                    }
                }
            }
        }
        let Some(group) = &self.group else {
            return Ok(());
        };
        let (reset, group_id) = (group.auto_offset_reset, group.group_id.clone());
        let no_commit: Vec<Key> = group.starting.keys().cloned().collect();
        for key in no_commit {
            let to = match reset {
                OffsetReset::Earliest => SeekTo::Earliest,
                OffsetReset::Latest => SeekTo::Latest,
                OffsetReset::None => {
                    return Err(ClientError::Invalid(format!(
                        "group {group_id:?} has no committed offset for topic {:?} partition {} and auto_offset_reset is None",
                        key.0, key.1
                    )));
                }
            };
            let offset = offsets::resolve(&self.cluster, &self.config, &key.0, key.1, to).await?;
            let leader_epoch = self.leader_epoch_of(&key).await;
            self.start(
                key,
                CommitOffset {
                    offset,
                    leader_epoch,
                },
                false,
            );
        }
        Ok(())
    }

    /// Starts reading `key` at `start`, which the group holds as its
    /// commit when `committed`.
    fn start(&mut self, key: Key, start: CommitOffset, committed: bool) {
        let Some(group) = &mut self.group else {
            return;
        };
        if group.starting.remove(&key).is_none() {
            return;
        }
        if committed {
            group.committed.insert(key.clone(), start);
        }
        group.consumed.insert(key.clone(), start);
        self.positions.insert(key, start.offset);
    }

    /// The leader epoch the metadata gives `key`'s leader, or 0.
    async fn leader_epoch_of(&self, key: &Key) -> u64 {
        match self.cluster.topic(&key.0).await {
            Ok(t) => t
                .partitions
                .iter()
                .find(|p| p.partition == key.1)
                .map_or(0, |p| p.leader_epoch),
            Err(_) => 0,
        }
    }
}
