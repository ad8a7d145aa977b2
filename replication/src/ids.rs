//! Newtypes for the identifiers of replication that must never be mixed up.
//!
//! A [`BrokerId`] names a broker (raft-rs calls it a node or peer id); a
//! [`GroupId`] names one Raft group on the brokers (the controller is
//! [`GroupId::CONTROLLER`]; each partition gets its own id from the
//! controller when its topic is created, never reused).

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A broker: a Raft peer id. Never 0 (raft-rs reserves 0 for "none").
    BrokerId
);
id!(
    /// A Raft group on the brokers: the controller or one partition.
    GroupId
);

impl GroupId {
    /// The controller group, which holds the cluster's metadata.
    pub const CONTROLLER: GroupId = GroupId(0);
}

/// One life of a broker's data directory: a random number written when the
/// directory is first used. A broker that comes back with another one has
/// lost what it once acknowledged; [`Incarnation::UNKNOWN`] (0) stands for
/// a broker never seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub u128);

impl Incarnation {
    /// No incarnation: a broker never seen.
    pub const UNKNOWN: Incarnation = Incarnation(0);

    /// A fresh random incarnation, never [`Incarnation::UNKNOWN`].
    pub fn fresh() -> Incarnation {
        loop {
            let n = rand::random::<u128>();
            if n != 0 {
                return Incarnation(n);
            }
        }
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
