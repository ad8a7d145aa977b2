//! RegisterBroker on the client port: always refused. Brokers register
//! over their authenticated peer connections (see
//! [`crate::state::Broker::register`]); answering here would let anyone
//! who reaches a client port point clients at a host of their choosing.

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{BrokerMetadata, RegisterBrokerResponse};

use super::hint;
use crate::state::Broker;

/// Refuses the registration, telling the sender where the controller is.
pub(super) fn register_broker(broker: &Arc<Broker>, b: BrokerMetadata) -> RegisterBrokerResponse {
    // Brokers register over their authenticated peer connections; on
    // a client port anyone could point clients at their own host.
    tracing::warn!(
        broker = b.broker_id,
        "refused a RegisterBroker request on the client port"
    );
    RegisterBrokerResponse {
        error: ErrorCode::InvalidRequest,
        controller_id: hint(broker.controller()),
    }
}
