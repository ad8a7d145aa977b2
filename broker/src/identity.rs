//! Who a data directory belongs to, and what this broker remembers of its
//! peers.
//!
//! `identity.json` is written when a broker first uses its data directory:
//! the broker id and a random [`Incarnation`], the directory's life, and,
//! once the broker learns it from the controller's log, the [`ClusterId`]
//! (a directory of another cluster is then refused, at start and in the
//! peer handshake). A
//! broker whose directory was emptied comes back with a new incarnation.
//! Its peers remember the incarnation they last saw of it (`peers.json`,
//! kept by [`FilePeerBook`]) and tell it in the peer handshake; a broker
//! told of an earlier life than its own has lost what it once
//! acknowledged. It then *rejoins*: its replicas vote and campaign again
//! only once each has caught up with its group (see
//! `rill_replication::Node::set_rejoining`), and `identity.json` says so
//! until then, so a restart halfway keeps it rejoining.
//!
//! Both files are small, written whole to a temporary file, synced, and
//! renamed over the old one (then the directory is synced): a crash
//! leaves the old file or the new, never a torn one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rill_replication::BrokerId;
use rill_replication::handshake::{MemoryPeerBook, Met, PeerBook};
use rill_replication::ids::{ClusterId, Incarnation};
use serde::{Deserialize, Serialize};

/// The identity file's name in the data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// The peers file's name in the data directory.
pub const PEERS_FILE: &str = "peers.json";
/// Largest identity or peers file read, bytes; checked before reading.
pub const IDENTITY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why an identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not what this broker writes.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data directory belongs to another broker.
    #[error(
        "data directory {dir} belongs to broker {owner}, not {me}: give each broker its own --data-dir"
    )]
    OtherBroker {
        /// The directory.
        dir: PathBuf,
        /// The broker it belongs to.
        owner: BrokerId,
        /// This broker.
        me: BrokerId,
    },
}

/// A data directory's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The broker it belongs to.
    pub broker_id: BrokerId,
    /// Its life: new whenever the directory starts empty.
    pub incarnation: Incarnation,
    /// The cluster it belongs to, once learnt ([`ClusterId::UNKNOWN`]
    /// before).
    pub cluster_id: ClusterId,
    /// When it was first used, ms since the Unix epoch.
    pub created_ms: u64,
    /// Whether the broker is still rejoining (see the module docs).
    pub rejoining: bool,
}

/// The identity file's layout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    broker_id: u32,
    /// 32 hex digits.
    incarnation: String,
    /// A canonical UUID; absent until learnt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
    created_ms: u64,
    rejoining: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_incarnation(text: &str) -> Option<Incarnation> {
    (text.len() == 32)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
        .map(Incarnation)
}

