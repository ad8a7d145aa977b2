//! Fuzzes the decoder of `__consumer_offsets` records (keys and values of
//! every kind: committed offsets, members, group epochs) with arbitrary
//! bytes: it may refuse them, never panic, and what it accepts encodes
//! to bytes that decode to the same thing (a key to the same bytes; a
//! value's partition lists may be regrouped by topic).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rill_broker::coordinator::record::{self, Key, Value};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a key and a value.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (key, value) = rest.split_at(at);
    let key = Bytes::copy_from_slice(key);
    let value = Bytes::copy_from_slice(value);
    if let Ok(k) = Key::decode(key.clone()) {
        assert_eq!(k.encode(), key);
        if let Ok(v) = Value::decode(&k, value.clone()) {
            let again = Value::decode(&k, v.encode()).expect("an encoded value decodes");
            assert_eq!(again, v);
        }
    }
    let _ = record::decode(Some(key), Some(value));
});
