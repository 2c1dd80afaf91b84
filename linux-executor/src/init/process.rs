//! The process side of the container init: limits, identity, capabilities, working
//! directory and the executable, applied after the filesystem is in place.
//!
//! Order (security-lessons 1c item 6): oom_score_adj and rlimits while still privileged,
//! hostname, umask; then the capability bounding set is dropped, `PR_SET_KEEPCAPS`, groups,
//! gid, uid, then effective/inheritable/permitted, then ambient; `PR_SET_NO_NEW_PRIVS`; then
//! `chdir(cwd)` as the final user with a `getcwd` check; then `args[0]` is resolved against
//! the container's `PATH`. Every failure is classified: missing things are NotFound, missing
//! privileges PermissionDenied (naming the setting and capability).
//!
//! Limitations: capabilities the helper does not hold itself (e.g. `CAP_SYS_RESOURCE` on
//! hosts whose bounding set lacks it) are dropped from the requested sets with a warning, as
//! the runtime spec allows. The seccomp filter that follows NNP is loaded by the caller
//! ([`super::seccomp`]).

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit};
use nix::sys::stat::{Mode, SFlag, stat, umask};
use nix::unistd::{AccessFlags, Gid, Uid, access, chdir, getcwd, setgroups, setresgid, setresuid};

use super::error::InitError;
use super::rootfs::open_proc_file;
use crate::plan::{InitPlan, ProcessPlan, capability_from_name, rlimit_resource};
use crate::rootfs_lookup::DEFAULT_PATH;

fn host_lacks_sys_resource() -> bool {
    !caps::has_cap(None, CapSet::Bounding, Capability::CAP_SYS_RESOURCE).unwrap_or(false)
}

/// "`action` needs CAP_SYS_RESOURCE", saying whether the host can grant it at all.
fn sys_resource_reason(action: &str) -> String {
    if host_lacks_sys_resource() {
        format!(
            "{action} needs CAP_SYS_RESOURCE, which this host lacks (not in its capability bounding set)"
        )
    } else {
        format!("{action} needs CAP_SYS_RESOURCE")
    }
}

/// Writes `/proc/self/oom_score_adj` through the helper's verified procfs.
pub(super) fn set_oom_score_adj(
    proc_: BorrowedFd<'_>,
    plan: &ProcessPlan,
) -> Result<(), InitError> {
    let Some(value) = plan.oom_score_adj else {
        return Ok(());
    };
    let fd = open_proc_file(proc_, "self/oom_score_adj")?;
    match nix::unistd::write(&fd, value.to_string().as_bytes()) {
        Ok(_) => Ok(()),
        Err(Errno::EACCES | Errno::EPERM) => Err(InitError::Permission {
            setting: format!("oom_score_adj to {value}"),
            reason: sys_resource_reason("lowering oom_score_adj"),
        }),
        Err(e) => Err(InitError::sys(
            format!("write {value} to"),
            "/proc/self/oom_score_adj",
        )(e)),
    }
}

/// `setrlimit` for each planned rlimit.
pub(super) fn set_rlimits(plan: &ProcessPlan) -> Result<(), InitError> {
    for r in &plan.rlimits {
        let resource = rlimit_resource(r).ok_or_else(|| {
            InitError::Invalid(format!("process.rlimits: unknown rlimit type {:?}", r.name))
        })?;
        let setting = format!("{} to soft={} hard={}", r.name, r.soft, r.hard);
        match setrlimit(resource, r.soft, r.hard) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let current = getrlimit(resource)
                    .map(|(_, hard)| hard.to_string())
                    .unwrap_or_default();
                return Err(InitError::Permission {
                    setting,
                    reason: sys_resource_reason(&format!(
                        "raising the hard limit above the current {current}"
                    )),
                });
            }
            Err(Errno::EINVAL) => {
                return Err(InitError::Invalid(format!(
                    "cannot set {setting}: the kernel rejects the value (EINVAL)"
                )));
            }
            Err(e) => return Err(InitError::sys("setrlimit", &r.name)(e)),
        }
    }
    Ok(())
}

/// hostname and domainname (the plan guarantees a UTS namespace). The domain name is
/// written through the helper's procfs: `kernel.domainname` belongs to the writer's UTS
/// namespace, and the container's own `/proc/sys` is read-only later.
pub(super) fn set_names(proc_: BorrowedFd<'_>, plan: &InitPlan) -> Result<(), InitError> {
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).map_err(InitError::sys("sethostname", h))?;
    }
    if let Some(d) = &plan.domainname {
        let fd = open_proc_file(proc_, "sys/kernel/domainname")?;
        nix::unistd::write(&fd, d.as_bytes()).map_err(InitError::sys(
            format!("write domainname {d:?} to"),
            "/proc/sys/kernel/domainname",
        ))?;
    }
    Ok(())
}

fn cap_set(names: &[String]) -> Result<CapsHashSet, InitError> {
    names
        .iter()
        .map(|n| capability_from_name(n).map_err(|e| InitError::Invalid(e.to_string())))
        .collect()
}

fn caps_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> InitError + '_ {
    move |e| InitError::Invalid(format!("capabilities: {what}: {e}"))
}

