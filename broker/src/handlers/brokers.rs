//! ChangeBrokers (`rill cluster balance`, `remove-broker`, `add-broker`):
//! run where the controller leads, which records the change of hosts and
//! starts the moves of the plan (`crate::balance`), at most
//! [`MOVES_PER_REQUEST_MAX`] at a time: the caller asks again once they
//! have ended, until the plan is empty, so a cluster never copies more
//! than that many partitions at once for one operator command.

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    BrokerAction, ChangeBrokersRequest, ChangeBrokersResponse, PartitionMove,
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
    if let Some(command) = command {
        let forward = Request::ChangeBrokers(c.clone());
        // Proposed here, never forwarded: this broker leads.
        if let Err(e) = broker.admin(command, forward, true).await {
            return failed(e);
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
