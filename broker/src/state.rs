//! The broker as the request handlers see it: the cluster metadata applied
//! here, the partition replicas open here, and the way to the controller.
//!
//! Topics live in the controller's log (see [`crate::metadata`]); every
//! broker applies it and opens the replicas assigned to it (see
//! [`crate::raft`]). An admin request arriving at a broker that does
//! not lead the controller group is forwarded to the one that does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_client::connection::Connection;
use rill_client::protocol::messages::{
    AlterTopicConfigsRequest, BrokerMetadata, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, InitProducerIdRequest, NewTopic, PartitionMove, ReassignPartitionsRequest,
    TopicConfigChange, TopicResults,
};
use rill_client::protocol::{ErrorCode, Request, Response};
use rill_replication::BrokerId;

use crate::coordinator::{Coordinator, GroupSettings};
use crate::error::BrokerError;
use crate::limits::ClientLimits;
use crate::metadata::{BrokerInfo, ClusterImage, MetadataCommand, Outcome};
use crate::partition::{Partition, TimestampBounds};
use crate::raft::{NotController, Published, RaftHandle};

/// Longest an admin request waits for its change to be applied here, ms.
pub const IMAGE_WAIT_MS: u64 = 10_000;
/// How long a forwarded admin request may take, ms.
pub const FORWARD_TIMEOUT_MS: u64 = 30_000;

/// Producer ids a broker takes from the controller at a time.
pub const PRODUCER_ID_BLOCK: u32 = 1_000;

/// The client id brokers use when they forward admin requests to the
/// controller; such a request is never forwarded again.
pub const FORWARDED_CLIENT_ID: &str = "rill-broker-forward";

/// Where a partition is served from, as this broker knows it.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A replica is open here.
    Here(Arc<Partition>),
    /// The partition exists but has no replica here; `leader` is a hint
    /// (its preferred leader).
    Elsewhere {
        /// Where to try.
        leader: Option<BrokerId>,
    },
    /// No such topic or partition.
    Unknown,
    /// The replica here stopped after a storage failure and is not open.
    Stopped,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    /// This broker's id.
    pub node_id: BrokerId,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// The Raft thread, which writes every log.
    pub raft: RaftHandle,
    /// What the Raft thread publishes: metadata, replicas, the controller.
    pub published: Arc<Published>,
    /// What clients may make this broker hold.
    pub limits: ClientLimits,
    /// The group coordinator of the offsets partitions this broker leads.
    pub groups: Coordinator,
    /// The timestamp bounds of topics that set none (this broker's
    /// settings), as topic descriptions show them.
    pub timestamps: TimestampBounds,
    /// The producer ids this broker may still hand out. Guards the range
    /// (and the taking of a new one, one at a time: tokio's lock, held
    /// across the controller's answer).
    producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// Connections to controllers for forwarded admin requests, by
    /// address. Guards the map only; connecting happens outside it.
    forward: Mutex<HashMap<String, Arc<Connection>>>,
    /// The peer addresses this broker started with (its `--peers`, or
    /// those it joined with), this broker's included: what a broker
    /// joining is told, with the image's later ones. Empty for a broker
    /// without peers.
    pub peers: BTreeMap<BrokerId, String>,
}

