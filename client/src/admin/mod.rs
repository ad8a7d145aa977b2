//! Administration: topics here (create, delete, list, describe), consumer
//! groups in `groups` (list, describe with offsets and lag, reset offsets,
//! delete), the offsets those look up at partition leaders in `offsets`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{Cluster, TopicInfo};
use crate::error::ClientError;
use crate::protocol::messages::{
    AlterTopicConfigsRequest, BrokerAction, ChangeBrokersRequest, ChangeBrokersResponse,
    ConfigEntry, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeTopicConfigsRequest, JoinClusterRequest, JoinClusterResponse, NewTopic, PartitionMove,
    ReassignPartitionsRequest, TopicConfigChange, TopicResults,
};
use crate::protocol::{ErrorCode, Request, Response};

mod groups;
mod offsets;

pub use groups::{GroupDescription, GroupListing, GroupMember, PartitionLag, PartitionOffset};
pub use offsets::ResetTo;

/// How long admin requests may take, ms, retries included.
pub const ADMIN_TIMEOUT_MS: u64 = 30_000;
/// Longest pause between two tries of an admin request, ms.
pub const ADMIN_RETRY_MS_MAX: u64 = 1_000;

/// Topic and consumer group administration over a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
    /// How long a topic change is retried, ms (default
    /// [`ADMIN_TIMEOUT_MS`]).
    timeout_ms: u64,
}

/// Topics whose settings one request asks for, at most (well under a
/// broker's `metadata_max_topics`).
pub const CONFIGS_PER_REQUEST: usize = 100;

/// What is left of the time until `deadline`.
pub(super) fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The error for an answer of another API than the one asked.
pub(super) fn unexpected(response: &Response) -> ClientError {
    ClientError::Invalid(format!(
        "unexpected {:?} answer from the broker",
        response.api_key()
    ))
}

fn first_result(r: Response) -> Result<(), ClientError> {
    let (Response::CreateTopics(TopicResults { results })
    | Response::DeleteTopics(TopicResults { results })
    | Response::AlterTopicConfigs(TopicResults { results })
    | Response::CreatePartitions(TopicResults { results })
    | Response::ReassignPartitions(TopicResults { results })) = r
    else {
        return Err(ClientError::code(ErrorCode::Unknown));
    };
    match results.into_iter().next() {
        Some(r) if r.error.is_ok() => Ok(()),
        Some(r) => Err(ClientError::Broker {
            code: r.error,
            message: r.message,
        }),
        None => Err(ClientError::code(ErrorCode::Unknown)),
    }
}

