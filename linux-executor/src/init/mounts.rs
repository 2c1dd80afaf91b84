//! Performing one `mounts[]` entry inside the rootfs.
//!
//! The destination is resolved (and created) inside the rootfs with [`super::paths`], and
//! the mount is done onto `/proc/self/fd/N` of the resolved handle. Bind mounts whose
//! options ask for more than the bind itself (read-only, nosuid...) get the usual second
//! `MS_REMOUNT | MS_BIND` call; propagation options are applied last. In a user namespace,
//! `sysfs` and `mqueue` cannot always be mounted (their namespaces may belong to the host):
//! as runc does, they fall back to a recursive bind of the host's directory.
//!
//! Limitations: bind sources are host paths taken as given (the config is trusted); file
//! vs directory targets follow the source's type at the time of the mount.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use super::cgroupfs;
use super::error::InitError;
use super::paths::{ensure_file, fd_path, mkdir_all, open_path};
use super::rootfs::{Ctx, locked_flags_of};
use crate::plan::{MountKind, MountPlan};

/// Mounts `m` (entry `index` of `mounts`).
pub(super) fn mount_one(ctx: &mut Ctx<'_>, index: usize, m: &MountPlan) -> Result<(), InitError> {
    let dest = &m.destination;
    match &m.kind {
        MountKind::Bind { source, recursive } => bind(ctx, source, dest, *recursive, m.ms_flags())?,
        MountKind::Cgroup => cgroupfs::mount_cgroup(ctx, m)?,
        MountKind::Fs { fstype, source } => {
            let target = mkdir_all(ctx.root(), dest)?;
            let data = super::lsm::mount_data(m, ctx.plan, ctx.lsm);
            let data = (!data.is_empty()).then_some(data.as_str());
            let result = mount(
                Some(source.as_str()),
                fd_path(&target).as_str(),
                Some(fstype.as_str()),
                m.ms_flags(),
                data,
            );
            match result {
                Ok(()) => {}
                Err(Errno::EPERM)
                    if ctx.plan.in_user_namespace()
                        && (fstype == "sysfs" || fstype == "mqueue") =>
                {
                    ctx.warnings.push(format!(
                        "mounts[{index}]: {fstype} cannot be mounted in this user namespace; bound the host's {} instead",
                        dest.display()
                    ));
                    bind(ctx, dest, dest, true, m.ms_flags())?;
                }
                Err(e) => {
                    return Err(InitError::sys(
                        format!("mounts[{index}]: mount {fstype} on"),
                        dest.display(),
                    )(e));
                }
            }
        }
    }
    if let Some(p) = m.propagation {
        let mounted = reopen(ctx, dest)?;
        mount(
            None::<&str>,
            fd_path(&mounted).as_str(),
            None::<&str>,
            p.ms_flags(),
            None::<&str>,
        )
        .map_err(InitError::sys(
            format!("mounts[{index}]: set propagation of"),
            dest.display(),
        ))?;
    }
    Ok(())
}

/// Re-opens a destination after a mount, to get the new mount rather than the covered inode.
pub(super) fn reopen(ctx: &Ctx<'_>, dest: &Path) -> Result<OwnedFd, InitError> {
    open_path(ctx.root(), dest).map_err(InitError::sys("reopen mount point", dest.display()))
}

/// Binds host `source` on container `dest`, then remounts with `flags` when needed.
pub(super) fn bind(
    ctx: &Ctx<'_>,
    source: &Path,
    dest: &Path,
    recursive: bool,
    flags: MsFlags,
) -> Result<(), InitError> {
    let source_is_dir = std::fs::metadata(source)
        .map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            if errno == Errno::ENOENT {
                InitError::NotFound(format!(
                    "bind mount source {} does not exist",
                    source.display()
                ))
            } else {
                InitError::sys("stat bind mount source", source.display())(errno)
            }
        })?
        .is_dir();
    let target = if source_is_dir {
        mkdir_all(ctx.root(), dest)?
    } else {
        ensure_file(ctx.root(), dest)?
    };
    let mut bind_flags = MsFlags::MS_BIND;
    if recursive {
        bind_flags |= MsFlags::MS_REC;
    }
    mount(
        Some(source),
        fd_path(&target).as_str(),
        None::<&str>,
        bind_flags,
        None::<&str>,
    )
    .map_err(InitError::sys(
        format!("bind {} on", source.display()),
        dest.display(),
    ))?;
    let extra = flags.difference(MsFlags::MS_BIND | MsFlags::MS_REC);
    if extra.is_empty() {
        return Ok(());
    }
    let mounted = reopen(ctx, dest)?;
    let mut remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
    if ctx.plan.in_user_namespace() {
        remount |= locked_flags_of(mounted.as_fd(), dest)?;
    }
    mount(
        None::<&str>,
        fd_path(&mounted).as_str(),
        None::<&str>,
        remount,
        None::<&str>,
    )
    .map_err(InitError::sys(
        format!("remount bind ({remount:?})"),
        dest.display(),
    ))
}