impl Broker {
    /// A broker over a running Raft thread.
    // Each argument is one of the broker's settings or parts, named; a
    // struct of them would only be built here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: BrokerId,
        advertised_host: String,
        advertised_port: u16,
        raft: RaftHandle,
        published: Arc<Published>,
        limits: ClientLimits,
        groups: GroupSettings,
        timestamps: TimestampBounds,
        peers: BTreeMap<BrokerId, String>,
    ) -> Broker {
        Broker {
            node_id,
            advertised_host,
            advertised_port,
            raft,
            published,
            limits,
            groups: Coordinator::new(groups),
            timestamps,
            producer_ids: tokio::sync::Mutex::new(0..0),
            forward: Mutex::default(),
            peers,
        }
    }

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.node_id
    }

    /// The cluster metadata as applied here.
    pub fn image(&self) -> Arc<ClusterImage> {
        self.published.image.borrow().clone()
    }

    /// The controller's leader as known here.
    pub fn controller(&self) -> Option<BrokerId> {
        *self.published.controller.borrow()
    }

    /// Where partition `index` of `topic` is served.
    pub fn lookup(&self, topic: &str, index: u32) -> Lookup {
        let image = self.image();
        let Some(t) = image.topics.get(topic) else {
            return Lookup::Unknown;
        };
        if index >= t.partitions() {
            return Lookup::Unknown;
        }
        match self.published.partition(t.group(index)) {
            Some(p) => Lookup::Here(p),
            None if self.published.is_stopped(t.group(index)) => Lookup::Stopped,
            None => Lookup::Elsewhere {
                leader: t.replicas[index as usize].first().copied(),
            },
        }
    }

    /// The replica of partition `index` of `topic` here, if any.
    pub fn partition(&self, topic: &str, index: u32) -> Option<Arc<Partition>> {
        match self.lookup(topic, index) {
            Lookup::Here(p) => Some(p),
            _ => None,
        }
    }

    /// Creates a topic through the controller.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(String, String)],
        forwarded: bool,
    ) -> Result<(), BrokerError> {
        let command = MetadataCommand::CreateTopic {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            replication_factor,
            configs: configs.to_vec(),
            // The controller leader sets its own.
            max_partition_replicas: None,
        };
        let forward = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs.to_vec(),
            }],
            timeout_ms: FORWARD_TIMEOUT_MS as u32,
        });
        self.admin(command, forward, forwarded).await?;
        self.await_image(|i| i.topics.contains_key(name)).await;
        tracing::info!(
            topic = name,
            partitions,
            replication_factor,
            "created topic"
        );
        Ok(())
    }

    /// Deletes a topic through the controller.
    pub async fn delete_topic(&self, name: &str, forwarded: bool) -> Result<(), BrokerError> {
        let command = MetadataCommand::DeleteTopic {
            name: name.to_string(),
        };
        let forward = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: FORWARD_TIMEOUT_MS as u32,
        });
        self.admin(command, forward, forwarded).await?;
        self.await_image(|i| !i.topics.contains_key(name)).await;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Adds partitions to a topic through the controller, up to
    /// `partitions` in all.
    pub async fn add_partitions(
        &self,
        name: &str,
        partitions: u32,
        forwarded: bool,
    ) -> Result<(), BrokerError> {
        let command = MetadataCommand::AddPartitions {
            name: name.to_string(),
            partitions,
            // The controller leader sets its own.
            max_partition_replicas: None,
        };
        let forward = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![(name.to_string(), partitions)],
            timeout_ms: FORWARD_TIMEOUT_MS as u32,
        });
        self.admin(command, forward, forwarded).await?;
        self.await_image(|i| {
            i.topics
                .get(name)
                .is_none_or(|t| t.partitions() >= partitions)
        })
        .await;
        tracing::info!(topic = name, partitions, "added partitions");
        Ok(())
    }

    /// Records a move of partition `partition` of `name` to `replicas`
    /// through the controller; the partition's leader carries it out.
    pub async fn reassign_partition(
        &self,
        name: &str,
        partition: u32,
        replicas: &[u32],
        forwarded: bool,
    ) -> Result<(), BrokerError> {
        let command = MetadataCommand::ReassignPartition {
            name: name.to_string(),
            partition,
            replicas: replicas.iter().map(|b| u64::from(*b)).collect(),
        };
        let forward = Request::ReassignPartitions(ReassignPartitionsRequest {
            moves: vec![PartitionMove {
                topic: name.to_string(),
                partition,
                replicas: replicas.to_vec(),
            }],
            timeout_ms: FORWARD_TIMEOUT_MS as u32,
        });
        self.admin(command, forward, forwarded).await?;
        tracing::info!(
            topic = name,
            partition,
            ?replicas,
            "partition move recorded"
        );
        Ok(())
    }

    /// Changes a live topic's settings through the controller: `set`
    /// replaces, `delete` takes back to defaults.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
        forwarded: bool,
    ) -> Result<(), BrokerError> {
        let command = MetadataCommand::AlterTopicConfig {
            name: name.to_string(),
            set: set.to_vec(),
            delete: delete.to_vec(),
        };
        let forward = Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            topics: vec![TopicConfigChange {
                name: name.to_string(),
                set: set.to_vec(),
                delete: delete.to_vec(),
            }],
            timeout_ms: FORWARD_TIMEOUT_MS as u32,
        });
        self.admin(command, forward, forwarded).await?;
        let wanted = crate::metadata::altered(
            &self
                .image()
                .topics
                .get(name)
                .map(|t| t.overrides.clone())
                .unwrap_or_default(),
            set,
            delete,
        );
        // Applied here once this broker's image holds the new settings (the
        // proposer's does at once; a forwarding broker's a little later).
        self.await_image(|i| {
            i.topics
                .get(name)
                .is_none_or(|t| t.overrides == wanted || set.is_empty() && delete.is_empty())
        })
        .await;
        tracing::info!(topic = name, ?set, ?delete, "changed topic settings");
        Ok(())
    }

    /// Registers this broker's client address with the controller. When
    /// another broker leads the controller, the Raft thread sends the
    /// registration there over the authenticated peer connection (never a
    /// client port) and this answers `NotController`: the caller checks
    /// the metadata again later.
    pub async fn register(&self, broker: &BrokerMetadata) -> Result<(), BrokerError> {
        let command = MetadataCommand::RegisterBroker {
            id: BrokerId(u64::from(broker.broker_id)),
            host: broker.host.clone(),
            port: broker.port,
        };
        let proposed = tokio::time::timeout(
            Duration::from_millis(FORWARD_TIMEOUT_MS),
            self.raft.metadata(command),
        )
        .await;
        match proposed {
            Ok(Ok(Ok(Outcome::Done))) => Ok(()),
            Ok(Ok(Ok(Outcome::Refused(code, message)))) => {
                Err(BrokerError::Refused { code, message })
            }
            Ok(Ok(Err(NotController { leader }))) => Err(BrokerError::RegistrationSent { leader }),
            Ok(Err(_)) | Err(_) => Err(BrokerError::TimedOut {
                what: "registration",
            }),
        }
    }

    /// Waits (at most [`IMAGE_WAIT_MS`]) until the metadata applied here
    /// satisfies `done`: a client that changed the metadata through this
    /// broker sees the change in the next answer it gets from it.
    async fn await_image(&self, done: impl Fn(&ClusterImage) -> bool) {
        let mut rx = self.published.image.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_millis(IMAGE_WAIT_MS),
            rx.wait_for(|i| done(i)),
        )
        .await;
    }

    /// Whether this broker's address is in the metadata as advertised.
    pub fn registered(&self) -> bool {
        self.image().brokers.get(&self.id())
            == Some(&BrokerInfo {
                host: self.advertised_host.clone(),
                port: self.advertised_port,
            })
    }

    /// Proposes `command` when this broker leads the controller; forwards
    /// `request` to the controller otherwise.
    /// A request that was forwarded already (`forwarded`) is not forwarded
    /// again: two brokers that each think the other leads would pass it
    /// back and forth.
    pub async fn admin(
        &self,
        command: MetadataCommand,
        request: Request,
        forwarded: bool,
    ) -> Result<(), BrokerError> {
        let proposed = tokio::time::timeout(
            Duration::from_millis(FORWARD_TIMEOUT_MS),
            self.raft.metadata(command),
        )
        .await
        .map_err(|_| BrokerError::TimedOut { what: "change" })?;
        match proposed {
            Ok(Ok(Outcome::Done)) => Ok(()),
            Ok(Ok(Outcome::Refused(code, message))) => Err(BrokerError::Refused { code, message }),
            Ok(Err(NotController { leader: Some(l) })) if l != self.id() && !forwarded => {
                self.forward(l, request).await
            }
            Ok(Err(_)) | Err(_) => Err(BrokerError::NoController),
        }
    }

    async fn forward(&self, to: BrokerId, request: Request) -> Result<(), BrokerError> {
        match self.forward_request(to, request).await? {
            Response::CreateTopics(TopicResults { results })
            | Response::DeleteTopics(TopicResults { results })
            | Response::AlterTopicConfigs(TopicResults { results })
            | Response::CreatePartitions(TopicResults { results })
            | Response::ReassignPartitions(TopicResults { results }) => {
                match results.into_iter().next() {
                    Some(r) if r.error.is_ok() => Ok(()),
                    Some(r) => Err(BrokerError::Refused {
                        code: r.error,
                        message: r.message,
                    }),
                    None => Err(BrokerError::EmptyAnswer),
                }
            }
            _ => Err(BrokerError::UnexpectedAnswer),
        }
    }

    /// Sends `request` to broker `to` (a controller, or a partition
    /// leader asked for high watermarks) and returns its answer, within
    /// `FORWARD_TIMEOUT_MS`, on the connection kept for that broker.
    pub(crate) async fn request_to(
        &self,
        to: BrokerId,
        request: Request,
    ) -> Result<Response, BrokerError> {
        self.forward_request(to, request).await
    }

    async fn forward_request(
        &self,
        to: BrokerId,
        request: Request,
    ) -> Result<Response, BrokerError> {
        let Some(info) = self.image().brokers.get(&to).cloned() else {
            return Err(BrokerError::ControllerUnregistered { controller: to });
        };
        let addr = format!("{}:{}", info.host, info.port);
        let timeout = Duration::from_millis(FORWARD_TIMEOUT_MS);
        let cached = self
            .forward
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .filter(|c| !c.is_closed())
            .cloned();
        let conn = match cached {
            Some(c) => c,
            None => {
                let c = Connection::connect(&addr, FORWARDED_CLIENT_ID, timeout)
                    .await
                    .map_err(|error| BrokerError::Forward {
                        addr: addr.clone(),
                        error,
                    })?;
                let c = Arc::new(c);
                self.forward
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr.clone(), Arc::clone(&c));
                c
            }
        };
        conn.request(request, timeout)
            .await
            .map_err(|error| BrokerError::Forward { addr, error })
    }

    /// A producer id no other producer of the cluster has or will get:
    /// the next of this broker's block, a new block taken through the
    /// controller when it runs out (ids of a block a broker did not hand
    /// out are never used). A broker that does not lead the controller
    /// asks the one that does.
    pub async fn init_producer_id(&self, forwarded: bool) -> Result<i64, BrokerError> {
        // Held while a block is taken, so this broker takes one at a time.
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let mut tries = 0;
            loop {
                tries += 1;
                let first = self.image().next_producer_id;
                let command = MetadataCommand::AllocateProducerIds {
                    first,
                    count: PRODUCER_ID_BLOCK,
                };
                let proposed = tokio::time::timeout(
                    Duration::from_millis(FORWARD_TIMEOUT_MS),
                    self.raft.metadata(command),
                )
                .await
                .map_err(|_| BrokerError::TimedOut {
                    what: "producer id",
                })?;
                match proposed {
                    Ok(Ok(Outcome::Done)) => {
                        *block = first..first + u64::from(PRODUCER_ID_BLOCK);
                        break;
                    }
                    // Another block was taken from the same point first:
                    // once the image shows it, from the next point.
                    Ok(Ok(Outcome::Refused(ErrorCode::NotController, _))) if tries < 5 => {
                        self.await_image(|i| i.next_producer_id != first).await;
                    }
                    Ok(Ok(Outcome::Refused(code, message))) => {
                        return Err(BrokerError::Refused { code, message });
                    }
                    Ok(Err(NotController { leader: Some(l) })) if l != self.id() && !forwarded => {
                        drop(block);
                        let request = Request::InitProducerId(InitProducerIdRequest {
                            timeout_ms: FORWARD_TIMEOUT_MS as u32,
                        });
                        return match self.forward_request(l, request).await? {
                            Response::InitProducerId(r) if r.error.is_ok() => Ok(r.producer_id),
                            Response::InitProducerId(r) => Err(BrokerError::Refused {
                                code: r.error,
                                message: "the controller gave no producer id".into(),
                            }),
                            _ => Err(BrokerError::UnexpectedAnswer),
                        };
                    }
                    Ok(Err(_)) | Err(_) => return Err(BrokerError::NoController),
                }
            }
        }
        let id = block.start;
        block.start += 1;
        i64::try_from(id).map_err(|_| BrokerError::Refused {
            code: ErrorCode::InvalidRequest,
            message: "producer ids are exhausted".into(),
        })
    }
}
