//! Which peers are up, for hibernating groups (`rill_replication`'s
//! `hibernate`): a group asleep hears no heartbeats, so it cannot notice
//! its leader die on its own. Every tick this thread sends each peer a
//! beacon (an empty frame when nothing else goes) and reads what the
//! transport saw of them: a peer whose connection has been closed for
//! [`PEER_GONE_MS`], or that has sent nothing for [`PEER_SILENT_MS`] (ten
//! beacons) while this broker kept up reading, is down, and the node wakes
//! its groups (their followers campaign at once, ranked); a peer heard
//! from again is up, and the groups led here wake to heartbeat it. So do
//! they when a peer's connection opens again too soon for it to have been
//! found down: a broker restarted at once with an empty disk has replicas
//! that wait, silent, for their leaders.

use rill_replication::transport::PeerLiveness;

use super::RaftLoop;

/// A peer whose connection has been closed this long is down, ms: a
/// SIGKILLed broker's connections reset at once, and its groups' followers
/// campaign within a few ticks of this.
pub const PEER_GONE_MS: u64 = 200;
/// A peer that has sent nothing for this long is down, ms (a hung machine
/// or a cut network: no reset comes); the election timeout.
pub const PEER_SILENT_MS: u64 = 1_000;
/// A peer counts as up again once heard from within this long, ms.
pub const PEER_HEARD_MS: u64 = 300;
/// Ticks between two updates of the awake groups' and down peers' gauges.
const GAUGES_TICKS: u64 = 10;

/// Whether `p` is down, up, or neither (no change to make).
fn judge(p: &PeerLiveness) -> Option<bool> {
    if p.backlogged {
        return None;
    }
    let gone = !p.connected && p.since_change_ms >= PEER_GONE_MS;
    if gone || p.silent_ms >= PEER_SILENT_MS {
        return Some(false);
    }
    (p.connected && p.silent_ms < PEER_HEARD_MS).then_some(true)
}

impl RaftLoop {
    /// Sends the beacons and tells the node of peers found down or up.
    pub(super) fn check_peers(&mut self) {
        let Some(transport) = &mut self.transport else {
            return;
        };
        for peer in transport.admit_arrivals() {
            tracing::info!(%peer, "linked a broker that joined the cluster since this one started");
        }
        transport.beacon();
        for p in transport.liveness() {
            match judge(&p) {
                Some(false) => self.node.peer_down(p.peer),
                Some(true) => self.node.peer_up(p.peer),
                None => {}
            }
            let seen = self
                .peer_connections
                .insert(p.peer, p.connections_opened)
                .unwrap_or(p.connections_opened);
            if p.connections_opened > seen && p.connected {
                self.node.peer_reconnected(p.peer);
            }
        }
        if self.ticks % GAUGES_TICKS == 0 {
            crate::metrics::raft_liveness(self.node.awake_groups(), self.node.peers_down());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_replication::BrokerId;

    fn peer(connected: bool, since_change_ms: u64, silent_ms: u64) -> PeerLiveness {
        PeerLiveness {
            peer: BrokerId(2),
            connected,
            since_change_ms,
            silent_ms,
            backlogged: false,
            connections_opened: 1,
        }
    }

    #[test]
    fn a_peer_is_down_once_its_connection_stays_closed_or_it_stays_silent() {
        assert_eq!(judge(&peer(false, 50, 50)), None, "closed only just");
        assert_eq!(judge(&peer(false, PEER_GONE_MS, 50)), Some(false));
        assert_eq!(judge(&peer(true, 5_000, PEER_SILENT_MS)), Some(false));
        assert_eq!(judge(&peer(true, 5_000, 100)), Some(true));
        assert_eq!(judge(&peer(true, 5_000, 500)), None, "neither");
        let mut behind = peer(true, 5_000, 10 * PEER_SILENT_MS);
        behind.backlogged = true;
        assert_eq!(judge(&behind), None, "this broker is behind, not the peer");
    }
}
