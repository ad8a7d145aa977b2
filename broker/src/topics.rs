//! Topics: names, per-topic configuration, and the metadata file that makes
//! a topic survive restarts.
//!
//! A topic's metadata lives in `<data>/meta/topics/<topic id>.toml`; its
//! partitions in `<data>/<topic id>-<partition>/`. Directories are named by
//! the id given at creation, never by the name, so a name never becomes a
//! path and a topic deleted and re-created under the same name never meets
//! the old data. The metadata file is written whole to a temporary file,
//! synced, and renamed into place, so it is either the old or the new.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rill_storage::LogConfig;
use serde::{Deserialize, Serialize};

/// Longest topic name, bytes.
pub const TOPIC_NAME_MAX_BYTES: usize = 249;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;

/// Whether `name` is a valid topic name: `[A-Za-z0-9._-]{1,249}`, not `.`
/// or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_MAX_BYTES {
        return Err(format!(
            "topic names are 1 to {TOPIC_NAME_MAX_BYTES} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not topic names".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic names use [A-Za-z0-9._-] only, not {c:?}"));
    }
    Ok(())
}

/// Whether `id` is a topic id as this broker makes them: a UUID in its
/// canonical form (hyphenated, lowercase). An id names directories and
/// files, so nothing else may become one: a canonical UUID holds no `/`,
/// no `..`, and one topic has one spelling.
pub fn validate_topic_id(id: &str) -> Result<(), String> {
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(format!(
            "topic id {id:?} is not a canonical UUID (hyphenated, lowercase)"
        )),
    }
}

/// A topic's settings, from its `key=value` configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// `fsync`: with `true`, a write is durable once fdatasync'ed; with
    /// `false`, once it is in the page cache (it survives a crash of the
    /// broker, not of the machine).
    pub fsync: bool,
    /// `retention.ms`; `-1` keeps data forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes` per partition; `-1` for no limit.
    pub retention_bytes: Option<u64>,
    /// `segment.bytes`.
    pub segment_bytes: u64,
    /// `segment.ms`.
    pub segment_ms: Option<u64>,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
}

impl Default for TopicConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicConfig {
            fsync: true,
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            max_message_bytes: log.max_batch_bytes,
        }
    }
}

fn optional_ms(v: &str) -> Result<Option<u64>, String> {
    if v == "-1" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{v:?} is not a number of milliseconds (or -1)"))
}

impl TopicConfig {
    /// Applies `key=value` overrides to the defaults.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TopicConfig, String> {
        let mut c = TopicConfig::default();
        for (k, v) in pairs {
            match k.as_str() {
                "fsync" => {
                    c.fsync = v
                        .parse()
                        .map_err(|_| format!("fsync is true or false, not {v:?}"))?
                }
                "retention.ms" => c.retention_ms = optional_ms(v)?,
                "retention.bytes" => {
                    c.retention_bytes =
                        optional_ms(v).map_err(|_| format!("bad retention.bytes {v:?}"))?
                }
                "segment.bytes" => {
                    c.segment_bytes = v.parse().map_err(|_| format!("bad segment.bytes {v:?}"))?
                }
                "segment.ms" => c.segment_ms = optional_ms(v)?,
                "max.message.bytes" => {
                    c.max_message_bytes = v
                        .parse()
                        .map_err(|_| format!("bad max.message.bytes {v:?}"))?
                }
                "cleanup.policy" if v == "delete" => {}
                "cleanup.policy" => {
                    return Err(format!(
                        "cleanup.policy {v:?} is not supported; use \"delete\""
                    ));
                }
                other => return Err(format!("unknown topic config {other:?}")),
            }
        }
        c.log_config().validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The storage settings for this topic's partitions.
    pub fn log_config(&self) -> LogConfig {
        let d = LogConfig::default();
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_batch_bytes: self.max_message_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            ..d
        }
    }
}

/// What the metadata file of a topic holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// Its id, given at creation (UUID, hyphenated).
    pub id: String,
    /// Number of partitions.
    pub partitions: u32,
    /// The Raft group of partition 0; partition `i` is group
    /// `first_group + i`. 0 in files written before groups existed (the
    /// broker assigns one when it loads them).
    #[serde(default)]
    pub first_group: u64,
    /// Its configuration.
    pub config: TopicConfig,
    /// The overrides it was created with, as given.
    pub overrides: BTreeMap<String, String>,
}

/// Where topic metadata files live.
pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("topics")
}

