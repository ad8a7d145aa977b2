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

/// A cluster: a random UUID its controller records once, when the cluster
/// first elects a controller leader, and that every broker then keeps in
/// its data directory's identity. Brokers of different clusters refuse
/// each other in the peer handshake, even if they share a secret.
/// [`ClusterId::UNKNOWN`] (0) stands for a broker that has not learnt it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// No cluster id: not learnt yet.
    pub const UNKNOWN: ClusterId = ClusterId(0);

    /// A fresh random (version 4) UUID.
    pub fn fresh() -> ClusterId {
        let n = rand::random::<u128>();
        let version_4 = (n & !(0xF << 76)) | (0x4 << 76);
        ClusterId((version_4 & !(0x3 << 62)) | (0x2 << 62))
    }

    /// Whether it is known.
    pub fn is_known(self) -> bool {
        self != ClusterId::UNKNOWN
    }

    /// Reads a canonical UUID (`8-4-4-4-12` lowercase hex digits); `None`
    /// for anything else, and for the nil UUID.
    pub fn parse(text: &str) -> Option<ClusterId> {
        let groups: Vec<&str> = text.split('-').collect();
        let canonical = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && text
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !canonical {
            return None;
        }
        u128::from_str_radix(&groups.concat(), 16)
            .ok()
            .map(ClusterId)
            .filter(|c| c.is_known())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_reads_back_from_its_canonical_uuid_and_nothing_else() {
        let id = ClusterId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(ClusterId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "0123456789abcdef0011223344556677",
            "01234567-89AB-cdef-0011-223344556677",
            "01234567-89ab-cdef-0011-22334455667",
            "+1234567-89ab-cdef-0011-223344556677",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(ClusterId::parse(bad), None, "{bad:?}");
        }
        let fresh = ClusterId::fresh();
        assert_eq!(ClusterId::parse(&fresh.to_string()), Some(fresh));
        assert_eq!(&fresh.to_string()[14..15], "4", "a version 4 UUID");
    }
}
