//! The cluster's metadata: what the controller group's log holds, and the
//! image every broker builds by applying it in order.
//!
//! The controller is a Raft group (group 0) over the voter brokers, as
//! Kafka's KRaft. Each entry of its log is a batch of one record whose value
//! is one [`MetadataCommand`] (JSON: the commands are small and rare).
//! Applying a command is deterministic: every broker that applies the same
//! log builds the same [`ClusterImage`] — the same topic ids, group ids and
//! replica placements — and answers the same outcome.
//!
//! Placement: a topic's partition `p` goes to `replication_factor`
//! consecutive voters starting at `(offset + p) mod n`, where `offset`
//! advances by one per topic: replicas round-robin across brokers, and
//! preferred leaders (the first replica) spread evenly.

use std::collections::BTreeMap;

use rill_client::protocol::ErrorCode;
use rill_replication::ids::ClusterId;
use rill_replication::{BrokerId, GroupId};
use serde::{Deserialize, Serialize};

use crate::reassignment::{Reassignment, Seed};
use crate::topics::{PARTITIONS_MAX, TopicConfig, validate_topic_id, validate_topic_name};

/// Largest encoded command, bytes.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;

/// Most brokers a cluster may have: every one is a voter of the
/// controller's group, and every one holds a connection to each other.
pub const BROKERS_MAX: usize = 64;

/// Longest peer address, bytes (a DNS name is at most 253).
pub const PEER_ADDR_BYTES_MAX: usize = 260;

/// Checks a peer address a broker gave to join the cluster: `HOST:PORT`
/// with a port other than 0, a host of printable ASCII without spaces,
/// and not an unspecified IP (`0.0.0.0`, `::`), which no peer can dial.
pub fn validate_peer_addr(addr: &str) -> Result<(), String> {
    if addr.len() > PEER_ADDR_BYTES_MAX {
        return Err(format!("longer than {PEER_ADDR_BYTES_MAX} bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("not HOST:PORT".into());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("port {port:?} is not from 1 to 65535")),
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the host is empty or not printable ASCII".into());
    }
    if bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err("an unspecified address (0.0.0.0, ::) cannot be dialled".into());
    }
    Ok(())
}

/// A change to the cluster's metadata, as proposed to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker's address for clients.
    RegisterBroker {
        /// The broker (a bare number in the JSON).
        #[serde(with = "broker_id_number")]
        id: BrokerId,
        /// Host clients connect to.
        host: String,
        /// Port clients connect to.
        port: u16,
    },
    /// Create a topic.
    CreateTopic {
        /// Its name.
        name: String,
        /// Its id (a UUID chosen by the proposer).
        id: String,
        /// Partitions.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u16,
        /// Config overrides, as given.
        configs: Vec<(String, String)>,
        /// Most partition replicas any broker may host once the topic is
        /// placed: the proposing controller leader's setting. `None` (a
        /// command from before the limit existed) checks nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_partition_replicas: Option<u32>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Its name.
        name: String,
    },
    /// Take producer ids `[first, first + count)` for one broker to hand
    /// out: every id is given once, whatever restarts or elections come.
    AllocateProducerIds {
        /// The first: the image's next free id when proposed.
        first: u64,
        /// How many.
        count: u32,
    },
    /// Add partitions to a topic (never fewer).
    AddPartitions {
        /// Its name.
        name: String,
        /// How many it has from then on.
        partitions: u32,
        /// Most partition replicas any broker may host once the new ones
        /// are placed: the proposing controller leader's setting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_partition_replicas: Option<u32>,
    },
    /// Change a live topic's settings.
    AlterTopicConfig {
        /// Its name.
        name: String,
        /// Settings to set.
        set: Vec<(String, String)>,
        /// Settings to take back to their defaults.
        delete: Vec<String>,
    },
    /// Move a partition's replicas to `replicas` (the preferred leader
    /// first); see [`crate::reassignment`].
    ReassignPartition {
        /// The topic.
        name: String,
        /// The partition.
        partition: u32,
        /// The brokers it moves to.
        replicas: Vec<u64>,
    },
    /// Where a replica a move adds starts (sent by the partition's leader
    /// once the replica is a learner).
    SeedReplica {
        /// The topic.
        name: String,
        /// The partition.
        partition: u32,
        /// The new replica's broker.
        #[serde(with = "broker_id_number")]
        broker: BrokerId,
        /// Where it starts.
        seed: Seed,
    },
    /// A move is done: the partition's voters are `replicas` (sent by its
    /// leader), as of `origin`.
    CompleteReassignment {
        /// The topic.
        name: String,
        /// The partition.
        partition: u32,
        /// The brokers it moved to, as the move named them.
        replicas: Vec<u64>,
        /// The membership then, and its Raft index: where a new replica of
        /// the partition starts from now on.
        origin: Seed,
    },
    /// Take a broker out of the brokers that host replicas: no new replica
    /// is placed on it, and `rill cluster remove-broker` moves its replicas
    /// away.
    RemoveBroker {
        /// The broker.
        #[serde(with = "broker_id_number")]
        id: BrokerId,
    },
    /// Take a removed broker back among the brokers that host replicas,
    /// or have a new one join the cluster: a broker new to it needs its
    /// peer address, which every broker then connects to (a broker of the
    /// cluster already keeps the address it has).
    AddBroker {
        /// The broker.
        #[serde(with = "broker_id_number")]
        id: BrokerId,
        /// Where its peer listener is (`HOST:PORT`): required for a broker
        /// new to the cluster. `None` in commands written before brokers
        /// could join.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_addr: Option<String>,
    },
    /// Names the cluster, once: proposed by the first controller leader
    /// that finds it unnamed. Every broker keeps the id in its data
    /// directory's identity.
    InitCluster {
        /// A canonical UUID.
        cluster_id: String,
        /// The cluster's first voters (`--peers` of the broker that named
        /// it): the brokers every placement starts from, whatever a
        /// broker's `--peers` says later (a broker removed may be dropped
        /// from it). `None` in a log written before it was recorded: the
        /// image keeps the voters it started from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voters: Option<Vec<u64>>,
    },
}

