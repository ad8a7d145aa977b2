//! ChangeBrokers (`rill cluster balance`, `remove-broker`, `add-broker`):
//! run where the controller leads, which records the change of hosts and
//! starts the moves of the plan (`crate::balance`), at most
//! [`MOVES_PER_REQUEST_MAX`] at a time: the caller asks again once they
//! have ended, until the plan is empty, so a cluster never copies more
//! than that many partitions at once for one operator command.
//!
//! JoinCluster (`rill-broker --join`): the controller leader records the
//! new broker with its peer address (every broker then connects to it,
//! and the controller's voters take it in, as a learner first) and
//! answers with what it needs to start. No replica moves until an
//! operator asks (`rill cluster balance`), as with Kafka's reassignment.

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    BrokerAction, ChangeBrokersRequest, ChangeBrokersResponse, JoinClusterRequest,
    JoinClusterResponse, PartitionMove,
};
use rill_client::protocol::{Request, Response};
use rill_replication::BrokerId;

use crate::error::BrokerError;
use crate::metadata::MetadataCommand;
use crate::state::Broker;

/// Most partition moves one request starts.
pub const MOVES_PER_REQUEST_MAX: usize = 32;

fn failed(e: BrokerError) -> ChangeBrokersResponse {
    ChangeBrokersResponse {
        error: e.code(),
        message: e.to_string(),
        moves: Vec::new(),
        stuck: Vec::new(),
    }
}

/// Carries out `c` here when this broker leads the controller; forwards
/// it to the controller otherwise (once: a forwarded request is not
/// forwarded again).
pub(super) async fn change_brokers(
    broker: &Arc<Broker>,
    c: ChangeBrokersRequest,
    forwarded: bool,
) -> ChangeBrokersResponse {
    let command = match c.action {
        BrokerAction::Balance => None,
        BrokerAction::Remove => Some(MetadataCommand::RemoveBroker {
            id: BrokerId(u64::from(c.broker_id)),
        }),
        BrokerAction::Add => Some(MetadataCommand::AddBroker {
            id: BrokerId(u64::from(c.broker_id)),
            peer_addr: (!c.peer_addr.is_empty()).then(|| c.peer_addr.clone()),
        }),
    };
    match broker.controller() {
        Some(l) if l == broker.id() => {}
        Some(l) if !forwarded => {
            return match broker
                .request_to(l, Request::ChangeBrokers(c.clone()))
                .await
            {
                Ok(Response::ChangeBrokers(r)) => r,
                Ok(_) => failed(BrokerError::UnexpectedAnswer),
                Err(e) => failed(e),
            };
        }
        _ => return failed(BrokerError::NoController),
    }
    if !c.peer_addr.is_empty()
        && let Err(why) = joinable(broker)
    {
        return failed(BrokerError::Refused {
            code: ErrorCode::InvalidRequest,
            message: why,
        });
    }
    if let Some(command) = command {
        let forward = Request::ChangeBrokers(c.clone());
        // Proposed here, never forwarded: this broker leads.
        if let Err(e) = broker.admin(command, forward, true).await {
            return failed(e);
        }
        match c.action {
            BrokerAction::Remove => {
                tracing::info!(
                    broker = c.broker_id,
                    "broker removed: its replicas move away"
                )
            }
            _ => tracing::info!(broker = c.broker_id, "broker added: it hosts replicas"),
        }
    }
    // Planning walks every partition several times over: thousands of
    // them take long enough to hold a runtime thread, so it runs off it.
    let image = broker.image();
    let Ok(plan) = tokio::task::spawn_blocking(move || crate::balance::plan(&image)).await else {
        return failed(BrokerError::Refused {
            code: ErrorCode::RequestTimedOut,
            message: "the moves were not planned: the broker is stopping".into(),
        });
    };
    let mut moves = Vec::new();
    for m in plan.moves.into_iter().take(MOVES_PER_REQUEST_MAX) {
        let replicas: Vec<u32> = m.replicas.iter().map(|b| b.get() as u32).collect();
        match broker
            .reassign_partition(&m.topic, m.partition, &replicas, true)
            .await
        {
            Ok(()) => moves.push(PartitionMove {
                topic: m.topic,
                partition: m.partition,
                replicas,
            }),
            Err(e) => {
                tracing::warn!(topic = %m.topic, partition = m.partition, error = %e, "a planned move was not started");
            }
        }
    }
    ChangeBrokersResponse {
        error: ErrorCode::None,
        message: String::new(),
        moves,
        stuck: plan.stuck,
    }
}

