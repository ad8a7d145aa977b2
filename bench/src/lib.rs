//! rill-bench: the system benchmark.
//!
//! This crate will own: the `rill-bench` load generator (produce, consume and
//! end-to-end workloads over `rill-client`), its latency histograms and its
//! table and JSON reports. Micro-benchmarks of the storage engine live beside
//! it, in `storage/benches`.
