//! The init plan: everything the init helper needs to build a Linux container, as plain
//! data derived from the OCI runtime spec.
//!
//! Data flow: the shim calls [`InitPlan::from_spec`] with the container's `config.json` and
//! the absolute path of the rootfs it mounted. The result is validated, self-contained and
//! serializable; [`crate::launch`] sends it to the helper, and [`crate::init`] applies it
//! without ever looking at the spec again. Every spec error is found here, where it is cheap
//! to test, and reported as a [`PlanError`] naming the offending field.
//!
//! What the plan decides:
//! - namespaces: new or joined by path, user namespace first, duplicates rejected, a new
//!   mount namespace required (the rootfs switch must never touch the host's);
//! - mounts: option strings parsed into mount flags, propagation and filesystem data
//!   ([`mounts`]); default devices merged with `linux.devices`;
//! - the process: args, env, cwd, user, capabilities, rlimits ([`process`]);
//! - seccomp: default action, architectures, flags and rules ([`seccomp`]);
//! - the workload: always [`Workload::Exec`] here; the shim switches a container to a
//!   WebAssembly module with [`InitPlan::with_workload`] ([`workload`]);
//! - `warnings`: notes for the shim to log (capabilities the host cannot grant, seccomp
//!   syscall names the library does not know, which runc skips too).
//!
//! An exec into a running container reuses its container's plan: [`InitPlan::for_exec`] swaps
//! in the process planned from the exec's `Process` (same validation as the init's; the
//! container's seccomp filter is kept, as runc does), and the init helper joins the container's namespaces instead of building them
//! ([`InitPlan::exec_namespaces`]).
//!
//! Limitations: hooks, personality, I/O priority, scheduler, CPU affinity, Intel RDT and
//! time offsets are not implemented and are refused (INVALID_ARGUMENT naming the field),
//! never dropped; a missing `process.capabilities` means no capability at all (least privilege) rather than
//! runc's "keep everything".

mod devices;
mod mounts;
mod namespaces;
mod process;
mod seccomp;
#[cfg(test)]
mod tests;
mod workload;

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use devices::devices;
use namespaces::{check_id_mappings, id_mappings, namespaces};

pub use devices::{DeviceKind, DevicePlan};
pub use mounts::{MountKind, MountPlan, Propagation, PropagationKind};
pub use namespaces::{IdMapping, NamespaceKind, NamespacePlan, id_map_text};
pub use process::{CapabilitiesPlan, ProcessPlan, RlimitPlan, UserPlan, capability_from_name};
pub use process::{rlimit_resource, rlimit_resource_from_name};
pub use seccomp::plan as plan_seccomp;
pub use seccomp::{
    DEFAULT_ERRNO, SeccompAction, SeccompArg, SeccompFlags, SeccompPlan, SeccompRule,
};
pub use workload::{WasmWorkload, Workload, split_entrypoint};

/// Everything the init helper needs, validated. See the module docs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InitPlan {
    /// Absolute host path of the container's root filesystem (already mounted).
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub root_readonly: bool,
    /// Propagation applied recursively to `/` before the rootfs is set up.
    pub rootfs_propagation: Propagation,
    /// Namespaces in the order they are entered (user first).
    pub namespaces: Vec<NamespacePlan>,
    /// uid map written by the shim when a new user namespace is created.
    pub uid_mappings: Vec<IdMapping>,
    /// gid map written by the shim when a new user namespace is created.
    pub gid_mappings: Vec<IdMapping>,
    /// `mounts`, in order.
    pub mounts: Vec<MountPlan>,
    /// Whether `/dev` is ours to populate (false when the spec bind-mounts `/dev`).
    pub setup_dev: bool,
    /// Default devices merged with `linux.devices` (the spec wins on the same path).
    pub devices: Vec<DevicePlan>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<PathBuf>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<PathBuf>,
    /// `hostname` (needs a UTS namespace).
    pub hostname: Option<String>,
    /// `domainname` (needs a UTS namespace).
    pub domainname: Option<String>,
    /// `linux.sysctl`, sorted by name.
    pub sysctls: Vec<(String, String)>,
    /// The process to run.
    pub process: ProcessPlan,
    /// `linux.seccomp`: the filter loaded last, right before the workload runs (execs get
    /// the container's filter too).
    #[serde(default)]
    pub seccomp: Option<SeccompPlan>,
    /// What the init runs after the start barrier: `execve` (the default) or a Wasm module.
    #[serde(default)]
    pub workload: Workload,
    /// `linux.mountLabel` (non-empty): the SELinux context of the container's own mounts.
    #[serde(default)]
    pub mount_label: Option<String>,
    /// Spec features accepted but not applied; the shim logs them.
    pub warnings: Vec<String>,
}

