//! The peer decoder's typed refusals of malformed frames: cut short,
//! counts the payload cannot back (refused before anything is allocated),
//! over the limits, unknown versions and types, flags other than 0 or 1,
//! trailing bytes.
#![allow(clippy::unwrap_used)]

mod wire_cases;

use bytes::Bytes;
use rill_replication::wire::*;
use wire_cases::*;

#[test]
fn the_allocation_tracker_sees_allocations() {
    let (v, largest) = largest_allocation_during(|| Vec::<u8>::with_capacity(10_000));
    assert!(v.capacity() >= 10_000);
    assert!(largest >= 10_000, "saw {largest} bytes");
}

#[test]
fn a_frame_cut_short_anywhere_is_truncated() {
    let (_, full) = all_cases_frame();
    let payload = Bytes::from(full);
    for len in 0..payload.len() {
        match decode_frame(payload.slice(..len), &WireLimits::default()) {
            Err(WireError::Truncated { .. }) => {}
            other => panic!("cut at {len} of {}: {other:?}", payload.len()),
        }
    }
}

#[test]
fn u32_max_messages_are_refused_without_allocating() {
    let mut g = Golden::default();
    g.u8(PEER_FRAME_VERSION);
    g.u64(1);
    g.u32(u32::MAX);
    let payload = Bytes::from(g.0);
    let (result, largest) =
        largest_allocation_during(|| decode_frame(payload.clone(), &WireLimits::default()));
    assert_eq!(
        result,
        Err(WireError::TooLarge {
            what: "messages",
            len: u32::MAX as usize,
            max: 65_536
        })
    );
    assert!(largest < 1024, "allocated {largest} bytes");

    let unlimited = WireLimits {
        messages_max: usize::MAX,
        ..WireLimits::default()
    };
    let (result, largest) = largest_allocation_during(|| decode_frame(payload.clone(), &unlimited));
    assert_eq!(result, Err(WireError::Truncated { what: "messages" }));
    assert!(largest < 1024, "allocated {largest} bytes");
}

#[test]
fn a_message_count_more_than_the_bytes_could_hold_is_truncated() {
    let mut bytes = one(heartbeat());
    // More pairs announced than even the shortest pairs would fit in.
    let pairs = bytes.len() - FRAME_HEADER_BYTES;
    bytes[9] = (pairs / HEARTBEAT_PAIR_BYTES + 1) as u8;
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated { what: "messages" })
    );
}

#[test]
fn u32_max_entries_are_refused_without_allocating() {
    let mut bytes = one(hup());
    let at = PAIR + 102; // entry count, after an empty context
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (result, largest) = largest_allocation_during(|| decode(&bytes));
    assert_eq!(
        result,
        Err(WireError::TooLarge {
            what: "entries",
            len: u32::MAX as usize,
            max: 65_536
        })
    );
    assert!(largest < 1024, "allocated {largest} bytes");

    let unlimited = WireLimits {
        entries_max: usize::MAX,
        ..WireLimits::default()
    };
    let payload = Bytes::from(bytes);
    let (result, largest) = largest_allocation_during(|| decode_frame(payload, &unlimited));
    assert_eq!(result, Err(WireError::Truncated { what: "entries" }));
    // The one message's Vec is allowed; a vector of 4 billion entries is not.
    assert!(largest < 4096, "allocated {largest} bytes");
}

#[test]
fn a_byte_string_longer_than_the_rest_is_truncated() {
    let mut bytes = one(hup());
    let at = PAIR + 98; // message context length
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated {
            what: "message context"
        })
    );

    let mut bytes = one(propose());
    let at = PAIR + MIN_PAIR_BYTES - 1 + 18; // entry data length
    assert_eq!(bytes[at], 12, "the data length of \"record batch\"");
    bytes[at] = 200;
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated { what: "entry data" })
    );
}

#[test]
fn u32_max_voters_are_refused_without_allocating() {
    let mut bytes = one(snapshot());
    // Snapshot: data "state at 200" (4 + 12), metadata flag, index, term,
    // conf state flag, then the voters count.
    let at = PAIR + MIN_PAIR_BYTES + 4 + 12 + 1 + 8 + 8 + 1;
    assert_eq!(bytes[at], 3, "three voters");
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (result, largest) = largest_allocation_during(|| decode(&bytes));
    assert_eq!(result, Err(WireError::Truncated { what: "voters" }));
    assert!(largest < 4096, "allocated {largest} bytes");
}

