//! Populating the container's `/dev`: device nodes and the standard symlinks.
//!
//! Outside a user namespace the nodes are created with `mknodat` on a parent resolved inside
//! the rootfs (umask 0, then `fchownat` without following symlinks). In a user namespace
//! `mknod` is not allowed, so the host's node at the same path is bind-mounted onto an empty
//! file (runc's rootless behaviour). Then the symlinks the runtime spec requires:
//! `/dev/fd`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr` and `/dev/ptmx -> pts/ptmx`.
//!
//! `/dev/console` is created only with a terminal, as a bind of the pty slave
//! ([`super::console`]).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknodat, umask};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, symlinkat, unlinkat};

use super::error::InitError;
use super::paths::{fd_path, parent_and_name};
use super::rootfs::Ctx;
use crate::plan::{DeviceKind, DevicePlan};

const SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
];

/// Creates the plan's devices and the `/dev` symlinks.
pub(super) fn setup_dev(ctx: &Ctx<'_>) -> Result<(), InitError> {
    let old = umask(Mode::empty());
    let result = ctx
        .plan
        .devices
        .iter()
        .try_for_each(|d| create_device(ctx, d));
    umask(old);
    result?;
    for (target, name) in SYMLINKS {
        symlink(ctx, target, name, false)?;
    }
    symlink(ctx, "pts/ptmx", "ptmx", true)
}

fn symlink(ctx: &Ctx<'_>, target: &str, name: &str, replace: bool) -> Result<(), InitError> {
    let path = Path::new("/dev").join(name);
    let (dev, name) = parent_and_name(ctx.root(), &path)?;
    if replace {
        match unlinkat(&dev, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(InitError::sys("remove", path.display())(e)),
        }
    }
    match symlinkat(target, &dev, name) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(InitError::sys(
            format!("symlink {target} at"),
            path.display(),
        )(e)),
    }
}

/// A fresh empty regular file at the device path: whatever was there (a symlink the image
/// planted, an old node) is removed first, so the bind lands exactly on `/dev/<name>`.
fn empty_file(ctx: &Ctx<'_>, d: &DevicePlan) -> Result<OwnedFd, InitError> {
    let (parent, name) = parent_and_name(ctx.root(), &d.path)?;
    match unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(InitError::sys("remove existing", d.path.display())(e)),
    }
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    drop(
        openat(&parent, name, flags, Mode::from_bits_truncate(0o600)).map_err(InitError::sys(
            "create device placeholder",
            d.path.display(),
        ))?,
    );
    openat(
        &parent,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open device placeholder", d.path.display()))
}

fn create_device(ctx: &Ctx<'_>, d: &DevicePlan) -> Result<(), InitError> {
    if ctx.plan.in_user_namespace() {
        let target = empty_file(ctx, d)?;
        return mount(
            Some(&d.path),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(InitError::sys("bind host device on", d.path.display()));
    }
    let (parent, name) = parent_and_name(ctx.root(), &d.path)?;
    let kind = match d.kind {
        DeviceKind::Char => SFlag::S_IFCHR,
        DeviceKind::Block => SFlag::S_IFBLK,
        DeviceKind::Fifo => SFlag::S_IFIFO,
    };
    let perm = Mode::from_bits_truncate(d.mode);
    let dev = makedev(d.major, d.minor);
    match mknodat(&parent, name, kind, perm, dev) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(InitError::sys("replace existing device", d.path.display()))?;
            mknodat(&parent, name, kind, perm, dev)
                .map_err(InitError::sys("mknod", d.path.display()))?;
        }
        Err(e) => return Err(InitError::sys("mknod", d.path.display())(e)),
    }
    fchownat(
        &parent,
        name,
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(InitError::sys("chown device", d.path.display()))
}
