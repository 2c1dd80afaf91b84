//! The seam between the container init and a WebAssembly runtime living in another crate.
//!
//! This crate never depends on wasmtime: the binary that routes `init` (the shim) calls
//! [`super::main_with`] with a [`WasmRunner`]. For a [`Workload::Wasm`] plan the init
//! builds the sandbox exactly as for a native program, then:
//!
//! 1. in the helper, before entering any namespace: closes stray inherited fds, opens the
//!    compiled-module cache directory and a read-only detached clone of it
//!    ([`open_cache_dir`]; a host path, usually root-owned `0700`, reachable only with the
//!    shim's credentials and mount view) and, for a module that is not in the container's
//!    filesystem (an image layer the shim wrote to a host file), that file
//!    ([`open_host_module`]); with a handle on the container's root they become the
//!    runner's [`HostFiles`];
//! 2. still in the helper, **before it forks into the container's pid namespace** (a new
//!    container: before entering any namespace, with the rootfs the shim mounted as the
//!    root; an exec: after joining the container's namespaces, with its root), it checks it
//!    is single-threaded and calls [`WasmRunner::prepare`], which reads the module (resolved
//!    with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, regular files only) and compiles it,
//!    or loads it from the cache. The helper is in the container's cgroup (so compilation
//!    is charged to it) but in none of its pid namespaces: no process of the container can
//!    see, ptrace or take an fd from it. A prepare error fails `Create` (`InvalidArgument`,
//!    `NotFound`...). Every [`HostFiles`] handle is closed when `prepare` returns;
//! 3. the forked process sets up the container as for `Exec` (pivot_root, mounts, rlimits)
//!    and, still root, opens the guest's directories ([`open_guest_dirs`]: one detached,
//!    non-recursive clone per preopen, see [`crate::detached`]), then the user, groups,
//!    capabilities and `no_new_privs` switch, umask, `chdir(cwd)`; `Ready`; the start
//!    barrier;
//! 4. on `Start` ([`super::run`]): default signal dispositions, the barrier socket is closed
//!    (its EOF is the shim's "started", as a successful `execve` is), and
//!    [`PreparedWasm::run`]'s status becomes the exit status of the container's PID 1.
//!
//! The invariant for what stays open in the container's PID 1 (or Wasm exec): no handle on
//! a host directory, on the module file or on anything writable in the cache. The one
//! host handle that remains is the compiled artifact wasmtime maps (wasmtime keeps the
//! `File` of `deserialize_open_file` for the life of the mapping), and it was opened
//! through the read-only clone: reopening it, or its `/proc/<pid>/map_files` entry, for
//! writing fails with `EROFS`.
//!
//! Limitations: the process stays non-dumpable for its whole life (it never execs). A
//! module must be in the image's rootfs (or be an image layer): a new container's module is
//! read before its mounts exist, so a module inside a bind mount is not found. Preopens
//! list mount destinations that are directories; a mount nested below a read-only path
//! keeps its own flag.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

use super::error::InitError;
use crate::detached::{self, DetachedError};
use crate::launch::ErrorKind;
use crate::plan::{InitPlan, MountKind, MountPlan, WasmWorkload, Workload};
use crate::rootfs_lookup::open_in_root;

/// What the guest should see, derived from the plan's process and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmProcess {
    /// `process.args` (`args[0]` is the module path as the user wrote it).
    pub args: Vec<String>,
    /// `process.env`, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `process.cwd` (the init has already `chdir`ed there).
    pub cwd: String,
    /// Directories to preopen, as container paths (valid after pivot_root), with their
    /// read-only flag: `/` (`root.readonly`), then every directory mount destination except
    /// the system ones (`/proc`, `/sys`, `/dev` and below; proc, sysfs, cgroup, mqueue...).
    pub preopens: Vec<(PathBuf, bool)>,
}

/// One directory the guest may use: a detached, non-recursive clone of the mount at
/// `guest` (see [`crate::detached`]), made by the container init while still root.
#[derive(Debug)]
pub struct GuestDir {
    /// The container path, which is also the name the guest sees (`/`, `/data`...).
    pub guest: PathBuf,
    /// Whether the guest may only read (the clone is also mounted read-only).
    pub readonly: bool,
    /// The clone's root directory.
    pub dir: OwnedFd,
}

/// A module compiled and ready to run, waiting for the start barrier.
pub trait PreparedWasm {
    /// Runs the module; the returned value is the container's exit status (the init
    /// `_exit`s with it). Called once, after the start barrier, as the container user, with
    /// the guest's directories (in `process.preopens` order); no other path may be
    /// preopened.
    fn run(self: Box<Self>, process: &WasmProcess, dirs: Vec<GuestDir>) -> i32;
}

