//! The handshake's tests: authentication with and without the secret,
//! refusals (reflection, replay, strangers, other clusters), pinned bytes
//! and MACs, and the secret file's checks.

use std::os::unix::fs::PermissionsExt;

use hmac::Mac;

use super::machine::ACCEPTOR_LABEL;
use super::*;

fn secret(s: &str) -> ClusterSecret {
    ClusterSecret::new(s.as_bytes()).expect("long enough")
}

/// The cluster of the brokers in these tests.
const CLUSTER: ClusterId = ClusterId(0xC1);

fn end(id: u64) -> End {
    End {
        id: BrokerId(id),
        incarnation: Incarnation(u128::from(id) * 1000),
        cluster: CLUSTER,
    }
}

fn never_seen(_: BrokerId) -> Incarnation {
    Incarnation::UNKNOWN
}

/// Broker 1's hello to broker `to`, knowing nothing of it.
fn hello_to(s: &ClusterSecret, from: u64, to: u64, nonce: u8) -> (Dialer, [u8; HELLO_BYTES]) {
    Dialer::start(
        s,
        end(from),
        BrokerId(to),
        Incarnation::UNKNOWN,
        [nonce; NONCE_BYTES],
    )
}

/// Broker `me`'s answer to `hello`, accepting broker 1.
fn answer(
    s: &ClusterSecret,
    me: u64,
    hello: &[u8; HELLO_BYTES],
    nonce: u8,
) -> Result<(Acceptor, [u8; CHALLENGE_BYTES]), HandshakeError> {
    Acceptor::on_hello(
        s,
        end(me),
        |b| b == BrokerId(1),
        never_seen,
        hello,
        [nonce; NONCE_BYTES],
    )
}

/// Runs a whole handshake in memory; the acceptor is broker 2 and
/// accepts broker 1.
fn run(dialer: &ClusterSecret, acceptor: &ClusterSecret) -> Result<BrokerId, HandshakeError> {
    let (d, hello) = hello_to(dialer, 1, 2, 7);
    let (a, challenge) = answer(acceptor, 2, &hello, 9)?;
    let (_, proof) = d.on_challenge(&challenge)?;
    Ok(a.on_proof(&proof)?.peer.id)
}

#[test]
fn brokers_holding_the_same_secret_authenticate_each_other() {
    let s = secret("correct horse battery staple");
    assert_eq!(run(&s, &s).expect("same secret"), BrokerId(1));
    let none = ClusterSecret::insecure();
    assert_eq!(run(&none, &none).expect("both insecure"), BrokerId(1));
}

#[test]
fn a_dialer_without_the_secret_is_refused_by_the_acceptors_mac() {
    let real = secret("correct horse battery staple");
    let forger = secret("a guess that is long enough");
    assert!(matches!(run(&forger, &real), Err(HandshakeError::BadMac)));
    assert!(matches!(
        run(&ClusterSecret::insecure(), &real),
        Err(HandshakeError::BadMac)
    ));
}

#[test]
fn an_acceptors_mac_does_not_pass_as_a_dialers_proof() {
    // A forger asks the acceptor for a challenge, then offers the
    // challenge's own MAC as its proof (a reflection).
    let s = secret("correct horse battery staple");
    let (_, hello) = hello_to(&s, 1, 2, 1);
    let (a, challenge) = answer(&s, 2, &hello, 2).expect("a well-formed hello");
    let reflected: [u8; PROOF_BYTES] = challenge[CHALLENGE_MACED_BYTES..]
        .try_into()
        .expect("32 bytes");
    assert!(matches!(
        a.on_proof(&reflected),
        Err(HandshakeError::BadMac)
    ));
}

#[test]
fn a_proof_from_an_earlier_handshake_does_not_replay() {
    let s = secret("correct horse battery staple");
    let (d, hello) = hello_to(&s, 1, 2, 1);
    let (first, challenge) = answer(&s, 2, &hello, 2).expect("well formed");
    let (_, proof) = d.on_challenge(&challenge).expect("genuine");
    assert_eq!(first.on_proof(&proof).expect("genuine").peer, end(1));
    // The same hello and proof again meet a fresh acceptor nonce.
    let (second, _) = answer(&s, 2, &hello, 3).expect("well formed");
    assert!(matches!(
        second.on_proof(&proof),
        Err(HandshakeError::BadMac)
    ));
}

#[test]
fn a_hello_for_another_broker_or_from_a_stranger_gets_no_challenge() {
    let s = secret("correct horse battery staple");
    let (_, to_3) = hello_to(&s, 1, 3, 1);
    assert!(matches!(
        answer(&s, 2, &to_3, 2),
        Err(HandshakeError::WrongBroker { .. })
    ));
    let (_, from_9) = hello_to(&s, 9, 2, 1);
    assert!(matches!(
        answer(&s, 2, &from_9, 2),
        Err(HandshakeError::NotAPeer(BrokerId(9)))
    ));
}

