//! The records of `__consumer_offsets`: what a group coordinator writes
//! through Raft and reads back to rebuild its state. Only the coordinator
//! writes them (clients may not produce to an internal topic), but they are
//! read from disk, so decoding checks every length against what is left
//! and never trusts a count.
//!
//! Byte layout (primitives as in [`rill_client::protocol::wire`]: integers
//! little-endian, `string` a `u16` length then UTF-8, `[T]` a `u32` count
//! then the elements, `T?` a `u8` presence flag then the value;
//! `partitions` is `[topic string, [partition u32]]`):
//!
//! | record | key | value |
//! | --- | --- | --- |
//! | committed offset | `kind u8` (= [`KIND_OFFSET_COMMIT`]), `group string`, `topic string`, `partition u32` | `version u8` (= [`VALUE_VERSION`]), `offset u64`, `leader_epoch u64`, `commit_timestamp_ms i64`, `metadata string?` |
//! | group member | `kind u8` (= [`KIND_MEMBER`]), `group string`, `member_id string` | `version u8`, `member_epoch i32`, `client_id string`, `host string`, `subscribed [string]`, `assigned partitions`, `revoking partitions`, `target partitions` |
//! | group epochs | `kind u8` (= [`KIND_GROUP`]), `group string` | `version u8`, `group_epoch i32`, `assignment_epoch i32` |
//!
//! A record with a key and no value (a tombstone) removes what its key
//! names: a commit (a group deleted, offsets expired), a member (left or
//! timed out), a group's epochs (its last member gone). The newest record
//! per key wins, in log order.

use bytes::Bytes;
use rill_client::protocol::DecodeError;
use rill_client::protocol::wire::{Reader, Writer};

/// Key kind of a committed offset.
pub const KIND_OFFSET_COMMIT: u8 = 1;
/// Key kind of a group member.
pub const KIND_MEMBER: u8 = 2;
/// Key kind of a group's epochs.
pub const KIND_GROUP: u8 = 3;
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

/// A member as stored: everything a new coordinator needs to carry on
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    /// Its epoch.
    pub member_epoch: i32,
    /// The client id of its requests.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// The topics it subscribes to.
    pub subscribed: Vec<String>,
    /// What it has been told to own.
    pub assigned: Vec<(String, u32)>,
    /// What it has been told to give up and has not released.
    pub revoking: Vec<(String, u32)>,
    /// Its share of the target assignment.
    pub target: Vec<(String, u32)>,
}

/// A group's epochs as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupValue {
    /// Moves with membership and subscriptions.
    pub group_epoch: i32,
    /// The group epoch the target was computed at.
    pub assignment_epoch: i32,
}

/// What a record's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A committed offset.
    Commit(CommitKey),
    /// A member of a group.
    Member {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
    },
    /// A group's epochs.
    Group {
        /// The group.
        group: String,
    },
}

/// What a record's value holds (its kind is its key's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A committed offset.
    Commit(CommitValue),
    /// A member.
    Member(MemberValue),
    /// A group's epochs.
    Group(GroupValue),
}

fn write_partitions(w: &mut Writer, partitions: &[(String, u32)]) {
    let mut by_topic: Vec<(&str, Vec<u32>)> = Vec::new();
    for (topic, p) in partitions {
        match by_topic.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*p),
            _ => by_topic.push((topic, vec![*p])),
        }
    }
    w.array(&by_topic, |w, (topic, ps)| {
        w.string(topic);
        w.array(ps, |w, p| w.u32(*p));
    });
}

fn read_partitions(r: &mut Reader, what: &'static str) -> Result<Vec<(String, u32)>, DecodeError> {
    let topics = r.array(what, 2 + 4, |r| {
        let topic = r.string("topic")?;
        let partitions = r.array(what, 4, |r| r.u32("partition"))?;
        Ok((topic, partitions))
    })?;
    Ok(topics
        .into_iter()
        .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
        .collect())
}

impl Key {
    /// The key's bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Key::Commit(k) => k.encode(),
            Key::Member { group, member_id } => {
                let mut w = Writer::new();
                w.u8(KIND_MEMBER);
                w.string(group);
                w.string(member_id);
                w.finish()
            }
            Key::Group { group } => {
                let mut w = Writer::new();
                w.u8(KIND_GROUP);
                w.string(group);
                w.finish()
            }
        }
    }

    /// A key read back; every byte must be used.
    pub fn decode(bytes: Bytes) -> Result<Key, RecordError> {
        let Some(&kind) = bytes.first() else {
            return Err(RecordError::NoKey);
        };
        if kind == KIND_OFFSET_COMMIT {
            return CommitKey::decode(bytes).map(Key::Commit);
        }
        let mut r = Reader::new(bytes);
        r.u8("record kind")?;
        let key = match kind {
            KIND_MEMBER => Key::Member {
                group: r.string("group id")?,
                member_id: r.string("member id")?,
            },
            KIND_GROUP => Key::Group {
                group: r.string("group id")?,
            },
            other => return Err(RecordError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(key)
    }

    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Key::Commit(k) => &k.group,
            Key::Member { group, .. } | Key::Group { group } => group,
        }
    }
}

