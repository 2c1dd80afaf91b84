//! The syscall probe: `tests/fixtures/probe/probe.c` (see its header for the subcommands),
//! compiled with `gcc -static -O2` once per test process, and installed in the busybox image
//! as `/probe` and `/probe-suid` (the same program, owned by root, mode 04755).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::command::run;
use crate::env::target_dir;

/// The probe's path in the test image.
pub const PROBE: &str = "/probe";
/// The setuid-root copy of the probe in the test image.
pub const PROBE_SUID: &str = "/probe-suid";

const GCC_TIMEOUT: Duration = Duration::from_secs(180);

/// The probe binary of this process, compiled on first use.
pub fn probe_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probe/probe.c");
        let dir = target_dir().join("amphi-e2e");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let out = dir.join(format!("probe-{}", std::process::id()));
        run(
            Command::new("gcc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(&source),
            GCC_TIMEOUT,
        )
        .expect_success(
            "gcc -static of tests/fixtures/probe/probe.c (apt-get install gcc libc6-dev)",
        );
        out
    })
}

/// Copies the probe into `rootfs` as [`PROBE`] and [`PROBE_SUID`].
pub fn install(rootfs: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let binary = probe_binary();
    for (name, mode) in [(PROBE, 0o755), (PROBE_SUID, 0o4755)] {
        let dest = rootfs.join(name.trim_start_matches('/'));
        std::fs::copy(binary, &dest)
            .unwrap_or_else(|e| panic!("copy the probe to {}: {e}", dest.display()));
        std::os::unix::fs::chown(&dest, Some(0), Some(0))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dest.display()));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dest.display()));
    }
}