#[test]
fn brokers_of_different_clusters_refuse_each_other_and_one_not_yet_told_meets_any() {
    let s = secret("correct horse battery staple");
    let of = |id: u64, cluster: u128| End {
        cluster: ClusterId(cluster),
        ..end(id)
    };
    let shake = |dialer: End, acceptor: End| {
        let (d, hello) = Dialer::start(
            &s,
            dialer,
            BrokerId(2),
            Incarnation::UNKNOWN,
            [1; NONCE_BYTES],
        );
        let (a, challenge) =
            Acceptor::on_hello(&s, acceptor, |_| true, never_seen, &hello, [2; NONCE_BYTES])?;
        let (met, proof) = d.on_challenge(&challenge)?;
        a.on_proof(&proof)?;
        Ok::<Met, HandshakeError>(met)
    };
    // The acceptor refuses a hello from another cluster: no challenge.
    assert!(matches!(
        shake(of(1, 0xA), of(2, 0xB)),
        Err(HandshakeError::OtherCluster { mine, theirs })
            if mine == ClusterId(0xB) && theirs == ClusterId(0xA)
    ));
    // The dialer refuses a challenge from another cluster, even one
    // that answered (it had not learnt its own id when it did).
    let (d, hello) = Dialer::start(&s, of(1, 0xA), BrokerId(2), Incarnation::UNKNOWN, [1; 32]);
    let (_, challenge) =
        Acceptor::on_hello(&s, of(2, 0), |_| true, never_seen, &hello, [2; NONCE_BYTES])
            .expect("a broker not yet told its cluster answers");
    let mut forged = Challenge::decode(&challenge).expect("decodes");
    forged.cluster = ClusterId(0xB);
    let mut bytes = forged.encode();
    let mac = s.mac(ACCEPTOR_LABEL, &[&hello, &bytes[..CHALLENGE_MACED_BYTES]]);
    bytes[CHALLENGE_MACED_BYTES..].copy_from_slice(&mac.finalize().into_bytes());
    assert!(matches!(
        d.on_challenge(&bytes),
        Err(HandshakeError::OtherCluster { .. })
    ));
    // Either side not yet told its cluster meets any.
    assert_eq!(
        shake(of(1, 0), of(2, 0xB))
            .expect("dialer not told")
            .peer
            .cluster,
        ClusterId(0xB)
    );
    assert_eq!(
        shake(of(1, 0xA), of(2, 0))
            .expect("acceptor not told")
            .peer
            .cluster,
        ClusterId::UNKNOWN
    );
    assert!(shake(of(1, 0xA), of(2, 0xA)).is_ok());
}

#[test]
fn a_challenge_from_another_broker_is_refused() {
    let s = secret("correct horse battery staple");
    let (d, hello) = hello_to(&s, 1, 2, 1);
    // Broker 3 answers a hello meant for broker 2 (a relayed dial).
    let relayed = Hello::decode(&hello)
        .map(|h| Hello {
            to: BrokerId(3),
            ..h
        })
        .expect("decodes")
        .encode();
    let (_, challenge) = answer(&s, 3, &relayed, 2).expect("well formed");
    assert!(matches!(
        d.on_challenge(&challenge),
        Err(HandshakeError::WrongPeer { .. })
    ));
}

#[test]
fn hello_and_challenge_bytes_are_pinned() {
    let hello = Hello {
        from: BrokerId(1),
        to: BrokerId(0x0102),
        incarnation: Incarnation(0x0A),
        known: Incarnation(0x0B0C),
        cluster: ClusterId(0x0F0E),
        nonce: [0xAB; NONCE_BYTES],
    };
    let mut expected = Vec::new();
    expected.extend_from_slice(b"RILLPEER");
    expected.extend_from_slice(&[2, 0, 0, 0]);
    expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0x0C, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0x0E, 0x0F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0xAB; NONCE_BYTES]);
    assert_eq!(hello.encode().as_slice(), expected.as_slice());
    assert_eq!(Hello::decode(&hello.encode()).expect("round trip"), hello);

    // The MAC, computed independently of the state machines: RFC 2104
    // HMAC-SHA256 of the label and transcript under the key.
    let s = secret("0123456789abcdef");
    let me = End {
        id: BrokerId(0x0102),
        incarnation: Incarnation(0x0D),
        cluster: ClusterId(0x0F0E),
    };
    let (acceptor, challenge) = Acceptor::on_hello(
        &s,
        me,
        |_| true,
        |_| Incarnation(0x0E),
        &hello.encode(),
        [0xCD; NONCE_BYTES],
    )
    .expect("well formed");
    assert_eq!(&challenge[..8], b"RILLPEER");
    assert_eq!(&challenge[8..12], &[2, 0, 0, 0]);
    assert_eq!(&challenge[12..20], &[2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&challenge[20..36], &Incarnation(0x0D).0.to_le_bytes());
    assert_eq!(&challenge[36..52], &Incarnation(0x0E).0.to_le_bytes());
    assert_eq!(&challenge[52..68], &ClusterId(0x0F0E).0.to_le_bytes());
    assert_eq!(&challenge[68..100], &[0xCD; NONCE_BYTES]);
    let hex: String = challenge[100..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex, "722b0529a7720f5ef3440f36c914cf5e404844c0e109d64d0c78ddc24cc02dcd",
        "the acceptor MAC of this transcript changed"
    );
    assert_eq!(acceptor.claimed(), BrokerId(1));
}

