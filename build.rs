//! Embeds the commit and target triple for `skiff --version`, and generates the CRI v1 client
//! from `proto/` (parsed by protox, a pure-Rust protobuf compiler, so that cross builds need no
//! `protoc` on the build machine).
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The `.proto` files compiled into the binary, relative to `proto/`.
const PROTOS: &[&str] = &[
    "cri/v1/api.proto",
    "containerd/types/descriptor.proto",
    "containerd/services/content/v1/content.proto",
    "containerd/services/images/v1/images.proto",
    "containerd/services/leases/v1/leases.proto",
];

fn compile_protos() {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let files = match protox::compile(PROTOS, ["proto"]) {
        Ok(files) => files,
        Err(e) => panic!("compiling {PROTOS:?}: {e:?}"),
    };
    // Client stubs only: skiff calls the runtime, it never serves CRI or containerd's API. The connection is built
    // by `cri::client` (a unix socket), so the generated `connect` function is not wanted.
    if let Err(e) = tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(files)
    {
        panic!("generating the CRI client: {e}");
    }
}

fn main() {
    compile_protos();
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SKIFF_COMMIT={commit}");
    println!("cargo:rustc-env=SKIFF_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when this checkout's commit changes, and only then: watching every branch
    // would rebuild the whole crate whenever any other branch of the repository moves. In a
    // linked worktree `.git` is a file, so ask git where HEAD and the shared refs live.
    if let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) {
        let mut paths = vec![format!("{dir}/HEAD"), format!("{common}/packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            paths.push(format!("{common}/{branch}"));
        }
        // A path that does not exist would rerun the script every time.
        for path in paths {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
