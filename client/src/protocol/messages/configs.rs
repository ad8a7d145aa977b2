//! Topic settings: changing them on a live topic (`AlterTopicConfigs`)
//! and reading them back with where each came from
//! (`DescribeTopicConfigs`), version 0.
//!
//! Byte layouts (primitives as in [`crate::protocol::wire`]: `string` is a
//! `u16` length then UTF-8, `[T]` a `u32` count then the elements):
//!
//! | message | fields, in wire order |
//! | --- | --- |
//! | `AlterTopicConfigs` request | `topics [name string, set [key string, value string], delete [key string]]`, `timeout_ms u32` |
//! | `AlterTopicConfigs` response | as `CreateTopics`': `results [name string, error i16, message string]` |
//! | `DescribeTopicConfigs` request | `names [string]` |
//! | `DescribeTopicConfigs` response | `topics [name string, error i16, message string, configs [key string, value string, source u8]]` |
//!
//! A config's `source` is [`ConfigSource`]: 0 the default, 1 set on the
//! topic.

use super::{MIN_STRING, error_code};
use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// Settings of topics to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicConfigsRequest {
    /// Per topic.
    pub topics: Vec<TopicConfigChange>,
    /// How long to wait for the change to be applied, ms.
    pub timeout_ms: u32,
}

/// The settings of one topic to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigChange {
    /// The topic.
    pub name: String,
    /// Settings to set, `key=value`.
    pub set: Vec<(String, String)>,
    /// Settings to take back to their defaults.
    pub delete: Vec<String>,
}

/// Topics whose settings to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicConfigsRequest {
    /// Their names.
    pub names: Vec<String>,
}

/// Topics' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicConfigsResponse {
    /// One per topic asked for.
    pub topics: Vec<TopicConfigs>,
}

/// One topic's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigs {
    /// The topic.
    pub name: String,
    /// `UnknownTopicOrPartition` for a topic that does not exist.
    pub error: ErrorCode,
    /// What went wrong, in words, or empty.
    pub message: String,
    /// Every setting the topic has, sorted by key.
    pub configs: Vec<ConfigEntry>,
}

/// One setting of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Its key, as users write it (`retention.ms`).
    pub key: String,
    /// Its value, as users write it (`-1` for no limit).
    pub value: String,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// Where a topic's setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The default.
    Default = 0,
    /// Set on the topic.
    Topic = 1,
}

impl AlterTopicConfigsRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.topics, |w, t| {
            w.string(&t.name);
            w.array(&t.set, |w, (k, v)| {
                w.string(k);
                w.string(v);
            });
            w.array(&t.delete, |w, k| w.string(k));
        });
        w.u32(self.timeout_ms);
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(AlterTopicConfigsRequest {
            topics: r.array("topics", MIN_STRING + 4 + 4, |r| {
                Ok(TopicConfigChange {
                    name: r.string("topic name")?,
                    set: r.array("configs to set", 2 * MIN_STRING, |r| {
                        Ok((r.string("config key")?, r.string("config value")?))
                    })?,
                    delete: r.array("configs to delete", MIN_STRING, |r| r.string("config key"))?,
                })
            })?,
            timeout_ms: r.u32("timeout")?,
        })
    }
}

impl DescribeTopicConfigsRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.names, |w, n| w.string(n));
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeTopicConfigsRequest {
            names: r.array("topic names", MIN_STRING, |r| r.string("topic name"))?,
        })
    }
}

impl DescribeTopicConfigsResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.topics, |w, t| {
            w.string(&t.name);
            w.i16(t.error.code());
            w.string(&t.message);
            w.array(&t.configs, |w, c| {
                w.string(&c.key);
                w.string(&c.value);
                w.u8(c.source as u8);
            });
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeTopicConfigsResponse {
            topics: r.array("topics", 2 * MIN_STRING + 2 + 4, |r| {
                Ok(TopicConfigs {
                    name: r.string("topic name")?,
                    error: error_code(r, "error code")?,
                    message: r.string("message")?,
                    configs: r.array("configs", 2 * MIN_STRING + 1, |r| {
                        Ok(ConfigEntry {
                            key: r.string("config key")?,
                            value: r.string("config value")?,
                            source: match r.u8("config source")? {
                                0 => ConfigSource::Default,
                                1 => ConfigSource::Topic,
                                _ => {
                                    return Err(DecodeError::Invalid {
                                        what: "config source",
                                    });
                                }
                            },
                        })
                    })?,
                })
            })?,
        })
    }
}
