//! What the client knows of the cluster: the bootstrap addresses, cached
//! metadata (brokers, topics, partition leaders) and one shared connection
//! per broker. Metadata is refreshed when a broker says `NotLeader` or
//! `UnknownTopicOrPartition`, and every bootstrap address is tried in turn.
//!
//! Leaders carry an epoch (the Raft term they lead in). A metadata answer
//! never moves a cached partition back to a leader of a lower epoch than
//! the one known: during a failover, brokers that have not yet heard of the
//! election still name the old leader, and following them back and forth
//! would be worse than waiting. A `NotLeader` answer naming a leader of a
//! higher epoch moves the cache at once, without asking for metadata.
//! A leader that failed a request (unreachable, or refusing with no newer
//! leader to name) loses its epoch: any answer may then replace it, even a
//! guess from a broker holding no replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::coordinator::Coordinators;
use crate::error::ClientError;
use crate::protocol::messages::{MetadataRequest, MetadataResponse, NO_BROKER, PartitionMetadata};
use crate::protocol::{ErrorCode, Request, Response};

/// How long to wait for a connection or a metadata answer.
pub const METADATA_TIMEOUT_MS: u64 = 10_000;
/// How often a request left unanswered past its patience asks the other
/// brokers whether its partitions moved (see [`Cluster::until_moved_from`]),
/// ms.
pub const LEADER_CHECK_MS: u64 = 500;
/// How long producers and consumers ask again for a topic the metadata
/// does not know, at most: only while no controller can say whether it
/// exists (see [`Cluster::topic_within`]).
pub const UNKNOWN_TOPIC_WAIT_MS: u64 = 5_000;

/// The instant `wait` from now; a wait too long to add to the clock (a
/// caller's huge timeout) ends a year from now instead.
pub(crate) fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
}

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// The id given at creation: a topic deleted and created again under
    /// the same name has another, and nothing of the old one is kept.
    pub topic_id: [u8; 16],
    /// Its partitions, by number.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicInfo {
    /// Takes in a newer answer about the same topic: each partition as
    /// `fresh` describes it, except that a leader known here with a higher
    /// epoch is kept (the broker that answered has not heard of it yet).
    pub fn merge(&mut self, fresh: TopicInfo) {
        if fresh.topic_id != self.topic_id {
            *self = fresh;
            return;
        }
        let mut partitions = fresh.partitions;
        for p in &mut partitions {
            if let Some(known) = self.partitions.iter().find(|k| k.partition == p.partition)
                && known.leader_epoch > p.leader_epoch
            {
                p.leader = known.leader;
                p.leader_epoch = known.leader_epoch;
            }
        }
        self.partitions = partitions;
        self.name = fresh.name;
    }

    /// Forgets the epoch of `partition`'s leader (it failed a request), so
    /// that the next answer replaces it, whatever that answer's epoch.
    pub fn forget_leader_epoch(&mut self, partition: u32) {
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        {
            p.leader_epoch = 0;
        }
    }

    /// Points `partition` at `leader` (a `NotLeader` hint) if its epoch is
    /// newer than the leader known here. Returns whether it did.
    pub fn follow(&mut self, partition: u32, leader: i32, leader_epoch: u64) -> bool {
        let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        else {
            return false;
        };
        if leader == NO_BROKER || leader_epoch == 0 || leader_epoch <= p.leader_epoch {
            return false;
        }
        p.leader = leader;
        p.leader_epoch = leader_epoch;
        true
    }
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
    /// Topics from the last metadata answers. Guards the map only.
    topics: Mutex<HashMap<String, Cached>>,
    /// Groups' coordinators as last found.
    coordinators: Coordinators,
    /// The controller's leader as the last metadata answer named it
    /// ([`NO_BROKER`] when none did).
    controller: std::sync::atomic::AtomicI32,
    /// How long a topic's metadata is used before it is asked for again,
    /// ms.
    metadata_max_age_ms: AtomicU64,
}

