//! The broker's state: its topics and their partitions, opened from the
//! data directory at start and changed by CreateTopics / DeleteTopics.
//!
//! Each partition is a Raft group (see [`crate::raft_loop`]); a topic's
//! partitions take consecutive group ids from its `first_group`, unique
//! among the broker's topics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rill_client::protocol::ErrorCode;
use rill_replication::{BrokerId, GroupId};
use tokio::sync::Notify;

use crate::partition::Partition;
use crate::raft_loop::{OpenReplica, RaftHandle};
use crate::topics::{PARTITIONS_MAX, TopicConfig, TopicMeta, partition_dir, validate_topic_name};

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Its stored metadata.
    pub meta: TopicMeta,
    /// Its partitions, by number.
    pub partitions: Vec<Arc<Partition>>,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    /// This broker's id.
    pub node_id: u32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    data_dir: PathBuf,
    /// Topics by name. Guards only the map: lookups, inserts and removals
    /// of ready topics; opening and deleting files happens outside it.
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion (rare, and each does file
    /// I/O that must not interleave with another's for the same name).
    admin: tokio::sync::Mutex<()>,
    /// The Raft thread, which writes every partition.
    pub raft: RaftHandle,
    /// Woken whenever a high watermark moves, for parked fetches.
    pub data_arrived: Arc<Notify>,
}

fn open_replica(meta: &TopicMeta, data_dir: &std::path::Path, i: u32, node_id: u32) -> OpenReplica {
    OpenReplica {
        topic: meta.name.clone(),
        index: i,
        group: GroupId(meta.first_group + u64::from(i)),
        dir: partition_dir(data_dir, &meta.id, i),
        log_config: meta.config.log_config(),
        fsync: meta.config.fsync,
        voters: vec![BrokerId(u64::from(node_id))],
    }
}

impl Broker {
    /// Opens every topic in `data_dir`, recovering each partition through
    /// the Raft thread, and removes partition directories no topic owns.
    /// Runs outside the async runtime (it waits on the Raft thread).
    pub fn open(
        node_id: u32,
        data_dir: PathBuf,
        advertised_host: String,
        advertised_port: u16,
        raft: RaftHandle,
        data_arrived: Arc<Notify>,
    ) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(&data_dir)?;
        let mut topics = BTreeMap::new();
        let mut owned = std::collections::BTreeSet::new();
        let mut metas = TopicMeta::load_all(&data_dir)?;
        // Topics stored before partitions had groups get theirs now.
        let mut next_group = metas
            .iter()
            .map(|m| m.first_group + u64::from(m.partitions))
            .max()
            .unwrap_or(1)
            .max(1);
        for meta in metas.iter_mut().filter(|m| m.first_group == 0) {
            meta.first_group = next_group;
            next_group += u64::from(meta.partitions);
            meta.store(&data_dir)?;
        }
        for meta in metas {
            let mut partitions = Vec::new();
            for i in 0..meta.partitions {
                let replica = open_replica(&meta, &data_dir, i, node_id);
                owned.insert(replica.dir.clone());
                let p = raft
                    .blocking_open(replica)
                    .map_err(|e| anyhow::anyhow!("opening {}/{i}: {e}", meta.name))?;
                partitions.push(p);
            }
            topics.insert(meta.name.clone(), Arc::new(Topic { meta, partitions }));
        }
        for entry in std::fs::read_dir(&data_dir)? {
            let path = entry?.path();
            // Only directories named like a partition replica: anything else
            // in the data directory is not ours to remove.
            let replica_like = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('-'))
                .is_some_and(|(id, n)| {
                    uuid::Uuid::parse_str(id).is_ok() && n.parse::<u32>().is_ok()
                });
            if path.is_dir() && replica_like && !owned.contains(&path) {
                tracing::info!(dir = %path.display(), "removing a partition directory no topic owns");
                std::fs::remove_dir_all(&path)?;
            }
        }
        Ok(Broker {
            node_id,
            advertised_host,
            advertised_port,
            data_dir,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            raft,
            data_arrived,
        })
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every topic.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The partition `index` of `topic`.
    pub fn partition(&self, topic: &str, index: u32) -> Option<Arc<Partition>> {
        self.topic(topic)
            .and_then(|t| t.partitions.get(index as usize).cloned())
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(String, String)],
    ) -> Result<(), (ErrorCode, String)> {
        validate_topic_name(name).map_err(|m| (ErrorCode::InvalidTopic, m))?;
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err((
                ErrorCode::InvalidPartitions,
                format!("partitions must be 1 to {PARTITIONS_MAX}"),
            ));
        }
        if replication_factor != 1 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                "this broker runs without peers: replication factor must be 1".into(),
            ));
        }
        let config = TopicConfig::from_pairs(configs).map_err(|m| (ErrorCode::InvalidConfig, m))?;
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let first_group = self
            .topics()
            .iter()
            .map(|t| t.meta.first_group + u64::from(t.meta.partitions))
            .max()
            .unwrap_or(1)
            .max(1);
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            first_group,
            config,
            overrides: configs.iter().cloned().collect(),
        };
        let storage = |e: String| (ErrorCode::StorageError, e);
        let mut opened = Vec::new();
        for i in 0..partitions {
            let replica = open_replica(&meta, &self.data_dir, i, self.node_id);
            match self.raft.open(replica).await {
                Ok(p) => opened.push(p),
                Err(e) => {
                    for p in &opened {
                        self.raft.close(p.group).await;
                    }
                    return Err(storage(e.to_string()));
                }
            }
        }
        // The topic exists once its metadata file does.
        meta.store(&self.data_dir)
            .map_err(|e| storage(e.to_string()))?;
        let topic = Arc::new(Topic {
            meta,
            partitions: opened,
        });
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), topic);
        tracing::info!(topic = name, partitions, "created topic");
        Ok(())
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), (ErrorCode, String)> {
        let _admin = self.admin.lock().await;
        let Some(topic) = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("no topic {name:?}"),
            ));
        };
        topic
            .meta
            .remove(&self.data_dir)
            .map_err(|e| (ErrorCode::StorageError, e.to_string()))?;
        for p in &topic.partitions {
            self.raft.close(p.group).await;
        }
        for i in 0..topic.meta.partitions {
            let dir = partition_dir(&self.data_dir, &topic.meta.id, i);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                // Removed at the next start, as a directory no topic owns.
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's partition");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }
}