/// A [`BrokerId`] in a command's JSON: the bare number, as commands in
/// controller logs already hold it.
mod broker_id_number {
    use rill_replication::BrokerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &BrokerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(id.get())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BrokerId, D::Error> {
        u64::deserialize(d).map(BrokerId)
    }
}

impl MetadataCommand {
    /// The command as a record value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata commands always serialise")
    }

    /// A command from a record value, or `None` when it is not one (a log
    /// written by a newer version).
    pub fn decode(bytes: &[u8]) -> Option<MetadataCommand> {
        if bytes.len() > COMMAND_BYTES_MAX {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

/// Most producer ids one allocation takes.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 100_000;

/// Settings fixed when a topic is created: a live change would need every
/// replica to agree on it at the same entry (`max.message.bytes` bounds
/// what followers take, `fsync` what an acknowledgement waits for).
pub const LIVE_FIXED_CONFIGS: [&str; 2] = ["max.message.bytes", "fsync"];

/// A topic's settings after `set` (replacing a setting of the same key)
/// and `delete` (taking settings back to their defaults), in a stable
/// order: sorted by key.
pub fn altered(
    overrides: &[(String, String)],
    set: &[(String, String)],
    delete: &[String],
) -> Vec<(String, String)> {
    let mut all: BTreeMap<String, String> = overrides.iter().cloned().collect();
    for k in delete {
        all.remove(k);
    }
    for (k, v) in set {
        all.insert(k.clone(), v.clone());
    }
    all.into_iter().collect()
}

/// A broker as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// A topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    /// Its name.
    pub name: String,
    /// Its id (a UUID), naming its replicas' directories.
    pub id: String,
    /// Its partitions' Raft groups, as runs of consecutive groups (first
    /// group, partitions): the partitions a topic was created with, then
    /// each batch added later, each taking the groups free at the time.
    pub extents: Vec<(u64, u32)>,
    /// Per partition, its replicas; the first is the preferred leader.
    pub replicas: Vec<Vec<BrokerId>>,
    /// Its settings.
    pub config: TopicConfig,
    /// The settings set on it (`key=value`, as committed), the rest being
    /// defaults.
    pub overrides: Vec<(String, String)>,
    /// The moves under way, by partition.
    pub moving: BTreeMap<u32, Reassignment>,
    /// By partition, where a new replica starts once a move has ended
    /// (absent: from the first replicas, at Raft index 0).
    pub origins: BTreeMap<u32, Seed>,
}

impl TopicImage {
    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.replicas.len() as u32
    }

    /// The group of partition `i`.
    pub fn group(&self, i: u32) -> GroupId {
        let mut i = i;
        for &(first, count) in &self.extents {
            if i < count {
                return GroupId(first + u64::from(i));
            }
            i -= count;
        }
        // Past the partitions: a group no replica serves.
        GroupId(u64::MAX)
    }
}

/// Which rules a command's topic configs are checked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Configs {
    /// Today's, as a proposal is.
    Strict,
    /// None: a committed command's configs were checked when proposed
    /// ([`TopicConfig::from_committed_pairs`]).
    Committed,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect.
    Done,
    /// It was refused, with the error the proposer answers.
    Refused(ErrorCode, String),
}

/// The metadata every broker builds from the controller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterImage {
    /// The cluster's id ([`ClusterId::UNKNOWN`] until the first
    /// [`MetadataCommand::InitCluster`] is applied).
    pub cluster_id: ClusterId,
    /// The cluster's brokers, sorted: its first voters and every broker
    /// that joined since ([`MetadataCommand::AddBroker`] with a peer
    /// address). Replicas are placed on them (but those removed), and the
    /// controller's voters follow them.
    pub voters: Vec<BrokerId>,
    /// The voters the controller group started with (at Raft index 0):
    /// where a broker that joins later opens its replica of the
    /// controller's log from.
    pub first_voters: Vec<BrokerId>,
    /// The peer address of each broker that joined after the cluster
    /// started (the first voters' are in every broker's `--peers`).
    pub peer_addrs: BTreeMap<BrokerId, String>,
    /// Registered brokers.
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicImage>,
    /// The next group id to give (0 is the controller's).
    pub next_group: u64,
    /// The next producer id no broker has been given.
    pub next_producer_id: u64,
    /// Topics created so far: rotates placement.
    pub topics_created: u64,
    /// Brokers taken out of hosting replicas ([`MetadataCommand::RemoveBroker`]).
    pub removed: std::collections::BTreeSet<BrokerId>,
}

impl ClusterImage {
    /// The empty image of a cluster of `voters`.
    pub fn new(mut voters: Vec<BrokerId>) -> ClusterImage {
        voters.sort();
        voters.dedup();
        ClusterImage {
            cluster_id: ClusterId::UNKNOWN,
            first_voters: voters.clone(),
            voters,
            peer_addrs: BTreeMap::new(),
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            next_group: 1,
            next_producer_id: 0,
            topics_created: 0,
            removed: Default::default(),
        }
    }

    /// Checks a command against this image, as the proposer does before
    /// proposing (the same checks run again when it is applied, but for
    /// topic configs: see [`ClusterImage::apply`]).
    pub fn check(&self, cmd: &MetadataCommand) -> Outcome {
        self.check_with(cmd, Configs::Strict)
    }

