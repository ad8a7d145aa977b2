//! Request handlers: one module per API behind one router, [`route`], each
//! turning a decoded request into a response. Errors a client should see
//! are typed codes inside the response; nothing here closes a connection.
//!
//! [`route`] is the only way in, so the one ordering promise a connection
//! gets is kept in one place: a produce is proposed before `route` returns
//! (its caller waits for that before it reads the next request), while
//! every other request starts only once its answer is polled, off the
//! reading task, so a slow answer never holds up the requests behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rill_client::protocol::messages::{InitProducerIdResponse, NO_BROKER};
use rill_client::protocol::{ErrorCode, Request, Response};
use rill_replication::BrokerId;

use crate::partition::{LeaderHint, Partition};
use crate::state::{Broker, FORWARDED_CLIENT_ID, Lookup};

mod api_versions;
mod brokers;
mod cluster_status;
mod fetch;
pub mod find_coordinator;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
pub(crate) mod produce;
mod register_broker;
mod topics;

pub use fetch::FETCH_MAX_WAIT_MS_LIMIT;
pub use produce::{PRODUCE_TIMEOUT_MS_LIMIT, StagedProduce};

/// A request after [`route`].
pub enum Routed {
    /// A produce after its first stage: every partition proposed (or
    /// refused); what is left is waiting for its `acks`.
    Produce(StagedProduce),
    /// Any other request, not started yet: its answer, worked out when
    /// polled.
    Answer(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Routed {
    /// The response once it is ready; `None` for a produce with `acks=0`
    /// (no response).
    pub async fn respond(self) -> Option<Response> {
        match self {
            Routed::Produce(staged) => produce::finish_produce(staged).await,
            Routed::Answer(answer) => Some(answer.await),
        }
    }
}

/// Who sent a request: what group membership records of a member, and
/// whether another broker forwarded it on a client's behalf.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The client id of the request header.
    pub client_id: String,
    /// The address the connection came from.
    pub host: String,
}

impl Caller {
    /// Whether another broker forwarded the request: it is never
    /// forwarded again.
    pub fn forwarded(&self) -> bool {
        self.client_id == FORWARDED_CLIENT_ID
    }
}

/// Routes one request to its API. A produce is staged before this returns
/// (see `produce::stage_produce`): produces routed one after another are
/// proposed in that order. Anything else returns at once, without waiting
/// for anything, as a [`Routed::Answer`] to poll.
pub async fn route(broker: &Arc<Broker>, request: Request, caller: &Caller) -> Routed {
    let broker = Arc::clone(broker);
    let forwarded = caller.forwarded();
    Routed::Answer(match request {
        Request::Produce(p) => return Routed::Produce(produce::stage_produce(&broker, p).await),
        Request::ApiVersions => Box::pin(async { api_versions::api_versions() }),
        Request::Metadata(m) => {
            Box::pin(async move { Response::Metadata(metadata::metadata(&broker, m)) })
        }
        Request::CreateTopics(c) => Box::pin(async move {
            Response::CreateTopics(topics::create_topics(&broker, c, forwarded).await)
        }),
        Request::FindCoordinator(r) => Box::pin(async move {
            Response::FindCoordinator(
                find_coordinator::find_coordinator(&broker, r, forwarded).await,
            )
        }),
        Request::DeleteTopics(d) => Box::pin(async move {
            Response::DeleteTopics(topics::delete_topics(&broker, d, forwarded).await)
        }),
        Request::Fetch(f) => {
            Box::pin(async move { Response::Fetch(fetch::fetch(&broker, f).await) })
        }
        Request::RegisterBroker(b) => Box::pin(async move {
            Response::RegisterBroker(register_broker::register_broker(&broker, b))
        }),
        Request::ClusterStatus => Box::pin(async move {
            Response::ClusterStatus(cluster_status::cluster_status(&broker).await)
        }),
        Request::ListOffsets(l) => {
            Box::pin(async move { Response::ListOffsets(list_offsets::list_offsets(&broker, l)) })
        }
        Request::OffsetCommit(c) => {
            Box::pin(
                async move { Response::OffsetCommit(offsets::offset_commit(&broker, c).await) },
            )
        }
        Request::OffsetFetch(f) => {
            Box::pin(async move { Response::OffsetFetch(offsets::offset_fetch(&broker, f).await) })
        }
        Request::ConsumerGroupHeartbeat(h) => {
            let caller = caller.clone();
            Box::pin(async move {
                Response::ConsumerGroupHeartbeat(groups::heartbeat(&broker, h, &caller).await)
            })
        }
        Request::ListGroups => {
            Box::pin(async move { Response::ListGroups(groups::list_groups(&broker)) })
        }
        Request::DescribeGroups(d) => {
            Box::pin(
                async move { Response::DescribeGroups(groups::describe_groups(&broker, d).await) },
            )
        }
        Request::AlterTopicConfigs(a) => Box::pin(async move {
            Response::AlterTopicConfigs(topics::alter_topic_configs(&broker, a, forwarded).await)
        }),
        Request::InitProducerId(_) => Box::pin(async move {
            Response::InitProducerId(match broker.init_producer_id(forwarded).await {
                Ok(producer_id) => InitProducerIdResponse {
                    error: ErrorCode::None,
                    producer_id,
                    producer_epoch: 0,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "no producer id given");
                    InitProducerIdResponse {
                        error: e.code(),
                        producer_id: -1,
                        producer_epoch: -1,
                    }
                }
            })
        }),
        Request::CreatePartitions(c) => Box::pin(async move {
            Response::CreatePartitions(topics::create_partitions(&broker, c, forwarded).await)
        }),
        Request::ChangeBrokers(c) => Box::pin(async move {
            Response::ChangeBrokers(brokers::change_brokers(&broker, c, forwarded).await)
        }),
        Request::JoinCluster(j) => Box::pin(async move {
            Response::JoinCluster(brokers::join_cluster(&broker, j, forwarded).await)
        }),
        Request::ReassignPartitions(r) => Box::pin(async move {
            Response::ReassignPartitions(topics::reassign_partitions(&broker, r, forwarded).await)
        }),
        Request::DescribeTopicConfigs(d) => Box::pin(async move {
            Response::DescribeTopicConfigs(topics::describe_topic_configs(&broker, d))
        }),
        Request::DeleteGroups(d) => {
            Box::pin(async move { Response::DeleteGroups(groups::delete_groups(&broker, d).await) })
        }
    })
}

