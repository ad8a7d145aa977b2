//! The peer handshake: before any Raft frame crosses a peer connection,
//! each broker proves to the other that it holds the cluster secret, and
//! the acceptor learns which broker dialled.
//!
//! An HMAC-SHA256 challenge-response with a fresh random nonce from each
//! side, so a recorded handshake cannot be replayed and neither side's
//! answer can be reflected back as the other's:
//!
//! 1. The dialer sends a [`Hello`]: who it is, whom it means to reach, its
//!    [`Incarnation`] and the one it last saw of the acceptor, and its
//!    nonce.
//! 2. The acceptor checks that the hello names it and comes from one of its
//!    peers, and answers with a [`Challenge`]: its own nonce and a MAC over
//!    the hello and that nonce under the *acceptor* label, with its own
//!    incarnation and the one it last saw of the dialer. A hello that fails
//!    the checks gets nothing back.
//! 3. The dialer checks that MAC (the acceptor holds the secret), then
//!    sends its proof ([`Dialer::on_challenge`]): a MAC over the hello and
//!    the whole challenge under the *dialer* label. The acceptor checks it
//!    ([`Acceptor::on_proof`]); only then is the connection the peer's, and
//!    only then may frames flow.
//!
//! The incarnations travel inside the MACed transcript: each side learns,
//! authenticated, whether the other remembers an earlier life of its data
//! directory (it then lost what it had acknowledged, and must not vote
//! until it has caught up).
//!
//! So do the [`ClusterId`]s: a broker of another cluster is refused even if
//! it holds the same secret (a data directory moved between clusters, a
//! secret file reused), by the acceptor before it answers, by the dialer
//! before it proves anything. A broker that has not learnt its cluster's
//! id yet (a new cluster, an emptied data directory) sends
//! [`ClusterId::UNKNOWN`], and meets any cluster: it learns the id from
//! the controller's log. The id is a name, not a secret: an acceptor
//! states it in the clear to any well-formed hello, and it keeps out only
//! brokers that hold the secret by mistake.
//!
//! Versions do not mix: a broker speaking version 2 refuses version 1
//! hellos and challenges, so every broker of a cluster moves to a new
//! version together.
//!
//! MACs are compared in constant time (`hmac`'s `verify_slice`). The
//! labels keep the two MACs apart: an acceptor that answers any hello is
//! an oracle for acceptor MACs only, which never pass as a dialer's proof.
//! The transcript binds both ids, so a handshake relayed to a third broker
//! fails. The handshake authenticates the two ends; it does not protect
//! the frames after it from someone who can rewrite TCP segments on the
//! path (TLS, which can wrap the same streams, is the answer to that).
//!
//! The state machines ([`Dialer`], [`Acceptor`]) are free of I/O; [`dial`]
//! and [`accept`] run them over any byte stream, a plain TCP stream today
//! and a TLS stream when one wraps it.
//!
//! What lives where: this module holds the messages, their byte layout and
//! the handshake's errors; `secret` the cluster secret and the MACs under
//! it; `peers` the two ends and what a broker remembers of its peers;
//! `machine` the I/O-free state machines; `stream` the handshake run over
//! a byte stream.
//!
//! # Byte layout (version 2)
//!
//! Fixed sizes, so a reader never allocates from what it reads. Integers
//! are little-endian, as in [`crate::wire`].
//!
//! A [`Hello`], [`HELLO_BYTES`] = 108 bytes:
//!
//! | offset | size | field         | meaning |
//! |-------:|-----:|---------------|---------|
//! |      0 |    8 | `magic`       | `RILLPEER` |
//! |      8 |    2 | `version`     | `u16`: [`HANDSHAKE_VERSION`]; any other is refused |
//! |     10 |    2 | `flags`       | `u16`: 0 (reserved; any other value is refused) |
//! |     12 |    8 | `from`        | `u64`: the dialer's [`BrokerId`] |
//! |     20 |    8 | `to`          | `u64`: the broker the dialer means to reach |
//! |     28 |   16 | `incarnation` | `u128`: the dialer's [`Incarnation`] |
//! |     44 |   16 | `known`       | `u128`: the acceptor's incarnation as the dialer last saw it (0: never) |
//! |     60 |   16 | `cluster`     | `u128`: the dialer's [`ClusterId`] (0: not learnt yet) |
//! |     76 |   32 | `nonce`       | the dialer's random nonce |
//!
//! A [`Challenge`], [`CHALLENGE_BYTES`] = 132 bytes:
//!
//! | offset | size | field         | meaning |
//! |-------:|-----:|---------------|---------|
//! |      0 |    8 | `magic`       | `RILLPEER` |
//! |      8 |    2 | `version`     | `u16`: [`HANDSHAKE_VERSION`] |
//! |     10 |    2 | `flags`       | `u16`: 0 |
//! |     12 |    8 | `from`        | `u64`: the acceptor's [`BrokerId`] |
//! |     20 |   16 | `incarnation` | `u128`: the acceptor's [`Incarnation`] |
//! |     36 |   16 | `known`       | `u128`: the dialer's incarnation as the acceptor last saw it (0: never) |
//! |     52 |   16 | `cluster`     | `u128`: the acceptor's [`ClusterId`] (0: not learnt yet) |
//! |     68 |   32 | `nonce`       | the acceptor's random nonce |
//! |    100 |   32 | `mac`         | HMAC-SHA256(secret, `rill-peer-v2 acceptor` ‖ hello ‖ bytes 0..100) |
//!
//! The dialer's proof, [`PROOF_BYTES`] = 32 bytes: HMAC-SHA256(secret,
//! `rill-peer-v2 dialer` ‖ hello ‖ challenge).
//!
//! A broker started with no secret (a cluster run with `--insecure-peers`)
//! runs the same handshake under an empty key: brokers still name
//! themselves, but anyone can.

