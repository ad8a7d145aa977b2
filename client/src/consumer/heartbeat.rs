//! The group member's background task: it owns the [`Membership`] state
//! machine, sends its heartbeats on time whether or not the caller is
//! polling, and builds and sends the member's commits, so that every
//! `OffsetCommit` carries the epoch of the moment and only partitions the
//! member owns. Commits go one at a time, in the order asked, each built
//! as it is sent: an older commit can never land after a newer one and
//! set an offset back.
//!
//! The consumer talks to it over one bounded queue of [`Command`]s and
//! learns that there is something to take (changes to the assignment, or a
//! failure) from a `watch` counter: a single slot, so a consumer that does
//! not poll never makes the task wait or grow. The changes taken come back
//! on a channel of one slot that the consumer keeps (not a reply per
//! request), so a poll dropped while waiting for them finds them at its
//! next call; the consumer asks for them only once the last ones arrived,
//! so the slot is always free. The task never waits on the consumer;
//! heartbeats and commits in flight are tasks of a `JoinSet`, so they are
//! aborted with it.
//!
//! The task ends when the consumer drops its end of the queue, after a
//! leave, or when aborted; it never outlives the consumer's handle on it
//! (`Group` aborts it when dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Key;
use super::membership::{Changes, CommitOffset, Membership, Phase};
use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::OffsetCommitRequest;
use crate::protocol::{ErrorCode, Request, Response};

#[cfg(test)]
mod tests;

/// Commands queued for the task, at most.
pub(crate) const COMMANDS_MAX: usize = 16;
/// Commits waiting their turn in the task, at most; more commands wait
/// in the queue.
pub(crate) const COMMITS_QUEUED_MAX: usize = 8;
/// How many times a commit refused as fenced is sent again when an answer
/// moved the member's epoch while it was in flight.
const COMMIT_EPOCH_RETRIES_MAX: u32 = 3;

/// A future the coordinator boundary returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The one way a member's requests reach its group's coordinator: find it,
/// send, and follow it as it moves, within `timeout`. An answer never
/// carries a coordinator-moved error (those are retried inside).
pub(crate) trait Coordinator: Send + Sync + std::fmt::Debug {
    /// Sends `request` to the group's coordinator.
    fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, ClientError>>;
}

/// The group's coordinator reached through the cluster
/// ([`crate::coordinator::coordinator_request`]).
#[derive(Debug)]
pub(crate) struct ClusterCoordinator {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) group: String,
}

impl Coordinator for ClusterCoordinator {
    fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, ClientError>> {
        Box::pin(crate::coordinator::coordinator_request(
            &self.cluster,
            &self.group,
            request,
            timeout,
        ))
    }
}

/// What the consumer asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Hand over the changes to the assignment
    /// ([`Membership::take_changes`]), or the failure that ended the
    /// membership, on the changes channel. Sent again only once the answer
    /// to the last one was received.
    Take,
    /// The consumer gave these revoked partitions up.
    Released(BTreeSet<Key>),
    /// Commit these offsets; the answer says whether the group took them.
    Commit {
        offsets: BTreeMap<Key, CommitOffset>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Leave the group, then end; answered once left (or given up).
    Leave(oneshot::Sender<()>),
}

/// The answer to [`Command::Take`].
pub(crate) type Taken = Result<Changes, ClientError>;

/// What finished in the task's `JoinSet`.
enum Done {
    Heartbeat(Result<Response, ClientError>),
    Commit(CommitJob, Result<(), ClientError>),
}

/// A commit in flight, kept to answer it or send it again.
struct CommitJob {
    offsets: BTreeMap<Key, CommitOffset>,
    reply: oneshot::Sender<Result<(), ClientError>>,
    epoch: i32,
    tries: u32,
}

