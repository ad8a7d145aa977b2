//! How the broker's heap treats memory it frees.
//!
//! Every frame a broker reads (a produce request, a batch of peer messages)
//! lands in a buffer of up to a few MiB that lives until its records are
//! written and replicated, and is then freed. glibc's allocator gives such
//! memory back to the kernel as soon as the free space at the top of a heap
//! passes a threshold (128 KiB at first, then twice the largest block it
//! has unmapped, at most 64 MiB): the next buffer is then built
//! of fresh pages, each one faulted in and zeroed by the kernel. On virtual
//! machines that hand free pages back to the host, every such page costs
//! more again. In replicated runs (W7b) keeping the memory instead saved
//! 3-10% of the brokers' CPU per MB, measured side by side.
//!
//! A broker's heap use is bounded by its queues and buffers, so it keeps
//! what it has freed for the next frame instead: the resident size of each
//! of glibc's arenas (one per thread that allocates, up to eight per core)
//! settles at that arena's high-water mark rather than following every
//! burst down and back up. Only glibc is tuned; other allocators keep their
//! own defaults.

/// Free space at the top of a heap the allocator keeps rather than returning
/// to the kernel, bytes. Larger than any of glibc's per-thread heaps (64
/// MiB), so the free top of such a heap is kept; the main heap keeps up to
/// this much.
pub const TRIM_THRESHOLD_BYTES: usize = 256 << 20;

/// Allocations at least this large get pages of their own (`mmap`), bytes:
/// glibc's maximum, 32 MiB. Every client request frame (16 MiB at most) and
/// every peer frame but the rare largest (up to 64 MiB; they aim at 4 MiB)
/// comes from the heap and is reused.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// The allocator refused a setting.
#[derive(Debug, thiserror::Error)]
#[error("the allocator refused {setting} = {value_bytes} bytes")]
pub struct HeapTuningError {
    /// Which setting.
    pub setting: &'static str,
    /// The value it refused, bytes.
    pub value_bytes: usize,
}

/// Makes the allocator keep freed memory for reuse (see the module docs).
/// Call it once, early; it affects the whole process.
pub fn keep_freed_memory() -> Result<(), HeapTuningError> {
    set(
        "trim threshold",
        platform::TRIM_THRESHOLD,
        TRIM_THRESHOLD_BYTES,
    )?;
    set(
        "mmap threshold",
        platform::MMAP_THRESHOLD,
        MMAP_THRESHOLD_BYTES,
    )
}

fn set(setting: &'static str, param: i32, value_bytes: usize) -> Result<(), HeapTuningError> {
    let refused = || HeapTuningError {
        setting,
        value_bytes,
    };
    let value = i32::try_from(value_bytes).map_err(|_| refused())?;
    if platform::mallopt(param, value) {
        Ok(())
    } else {
        Err(refused())
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod platform {
    pub(super) const TRIM_THRESHOLD: i32 = libc::M_TRIM_THRESHOLD;
    pub(super) const MMAP_THRESHOLD: i32 = libc::M_MMAP_THRESHOLD;

    pub(super) fn mallopt(param: i32, value: i32) -> bool {
        // SAFETY: mallopt takes two integers and is safe to call at any
        // time from any thread; it returns 1 on success.
        unsafe { libc::mallopt(param, value) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod platform {
    pub(super) const TRIM_THRESHOLD: i32 = 0;
    pub(super) const MMAP_THRESHOLD: i32 = 0;

    /// Not glibc: nothing to tune.
    pub(super) fn mallopt(_param: i32, _value: i32) -> bool {
        true
    }
}
