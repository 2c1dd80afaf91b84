//! What the suite reads from its environment: the runtime under test, the shim binary,
//! the target directory, and the root precondition.

use std::path::PathBuf;

/// The runtime type amphi registers with containerd.
pub const AMPHI_RUNTIME: &str = "io.containerd.amphi.v1";

/// The shim binary name containerd derives from [`AMPHI_RUNTIME`].
pub const SHIM_BINARY_NAME: &str = "containerd-shim-amphi-v1";

/// The runtime the end-to-end cases pass to `ctr run --runtime`.
///
/// `AMPHI_E2E_RUNTIME` overrides it, e.g. `io.containerd.runc.v2` to validate the harness
/// against the stock runc shim.
pub fn runtime() -> String {
    match std::env::var("AMPHI_E2E_RUNTIME") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => AMPHI_RUNTIME.to_string(),
    }
}

/// Whether the runtime under test is amphi (and so the amphi shim binary is required).
pub fn testing_amphi() -> bool {
    runtime() == AMPHI_RUNTIME
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative paths are taken from the
/// workspace root) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where the amphi shim binary is expected: `$AMPHI_SHIM`, else
/// `<target>/debug/containerd-shim-amphi-v1`, else (when that is absent, e.g. a target dir
/// set in a cargo config file) the shim next to the running test or demo executable
/// (`<target>/<profile>/deps/<test>` or `<target>/<profile>/amphi-demo`).
pub fn shim_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AMPHI_SHIM")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let default = target_dir().join("debug").join(SHIM_BINARY_NAME);
    if default.is_file() {
        return default;
    }
    let beside_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(SHIM_BINARY_NAME))
            .find(|p| p.is_file())
    });
    beside_exe.unwrap_or(default)
}

/// The amphi shim binary, or `None` when it is absent and the runtime under test is not
/// amphi. Panics when amphi is under test and the binary is missing.
pub fn shim_binary() -> Option<PathBuf> {
    let path = shim_path();
    if path.is_file() {
        return Some(path);
    }
    if testing_amphi() {
        panic!(
            "the amphi shim binary {} is missing: run `cargo build -p amphi-shim` first \
             (or set AMPHI_SHIM to the binary, or AMPHI_E2E_RUNTIME to test another runtime)",
            path.display()
        );
    }
    None
}

/// Panics unless the process runs as root: the end-to-end cases start containerd.
#[track_caller]
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "the amphi end-to-end tests start private containerd daemons and must run as root \
             (uid 0); run them with tests/run.sh as root"
        );
    }
}