/// Reads `path` whole if it exists, at most [`IDENTITY_FILE_BYTES_MAX`].
pub(crate) fn read_small(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let len = file.metadata().map_err(io(path))?.len();
    if len > IDENTITY_FILE_BYTES_MAX {
        return Err(IdentityError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes; at most {IDENTITY_FILE_BYTES_MAX} expected"),
        });
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(IDENTITY_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    Ok(Some(bytes))
}

/// Writes `bytes` as `dir/name`: a temporary file, synced, renamed over
/// the old one, and the directory synced.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Identity {
    /// The identity of `data_dir` for broker `broker_id`: read, or written
    /// afresh when the directory has none (a new incarnation). A directory
    /// of another broker is refused.
    pub fn load_or_create(data_dir: &Path, broker_id: BrokerId) -> Result<Identity, IdentityError> {
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let path = data_dir.join(IDENTITY_FILE);
        let Some(bytes) = read_small(&path)? else {
            let identity = Identity {
                broker_id,
                incarnation: Incarnation::fresh(),
                cluster_id: ClusterId::UNKNOWN,
                created_ms: now_ms(),
                rejoining: false,
            };
            identity.save(data_dir)?;
            return Ok(identity);
        };
        let invalid = |reason: String| IdentityError::Invalid {
            path: path.clone(),
            reason,
        };
        let file: IdentityFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let incarnation = parse_incarnation(&file.incarnation)
            .filter(|i| *i != Incarnation::UNKNOWN)
            .ok_or_else(|| invalid(format!("bad incarnation {:?}", file.incarnation)))?;
        let cluster_id = match &file.cluster_id {
            None => ClusterId::UNKNOWN,
            Some(text) => {
                ClusterId::parse(text).ok_or_else(|| invalid(format!("bad cluster id {text:?}")))?
            }
        };
        let owner = BrokerId(u64::from(file.broker_id));
        if owner != broker_id {
            return Err(IdentityError::OtherBroker {
                dir: data_dir.to_path_buf(),
                owner,
                me: broker_id,
            });
        }
        Ok(Identity {
            broker_id,
            incarnation,
            cluster_id,
            created_ms: file.created_ms,
            rejoining: file.rejoining,
        })
    }

    /// Writes the identity to `data_dir` (atomically, synced).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        // The file holds a u32, as broker ids are set (`--node-id`).
        let broker_id =
            u32::try_from(self.broker_id.get()).map_err(|_| IdentityError::Invalid {
                path: data_dir.join(IDENTITY_FILE),
                reason: format!("broker id {} does not fit the file", self.broker_id),
            })?;
        let file = IdentityFile {
            broker_id,
            incarnation: self.incarnation.to_string(),
            cluster_id: self
                .cluster_id
                .is_known()
                .then(|| self.cluster_id.to_string()),
            created_ms: self.created_ms,
            rejoining: self.rejoining,
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("the identity always serialises");
        write_atomically(data_dir, IDENTITY_FILE, &bytes)
    }
}

/// What this broker remembers of its peers' incarnations, on disk, and
/// what it learns as they connect.
#[derive(Debug)]
pub struct FilePeerBook {
    dir: PathBuf,
    me: Incarnation,
    memory: MemoryPeerBook,
    /// Held while the file is written: writes land in the order the map
    /// changed (rare: a peer's first connection, or its return with a new
    /// incarnation).
    writing: Mutex<()>,
    /// Set when a peer knew this broker by an earlier incarnation; the
    /// Raft thread takes it before the peer's first message.
    rejoin: Arc<AtomicBool>,
}

impl FilePeerBook {
    /// The book kept in `data_dir`, for this broker's incarnation `me`;
    /// `rejoin` is raised when a peer knew an earlier one.
    pub fn open(
        data_dir: &Path,
        me: Incarnation,
        rejoin: Arc<AtomicBool>,
    ) -> Result<FilePeerBook, IdentityError> {
        let path = data_dir.join(PEERS_FILE);
        let mut seen = BTreeMap::new();
        if let Some(bytes) = read_small(&path)? {
            let file: BTreeMap<u64, String> =
                serde_json::from_slice(&bytes).map_err(|e| IdentityError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            for (id, text) in file {
                let i = parse_incarnation(&text).ok_or_else(|| IdentityError::Invalid {
                    path: path.clone(),
                    reason: format!("bad incarnation {text:?} for broker {id}"),
                })?;
                seen.insert(BrokerId(id), i);
            }
        }
        Ok(FilePeerBook {
            dir: data_dir.to_path_buf(),
            me,
            memory: MemoryPeerBook::with(seen),
            writing: Mutex::new(()),
            rejoin,
        })
    }
}

impl PeerBook for FilePeerBook {
    fn known(&self, peer: BrokerId) -> Incarnation {
        self.memory.known(peer)
    }

