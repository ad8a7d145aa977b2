//! The broker's state: its topics and their partitions, opened from the
//! data directory at start and changed by CreateTopics / DeleteTopics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rill_client::protocol::ErrorCode;
use tokio::sync::Notify;

use crate::flusher::Flusher;
use crate::partition::Partition;
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
    /// Group commit for `fsync` topics.
    pub flusher: Arc<Flusher>,
    /// Woken whenever a high watermark moves, for parked fetches.
    pub data_arrived: Arc<Notify>,
}

impl Broker {
    /// Opens every topic in `data_dir`, recovering each partition, and
    /// removes partition directories no topic owns.
    pub fn open(
        node_id: u32,
        data_dir: PathBuf,
        advertised_host: String,
        advertised_port: u16,
    ) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(&data_dir)?;
        let mut topics = BTreeMap::new();
        let mut owned = std::collections::BTreeSet::new();
        for meta in TopicMeta::load_all(&data_dir)? {
            let mut partitions = Vec::new();
            for i in 0..meta.partitions {
                let dir = partition_dir(&data_dir, &meta.id, i);
                owned.insert(dir.clone());
                let p = Partition::open(
                    &meta.name,
                    i,
                    &dir,
                    meta.config.log_config(),
                    meta.config.fsync,
                )
                .map_err(|e| anyhow::anyhow!("opening {}/{i}: {e}", meta.name))?;
                partitions.push(Arc::new(p));
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
        let data_arrived = Arc::new(Notify::new());
        Ok(Broker {
            node_id,
            advertised_host,
            advertised_port,
            data_dir,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            flusher: Arc::new(Flusher::new(Arc::clone(&data_arrived))),
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
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            config,
            overrides: configs.iter().cloned().collect(),
        };
        let storage = |e: String| (ErrorCode::StorageError, e);
        let mut opened = Vec::new();
        for i in 0..partitions {
            let dir = partition_dir(&self.data_dir, &meta.id, i);
            let p = Partition::open(name, i, &dir, meta.config.log_config(), meta.config.fsync)
                .map_err(|e| storage(e.to_string()))?;
            opened.push(Arc::new(p));
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

    /// Syncs every partition (on shutdown).
    pub fn flush_all(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.flush() {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush at shutdown failed");
                }
            }
        }
    }

    /// Applies retention to every partition.
    pub fn apply_retention(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.apply_retention() {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
                }
            }
        }
    }
}
