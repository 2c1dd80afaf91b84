//! Shared fixtures for the root integration tests: a busybox rootfs, a `ctr run`-like spec,
//! a tiny reaper standing in for the shim's, and a host mount-table check.
//!
//! Root tests take [`serial`] so only one container runs at a time: the test process makes
//! itself a child subreaper (as the shim does) and reaps with `waitpid(-1)`, which would
//! otherwise steal another test's exit status.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use amphi_linux_executor::launch::{self, Created, InitIo, LaunchError};
use amphi_linux_executor::plan::InitPlan;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub mod fork_watch;

pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "touch", "hostname", "wc", "grep", "sleep", "pwd", "mkdir",
    "readlink", "stat",
];

static LOCK: Mutex<()> = Mutex::new(());
static SUBREAPER: Once = Once::new();

/// Panics unless running as root (root tests are never skipped silently).
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "root_* tests need root: they create namespaces and mounts (CI runs them as root)"
    );
}

/// Serializes root tests and makes the test process a subreaper. Hold the guard for the
/// whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    require_root();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    SUBREAPER.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
    guard
}

/// A temp dir holding `rootfs/` with busybox and its applet symlinks.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
}

pub fn busybox_rootfs() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (install busybox-static)");
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).expect("chmod");
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", bin.join(applet)).expect("symlink applet");
    }
    for d in ["tmp", "etc", "root"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    Fixture { dir, rootfs }
}

/// The spec `ctr run` writes for busybox (resources trimmed), running `args`.
pub fn spec(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"],
                "effective": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"],
                "permitted": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "amphi-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

pub fn plan(spec: &Value, rootfs: &Path) -> InitPlan {
    let spec: oci_spec::runtime::Spec =
        serde_json::from_value(spec.clone()).expect("test spec parses");
    InitPlan::from_spec(&spec, rootfs).expect("test spec plans")
}

/// The test init binary (`init::main_with` and a fake Wasm runner).
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_amphi-test-init"))
}

/// The test init binary without a Wasm runner (`init::main`).
pub fn exe_without_wasm() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_amphi-test-init-nowasm"))
}

/// Pipes for stdout and stderr; the read ends stay here.
#[derive(Debug)]
pub struct Pipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub fn io_with_pipes() -> (InitIo, Pipes) {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    (
        InitIo {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        },
        Pipes {
            stdout: out_r,
            stderr: err_r,
        },
    )
}

/// Creates a container (no cgroup placement); checks that no mount below the fixture
/// directory became visible on the host, whether creation failed or not.
pub fn create(spec: &Value, rootfs: &Path) -> Result<(Created, Pipes), LaunchError> {
    create_plan(exe(), &plan(spec, rootfs))
}

/// [`create`] from a ready plan, with the init binary `exe`.
pub fn create_plan(exe: &Path, plan: &InitPlan) -> Result<(Created, Pipes), LaunchError> {
    let (io, pipes) = io_with_pipes();
    let fixture = plan.rootfs.parent().expect("rootfs has a parent");
    let created = no_mount_leak(fixture, || launch::create(exe, plan, io, &|_| Ok(())))?;
    Ok((created, pipes))
}

/// Reaps children (as the shim's global reaper would) until `pid` exits.
pub fn wait_exit(pid: i32, timeout: Duration) -> WaitStatus {
    let deadline = Instant::now() + timeout;
    let mut seen = HashMap::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => {
                assert!(
                    Instant::now() < deadline,
                    "pid {pid} did not exit within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(status) => {
                if let Some(p) = status.pid() {
                    if p.as_raw() == pid {
                        return status;
                    }
                    seen.insert(p.as_raw(), status);
                }
            }
            Err(e) => panic!("waitpid: {e}"),
        }
    }
}

pub fn read_all(fd: OwnedFd) -> String {
    let mut f = fs::File::from(fd);
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read pipe");
    s
}

/// What a finished container did.
#[derive(Debug)]
pub struct Outcome {
    pub status: WaitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        match self.status {
            WaitStatus::Exited(_, code) => code,
            other => panic!(
                "container did not exit normally: {other:?}; stderr: {}",
                self.stderr
            ),
        }
    }
}

/// Creates, starts and waits for a container.
pub fn run(spec: &Value, rootfs: &Path) -> Result<Outcome, LaunchError> {
    run_plan(&plan(spec, rootfs))
}

/// [`run`] from a ready plan.
pub fn run_plan(plan: &InitPlan) -> Result<Outcome, LaunchError> {
    let (created, pipes) = create_plan(exe(), plan)?;
    let pid = created.pid();
    let fixture = plan.rootfs.parent().expect("rootfs has a parent");
    let status = no_mount_leak(fixture, || {
        created.start()?;
        Ok::<_, LaunchError>(wait_exit(pid, Duration::from_secs(20)))
    })?;
    Ok(Outcome {
        status,
        stdout: read_all(pipes.stdout),
        stderr: read_all(pipes.stderr),
    })
}

/// Runs and expects exit 0, returning stdout.
pub fn run_ok(spec: &Value, rootfs: &Path) -> String {
    let out =
        run(spec, rootfs).unwrap_or_else(|e| panic!("container failed: {e} ({:?})", e.kind()));
    assert_eq!(
        out.code(),
        0,
        "stdout: {} stderr: {}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The host's mounts at or below `dir`, without ids (comparable across time). Only our own
/// paths are watched: other software on the host may mount and unmount concurrently.
pub fn host_mounts_under(dir: &Path) -> BTreeSet<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp.starts_with(&prefix))
        })
        .map(|l| l.split(' ').skip(4).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Runs `f` and asserts that no mount appeared or vanished below `dir` on the host (the
/// container's mounts must stay in its own mount namespace).
pub fn no_mount_leak<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let before = host_mounts_under(dir);
    let out = f();
    let after = host_mounts_under(dir);
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "host mounts changed: +{added:?} -{removed:?}"
    );
    out
}

/// Gives the rootfs to `uid:gid` (for user-namespace containers whose root is mapped).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("lchown");
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}