/// Drops the bounding set, switches uid/gid/groups, sets the capability sets and NNP.
pub(super) fn switch_identity(
    plan: &InitPlan,
    warnings: &mut Vec<String>,
) -> Result<(), InitError> {
    let p = &plan.process;
    let wanted = &p.capabilities;
    let bounding = cap_set(&wanted.bounding)?;
    let held = caps::read(None, CapSet::Permitted).map_err(caps_err("read permitted set"))?;
    let available = |set: CapsHashSet, warnings: &mut Vec<String>| -> CapsHashSet {
        let (ok, missing): (CapsHashSet, CapsHashSet) =
            set.into_iter().partition(|c| held.contains(c));
        let mut missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
        missing.sort();
        for m in missing {
            let note = format!("capability {m} is not available on this host and was dropped");
            if !warnings.contains(&note) {
                warnings.push(note);
            }
        }
        ok
    };
    let effective = available(cap_set(&wanted.effective)?, warnings);
    let permitted = available(cap_set(&wanted.permitted)?, warnings);
    let inheritable = available(cap_set(&wanted.inheritable)?, warnings);
    let ambient = available(cap_set(&wanted.ambient)?, warnings);

    for cap in caps::all() {
        if !bounding.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop from bounding set"))?;
        }
    }
    prctl::set_keepcaps(true).map_err(InitError::sys("prctl", "PR_SET_KEEPCAPS"))?;
    let groups: Vec<Gid> = p
        .user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match setgroups(&groups) {
        Ok(()) => {}
        // A joined user namespace may have setgroups denied; an empty list is then moot.
        Err(Errno::EPERM) if groups.is_empty() && plan.in_user_namespace() => {}
        Err(e) => {
            return Err(InitError::sys(
                "setgroups",
                format!("{:?}", p.user.additional_gids),
            )(e));
        }
    }
    let gid = Gid::from_raw(p.user.gid);
    setresgid(gid, gid, gid).map_err(InitError::sys("setresgid", p.user.gid))?;
    let uid = Uid::from_raw(p.user.uid);
    setresuid(uid, uid, uid).map_err(InitError::sys("setresuid", p.user.uid))?;

    caps::set(None, CapSet::Effective, &effective).map_err(caps_err("set effective set"))?;
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(caps_err("set inheritable set"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(caps_err("set permitted set"))?;
    prctl::set_keepcaps(false).map_err(InitError::sys("prctl", "PR_SET_KEEPCAPS"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient set"))?;
    let mut ambient: Vec<Capability> = ambient
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    ambient.sort_by_key(|c| c.index());
    for cap in ambient {
        caps::raise(None, CapSet::Ambient, cap).map_err(caps_err("raise ambient capability"))?;
    }
    if p.no_new_privileges {
        prctl::set_no_new_privs().map_err(InitError::sys("prctl", "PR_SET_NO_NEW_PRIVS"))?;
    }
    Ok(())
}

/// umask, if the spec sets one.
pub(super) fn set_umask(plan: &ProcessPlan) {
    if let Some(mask) = plan.user.umask {
        umask(Mode::from_bits_truncate(mask));
    }
}

/// `chdir(cwd)` and the CVE-2024-21626 `getcwd` check.
pub(super) fn enter_cwd(plan: &ProcessPlan) -> Result<(), InitError> {
    let cwd = &plan.cwd;
    match chdir(cwd) {
        Ok(()) => {}
        Err(Errno::ENOENT | Errno::ENOTDIR) => {
            return Err(InitError::NotFound(format!(
                "cwd {:?} does not exist in the container or is not a directory",
                cwd.display().to_string()
            )));
        }
        Err(Errno::EACCES) => {
            return Err(InitError::Denied(format!(
                "cwd {:?}: permission denied for uid {}",
                cwd.display().to_string(),
                plan.user.uid
            )));
        }
        Err(e) => return Err(InitError::sys("chdir to cwd", cwd.display())(e)),
    }
    match getcwd() {
        Ok(actual) if actual.is_absolute() => Ok(()),
        Ok(actual) => Err(InitError::Invalid(format!(
            "cwd {:?} resolves outside the container ({})",
            cwd.display().to_string(),
            actual.display()
        ))),
        Err(e) => Err(InitError::sys("getcwd after chdir to", cwd.display())(e)),
    }
}

/// Finds the executable for `args[0]` the way `execvp` would, as the final user.
pub(super) fn resolve_executable(plan: &ProcessPlan) -> Result<CString, InitError> {
    let name = &plan.args[0];
    let found = if name.contains('/') {
        check_executable(Path::new(name))?.ok_or_else(|| {
            InitError::NotFound(format!("executable {name:?} not found in the container"))
        })?
    } else {
        let search = plan.path_env().unwrap_or(DEFAULT_PATH);
        let mut found = None;
        for dir in search.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            if let Some(p) = check_executable(&Path::new(dir).join(name))? {
                found = Some(p);
                break;
            }
        }
        found.ok_or_else(|| {
            InitError::NotFound(format!(
                "executable {name:?} not found in $PATH of the container"
            ))
        })?
    };
    CString::new(found.into_os_string().into_encoded_bytes())
        .map_err(|_| InitError::Invalid(format!("executable path of {name:?} contains a NUL byte")))
}

/// `Ok(Some)` for an executable regular file, `Ok(None)` when absent, an error when it
/// exists but cannot be executed.
fn check_executable(path: &Path) -> Result<Option<PathBuf>, InitError> {
    let st = match stat(path) {
        Ok(st) => st,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(Errno::EACCES) => {
            return Err(InitError::Denied(format!(
                "executable {:?}: permission denied",
                path.display().to_string()
            )));
        }
        Err(e) => return Err(InitError::sys("stat executable", path.display())(e)),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    match access(path, AccessFlags::X_OK) {
        Ok(()) => Ok(Some(path.to_path_buf())),
        Err(Errno::EACCES) => Err(InitError::Denied(format!(
            "executable {:?} is not executable by the container user",
            path.display().to_string()
        ))),
        Err(e) => Err(InitError::sys("access executable", path.display())(e)),
    }
}