impl Value {
    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Value::Commit(v) => v.encode(),
            Value::Member(m) => {
                let mut w = Writer::new();
                w.u8(VALUE_VERSION);
                w.i32(m.member_epoch);
                w.string(&m.client_id);
                w.string(&m.host);
                w.array(&m.subscribed, |w, t| w.string(t));
                write_partitions(&mut w, &m.assigned);
                write_partitions(&mut w, &m.revoking);
                write_partitions(&mut w, &m.target);
                w.finish()
            }
            Value::Group(g) => {
                let mut w = Writer::new();
                w.u8(VALUE_VERSION);
                w.i32(g.group_epoch);
                w.i32(g.assignment_epoch);
                w.finish()
            }
        }
    }

    /// The value stored under `key`, read back; every byte must be used.
    pub fn decode(key: &Key, bytes: Bytes) -> Result<Value, RecordError> {
        let member = matches!(key, Key::Member { .. });
        if let Key::Commit(_) = key {
            return CommitValue::decode(bytes).map(Value::Commit);
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("value version")?;
        if version != VALUE_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let value = if member {
            Value::Member(MemberValue {
                member_epoch: r.i32("member epoch")?,
                client_id: r.string("client id")?,
                host: r.string("host")?,
                subscribed: r.array("subscribed topics", 2, |r| r.string("topic"))?,
                assigned: read_partitions(&mut r, "assigned partitions")?,
                revoking: read_partitions(&mut r, "revoking partitions")?,
                target: read_partitions(&mut r, "target partitions")?,
            })
        } else {
            Value::Group(GroupValue {
                group_epoch: r.i32("group epoch")?,
                assignment_epoch: r.i32("assignment epoch")?,
            })
        };
        r.finish()?;
        Ok(value)
    }
}

/// One stored record decoded: what its key names, and its value or
/// (`None`) its removal.
pub fn decode(
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Result<(Key, Option<Value>), RecordError> {
    let key = Key::decode(key.ok_or(RecordError::NoKey)?)?;
    let value = value.map(|v| Value::decode(&key, v)).transpose()?;
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
    fn member_and_group_bytes_are_pinned() {
        let key = Key::Member {
            group: "g".into(),
            member_id: "m".into(),
        };
        assert_eq!(key.encode().as_ref(), &[2, 1, 0, b'g', 1, 0, b'm'][..]);
        let value = Value::Member(MemberValue {
            member_epoch: 3,
            client_id: "c".into(),
            host: "h".into(),
            subscribed: vec!["t".into()],
            assigned: vec![("t".into(), 0), ("t".into(), 2)],
            revoking: vec![],
            target: vec![("t".into(), 0)],
        });
        let expected: &[u8] = &[
            0, // version
            3, 0, 0, 0, // member epoch
            1, 0, b'c', // client id
            1, 0, b'h', // host
            1, 0, 0, 0, 1, 0, b't', // subscribed
            1, 0, 0, 0, 1, 0, b't', 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, // assigned
            0, 0, 0, 0, // revoking
            1, 0, 0, 0, 1, 0, b't', 1, 0, 0, 0, 0, 0, 0, 0, // target
        ];
        assert_eq!(value.encode().as_ref(), expected);
        let group = Key::Group { group: "g".into() };
        assert_eq!(group.encode().as_ref(), &[3, 1, 0, b'g'][..]);
        let epochs = Value::Group(GroupValue {
            group_epoch: 5,
            assignment_epoch: 4,
        });
        assert_eq!(epochs.encode().as_ref(), &[0, 5, 0, 0, 0, 4, 0, 0, 0][..]);
    }

    #[test]
    fn a_tombstone_decodes_as_a_removal() {
        let key = CommitKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        let (k, v) = decode(Some(key.encode()), None).expect("a tombstone");
        assert_eq!(k, Key::Commit(key));
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
            prop_assert_eq!(k, Key::Commit(key));
            prop_assert_eq!(v, Some(Value::Commit(value)));
        }

        #[test]
        fn members_and_groups_round_trip(
            group in ".{0,20}", member_id in ".{0,20}", epoch: i32, client_id in ".{0,20}",
            subscribed in proptest::collection::vec("[a-z]{1,8}", 0..5),
            assigned in proptest::collection::btree_set(("[a-z]{1,3}", 0u32..8), 0..10),
            target in proptest::collection::btree_set(("[a-z]{1,3}", 0u32..8), 0..10),
            group_epoch: i32, assignment_epoch: i32,
        ) {
            let key = Key::Member { group: group.clone(), member_id };
            let value = Value::Member(MemberValue {
                member_epoch: epoch,
                client_id,
                host: "127.0.0.1".into(),
                subscribed,
                assigned: assigned.into_iter().collect(),
                revoking: Vec::new(),
                target: target.into_iter().collect(),
            });
            let (k, v) = decode(Some(key.encode()), Some(value.encode())).expect("round trip");
            prop_assert_eq!(k, key);
            prop_assert_eq!(v, Some(value));
            let key = Key::Group { group };
            let value = Value::Group(GroupValue { group_epoch, assignment_epoch });
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
