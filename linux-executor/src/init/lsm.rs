//! Linux security module labels: `process.apparmorProfile`, `process.selinuxLabel` and
//! `linux.mountLabel`.
//!
//! Which LSMs the host has is read by the helper before it enters any namespace
//! ([`HostLsm::detect`], from the host's `/sys`), then, in the container init after the
//! rootfs is built and before the identity switch (runc's order: labels before
//! `no_new_privileges`), [`apply`] writes the process attributes:
//!
//! - AppArmor: `exec <profile>` to `attr/apparmor/exec` (or the older `attr/exec`), taking
//!   effect at `execve`; a WebAssembly workload never execs, so it gets
//!   `changeprofile <profile>` on `attr/apparmor/current` instead, which confines it at once.
//! - SELinux: the label to `attr/exec` (`setexeccon`), or for WebAssembly to `attr/current`
//!   (`setcon`, which the policy must allow as a dynamic transition).
//!
//! The attributes are written through a procfs instance of our own (`fsopen("proc")` +
//! `fsmount`, detached: it is in no mount tree, so nothing in the container can swap or
//! shadow it under us; runc CVE-2025-52881), never through the container's `/proc`.
//!
//! As runc: a profile or label the host cannot apply (its LSM is not enabled) fails
//! `Create` with FAILED_PRECONDITION naming the setting; `linux.mountLabel` adds
//! `context="<label>"` to the container's tmpfs, devpts and mqueue mounts when SELinux is
//! enabled and is not applied (a warning in the shim's log) when it is not.
//!
//! Limitations: no SELinux key-creation label (`attr/keycreate`); both LSMs are tested here
//! only in their absence (the CI host has neither).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use super::error::InitError;
use crate::launch::ErrorKind;
use crate::plan::{InitPlan, MountKind, MountPlan};

/// The LSMs enabled on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HostLsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostLsm {
    /// Reads the host's `/sys` (call before entering any namespace).
    pub(super) fn detect() -> HostLsm {
        let apparmor = Path::new("/sys/kernel/security/apparmor").exists()
            && std::fs::read("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.first() == Some(&b'Y'));
        let selinux = Path::new("/sys/fs/selinux/enforce").exists();
        HostLsm { apparmor, selinux }
    }
}

fn unavailable(setting: &str, value: &str, lsm: &str) -> InitError {
    InitError::Classified {
        kind: ErrorKind::FailedPrecondition,
        message: format!("{setting} {value:?} is set but {lsm} is not enabled on this host"),
    }
}

/// Fails early (before the container is built) when the plan asks for a label the host
/// cannot apply; notes an unusable `linux.mountLabel` in `warnings`.
pub(super) fn check(
    plan: &InitPlan,
    host: HostLsm,
    warnings: &mut Vec<String>,
) -> Result<(), InitError> {
    if let Some(profile) = &plan.process.apparmor_profile
        && !host.apparmor
    {
        return Err(unavailable("process.apparmorProfile", profile, "AppArmor"));
    }
    if let Some(label) = &plan.process.selinux_label
        && !host.selinux
    {
        return Err(unavailable("process.selinuxLabel", label, "SELinux"));
    }
    if let Some(label) = &plan.mount_label
        && !host.selinux
    {
        warnings.push(format!(
            "linux.mountLabel {label:?} is not applied: SELinux is not enabled on this host (as runc)"
        ));
    }
    Ok(())
}

/// The mount data of `m` with the SELinux mount label, where it applies.
pub(super) fn mount_data(m: &MountPlan, plan: &InitPlan, host: HostLsm) -> String {
    let labelled = matches!(&m.kind, MountKind::Fs { fstype, .. }
        if ["tmpfs", "devpts", "mqueue"].contains(&fstype.as_str()));
    match &plan.mount_label {
        Some(label) if host.selinux && labelled => {
            let context = format!("context=\"{label}\"");
            if m.data.is_empty() {
                context
            } else {
                format!("{},{context}", m.data)
            }
        }
        _ => m.data.clone(),
    }
}

