//! What the client knows of the cluster: the bootstrap addresses, cached
//! metadata (brokers, topics, partition leaders) and one shared connection
//! per broker. Metadata is refreshed when a broker says `NotLeader` or
//! `UnknownTopicOrPartition`, and every bootstrap address is tried in turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::Connection;
use crate::error::ClientError;
use crate::protocol::messages::{MetadataRequest, MetadataResponse, PartitionMetadata};
use crate::protocol::{ErrorCode, Request, Response};

/// How long to wait for a connection or a metadata answer.
pub const METADATA_TIMEOUT_MS: u64 = 10_000;
/// How long producers and consumers ask again for a topic the metadata
/// does not know yet (just created, not yet applied by every broker).
pub const UNKNOWN_TOPIC_WAIT_MS: u64 = 5_000;

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its partitions, by number.
    pub partitions: Vec<PartitionMetadata>,
}

/// The client's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    bootstrap: Vec<String>,
    client_id: String,
    /// Connections by broker address. Guards the map only; connecting
    /// happens outside it.
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// Broker id to address, from the last metadata answer.
    brokers: Mutex<HashMap<u32, String>>,
    /// Topics from the last metadata answers.
    topics: Mutex<HashMap<String, TopicInfo>>,
}

impl Cluster {
    /// A cluster reached through `bootstrap` (`host:port[,host:port...]`).
    /// Connects lazily; fails only when the list is empty.
    pub fn new(bootstrap: &str, client_id: &str) -> Result<Arc<Cluster>, ClientError> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if bootstrap.is_empty() {
            return Err(ClientError::Invalid("no bootstrap address given".into()));
        }
        Ok(Arc::new(Cluster {
            bootstrap,
            client_id: client_id.to_string(),
            connections: Mutex::default(),
            brokers: Mutex::default(),
            topics: Mutex::default(),
        }))
    }

    /// The (shared) connection to `addr`, opened if needed.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        if let Some(c) = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            && !c.is_closed()
        {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(
            Connection::connect(
                addr,
                &self.client_id,
                Duration::from_millis(METADATA_TIMEOUT_MS),
            )
            .await?,
        );
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), Arc::clone(&c));
        Ok(c)
    }

    /// Sends `request` to any reachable broker, trying known brokers, then
    /// each bootstrap address.
    pub async fn any(&self, request: Request, timeout: Duration) -> Result<Response, ClientError> {
        let mut addrs: Vec<String> = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        addrs.extend(self.bootstrap.iter().cloned());
        let mut last = ClientError::Invalid("no broker address".into());
        for addr in addrs {
            match self.connection(&addr).await {
                Ok(c) => match c.request(request.clone(), timeout).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.is_retriable() => last = e,
                    Err(e) => return Err(e),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks for metadata of `topics` (all when `None`) and caches it.
    pub async fn refresh(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        let response = self
            .any(
                Request::Metadata(MetadataRequest { topics }),
                Duration::from_millis(METADATA_TIMEOUT_MS),
            )
            .await?;
        let Response::Metadata(m) = response else {
            return Err(ClientError::code(ErrorCode::Unknown));
        };
        {
            let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
            for b in &m.brokers {
                brokers.insert(b.broker_id, format!("{}:{}", b.host, b.port));
            }
        }
        {
            let mut cache = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            for t in &m.topics {
                if t.error.is_ok() {
                    cache.insert(
                        t.name.clone(),
                        TopicInfo {
                            name: t.name.clone(),
                            partitions: t.partitions.clone(),
                        },
                    );
                } else {
                    cache.remove(&t.name);
                }
            }
        }
        Ok(m)
    }

    /// The topic, from the cache or freshly asked for.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        if let Some(t) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(t.clone());
        }
        self.refresh(Some(vec![name.to_string()])).await?;
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic(name.to_string()))
    }

    /// As [`Cluster::topic`], asking again for up to `wait` while the
    /// topic is unknown: a topic just created through one broker may not
    /// yet be in another's metadata.
    pub async fn topic_within(&self, name: &str, wait: Duration) -> Result<TopicInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause_ms = 20;
        loop {
            match self.topic(name).await {
                Err(ClientError::UnknownTopic(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    pause_ms = (pause_ms * 2).min(500);
                }
                other => return other,
            }
        }
    }

    /// Forgets what is cached about `name` (after `NotLeader` and the like).
    pub fn invalidate(&self, name: &str) {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The connection to the leader of `topic`/`partition`.
    pub async fn leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Connection>, ClientError> {
        let info = self.topic(topic).await?;
        let p = info
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::code(ErrorCode::UnknownTopicOrPartition))?;
        let leader =
            u32::try_from(p.leader).map_err(|_| ClientError::code(ErrorCode::NotLeader))?;
        let addr = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&leader)
            .cloned();
        match addr {
            Some(addr) => self.connection(&addr).await,
            None => Err(ClientError::code(ErrorCode::NotLeader)),
        }
    }
}