/// Why a module could not be prepared; reported to the shim as a failed `Create`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WasmPrepareError {
    /// How the shim reports it (`InvalidArgument` for a bad module, `NotFound` for a missing
    /// one...).
    pub kind: ErrorKind,
    /// The message, naming the module (`invalid WebAssembly module /x.wasm: ...`).
    pub message: String,
}

impl WasmPrepareError {
    /// A `NotFound` error.
    pub fn not_found(message: impl Into<String>) -> WasmPrepareError {
        WasmPrepareError {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// An `InvalidArgument` error.
    pub fn invalid(message: impl Into<String>) -> WasmPrepareError {
        WasmPrepareError {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
        }
    }
}

/// What the helper opened for the runner: handles on the host or on the container's root,
/// given to [`WasmRunner::prepare`] and closed when it returns. A prepared job must keep
/// none of them (the artifact it maps must come through `cache_view`).
#[derive(Debug, Default)]
pub struct HostFiles {
    /// The compiled-module cache directory (`O_DIRECTORY`, from `w.cache_dir`), for writing
    /// entries; `None` when unset or unavailable.
    pub cache_dir: Option<OwnedFd>,
    /// A read-only detached clone of the same directory: entries to map are opened through
    /// it, so no reopen of them can write. Set whenever `cache_dir` is.
    pub cache_view: Option<OwnedFd>,
    /// The module itself when it is not in the container's filesystem (`w.host_module`).
    pub module: Option<File>,
    /// The container's root (`O_PATH`): the rootfs the shim mounted for a new container,
    /// the joined container's `/` for an exec. `w.module` is resolved inside it.
    pub root: Option<OwnedFd>,
}

impl HostFiles {
    /// The module's bytes: from the host file the init opened when there is one (taken
    /// from `self`), else `w.module` resolved inside `root` (`RESOLVE_IN_ROOT |
    /// RESOLVE_NO_MAGICLINKS`: symlinks and `..` stay in the container's root; only a
    /// regular file is read).
    pub fn read_module(&mut self, w: &WasmWorkload) -> std::io::Result<Vec<u8>> {
        let mut file = match self.module.take() {
            Some(file) => file,
            None => {
                let root = self.root.as_ref().ok_or_else(|| {
                    std::io::Error::other("no container root to read the module from")
                })?;
                let fd = open_in_root(
                    root.as_fd(),
                    Path::new(&w.module),
                    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                )?;
                let st = fstat(&fd)?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{} is not a regular file", w.module),
                    ));
                }
                File::from(fd)
            }
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map(|_| bytes)
    }
}

/// The Wasm runtime the binary provides to [`super::main_with`].
pub trait WasmRunner {
    /// Called in the helper before it forks into the container's pid namespace (see the
    /// module docs, step 2), single-threaded, before `Ready`, so compile errors fail
    /// `Create`. Reads the module with [`HostFiles::read_module`] and compiles it, or loads
    /// it from the cache (`files.cache_dir` to write, `files.cache_view` to map from). Must
    /// not start a thread (the helper forks afterwards) and must keep no handle of `files`.
    fn prepare(
        &self,
        w: &WasmWorkload,
        files: HostFiles,
    ) -> Result<Box<dyn PreparedWasm>, WasmPrepareError>;
}

/// The Wasm workload of a plan with the runner that will run it (helper and container init).
pub(super) struct WasmInput<'a> {
    pub runner: &'a dyn WasmRunner,
    pub workload: &'a WasmWorkload,
    pub files: HostFiles,
}

/// Pairs the plan's workload with the binary's runner; an error for a Wasm plan in a binary
/// without one.
pub(super) fn wasm_input<'a>(
    plan: &'a InitPlan,
    runner: Option<&'a dyn WasmRunner>,
) -> Result<Option<WasmInput<'a>>, InitError> {
    let Workload::Wasm(workload) = &plan.workload else {
        return Ok(None);
    };
    let runner = runner.ok_or_else(|| InitError::Classified {
        kind: ErrorKind::Internal,
        message: "this binary cannot run WebAssembly".into(),
    })?;
    Ok(Some(WasmInput {
        runner,
        workload,
        files: HostFiles::default(),
    }))
}

/// Opens the host file of a module that is not in the container's filesystem
/// ([`WasmWorkload::host_module`]), with the helper's credentials and mount view. Unlike
/// the cache, the module is needed: a failure fails `Create`.
pub(super) fn open_host_module(w: &WasmWorkload) -> Result<Option<File>, InitError> {
    let Some(path) = &w.host_module else {
        return Ok(None);
    };
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map(|fd| Some(File::from(fd)))
        .map_err(|e| InitError::Classified {
            kind: if e == nix::errno::Errno::ENOENT {
                ErrorKind::NotFound
            } else {
                ErrorKind::Internal
            },
            message: format!("open {} ({}): {e}", path.display(), w.module),
        })
}