/// Runs the member until the consumer goes away or it has left.
pub(crate) async fn run(
    coordinator: Arc<dyn Coordinator>,
    mut membership: Membership,
    mut commands: mpsc::Receiver<Command>,
    notify: watch::Sender<u64>,
    changes: mpsc::Sender<Taken>,
    request_timeout: Duration,
) {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let group = membership.group().to_string();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut heartbeat_in_flight = false;
    // Commits waiting, in order; `committing` while one is in flight.
    let mut queued: VecDeque<CommitJob> = VecDeque::new();
    let mut committing = false;
    let mut leaving: Vec<oneshot::Sender<()>> = Vec::new();
    // Whether the consumer was told of what it has not taken yet.
    let mut notified = false;
    loop {
        let news = membership.has_changes() || matches!(membership.phase(), Phase::Failed(_));
        if news && !notified {
            notify.send_modify(|n| *n = n.wrapping_add(1));
            notified = true;
        }
        if !heartbeat_in_flight && let Some(request) = membership.heartbeat(now_ms()) {
            heartbeat_in_flight = true;
            let coordinator = Arc::clone(&coordinator);
            in_flight.spawn(async move {
                Done::Heartbeat(
                    coordinator
                        .request(Request::ConsumerGroupHeartbeat(request), request_timeout)
                        .await,
                )
            });
        }
        if !leaving.is_empty() && matches!(membership.phase(), Phase::Left) {
            for reply in leaving {
                let _ = reply.send(());
            }
            return;
        }
        let wake_at = membership
            .next_heartbeat_at_ms()
            .map(|ms| start + Duration::from_millis(ms));
        tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok(done) = done else {
                    // Only an abort or a panic ends a request's task
                    // without an answer; the next heartbeat goes on time.
                    heartbeat_in_flight = false;
                    membership.on_failure(now_ms(), ClientError::Invalid("a group request's task failed".into()));
                    continue;
                };
                match done {
                    Done::Heartbeat(answer) => {
                        heartbeat_in_flight = false;
                        let now = now_ms();
                        match answer {
                            Ok(Response::ConsumerGroupHeartbeat(a)) => membership.on_answer(now, a),
                            Ok(other) => membership.on_failure(now, unexpected(&other)),
                            Err(e) => membership.on_failure(now, e),
                        }
                    }
                    Done::Commit(job, result) => {
                        finish_commit(&membership, &mut queued, job, result);
                        committing = next_commit(&coordinator, &membership, &mut in_flight, &mut queued, request_timeout);
                    }
                }
            }
            _ = sleep_until(wake_at), if !heartbeat_in_flight && wake_at.is_some() => {}
            command = commands.recv(), if queued.len() < COMMITS_QUEUED_MAX => {
                let Some(command) = command else {
                    // The consumer is gone.
                    return;
                };
                match command {
                    Command::Take => {
                        let taken = match membership.phase() {
                            Phase::Failed(e) => Err(e.clone()),
                            _ => Ok(membership.take_changes()),
                        };
                        if let Err(e) = changes.try_send(taken) {
                            // Only a consumer asking twice without reading
                            // could fill the slot, and it never does.
                            tracing::error!(group = %group, error = %e, "the consumer's changes could not be handed over");
                        }
                        notified = false;
                    }
                    Command::Released(partitions) => membership.released(now_ms(), &partitions),
                    Command::Commit { offsets, reply } => {
                        queued.push_back(CommitJob { offsets, reply, epoch: membership.member_epoch(), tries: 0 });
                        if !committing {
                            committing = next_commit(&coordinator, &membership, &mut in_flight, &mut queued, request_timeout);
                        }
                    }
                    Command::Leave(reply) => {
                        membership.leave(now_ms());
                        leaving.push(reply);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends the first queued commit that needs sending, built from the
/// membership of now; answers at once those the member may not make (or
/// that cover nothing). Returns whether one is in flight.
fn next_commit(
    coordinator: &Arc<dyn Coordinator>,
    membership: &Membership,
    in_flight: &mut JoinSet<Done>,
    queued: &mut VecDeque<CommitJob>,
    timeout: Duration,
) -> bool {
    while let Some(mut job) = queued.pop_front() {
        let request = match membership.commit_request(&job.offsets) {
            Ok(r) if r.topics.is_empty() => {
                let _ = job.reply.send(Ok(()));
                continue;
            }
            Ok(r) => r,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                continue;
            }
        };
        job.epoch = request.member_epoch;
        let coordinator = Arc::clone(coordinator);
        in_flight.spawn(async move {
            let result = send_commit(coordinator.as_ref(), request, timeout).await;
            Done::Commit(job, result)
        });
        return true;
    }
    false
}

/// Answers a finished commit, or puts it first in line again when it was
/// refused only because an answer moved the member's epoch while it was in
/// flight.
fn finish_commit(
    membership: &Membership,
    queued: &mut VecDeque<CommitJob>,
    mut job: CommitJob,
    result: Result<(), ClientError>,
) {
    let stale = matches!(
        result,
        Err(ClientError::Fenced {
            code: ErrorCode::FencedMemberEpoch,
            ..
        })
    ) && matches!(membership.phase(), Phase::Member)
        && membership.member_epoch() != job.epoch;
    if stale && job.tries < COMMIT_EPOCH_RETRIES_MAX {
        job.tries += 1;
        queued.push_front(job);
        return;
    }
    let _ = job.reply.send(result);
}

/// Sends one commit and reads its answer: the first partition refused
/// decides the error.
async fn send_commit(
    coordinator: &dyn Coordinator,
    request: OffsetCommitRequest,
    timeout: Duration,
) -> Result<(), ClientError> {
    let group = request.group.clone();
    let response = coordinator
        .request(Request::OffsetCommit(request), timeout)
        .await?;
    let Response::OffsetCommit(answer) = response else {
        return Err(unexpected(&response));
    };
    for t in &answer.topics {
        for p in &t.partitions {
            match p.error {
                ErrorCode::None => {}
                code @ (ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => {
                    return Err(ClientError::Fenced { group, code });
                }
                code => {
                    return Err(ClientError::Broker {
                        code,
                        message: format!(
                            "committing topic {:?} partition {} in group {group:?}",
                            t.name, p.partition
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(response: &Response) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::Unknown,
        message: format!("unexpected answer {:?}", response.api_key()),
    }
}