/// Writes the process labels (see the module docs); `wasm`: the workload will not exec.
pub(super) fn apply(plan: &InitPlan, host: HostLsm, wasm: bool) -> Result<(), InitError> {
    let p = &plan.process;
    if p.apparmor_profile.is_none() && p.selinux_label.is_none() {
        return Ok(());
    }
    let proc_ = private_procfs()?;
    if let Some(profile) = &p.apparmor_profile {
        check(plan, host, &mut Vec::new())?;
        let (attr, value) = if wasm {
            ("current", format!("changeprofile {profile}"))
        } else {
            ("exec", format!("exec {profile}"))
        };
        let modern = format!("thread-self/attr/apparmor/{attr}");
        let legacy = format!("thread-self/attr/{attr}");
        write_attr(
            &proc_,
            &[&modern, &legacy],
            &value,
            "process.apparmorProfile",
        )?;
    }
    if let Some(label) = &p.selinux_label {
        check(plan, host, &mut Vec::new())?;
        let attr = if wasm { "current" } else { "exec" };
        let path = format!("thread-self/attr/{attr}");
        write_attr(&proc_, &[&path], label, "process.selinuxLabel")?;
    }
    Ok(())
}

/// A procfs of the container's pid namespace that only this process can reach.
fn private_procfs() -> Result<OwnedFd, InitError> {
    let sys = |op: &'static str| {
        move |e: rustix::io::Errno| {
            InitError::sys(op, "a private procfs")(Errno::from_raw(e.raw_os_error()))
        }
    };
    let ctx = rustix::mount::fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC).map_err(sys("fsopen"))?;
    rustix::mount::fsconfig_create(ctx.as_fd()).map_err(sys("fsconfig create"))?;
    rustix::mount::fsmount(
        ctx.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(sys("fsmount"))
}

/// Writes `value` to the first of `paths` (relative to `proc_`) that exists.
fn write_attr(
    proc_: &OwnedFd,
    paths: &[&str],
    value: &str,
    setting: &str,
) -> Result<(), InitError> {
    let mut last = Errno::ENOENT;
    for path in paths {
        match rustix::fs::openat(
            proc_,
            *path,
            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => {
                return rustix::io::write(&fd, value.as_bytes())
                    .map(|_| ())
                    .map_err(|e| InitError::Classified {
                        kind: ErrorKind::InvalidArgument,
                        message: format!(
                            "{setting}: the kernel refused {value:?} on /proc/{path}: {e}"
                        ),
                    });
            }
            Err(e) => last = Errno::from_raw(e.raw_os_error()),
        }
    }
    Err(InitError::sys(
        format!("open for {setting}"),
        format!("/proc/{}", paths[0]),
    )(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::InitPlan;

    fn plan_with(apparmor: Option<&str>, selinux: Option<&str>, mount: Option<&str>) -> InitPlan {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ],
            "linux": {"namespaces": [{"type": "mount"}]}
        }))
        .expect("spec");
        let mut plan = InitPlan::from_spec(&spec, Path::new("/rootfs")).expect("plan");
        plan.process.apparmor_profile = apparmor.map(str::to_string);
        plan.process.selinux_label = selinux.map(str::to_string);
        plan.mount_label = mount.map(str::to_string);
        plan
    }

    #[test]
    fn a_profile_without_its_lsm_is_refused_naming_it() {
        let none = HostLsm::default();
        let err = check(&plan_with(Some("p1"), None, None), none, &mut Vec::new())
            .expect_err("no AppArmor");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            "process.apparmorProfile \"p1\" is set but AppArmor is not enabled on this host"
        );
        let err = check(
            &plan_with(None, Some("system_u:system_r:c_t:s0"), None),
            none,
            &mut Vec::new(),
        )
        .expect_err("no SELinux");
        assert!(err.to_string().contains("SELinux is not enabled"), "{err}");
        let both = HostLsm {
            apparmor: true,
            selinux: true,
        };
        check(
            &plan_with(Some("p1"), Some("l"), Some("m")),
            both,
            &mut Vec::new(),
        )
        .expect("both enabled");
    }

    #[test]
    fn a_mount_label_without_selinux_is_a_warning_and_never_added() {
        let plan = plan_with(None, None, Some("system_u:object_r:c_file_t:s0"));
        let mut warnings = Vec::new();
        check(&plan, HostLsm::default(), &mut warnings).expect("not an error, as runc");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            mount_data(&plan.mounts[0], &plan, HostLsm::default()),
            "mode=755"
        );
    }

    #[test]
    fn the_mount_label_goes_on_tmpfs_but_not_on_proc() {
        let plan = plan_with(None, None, Some("system_u:object_r:c_file_t:s0"));
        let host = HostLsm {
            apparmor: false,
            selinux: true,
        };
        let dev = plan
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/dev"))
            .expect("/dev");
        let proc_ = plan
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/proc"))
            .expect("/proc");
        assert_eq!(
            mount_data(dev, &plan, host),
            "mode=755,context=\"system_u:object_r:c_file_t:s0\""
        );
        assert_eq!(mount_data(proc_, &plan, host), "");
    }
}