    fn met(&self, met: &Met) {
        if met.knew_me_as != Incarnation::UNKNOWN && met.knew_me_as != self.me {
            tracing::warn!(
                peer = %met.peer.id,
                earlier = %met.knew_me_as,
                now = %self.me,
                "a peer knew this broker's data directory in an earlier life: it lost what it \
                 had acknowledged, so its replicas rejoin and vote only once caught up"
            );
            self.rejoin.store(true, Ordering::Release);
        }
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.memory.remember(met.peer.id, met.peer.incarnation);
        if before == Some(met.peer.incarnation) {
            return;
        }
        if let Some(old) = before {
            tracing::warn!(peer = %met.peer.id, %old, new = %met.peer.incarnation, "a peer is back with a new data directory");
        }
        let file: BTreeMap<u64, String> = self
            .memory
            .all()
            .iter()
            .map(|(b, i)| (b.get(), i.to_string()))
            .collect();
        let bytes = serde_json::to_vec_pretty(&file).expect("the peers file always serialises");
        // Remembered in memory either way; on disk, what a later run tells
        // this peer of itself.
        if let Err(e) = write_atomically(&self.dir, PEERS_FILE, &bytes) {
            tracing::error!(error = %e, "could not record a peer's incarnation");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rill_replication::handshake::End;

    #[test]
    fn a_data_directory_keeps_its_incarnation_until_it_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), BrokerId(3)).unwrap();
        assert!(!first.rejoining);
        assert_eq!(
            Identity::load_or_create(dir.path(), BrokerId(3)).unwrap(),
            first
        );
        assert!(matches!(
            Identity::load_or_create(dir.path(), BrokerId(4)),
            Err(IdentityError::OtherBroker {
                owner: BrokerId(3),
                me: BrokerId(4),
                ..
            })
        ));
        std::fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
        let second = Identity::load_or_create(dir.path(), BrokerId(3)).unwrap();
        assert_ne!(second.incarnation, first.incarnation);
        std::fs::write(dir.path().join(IDENTITY_FILE), "{not json").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path(), BrokerId(3)),
            Err(IdentityError::Invalid { .. })
        ));
    }

    #[test]
    fn a_learnt_cluster_id_is_kept_and_a_file_from_before_it_was_learnt_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = Identity::load_or_create(dir.path(), BrokerId(3)).unwrap();
        assert_eq!(identity.cluster_id, ClusterId::UNKNOWN);
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(!text.contains("cluster_id"), "absent until learnt: {text}");
        identity.cluster_id = ClusterId::fresh();
        identity.save(dir.path()).unwrap();
        assert_eq!(
            Identity::load_or_create(dir.path(), BrokerId(3)).unwrap(),
            identity
        );
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(text.contains(&identity.cluster_id.to_string()), "{text}");
        let garbled = text.replace(&identity.cluster_id.to_string(), "not-a-uuid");
        std::fs::write(dir.path().join(IDENTITY_FILE), garbled).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path(), BrokerId(3)),
            Err(IdentityError::Invalid { .. })
        ));
    }

    #[test]
    fn a_peer_that_knew_an_earlier_life_raises_rejoin_and_peers_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let rejoin = Arc::new(AtomicBool::new(false));
        let me = Incarnation(5);
        let book = FilePeerBook::open(dir.path(), me, Arc::clone(&rejoin)).unwrap();
        let met = |knew_me_as| Met {
            peer: End {
                id: BrokerId(1),
                incarnation: Incarnation(77),
                cluster: ClusterId::UNKNOWN,
            },
            knew_me_as,
        };
        book.met(&met(Incarnation::UNKNOWN));
        book.met(&met(me));
        assert!(
            !rejoin.load(Ordering::Acquire),
            "never seen, or seen as now"
        );
        assert_eq!(book.known(BrokerId(1)), Incarnation(77));
        let reopened = FilePeerBook::open(dir.path(), me, Arc::clone(&rejoin)).unwrap();
        assert_eq!(reopened.known(BrokerId(1)), Incarnation(77));
        assert_eq!(reopened.known(BrokerId(2)), Incarnation::UNKNOWN);
        reopened.met(&met(Incarnation(4)));
        assert!(rejoin.load(Ordering::Acquire), "an earlier life");
    }
}
