//! The allocator of every process that trains: mimalloc, told to keep freed memory.
//!
//! Candle allocates a fresh buffer for every intermediate tensor and gradient, several
//! megabytes each at 1,000 stocks, and frees it a moment later. glibc's malloc handed
//! those pages back to the kernel and faulted them in again on the next step: page
//! faults, zeroing and TLB shoot-downs were most of the CPU time, and MLP training ran
//! 4-5x slower than with mimalloc. mimalloc itself still purges freed memory after a
//! delay (1 s); with purging off, PatchTST trains another ~10% faster
//! (`cargo bench -p wf-worker --bench train_throughput`). The price is that a process
//! keeps its peak memory until it exits, which suits a worker.
//!
//! A binary installs it with
//! `#[global_allocator] static ALLOCATOR: wf_worker::allocator::MiMalloc = MiMalloc;`
//! and calls [`keep_freed_memory`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (include/mimalloc.h; the Rust
/// bindings leave it out). A test checks that this index reads the option's default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to purge freed memory (purge delay −1).
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores one value in mimalloc's option table; it may be
    // called from any thread at any time, and the index is a valid option (tested).
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// Returns the memory freed so far to the system now, rather than after mimalloc's purge
/// delay: for a command between two stages, when the first one's data is gone and the
/// next allocates its own (`wf data prepare` at each stage after reading: the read
/// columns and the bars of a 10 M-row market otherwise lingered while the next stage
/// allocated, and the peak varied over 2,235-2,388 MiB from run to run). Purging at once everywhere (delay 0)
/// gave a steady 2,176-2,187 MiB but made computing the features 50% slower.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` frees mimalloc's cached, unused memory; it may be called from
    // any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_index_names_mimallocs_purge_delay() {
        // SAFETY: reading an option of mimalloc's table, by a valid index.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        // mimalloc 3's purge delay defaults to 1000 ms (src/options.c), which no option
        // next to it shares; MIMALLOC_PURGE_DELAY in the environment would change it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(default, 1000, "index {} is not the purge delay", super::PURGE_DELAY);
        }
        super::keep_freed_memory();
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) }, -1);
    }
}
