//! Which skiff binary the tests and benchmarks start.

use std::path::PathBuf;

/// The binary cargo built alongside this test, or the one named by `SKIFF_TEST_BIN` (e.g. the
/// whole-program-optimised `target/dist/skiff` that ships, to benchmark exactly what users run).
pub fn skiff_bin() -> PathBuf {
    match std::env::var_os("SKIFF_TEST_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_skiff")),
    }
}
