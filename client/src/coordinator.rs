//! A consumer group's coordinator: finding it, and the one way group
//! requests reach it ([`coordinator_request`]), for the admin client and
//! the group consumer alike.
//!
//! A group's coordinator is the leader of the `__consumer_offsets`
//! partition its id hashes to, so it moves whenever that leadership does,
//! and for a while after a move it may not know the group yet. Any broker
//! answers `FindCoordinator`; the coordinator found is cached per group in
//! the [`Cluster`] and forgotten as soon as a request to it fails. An
//! answer saying the coordinator moved or is not ready (`NotCoordinator`,
//! `CoordinatorNotAvailable`, `CoordinatorLoadInProgress`), or a
//! connection that fails, sends the request round again: find the
//! coordinator, pause, retry, all within the caller's timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::FindCoordinatorRequest;
use crate::protocol::{ErrorCode, Request, Response};

/// The first pause before finding a coordinator again, ms; it doubles up
/// to [`COORDINATOR_RETRY_MS_MAX`].
pub(crate) const COORDINATOR_RETRY_MS: u64 = 100;
/// The longest pause between two tries of a group request, ms.
pub(crate) const COORDINATOR_RETRY_MS_MAX: u64 = 1_000;
/// The longest group id the coordinator accepts, bytes.
pub(crate) const GROUP_ID_BYTES_MAX: usize = 255;

/// Each group's coordinator as last found (`host:port`), so a steady
/// stream of requests (a member's heartbeats) asks for it only once.
#[derive(Debug, Default)]
pub(crate) struct Coordinators {
    by_group: Mutex<HashMap<String, String>>,
}

impl Coordinators {
    fn get(&self, group: &str) -> Option<String> {
        self.by_group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    fn remember(&self, group: &str, addr: &str) {
        self.by_group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), addr.to_string());
    }

    fn forget(&self, group: &str) {
        self.by_group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group);
    }
}

/// Whether `code` says the coordinator moved or is not ready yet: find it
/// again and retry.
pub(crate) fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

/// The first error anywhere in a group API's answer that says the
/// coordinator moved or is not ready (see [`coordinator_moved`]). An
/// offset commit carries its errors per partition; all of one group's
/// partitions are at one coordinator, so one such error means the whole
/// request went to the wrong place.
pub(crate) fn moved_error(response: &Response) -> Option<ErrorCode> {
    let mut codes: Vec<ErrorCode> = Vec::new();
    match response {
        Response::OffsetCommit(c) => codes.extend(
            c.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error)),
        ),
        Response::OffsetFetch(f) => {
            codes.push(f.error);
            codes.extend(
                f.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error)),
            );
        }
        Response::ConsumerGroupHeartbeat(h) => codes.push(h.error),
        Response::ListGroups(l) => codes.push(l.error),
        Response::DescribeGroups(d) => codes.extend(d.groups.iter().map(|g| g.error)),
        Response::DeleteGroups(d) => codes.extend(d.groups.iter().map(|g| g.error)),
        _ => {}
    }
    codes.into_iter().find(|&c| coordinator_moved(c))
}

/// Refuses a group id the coordinator would refuse (`InvalidGroupId`),
/// before anything is sent.
pub(crate) fn check_group_id(group: &str) -> Result<(), ClientError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(ClientError::Invalid(format!(
            "a group id is 1 to {GROUP_ID_BYTES_MAX} bytes, not {}",
            group.len()
        )));
    }
    Ok(())
}

/// A group request's answer from its coordinator.
#[derive(Debug)]
pub(crate) struct CoordinatorAnswer {
    /// The answer, with no coordinator error in it.
    pub(crate) response: Response,
    /// Whether an earlier try may have reached the coordinator and been
    /// applied (its connection failed after sending), so this answer may
    /// be to a repeat: a deletion repeated finds the group gone.
    pub(crate) maybe_repeated: bool,
}

/// Sends `request`, which concerns `group` alone, to the group's
/// coordinator and returns the answer, finding the coordinator again and
/// retrying while it moves, is not ready, or cannot be reached, for at
/// most `timeout` in all.
///
/// Errors other than those inside the answer: `Invalid` for a group id the
/// coordinator would refuse, a non-retriable error at once (such as a
/// broker that does not serve the API), and once `timeout` is spent the
/// last retriable error met, or `Timeout`.
pub(crate) async fn coordinator_request(
    cluster: &Cluster,
    group: &str,
    request: Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    Ok(coordinator_call(cluster, group, request, timeout)
        .await?
        .response)
}