/// A topic as last described, and whether it must be asked for again
/// before its next use.
#[derive(Debug)]
struct Cached {
    info: TopicInfo,
    stale: bool,
    /// When it was last described: asked for again once older than the
    /// cluster's metadata age, so partitions added to a topic are seen.
    fetched_at: Instant,
}

/// How long a topic's metadata is used before it is asked for again, ms,
/// by default (Kafka's `metadata.max.age.ms` is 5 minutes; partitions
/// added to a topic reach producers sooner).
pub const METADATA_MAX_AGE_MS_DEFAULT: u64 = 30_000;

impl Cluster {
    /// Sets how long a topic's metadata is used before it is asked for
    /// again, ms (default [`METADATA_MAX_AGE_MS_DEFAULT`]).
    pub fn set_metadata_max_age_ms(&self, ms: u64) {
        self.metadata_max_age_ms.store(ms, Ordering::Relaxed);
    }

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
            coordinators: Coordinators::default(),
            controller: std::sync::atomic::AtomicI32::new(NO_BROKER),
            metadata_max_age_ms: AtomicU64::new(METADATA_MAX_AGE_MS_DEFAULT),
        }))
    }

    /// The coordinators found so far, by group (see
    /// [`crate::coordinator`]).
    pub(crate) fn coordinators(&self) -> &Coordinators {
        &self.coordinators
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
        self.any_except(request, timeout, None).await
    }

    /// As [`Cluster::any`], never asking the broker at `skip` (one that
    /// has stopped answering).
    async fn any_except(
        &self,
        request: Request,
        timeout: Duration,
        skip: Option<&str>,
    ) -> Result<Response, ClientError> {
        let mut addrs: Vec<String> = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        addrs.extend(self.bootstrap.iter().cloned());
        addrs.retain(|a| Some(a.as_str()) != skip);
        // What a broker answered says more than a broker that could not
        // be reached (a controller without a majority, rather than one
        // refused connection): an answer's error is kept over those.
        let mut last = ClientError::Invalid("no broker address".into());
        let keep = |e: ClientError, last: &mut ClientError| {
            if matches!(e, ClientError::Broker { .. })
                || !matches!(last, ClientError::Broker { .. })
            {
                *last = e;
            }
        };
        for addr in addrs {
            match self.connection(&addr).await {
                Ok(c) => match c.request(request.clone(), timeout).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.is_retriable() => keep(e, &mut last),
                    Err(e) => return Err(e),
                },
                Err(e) => keep(e, &mut last),
            }
        }
        Err(last)
    }

    /// Asks for metadata of `topics` (all when `None`) and caches it.
    pub async fn refresh(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        self.refresh_except(topics, None).await
    }

    /// As [`Cluster::refresh`], never asking the broker at `skip`.
    pub async fn refresh_except(
        &self,
        topics: Option<Vec<String>>,
        skip: Option<&str>,
    ) -> Result<MetadataResponse, ClientError> {
        let response = self
            .any_except(
                Request::Metadata(MetadataRequest { topics }),
                Duration::from_millis(METADATA_TIMEOUT_MS),
                skip,
            )
            .await?;
        let Response::Metadata(m) = response else {
            return Err(ClientError::code(ErrorCode::Unknown));
        };
        self.absorb(&m);
        Ok(m)
    }

    /// Takes in a metadata answer: brokers, the controller, and the topics
    /// it describes (cached; those it says do not exist forgotten).
    fn absorb(&self, m: &MetadataResponse) {
        self.controller.store(m.controller_id, Ordering::Relaxed);
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
                    let fresh = TopicInfo {
                        name: t.name.clone(),
                        topic_id: t.topic_id,
                        partitions: t.partitions.clone(),
                    };
                    match cache.get_mut(&t.name) {
                        Some(known) => {
                            known.info.merge(fresh);
                            known.stale = false;
                            known.fetched_at = Instant::now();
                        }
                        None => {
                            cache.insert(
                                t.name.clone(),
                                Cached {
                                    info: fresh,
                                    stale: false,
                                    fetched_at: Instant::now(),
                                },
                            );
                        }
                    }
                } else {
                    cache.remove(&t.name);
                }
            }
        }
    }

    /// The topic, from the cache or freshly asked for.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        if let Some(t) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .filter(|t| {
                let max_age =
                    Duration::from_millis(self.metadata_max_age_ms.load(Ordering::Relaxed));
                !t.stale && t.fetched_at.elapsed() < max_age
            })
        {
            return Ok(t.info.clone());
        }
        self.refresh(Some(vec![name.to_string()])).await?;
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|t| t.info.clone())
            .ok_or_else(|| ClientError::UnknownTopic(name.to_string()))
    }

    /// As [`Cluster::topic`], where a broker that does not know the topic
    /// is not the last word: a topic just created through one broker may
    /// not yet be in another's metadata. The controller's leader, which
    /// answers a creation only once it has applied it, is asked then; a
    /// topic it does not know does not exist, at once. Only while no
    /// controller is known or reachable is it asked again, for up to
    /// `wait`.
    pub async fn topic_within(&self, name: &str, wait: Duration) -> Result<TopicInfo, ClientError> {
        let deadline = deadline_after(wait);
        let mut pause_ms = 20;
        loop {
            let unknown = match self.topic(name).await {
                Err(ClientError::UnknownTopic(_)) => ClientError::UnknownTopic(name.to_string()),
                other => return other,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.topic_at_controller(name, left).await {
                Some(Ok(info)) => return Ok(info),
                Some(Err(e)) => return Err(e),
                None if left.is_zero() => return Err(unknown),
                None => {
                    tokio::time::sleep(Duration::from_millis(pause_ms).min(left)).await;
                    pause_ms = (pause_ms * 2).min(500);
                }
            }
        }
    }

    /// Topic `name` as the controller's leader (as last named) describes
    /// it, asked within `timeout`: `None` when no controller is known or it
    /// does not answer; [`ClientError::UnknownTopic`] when it does not know
    /// the topic.
    async fn topic_at_controller(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Option<Result<TopicInfo, ClientError>> {
        let controller = u32::try_from(self.controller.load(Ordering::Relaxed)).ok()?;
        let addr = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&controller)
            .cloned()?;
        let ask = async {
            let c = self.connection(&addr).await.ok()?;
            let request = Request::Metadata(MetadataRequest {
                topics: Some(vec![name.to_string()]),
            });
            match c.request(request, timeout).await.ok()? {
                Response::Metadata(m) => Some(m),
                _ => None,
            }
        };
        let m = tokio::time::timeout(timeout, ask).await.ok()??;
        if m.controller_id != controller as i32 {
            // It no longer leads the controller: its word is not final.
            self.absorb(&m);
            return None;
        }
        self.absorb(&m);
        let t = m.topics.iter().find(|t| t.name == name)?;
        if t.error == ErrorCode::UnknownTopicOrPartition {
            return Some(Err(ClientError::UnknownTopic(name.to_string())));
        }
        Some(
            self.topic_cached(name)
                .ok_or_else(|| ClientError::code(t.error)),
        )
    }

    /// Topic `name` as cached, whatever its age.
    fn topic_cached(&self, name: &str) -> Option<TopicInfo> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|t| t.info.clone())
    }

    /// Marks what is cached about `name` as stale (after a broker said
    /// it does not lead, or could not be reached): the next use asks for
    /// metadata again. Leader epochs are remembered, so an answer from a
    /// broker that is behind cannot move a partition back to an older
    /// leader.
    pub fn invalidate(&self, name: &str) {
        self.mark_stale(name, None);
    }

    /// As [`Cluster::invalidate`], after the leader of `partition` failed a
    /// request: it also loses its epoch, so the next answer replaces it
    /// whatever that answer's epoch (the cached leader may be gone).
    pub fn invalidate_partition(&self, name: &str, partition: u32) {
        self.mark_stale(name, Some(partition));
    }

    /// Marks `name` stale and, if given, makes `failed`'s leader lose its
    /// epoch.
    fn mark_stale(&self, name: &str, failed: Option<u32>) {
        if let Some(t) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(name)
        {
            t.stale = true;
            if let Some(partition) = failed {
                t.info.forget_leader_epoch(partition);
            }
        }
    }

    /// Takes a `NotLeader` answer's hint for `topic`/`partition`: when it
    /// names a leader newer than the one cached, the cache points at it
    /// and the caller may retry at once. Returns whether it did.
    pub fn follow_leader(
        &self,
        topic: &str,
        partition: u32,
        leader: i32,
        leader_epoch: u64,
    ) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = topics.get_mut(topic) else {
            return false;
        };
        // The brokers map is locked inside the topics map's lock, never
        // the other way round.
        let known = u32::try_from(leader).is_ok_and(|l| {
            self.brokers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&l)
        });
        known && t.info.follow(partition, leader, leader_epoch)
    }

    /// The error for a partition that answered `code`. A `NotLeader`
    /// naming a newer leader is followed at once (see
    /// [`Cluster::follow_leader`]) and becomes
    /// [`ClientError::LeaderMoved`]: the caller retries without asking for
    /// metadata.
    pub fn partition_error(
        &self,
        topic: &str,
        partition: u32,
        code: ErrorCode,
        leader_hint: i32,
        leader_epoch: u64,
    ) -> ClientError {
        if code == ErrorCode::NotLeader
            && self.follow_leader(topic, partition, leader_hint, leader_epoch)
        {
            tracing::debug!(
                topic,
                partition,
                leader_hint,
                leader_epoch,
                "following the new leader"
            );
            return ClientError::LeaderMoved {
                leader: leader_hint as u32,
                leader_epoch,
            };
        }
        ClientError::code(code)
    }

    /// Waits until one of `partitions`, read from or written to the broker
    /// at `addr`, is led by another broker under a newer leader epoch than
    /// the cache knew when this was called (and returns that broker's id
    /// and epoch, now cached; guesses, epoch 0, never count), asking the others (never it)
    /// for metadata every [`LEADER_CHECK_MS`] once `patience` has passed;
    /// never returns while they all stay there. For a request to race
    /// with: a broker that stopped answering (its process paused, its
    /// machine hung) keeps its connections open, and the rest of the
    /// cluster elects new leaders for its partitions in a couple of
    /// seconds, which its clients learn only by asking elsewhere.
    pub async fn until_moved_from(
        &self,
        addr: &str,
        partitions: &[(String, u32)],
        patience: Duration,
    ) -> (u32, u64) {
        // Only a leader elected after the one the request went to counts:
        // a broker that holds no replica answers with a guess (epoch 0),
        // and one that lags may name an older leader.
        let known_epoch: HashMap<(String, u32), u64> = {
            let cache = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            partitions
                .iter()
                .map(|(t, p)| {
                    let epoch = cache
                        .get(t)
                        .and_then(|c| c.info.partitions.iter().find(|m| m.partition == *p))
                        .map_or(0, |m| m.leader_epoch);
                    ((t.clone(), *p), epoch)
                })
                .collect()
        };
        tokio::time::sleep(patience).await;
        let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        loop {
            if let Ok(m) = self.refresh_except(Some(topics.clone()), Some(addr)).await {
                let brokers: HashMap<i32, String> = m
                    .brokers
                    .iter()
                    .map(|b| (b.broker_id as i32, format!("{}:{}", b.host, b.port)))
                    .collect();
                let moved = m.topics.iter().find_map(|t| {
                    t.partitions.iter().find(|p| {
                        known_epoch
                            .get(&(t.name.clone(), p.partition))
                            .is_some_and(|known| p.leader_epoch > *known)
                            && p.leader != NO_BROKER
                            && brokers.get(&p.leader).is_some_and(|a| a != addr)
                    })
                });
                if let Some(p) = moved {
                    tracing::debug!(
                        addr,
                        leader = p.leader,
                        "a partition moved away from a broker that does not answer"
                    );
                    return (p.leader as u32, p.leader_epoch);
                }
            }
            tokio::time::sleep(Duration::from_millis(LEADER_CHECK_MS)).await;
        }
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