#[test]
fn each_side_learns_the_others_incarnation_and_how_it_was_known() {
    let s = secret("correct horse battery staple");
    let (d, hello) = Dialer::start(&s, end(1), BrokerId(2), Incarnation(7), [1; NONCE_BYTES]);
    let (a, challenge) = Acceptor::on_hello(
        &s,
        end(2),
        |_| true,
        |_| Incarnation(9),
        &hello,
        [2; NONCE_BYTES],
    )
    .expect("well formed");
    let (dialer_met, proof) = d.on_challenge(&challenge).expect("genuine");
    assert_eq!(
        dialer_met,
        Met {
            peer: end(2),
            knew_me_as: Incarnation(9)
        }
    );
    assert_eq!(
        a.on_proof(&proof).expect("genuine"),
        Met {
            peer: end(1),
            knew_me_as: Incarnation(7)
        }
    );
}

#[test]
fn wrong_magic_version_or_flags_are_refused() {
    let good = Hello {
        from: BrokerId(1),
        to: BrokerId(2),
        incarnation: Incarnation(1),
        known: Incarnation::UNKNOWN,
        cluster: CLUSTER,
        nonce: [0; NONCE_BYTES],
    }
    .encode();
    let mut bad = good;
    bad[0] = b'X';
    assert!(matches!(Hello::decode(&bad), Err(HandshakeError::BadMagic)));
    let mut bad = good;
    bad[8] = 1;
    assert!(matches!(
        Hello::decode(&bad),
        Err(HandshakeError::UnsupportedVersion(1))
    ));
    let mut bad = good;
    bad[10] = 1;
    assert!(matches!(
        Hello::decode(&bad),
        Err(HandshakeError::UnsupportedFlags(1))
    ));
}

#[test]
fn secrets_shorter_than_the_minimum_are_refused() {
    assert!(matches!(
        ClusterSecret::new(b"  short\n"),
        Err(SecretError::TooShort { len: 5 })
    ));
    assert!(ClusterSecret::new(b"sixteen bytes ok").is_ok());
    assert_eq!(
        format!("{:?}", secret("never printed, ever")),
        "ClusterSecret(..)"
    );
}

#[test]
fn a_secret_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        ClusterSecret::load(&path),
        Err(SecretError::Permissions { mode: 0o644, .. })
    ));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let loaded = ClusterSecret::load(&path).expect("private file");
    assert_eq!(
        run(&loaded, &secret("0123456789abcdef0123456789abcdef")).ok(),
        Some(BrokerId(1))
    );
    std::fs::write(&path, vec![b'x'; 5000]).expect("write");
    assert!(matches!(
        ClusterSecret::load(&path),
        Err(SecretError::Unusable { .. })
    ));
    assert!(matches!(
        ClusterSecret::load(&dir.path().join("missing")),
        Err(SecretError::Io { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn any_hello_bytes_decode_to_their_own_encoding_or_are_refused(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, HELLO_BYTES),
        proof in proptest::collection::vec(proptest::num::u8::ANY, PROOF_BYTES),
    ) {
        let hello: [u8; HELLO_BYTES] = bytes.as_slice().try_into().expect("sized");
        if let Ok(h) = Hello::decode(&hello) {
            proptest::prop_assert_eq!(h.encode(), hello);
        }
        let s = secret("correct horse battery staple");
        if let Ok((a, _)) =
            Acceptor::on_hello(&s, end(2), |_| true, never_seen, &hello, [4; NONCE_BYTES])
        {
            let proof: [u8; PROOF_BYTES] = proof.as_slice().try_into().expect("sized");
            proptest::prop_assert!(a.on_proof(&proof).is_err());
        }
    }

    #[test]
    fn well_formed_hellos_round_trip(
        from in 1u64..,
        to in 1u64..,
        incarnation in proptest::num::u128::ANY,
        known in proptest::num::u128::ANY,
        cluster in proptest::num::u128::ANY,
        nonce in proptest::array::uniform32(proptest::num::u8::ANY),
    ) {
        let h = Hello {
            from: BrokerId(from),
            to: BrokerId(to),
            incarnation: Incarnation(incarnation),
            known: Incarnation(known),
            cluster: ClusterId(cluster),
            nonce,
        };
        proptest::prop_assert_eq!(Hello::decode(&h.encode()).expect("decodes"), h);
    }
}
