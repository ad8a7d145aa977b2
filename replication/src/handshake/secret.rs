//! The cluster secret brokers prove to each other, and the MACs computed
//! under it. Its bytes are never printed; a secret file is refused unless
//! it is a small regular file that only its owner may read or write.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest cluster secret, bytes (after surrounding whitespace is
/// trimmed): 128 bits, if the secret is random.
pub const SECRET_BYTES_MIN: usize = 16;
/// Longest cluster secret file, bytes; checked before it is read.
pub const SECRET_FILE_BYTES_MAX: u64 = 4096;

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

    /// An HMAC-SHA256 under this secret over `label` then `parts`.
    pub(super) fn mac(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(label);
        for p in parts {
            mac.update(p);
        }
        mac
    }
}
