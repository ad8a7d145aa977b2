//! Fuzzes the decoder of `__consumer_offsets` records (key and value) with
//! arbitrary bytes: it may refuse them, never panic, and what it accepts
//! encodes back to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rill_broker::coordinator::record::{self, CommitKey, CommitValue};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a key and a value.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (key, value) = rest.split_at(at);
    let key = Bytes::copy_from_slice(key);
    let value = Bytes::copy_from_slice(value);
    if let Ok(k) = CommitKey::decode(key.clone()) {
        assert_eq!(k.encode(), key);
    }
    if let Ok(v) = CommitValue::decode(value.clone()) {
        assert_eq!(v.encode(), value);
    }
    let _ = record::decode(Some(key), Some(value));
});
