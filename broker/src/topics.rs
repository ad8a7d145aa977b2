//! Topics: names, ids, and per-topic configuration.
//!
//! What topics exist lives in the controller's log (see `metadata`); a
//! topic's partitions live in `<data>/<topic id>-<partition>/`. Directories
//! are named by the id given at creation (a canonical UUID, checked before
//! it becomes a path), never by the name, so a name never becomes a path
//! and a topic deleted and re-created under the same name never meets the
//! old data.

use std::path::{Path, PathBuf};

use rill_storage::LogConfig;
use rill_storage::batch::Compression;
use rill_storage::batch::compression::MAX_RECORDS_BYTES_READ;

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
/// Smallest `segment.bytes`: below one page a segment holds next to
/// nothing, and every segment costs open files and a mapping.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest `segment.bytes` (1 GiB, the default): the active segment is
/// mapped over its whole size.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Smallest `segment.ms` (1 minute): a shorter roll time mostly makes
/// files, one per partition per roll.
pub const SEGMENT_MS_MIN: u64 = 60_000;
/// Largest `max.message.bytes`: a batch arrives inside one request frame,
/// so a larger limit could never be reached.
pub const MAX_MESSAGE_BYTES_MAX: usize = rill_client::protocol::MAX_REQUEST_FRAME_BYTES;

// A consumer decompresses a batch's records up to MAX_RECORDS_BYTES_READ:
// every batch a topic may accept must stay readable.
const _: () = assert!(MAX_MESSAGE_BYTES_MAX <= MAX_RECORDS_BYTES_READ);

/// A topic's settings, from its `key=value` configs.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `message.timestamp.after.max.ms`: how far past the leader's clock a
    /// batch's largest timestamp may be; `None` for the broker's setting.
    pub timestamp_after_max_ms: Option<u64>,
    /// `message.timestamp.before.max.ms`: how far behind the leader's clock
    /// a batch's first timestamp may be; `None` for the broker's setting.
    pub timestamp_before_max_ms: Option<u64>,
    /// `compression.type`: `None` (`producer`, the default) stores batches
    /// compressed as they came; a codec makes the leader recompress every
    /// batch with another codec to that one before it is stored.
    pub compression: Option<Compression>,
    /// `cleanup.policy`: `delete` (the default) lets retention delete old
    /// segments; `compact` keeps the newest record of each key instead;
    /// `compact,delete` does both.
    pub cleanup: CleanupPolicy,
    /// `delete.retention.ms`: how long a compacted topic keeps a tombstone
    /// after its segment was last written. Default 1 day.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`, in thousandths: a compacted
    /// partition's next pass waits until the segments written since its
    /// last are at least this share of its sealed bytes. Default 500
    /// (0.5, as Kafka's).
    pub min_cleanable_dirty_permille: u16,
}

/// How a compacted topic's partitions are compacted (see
/// [`TopicConfig::compaction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`, in thousandths.
    pub min_cleanable_dirty_permille: u16,
}

/// A topic's `cleanup.policy`: which of retention and compaction apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention deletes sealed segments by age and size.
    pub delete: bool,
    /// Compaction keeps the newest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `delete`, Kafka's default.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };

    /// Parses a comma-separated list of `delete` and `compact`, in any
    /// order (Kafka's list syntax).
    pub fn parse(v: &str) -> Result<CleanupPolicy, String> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in v.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => {
                    return Err(format!(
                        "cleanup.policy is delete, compact or compact,delete, not {v:?}"
                    ));
                }
            }
        }
        Ok(policy)
    }

    /// As users write it.
    pub fn name(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

/// Default `delete.retention.ms`: 1 day, as Kafka's.
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

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
            timestamp_after_max_ms: None,
            timestamp_before_max_ms: None,
            compression: None,
            cleanup: CleanupPolicy::DELETE,
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            min_cleanable_dirty_permille: 500,
        }
    }
}

/// Parses `v` as Kafka does its long settings: a signed 64-bit number, so
/// a value past `i64::MAX` is refused rather than wrapping negative where
/// it is used as a time.
fn parse_i64(key: &str, v: &str, min: i64, unit: &str) -> Result<i64, String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!(
            "{key} must be a whole number of {unit} from {min} to {}, not {v:?}",
            i64::MAX
        )),
    }
}

