//! The test image: busybox-static (and the syscall probe, [`crate::probe`]) in an OCI layout
//! built with umoci, nothing downloaded.
//!
//! [`busybox`] builds the layout once per test process (a `OnceLock`) under
//! `<target>/amphi-e2e/busybox-<pid>-<random>/` and tars it; every daemon then imports the
//! tar as [`IMAGE`]. Build directories of processes that no longer run are removed by the
//! next build, so repeated runs do not pile up.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::command::run;
use crate::env::target_dir;

/// The image reference every case runs.
pub const IMAGE: &str = "localhost/busybox:test";
/// The `--base-name` given to `ctr image import`.
pub const IMAGE_BASE_NAME: &str = "localhost/busybox";
/// The tag of the single manifest in the layout (`org.opencontainers.image.ref.name`).
pub const IMAGE_TAG: &str = "test";
/// The busybox binary copied into the image.
pub const BUSYBOX: &str = "/bin/busybox";
/// `PATH` inside the image.
pub const IMAGE_PATH_ENV: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// Applets the cases use; each must be provided by the host's busybox.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "sleep", "env", "pwd", "touch", "head", "tail", "tr", "true",
    "false", "wc", "grep", "ps", "mount", "hostname", "readlink", "seq",
];

const UMOCI_TIMEOUT: Duration = Duration::from_secs(120);

/// A built busybox image.
#[derive(Debug)]
pub struct BusyboxImage {
    /// The OCI image layout directory (`umoci` form `<layout>:test`).
    pub layout: PathBuf,
    /// The layout as a tar archive, ready for `ctr image import`.
    pub tar: PathBuf,
    /// The unpacked root file system (for specs that name a rootfs path, `ctr run --config`).
    pub rootfs: PathBuf,
}

/// The busybox image of this process, built on first use.
pub fn busybox() -> &'static BusyboxImage {
    static IMAGE_CELL: OnceLock<BusyboxImage> = OnceLock::new();
    IMAGE_CELL.get_or_init(|| build_busybox(&target_dir().join("amphi-e2e")))
}

/// Builds the busybox image in a fresh directory under `parent`.
pub fn build_busybox(parent: &Path) -> BusyboxImage {
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    remove_stale_builds(parent);
    let dir = tempfile::Builder::new()
        .prefix(&format!("busybox-{}-", std::process::id()))
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("cannot create a build dir in {}: {e}", parent.display()))
        .keep();
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:{IMAGE_TAG}", layout.display());

    umoci(&["init", "--layout", path_str(&layout)]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--rootless", "--image", &image, path_str(&bundle)]);
    let rootfs = bundle.join("rootfs");
    populate_rootfs(&rootfs);
    umoci(&["repack", "--image", &image, path_str(&bundle)]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.env",
        IMAGE_PATH_ENV,
        "--config.workingdir",
        "/",
    ]);
    umoci(&["gc", "--layout", path_str(&layout)]);

    let tar = dir.join("busybox.tar");
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        UMOCI_TIMEOUT,
    )
    .expect_success("tar of the busybox OCI layout");
    BusyboxImage {
        layout,
        tar,
        rootfs,
    }
}

/// Copies busybox into `rootfs/bin` with a symlink for every applet it provides, and the
/// syscall probe ([`crate::probe`]).
fn populate_rootfs(rootfs: &Path) {
    let busybox = Path::new(BUSYBOX);
    assert!(
        busybox.is_file(),
        "{BUSYBOX} is missing: install busybox-static (`apt-get install -y busybox-static`)"
    );
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev", "data", "root"] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
    set_mode(&rootfs.join("tmp"), 0o1777);
    std::fs::copy(busybox, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} into {}: {e}", rootfs.display()));

    let list = run(Command::new(busybox).arg("--list"), Duration::from_secs(10))
        .expect_success("busybox --list");
    let applets: Vec<&str> = list
        .stdout
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    for needed in REQUIRED_APPLETS {
        assert!(
            applets.contains(needed),
            "{BUSYBOX} lacks the applet {needed:?} the tests need"
        );
    }
    for applet in applets {
        let link = rootfs.join("bin").join(applet);
        symlink("busybox", &link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }
    write(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    );
    write(&rootfs.join("etc/group"), "root:x:0:\n");
    write(&rootfs.join("etc/hostname"), "busybox\n");
    crate::probe::install(rootfs);
}

fn umoci(args: &[&str]) {
    let mut cmd = Command::new("umoci");
    cmd.args(args);
    run(&mut cmd, UMOCI_TIMEOUT)
        .expect_success("umoci (install it with `apt-get install -y umoci`)");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", p.display()))
}

/// Removes `busybox-<pid>-*` build directories whose process is gone.
fn remove_stale_builds(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("busybox-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies the image's root file system to `dest` (with `cp -a`, keeping the symlinks).
pub fn copy_rootfs(dest: &Path) {
    run(
        Command::new("cp")
            .arg("-a")
            .arg(&busybox().rootfs)
            .arg(dest),
        Duration::from_secs(60),
    )
    .expect_success("copy of the busybox rootfs");
}
