//! The seam between the container init and a WebAssembly runtime living in another crate.
//!
//! This crate never depends on wasmtime: the binary that routes `init` (the shim) calls
//! [`super::main_with`] with a [`WasmRunner`]. For a [`Workload::Wasm`] plan the init
//! builds the sandbox exactly as for a native program, then:
//!
//! 1. in the helper, before entering any namespace: opens the compiled-module cache directory
//!    ([`open_cache_dir`]; a host path, usually root-owned `0700`, reachable only with the
//!    shim's credentials and mount view) and, for a module that is not in the container's
//!    filesystem (an image layer the shim wrote to a host file), that file
//!    ([`open_host_module`]); both become the runner's [`HostFiles`];
//! 2. after pivot_root, every mount, rlimits, and while still root: closes stray inherited
//!    fds, builds the [`WasmProcess`] and calls [`WasmRunner::prepare`], which reads the
//!    module inside the container's view and compiles it (or loads it from the cache). It
//!    runs as root because the cache directory belongs to the host's root, not to the
//!    container user; the module itself is read through the container's root, so root can
//!    reach nothing outside it. A prepare error fails `Create` (`InvalidArgument`,
//!    `NotFound`...);
//! 3. then the user, groups, capabilities and `no_new_privs` switch, umask, `chdir(cwd)`, all
//!    exactly as for `Exec`; `Ready`; the start barrier;
//! 4. on `Start` ([`super::run`]): default signal dispositions, the barrier socket is closed
//!    (its EOF is the shim's "started", as a successful `execve` is), and
//!    [`PreparedWasm::run`]'s status becomes the exit status of the container's PID 1.
//!
//! Limitations: the process stays non-dumpable for its whole life (it never execs); with a
//! user namespace the cache directory is opened with the shim's credentials but written with
//! the container root's, so a root-owned `0700` cache is read-only or unusable there and the
//! runner must cope (compile without caching). Preopens list mount destinations that are
//! directories; a mount nested below a read-only path keeps its own flag.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::error::InitError;
use crate::launch::ErrorKind;
use crate::plan::{InitPlan, MountKind, MountPlan, WasmWorkload, Workload};

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

/// A module compiled and ready to run, waiting for the start barrier.
pub trait PreparedWasm {
    /// Runs the module; the returned value is the container's exit status (the init
    /// `_exit`s with it). Called once, after the start barrier, as the container user.
    fn run(self: Box<Self>, process: &WasmProcess) -> i32;
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

/// What the init opened on the host, before entering any namespace, for the runner. Both
/// are handles on the host filesystem: a prepared job must keep neither.
#[derive(Debug, Default)]
pub struct HostFiles {
    /// The compiled-module cache directory (`O_DIRECTORY`, from `w.cache_dir`); `None` when
    /// unset or unavailable.
    pub cache_dir: Option<OwnedFd>,
    /// The module itself when it is not in the container's filesystem (`w.host_module`).
    pub module: Option<File>,
}

impl HostFiles {
    /// The module's bytes: from the host file the init opened when there is one (taken
    /// from `self`), else from `w.module` in the container (we are after pivot_root).
    pub fn read_module(&mut self, w: &WasmWorkload) -> std::io::Result<Vec<u8>> {
        match self.module.take() {
            Some(mut file) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes).map(|_| bytes)
            }
            None => std::fs::read(&w.module),
        }
    }

    /// The descriptors the init must keep open until `prepare`.
    pub(super) fn raw_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        let cache = self.cache_dir.as_ref().map(AsRawFd::as_raw_fd);
        let module = self.module.as_ref().map(AsRawFd::as_raw_fd);
        cache.into_iter().chain(module)
    }
}

/// The Wasm runtime the binary provides to [`super::main_with`].
pub trait WasmRunner {
    /// Called in the init after pivot_root and every mount, as root, before the identity
    /// switch and before `Ready`, so compile errors fail `Create`. Reads the module from
    /// `files.module` when set, else at `w.module` (a container path: a plain open, we are
    /// after pivot_root), and compiles it, or loads it from the cache directory
    /// `files.cache_dir`.
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

/// Opens the cache directory (a host path) with the helper's credentials and mount view.
/// A failure is not fatal: the module is then compiled without a cache (the warning says
/// why).
pub(super) fn open_cache_dir(w: &WasmWorkload) -> (Option<OwnedFd>, Option<String>) {
    let Some(dir) = &w.cache_dir else {
        return (None, None);
    };
    match open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => (Some(fd), None),
        Err(e) => (
            None,
            Some(format!(
                "compiled-module cache {}: {e}; compiling without it",
                dir.display()
            )),
        ),
    }
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
        assert!(matches!(open_cache_dir(&w), (None, None)));
        let dir = tempfile::tempdir().expect("tempdir");
        let (fd, warning) = open_cache_dir(&w.clone().with_cache(dir.path().into(), 1));
        assert!(fd.is_some() && warning.is_none());
        let (fd, warning) = open_cache_dir(&w.with_cache(dir.path().join("nope"), 1));
        assert!(fd.is_none());
        let warning = warning.expect("a warning");
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
