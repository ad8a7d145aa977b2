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
//!    sends a [`Proof`]: a MAC over the hello and the whole challenge under
//!    the *dialer* label. The acceptor checks it; only then is the
//!    connection the peer's, and only then may frames flow.
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
//! A [`Proof`], [`PROOF_BYTES`] = 32 bytes: HMAC-SHA256(secret,
//! `rill-peer-v2 dialer` ‖ hello ‖ challenge).
//!
//! A broker started with no secret (a cluster run with `--insecure-peers`)
//! runs the same handshake under an empty key: brokers still name
//! themselves, but anyone can.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ids::{BrokerId, ClusterId, Incarnation};

type HmacSha256 = Hmac<Sha256>;

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
/// Bytes of a [`Proof`].
pub const PROOF_BYTES: usize = MAC_BYTES;
/// Shortest cluster secret, bytes (after surrounding whitespace is
/// trimmed): 128 bits, if the secret is random.
pub const SECRET_BYTES_MIN: usize = 16;
/// Longest cluster secret file, bytes; checked before it is read.
pub const SECRET_FILE_BYTES_MAX: u64 = 4096;

const ACCEPTOR_LABEL: &[u8] = b"rill-peer-v2 acceptor";
const DIALER_LABEL: &[u8] = b"rill-peer-v2 dialer";

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

/// Why a cluster secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("cluster secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file may be read by other users.
    #[error(
        "cluster secret file {path} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a regular file, or is too large.
    #[error("cluster secret file {path}: {reason}")]
    Unusable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The secret is too short to resist guessing.
    #[error("the cluster secret is {len} bytes; at least {SECRET_BYTES_MIN} are needed")]
    TooShort {
        /// Its length, bytes.
        len: usize,
    },
}

/// The key brokers authenticate each other with. Its bytes are never
/// printed.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str("ClusterSecret(none)")
        } else {
            f.write_str("ClusterSecret(..)")
        }
    }
}

impl ClusterSecret {
    /// A secret from its bytes, surrounding whitespace trimmed.
    pub fn new(bytes: &[u8]) -> Result<ClusterSecret, SecretError> {
        let key = bytes.trim_ascii();
        if key.len() < SECRET_BYTES_MIN {
            return Err(SecretError::TooShort { len: key.len() });
        }
        Ok(ClusterSecret { key: key.to_vec() })
    }

    /// No secret: the handshake runs under an empty key, so brokers name
    /// themselves but prove nothing. Only for clusters started with
    /// `--insecure-peers`.
    pub fn insecure() -> ClusterSecret {
        ClusterSecret { key: Vec::new() }
    }

    /// Whether this is [`ClusterSecret::insecure`].
    pub fn is_insecure(&self) -> bool {
        self.key.is_empty()
    }

    /// Reads the secret from `path`: a regular file of at most
    /// [`SECRET_FILE_BYTES_MAX`] bytes that neither group nor others may
    /// read or write (as ssh demands of a private key).
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let shown = path.display().to_string();
        let io = |source| SecretError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SecretError::Unusable {
                path: shown,
                reason: "not a regular file".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions { path: shown, mode });
        }
        if meta.size() > SECRET_FILE_BYTES_MAX {
            return Err(SecretError::Unusable {
                path: shown,
                reason: format!(
                    "{} bytes; a secret file holds at most {SECRET_FILE_BYTES_MAX}",
                    meta.size()
                ),
            });
        }
        let mut bytes = Vec::new();
        // Bounded again while reading: the file may grow after the stat.
        file.by_ref()
            .take(SECRET_FILE_BYTES_MAX)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        ClusterSecret::new(&bytes)
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(label);
        for p in parts {
            mac.update(p);
        }
        mac
    }
}

/// A fresh random nonce from the thread's CSPRNG (seeded by the OS).
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    nonce
}

/// What a broker remembers of its peers' incarnations, and learns of them
/// as they connect. The broker keeps it on disk; tests keep it in memory
/// ([`MemoryPeerBook`]).
pub trait PeerBook: Send + Sync + std::fmt::Debug + 'static {
    /// The incarnation last seen of `peer` ([`Incarnation::UNKNOWN`]:
    /// never seen).
    fn known(&self, peer: BrokerId) -> Incarnation;
    /// A peer passed the handshake: called before any of its frames is
    /// handed on, so what it learns (for instance that the peer knew this
    /// broker in an earlier life) is in force for the peer's first
    /// message.
    fn met(&self, met: &Met);
}

