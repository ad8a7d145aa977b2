//! rill-bench: the system benchmark.
//!
//! [`workload`] runs the produce, consume and end-to-end workloads over
//! `rill-client` (with `--group`, consumers read as members of a consumer
//! group); [`group`] times a group settling after a member joins;
//! [`report`] turns their counts and latency histograms into
//! the table and the one-line JSON summary; [`parked`] measures what fetches
//! parked on many idle partitions cost the broker. Micro-benchmarks of the storage
//! engine live in `storage/benches`.
//!
//! Latency is per record, in microseconds: from `send` to acknowledgement
//! for `produce`, and from the moment the record was sent (stamped in the
//! first 8 bytes of its value, microseconds since the epoch) to its arrival
//! at a consumer for `e2e`.

pub mod group;
pub mod parked;
pub mod report;
pub mod workload;
