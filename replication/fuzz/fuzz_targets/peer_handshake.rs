//! Fuzzes the acceptor's side of the peer handshake with bytes from a
//! stranger: a hello, then a proof. Nothing may panic; a hello that decodes
//! encodes back to its bytes; and no proof the fuzzer finds passes without
//! the secret (it would have to forge HMAC-SHA256).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_replication::BrokerId;
use rill_replication::handshake::{
    Acceptor, CHALLENGE_BYTES, Challenge, ClusterSecret, End, HELLO_BYTES, Hello, PROOF_BYTES,
};
use rill_replication::ids::{ClusterId, Incarnation};

fuzz_target!(|data: &[u8]| {
    let secret = ClusterSecret::new(b"the fuzzer never learns this secret").expect("long enough");
    let Some(hello) = data.get(..HELLO_BYTES) else {
        return;
    };
    let hello: [u8; HELLO_BYTES] = hello.try_into().expect("sliced to size");
    if let Ok(h) = Hello::decode(&hello) {
        assert_eq!(h.encode(), hello, "a decoded hello re-encodes to its bytes");
    }
    if let Some(c) = data.get(..CHALLENGE_BYTES) {
        let c: [u8; CHALLENGE_BYTES] = c.try_into().expect("sliced to size");
        if let Ok(d) = Challenge::decode(&c) {
            assert_eq!(d.encode(), c, "a decoded challenge re-encodes to its bytes");
        }
    }
    // Of a known cluster, so that hellos of another one are refused too.
    let me = End {
        id: BrokerId(2),
        incarnation: Incarnation(2),
        cluster: ClusterId(0xC1),
    };
    let accepted = Acceptor::on_hello(
        &secret,
        me,
        |b| b == BrokerId(1),
        |_| Incarnation::UNKNOWN,
        &hello,
        [9; 32],
    );
    let Ok((acceptor, _challenge)) = accepted else {
        return;
    };
    let mut proof = [0u8; PROOF_BYTES];
    let rest = &data[HELLO_BYTES..];
    let n = rest.len().min(PROOF_BYTES);
    proof[..n].copy_from_slice(&rest[..n]);
    assert!(
        acceptor.on_proof(&proof).is_err(),
        "a proof made without the secret was accepted"
    );
});