mod machine;
mod peers;
mod secret;
mod stream;
#[cfg(test)]
mod tests;

pub use machine::{Acceptor, Dialer};
pub use peers::{End, MemoryPeerBook, Met, PeerBook, PeerIdentity};
pub use secret::{ClusterSecret, SECRET_BYTES_MIN, SECRET_FILE_BYTES_MAX, SecretError};
pub use stream::{accept, dial, fresh_nonce};

use crate::ids::{BrokerId, ClusterId, Incarnation};

/// The first bytes of every handshake message.
pub const HANDSHAKE_MAGIC: [u8; 8] = *b"RILLPEER";
/// The handshake's version; a peer speaking another is refused.
pub const HANDSHAKE_VERSION: u16 = 2;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a MAC (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;
/// Bytes of a [`Hello`].
pub const HELLO_BYTES: usize = 76 + NONCE_BYTES;
/// Bytes of a [`Challenge`].
pub const CHALLENGE_BYTES: usize = CHALLENGE_MACED_BYTES + MAC_BYTES;
/// Bytes of a [`Challenge`] before its MAC (what the MAC covers of it).
const CHALLENGE_MACED_BYTES: usize = 68 + NONCE_BYTES;
/// Bytes of the dialer's proof (see [`Dialer::on_challenge`]).
pub const PROOF_BYTES: usize = MAC_BYTES;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes are not a rill peer handshake.
    #[error("not a rill peer handshake (bad magic)")]
    BadMagic,
    /// The peer speaks another handshake version.
    #[error("handshake version {0} is not supported (this broker speaks {HANDSHAKE_VERSION})")]
    UnsupportedVersion(u16),
    /// Reserved flags were set.
    #[error("handshake flags {0:#x} are not supported")]
    UnsupportedFlags(u16),
    /// The hello was meant for another broker.
    #[error("the hello names broker {named}, not this one ({me})")]
    WrongBroker {
        /// This broker.
        me: BrokerId,
        /// The broker the hello names.
        named: BrokerId,
    },
    /// The dialer is not a broker this one accepts connections from.
    #[error("broker {0} is not a peer that dials this one")]
    NotAPeer(BrokerId),
    /// The acceptor is not the broker that was dialled.
    #[error("the acceptor is broker {answered}, not broker {expected}")]
    WrongPeer {
        /// The broker dialled.
        expected: BrokerId,
        /// The broker that answered.
        answered: BrokerId,
    },
    /// The other broker belongs to another cluster.
    #[error("the peer belongs to cluster {theirs}, this broker to cluster {mine}")]
    OtherCluster {
        /// This broker's cluster.
        mine: ClusterId,
        /// The other's.
        theirs: ClusterId,
    },
    /// The other side's MAC does not check: it holds another secret (or
    /// none).
    #[error("the peer does not hold this cluster's secret")]
    BadMac,
    /// The connection failed or ended during the handshake.
    #[error("connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// The dialer's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The dialer.
    pub from: BrokerId,
    /// The broker it means to reach.
    pub to: BrokerId,
    /// The dialer's incarnation.
    pub incarnation: Incarnation,
    /// The acceptor's incarnation as the dialer last saw it.
    pub known: Incarnation,
    /// The dialer's cluster.
    pub cluster: ClusterId,
    /// The dialer's nonce.
    pub nonce: [u8; NONCE_BYTES],
}

