//! Changing which brokers host replicas, and spreading replicas over them
//! (`ChangeBrokers`), version 0: `rill cluster balance`, `remove-broker`
//! and `add-broker`; and a new broker joining the cluster (`JoinCluster`,
//! version 0), which a broker started with `--join` sends.
//!
//! Byte layouts (primitives as in [`crate::protocol::wire`]: `string` is a
//! `u16` length then UTF-8, `[T]` a `u32` count then the elements):
//!
//! | message | fields, in wire order |
//! | --- | --- |
//! | `ChangeBrokers` request | `action u8`, `broker_id u32`, `timeout_ms u32`, `peer_addr string` |
//! | `ChangeBrokers` response | `error i16`, `message string`, `moves [topic string, partition u32, replicas [u32]]`, `stuck [string]` |
//! | `JoinCluster` request | `broker_id u32`, `peer_addr string`, `timeout_ms u32` |
//! | `JoinCluster` response | `error i16`, `message string`, `first_voters [u32]`, `peers [broker_id u32, addr string]` |
//!
//! `action` is [`BrokerAction`]: 1 balance (`broker_id` 0), 2 remove
//! `broker_id` (no new replica goes to it and its replicas move away), 3
//! add it (back among the hosts, or into the cluster: a broker new to it
//! needs `peer_addr`, empty otherwise). Each answers with the partition
//! moves it started, and the partitions (`topic/partition`) it could not
//! move off a removed broker.
//!
//! `JoinCluster` adds the broker (as `ChangeBrokers` add does, without
//! moving replicas) and answers with what it needs to start: the
//! controller group's first voters, from which it opens its replica of the
//! controller's log, and every other broker's peer address. At most
//! [`JOIN_PEERS_MAX`] of each are read.

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
    /// The peer address (`HOST:PORT`) of a broker new to the cluster that
    /// `Add` joins; empty otherwise.
    pub peer_addr: String,
}

/// Most peers and first voters a [`JoinClusterResponse`] may list.
pub const JOIN_PEERS_MAX: usize = 1024;

/// A broker asking to join the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClusterRequest {
    /// The broker joining.
    pub broker_id: u32,
    /// Where its peer listener is, `HOST:PORT`.
    pub peer_addr: String,
    /// How long to wait for the join to be recorded, ms.
    pub timeout_ms: u32,
}

/// What a joining broker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClusterResponse {
    /// Why it may not join, if so.
    pub error: ErrorCode,
    /// What the error means here.
    pub message: String,
    /// The voters the controller group started with.
    pub first_voters: Vec<u32>,
    /// Every other broker's peer address.
    pub peers: Vec<(u32, String)>,
}

impl JoinClusterRequest {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.broker_id);
        w.string(&self.peer_addr);
        w.u32(self.timeout_ms);
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<JoinClusterRequest, DecodeError> {
        Ok(JoinClusterRequest {
            broker_id: r.u32("broker id")?,
            peer_addr: r.string("peer address")?,
            timeout_ms: r.u32("timeout")?,
        })
    }
}

impl JoinClusterResponse {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.string(&self.message);
        w.array(&self.first_voters, |w, b| w.u32(*b));
        w.array(&self.peers, |w, (b, addr)| {
            w.u32(*b);
            w.string(addr);
        });
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<JoinClusterResponse, DecodeError> {
        let error = error_code(r, "error code")?;
        let message = r.string("message")?;
        let first_voters = r.array("first voters", 4, |r| r.u32("broker id"))?;
        if first_voters.len() > JOIN_PEERS_MAX {
            return Err(DecodeError::Invalid {
                what: "first voters: more brokers than a cluster may have",
            });
        }
        let peers = r.array("peers", 4 + MIN_STRING, |r| {
            Ok((r.u32("broker id")?, r.string("peer address")?))
        })?;
        if peers.len() > JOIN_PEERS_MAX {
            return Err(DecodeError::Invalid {
                what: "peers: more brokers than a cluster may have",
            });
        }
        Ok(JoinClusterResponse {
            error,
            message,
            first_voters,
            peers,
        })
    }
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
        w.string(&self.peer_addr);
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
            peer_addr: r.string("peer address")?,
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