/// As [`coordinator_request`], also saying whether the answer may be to a
/// repeat of a request applied already.
pub(crate) async fn coordinator_call(
    cluster: &Cluster,
    group: &str,
    request: Request,
    timeout: Duration,
) -> Result<CoordinatorAnswer, ClientError> {
    check_group_id(group)?;
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        ms: timeout.as_millis() as u64,
    };
    let mut pause_ms = COORDINATOR_RETRY_MS;
    let mut maybe_applied = false;
    loop {
        let attempt = async {
            let addr = match cluster.coordinators().get(group) {
                Some(addr) => addr,
                None => {
                    let addr = find_coordinator_once(cluster, group, deadline).await?;
                    cluster.coordinators().remember(group, &addr);
                    addr
                }
            };
            let connection = cluster.connection(&addr).await.map_err(|e| (e, false))?;
            let left = deadline.saturating_duration_since(Instant::now());
            let response = connection
                .request(request.clone(), left)
                .await
                // Sent, perhaps applied, and the answer lost.
                .map_err(|e| (e, true))?;
            match moved_error(&response) {
                Some(code) => Err((ClientError::code(code), false)),
                None => Ok(response),
            }
        };
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(response)) => {
                return Ok(CoordinatorAnswer {
                    response,
                    maybe_repeated: maybe_applied,
                });
            }
            Ok(Err((error, sent))) => {
                maybe_applied |= sent;
                error
            }
        };
        if !error.is_retriable() {
            return Err(error);
        }
        cluster.coordinators().forget(group);
        let pause = Duration::from_millis(pause_ms);
        if Instant::now() + pause >= deadline {
            return Err(error);
        }
        tracing::debug!(group, %error, "group request will be retried at the coordinator found again");
        tokio::time::sleep(pause).await;
        pause_ms = (pause_ms * 2).min(COORDINATOR_RETRY_MS_MAX);
    }
}

/// Asks any broker once for `group`'s coordinator: its `host:port`. The
/// error says whether the request was sent to the coordinator (never: this
/// is before it).
async fn find_coordinator_once(
    cluster: &Cluster,
    group: &str,
    deadline: Instant,
) -> Result<String, (ClientError, bool)> {
    let left = deadline.saturating_duration_since(Instant::now());
    let request = Request::FindCoordinator(FindCoordinatorRequest {
        group: group.to_string(),
    });
    let response = cluster.any(request, left).await.map_err(|e| (e, false))?;
    let Response::FindCoordinator(found) = response else {
        return Err((ClientError::code(ErrorCode::Unknown), false));
    };
    if !found.error.is_ok() {
        return Err((ClientError::code(found.error), false));
    }
    // A success naming no broker is as good as none found yet.
    if found.coordinator < 0 || found.host.is_empty() || found.port == 0 {
        return Err((ClientError::code(ErrorCode::CoordinatorNotAvailable), false));
    }
    Ok(format!("{}:{}", found.host, found.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{
        DeleteGroupsResponse, DeletedGroup, OffsetCommitPartitionResponse, OffsetCommitResponse,
        OffsetCommitTopicResponse,
    };

    #[test]
    fn a_moved_coordinator_is_seen_in_any_partition_of_a_commit() {
        let commit = |errors: &[ErrorCode]| {
            Response::OffsetCommit(OffsetCommitResponse {
                topics: vec![OffsetCommitTopicResponse {
                    name: "t".into(),
                    partitions: errors
                        .iter()
                        .enumerate()
                        .map(|(i, &error)| OffsetCommitPartitionResponse {
                            partition: i as u32,
                            error,
                        })
                        .collect(),
                }],
            })
        };
        assert_eq!(moved_error(&commit(&[ErrorCode::None; 2])), None);
        assert_eq!(
            moved_error(&commit(&[ErrorCode::None, ErrorCode::NotCoordinator])),
            Some(ErrorCode::NotCoordinator)
        );
        // Other errors are the caller's to read.
        assert_eq!(moved_error(&commit(&[ErrorCode::FencedMemberEpoch])), None);
    }

    #[test]
    fn a_group_level_error_that_is_not_a_move_is_left_to_the_caller() {
        let deleted = |error| {
            Response::DeleteGroups(DeleteGroupsResponse {
                groups: vec![DeletedGroup {
                    group: "g".into(),
                    error,
                }],
            })
        };
        assert_eq!(moved_error(&deleted(ErrorCode::NonEmptyGroup)), None);
        assert_eq!(
            moved_error(&deleted(ErrorCode::CoordinatorLoadInProgress)),
            Some(ErrorCode::CoordinatorLoadInProgress)
        );
    }

    #[test]
    fn group_ids_outside_1_to_255_bytes_are_refused_before_sending() {
        assert!(check_group_id("").is_err());
        assert!(check_group_id(&"g".repeat(256)).is_err());
        assert!(check_group_id(&"g".repeat(255)).is_ok());
        assert!(check_group_id("orders").is_ok());
    }
}