/// A [`PeerBook`] in memory: what it was told, forgotten with it (a
/// broker keeps one behind its file).
#[derive(Debug, Default)]
pub struct MemoryPeerBook {
    /// Incarnations seen, by peer. Guards the map only.
    seen: std::sync::Mutex<std::collections::BTreeMap<BrokerId, Incarnation>>,
}

impl MemoryPeerBook {
    /// A book that already knows `seen`.
    pub fn with(seen: std::collections::BTreeMap<BrokerId, Incarnation>) -> MemoryPeerBook {
        MemoryPeerBook {
            seen: std::sync::Mutex::new(seen),
        }
    }

    /// Records `peer`'s incarnation; returns the one recorded before.
    pub fn remember(&self, peer: BrokerId, incarnation: Incarnation) -> Option<Incarnation> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, incarnation)
    }

    /// Every incarnation recorded, by peer.
    pub fn all(&self) -> std::collections::BTreeMap<BrokerId, Incarnation> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl PeerBook for MemoryPeerBook {
    fn known(&self, peer: BrokerId) -> Incarnation {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
            .unwrap_or(Incarnation::UNKNOWN)
    }

    fn met(&self, met: &Met) {
        self.remember(met.peer.id, met.peer.incarnation);
    }
}

/// How a broker shows itself to its peers: the secret it proves, its
/// incarnation, and what it remembers of them.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// This broker's incarnation.
    pub incarnation: Incarnation,
    /// Its cluster's id, once learnt (set once, by whoever learns it).
    pub cluster: std::sync::Arc<std::sync::OnceLock<ClusterId>>,
    /// What it remembers of its peers.
    pub book: std::sync::Arc<dyn PeerBook>,
}

impl PeerIdentity {
    /// How broker `id` shows itself in a handshake starting now.
    pub fn end(&self, id: BrokerId) -> End {
        End {
            id,
            incarnation: self.incarnation,
            cluster: self.cluster.get().copied().unwrap_or(ClusterId::UNKNOWN),
        }
    }
}

/// One end of a handshake: a broker and the life of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The broker.
    pub id: BrokerId,
    /// Its data directory's incarnation.
    pub incarnation: Incarnation,
    /// Its cluster ([`ClusterId::UNKNOWN`]: not learnt yet).
    pub cluster: ClusterId,
}

impl End {
    /// Refuses a peer of another cluster; one that has not learnt its
    /// cluster yet, or a broker that has not, meets any.
    fn check_cluster(&self, theirs: ClusterId) -> Result<(), HandshakeError> {
        if self.cluster.is_known() && theirs.is_known() && self.cluster != theirs {
            return Err(HandshakeError::OtherCluster {
                mine: self.cluster,
                theirs,
            });
        }
        Ok(())
    }
}

/// What a handshake tells one side about the other, authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Met {
    /// The other broker and its incarnation.
    pub peer: End,
    /// This broker's incarnation as the other last saw it
    /// ([`Incarnation::UNKNOWN`]: never).
    pub knew_me_as: Incarnation,
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

/// Runs the dialer's side over `stream`: from `me` to `peer`, whose
/// incarnation this broker last saw as `known`. On success the stream is
/// the peer's, ready for frames.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: End,
    peer: BrokerId,
    known: Incarnation,
) -> Result<Met, HandshakeError> {
    let (dialer, hello) = Dialer::start(secret, me, peer, known, fresh_nonce());
    stream.write_all(&hello).await?;
    let mut challenge = [0; CHALLENGE_BYTES];
    stream.read_exact(&mut challenge).await?;
    let (met, proof) = dialer.on_challenge(&challenge)?;
    stream.write_all(&proof).await?;
    stream.flush().await?;
    Ok(met)
}

/// Runs the acceptor's side over `stream`, for `me`, accepting dialers
/// that `dials_me` names. Returns what the authenticated dialer says; on
/// an error nothing but (perhaps) the challenge has been written to the
/// stream.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: End,
    dials_me: impl Fn(BrokerId) -> bool,
    known: impl Fn(BrokerId) -> Incarnation,
) -> Result<Met, HandshakeError> {
    let mut hello = [0; HELLO_BYTES];
    stream.read_exact(&mut hello).await?;
    let (acceptor, challenge) =
        Acceptor::on_hello(secret, me, dials_me, known, &hello, fresh_nonce())?;
    stream.write_all(&challenge).await?;
    stream.flush().await?;
    let mut proof = [0; PROOF_BYTES];
    stream.read_exact(&mut proof).await?;
    acceptor.on_proof(&proof)
}

#[cfg(test)]
mod tests {
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
}
