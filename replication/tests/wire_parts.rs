//! Frames encoded in parts: large entry data leaves uncopied, as the
//! entry's shared bytes or a span of the sender's segment file, and the
//! parts joined are exactly the frame.
#![allow(clippy::unwrap_used)]

mod wire_cases;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use rill_replication::GroupId;
use rill_replication::wire::*;
use wire_cases::*;

/// Appends whose entries are sometimes large enough to be sent uncopied.
fn arb_appends() -> impl Strategy<Value = Vec<(GroupId, Message)>> {
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(
            any::<u8>(),
            ZERO_COPY_BYTES_MIN - 2..ZERO_COPY_BYTES_MIN + 100
        ),
    ]
    .prop_map(Bytes::from);
    let entries = prop::collection::vec((any::<u64>(), data), 0..4);
    prop::collection::vec((any::<u64>(), entries), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(group, entries)| {
                let mut m = msg(MessageType::MsgAppend, 2, 1, 6);
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .map(|(index, data)| {
                        let mut e = entry(EntryType::EntryNormal, 6, index, &[]);
                        e.data = data;
                        e
                    })
                    .collect();
                m.set_entries(entries.into());
                (GroupId(group), m)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn a_frame_in_parts_is_the_frame_with_large_entry_data_shared(messages in arb_appends()) {
        let whole = encode(SENDER, &messages);
        let mut out = BytesMut::from(&b"len!"[..]);
        let mut parts = Vec::new();
        encode_frame_parts(SENDER, &messages, &[], &mut out, &mut parts);
        let parts: Vec<Bytes> = parts
            .into_iter()
            .map(|p| match p {
                Part::Bytes(b) => b,
                Part::File(_) => panic!("no file spans were given"),
            })
            .collect();
        let mut joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        joined.extend_from_slice(&out);
        prop_assert_eq!(&joined[..4], b"len!");
        prop_assert_eq!(&joined[4..], &whole[..]);
        for e in messages.iter().flat_map(|(_, m)| m.get_entries()) {
            let shared = parts.iter().any(|p| p.as_ptr() == e.data.as_ptr() && p.len() == e.data.len());
            prop_assert_eq!(shared, e.data.len() >= ZERO_COPY_BYTES_MIN);
        }
    }
}

proptest! {
    #[test]
    fn a_frame_in_parts_sends_entries_from_the_file_spans_given_for_them(
        messages in arb_appends(),
        pick in any::<u64>(),
    ) {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        use std::sync::Arc;
        // Every large entry's data in one file; some of them given a span
        // (chosen by `pick`'s bits), one of those of the wrong length.
        let mut file = tempfile::tempfile().unwrap();
        let mut at = 0u64;
        let mut bit = 0;
        let mut spans: Vec<EntrySpans> = Vec::new();
        let mut expect_files = 0;
        for (_, m) in &messages {
            let mut per = Vec::new();
            for e in m.get_entries() {
                file.write_all(&e.data).unwrap();
                let chosen = pick >> (bit % 64) & 1 == 1;
                bit += 1;
                let len = e.data.len() as u64;
                let wrong = chosen && bit % 7 == 0;
                let large = e.data.len() >= ZERO_COPY_BYTES_MIN;
                if chosen && large && !wrong {
                    expect_files += 1;
                }
                per.push(chosen.then(|| rill_storage::FileSpan {
                    file: Arc::new(file.try_clone().unwrap()),
                    offset: at,
                    len: if wrong { len + 1 } else { len },
                }));
                at += len;
            }
            spans.push(per);
        }
        let whole = encode(SENDER, &messages);
        let mut out = BytesMut::new();
        let mut parts = Vec::new();
        encode_frame_parts(SENDER, &messages, &spans, &mut out, &mut parts);
        let mut joined = Vec::new();
        let mut files = 0;
        for p in &parts {
            match p {
                Part::Bytes(b) => joined.extend_from_slice(b),
                Part::File(f) => {
                    files += 1;
                    let mut buf = vec![0; f.len as usize];
                    f.file.read_exact_at(&mut buf, f.offset).unwrap();
                    joined.extend_from_slice(&buf);
                }
            }
        }
        joined.extend_from_slice(&out);
        prop_assert_eq!(&joined[..], &whole[..]);
        prop_assert_eq!(files, expect_files);
    }
}
