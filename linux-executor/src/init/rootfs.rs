//! Building the container's filesystem view and switching root (container init, after the
//! fork, in the new mount namespace).
//!
//! Steps, in order:
//! 1. set the propagation of `/` (`linux.rootfsPropagation`, default `rslave`) so nothing
//!    we mount reaches the host (for `shared`/`rshared`, `/` becomes `rslave` here and the
//!    new root is made shared after step 6: its peers are the container's own mounts);
//! 2. bind the rootfs onto itself (pivot_root needs a mount point) and open it `O_PATH`;
//! 3. `mounts` in spec order ([`super::mounts`]), then `/dev` ([`super::devices`]); with
//!    `process.terminal`, the pty is allocated in the container's devpts and bound onto
//!    `/dev/console` ([`super::console`]);
//! 4. sysctls, written through the helper's verified procfs (they apply to the namespaces of
//!    the writer, which are the container's);
//! 5. masked paths (the host's `/dev/null`, checked to be char 1:3, bound over files; an
//!    empty read-only tmpfs over directories) and read-only paths (bind + read-only
//!    remount), all resolved inside the rootfs;
//! 6. `pivot_root(".", ".")`, then make the old root `rslave` and detach it, `chdir("/")`;
//! 7. `root.readonly`: remount `/` read-only.
//!
//! Limitations: a shared rootfs never propagates mounts back to the host (only the other
//! way); no chroot fallback (no ramfs rootfs).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstat, major, minor};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};
use nix::sys::statvfs::{FsFlags, fstatvfs};
use nix::unistd::{chdir, fchdir, pivot_root};

use super::console::{self, Pty};
use super::error::InitError;
use super::paths::{fd_path, open_path};
use super::{devices, mounts};
use crate::plan::{InitPlan, PropagationKind};

/// Handles the rootfs setup shares.
pub(super) struct Ctx<'a> {
    /// The plan.
    pub plan: &'a InitPlan,
    /// `O_PATH` handle on the rootfs mount (after the self-bind).
    pub root: OwnedFd,
    /// Notes for the shim's log.
    pub warnings: &'a mut Vec<String>,
    /// The host's LSMs (for `linux.mountLabel`).
    pub lsm: super::lsm::HostLsm,
}

impl Ctx<'_> {
    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Opens the helper's `/proc` and checks it is a procfs (the host's, inherited from the shim).
pub(super) fn open_host_proc() -> Result<OwnedFd, InitError> {
    let proc_ = open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", "/proc"))?;
    let fs = fstatfs(&proc_).map_err(InitError::sys("statfs", "/proc"))?;
    if fs.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(InitError::Invalid(
            "/proc of the shim is not a procfs".into(),
        ));
    }
    Ok(proc_)
}

