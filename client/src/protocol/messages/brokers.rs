//! Changing which brokers host replicas, and spreading replicas over them
//! (`ChangeBrokers`), version 0: `rill cluster balance`, `remove-broker`
//! and `add-broker`.
//!
//! Byte layouts (primitives as in [`crate::protocol::wire`]: `string` is a
//! `u16` length then UTF-8, `[T]` a `u32` count then the elements):
//!
//! | message | fields, in wire order |
//! | --- | --- |
//! | `ChangeBrokers` request | `action u8`, `broker_id u32`, `timeout_ms u32` |
//! | `ChangeBrokers` response | `error i16`, `message string`, `moves [topic string, partition u32, replicas [u32]]`, `stuck [string]` |
//!
//! `action` is [`BrokerAction`]: 1 balance (`broker_id` 0), 2 remove
//! `broker_id` (no new replica goes to it and its replicas move away), 3
//! add it back. Each answers with the partition moves it started, and the
//! partitions (`topic/partition`) it could not move off a removed broker.

use super::request::{MOVE_REPLICAS_MAX, PartitionMove};
use super::{MIN_STRING, error_code};
use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// What a [`ChangeBrokersRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAction {
    /// Spread replicas and preferred leaders evenly over the brokers that
    /// host replicas.
    Balance = 1,
    /// Take the broker out of hosting replicas and move its replicas away.
    Remove = 2,
    /// Take a removed broker back, and spread replicas onto it.
    Add = 3,
}

/// A change of the brokers that host replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBrokersRequest {
    /// What to do.
    pub action: BrokerAction,
    /// The broker removed or added (0 for a balance).
    pub broker_id: u32,
    /// How long to wait for the change to be recorded, ms.
    pub timeout_ms: u32,
}

/// The moves a [`ChangeBrokersRequest`] started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBrokersResponse {
    /// Why nothing was done, if so.
    pub error: ErrorCode,
    /// What the error means here.
    pub message: String,
    /// The partition moves started, each to its new replicas.
    pub moves: Vec<PartitionMove>,
    /// Partitions (`topic/partition`) left on a removed broker: every
    /// other broker holds one of their replicas already.
    pub stuck: Vec<String>,
}

impl ChangeBrokersRequest {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(self.action as u8);
        w.u32(self.broker_id);
        w.u32(self.timeout_ms);
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<ChangeBrokersRequest, DecodeError> {
        let action = match r.u8("action")? {
            1 => BrokerAction::Balance,
            2 => BrokerAction::Remove,
            3 => BrokerAction::Add,
            _ => return Err(DecodeError::Invalid { what: "action" }),
        };
        Ok(ChangeBrokersRequest {
            action,
            broker_id: r.u32("broker id")?,
            timeout_ms: r.u32("timeout")?,
        })
    }
}

/// Writes one partition move (shared with `ReassignPartitions`).
pub(crate) fn write_move(w: &mut Writer, m: &PartitionMove) {
    w.string(&m.topic);
    w.u32(m.partition);
    w.array(&m.replicas, |w, b| w.u32(*b));
}

/// Reads one partition move, refusing more brokers than a move may name.
pub(crate) fn read_move(r: &mut Reader) -> Result<PartitionMove, DecodeError> {
    let topic = r.string("topic name")?;
    let partition = r.u32("partition")?;
    let replicas = r.array("replicas", 4, |r| r.u32("broker id"))?;
    if replicas.len() > MOVE_REPLICAS_MAX {
        return Err(DecodeError::Invalid {
            what: "replicas: more brokers than a move may name",
        });
    }
    Ok(PartitionMove {
        topic,
        partition,
        replicas,
    })
}

impl ChangeBrokersResponse {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.string(&self.message);
        w.array(&self.moves, write_move);
        w.array(&self.stuck, |w, s| w.string(s));
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<ChangeBrokersResponse, DecodeError> {
        Ok(ChangeBrokersResponse {
            error: error_code(r, "error code")?,
            message: r.string("message")?,
            moves: r.array("moves", MIN_STRING + 8, read_move)?,
            stuck: r.array("stuck", MIN_STRING, |r| r.string("partition"))?,
        })
    }
}