/// Whether brokers may join the cluster this broker, the controller's
/// leader, belongs to: it must have peers (a cluster of one started
/// without other brokers has no peer listener), each at an address a
/// joining broker can dial.
fn joinable(broker: &Broker) -> Result<(), String> {
    if broker.peers.len() <= 1 {
        return Err(
            "this cluster runs as one broker without peers (no --peers naming other \
                    brokers): it has no peer listener for a broker to join"
                .into(),
        );
    }
    for (b, addr) in &broker.peers {
        crate::metadata::validate_peer_addr(addr).map_err(|why| {
            format!(
                "broker {b}'s --peers address {addr:?} cannot be given to a joining broker: {why}"
            )
        })?;
    }
    Ok(())
}

fn join_failed(e: BrokerError) -> JoinClusterResponse {
    JoinClusterResponse {
        error: e.code(),
        message: e.to_string(),
        first_voters: Vec::new(),
        peers: Vec::new(),
    }
}

fn join_refused(message: String) -> JoinClusterResponse {
    join_failed(BrokerError::Refused {
        code: ErrorCode::InvalidRequest,
        message,
    })
}

/// Records broker `j.broker_id` as one of the cluster's brokers, at
/// `j.peer_addr`, here when this broker leads the controller (forwarded
/// there otherwise, once), and answers with the controller's first
/// voters and every other broker's peer address. A broker that joined at
/// the same address already is answered the same again; any other broker
/// of the cluster is refused (each broker needs an id of its own).
pub(super) async fn join_cluster(
    broker: &Arc<Broker>,
    j: JoinClusterRequest,
    forwarded: bool,
) -> JoinClusterResponse {
    let id = BrokerId(u64::from(j.broker_id));
    if let Err(why) = crate::metadata::validate_peer_addr(&j.peer_addr) {
        return join_refused(format!("peer address {:?}: {why}", j.peer_addr));
    }
    match broker.controller() {
        Some(l) if l == broker.id() => {}
        Some(l) if !forwarded => {
            return match broker.request_to(l, Request::JoinCluster(j.clone())).await {
                Ok(Response::JoinCluster(r)) => r,
                Ok(_) => join_failed(BrokerError::UnexpectedAnswer),
                Err(e) => join_failed(e),
            };
        }
        _ => return join_failed(BrokerError::NoController),
    }
    if let Err(why) = joinable(broker) {
        return join_refused(why);
    }
    let image = broker.image();
    if image.voters.contains(&id) {
        if image.peer_addrs.get(&id) != Some(&j.peer_addr) {
            let at = image
                .peer_addrs
                .get(&id)
                .or(broker.peers.get(&id))
                .map_or_else(|| "its --peers entry".to_string(), Clone::clone);
            return join_refused(format!(
                "broker {id} is a broker of this cluster already (at {at}): a broker joining \
                 needs an id of its own (--node-id)"
            ));
        }
    } else {
        let command = MetadataCommand::AddBroker {
            id,
            peer_addr: Some(j.peer_addr.clone()),
        };
        if let Err(e) = broker
            .admin(command, Request::JoinCluster(j.clone()), true)
            .await
        {
            return join_failed(e);
        }
        tracing::info!(broker = %id, peer_addr = %j.peer_addr, "a broker joined the cluster");
    }
    let image = broker.image();
    // Two brokers may have asked at once with one id: the one recorded
    // first has it.
    if image.peer_addrs.get(&id) != Some(&j.peer_addr) {
        return join_refused(format!(
            "broker {id} joined the cluster at another address meanwhile: a broker joining \
             needs an id of its own (--node-id)"
        ));
    }
    let mut peers = broker.peers.clone();
    peers.extend(image.peer_addrs.iter().map(|(b, a)| (*b, a.clone())));
    peers.remove(&id);
    JoinClusterResponse {
        error: ErrorCode::None,
        message: String::new(),
        first_voters: image.first_voters.iter().map(|b| b.get() as u32).collect(),
        peers: peers
            .into_iter()
            .map(|(b, a)| (b.get() as u32, a))
            .collect(),
    }
}
