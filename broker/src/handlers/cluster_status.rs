//! ClusterStatus: every replica's Raft state on this broker, for
//! operators. It asks the Raft thread for the next tick's report rather
//! than reading the last one published (see
//! [`crate::raft::Published::fresh_status`]), so what it shows is about a
//! tick old at most.

use std::sync::Arc;

use rill_client::protocol::messages::{ClusterStatusResponse, ReplicaStatus};

use super::hint;
use super::metadata::brokers;
use crate::state::Broker;

/// Every group on this broker, with its topic and partition.
pub(super) async fn cluster_status(broker: &Arc<Broker>) -> ClusterStatusResponse {
    let report = broker.published.fresh_status().await;
    let image = broker.image();
    let replicas = report
        .groups
        .iter()
        .map(|g| {
            // The image's replicas, preferred leader first, then any other
            // member of the group as this replica knows it (the controller's
            // voters, a move's new replicas).
            let (topic, partition, mut voters) = match image.partition_of(g.group) {
                Some((t, p)) => (t.name.clone(), p, t.replicas[p as usize].clone()),
                None => (String::new(), 0, Vec::new()),
            };
            let m = &g.membership;
            let mut members: Vec<_> = m
                .voters
                .iter()
                .chain(&m.voters_outgoing)
                .chain(&m.learners)
                .copied()
                .collect();
            members.sort();
            members.dedup();
            for b in members {
                if !voters.contains(&b) {
                    voters.push(b);
                }
            }
            ReplicaStatus {
                topic,
                partition,
                group: g.group.get(),
                leader: hint(g.leader),
                term: g.term.get(),
                commit: g.commit.get(),
                last_index: g.last_index.get(),
                high_watermark: g.high_watermark.get(),
                replicas: voters.iter().map(|b| b.get() as u32).collect(),
                matched: g
                    .matched
                    .iter()
                    .map(|(b, i)| (b.get() as u32, i.get()))
                    .collect(),
                log_end_offset: g.log_end_offset.get(),
                matched_offsets: g
                    .matched_offsets
                    .iter()
                    .map(|(b, o)| (b.get() as u32, o.get()))
                    .collect(),
            }
        })
        .collect();
    ClusterStatusResponse {
        broker_id: broker.node_id.get() as u32,
        controller_id: hint(report.controller),
        brokers: brokers(broker, &image),
        replicas,
    }
}
