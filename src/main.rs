//! The `skiff` binary: everything lives in the library; see `skiff::cli`.

/// mimalloc instead of the C library's allocator: musl's (the static release builds) is slow
/// under many threads, and glibc's kept hundreds of MiB of freed memory in its arenas. The
/// numbers are in BENCHMARKS.md. Building without the default `mimalloc` feature keeps the C
/// library's allocator, which heap profilers understand.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    #[cfg(feature = "mimalloc")]
    allocator_options();
    std::process::exit(skiff::cli::run());
}

/// Freed memory goes back to the system at once rather than being kept for reuse: freed pages
/// are purged without mimalloc's usual 10 ms delay, and the pages of threads that ended (the
/// blocking pool's) are purged and reclaimed instead of left abandoned. An idle agent held
/// 15 MiB of heap without this and 6.6-11 MiB with it; a server right after the API benchmark
/// 306 MiB against 187-206, with the same throughput (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
fn allocator_options() {
    // Option numbers of the mimalloc 2.x bundled by libmimalloc-sys 0.1.49 (`mi_option_e`).
    const ABANDONED_PAGE_PURGE: i32 = 12;
    const PURGE_DELAY: i32 = 15;
    const ABANDONED_RECLAIM_ON_FREE: i32 = 26;
    // SAFETY: setting options is allowed at any time; these are read when pages are freed.
    unsafe {
        libmimalloc_sys::mi_option_set(ABANDONED_PAGE_PURGE, 1);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(ABANDONED_RECLAIM_ON_FREE, 1);
    }
}