#[test]
fn frames_over_the_limits_are_too_large() {
    let (_, bytes) = all_cases_frame();
    let len = bytes.len();
    let payload = Bytes::from(bytes);
    let tight = WireLimits {
        frame_bytes_max: len - 1,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload.clone(), &tight),
        Err(WireError::TooLarge {
            what: "frame",
            len,
            max: len - 1
        })
    );
    let exact = WireLimits {
        frame_bytes_max: len,
        messages_max: 19,
        entries_max: 2,
    };
    assert!(decode_frame(payload.clone(), &exact).is_ok());
    let few_messages = WireLimits {
        messages_max: 18,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload.clone(), &few_messages),
        Err(WireError::TooLarge {
            what: "messages",
            len: 19,
            max: 18
        })
    );
    let few_entries = WireLimits {
        entries_max: 1,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload, &few_entries),
        Err(WireError::TooLarge {
            what: "entries",
            len: 2,
            max: 1
        })
    );
}

#[test]
fn unknown_versions_are_refused() {
    for version in [0, 1, 3, 255] {
        let mut bytes = one(hup());
        bytes[0] = version;
        assert_eq!(decode(&bytes), Err(WireError::UnknownVersion(version)));
    }
}

#[test]
fn unknown_message_types_are_refused() {
    for code in [19, 100, 255] {
        let mut bytes = one(hup());
        bytes[PAIR + 8] = code;
        assert_eq!(decode(&bytes), Err(WireError::UnknownMessageType(code)));
    }
}

#[test]
fn unknown_entry_types_are_refused() {
    for code in [3, 255] {
        let mut bytes = one(propose());
        let at = PAIR + MIN_PAIR_BYTES - 1; // the entry, where the snapshot flag would be
        assert_eq!(bytes[at], 0, "EntryNormal");
        bytes[at] = code;
        assert_eq!(decode(&bytes), Err(WireError::UnknownEntryType(code)));
    }
}

/// A golden case, the offset of one of its flags, and the flag's name.
type FlagCase = (fn() -> Case, usize, &'static str);

#[test]
fn flags_other_than_0_or_1_are_refused() {
    let entry_at = PAIR + MIN_PAIR_BYTES - 1;
    let snapshot_at = PAIR + MIN_PAIR_BYTES - 1; // no entries: the flag is last
    let metadata_at = PAIR + MIN_PAIR_BYTES + 4 + 12;
    let cases: [FlagCase; 6] = [
        (hup, PAIR + 73, "reject"),
        (propose, entry_at + 17, "sync_log"),
        (hup, snapshot_at, "snapshot present"),
        (snapshot, metadata_at, "snapshot metadata present"),
        (snapshot, metadata_at + 17, "conf state present"),
        (snapshot, usize::MAX, "auto_leave"),
    ];
    for (case, at, what) in cases {
        let mut bytes = one(case());
        let at = if at == usize::MAX {
            bytes.len() - 1
        } else {
            at
        };
        assert!(bytes[at] <= 1, "{what} is a flag");
        for value in [2, 255] {
            bytes[at] = value;
            assert_eq!(
                decode(&bytes),
                Err(WireError::InvalidBool { what, value }),
                "{what}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for n in [1, 3, 200] {
        let mut bytes = one(heartbeat());
        bytes.extend(std::iter::repeat_n(0, n));
        assert_eq!(decode(&bytes), Err(WireError::TrailingBytes { n }));
    }
    let mut empty = encode(SENDER, &[]).to_vec();
    empty.push(0);
    assert_eq!(decode(&empty), Err(WireError::TrailingBytes { n: 1 }));
}

#[test]
fn errors_say_what_was_wrong() {
    assert_eq!(
        WireError::TooLarge {
            what: "entries",
            len: 9,
            max: 8
        }
        .to_string(),
        "peer frame entries of 9 exceeds the maximum of 8"
    );
    assert_eq!(
        WireError::InvalidBool {
            what: "reject",
            value: 2
        }
        .to_string(),
        "peer frame reject is 2, not 0 or 1"
    );
}
