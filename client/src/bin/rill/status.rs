//! What every broker reports of replication (ClusterStatus), merged per
//! partition: what `rill cluster status`, `cluster health` and `topic
//! describe` show.
//!
//! No broker knows it all: each reports the replicas it holds, and only a
//! partition's leader knows how far its followers have matched. So the
//! metadata names the brokers, every broker is asked (and any broker a
//! report names that the metadata missed), and the reports are merged per
//! partition, trusting the broker that claims the lead with the highest
//! term. A broker that does not answer within a few seconds is shown as
//! down instead of failing the command, since a status tool is most needed
//! while brokers are down; the command fails only when no broker answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rill_client::Cluster;
use rill_client::protocol::messages::{ClusterStatusResponse, ReplicaStatus};
use rill_client::protocol::{Request, Response};

/// How long one broker has to answer `cluster status` before it counts as down.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One broker as `cluster status` found it.
#[derive(Debug)]
pub(crate) struct BrokerState {
    pub(crate) address: String,
    /// Its report, or why there is none.
    pub(crate) status: Result<ClusterStatusResponse, String>,
}

/// One replica of a partition, as the partition's leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaView {
    pub(crate) id: u32,
    /// Its match index; unknown without a leader's report.
    pub(crate) matched: Option<u64>,
    /// The leader's last index minus the match index.
    pub(crate) lag: Option<u64>,
    /// Records it lacks of the leader's log; unknown without a leader's
    /// report.
    pub(crate) lag_records: Option<u64>,
}

impl ReplicaView {
    /// Whether it has everything the leader has committed (Kafka's
    /// in-sync replica, judged by position rather than time).
    pub(crate) fn in_sync(&self, commit: u64) -> bool {
        self.matched.is_some_and(|m| m >= commit)
    }
}

/// One partition (or the controller's group) merged from every report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionView {
    /// Empty for the controller's own group.
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) group: u64,
    /// The broker that reports itself leader, if one does.
    pub(crate) leader: Option<u32>,
    pub(crate) term: u64,
    pub(crate) commit: u64,
    pub(crate) high_watermark: u64,
    pub(crate) replicas: Vec<ReplicaView>,
}

/// Asks the broker at `address` for its view of replication.
async fn ask_status(
    cluster: Arc<Cluster>,
    address: String,
) -> Result<ClusterStatusResponse, String> {
    let ask = async {
        let connection = cluster.connection(&address).await?;
        connection
            .request(Request::ClusterStatus, STATUS_TIMEOUT)
            .await
    };
    match tokio::time::timeout(STATUS_TIMEOUT, ask).await {
        Err(_) => Err(format!(
            "no answer within {} ms",
            STATUS_TIMEOUT.as_millis()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Response::ClusterStatus(s))) => Ok(s),
        Ok(Ok(other)) => Err(format!("unexpected {:?} response", other.api_key())),
    }
}

/// Merges the brokers' reports into one row per partition, sorted by topic
/// then partition (the controller's group, topic "", first). A row comes
/// from the broker that reports itself the leader (the highest term if
/// several do); without one, from the replica with the highest term, with
/// no leader and unknown match indexes.
pub(crate) fn merge_partitions(reports: &[&ClusterStatusResponse]) -> Vec<PartitionView> {
    let mut seen: BTreeMap<(&str, u32), Vec<(u32, &ReplicaStatus)>> = BTreeMap::new();
    for report in reports {
        for r in &report.replicas {
            seen.entry((r.topic.as_str(), r.partition))
                .or_default()
                .push((report.broker_id, r));
        }
    }
    seen.into_iter()
        .filter_map(|((topic, partition), seen)| {
            let leader = seen
                .iter()
                .filter(|(b, r)| !r.matched.is_empty() && u32::try_from(r.leader) == Ok(*b))
                .max_by_key(|(_, r)| (r.term, r.commit));
            let (leader, r) = match leader {
                Some((b, r)) => (Some(*b), *r),
                None => (None, seen.iter().max_by_key(|(_, r)| (r.term, r.commit))?.1),
            };
            let mut ids = r.replicas.clone();
            for (b, _) in &r.matched {
                if !ids.contains(b) {
                    ids.push(*b);
                }
            }
            let replicas = ids
                .into_iter()
                .map(|id| {
                    let matched = leader
                        .and_then(|_| r.matched.iter().find(|(b, _)| *b == id).map(|(_, i)| *i));
                    let offset = leader.and_then(|_| {
                        r.matched_offsets
                            .iter()
                            .find(|(b, _)| *b == id)
                            .map(|(_, o)| *o)
                    });
                    ReplicaView {
                        id,
                        matched,
                        lag: matched.map(|m| r.last_index.saturating_sub(m)),
                        lag_records: offset.map(|o| r.log_end_offset.saturating_sub(o)),
                    }
                })
                .collect();
            Some(PartitionView {
                topic: topic.to_string(),
                partition,
                group: r.group,
                leader,
                term: r.term,
                commit: r.commit,
                high_watermark: r.high_watermark,
                replicas,
            })
        })
        .collect()
}