/// The cache directory and its read-only view, or why there is no cache.
pub(super) struct CacheDir {
    pub dir: Option<OwnedFd>,
    pub view: Option<OwnedFd>,
    pub warning: Option<String>,
}

/// Opens the cache directory (a host path) with the helper's credentials and mount view,
/// and a read-only detached clone of it ([`detached::read_only_view`]). A failure of either
/// is not fatal: the module is then compiled without a cache (the warning says why).
pub(super) fn open_cache_dir(w: &WasmWorkload) -> CacheDir {
    let Some(path) = &w.cache_dir else {
        return CacheDir {
            dir: None,
            view: None,
            warning: None,
        };
    };
    let opened = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.to_string())
    .and_then(|dir| {
        detached::read_only_view(dir.as_fd(), path)
            .map(|view| (dir, view))
            .map_err(|e| format!("read-only view: {e}"))
    });
    match opened {
        Ok((dir, view)) => CacheDir {
            dir: Some(dir),
            view: Some(view),
            warning: None,
        },
        Err(e) => CacheDir {
            dir: None,
            view: None,
            warning: Some(format!(
                "compiled-module cache {}: {e}; compiling without it",
                path.display()
            )),
        },
    }
}

/// Opens the container's root as a directory handle (`O_PATH`): `path` is the rootfs the
/// shim mounted (a new container) or `/` after joining the container (an exec).
pub(super) fn open_root(path: &Path) -> Result<OwnedFd, InitError> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", path.display()))
}

/// Fails unless this process has exactly one thread (`<proc>/self/task`, with `proc_` a
/// verified host procfs): the helper forks after `prepare`, and a fork of a threaded
/// process may only call async-signal-safe functions.
pub(super) fn assert_single_threaded(proc_: BorrowedFd<'_>) -> Result<(), InitError> {
    let tasks = nix::dir::Dir::openat(
        proc_,
        "self/task",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", "/proc/self/task"))?;
    let mut count = 0usize;
    for entry in tasks {
        let entry = entry.map_err(InitError::sys("read", "/proc/self/task"))?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            count += 1;
        }
    }
    if count != 1 {
        return Err(InitError::Classified {
            kind: ErrorKind::Internal,
            message: format!(
                "the WebAssembly runner left {count} threads in the init helper, which must \
                 fork single-threaded"
            ),
        });
    }
    Ok(())
}

/// Step 3 of the module docs: one detached, non-recursive clone per preopen of `process`
/// (container paths, after pivot_root, while still root). A preopen on a kernel interface
/// (procfs, sysfs, cgroupfs...) fails `Create` with `InvalidArgument`.
pub(super) fn open_guest_dirs(process: &WasmProcess) -> Result<Vec<GuestDir>, InitError> {
    process
        .preopens
        .iter()
        .map(|(path, readonly)| {
            detached::open_guest_dir(path, *readonly)
                .map(|dir| GuestDir {
                    guest: path.clone(),
                    readonly: *readonly,
                    dir,
                })
                .map_err(|e| match e {
                    DetachedError::RefusedFs { .. } => InitError::Invalid(e.to_string()),
                    DetachedError::Sys { .. } => InitError::Classified {
                        kind: ErrorKind::FailedPrecondition,
                        message: format!("cannot preopen a directory for the guest: {e}"),
                    },
                })
        })
        .collect()
}

/// Filesystems that are the system's business, never preopened for the guest.
const SYSTEM_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
];

fn is_guest_mount(m: &MountPlan) -> bool {
    let system_fs = match &m.kind {
        MountKind::Cgroup => true,
        MountKind::Fs { fstype, .. } => SYSTEM_FS.contains(&fstype.as_str()),
        MountKind::Bind { .. } => false,
    };
    let system_dir = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|d| m.destination.starts_with(d));
    !system_fs && !system_dir
}