fn put_prefix(out: &mut [u8]) {
    out[0..8].copy_from_slice(&HANDSHAKE_MAGIC);
    out[8..10].copy_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&0u16.to_le_bytes());
}

fn check_prefix(buf: &[u8]) -> Result<(), HandshakeError> {
    if buf[0..8] != HANDSHAKE_MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version != HANDSHAKE_VERSION {
        return Err(HandshakeError::UnsupportedVersion(version));
    }
    let flags = u16::from_le_bytes([buf[10], buf[11]]);
    if flags != 0 {
        return Err(HandshakeError::UnsupportedFlags(flags));
    }
    Ok(())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(buf: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(buf[at..at + 16].try_into().expect("16 bytes"))
}

fn incarnation_at(buf: &[u8], at: usize) -> Incarnation {
    Incarnation(u128_at(buf, at))
}

impl Hello {
    /// Its bytes (see the module's layout).
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0; HELLO_BYTES];
        put_prefix(&mut out);
        out[12..20].copy_from_slice(&self.from.get().to_le_bytes());
        out[20..28].copy_from_slice(&self.to.get().to_le_bytes());
        out[28..44].copy_from_slice(&self.incarnation.0.to_le_bytes());
        out[44..60].copy_from_slice(&self.known.0.to_le_bytes());
        out[60..76].copy_from_slice(&self.cluster.0.to_le_bytes());
        out[76..].copy_from_slice(&self.nonce);
        out
    }

    /// Reads a hello.
    pub fn decode(buf: &[u8; HELLO_BYTES]) -> Result<Hello, HandshakeError> {
        check_prefix(buf)?;
        Ok(Hello {
            from: BrokerId(u64_at(buf, 12)),
            to: BrokerId(u64_at(buf, 20)),
            incarnation: incarnation_at(buf, 28),
            known: incarnation_at(buf, 44),
            cluster: ClusterId(u128_at(buf, 60)),
            nonce: buf[76..].try_into().expect("32 bytes"),
        })
    }
}

/// The acceptor's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor.
    pub from: BrokerId,
    /// The acceptor's incarnation.
    pub incarnation: Incarnation,
    /// The dialer's incarnation as the acceptor last saw it.
    pub known: Incarnation,
    /// The acceptor's cluster.
    pub cluster: ClusterId,
    /// The acceptor's nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// Its MAC over the hello and the fields above.
    pub mac: [u8; MAC_BYTES],
}

impl Challenge {
    /// Its bytes (see the module's layout).
    pub fn encode(&self) -> [u8; CHALLENGE_BYTES] {
        let mut out = [0; CHALLENGE_BYTES];
        put_prefix(&mut out);
        out[12..20].copy_from_slice(&self.from.get().to_le_bytes());
        out[20..36].copy_from_slice(&self.incarnation.0.to_le_bytes());
        out[36..52].copy_from_slice(&self.known.0.to_le_bytes());
        out[52..68].copy_from_slice(&self.cluster.0.to_le_bytes());
        out[68..CHALLENGE_MACED_BYTES].copy_from_slice(&self.nonce);
        out[CHALLENGE_MACED_BYTES..].copy_from_slice(&self.mac);
        out
    }

    /// Reads a challenge.
    pub fn decode(buf: &[u8; CHALLENGE_BYTES]) -> Result<Challenge, HandshakeError> {
        check_prefix(buf)?;
        Ok(Challenge {
            from: BrokerId(u64_at(buf, 12)),
            incarnation: incarnation_at(buf, 20),
            known: incarnation_at(buf, 36),
            cluster: ClusterId(u128_at(buf, 52)),
            nonce: buf[68..CHALLENGE_MACED_BYTES].try_into().expect("32 bytes"),
            mac: buf[CHALLENGE_MACED_BYTES..].try_into().expect("32 bytes"),
        })
    }
}
