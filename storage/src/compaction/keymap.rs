//! The key map of a compaction pass: for every key in the segments being
//! cleaned, the offset of its newest record and whether an older one
//! exists there too.
//!
//! Keys are stored whole (no hash that two keys could share: a collision
//! would delete a live record), and the map is bounded by the bytes it
//! takes ([`KeyMap::observe`] refuses a new key once the bound is reached),
//! so a log of more distinct keys than fit is cleaned over the prefix the
//! map covers, as Kafka's cleaner does with its offset map.

use std::collections::HashMap;

use crate::types::Offset;

/// What one key's entry costs besides the key's bytes: the table slot
/// (key pointer and length, offset, flag), the allocation's header and the
/// table's spare capacity, bytes. An estimate on the high side.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The newest record of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Newest {
    /// Its offset.
    pub(crate) offset: Offset,
    /// Whether an older record of the key was seen as well.
    pub(crate) has_older: bool,
}

/// Key → newest record, bounded in bytes. See the module documentation.
#[derive(Debug)]
pub(crate) struct KeyMap {
    map: HashMap<Box<[u8]>, Newest>,
    bytes: usize,
    bytes_max: usize,
}

impl KeyMap {
    /// An empty map taking at most `bytes_max` bytes.
    pub(crate) fn new(bytes_max: usize) -> KeyMap {
        KeyMap {
            map: HashMap::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Records that `key`'s record at `offset` is its newest so far
    /// (records are observed in offset order). `false` when `key` is new
    /// and the map is full: nothing was recorded.
    pub(crate) fn observe(&mut self, key: &[u8], offset: Offset) -> bool {
        if let Some(newest) = self.map.get_mut(key) {
            debug_assert!(newest.offset < offset, "records are observed in order");
            *newest = Newest {
                offset,
                has_older: true,
            };
            return true;
        }
        let cost = key.len() + ENTRY_OVERHEAD_BYTES;
        if self.bytes + cost > self.bytes_max {
            return false;
        }
        self.bytes += cost;
        self.map.insert(
            key.into(),
            Newest {
                offset,
                has_older: false,
            },
        );
        true
    }

    /// The newest record of `key`, if it was observed.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Newest> {
        self.map.get(key).copied()
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_seen_twice_keeps_its_newest_offset_and_knows_an_older_one_exists() {
        let mut map = KeyMap::new(1 << 20);
        assert!(map.observe(b"a", Offset(1)));
        assert!(map.observe(b"b", Offset(2)));
        assert!(map.observe(b"a", Offset(3)));
        assert_eq!(
            map.get(b"a"),
            Some(Newest {
                offset: Offset(3),
                has_older: true
            })
        );
        assert_eq!(
            map.get(b"b"),
            Some(Newest {
                offset: Offset(2),
                has_older: false
            })
        );
        assert_eq!(map.get(b"c"), None);
    }

    #[test]
    fn a_full_map_refuses_new_keys_but_still_moves_known_ones() {
        let mut map = KeyMap::new(2 * (ENTRY_OVERHEAD_BYTES + 1));
        assert!(map.observe(b"a", Offset(0)));
        assert!(map.observe(b"b", Offset(1)));
        assert!(!map.observe(b"c", Offset(2)));
        assert!(map.observe(b"a", Offset(3)));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(b"c"), None);
        assert_eq!(map.get(b"a").map(|n| n.offset), Some(Offset(3)));
    }
}
