//! Fuzzes the check a broker runs on a membership change a peer's append
//! carries: the context decoder and the comparison with raft-rs's data.
//! Nothing may panic; a context that decodes encodes back to exactly its
//! bytes, and a change that decodes applies to a membership or is refused,
//! never leaving an invalid one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_replication::BrokerId;
use rill_replication::conf::{MembershipChange, check_entry};
use rill_replication::state::Membership;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = data.split_first().map_or((0, data), |(s, r)| (*s as usize, r));
    let (context, raft_data) = rest.split_at(split.min(rest.len()));
    let Ok(change) = MembershipChange::decode(context) else {
        return;
    };
    assert_eq!(change.encode(), context, "a decoded context re-encodes to its bytes");
    let _ = check_entry(raft_data, context);
    assert!(check_entry(&change.raft_data(), context).is_ok());
    let start = Membership::voters([BrokerId(1), BrokerId(2), BrokerId(3)]);
    let learning = start.apply(&MembershipChange::AddLearner(BrokerId(4))).expect("a new learner");
    for m in [&start, &learning] {
        if let Ok(next) = m.apply(&change) {
            assert!(next.is_valid(), "{change:?} on {m:?} gave {next:?}");
        }
    }
});