/// What every broker reported, merged.
pub(crate) struct Gathered {
    pub(crate) brokers: BTreeMap<u32, BrokerState>,
    pub(crate) partitions: Vec<PartitionView>,
    pub(crate) controller: Option<u32>,
}

/// Metadata for the broker list, then every broker's own report, merged;
/// an error only when no broker answers.
pub(crate) async fn gather(cluster: Arc<Cluster>) -> anyhow::Result<Gathered> {
    let metadata = cluster.refresh(None).await?;
    let mut brokers: BTreeMap<u32, BrokerState> = BTreeMap::new();
    let mut to_ask: Vec<(u32, String)> = metadata
        .brokers
        .iter()
        .map(|b| (b.broker_id, format!("{}:{}", b.host, b.port)))
        .collect();
    // Brokers registered but missing from the metadata are asked too, once
    // another broker's report names them.
    while !to_ask.is_empty() {
        let asks: Vec<_> = to_ask
            .drain(..)
            .map(|(id, address)| {
                let ask = tokio::spawn(ask_status(Arc::clone(&cluster), address.clone()));
                (id, address, ask)
            })
            .collect();
        for (id, address, ask) in asks {
            let status = ask
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")));
            brokers.insert(id, BrokerState { address, status });
        }
        for state in brokers.values() {
            for b in state.status.iter().flat_map(|s| &s.brokers) {
                if !brokers.contains_key(&b.broker_id)
                    && !to_ask.iter().any(|(id, _)| *id == b.broker_id)
                {
                    to_ask.push((b.broker_id, format!("{}:{}", b.host, b.port)));
                }
            }
        }
    }
    let reports: Vec<&ClusterStatusResponse> = brokers
        .values()
        .filter_map(|b| b.status.as_ref().ok())
        .collect();
    if reports.is_empty() {
        let why = brokers
            .iter()
            .map(|(id, b)| {
                let error = b.status.as_ref().err().map_or("", String::as_str);
                format!("broker {id} at {}: {error}", b.address)
            })
            .collect::<Vec<_>>()
            .join("; ");
        bail!("no broker answered the cluster status request ({why})");
    }
    let partitions = merge_partitions(&reports);
    // The controller: whoever leads the controller's group, else what the
    // metadata or any broker says.
    let controller = partitions
        .iter()
        .find(|p| p.topic.is_empty())
        .and_then(|p| p.leader)
        .or_else(|| u32::try_from(metadata.controller_id).ok())
        .or_else(|| {
            reports
                .iter()
                .find_map(|r| u32::try_from(r.controller_id).ok())
        });
    // A broker that holds replicas but never registered its address (it
    // died before it could) cannot be asked: it is down.
    let unregistered: Vec<u32> = partitions
        .iter()
        .flat_map(|p| p.replicas.iter().map(|r| r.id))
        .filter(|id| !brokers.contains_key(id))
        .collect();
    for id in unregistered {
        brokers.entry(id).or_insert_with(|| BrokerState {
            address: "address unknown".into(),
            status: Err("it has not registered its address with the controller".into()),
        });
    }
    Ok(Gathered {
        brokers,
        partitions,
        controller,
    })
}
