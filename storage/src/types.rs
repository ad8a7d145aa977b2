//! Newtypes for the numbers of a log that must never be mixed up.
//!
//! An [`Offset`] numbers records, a [`RaftIndex`] numbers stored entries
//! (batches, including zero-record control batches) and a [`Term`] is the Raft
//! term an entry was written in. All three only ever grow along a log; mixing
//! them up is a type error rather than a silent bug.

use std::fmt;

macro_rules! log_number {
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

            /// `self + n`, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The number after this one.
            ///
            /// # Panics
            /// On overflow of `u64`, which a log can never reach.
            #[inline]
            pub const fn next(self) -> Self {
                Self(self.0 + 1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

log_number!(
    /// The position of a record in a partition: gap-free, starting at 0.
    Offset
);
log_number!(
    /// The index of a stored entry (one batch) in the partition's Raft log.
    /// Raft indexes start at 1; a zero-record control batch takes an index but
    /// no offset.
    RaftIndex
);
log_number!(
    /// A Raft term. Terms never decrease along a log.
    Term
);