impl WasmProcess {
    /// The guest's view of `plan`. `is_dir` tells whether a container path is a directory
    /// (after pivot_root: a plain `stat`); single-file mounts are not preopened. A
    /// destination mounted twice appears once, at its last position.
    pub(super) fn from_plan(plan: &InitPlan, is_dir: &dyn Fn(&Path) -> bool) -> WasmProcess {
        let mut preopens: Vec<(PathBuf, bool)> = vec![(PathBuf::from("/"), plan.root_readonly)];
        for m in plan.mounts.iter().filter(|m| is_guest_mount(m)) {
            if !is_dir(&m.destination) {
                continue;
            }
            preopens.retain(|(p, _)| *p != m.destination);
            preopens.push((m.destination.clone(), m.readonly()));
        }
        WasmProcess {
            args: plan.process.args.clone(),
            env: plan
                .process
                .env
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.clone(), String::new()),
                })
                .collect(),
            cwd: plan.process.cwd.to_string_lossy().into_owned(),
            preopens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(mounts: serde_json::Value, readonly: bool) -> InitPlan {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": readonly},
            "process": {"args": ["/app/x.wasm", "a b"], "cwd": "/work",
                "env": ["PATH=/bin", "EMPTY=", "EQ=a=b"], "user": {"uid": 0, "gid": 0}},
            "mounts": mounts,
            "linux": {"namespaces": [{"type": "mount"}]}
        }))
        .expect("spec parses");
        InitPlan::from_spec(&spec, Path::new("/rootfs")).expect("plans")
    }

    #[test]
    fn process_fields_come_from_the_plan() {
        let p = WasmProcess::from_plan(&plan(json!([]), true), &|_| true);
        assert_eq!(p.args, ["/app/x.wasm", "a b"]);
        assert_eq!(
            p.env,
            [
                ("PATH".to_string(), "/bin".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("EQ".to_string(), "a=b".to_string()),
            ]
        );
        assert_eq!(p.cwd, "/work");
        assert_eq!(p.preopens, [(PathBuf::from("/"), true)]);
    }

    #[test]
    fn preopens_are_the_guest_directory_mounts() {
        let mounts = json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["bind", "ro"]},
            {"destination": "/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/data", "type": "bind", "source": "/srv/other", "options": ["bind"]}
        ]);
        let p = WasmProcess::from_plan(&plan(mounts, false), &|p| p != Path::new("/etc/hosts"));
        assert_eq!(
            p.preopens,
            [
                (PathBuf::from("/"), false),
                (PathBuf::from("/run"), false),
                (PathBuf::from("/data"), false),
            ]
        );
    }

    #[test]
    fn a_wasm_plan_needs_a_runner() {
        struct Never;
        impl WasmRunner for Never {
            fn prepare(
                &self,
                _: &WasmWorkload,
                _: HostFiles,
            ) -> Result<Box<dyn PreparedWasm>, WasmPrepareError> {
                Err(WasmPrepareError::invalid("never"))
            }
        }
        let exec = plan(json!([]), false);
        assert!(
            wasm_input(&exec, None)
                .expect("exec needs nothing")
                .is_none()
        );
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(json!({"ociVersion": "1.0.2"})).expect("spec");
        let w = WasmWorkload::new("/app/x.wasm", None, &spec).expect("workload");
        let wasm = exec.with_workload(Workload::Wasm(w));
        let err = wasm_input(&wasm, None).err().expect("no runner");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.to_string(), "this binary cannot run WebAssembly");
        let input = wasm_input(&wasm, Some(&Never))
            .expect("runner")
            .expect("wasm");
        assert_eq!(input.workload.module, "/app/x.wasm");
    }

    #[test]
    fn cache_dir_open_failure_is_a_warning() {
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(json!({"ociVersion": "1.0.2"})).expect("spec");
        let w = WasmWorkload::new("/x.wasm", None, &spec).expect("workload");
        let none = open_cache_dir(&w);
        assert!(none.dir.is_none() && none.view.is_none() && none.warning.is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = open_cache_dir(&w.clone().with_cache(dir.path().into(), 1));
        // Root (open_tree) makes the view; without it the cache is off, with a warning.
        if nix::unistd::geteuid().is_root() {
            assert!(opened.dir.is_some() && opened.view.is_some() && opened.warning.is_none());
        } else {
            assert!(opened.dir.is_none() && opened.warning.is_some());
        }
        let missing = open_cache_dir(&w.with_cache(dir.path().join("nope"), 1));
        assert!(missing.dir.is_none() && missing.view.is_none());
        let warning = missing.warning.expect("a warning");
        assert!(
            warning.contains("nope") && warning.contains("compiling without it"),
            "{warning}"
        );
    }

    #[test]
    fn a_host_module_must_open() {
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(json!({"ociVersion": "1.0.2"})).expect("spec");
        let in_rootfs = WasmWorkload::new("/x.wasm", None, &spec).expect("workload");
        assert!(
            open_host_module(&in_rootfs)
                .expect("nothing to open")
                .is_none()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("layer.wasm");
        std::fs::write(&path, b"\0asm").expect("write");
        let w = WasmWorkload::from_host_file(path.clone(), "layer sha256:aa", None, &spec);
        let mut file = open_host_module(&w).expect("opens").expect("a file");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).expect("read");
        assert_eq!(bytes, b"\0asm");
        std::fs::remove_file(&path).expect("remove");
        let err = open_host_module(&w).expect_err("gone");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("layer sha256:aa"), "{err}");
    }
}
