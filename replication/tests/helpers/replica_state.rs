//! Helpers for the tests of the replica state file: states to save (each
//! told apart by its term and commit), the initial state of a group of
//! voters 1, 2 and 3, and how many bytes of a slot a state uses.

use rill_replication::BrokerId;
use rill_replication::state::{HardState, Membership, ReplicaState, TruncatedState};
use rill_storage::{Offset, RaftIndex, Term};

/// Bytes of a slot before the member ids (magic .. the four counts).
pub const FIXED: usize = 77;

pub fn ids(raw: &[u64]) -> Vec<BrokerId> {
    raw.iter().map(|&b| BrokerId(b)).collect()
}

/// A state with a distinguishing term (and commit), for store tests.
pub fn state_n(n: u64) -> ReplicaState {
    ReplicaState {
        hard: HardState {
            term: Term(n),
            vote: Some(BrokerId(1 + n % 3)),
            commit: RaftIndex(10 * n),
        },
        truncated: TruncatedState {
            index: RaftIndex(n),
            term: Term(n),
            next_offset: Offset(100 * n),
        },
        membership: Membership::voters(ids(&[1, 2, 3])),
        membership_index: RaftIndex(0),
    }
}

pub fn initial() -> ReplicaState {
    ReplicaState::initial(Membership::voters(ids(&[1, 2, 3])))
}

/// Bytes of the slot a state encodes to that are not padding (CRC included).
pub fn used_bytes(state: &ReplicaState) -> usize {
    FIXED + 8 * state.membership.member_count() + 4
}