/// Opens a file below the verified `/proc` handle for writing.
pub(super) fn open_proc_file(proc_: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, InitError> {
    openat(
        proc_,
        rel,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", format!("/proc/{rel}")))
}

/// Runs all the steps of the module docs; returns the terminal when the plan asks for one.
pub(super) fn setup(
    plan: &InitPlan,
    lsm: super::lsm::HostLsm,
    warnings: &mut Vec<String>,
) -> Result<Option<Pty>, InitError> {
    let proc_ = open_host_proc()?;
    let devnull = open_host_devnull()?;
    // A shared `/` would send our mounts to the host: `/` becomes a slave first, and the new
    // root is made shared after pivot_root (which refuses shared mounts).
    let shared = plan.rootfs_propagation.kind == PropagationKind::Shared;
    let root_flags = if shared {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        plan.rootfs_propagation.ms_flags()
    };
    mount(None::<&str>, "/", None::<&str>, root_flags, None::<&str>)
        .map_err(InitError::sys("set propagation of", "/"))?;
    mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(InitError::sys(
        "bind rootfs onto itself",
        plan.rootfs.display(),
    ))?;
    let root = open(
        &plan.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open rootfs", plan.rootfs.display()))?;
    let mut ctx = Ctx {
        plan,
        root,
        warnings,
        lsm,
    };

    for (index, m) in plan.mounts.iter().enumerate() {
        mounts::mount_one(&mut ctx, index, m)?;
    }
    if plan.setup_dev {
        devices::setup_dev(&ctx)?;
    }
    let pty = if plan.process.terminal {
        let pty = console::allocate(ctx.root())?;
        console::bind_console(ctx.root(), &pty)?;
        Some(pty)
    } else {
        None
    };
    write_sysctls(proc_.as_fd(), plan)?;
    for path in &plan.masked_paths {
        mask_path(&ctx, devnull.as_fd(), path)?;
    }
    for path in &plan.readonly_paths {
        readonly_path(&ctx, path)?;
    }
    switch_root(&ctx)?;
    if shared {
        let flags = plan.rootfs_propagation.ms_flags();
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(InitError::sys("make the new root shared", "/"))?;
    }
    if plan.root_readonly {
        let flags = locked_flags(Path::new("/"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        )
        .map_err(InitError::sys("remount read-only", "/ (root.readonly)"))?;
    }
    Ok(pty)
}

/// The host's `/dev/null`, verified to be the null device (CVE-2025-31133).
fn open_host_devnull() -> Result<OwnedFd, InitError> {
    let fd = open("/dev/null", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(InitError::sys("open", "/dev/null"))?;
    let st = fstat(&fd).map_err(InitError::sys("stat", "/dev/null"))?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_char || major(st.st_rdev) != 1 || minor(st.st_rdev) != 3 {
        return Err(InitError::Invalid(
            "/dev/null of the host is not the null device".into(),
        ));
    }
    Ok(fd)
}

/// Mount flags that a remount must keep (locked in a user namespace; harmless otherwise).
pub(super) fn locked_flags_of(fd: BorrowedFd<'_>, what: &Path) -> Result<MsFlags, InitError> {
    let vfs = fstatvfs(fd).map_err(InitError::sys("statvfs", what.display()))?;
    let f = vfs.flags();
    let mut out = MsFlags::empty();
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(st) {
            out |= ms;
        }
    }
    Ok(out)
}

fn locked_flags(path: &Path) -> Result<MsFlags, InitError> {
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(InitError::sys("open", path.display()))?;
    locked_flags_of(fd.as_fd(), path)
}

fn write_sysctls(proc_: BorrowedFd<'_>, plan: &InitPlan) -> Result<(), InitError> {
    for (name, value) in &plan.sysctls {
        let rel = format!("sys/{}", name.replace('.', "/"));
        let fd = match open_proc_file(proc_, &rel) {
            Err(InitError::Sys {
                source: Errno::ENOENT,
                ..
            }) => {
                return Err(InitError::Invalid(format!(
                    "linux.sysctl: {name} does not exist on this kernel (or is not namespaced)"
                )));
            }
            other => other?,
        };
        nix::unistd::write(&fd, value.as_bytes()).map_err(InitError::sys(
            format!("write sysctl {name}={value:?} to"),
            format!("/proc/{rel}"),
        ))?;
    }
    Ok(())
}

fn mask_path(ctx: &Ctx<'_>, devnull: BorrowedFd<'_>, path: &Path) -> Result<(), InitError> {
    let target = match open_path(ctx.root(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(InitError::sys("open masked path", path.display())(e)),
    };
    let st = fstat(&target).map_err(InitError::sys("stat masked path", path.display()))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    let result = if is_dir {
        mount(
            Some("tmpfs"),
            fd_path(&target).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0,mode=0555"),
        )
    } else {
        mount(
            Some(
                format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&devnull)
                )
                .as_str(),
            ),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.map_err(InitError::sys("mask", path.display()))
}

fn readonly_path(ctx: &Ctx<'_>, path: &Path) -> Result<(), InitError> {
    let target = match open_path(ctx.root(), path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(InitError::sys("open read-only path", path.display())(e)),
    };
    let p = fd_path(&target);
    mount(
        Some(p.as_str()),
        p.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(InitError::sys("bind read-only path", path.display()))?;
    let mounted = open_path(ctx.root(), path)
        .map_err(InitError::sys("reopen read-only path", path.display()))?;
    let flags = locked_flags_of(mounted.as_fd(), path)?;
    mount(
        None::<&str>,
        fd_path(&mounted).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | flags,
        None::<&str>,
    )
    .map_err(InitError::sys("remount read-only", path.display()))
}

fn switch_root(ctx: &Ctx<'_>) -> Result<(), InitError> {
    let rootfs = ctx.plan.rootfs.display();
    fchdir(ctx.root()).map_err(InitError::sys("chdir to rootfs", &rootfs))?;
    pivot_root(".", ".").map_err(InitError::sys("pivot_root into", &rootfs))?;
    // The old root is now stacked on ".": keep its unmount from propagating to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(InitError::sys("make old root rslave", "/"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(InitError::sys("detach old root", "/"))?;
    chdir("/").map_err(InitError::sys("chdir", "/"))
}
