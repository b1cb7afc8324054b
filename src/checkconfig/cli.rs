//! `skiff check-config`: prints every check's line on stdout; exit code 1 when one failed.

use std::path::PathBuf;

use clap::Args;

use super::{RootedHost, Status};

/// `skiff check-config` flags.
#[derive(Args, Debug, Default)]
pub struct CheckConfigFlags {
    /// Read the host's files under DIR instead of / (a fixture tree, for tests)
    #[arg(long, env = super::ROOT_ENV, value_name = "DIR", hide = true)]
    pub root: Option<PathBuf>,
}

/// Runs the checks and prints them; returns the exit code.
pub fn run_blocking(flags: CheckConfigFlags) -> i32 {
    let host = match flags.root {
        Some(root) if !root.is_dir() => {
            eprintln!("skiff: invalid value \"{}\" for --root: not a folder", root.display());
            return 1;
        }
        Some(root) => RootedHost::at(root),
        None => RootedHost::real(),
    };
    let checks = super::all(&host);
    for c in &checks {
        println!("{c}");
    }
    if checks.iter().any(|c| c.status == Status::Fail) { 1 } else { 0 }
}