/// A ratio from 0 to 1 with at most three decimals, in thousandths
/// (`min.cleanable.dirty.ratio`).
fn parse_ratio(key: &str, v: &str) -> Result<u16, String> {
    let refused = || format!("{key} is a number from 0 to 1, at most 3 decimals, not {v:?}");
    let t = v.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 3
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(refused());
    }
    let whole: u16 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| refused())?
    };
    let frac: u16 = format!("{frac:0<3}").parse().map_err(|_| refused())?;
    match whole.checked_mul(1000).and_then(|w| w.checked_add(frac)) {
        Some(permille) if permille <= 1000 => Ok(permille),
        _ => Err(refused()),
    }
}

/// A ratio in thousandths as users write it: `0.5`, `1`, `0.125`.
fn format_ratio(permille: u16) -> String {
    let s = format!("{}.{:03}", permille / 1000, permille % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A setting where `-1` means no limit (`retention.ms`, `retention.bytes`).
fn unlimited_or(key: &str, v: &str, unit: &str) -> Result<Option<u64>, String> {
    let n = parse_i64(key, v, -1, unit)?;
    Ok(u64::try_from(n).ok())
}

/// A non-negative setting within `[min, max]`.
fn bounded(key: &str, v: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let n = parse_i64(key, v, 0, unit)?.unsigned_abs();
    if n < min || n > max {
        return Err(format!("{key} must be {min} to {max} {unit}, not {v}"));
    }
    Ok(n)
}

impl TopicConfig {
    /// Applies `key=value` overrides to the defaults. Every refusal is a
    /// message naming the key and the values it takes.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TopicConfig, String> {
        let c = TopicConfig::parse_pairs(pairs)?;
        // The one bound between two settings, in the user's names (the
        // log's own check below speaks in its field names).
        if c.segment_bytes < c.max_message_bytes as u64 {
            return Err(format!(
                "segment.bytes ({}) must be at least max.message.bytes ({}): a segment holds the largest batch",
                c.segment_bytes, c.max_message_bytes
            ));
        }
        c.log_config().validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// As [`TopicConfig::from_pairs`], but for the bounds between settings
    /// (a segment holds the largest batch): each pair is checked alone.
    fn parse_pairs(pairs: &[(String, String)]) -> Result<TopicConfig, String> {
        let mut c = TopicConfig::default();
        let mut seen = std::collections::BTreeSet::new();
        // Kafka's deprecated setting for both bounds; either explicit bound
        // wins over it, whatever the order.
        let mut difference_ms = None;
        let (mut after_ms, mut before_ms) = (None, None);
        let ms_max = i64::MAX as u64;
        for (k, v) in pairs {
            if !seen.insert(k.as_str()) {
                return Err(format!("topic config {k:?} is given more than once"));
            }
            match k.as_str() {
                "fsync" => {
                    c.fsync = v
                        .parse()
                        .map_err(|_| format!("fsync is true or false, not {v:?}"))?
                }
                "retention.ms" => c.retention_ms = unlimited_or(k, v, "milliseconds (or -1)")?,
                "retention.bytes" => c.retention_bytes = unlimited_or(k, v, "bytes (or -1)")?,
                "segment.bytes" => {
                    c.segment_bytes = bounded(k, v, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX, "bytes")?
                }
                "segment.ms" => {
                    c.segment_ms = Some(bounded(k, v, SEGMENT_MS_MIN, ms_max, "milliseconds")?)
                }
                "max.message.bytes" => {
                    c.max_message_bytes = bounded(
                        k,
                        v,
                        rill_storage::batch::HEADER_BYTES as u64,
                        MAX_MESSAGE_BYTES_MAX as u64,
                        "bytes",
                    )? as usize
                }
                "message.timestamp.after.max.ms" => {
                    after_ms = Some(bounded(k, v, 0, ms_max, "milliseconds")?)
                }
                "message.timestamp.before.max.ms" => {
                    before_ms = Some(bounded(k, v, 0, ms_max, "milliseconds")?)
                }
                "message.timestamp.difference.max.ms" => {
                    difference_ms = Some(bounded(k, v, 0, ms_max, "milliseconds")?)
                }
                "compression.type" => {
                    c.compression = match v.as_str() {
                        "producer" => None,
                        other => Some(other.parse::<Compression>().map_err(|_| {
                            format!("compression.type is producer, none, lz4 or zstd, not {v:?}")
                        })?),
                    }
                }
                "cleanup.policy" => c.cleanup = CleanupPolicy::parse(v)?,
                "delete.retention.ms" => {
                    c.delete_retention_ms = bounded(k, v, 0, ms_max, "milliseconds")?
                }
                "min.cleanable.dirty.ratio" => c.min_cleanable_dirty_permille = parse_ratio(k, v)?,
                other => return Err(format!("unknown topic config {other:?}")),
            }
        }
        c.timestamp_after_max_ms = after_ms.or(difference_ms);
        c.timestamp_before_max_ms = before_ms.or(difference_ms);
        Ok(c)
    }

    /// The settings of a committed topic: all of its pairs when today's
    /// rules take them (as they did when proposed, unless the rules changed
    /// since). Otherwise a pair today's rules refuse on its own (an unknown
    /// key, a value out of its bounds, a key given twice) is left at its
    /// default; then, while the bounds between the settings kept do not
    /// hold, the last one kept is left at its default too. Returns why each
    /// pair left out was refused. Never fails, so that a topic created
    /// under older rules survives a replay of the controller's log (see
    /// `ClusterImage::apply`).
    pub fn from_committed_pairs(pairs: &[(String, String)]) -> (TopicConfig, Vec<String>) {
        if let Ok(config) = TopicConfig::from_pairs(pairs) {
            return (config, Vec::new());
        }
        let mut kept: Vec<(String, String)> = Vec::new();
        let mut refused = Vec::new();
        for pair in pairs {
            kept.push(pair.clone());
            if let Err(reason) = TopicConfig::parse_pairs(&kept) {
                kept.pop();
                refused.push(reason);
            }
        }
        loop {
            match TopicConfig::from_pairs(&kept) {
                Ok(config) => return (config, refused),
                Err(reason) => {
                    let (k, v) = kept
                        .pop()
                        .expect("the defaults alone hold every bound between settings");
                    refused.push(format!("{k}={v}: {reason}"));
                }
            }
        }
    }

    /// Every setting with its value as users write it, sorted by key, and
    /// whether it is set on the topic (`overrides`) rather than a default;
    /// the timestamp bounds a topic leaves unset are `broker`'s.
    pub fn entries(
        &self,
        overrides: &[(String, String)],
        broker: crate::partition::TimestampBounds,
    ) -> Vec<(&'static str, String, bool)> {
        let set = |k: &str| overrides.iter().any(|(o, _)| o == k);
        let limit = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
        let difference = set("message.timestamp.difference.max.ms");
        vec![
            (
                "cleanup.policy",
                self.cleanup.name().to_string(),
                set("cleanup.policy"),
            ),
            (
                "compression.type",
                self.compression
                    .map_or("producer", Compression::name)
                    .to_string(),
                set("compression.type"),
            ),
            (
                "delete.retention.ms",
                self.delete_retention_ms.to_string(),
                set("delete.retention.ms"),
            ),
            ("fsync", self.fsync.to_string(), set("fsync")),
            (
                "max.message.bytes",
                self.max_message_bytes.to_string(),
                set("max.message.bytes"),
            ),
            (
                "message.timestamp.after.max.ms",
                limit(self.timestamp_after_max_ms.or(broker.after_max_ms)),
                set("message.timestamp.after.max.ms") || difference,
            ),
            (
                "message.timestamp.before.max.ms",
                limit(self.timestamp_before_max_ms.or(broker.before_max_ms)),
                set("message.timestamp.before.max.ms") || difference,
            ),
            (
                "retention.bytes",
                limit(self.retention_bytes),
                set("retention.bytes"),
            ),
            (
                "retention.ms",
                limit(self.retention_ms),
                set("retention.ms"),
            ),
            (
                "segment.bytes",
                self.segment_bytes.to_string(),
                set("segment.bytes"),
            ),
            (
                "min.cleanable.dirty.ratio",
                format_ratio(self.min_cleanable_dirty_permille),
                set("min.cleanable.dirty.ratio"),
            ),
            ("segment.ms", limit(self.segment_ms), set("segment.ms")),
        ]
    }

    /// The storage settings for this topic's partitions: retention only
    /// under a `delete` policy (a `compact` topic keeps every key's newest
    /// record however old).
    pub fn log_config(&self) -> LogConfig {
        let d = LogConfig::default();
        let retained = |v: Option<u64>| v.filter(|_| self.cleanup.delete);
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_batch_bytes: self.max_message_bytes,
            retention_ms: retained(self.retention_ms),
            retention_bytes: retained(self.retention_bytes),
            ..d
        }
    }

    /// How this topic's partitions are compacted: `None` unless its
    /// `cleanup.policy` holds `compact`.
    pub fn compaction(&self) -> Option<CompactionPolicy> {
        self.cleanup.compact.then_some(CompactionPolicy {
            delete_retention_ms: self.delete_retention_ms,
            min_cleanable_dirty_permille: self.min_cleanable_dirty_permille,
        })
    }
}

/// The directory of one partition replica.
pub fn partition_dir(data_dir: &Path, topic_id: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic_id}-{partition}"))
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
    fn compression_type_takes_producer_or_a_codec() {
        assert_eq!(TopicConfig::default().compression, None);
        for (v, want) in [
            ("producer", None),
            ("none", Some(Compression::None)),
            ("lz4", Some(Compression::Lz4)),
            ("zstd", Some(Compression::Zstd)),
        ] {
            let c = TopicConfig::from_pairs(&[("compression.type".into(), v.into())]).unwrap();
            assert_eq!(c.compression, want, "{v}");
        }
        for bad in ["gzip", "snappy", "LZ4", ""] {
            let e =
                TopicConfig::from_pairs(&[("compression.type".into(), bad.into())]).unwrap_err();
            assert!(
                e.contains("compression.type") && e.contains("producer, none, lz4 or zstd"),
                "{e}"
            );
        }
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
        assert!(TopicConfig::from_pairs(&[("cleanup.policy".into(), "shred".into())]).is_err());
        assert!(TopicConfig::from_pairs(&[("segment.bytes".into(), "10".into())]).is_err());
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal(p: &[(&str, &str)]) -> String {
        TopicConfig::from_pairs(&pairs(p)).expect_err("refused")
    }

    #[test]
    fn a_segment_smaller_than_the_largest_batch_is_refused_in_the_users_names() {
        let m = refusal(&[("segment.bytes", "8192"), ("max.message.bytes", "65536")]);
        assert_eq!(
            m,
            "segment.bytes (8192) must be at least max.message.bytes (65536): a segment holds the largest batch"
        );
    }

    #[test]
    fn retention_values_past_i64_are_refused_instead_of_wrapping_negative() {
        // 2^63 and u64::MAX used to parse as u64 and turn negative as an
        // age, which made retention delete every sealed segment.
        for v in ["9223372036854775808", "18446744073709551615", "1e30"] {
            let m = refusal(&[("retention.ms", v)]);
            assert!(m.contains("retention.ms") && m.contains(v), "{m}");
            let m = refusal(&[("retention.bytes", v)]);
            assert!(m.contains("retention.bytes"), "{m}");
        }
        // The largest i64 is kept exact, and -1 still means no limit.
        let c = TopicConfig::from_pairs(&pairs(&[
            ("retention.ms", "9223372036854775807"),
            ("retention.bytes", "-1"),
        ]))
        .unwrap();
        assert_eq!(c.retention_ms, Some(i64::MAX as u64));
        assert_eq!(c.retention_bytes, None);
        for v in ["-2", "-9223372036854775808"] {
            assert!(refusal(&[("retention.ms", v)]).contains("from -1"), "{v}");
        }
    }

    #[test]
    fn segment_and_message_sizes_are_bounded() {
        assert!(refusal(&[("segment.bytes", "4095")]).contains("4096 to 1073741824"));
        assert!(refusal(&[("segment.bytes", "1073741825")]).contains("segment.bytes"));
        assert!(refusal(&[("segment.bytes", "-1")]).contains("segment.bytes"));
        assert!(refusal(&[("segment.ms", "59999")]).contains("segment.ms"));
        assert!(refusal(&[("segment.ms", "-1")]).contains("segment.ms"));
        let m = refusal(&[("max.message.bytes", "16777217")]);
        assert!(
            m.contains("max.message.bytes") && m.contains("16777216"),
            "{m}"
        );
        // The smallest values and the small sizes tests use still pass.
        let c = TopicConfig::from_pairs(&pairs(&[
            ("segment.bytes", "8192"),
            ("max.message.bytes", "4096"),
            ("segment.ms", "60000"),
        ]))
        .unwrap();
        assert_eq!(
            (c.segment_bytes, c.max_message_bytes, c.segment_ms),
            (8192, 4096, Some(60_000))
        );
    }

    #[test]
    fn cleanup_policy_takes_delete_compact_or_both_and_compact_alone_turns_retention_off() {
        for (v, delete, compact) in [
            ("delete", true, false),
            ("compact", false, true),
            ("compact,delete", true, true),
            ("delete, compact", true, true),
        ] {
            let c = TopicConfig::from_pairs(&pairs(&[
                ("cleanup.policy", v),
                ("retention.ms", "1000"),
                ("delete.retention.ms", "5"),
            ]))
            .unwrap();
            assert_eq!(
                (c.cleanup.delete, c.cleanup.compact),
                (delete, compact),
                "{v}"
            );
            assert_eq!(c.log_config().retention_ms.is_some(), delete, "{v}");
            assert_eq!(
                c.compaction().map(|p| p.delete_retention_ms),
                compact.then_some(5),
                "{v}"
            );
        }
        assert_eq!(TopicConfig::default().compaction(), None);
        let m = refusal(&[("cleanup.policy", "compact,shred")]);
        assert!(m.contains("delete, compact or compact,delete"), "{m}");
        assert!(refusal(&[("delete.retention.ms", "-1")]).contains("delete.retention.ms"));
    }

    #[test]
    fn min_cleanable_dirty_ratio_takes_a_share_from_0_to_1() {
        for (v, permille, shown) in [
            ("0.5", 500, "0.5"),
            ("0", 0, "0"),
            ("1", 1000, "1"),
            ("1.0", 1000, "1"),
            (".125", 125, "0.125"),
            ("0.01", 10, "0.01"),
        ] {
            let c = TopicConfig::from_pairs(&pairs(&[("min.cleanable.dirty.ratio", v)])).unwrap();
            assert_eq!(c.min_cleanable_dirty_permille, permille, "{v}");
            assert_eq!(format_ratio(permille), shown);
        }
        assert_eq!(TopicConfig::default().min_cleanable_dirty_permille, 500);
        for bad in ["1.5", "-0.1", "0.0001", "", ".", "abc", "2", "1e-1"] {
            let m = refusal(&[("min.cleanable.dirty.ratio", bad)]);
            assert!(m.contains("min.cleanable.dirty.ratio"), "{bad}: {m}");
        }
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let m = refusal(&[("retention.ms", "1000"), ("retention.ms", "-1")]);
        assert!(
            m.contains("\"retention.ms\" is given more than once"),
            "{m}"
        );
    }

    #[test]
    fn timestamp_difference_sets_both_bounds_unless_one_is_given() {
        let c = TopicConfig::from_pairs(&pairs(&[("message.timestamp.difference.max.ms", "5000")]))
            .unwrap();
        assert_eq!(
            (c.timestamp_after_max_ms, c.timestamp_before_max_ms),
            (Some(5000), Some(5000))
        );
        let c = TopicConfig::from_pairs(&pairs(&[
            ("message.timestamp.after.max.ms", "10"),
            ("message.timestamp.difference.max.ms", "5000"),
        ]))
        .unwrap();
        assert_eq!(
            (c.timestamp_after_max_ms, c.timestamp_before_max_ms),
            (Some(10), Some(5000))
        );
        assert_eq!(TopicConfig::default().timestamp_after_max_ms, None);
        assert!(refusal(&[("message.timestamp.after.max.ms", "-1")]).contains("after"));
    }
}