/// The directory of one partition replica.
pub fn partition_dir(data_dir: &Path, topic_id: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic_id}-{partition}"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl TopicMeta {
    /// Writes the metadata file atomically and durably.
    pub fn store(&self, data_dir: &Path) -> anyhow::Result<()> {
        validate_topic_id(&self.id).map_err(anyhow::Error::msg)?;
        let dir = meta_dir(data_dir);
        std::fs::create_dir_all(&dir)?;
        let text = toml::to_string(self)?;
        let tmp = dir.join(format!("{}.toml.tmp", self.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{}.toml", self.id)))?;
        sync_dir(&dir)?;
        Ok(())
    }

    /// Removes the metadata file durably: from then on the topic is gone,
    /// whatever happens to its partition directories.
    pub fn remove(&self, data_dir: &Path) -> anyhow::Result<()> {
        validate_topic_id(&self.id).map_err(anyhow::Error::msg)?;
        let dir = meta_dir(data_dir);
        std::fs::remove_file(dir.join(format!("{}.toml", self.id)))?;
        sync_dir(&dir)?;
        Ok(())
    }

    /// Every topic stored under `data_dir`. A file whose id is not a
    /// canonical UUID, or is not the one its name says, fails the load:
    /// its id would name the topic's directories.
    pub fn load_all(data_dir: &Path) -> anyhow::Result<Vec<TopicMeta>> {
        let dir = meta_dir(data_dir);
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)?;
                let meta: TopicMeta = toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                validate_topic_id(&meta.id)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                if path.file_stem() != Some(std::ffi::OsStr::new(&meta.id)) {
                    anyhow::bail!("{}: holds topic id {:?}", path.display(), meta.id);
                }
                out.push(meta);
            } else if path.extension().is_some_and(|e| e == "tmp") {
                // A creation that crashed before its rename never happened.
                std::fs::remove_file(&path)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_validated() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_metadata_survives_a_store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TopicMeta {
            name: "orders".into(),
            id: "0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968".into(),
            partitions: 3,
            first_group: 4,
            config: TopicConfig::from_pairs(&[("fsync".into(), "false".into())]).unwrap(),
            overrides: [("fsync".to_string(), "false".to_string())]
                .into_iter()
                .collect(),
        };
        meta.store(dir.path()).unwrap();
        // A creation that crashed before its rename leaves only a temp file.
        std::fs::write(meta_dir(dir.path()).join("x.toml.tmp"), "garbage").unwrap();
        assert_eq!(TopicMeta::load_all(dir.path()).unwrap(), vec![meta.clone()]);
        meta.remove(dir.path()).unwrap();
        assert!(TopicMeta::load_all(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn only_canonical_uuids_are_topic_ids() {
        assert!(validate_topic_id("0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968").is_ok());
        for bad in [
            "",
            "..",
            "../../etc",
            "a/b",
            "id-orders",
            "0B1F7A52-39A6-4C2F-9F0E-1D2C3B4A5968",
            "0b1f7a5239a64c2f9f0e1d2c3b4a5968",
            "{0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968}",
            "urn:uuid:0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968",
            "0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968/..",
        ] {
            assert!(validate_topic_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loading_refuses_a_metadata_file_whose_id_is_not_a_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let meta_dir = meta_dir(dir.path());
        std::fs::create_dir_all(&meta_dir).unwrap();
        let meta = TopicMeta {
            name: "orders".into(),
            id: "../../escape".into(),
            partitions: 1,
            first_group: 1,
            config: TopicConfig::default(),
            overrides: BTreeMap::new(),
        };
        assert!(meta.store(dir.path()).is_err(), "never written");
        std::fs::write(meta_dir.join("x.toml"), toml::to_string(&meta).unwrap()).unwrap();
        let err = TopicMeta::load_all(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a canonical UUID"), "{err}");

        // A valid id under another file's name is refused too.
        let id = "0b1f7a52-39a6-4c2f-9f0e-1d2c3b4a5968";
        std::fs::write(
            meta_dir.join("x.toml"),
            toml::to_string(&TopicMeta {
                id: id.into(),
                ..meta
            })
            .unwrap(),
        )
        .unwrap();
        assert!(TopicMeta::load_all(dir.path()).is_err());
    }

    #[test]
    fn topic_configs_parse_and_refuse_unknown_keys() {
        let c = TopicConfig::from_pairs(&[
            ("fsync".into(), "false".into()),
            ("retention.ms".into(), "-1".into()),
            ("segment.bytes".into(), "2097152".into()),
        ])
        .unwrap();
        assert!(!c.fsync);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 2 << 20);
        assert_eq!(c.log_config().segment_bytes, 2 << 20);
        assert!(TopicConfig::from_pairs(&[("nope".into(), "1".into())]).is_err());
        assert!(TopicConfig::from_pairs(&[("fsync".into(), "maybe".into())]).is_err());
        assert!(TopicConfig::from_pairs(&[("cleanup.policy".into(), "compact".into())]).is_err());
        assert!(TopicConfig::from_pairs(&[("segment.bytes".into(), "10".into())]).is_err());
    }
}