    fn check_with(&self, cmd: &MetadataCommand, configs_rule: Configs) -> Outcome {
        match cmd {
            MetadataCommand::RegisterBroker { id, .. } => {
                if self.voters.contains(id) {
                    Outcome::Done
                } else {
                    Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("broker {id} is not a voter of this cluster"),
                    )
                }
            }
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                max_partition_replicas,
                ..
            } => {
                if let Err(m) = validate_topic_name(name) {
                    return Outcome::Refused(ErrorCode::InvalidTopic, m);
                }
                // The id names the topic's directories on every broker:
                // checked here, as the command is applied, so that every
                // broker refuses the same commands whoever proposed them.
                if let Err(m) = validate_topic_id(id) {
                    return Outcome::Refused(ErrorCode::InvalidRequest, m);
                }
                if *partitions == 0 || *partitions > PARTITIONS_MAX {
                    return Outcome::Refused(
                        ErrorCode::InvalidPartitions,
                        format!("partitions must be 1 to {PARTITIONS_MAX}"),
                    );
                }
                let n = self.hosts().len();
                if *replication_factor == 0 || usize::from(*replication_factor) > n {
                    return Outcome::Refused(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "replication factor must be 1 to {n} (the brokers in this cluster that host replicas)"
                        ),
                    );
                }
                if configs_rule == Configs::Strict
                    && let Err(m) = TopicConfig::from_pairs(configs)
                {
                    return Outcome::Refused(ErrorCode::InvalidConfig, m);
                }
                if self.topics.contains_key(name) {
                    return Outcome::Refused(
                        ErrorCode::TopicAlreadyExists,
                        format!("topic {name:?} already exists"),
                    );
                }
                if let Some(limit) = *max_partition_replicas
                    && let Some((broker, hosted)) =
                        self.replicas_past(limit, *partitions, *replication_factor)
                {
                    return Outcome::Refused(
                        ErrorCode::InvalidPartitions,
                        format!(
                            "{partitions} partitions of replication factor {replication_factor} \
                             would place {hosted} partition replicas on broker {broker}, over \
                             the limit of {limit} per broker (max_partition_replicas, \
                             --max-partition-replicas)"
                        ),
                    );
                }
                Outcome::Done
            }
            MetadataCommand::AllocateProducerIds { first, count } => {
                if *first != self.next_producer_id {
                    // Another allocation came first: the proposer asks again.
                    return Outcome::Refused(
                        ErrorCode::NotController,
                        format!("producer ids from {first} are taken"),
                    );
                }
                if *count == 0
                    || *count > PRODUCER_ID_BLOCK_MAX
                    || first.saturating_add(u64::from(*count)) > i64::MAX as u64
                {
                    return Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("cannot allocate {count} producer ids from {first}"),
                    );
                }
                Outcome::Done
            }
            MetadataCommand::AddPartitions {
                name,
                partitions,
                max_partition_replicas,
            } => {
                let Some(t) = self.topics.get(name) else {
                    return Outcome::Refused(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("no topic {name:?}"),
                    );
                };
                let now = t.partitions();
                if *partitions <= now || *partitions > PARTITIONS_MAX {
                    return Outcome::Refused(
                        ErrorCode::InvalidPartitions,
                        format!(
                            "topic {name:?} has {now} partitions: it can grow to {} to {PARTITIONS_MAX}, never shrink",
                            now + 1
                        ),
                    );
                }
                if let Some(limit) = *max_partition_replicas {
                    let added = self.added_placement(name, *partitions);
                    if let Some((broker, hosted)) = self.hosted_past(limit, &added) {
                        return Outcome::Refused(
                            ErrorCode::InvalidPartitions,
                            format!(
                                "{} more partitions would place {hosted} partition replicas on \
                                 broker {broker}, over the limit of {limit} per broker \
                                 (max_partition_replicas, --max-partition-replicas)",
                                partitions - now
                            ),
                        );
                    }
                }
                Outcome::Done
            }
            MetadataCommand::AlterTopicConfig { name, set, delete } => {
                let Some(t) = self.topics.get(name) else {
                    return Outcome::Refused(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("no topic {name:?}"),
                    );
                };
                for (k, _) in set {
                    if LIVE_FIXED_CONFIGS.contains(&k.as_str()) {
                        return Outcome::Refused(
                            ErrorCode::InvalidConfig,
                            format!(
                                "{k} is set when a topic is created and cannot be changed on a live topic"
                            ),
                        );
                    }
                }
                if configs_rule == Configs::Strict
                    && let Err(m) = TopicConfig::from_pairs(&altered(&t.overrides, set, delete))
                {
                    return Outcome::Refused(ErrorCode::InvalidConfig, m);
                }
                Outcome::Done
            }
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.contains_key(name) {
                    Outcome::Done
                } else {
                    Outcome::Refused(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("no topic {name:?}"),
                    )
                }
            }
            MetadataCommand::ReassignPartition {
                name,
                partition,
                replicas,
            } => crate::reassignment::check_reassign(self, name, *partition, replicas),
            MetadataCommand::SeedReplica {
                name,
                partition,
                broker,
                seed,
            } => crate::reassignment::check_seed(self, name, *partition, *broker, seed),
            MetadataCommand::CompleteReassignment {
                name,
                partition,
                replicas,
                origin,
            } => crate::reassignment::check_complete(self, name, *partition, replicas, origin),
            MetadataCommand::RemoveBroker { id } => {
                if !self.voters.contains(id) {
                    return Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("broker {id} is not a broker of this cluster"),
                    );
                }
                let left = self.hosts().iter().filter(|b| *b != id).count();
                let widest = self
                    .topics
                    .values()
                    .filter_map(|t| t.replicas.iter().map(Vec::len).max().map(|rf| (rf, t)))
                    .max_by_key(|(rf, _)| *rf);
                match widest {
                    Some((rf, t)) if rf > left && !self.removed.contains(id) => Outcome::Refused(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "topic {:?} has {rf} replicas per partition: without broker {id}, \
                             {left} brokers would be left to host them",
                            t.name
                        ),
                    ),
                    _ if left == 0 => Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("broker {id} is the last broker that hosts replicas"),
                    ),
                    _ => Outcome::Done,
                }
            }
            MetadataCommand::AddBroker { id, peer_addr } => {
                self.check_add_broker(*id, peer_addr.as_deref())
            }
            MetadataCommand::InitCluster { cluster_id, voters } => {
                if voters
                    .as_ref()
                    .is_some_and(|v| v.is_empty() || v.contains(&0))
                {
                    return Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("first voters {voters:?}: at least one broker id, none 0"),
                    );
                }
                if ClusterId::parse(cluster_id).is_none() {
                    return Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("cluster id {cluster_id:?} is not a canonical UUID"),
                    );
                }
                if self.cluster_id.is_known() {
                    // Two leaders may each have proposed one: the first
                    // applied names the cluster.
                    return Outcome::Refused(
                        ErrorCode::InvalidRequest,
                        format!("the cluster is named {} already", self.cluster_id),
                    );
                }
                Outcome::Done
            }
        }
    }

    /// Applies a committed command. A topic's configs were checked by the
    /// broker that proposed it, under the rules of its version; a later
    /// version may refuse some of them, and replaying the log must not then
    /// drop the topic (and every record in it). Applied, a config today's
    /// rules refuse keeps its default and is logged; the rest of the
    /// checks run as proposed.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Outcome {
        let outcome = self.check_with(cmd, Configs::Committed);
        if outcome != Outcome::Done {
            return outcome;
        }
        match cmd {
            MetadataCommand::RegisterBroker { id, host, port } => {
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        host: host.clone(),
                        port: *port,
                    },
                );
            }
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                ..
            } => {
                let (config, refused) = TopicConfig::from_committed_pairs(configs);
                for reason in refused {
                    tracing::warn!(
                        topic = %name,
                        "a config of the topic is refused by this version and keeps its default: {reason}"
                    );
                }
                let replicas = self.placement(*partitions, *replication_factor);
                let first_group = self.next_group;
                self.next_group += u64::from(*partitions);
                self.topics_created += 1;
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: id.clone(),
                        extents: vec![(first_group, *partitions)],
                        replicas,
                        config,
                        overrides: configs.clone(),
                        moving: BTreeMap::new(),
                        origins: BTreeMap::new(),
                    },
                );
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.remove(name);
            }
            MetadataCommand::AllocateProducerIds { count, .. } => {
                self.next_producer_id += u64::from(*count);
            }
            MetadataCommand::AddPartitions {
                name, partitions, ..
            } => {
                let added = self.added_placement(name, *partitions);
                let first_group = self.next_group;
                if let Some(t) = self.topics.get_mut(name) {
                    let count = added.len() as u32;
                    self.next_group += u64::from(count);
                    t.extents.push((first_group, count));
                    t.replicas.extend(added);
                }
            }
            MetadataCommand::AlterTopicConfig { name, set, delete } => {
                if let Some(t) = self.topics.get_mut(name) {
                    let overrides = altered(&t.overrides, set, delete);
                    let (config, refused) = TopicConfig::from_committed_pairs(&overrides);
                    for reason in refused {
                        tracing::warn!(
                            topic = %name,
                            "a config of the topic is refused by this version and keeps its default: {reason}"
                        );
                    }
                    t.config = config;
                    t.overrides = overrides;
                }
            }
            MetadataCommand::ReassignPartition {
                name,
                partition,
                replicas,
            } => {
                if let Some(t) = self.topics.get_mut(name) {
                    crate::reassignment::apply_reassign(t, *partition, replicas);
                }
            }
            MetadataCommand::SeedReplica {
                name,
                partition,
                broker,
                seed,
            } => {
                if let Some(t) = self.topics.get_mut(name) {
                    crate::reassignment::apply_seed(t, *partition, *broker, seed);
                }
            }
            MetadataCommand::CompleteReassignment {
                name,
                partition,
                origin,
                ..
            } => {
                if let Some(t) = self.topics.get_mut(name) {
                    crate::reassignment::apply_complete(t, *partition, origin);
                }
            }
            MetadataCommand::RemoveBroker { id } => {
                self.removed.insert(*id);
            }
            MetadataCommand::AddBroker { id, peer_addr } => {
                self.removed.remove(id);
                if !self.voters.contains(id) {
                    let addr = peer_addr
                        .clone()
                        .expect("checked: a new broker has an address");
                    self.voters.push(*id);
                    self.voters.sort();
                    self.peer_addrs.insert(*id, addr);
                }
            }
            MetadataCommand::InitCluster { cluster_id, voters } => {
                self.cluster_id = ClusterId::parse(cluster_id).expect("checked just above");
                if let Some(voters) = voters {
                    if self.topics.is_empty() {
                        let mut v: Vec<BrokerId> = voters.iter().copied().map(BrokerId).collect();
                        v.sort();
                        v.dedup();
                        self.first_voters = v.clone();
                        self.voters = v;
                    } else {
                        // Placed already on the voters it had: kept.
                        tracing::warn!(
                            "the cluster was named after topics were placed; its recorded first voters are not taken"
                        );
                    }
                }
            }
        }
        Outcome::Done
    }

    /// Whether broker `id` may be added: one of the cluster's brokers
    /// always may (back among the hosts); a new one needs a valid peer
    /// address and room under [`BROKERS_MAX`].
    fn check_add_broker(&self, id: BrokerId, peer_addr: Option<&str>) -> Outcome {
        if self.voters.contains(&id) {
            return Outcome::Done;
        }
        let refused = |message: String| Outcome::Refused(ErrorCode::InvalidRequest, message);
        if !self.cluster_id.is_known() {
            // Its first voters are recorded when it is named: a broker
            // joining before would open from voters that are not yet final.
            // Retriable: the first controller leader names it at once.
            return Outcome::Refused(
                ErrorCode::NotController,
                "the cluster is not named yet: its first controller leader names it".into(),
            );
        }
        if id.get() == 0 || id.get() > u64::from(u32::MAX) {
            return refused(format!("broker id {id}: from 1 to {}", u32::MAX));
        }
        let Some(addr) = peer_addr else {
            return refused(format!(
                "broker {id} is new to this cluster: give its peer address \
                 (rill cluster add-broker {id} HOST:PORT)"
            ));
        };
        if let Err(why) = validate_peer_addr(addr) {
            return refused(format!("peer address {addr:?} of broker {id}: {why}"));
        }
        if self.voters.len() >= BROKERS_MAX {
            return refused(format!(
                "the cluster has {} brokers, the most it may have",
                self.voters.len()
            ));
        }
        Outcome::Done
    }

    /// The brokers that host replicas: the voters but those removed.
    pub fn hosts(&self) -> Vec<BrokerId> {
        crate::balance::hosts(self)
    }

    /// Where the next topic's partitions go: partition `p` on
    /// `replication_factor` consecutive hosts from `(offset + p) mod n`.
    fn placement(&self, partitions: u32, replication_factor: u16) -> Vec<Vec<BrokerId>> {
        let hosts = self.hosts();
        let n = hosts.len().max(1);
        let start = (self.topics_created % n as u64) as usize;
        (0..partitions as usize)
            .map(|p| {
                (0..usize::from(replication_factor).min(hosts.len()))
                    .map(|k| hosts[(start + p + k) % n])
                    .collect()
            })
            .collect()
    }

    /// Where partitions added to topic `name`, up to `partitions` in all,
    /// go: on as many replicas as its first partition, continuing its
    /// rotation over the voters (nothing when there is no such topic).
    fn added_placement(&self, name: &str, partitions: u32) -> Vec<Vec<BrokerId>> {
        let Some(t) = self.topics.get(name) else {
            return Vec::new();
        };
        let hosts = self.hosts();
        let n = hosts.len().max(1);
        let first = t.replicas.first().and_then(|r| r.first());
        let start = first
            .and_then(|b| hosts.iter().position(|v| v == b))
            .unwrap_or(0);
        let rf = t.replicas.first().map_or(1, Vec::len).min(hosts.len());
        (t.partitions() as usize..partitions as usize)
            .map(|p| (0..rf).map(|k| hosts[(start + p + k) % n]).collect())
            .collect()
    }

    /// The first broker that would host more than `limit` partition
    /// replicas once the next topic is placed, with how many it would host.
    fn replicas_past(
        &self,
        limit: u32,
        partitions: u32,
        replication_factor: u16,
    ) -> Option<(BrokerId, u64)> {
        self.hosted_past(limit, &self.placement(partitions, replication_factor))
    }

    /// The first broker that would host more than `limit` partition
    /// replicas once partitions on `more` replicas are placed, with how
    /// many it would host.
    fn hosted_past(&self, limit: u32, more: &[Vec<BrokerId>]) -> Option<(BrokerId, u64)> {
        let mut hosted: BTreeMap<BrokerId, u64> = BTreeMap::new();
        let existing = self.topics.values().flat_map(|t| t.replicas.iter());
        for replicas in existing.chain(more.iter()) {
            for b in replicas {
                *hosted.entry(*b).or_default() += 1;
            }
        }
        hosted.into_iter().find(|(_, n)| *n > u64::from(limit))
    }

    /// The topic and partition a group serves, if any.
    pub fn partition_of(&self, group: GroupId) -> Option<(&TopicImage, u32)> {
        self.topics.values().find_map(|t| {
            let g = group.get();
            let mut base = 0u32;
            for &(first, count) in &t.extents {
                if g >= first && g < first + u64::from(count) {
                    return Some((t, base + (g - first) as u32));
                }
                base += count;
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: u32, rf: u16) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            replication_factor: rf,
            configs: vec![],
            max_partition_replicas: None,
        }
    }

    fn create_limited(name: &str, partitions: u32, rf: u16, limit: u32) -> MetadataCommand {
        match create(name, partitions, rf) {
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                ..
            } => MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                max_partition_replicas: Some(limit),
            },
            other => other,
        }
    }

    #[test]
    fn a_topic_that_would_put_a_broker_past_its_replica_limit_is_refused() {
        let mut image = ClusterImage::new(vec![BrokerId(1), BrokerId(2)]);
        // 3 partitions x 2 replicas on 2 brokers: 3 each.
        assert_eq!(image.apply(&create_limited("a", 3, 2, 4)), Outcome::Done);
        let Outcome::Refused(code, message) = image.apply(&create_limited("b", 2, 2, 4)) else {
            panic!("5 replicas on a broker limited to 4")
        };
        assert_eq!(code, ErrorCode::InvalidPartitions);
        assert!(
            message.contains("5 partition replicas on broker 1")
                && message.contains("limit of 4")
                && message.contains("max_partition_replicas"),
            "{message}"
        );
        assert!(!image.topics.contains_key("b"));
        // One more replica each still fits; a command without a limit (an
        // old log's) checks none.
        assert_eq!(image.apply(&create_limited("c", 1, 2, 4)), Outcome::Done);
        assert_eq!(image.apply(&create("d", 5, 2)), Outcome::Done);
        // The limit round-trips through the command's encoding.
        let cmd = create_limited("e", 1, 1, 7);
        assert_eq!(MetadataCommand::decode(&cmd.encode()), Some(cmd));
    }

    #[test]
    fn replicas_round_robin_and_preferred_leaders_spread_evenly() {
        let mut image = ClusterImage::new(vec![BrokerId(3), BrokerId(1), BrokerId(2)]);
        assert_eq!(image.apply(&create("a", 6, 3)), Outcome::Done);
        let t = &image.topics["a"];
        let leaders: Vec<u64> = t.replicas.iter().map(|r| r[0].get()).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        assert_eq!(t.replicas[1], [BrokerId(2), BrokerId(3), BrokerId(1)]);
        assert_eq!((t.extents.clone(), image.next_group), (vec![(1, 6)], 7));
        // The next topic starts one broker further on.
        image.apply(&create("b", 1, 2));
        assert_eq!(image.topics["b"].replicas[0], [BrokerId(2), BrokerId(3)]);
        assert_eq!(image.topics["b"].extents, vec![(7, 1)]);
        assert_eq!(
            image
                .partition_of(GroupId(7))
                .map(|(t, p)| (t.name.as_str(), p)),
            Some(("b", 0))
        );
    }

    #[test]
    fn applying_the_same_commands_builds_the_same_image() {
        let cmds = [
            create("a", 3, 1),
            create("a", 2, 1),
            MetadataCommand::DeleteTopic { name: "a".into() },
            create("b", 2, 1),
        ];
        let mut one = ClusterImage::new(vec![BrokerId(1)]);
        let mut two = one.clone();
        let outcomes: Vec<_> = cmds.iter().map(|c| one.apply(c)).collect();
        for c in &cmds {
            two.apply(&MetadataCommand::decode(&c.encode()).expect("decodes"));
        }
        assert_eq!(one, two);
        assert!(matches!(
            outcomes[1],
            Outcome::Refused(ErrorCode::TopicAlreadyExists, _)
        ));
        // Group ids are never given twice, even after a delete.
        assert_eq!(one.topics["b"].extents[0].0, 4);
    }

    #[test]
    fn a_committed_topic_whose_configs_todays_rules_refuse_is_applied_with_defaults_for_them() {
        // Proposed by a version with looser rules: today's proposer would
        // refuse it, but replaying the log must keep the topic.
        let configs: Vec<(String, String)> = [
            ("retention.ms", "60000"),
            ("segment.bytes", "1"),
            ("a.config.from.later", "x"),
            ("retention.ms", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cmd = match create("old", 2, 1) {
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                ..
            } => MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs: configs.clone(),
                max_partition_replicas: None,
            },
            other => other,
        };
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        assert!(matches!(
            image.check(&cmd),
            Outcome::Refused(ErrorCode::InvalidConfig, _)
        ));
        assert_eq!(image.apply(&cmd), Outcome::Done);
        let config = &image.topics["old"].config;
        assert_eq!(config.retention_ms, Some(60_000), "a valid config is kept");
        assert_eq!(
            config.segment_bytes,
            TopicConfig::default().segment_bytes,
            "a refused one keeps its default"
        );
        let (_, refused) = TopicConfig::from_committed_pairs(&configs);
        assert_eq!(refused.len(), 3, "{refused:?}");

        // Settings bound to each other are taken together, in any order.
        let linked: Vec<(String, String)> =
            [("segment.bytes", "8192"), ("max.message.bytes", "4096")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let (config, refused) = TopicConfig::from_committed_pairs(&linked);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(config.segment_bytes, 8192);
        assert_eq!(config, TopicConfig::from_pairs(&linked).unwrap());
        // Also beside a pair refused on its own, wherever it stands.
        for at in 0..=2 {
            let mut with_bad = linked.clone();
            with_bad.insert(at, ("a.config.from.later".into(), "x".into()));
            let (config, refused) = TopicConfig::from_committed_pairs(&with_bad);
            assert_eq!(config.segment_bytes, 8192, "bad pair at {at}");
            assert_eq!(config.max_message_bytes, 4096, "bad pair at {at}");
            assert_eq!(refused.len(), 1, "{refused:?}");
        }
    }

    #[test]
    fn the_first_cluster_id_applied_names_the_cluster_for_good() {
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        let (first, second) = (ClusterId::fresh(), ClusterId::fresh());
        let init = |id: ClusterId| MetadataCommand::InitCluster {
            cluster_id: id.to_string(),
            voters: None,
        };
        assert!(matches!(
            image.apply(&MetadataCommand::InitCluster {
                cluster_id: "not-a-uuid".into(),
                voters: None,
            }),
            Outcome::Refused(ErrorCode::InvalidRequest, _)
        ));
        assert_eq!(image.cluster_id, ClusterId::UNKNOWN);
        assert_eq!(image.apply(&init(first)), Outcome::Done);
        assert!(matches!(
            image.apply(&init(second)),
            Outcome::Refused(ErrorCode::InvalidRequest, _)
        ));
        assert_eq!(image.cluster_id, first);
        let decoded = MetadataCommand::decode(&init(first).encode()).expect("decodes");
        assert_eq!(decoded, init(first));
        // A command of a log written before the voters were recorded.
        let old = format!("{{\"InitCluster\":{{\"cluster_id\":\"{first}\"}}}}");
        assert_eq!(MetadataCommand::decode(old.as_bytes()), Some(init(first)));
    }

    #[test]
    fn placements_replay_on_the_recorded_first_voters_whatever_the_peers_say_now() {
        let commands = [
            MetadataCommand::InitCluster {
                cluster_id: ClusterId::fresh().to_string(),
                voters: Some(vec![3, 1, 2, 4]),
            },
            MetadataCommand::CreateTopic {
                name: "t".into(),
                id: "00000000-0000-4000-8000-000000000001".into(),
                partitions: 4,
                replication_factor: 3,
                configs: vec![],
                max_partition_replicas: None,
            },
            MetadataCommand::RemoveBroker { id: BrokerId(4) },
        ];
        let replay = |peers: Vec<BrokerId>| {
            let mut image = ClusterImage::new(peers);
            for c in &commands {
                image.apply(c);
            }
            image.topics["t"].replicas.clone()
        };
        let first = replay((1..=4).map(BrokerId).collect());
        assert!(first.iter().flatten().any(|b| *b == BrokerId(4)));
        // Broker 4 removed and dropped from --peers: the same placements.
        assert_eq!(replay((1..=3).map(BrokerId).collect()), first);
    }

    #[test]
    fn a_broker_joins_with_its_peer_address_and_placements_replay_with_it() {
        let join = |id: u64, addr: Option<&str>| MetadataCommand::AddBroker {
            id: BrokerId(id),
            peer_addr: addr.map(str::to_string),
        };
        let mut image = ClusterImage::new((1..=3).map(BrokerId).collect());
        // Not before the cluster is named (its first voters recorded);
        // retriable, as it is named as soon as it has a controller.
        assert!(matches!(
            image.apply(&join(4, Some("127.0.0.1:7004"))),
            Outcome::Refused(ErrorCode::NotController, _)
        ));
        let named = MetadataCommand::InitCluster {
            cluster_id: ClusterId::fresh().to_string(),
            voters: Some(vec![1, 2, 3]),
        };
        assert_eq!(image.apply(&named), Outcome::Done);
        for refused in [
            join(4, None),
            join(4, Some("0.0.0.0:7004")),
            join(4, Some("127.0.0.1:0")),
            join(4, Some("nocolon")),
            join(0, Some("127.0.0.1:7000")),
        ] {
            assert!(
                matches!(
                    image.apply(&refused),
                    Outcome::Refused(ErrorCode::InvalidRequest, _)
                ),
                "{refused:?}"
            );
        }
        assert_eq!(image.voters.len(), 3);
        assert_eq!(image.apply(&join(4, Some("127.0.0.1:7004"))), Outcome::Done);
        assert_eq!(image.voters, (1..=4).map(BrokerId).collect::<Vec<_>>());
        assert_eq!(
            image.first_voters,
            (1..=3).map(BrokerId).collect::<Vec<_>>()
        );
        assert_eq!(image.peer_addrs[&BrokerId(4)], "127.0.0.1:7004");
        assert!(image.hosts().contains(&BrokerId(4)));
        // Again, or a first voter with an address: nothing changes.
        assert_eq!(image.apply(&join(4, Some("127.0.0.1:9999"))), Outcome::Done);
        assert_eq!(image.apply(&join(2, Some("127.0.0.1:9999"))), Outcome::Done);
        assert_eq!(image.peer_addrs.len(), 1);
        assert_eq!(image.peer_addrs[&BrokerId(4)], "127.0.0.1:7004");
        // A topic created after the join is placed on the new broker too.
        assert_eq!(image.apply(&create("after", 4, 3)), Outcome::Done);
        assert!(
            image.topics["after"]
                .replicas
                .iter()
                .flatten()
                .any(|b| *b == BrokerId(4))
        );
        // A full cluster takes no more brokers.
        let mut full = ClusterImage::new((1..=BROKERS_MAX as u64).map(BrokerId).collect());
        full.apply(&MetadataCommand::InitCluster {
            cluster_id: ClusterId::fresh().to_string(),
            voters: None,
        });
        assert!(matches!(
            full.apply(&join(1000, Some("127.0.0.1:7000"))),
            Outcome::Refused(ErrorCode::InvalidRequest, _)
        ));
        // A command written before brokers could join decodes.
        assert_eq!(
            MetadataCommand::decode(br#"{"AddBroker":{"id":4}}"#),
            Some(join(4, None))
        );
        let encoded = join(5, Some("h:1")).encode();
        assert_eq!(
            MetadataCommand::decode(&encoded),
            Some(join(5, Some("h:1")))
        );
    }

    #[test]
    fn bad_commands_are_refused_with_their_error() {
        let image = ClusterImage::new(vec![BrokerId(1), BrokerId(2)]);
        let refused = |c: &MetadataCommand| match image.check(c) {
            Outcome::Refused(e, _) => e,
            Outcome::Done => ErrorCode::None,
        };
        assert_eq!(
            refused(&create("a", 1, 3)),
            ErrorCode::InvalidReplicationFactor
        );
        assert_eq!(refused(&create("../x", 1, 1)), ErrorCode::InvalidTopic);
        assert_eq!(refused(&create("a", 0, 1)), ErrorCode::InvalidPartitions);
        assert_eq!(
            refused(&MetadataCommand::DeleteTopic { name: "a".into() }),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            refused(&MetadataCommand::RegisterBroker {
                id: BrokerId(9),
                host: "h".into(),
                port: 1
            }),
            ErrorCode::InvalidRequest
        );
        assert!(MetadataCommand::decode(b"{not json").is_none());
    }

    #[test]
    fn a_registration_holds_its_broker_id_as_a_bare_number() {
        let command = MetadataCommand::RegisterBroker {
            id: BrokerId(7),
            host: "h".into(),
            port: 9092,
        };
        let bytes = br#"{"RegisterBroker":{"id":7,"host":"h","port":9092}}"#;
        assert_eq!(command.encode(), bytes);
        assert_eq!(MetadataCommand::decode(bytes), Some(command));
    }

    #[test]
    fn a_topic_id_that_is_not_a_canonical_uuid_is_refused_on_apply() {
        let with_id = |id: &str| MetadataCommand::CreateTopic {
            name: "orders".into(),
            id: id.into(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![],
            max_partition_replicas: None,
        };
        for bad in [
            "../../../etc",
            "id-orders",
            "0B1F7A52-39A6-4C2F-9F0E-1D2C3B4A5968",
            "0b1f7a5239a64c2f9f0e1d2c3b4a5968",
        ] {
            let mut image = ClusterImage::new(vec![BrokerId(1)]);
            let before = image.clone();
            // The command as it comes out of the controller's log.
            let cmd = MetadataCommand::decode(&with_id(bad).encode()).expect("decodes");
            assert!(
                matches!(
                    image.apply(&cmd),
                    Outcome::Refused(ErrorCode::InvalidRequest, _)
                ),
                "{bad:?}"
            );
            assert_eq!(image, before, "{bad:?}: nothing applied");
        }
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        let good = "0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968";
        assert_eq!(image.apply(&with_id(good)), Outcome::Done);
        assert_eq!(image.topics["orders"].id, good);
    }

    fn alter(name: &str, set: &[(&str, &str)], delete: &[&str]) -> MetadataCommand {
        MetadataCommand::AlterTopicConfig {
            name: name.into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn a_topic_s_settings_change_live_and_go_back_to_their_defaults() {
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        let mut cmd = create("t", 1, 1);
        if let MetadataCommand::CreateTopic { configs, .. } = &mut cmd {
            configs.push(("segment.ms".into(), "3600000".into()));
        }
        assert_eq!(image.apply(&cmd), Outcome::Done);
        let cmd = alter("t", &[("retention.ms", "60000")], &["segment.ms"]);
        // Through the log and back, as every broker applies it.
        let cmd = MetadataCommand::decode(&cmd.encode()).expect("decodes");
        assert_eq!(image.check(&cmd), Outcome::Done);
        assert_eq!(image.apply(&cmd), Outcome::Done);
        let t = &image.topics["t"];
        assert_eq!(t.config.retention_ms, Some(60_000));
        assert_eq!(t.config.segment_ms, TopicConfig::default().segment_ms);
        assert_eq!(
            t.overrides,
            vec![("retention.ms".to_string(), "60000".to_string())]
        );
        assert_eq!(
            image.apply(&alter("t", &[], &["retention.ms"])),
            Outcome::Done
        );
        assert_eq!(image.topics["t"].config, TopicConfig::default());
    }

    #[test]
    fn settings_fixed_at_creation_bad_values_and_unknown_topics_are_refused() {
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        assert_eq!(image.apply(&create("t", 1, 1)), Outcome::Done);
        let before = image.clone();
        for (cmd, code, says) in [
            (
                alter("t", &[("fsync", "false")], &[]),
                ErrorCode::InvalidConfig,
                "fsync",
            ),
            (
                alter("t", &[("max.message.bytes", "2000000")], &[]),
                ErrorCode::InvalidConfig,
                "max.message.bytes",
            ),
            (
                alter("t", &[("retention.ms", "-5")], &[]),
                ErrorCode::InvalidConfig,
                "retention.ms",
            ),
            (
                alter("t", &[("nope", "1")], &[]),
                ErrorCode::InvalidConfig,
                "nope",
            ),
            (
                alter("missing", &[("retention.ms", "1")], &[]),
                ErrorCode::UnknownTopicOrPartition,
                "missing",
            ),
        ] {
            match image.check(&cmd) {
                Outcome::Refused(c, m) => {
                    assert_eq!(c, code, "{m}");
                    assert!(m.contains(says), "{m}");
                }
                Outcome::Done => panic!("{cmd:?} was accepted"),
            }
        }
        assert_eq!(image, before);
    }

    #[test]
    fn added_partitions_take_the_free_groups_and_continue_the_placement() {
        let voters = vec![BrokerId(1), BrokerId(2), BrokerId(3)];
        let mut image = ClusterImage::new(voters);
        assert_eq!(image.apply(&create("a", 2, 2)), Outcome::Done);
        assert_eq!(image.apply(&create("b", 1, 1)), Outcome::Done);
        let grow = |partitions| MetadataCommand::AddPartitions {
            name: "a".into(),
            partitions,
            max_partition_replicas: None,
        };
        for refused in [1, 2] {
            assert!(matches!(
                image.check(&grow(refused)),
                Outcome::Refused(ErrorCode::InvalidPartitions, _)
            ));
        }
        let cmd = MetadataCommand::decode(&grow(4).encode()).expect("decodes");
        assert_eq!(image.apply(&cmd), Outcome::Done);
        let a = &image.topics["a"];
        assert_eq!(a.partitions(), 4);
        // Groups 1-2 at creation, 3 went to "b", so 4-5 for the new ones.
        assert_eq!(a.extents, vec![(1, 2), (4, 2)]);
        assert_eq!((a.group(2), a.group(3)), (GroupId(4), GroupId(5)));
        assert_eq!(
            image
                .partition_of(GroupId(5))
                .map(|(t, p)| (t.name.clone(), p)),
            Some(("a".into(), 3))
        );
        assert_eq!(
            image
                .partition_of(GroupId(3))
                .map(|(t, p)| (t.name.clone(), p)),
            Some(("b".into(), 0))
        );
        // The rotation goes on where it left off, on as many replicas.
        assert_eq!(a.replicas[2], vec![BrokerId(3), BrokerId(1)]);
        assert_eq!(a.replicas[3], vec![BrokerId(1), BrokerId(2)]);
        assert_eq!(image.next_group, 6);
        // A limit the new ones would pass refuses them.
        let limited = MetadataCommand::AddPartitions {
            name: "a".into(),
            partitions: 40,
            max_partition_replicas: Some(10),
        };
        assert!(matches!(
            image.check(&limited),
            Outcome::Refused(ErrorCode::InvalidPartitions, _)
        ));
    }

    #[test]
    fn producer_ids_are_allocated_once_each_in_order() {
        let mut image = ClusterImage::new(vec![BrokerId(1)]);
        let take = |first, count| MetadataCommand::AllocateProducerIds { first, count };
        let cmd = MetadataCommand::decode(&take(0, 1000).encode()).expect("decodes");
        assert_eq!(image.apply(&cmd), Outcome::Done);
        assert_eq!(image.next_producer_id, 1000);
        // A second proposal from the same starting point lost the race.
        assert!(matches!(
            image.apply(&take(0, 1000)),
            Outcome::Refused(ErrorCode::NotController, _)
        ));
        assert!(matches!(
            image.check(&take(1000, 0)),
            Outcome::Refused(ErrorCode::InvalidRequest, _)
        ));
        assert!(matches!(
            image.check(&take(1000, PRODUCER_ID_BLOCK_MAX + 1)),
            Outcome::Refused(ErrorCode::InvalidRequest, _)
        ));
        assert_eq!(image.apply(&take(1000, 10)), Outcome::Done);
        assert_eq!(image.next_producer_id, 1010);
    }
}
