//! A broker new to a running cluster joining it (`--join HOST:PORT`, the
//! client address of any broker of the cluster).
//!
//! The first time, the broker asks the cluster to take it in
//! (`JoinCluster`): the controller leader records it with its peer address,
//! every broker links to it, and the answer says what it needs to start:
//! the controller group's first voters and every other broker's peer
//! address. The answer is kept in `joined.json` before anything else is
//! opened, so later starts need no other broker to be up; brokers that
//! join later still are linked from the controller's log.
//!
//! Invariants:
//! - The broker opens its replica of the controller's log from the group's
//!   *first* voters at Raft index 0, exactly as the first brokers did, and
//!   replays every entry from there (the controller's log is never
//!   compacted), so it reaches the same membership and image. It is never
//!   among those voters ([`Joined::validate`]): in its own view it is no
//!   voter, so it neither votes nor campaigns until the leader's
//!   membership changes, which it applies from the log, make it one.
//! - `joined.json` is written whole and atomically (see
//!   [`crate::identity`]); one that does not decode or validate stops the
//!   broker with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rill_client::protocol::messages::JoinClusterResponse;
use rill_client::{Admin, ClientError, Cluster};
use rill_replication::BrokerId;
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityError, read_small, write_atomically};
use crate::metadata::{BROKERS_MAX, validate_peer_addr};

/// The file, in the data directory, that keeps how this broker joined.
pub const JOINED_FILE: &str = "joined.json";

/// Why a broker could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// `joined.json` could not be read or written.
    #[error(transparent)]
    File(#[from] IdentityError),
    /// `joined.json` is not what this broker writes.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cluster did not take the broker in.
    #[error("joining the cluster through {bootstrap}: {source}")]
    Refused {
        /// The broker asked.
        bootstrap: String,
        /// Its answer, or why there was none.
        source: ClientError,
    },
    /// The cluster's answer cannot be used.
    #[error("the cluster's answer to joining through {bootstrap}: {reason}")]
    BadAnswer {
        /// The broker asked.
        bootstrap: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a broker that joined the cluster starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The peer address it joined at (`HOST:PORT`): the one every other
    /// broker has for it.
    pub peer_addr: String,
    /// The controller group's first voters (broker ids).
    pub first_voters: Vec<u64>,
    /// Every other broker of the cluster when it joined: id → peer
    /// address (`HOST:PORT`).
    pub peers: BTreeMap<u64, String>,
}

impl Joined {
    /// Takes the cluster's answer to joining at `peer_addr`.
    pub fn from_answer(answer: &JoinClusterResponse, peer_addr: &str) -> Joined {
        Joined {
            peer_addr: peer_addr.to_string(),
            first_voters: answer.first_voters.iter().map(|b| u64::from(*b)).collect(),
            peers: answer
                .peers
                .iter()
                .map(|(b, a)| (u64::from(*b), a.clone()))
                .collect(),
        }
    }

    /// Checks it can be started from by broker `me`: first voters given,
    /// none of them 0 or `me`; at most [`BROKERS_MAX`] peers, none `me`,
    /// each at a valid address.
    pub fn validate(&self, me: BrokerId) -> Result<(), String> {
        validate_peer_addr(&self.peer_addr)
            .map_err(|why| format!("its own peer address {:?}: {why}", self.peer_addr))?;
        if self.first_voters.is_empty() || self.first_voters.len() > BROKERS_MAX {
            return Err(format!(
                "{} first voters; from 1 to {BROKERS_MAX} expected",
                self.first_voters.len()
            ));
        }
        if self.first_voters.contains(&0) {
            return Err("a first voter is broker 0".into());
        }
        if self.first_voters.contains(&me.get()) {
            return Err(format!(
                "broker {me} is one of the cluster's first voters: it cannot join what it started"
            ));
        }
        if self.peers.is_empty() || self.peers.len() > BROKERS_MAX {
            return Err(format!(
                "{} peers; from 1 to {BROKERS_MAX} expected",
                self.peers.len()
            ));
        }
        for (id, addr) in &self.peers {
            if *id == 0 || *id == me.get() {
                return Err(format!("peer {id} is not another broker"));
            }
            validate_peer_addr(addr).map_err(|why| format!("peer {id} at {addr:?}: {why}"))?;
        }
        Ok(())
    }

    /// The first voters, as ids.
    pub fn first_voters(&self) -> Vec<BrokerId> {
        self.first_voters.iter().copied().map(BrokerId).collect()
    }

    /// Every broker's peer address, `me`'s (at `my_addr`) included.
    pub fn peers_with(&self, me: BrokerId, my_addr: &str) -> BTreeMap<BrokerId, String> {
        let mut all: BTreeMap<BrokerId, String> = self
            .peers
            .iter()
            .map(|(b, a)| (BrokerId(*b), a.clone()))
            .collect();
        all.insert(me, my_addr.to_string());
        all
    }

    /// How broker `me` joined, if `data_dir` says it did (validated).
    pub fn load(data_dir: &Path, me: BrokerId) -> Result<Option<Joined>, JoinError> {
        let path = data_dir.join(JOINED_FILE);
        let Some(bytes) = read_small(&path)? else {
            return Ok(None);
        };
        let invalid = |reason: String| JoinError::Invalid {
            path: path.clone(),
            reason,
        };
        let joined: Joined = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        joined.validate(me).map_err(invalid)?;
        Ok(Some(joined))
    }

    /// Keeps it in `data_dir`, durably.
    pub fn save(&self, data_dir: &Path) -> Result<(), JoinError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a Joined always serialises");
        write_atomically(data_dir, JOINED_FILE, &bytes)?;
        Ok(())
    }
}