/// A leader hint for the wire.
fn hint(leader: Option<BrokerId>) -> i32 {
    leader.map_or(NO_BROKER, |b| b.get() as i32)
}

/// The replica here of partition `index` of `topic` if it leads, or the
/// code a partition's answer refuses it with and where to try instead:
/// produce, fetch and list offsets refuse alike.
fn leader_here(
    broker: &Broker,
    topic: &str,
    index: u32,
) -> Result<Arc<Partition>, (ErrorCode, LeaderHint)> {
    let partition = replica_here(broker, topic, index)?;
    match partition.not_leader() {
        Some(refused) => Err(refused),
        None => Ok(partition),
    }
}

/// The replica here of partition `index` of `topic`, leader or not, or the
/// code a partition's answer refuses it with and where to try instead.
fn replica_here(
    broker: &Broker,
    topic: &str,
    index: u32,
) -> Result<Arc<Partition>, (ErrorCode, LeaderHint)> {
    match broker.lookup(topic, index) {
        Lookup::Here(p) => Ok(p),
        Lookup::Elsewhere { leader } => Err((ErrorCode::NotLeader, LeaderHint::guess(leader))),
        Lookup::Unknown => Err((ErrorCode::UnknownTopicOrPartition, LeaderHint::default())),
        Lookup::Stopped => Err((ErrorCode::StorageError, LeaderHint::default())),
    }
}
