//! The records of `__consumer_offsets`: what a group coordinator writes
//! through Raft and reads back to rebuild its state. Only the coordinator
//! writes them (clients may not produce to an internal topic), but they are
//! read from disk, so decoding checks every length against what is left
//! and never trusts a count.
//!
//! Byte layout (primitives as in [`rill_client::protocol::wire`]: integers
//! little-endian, `string` a `u16` length then UTF-8, `T?` a `u8` presence
//! flag then the value):
//!
//! | part | fields, in order |
//! | --- | --- |
//! | key | `kind u8` (= [`KIND_OFFSET_COMMIT`]), `group string`, `topic string`, `partition u32` |
//! | value | `version u8` (= [`VALUE_VERSION`]), `offset u64`, `leader_epoch u64`, `commit_timestamp_ms i64`, `metadata string?` |
//!
//! A record with a key and no value (a tombstone) removes the commit its
//! key names: that is how a group is deleted and how expired offsets go.
//! The newest record for a key wins, in log order.

use bytes::Bytes;
use rill_client::protocol::DecodeError;
use rill_client::protocol::wire::{Reader, Writer};

/// Key kind of a committed offset.
pub const KIND_OFFSET_COMMIT: u8 = 1;
/// Version of a committed offset's value.
pub const VALUE_VERSION: u8 = 0;

/// What a committed offset is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitKey {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitValue {
    /// The next offset the group consumes.
    pub offset: u64,
    /// The leader epoch the consumer committed with (0 when unknown).
    pub leader_epoch: u64,
    /// When the coordinator wrote it, ms since the epoch.
    pub commit_timestamp_ms: i64,
    /// The consumer's free text, if any.
    pub metadata: Option<String>,
}

/// Why stored bytes are not a record this broker understands.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The key is of a kind this broker does not know (written by a newer
    /// one): skipped, not fatal.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The value is of a version this broker does not know.
    #[error("unknown value version {0}")]
    UnknownVersion(u8),
    /// A record without a key.
    #[error("record without a key")]
    NoKey,
    /// The bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl CommitKey {
    /// The key's bytes.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(KIND_OFFSET_COMMIT);
        w.string(&self.group);
        w.string(&self.topic);
        w.u32(self.partition);
        w.finish()
    }

    /// A key read back; every byte must be used.
    pub fn decode(bytes: Bytes) -> Result<CommitKey, RecordError> {
        let mut r = Reader::new(bytes);
        let kind = r.u8("record kind")?;
        if kind != KIND_OFFSET_COMMIT {
            return Err(RecordError::UnknownKind(kind));
        }
        let key = CommitKey {
            group: r.string("group id")?,
            topic: r.string("topic")?,
            partition: r.u32("partition")?,
        };
        r.finish()?;
        Ok(key)
    }
}

impl CommitValue {
    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(VALUE_VERSION);
        w.u64(self.offset);
        w.u64(self.leader_epoch);
        w.i64(self.commit_timestamp_ms);
        w.option(self.metadata.as_ref(), |w, m| w.string(m));
        w.finish()
    }

    /// A value read back; every byte must be used.
    pub fn decode(bytes: Bytes) -> Result<CommitValue, RecordError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("value version")?;
        if version != VALUE_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let value = CommitValue {
            offset: r.u64("offset")?,
            leader_epoch: r.u64("leader epoch")?,
            commit_timestamp_ms: r.i64("commit timestamp")?,
            metadata: r.option("metadata", |r| r.string("metadata"))?,
        };
        r.finish()?;
        Ok(value)
    }
}

/// One stored record decoded: a commit, or (`None`) its removal.
pub fn decode(
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Result<(CommitKey, Option<CommitValue>), RecordError> {
    let key = CommitKey::decode(key.ok_or(RecordError::NoKey)?)?;
    let value = value.map(CommitValue::decode).transpose()?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_key_and_value_bytes_are_pinned() {
        let key = CommitKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        };
        assert_eq!(
            key.encode().as_ref(),
            &[1, 1, 0, b'g', 1, 0, b't', 2, 0, 0, 0][..]
        );
        let value = CommitValue {
            offset: 5,
            leader_epoch: 3,
            commit_timestamp_ms: 7,
            metadata: Some("m".into()),
        };
        let mut expected = vec![0];
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&7i64.to_le_bytes());
        expected.extend_from_slice(&[1, 1, 0, b'm']);
        assert_eq!(value.encode().as_ref(), &expected[..]);
        let none = CommitValue {
            metadata: None,
            ..value
        };
        assert_eq!(none.encode().last(), Some(&0));
    }

    #[test]
    fn a_tombstone_decodes_as_a_removal() {
        let key = CommitKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        let (k, v) = decode(Some(key.encode()), None).expect("a tombstone");
        assert_eq!(k, key);
        assert_eq!(v, None);
    }

    #[test]
    fn unknown_kinds_versions_and_trailing_bytes_are_refused() {
        assert!(matches!(
            CommitKey::decode(Bytes::from_static(&[9, 0, 0])),
            Err(RecordError::UnknownKind(9))
        ));
        assert!(matches!(
            CommitValue::decode(Bytes::from_static(&[1])),
            Err(RecordError::UnknownVersion(1))
        ));
        let mut key = CommitKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        }
        .encode()
        .to_vec();
        key.push(0);
        assert!(CommitKey::decode(key.into()).is_err());
        assert!(matches!(decode(None, None), Err(RecordError::NoKey)));
    }

    proptest! {
        #[test]
        fn commits_round_trip(
            group in ".{0,40}", topic in ".{0,40}", partition: u32,
            offset: u64, leader_epoch: u64, ts: i64, metadata in proptest::option::of(".{0,60}"),
        ) {
            let key = CommitKey { group, topic, partition };
            let value = CommitValue { offset, leader_epoch, commit_timestamp_ms: ts, metadata };
            let (k, v) = decode(Some(key.encode()), Some(value.encode())).expect("round trip");
            prop_assert_eq!(k, key);
            prop_assert_eq!(v, Some(value));
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64),
                                       value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Some(key.into()), Some(value.into()));
        }
    }
}