/// A spec the executor cannot run. All variants are "invalid argument" errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The rootfs argument is not absolute.
    #[error("rootfs {0:?} must be an absolute path")]
    RelativeRootfs(PathBuf),
    /// `process` is absent.
    #[error("process is missing from the spec")]
    MissingProcess,
    /// `process.args` is absent or empty.
    #[error("process.args must not be empty")]
    EmptyArgs,
    /// `process.cwd` is not absolute.
    #[error("process.cwd {0:?} must be an absolute path")]
    RelativeCwd(PathBuf),
    /// `process.consoleSize` does not fit a terminal's window size.
    #[error("process.consoleSize: {height}x{width} is larger than a terminal (65535x65535)")]
    BadConsoleSize {
        /// Rows asked for.
        height: u64,
        /// Columns asked for.
        width: u64,
    },
    /// An env entry without `=`.
    #[error("process.env entry {0:?} is not of the form KEY=VALUE")]
    BadEnv(String),
    /// A string that will be passed to the kernel contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    NulByte(&'static str),
    /// A capability name the executor does not know.
    #[error("process.capabilities: unknown capability {0:?}")]
    UnknownCapability(String),
    /// An rlimit type the executor does not know.
    #[error("process.rlimits: unknown rlimit type {0:?}")]
    UnknownRlimit(String),
    /// The same rlimit type twice.
    #[error("process.rlimits: duplicate {0}")]
    DuplicateRlimit(String),
    /// soft > hard.
    #[error("process.rlimits: {name} soft limit {soft} is above its hard limit {hard}")]
    RlimitSoftAboveHard {
        /// The rlimit.
        name: String,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// `linux` is absent: no namespaces at all.
    #[error("linux is missing from the spec")]
    MissingLinux,
    /// The same namespace kind twice.
    #[error("linux.namespaces: duplicate {0} namespace")]
    DuplicateNamespace(&'static str),
    /// A namespace path is not absolute.
    #[error("linux.namespaces: {kind} namespace path {path:?} must be absolute")]
    RelativeNamespacePath {
        /// Namespace kind.
        kind: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// No new mount namespace.
    #[error("linux.namespaces: a new mount namespace (without path) is required")]
    MountNamespaceRequired,
    /// id mappings without a new user namespace, or a new user namespace without mappings.
    #[error("linux.uidMappings/gidMappings: {0}")]
    IdMappings(String),
    /// `hostname`/`domainname` without a UTS namespace.
    #[error("{0} is set but linux.namespaces has no uts namespace")]
    NameWithoutUts(&'static str),
    /// A mount destination is not absolute.
    #[error("mounts[{index}].destination {destination:?} must be an absolute path")]
    RelativeMountDestination {
        /// Index in `mounts`.
        index: usize,
        /// The destination given.
        destination: PathBuf,
    },
    /// A mount is invalid for another reason.
    #[error("mounts[{index}] ({destination:?}): {reason}")]
    BadMount {
        /// Index in `mounts`.
        index: usize,
        /// The destination.
        destination: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A path in a list field is not absolute or contains `..`.
    #[error("{field} entry {path:?} must be an absolute path without \"..\"")]
    BadPath {
        /// Field name.
        field: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A device entry is invalid.
    #[error("linux.devices entry {path:?}: {reason}")]
    BadDevice {
        /// The device path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The entrypoint of a Wasm workload is unusable.
    #[error("wasm entrypoint {entry:?}: {reason}")]
    BadWasmEntrypoint {
        /// The entrypoint given.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sysctl name is invalid.
    #[error("linux.sysctl: {0:?} is not a valid sysctl name")]
    BadSysctl(String),
    /// `linux.seccomp` cannot be honoured as written.
    #[error("{field}: {reason}")]
    Seccomp {
        /// The offending field (`linux.seccomp.syscalls[2].args[0].index`...).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A spec setting amphi does not implement: refused rather than ignored.
    #[error("{0} is not supported by amphi")]
    Unsupported(&'static str),
    /// `linux.rootfsPropagation` has an unknown value.
    #[error("linux.rootfsPropagation: unknown propagation {0:?}")]
    BadRootfsPropagation(String),
}

impl InitPlan {
    /// Builds and validates the plan. `rootfs`: absolute path of the container's root
    /// filesystem (already mounted by the shim).
    pub fn from_spec(spec: &Spec, rootfs: &Path) -> Result<InitPlan, PlanError> {
        if !rootfs.is_absolute() {
            return Err(PlanError::RelativeRootfs(rootfs.to_path_buf()));
        }
        let mut warnings = Vec::new();
        let linux = spec.linux().as_ref().ok_or(PlanError::MissingLinux)?;
        let process_spec = spec.process().as_ref().ok_or(PlanError::MissingProcess)?;

        let namespaces = namespaces(linux.namespaces().as_deref().unwrap_or_default())?;
        let has_ns = |kind| namespaces.iter().any(|n: &NamespacePlan| n.kind == kind);
        let new_userns = namespaces
            .iter()
            .any(|n| n.kind == NamespaceKind::User && n.path.is_none());
        let uid_mappings = id_mappings(linux.uid_mappings().as_deref());
        let gid_mappings = id_mappings(linux.gid_mappings().as_deref());

        let process = process::plan(process_spec, &mut warnings)?;
        check_id_mappings(new_userns, &uid_mappings, &gid_mappings, &process.user)?;

        let mounts = mounts::plan(spec.mounts().as_deref().unwrap_or_default())?;
        let setup_dev = !mounts.iter().any(|m| {
            m.destination == Path::new("/dev") && matches!(m.kind, MountKind::Bind { .. })
        });
        let devices = devices(linux.devices().as_deref().unwrap_or_default(), setup_dev)?;

        let hostname = non_empty(spec.hostname());
        let domainname = non_empty(spec.domainname());
        if hostname.is_some() && !has_ns(NamespaceKind::Uts) {
            return Err(PlanError::NameWithoutUts("hostname"));
        }
        if domainname.is_some() && !has_ns(NamespaceKind::Uts) {
            return Err(PlanError::NameWithoutUts("domainname"));
        }
        check_nul("hostname", hostname.iter().chain(domainname.iter()))?;

        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => Propagation {
                kind: PropagationKind::Slave,
                recursive: true,
            },
            Some(s) => mounts::propagation_option(s)
                .ok_or_else(|| PlanError::BadRootfsPropagation(s.to_string()))?,
        };

        let mut sysctls: Vec<(String, String)> = linux
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sysctls.sort();
        for (name, value) in &sysctls {
            let valid = !name.is_empty()
                && !name.contains('/')
                && !name.split('.').any(|part| part.is_empty() || part == "..");
            if !valid {
                return Err(PlanError::BadSysctl(name.clone()));
            }
            check_nul("linux.sysctl", [name, value])?;
        }

        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(|s| seccomp::plan(s, &mut warnings))
            .transpose()?;
        refuse_unsupported(spec)?;

        Ok(InitPlan {
            rootfs: rootfs.to_path_buf(),
            root_readonly: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            rootfs_propagation,
            namespaces,
            uid_mappings,
            gid_mappings,
            mounts,
            setup_dev,
            devices,
            masked_paths: container_paths("linux.maskedPaths", linux.masked_paths())?,
            readonly_paths: container_paths("linux.readonlyPaths", linux.readonly_paths())?,
            hostname,
            domainname,
            sysctls,
            process,
            seccomp,
            workload: Workload::Exec,
            mount_label: process::label(linux.mount_label(), "linux.mountLabel")?,
            warnings,
        })
    }

    /// The plan of a process exec'd into the running container this plan built: the same
    /// container (rootfs, namespaces, user namespace mappings, mounts: what the exec joins,
    /// and what a Wasm exec preopens), with `process` planned from the exec's spec the same
    /// way as the init's, a native workload (the shim may switch it with
    /// [`InitPlan::with_workload`]), and the exec's own warnings.
    pub fn for_exec(&self, process: &oci_spec::runtime::Process) -> Result<InitPlan, PlanError> {
        let mut warnings = Vec::new();
        let planned = process::plan(process, &mut warnings)?;
        check_id_mappings(
            self.creates_namespace(NamespaceKind::User),
            &self.uid_mappings,
            &self.gid_mappings,
            &planned.user,
        )?;
        refuse_unsupported_process(process)?;
        Ok(InitPlan {
            process: planned,
            workload: Workload::Exec,
            warnings,
            ..self.clone()
        })
    }

    /// The namespaces an exec joins: every namespace of the container's init, new or joined
    /// by path, user namespace first (the order of `namespaces`). Namespaces the spec does not
    /// list are the shim's own, which the exec helper already is in.
    pub fn exec_namespaces(&self) -> Vec<NamespaceKind> {
        self.namespaces.iter().map(|n| n.kind).collect()
    }

    /// The same plan running `workload` instead (the shim's dispatch decides).
    pub fn with_workload(mut self, workload: Workload) -> InitPlan {
        self.workload = workload;
        self
    }

    /// The namespace entry of `kind`, if the container has one (new or joined).
    pub fn namespace(&self, kind: NamespaceKind) -> Option<&NamespacePlan> {
        self.namespaces.iter().find(|n| n.kind == kind)
    }

    /// True when the container creates a new namespace of `kind`.
    pub fn creates_namespace(&self, kind: NamespaceKind) -> bool {
        self.namespace(kind).is_some_and(|n| n.path.is_none())
    }

    /// True when the container runs in a user namespace other than the shim's.
    pub fn in_user_namespace(&self) -> bool {
        self.namespace(NamespaceKind::User).is_some()
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|s| !s.is_empty()).cloned()
}

pub(crate) fn check_nul<'a>(
    field: &'static str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), PlanError> {
    if values.into_iter().any(|v| v.contains('\0')) {
        return Err(PlanError::NulByte(field));
    }
    Ok(())
}

/// True for an absolute path without `..` components.
pub(crate) fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
}

fn container_paths(
    field: &'static str,
    paths: &Option<Vec<String>>,
) -> Result<Vec<PathBuf>, PlanError> {
    let mut out = Vec::new();
    for p in paths.iter().flatten() {
        let path = PathBuf::from(p);
        if !is_clean_absolute(&path) {
            return Err(PlanError::BadPath { field, path });
        }
        check_nul(field, [p])?;
        out.push(path);
    }
    Ok(out)
}

/// Spec settings amphi cannot apply are refused, never dropped: each names its field.
fn refuse_unsupported(spec: &Spec) -> Result<(), PlanError> {
    if let Some(linux) = spec.linux() {
        if linux.personality().is_some() {
            return Err(PlanError::Unsupported("linux.personality"));
        }
        if linux.intel_rdt().is_some() {
            return Err(PlanError::Unsupported("linux.intelRdt"));
        }
        if linux.time_offsets().is_some() {
            return Err(PlanError::Unsupported("linux.timeOffsets"));
        }
    }
    if let Some(p) = spec.process() {
        refuse_unsupported_process(p)?;
    }
    if spec.hooks().is_some() {
        return Err(PlanError::Unsupported("hooks"));
    }
    Ok(())
}

/// The `process` settings amphi cannot apply (the init's and an exec's).
fn refuse_unsupported_process(p: &oci_spec::runtime::Process) -> Result<(), PlanError> {
    if p.io_priority().is_some() {
        return Err(PlanError::Unsupported("process.ioPriority"));
    }
    if p.scheduler().is_some() {
        return Err(PlanError::Unsupported("process.scheduler"));
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(PlanError::Unsupported("process.execCPUAffinity"));
    }
    Ok(())
}