/// How broker `me` starts in the cluster it joins through `bootstrap`: as
/// kept in `data_dir` from an earlier start, or asked of the cluster
/// (which records it, at `peer_addr`) and kept.
pub async fn join(
    data_dir: &Path,
    bootstrap: &str,
    me: BrokerId,
    peer_addr: &str,
) -> Result<Joined, JoinError> {
    if let Some(joined) = Joined::load(data_dir, me)? {
        if joined.peer_addr != peer_addr {
            return Err(JoinError::Invalid {
                path: data_dir.join(JOINED_FILE),
                reason: format!(
                    "this broker joined the cluster at {}, and the other brokers reach it there; \
                     start it with --peer-listen {} (not {peer_addr})",
                    joined.peer_addr, joined.peer_addr
                ),
            });
        }
        return Ok(joined);
    }
    let refused = |source: ClientError| JoinError::Refused {
        bootstrap: bootstrap.to_string(),
        source,
    };
    let cluster = Cluster::new(bootstrap, "rill-broker-join").map_err(refused)?;
    let id = u32::try_from(me.get()).expect("broker ids given as flags fit in u32");
    let answer = Admin::new(cluster)
        .join_cluster(id, peer_addr)
        .await
        .map_err(refused)?;
    let joined = Joined::from_answer(&answer, peer_addr);
    joined.validate(me).map_err(|reason| JoinError::BadAnswer {
        bootstrap: bootstrap.to_string(),
        reason,
    })?;
    joined.save(data_dir)?;
    tracing::info!(
        first_voters = ?joined.first_voters,
        peers = ?joined.peers,
        "joined the cluster"
    );
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined() -> Joined {
        Joined {
            peer_addr: "127.0.0.1:7004".into(),
            first_voters: vec![1, 2, 3],
            peers: [(1, "127.0.0.1:7001".into()), (2, "127.0.0.1:7002".into())].into(),
        }
    }

    #[test]
    fn a_joined_broker_is_never_among_the_first_voters_it_starts_from() {
        assert_eq!(joined().validate(BrokerId(4)), Ok(()));
        assert!(joined().validate(BrokerId(2)).is_err());
        let mut none = joined();
        none.first_voters.clear();
        assert!(none.validate(BrokerId(4)).is_err());
        let mut zero = joined();
        zero.first_voters.push(0);
        assert!(zero.validate(BrokerId(4)).is_err());
    }

    #[test]
    fn peers_must_be_other_brokers_at_dialable_addresses() {
        let mut me_among = joined();
        me_among.peers.insert(4, "127.0.0.1:7004".into());
        assert!(me_among.validate(BrokerId(4)).is_err());
        for bad in ["0.0.0.0:7000", "127.0.0.1", "127.0.0.1:0", "h st:1", ""] {
            let mut j = joined();
            j.peers.insert(5, bad.into());
            assert!(j.validate(BrokerId(4)).is_err(), "{bad:?} accepted");
        }
        let mut many = joined();
        for b in 10..(10 + BROKERS_MAX as u64) {
            many.peers.insert(b, format!("127.0.0.1:{}", 7000 + b));
        }
        assert!(many.validate(BrokerId(4)).is_err());
    }

    #[tokio::test]
    async fn a_restart_at_another_peer_address_than_joined_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        joined().save(dir.path()).expect("saved");
        // Kept: no broker is asked (nothing listens at the bootstrap).
        let again = join(dir.path(), "127.0.0.1:1", BrokerId(4), "127.0.0.1:7004").await;
        assert_eq!(again.expect("kept"), joined());
        let moved = join(dir.path(), "127.0.0.1:1", BrokerId(4), "127.0.0.1:7999").await;
        assert!(
            matches!(&moved, Err(JoinError::Invalid { reason, .. }) if reason.contains("--peer-listen 127.0.0.1:7004")),
            "{moved:?}"
        );
    }

    #[test]
    fn a_kept_join_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        assert!(matches!(Joined::load(dir.path(), BrokerId(4)), Ok(None)));
        joined().save(dir.path()).expect("saved");
        assert_eq!(
            Joined::load(dir.path(), BrokerId(4)).expect("read"),
            Some(joined())
        );
        let all = joined().peers_with(BrokerId(4), "127.0.0.1:7004");
        assert_eq!(all.len(), 3);
        assert_eq!(all[&BrokerId(4)], "127.0.0.1:7004");
        std::fs::write(dir.path().join(JOINED_FILE), b"{\"first_voters\":").expect("written");
        assert!(matches!(
            Joined::load(dir.path(), BrokerId(4)),
            Err(JoinError::Invalid { .. })
        ));
        // Broker 2 is a first voter: this directory's join is not its own.
        joined().save(dir.path()).expect("saved");
        assert!(matches!(
            Joined::load(dir.path(), BrokerId(2)),
            Err(JoinError::Invalid { .. })
        ));
    }
}
