//! Message and entry types on the wire: each its number in
//! `eraftpb.proto`, spelled out so the wire never depends on how the enums
//! are generated. A number the proto does not define is refused.

use raft::eraftpb::{EntryType, MessageType};

use super::WireError;

/// The wire number of a message type: its number in `eraftpb.proto`,
/// spelled out so the wire never depends on how the enum is generated.
pub(super) fn message_type_code(t: MessageType) -> u8 {
    match t {
        MessageType::MsgHup => 0,
        MessageType::MsgBeat => 1,
        MessageType::MsgPropose => 2,
        MessageType::MsgAppend => 3,
        MessageType::MsgAppendResponse => 4,
        MessageType::MsgRequestVote => 5,
        MessageType::MsgRequestVoteResponse => 6,
        MessageType::MsgSnapshot => 7,
        MessageType::MsgHeartbeat => 8,
        MessageType::MsgHeartbeatResponse => 9,
        MessageType::MsgUnreachable => 10,
        MessageType::MsgSnapStatus => 11,
        MessageType::MsgCheckQuorum => 12,
        MessageType::MsgTransferLeader => 13,
        MessageType::MsgTimeoutNow => 14,
        MessageType::MsgReadIndex => 15,
        MessageType::MsgReadIndexResp => 16,
        MessageType::MsgRequestPreVote => 17,
        MessageType::MsgRequestPreVoteResponse => 18,
    }
}

pub(super) fn message_type(code: u8) -> Result<MessageType, WireError> {
    Ok(match code {
        0 => MessageType::MsgHup,
        1 => MessageType::MsgBeat,
        2 => MessageType::MsgPropose,
        3 => MessageType::MsgAppend,
        4 => MessageType::MsgAppendResponse,
        5 => MessageType::MsgRequestVote,
        6 => MessageType::MsgRequestVoteResponse,
        7 => MessageType::MsgSnapshot,
        8 => MessageType::MsgHeartbeat,
        9 => MessageType::MsgHeartbeatResponse,
        10 => MessageType::MsgUnreachable,
        11 => MessageType::MsgSnapStatus,
        12 => MessageType::MsgCheckQuorum,
        13 => MessageType::MsgTransferLeader,
        14 => MessageType::MsgTimeoutNow,
        15 => MessageType::MsgReadIndex,
        16 => MessageType::MsgReadIndexResp,
        17 => MessageType::MsgRequestPreVote,
        18 => MessageType::MsgRequestPreVoteResponse,
        _ => return Err(WireError::UnknownMessageType(code)),
    })
}

pub(super) fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

pub(super) fn entry_type(code: u8) -> Result<EntryType, WireError> {
    Ok(match code {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(WireError::UnknownEntryType(code)),
    })
}
