//! The `skiff` binary: everything lives in the library; see `skiff::cli`.

/// mimalloc instead of the C library's allocator: musl's (the static release builds) is slow
/// under many threads, and glibc's kept hundreds of MiB of freed memory in its arenas. The
/// numbers are in BENCHMARKS.md. Building without the default `mimalloc` feature keeps the C
/// library's allocator, which heap profilers understand.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(skiff::cli::run());
}