impl Admin {
    /// Administration through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Admin {
        Admin {
            cluster,
            timeout_ms: ADMIN_TIMEOUT_MS,
        }
    }

    /// The same, retrying topic changes (create, delete, alter) for up to
    /// `timeout_ms` instead of [`ADMIN_TIMEOUT_MS`].
    pub fn with_timeout_ms(self, timeout_ms: u64) -> Admin {
        Admin { timeout_ms, ..self }
    }

    /// The cluster it talks to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: Vec<(String, String)>,
    ) -> Result<(), ClientError> {
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs,
            }],
            timeout_ms: u32::try_from(self.timeout_ms).unwrap_or(u32::MAX),
        });
        // A create that went through before a retry is not taken for
        // success: another client may have made a topic of that name.
        self.with_retries(request, None).await
    }

    /// Sends an admin request to any broker (which forwards it to the
    /// controller), retrying retriable errors (no controller yet, a broker
    /// down) for up to its timeout ([`ADMIN_TIMEOUT_MS`] by default).
    ///
    /// A retriable error can hide a request that went through (the
    /// controller committed it, then lost its leadership before it could
    /// answer). So after such a try, `done` (the error a repeat of an
    /// applied request gets: an unknown topic for a delete) counts as
    /// success.
    async fn with_retries(
        &self,
        request: Request,
        done: Option<ErrorCode>,
    ) -> Result<(), ClientError> {
        let deadline = crate::cluster::deadline_after(Duration::from_millis(self.timeout_ms));
        let mut pause_ms = 50;
        let mut maybe_applied = false;
        // The last error a broker answered: what a try that then reached
        // no broker in time is reported as (a controller without a
        // majority, rather than a refused connection).
        let mut answered: Option<ClientError> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = match self.cluster.any(request.clone(), left).await {
                Ok(r) => first_result(r),
                Err(e) => Err(e),
            };
            let outcome = match outcome {
                Err(e @ ClientError::Broker { .. }) => {
                    answered = Some(e.clone());
                    Err(e)
                }
                Err(e) if e.is_retriable() && tokio::time::Instant::now() >= deadline => {
                    Err(answered
                        .take()
                        .unwrap_or_else(|| ClientError::ControllerUnanswered {
                            waited_ms: self.timeout_ms,
                            last: e.to_string(),
                        }))
                }
                other => other,
            };
            match outcome {
                Err(ClientError::Broker { code, .. }) if maybe_applied && Some(code) == done => {
                    tracing::debug!(?code, "an earlier try of this admin request went through");
                    return Ok(());
                }
                // A topic that is not there stays not there for an admin
                // request.
                Err(
                    e @ ClientError::Broker {
                        code: ErrorCode::UnknownTopicOrPartition,
                        ..
                    },
                ) => return Err(e),
                Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "admin request will be retried");
                    maybe_applied = true;
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    pause_ms = (pause_ms * 2).min(ADMIN_RETRY_MS_MAX);
                }
                other => return other,
            }
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
        });
        let outcome = self
            .with_retries(request, Some(ErrorCode::UnknownTopicOrPartition))
            .await;
        self.cluster.invalidate(name);
        outcome
    }

    /// Adds partitions to a topic, up to `partitions` in all (never
    /// fewer); producers and consumers see them with their next metadata.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        let request = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![(name.to_string(), partitions)],
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
        });
        let outcome = self.with_retries(request, None).await;
        self.cluster.invalidate(name);
        outcome
    }

    /// Changes a live topic's settings: `set` (KEY=VALUE pairs) replaces,
    /// `delete` takes settings back to their defaults.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> Result<(), ClientError> {
        let request = Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            topics: vec![TopicConfigChange {
                name: name.to_string(),
                set,
                delete,
            }],
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
        });
        self.with_retries(request, None).await
    }

    /// Every setting of a topic, sorted by key, each with where its value
    /// comes from.
    pub async fn describe_topic_configs(
        &self,
        name: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let request = Request::DescribeTopicConfigs(DescribeTopicConfigsRequest {
            names: vec![name.to_string()],
        });
        let timeout = Duration::from_millis(ADMIN_TIMEOUT_MS);
        match self.cluster.any(request, timeout).await? {
            Response::DescribeTopicConfigs(d) => match d.topics.into_iter().next() {
                Some(t) if t.error.is_ok() => Ok(t.configs),
                Some(t) => Err(ClientError::Broker {
                    code: t.error,
                    message: t.message,
                }),
                None => Err(ClientError::code(ErrorCode::Unknown)),
            },
            _ => Err(ClientError::code(ErrorCode::Unknown)),
        }
    }

    /// The settings of each of `names` that exists, by name, asked
    /// [`CONFIGS_PER_REQUEST`] topics at a time.
    pub async fn describe_topics_configs(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, Vec<ConfigEntry>>, ClientError> {
        let timeout = Duration::from_millis(ADMIN_TIMEOUT_MS);
        let mut all = std::collections::BTreeMap::new();
        for chunk in names.chunks(CONFIGS_PER_REQUEST) {
            let request = Request::DescribeTopicConfigs(DescribeTopicConfigsRequest {
                names: chunk.to_vec(),
            });
            let Response::DescribeTopicConfigs(d) = self.cluster.any(request, timeout).await?
            else {
                return Err(ClientError::code(ErrorCode::Unknown));
            };
            all.extend(
                d.topics
                    .into_iter()
                    .filter(|t| t.error.is_ok())
                    .map(|t| (t.name, t.configs)),
            );
        }
        Ok(all)
    }

    /// Every topic's name, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let m = self.cluster.refresh(None).await?;
        let mut names: Vec<String> = m.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    /// Moves partition `partition` of `name` to the brokers `replicas`
    /// (the preferred leader first): answered once the controller has
    /// recorded the move, which then runs while the partition serves (see
    /// [`Admin::await_replicas`]). The same move again is accepted; another
    /// move of a partition already moving is refused until it ends.
    pub async fn reassign_partition(
        &self,
        name: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<(), ClientError> {
        let request = Request::ReassignPartitions(ReassignPartitionsRequest {
            moves: vec![PartitionMove {
                topic: name.to_string(),
                partition,
                replicas: replicas.to_vec(),
            }],
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
        });
        self.with_retries(request, None).await
    }

    /// Spreads replicas and preferred leaders over the brokers that host
    /// replicas (`Balance`, `broker_id` 0), or takes broker `broker_id` out
    /// of hosting replicas (`Remove`: no new replica goes to it, and its
    /// replicas move away) or back (`Add`; a broker new to the cluster
    /// joins it at `peer_addr`, `HOST:PORT` of its peer listener, which is
    /// empty otherwise). Answered with the partition moves started, which
    /// run while the partitions serve (see [`Admin::await_replicas`]);
    /// retriable errors (no controller yet) are retried for up to
    /// [`ADMIN_TIMEOUT_MS`].
    pub async fn change_brokers(
        &self,
        action: BrokerAction,
        broker_id: u32,
        peer_addr: &str,
    ) -> Result<ChangeBrokersResponse, ClientError> {
        let request = Request::ChangeBrokers(ChangeBrokersRequest {
            action,
            broker_id,
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
            peer_addr: peer_addr.to_string(),
        });
        self.until_answered(request, |r| match r {
            Response::ChangeBrokers(r) if r.error.is_ok() => Ok(Ok(r)),
            Response::ChangeBrokers(r) => Ok(Err(ClientError::Broker {
                code: r.error,
                message: r.message,
            })),
            other => Err(other),
        })
        .await
    }

    /// Has broker `broker_id`, new to the cluster, join it with its peer
    /// listener at `peer_addr` (`HOST:PORT`); answered with the controller
    /// group's first voters and every other broker's peer address. Asking
    /// again once joined answers the same. Retriable errors are retried
    /// for up to [`ADMIN_TIMEOUT_MS`].
    pub async fn join_cluster(
        &self,
        broker_id: u32,
        peer_addr: &str,
    ) -> Result<JoinClusterResponse, ClientError> {
        let request = Request::JoinCluster(JoinClusterRequest {
            broker_id,
            peer_addr: peer_addr.to_string(),
            timeout_ms: ADMIN_TIMEOUT_MS as u32,
        });
        self.until_answered(request, |r| match r {
            Response::JoinCluster(r) if r.error.is_ok() => Ok(Ok(r)),
            Response::JoinCluster(r) => Ok(Err(ClientError::Broker {
                code: r.error,
                message: r.message,
            })),
            other => Err(other),
        })
        .await
    }

    /// Sends `request` to any broker until `answer` takes its response
    /// (`Err` for a response of another API) with an answer that is not a
    /// retriable error, for up to [`ADMIN_TIMEOUT_MS`].
    async fn until_answered<T>(
        &self,
        request: Request,
        answer: impl Fn(Response) -> Result<Result<T, ClientError>, Response>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
        let mut pause_ms = 50;
        loop {
            let e = match self.cluster.any(request.clone(), left(deadline)).await {
                Ok(response) => match answer(response) {
                    Ok(Ok(t)) => return Ok(t),
                    Ok(Err(e)) => e,
                    Err(other) => return Err(unexpected(&other)),
                },
                Err(e) => e,
            };
            if !e.is_retriable() || Instant::now() >= deadline {
                return Err(e);
            }
            tracing::debug!(error = %e, api = ?request.api_key(), "will be retried");
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(ADMIN_RETRY_MS_MAX);
        }
    }

    /// Waits until the metadata shows partition `partition` of `name` on
    /// exactly `replicas`, in that order (a move has ended), asking every
    /// `poll` for at most `timeout`; `false` when it has not by then.
    pub async fn await_replicas(
        &self,
        name: &str,
        partition: u32,
        replicas: &[u32],
        poll: Duration,
        timeout: Duration,
    ) -> Result<bool, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = match self.describe_topic(name).await {
                Ok(t) => t
                    .partitions
                    .iter()
                    .any(|p| p.partition == partition && p.replicas == replicas),
                Err(e) if e.is_retriable() => false,
                Err(e) => return Err(e),
            };
            if done {
                return Ok(true);
            }
            if Instant::now() + poll > deadline {
                return Ok(false);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One topic's partitions with leaders, replicas, log start offsets and
    /// high watermarks, freshly asked for.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        self.cluster.invalidate(name);
        self.cluster.topic(name).await
    }
}
