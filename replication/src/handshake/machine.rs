//! The handshake's two sides as state machines free of I/O: the
//! [`Dialer`] between its hello and its proof, the [`Acceptor`] between its
//! challenge and the dialer's proof. Nonces come in from the caller. A side
//! checks the other's MAC before it trusts anything the other said, and
//! the two labels keep an acceptor's MAC from passing as a dialer's proof.

use hmac::Mac;

use super::{
    CHALLENGE_BYTES, CHALLENGE_MACED_BYTES, Challenge, ClusterSecret, End, HELLO_BYTES,
    HandshakeError, Hello, MAC_BYTES, Met, NONCE_BYTES, PROOF_BYTES,
};
use crate::ids::{BrokerId, Incarnation};

pub(super) const ACCEPTOR_LABEL: &[u8] = b"rill-peer-v2 acceptor";
pub(super) const DIALER_LABEL: &[u8] = b"rill-peer-v2 dialer";

/// The dialer's side, between its hello and its proof.
#[derive(Debug)]
pub struct Dialer {
    secret: ClusterSecret,
    hello: [u8; HELLO_BYTES],
    me: End,
    peer: BrokerId,
}

impl Dialer {
    /// Starts a handshake from `me` to `peer`, whose incarnation this
    /// broker last saw as `known`; returns the hello to send.
    pub fn start(
        secret: &ClusterSecret,
        me: End,
        peer: BrokerId,
        known: Incarnation,
        nonce: [u8; NONCE_BYTES],
    ) -> (Dialer, [u8; HELLO_BYTES]) {
        let hello = Hello {
            from: me.id,
            to: peer,
            incarnation: me.incarnation,
            known,
            cluster: me.cluster,
            nonce,
        }
        .encode();
        let dialer = Dialer {
            secret: secret.clone(),
            hello,
            me,
            peer,
        };
        (dialer, hello)
    }

    /// Checks the acceptor's challenge; returns what it says of itself and
    /// of this broker, and the proof to send.
    pub fn on_challenge(
        self,
        bytes: &[u8; CHALLENGE_BYTES],
    ) -> Result<(Met, [u8; PROOF_BYTES]), HandshakeError> {
        let challenge = Challenge::decode(bytes)?;
        if challenge.from != self.peer {
            return Err(HandshakeError::WrongPeer {
                expected: self.peer,
                answered: challenge.from,
            });
        }
        self.secret
            .mac(
                ACCEPTOR_LABEL,
                &[&self.hello, &bytes[..CHALLENGE_MACED_BYTES]],
            )
            .verify_slice(&challenge.mac)
            .map_err(|_| HandshakeError::BadMac)?;
        // Refused before this broker proves anything to it.
        self.me.check_cluster(challenge.cluster)?;
        let proof = self.secret.mac(DIALER_LABEL, &[&self.hello, bytes]);
        let met = Met {
            peer: End {
                id: challenge.from,
                incarnation: challenge.incarnation,
                cluster: challenge.cluster,
            },
            knew_me_as: challenge.known,
        };
        Ok((met, proof.finalize().into_bytes().into()))
    }
}

/// The acceptor's side, between its challenge and the dialer's proof.
#[derive(Debug)]
pub struct Acceptor {
    secret: ClusterSecret,
    hello: [u8; HELLO_BYTES],
    challenge: [u8; CHALLENGE_BYTES],
    met: Met,
}

impl Acceptor {
    /// Checks a hello sent to `me`: it must name `me` and come from a
    /// broker `dials_me` accepts; `known` gives the incarnation this
    /// broker last saw of each peer. Returns the state to check the proof
    /// with, and the challenge to send. A hello refused here gets no
    /// answer.
    pub fn on_hello(
        secret: &ClusterSecret,
        me: End,
        dials_me: impl Fn(BrokerId) -> bool,
        known: impl Fn(BrokerId) -> Incarnation,
        bytes: &[u8; HELLO_BYTES],
        nonce: [u8; NONCE_BYTES],
    ) -> Result<(Acceptor, [u8; CHALLENGE_BYTES]), HandshakeError> {
        let hello = Hello::decode(bytes)?;
        if hello.to != me.id {
            return Err(HandshakeError::WrongBroker {
                me: me.id,
                named: hello.to,
            });
        }
        if !dials_me(hello.from) {
            return Err(HandshakeError::NotAPeer(hello.from));
        }
        me.check_cluster(hello.cluster)?;
        let mut challenge = Challenge {
            from: me.id,
            incarnation: me.incarnation,
            known: known(hello.from),
            cluster: me.cluster,
            nonce,
            mac: [0; MAC_BYTES],
        }
        .encode();
        let mac = secret.mac(
            ACCEPTOR_LABEL,
            &[bytes, &challenge[..CHALLENGE_MACED_BYTES]],
        );
        challenge[CHALLENGE_MACED_BYTES..].copy_from_slice(&mac.finalize().into_bytes());
        let acceptor = Acceptor {
            secret: secret.clone(),
            hello: *bytes,
            challenge,
            met: Met {
                peer: End {
                    id: hello.from,
                    incarnation: hello.incarnation,
                    cluster: hello.cluster,
                },
                knew_me_as: hello.known,
            },
        };
        Ok((acceptor, challenge))
    }

    /// The broker the hello named (not yet proven).
    pub fn claimed(&self) -> BrokerId {
        self.met.peer.id
    }

    /// Checks the dialer's proof; returns what the dialer, now
    /// authenticated, says of itself and of this broker.
    pub fn on_proof(self, proof: &[u8; PROOF_BYTES]) -> Result<Met, HandshakeError> {
        self.secret
            .mac(DIALER_LABEL, &[&self.hello, &self.challenge])
            .verify_slice(proof)
            .map_err(|_| HandshakeError::BadMac)?;
        Ok(self.met)
    }
}
