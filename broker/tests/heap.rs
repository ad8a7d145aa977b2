//! The broker's heap keeps what it frees (`rill_broker::heap`): a burst of
//! frame-sized buffers freed together comes back for the next burst without
//! the kernel faulting in and zeroing fresh pages.
//!
//! A file of its own: the setting is process-wide, and this test must see
//! the allocator as the broker does.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::hint::black_box;

use rill_broker::heap::keep_freed_memory;

/// Frame buffers alive at once in a burst.
const BUFFERS_PER_BURST: usize = 16;
/// Frames vary in size, here from 1 MiB to 7 MiB: a burst never fits
/// exactly into the memory the one before it freed.
const BUFFER_BYTES_MIN: usize = 1 << 20;
const BUFFER_BYTES_SPREAD: usize = 6 << 20;

/// Minor page faults taken by the calling thread so far.
fn minor_faults_of_this_thread() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    usage.ru_minflt
}

/// Allocates and fills burst number `n`'s buffers, then frees them all.
/// Returns the bytes written.
fn burst(n: usize) -> usize {
    let buffers: Vec<Vec<u8>> = (0..BUFFERS_PER_BURST)
        .map(|i| {
            let len = BUFFER_BYTES_MIN + (i * 7_919 + n * 104_729) % BUFFER_BYTES_SPREAD;
            let mut b = Vec::with_capacity(len);
            // Non-zero, so every page is written rather than left to calloc.
            b.resize(len, 1);
            b
        })
        .collect();
    black_box(&buffers);
    buffers.iter().map(Vec::len).sum()
}

#[test]
fn buffers_freed_in_a_burst_are_reused_without_fresh_pages() {
    keep_freed_memory().expect("glibc accepts both thresholds");
    // The first burst takes fresh pages: the heap grows to its high-water
    // mark.
    burst(0);
    let before = minor_faults_of_this_thread();
    let written_bytes: usize = (1..=6).map(burst).sum();
    let faults = minor_faults_of_this_thread() - before;
    // With glibc's default trimming, freed pages go back to the kernel and
    // come back one fault each: about 250 faults per MiB written, measured.
    // Kept, about 20 per MiB remain (the heap's high-water mark creeps up
    // as sizes vary).
    let faults_max = (written_bytes >> 20) as i64 * 64;
    assert!(
        faults < faults_max,
        "{faults} minor faults writing {written_bytes} bytes of reused buffers (at most {faults_max})"
    );
}
