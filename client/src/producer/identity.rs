//! A producer's identity for idempotence: a producer id the cluster gives
//! out once (InitProducerId; the brokers take blocks of ids through the
//! controller, so no two producers ever share one, across restarts and
//! elections), and its epoch.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::InitProducerIdRequest;
use crate::protocol::{ErrorCode, Request, Response};

/// A producer id and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Unique in the cluster.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
}

/// Longest pause between tries while no controller can give an id, ms.
const RETRY_MS_MAX: u64 = 1_000;

/// Asks the cluster for a new producer id, trying again while it cannot
/// give one (no controller yet), for at most `timeout`.
pub async fn init_producer_id(
    cluster: &Cluster,
    timeout: Duration,
) -> Result<ProducerIdentity, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause_ms = 50;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let request = Request::InitProducerId(InitProducerIdRequest {
            timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
        });
        let error = match cluster.any(request, left).await {
            Ok(Response::InitProducerId(r)) if r.error.is_ok() && r.producer_id >= 0 => {
                return Ok(ProducerIdentity {
                    producer_id: r.producer_id,
                    producer_epoch: r.producer_epoch,
                });
            }
            Ok(Response::InitProducerId(r)) => ClientError::Broker {
                code: r.error,
                message: if r.error == ErrorCode::NotController {
                    "the idempotent producer needs an id from the controller, and no controller \
                     leader is known: a majority of the controller's brokers must be up \
                     (a producer without idempotence needs none)"
                        .into()
                } else {
                    "no producer id given".into()
                },
            },
            Ok(other) => {
                return Err(ClientError::Invalid(format!(
                    "a producer id was asked for and {:?} answered",
                    other.api_key()
                )));
            }
            Err(e) => e,
        };
        if !error.is_retriable() || tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = (pause_ms * 2).min(RETRY_MS_MAX);
    }
}
