//! Detached, non-recursive clones of one mount (`open_tree(OPEN_TREE_CLONE)` without
//! `AT_RECURSIVE`), with mount attributes set on the clone only (`mount_setattr`).
//!
//! Two uses, both about what a handle held by a WebAssembly container can reach:
//!
//! - **The guest's directories** ([`open_guest_dir`]): each WASI preopen (`/` and each
//!   directory mount) is a clone of that one mount. Mounts below it (`/proc`, `/sys`,
//!   `/dev`, `/run`...) are not in the clone, and `..` at the root of a detached mount
//!   stays there. Every clone is `nodev` and `nosuid` (a device node in the image or in a
//!   bind-mounted directory cannot be opened through it), read-only when asked, and a
//!   clone whose filesystem is a kernel interface ([`refused_fs`]: procfs, sysfs, cgroupfs,
//!   devpts...) is refused outright.
//! - **The compiled-module cache as the container sees it** ([`read_only_view`]): a
//!   read-only clone of the cache directory. A file opened through it, or mapped from such
//!   a file, can be reopened through `/proc/<pid>/fd` or `/proc/<pid>/map_files` only on
//!   that read-only mount, so a reopen for writing fails with `EROFS`.
//!
//! Limitations: needs Linux 5.12 (`mount_setattr`) and `CAP_SYS_ADMIN` over the caller's
//! mount namespace. The kernel refuses a non-recursive clone of a mount that has *locked*
//! submounts (mounts inherited from a more privileged mount namespace into a user
//! namespace) with `EINVAL`; the caller then fails with that error rather than preopening
//! the recursive tree. `devtmpfs` reports the tmpfs magic number, so it is not refused by
//! type; `nodev` is what keeps its nodes closed.

mod sys;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::statfs::{FsType, fstatfs};

/// Why a detached clone could not be made or may not be used.
#[derive(Debug, thiserror::Error)]
pub enum DetachedError {
    /// A syscall on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Sys {
        /// `open`, `open_tree`, `mount_setattr`, `statfs`.
        op: &'static str,
        /// The directory involved.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The directory is on a filesystem a guest must never be given.
    #[error("{} is a {fs} filesystem, which a WebAssembly guest may not open", path.display())]
    RefusedFs {
        /// The directory.
        path: PathBuf,
        /// The filesystem's name.
        fs: &'static str,
    },
}

/// Attributes every guest directory gets: device nodes cannot be opened, set-id bits mean
/// nothing.
const GUEST_ATTRS: u64 = libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID;

/// Filesystem magic numbers (`statfs.f_type`) of kernel interfaces a guest may never be
/// given, with their names. (libc's constants are `c_long`: the casts are no-ops on 64-bit
/// targets only.)
#[allow(clippy::unnecessary_cast)]
const REFUSED: &[(i64, &str)] = &[
    (libc::PROC_SUPER_MAGIC as i64, "proc"),
    (libc::SYSFS_MAGIC as i64, "sysfs"),
    (libc::CGROUP_SUPER_MAGIC as i64, "cgroup"),
    (libc::CGROUP2_SUPER_MAGIC as i64, "cgroup2"),
    (libc::DEVPTS_SUPER_MAGIC as i64, "devpts"),
    (0x1980_0202, "mqueue"),
    (libc::SECURITYFS_MAGIC as i64, "securityfs"),
    (libc::DEBUGFS_MAGIC as i64, "debugfs"),
    (libc::TRACEFS_MAGIC as i64, "tracefs"),
    (libc::BPF_FS_MAGIC as i64, "bpf"),
    (libc::NSFS_MAGIC as i64, "nsfs"),
    (0x6165_6d6d, "hugetlbfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6366_7364, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x5a3c_69f0, "pstore"),
    (0x6573_5546, "fusectl"),
];

/// The name of the kernel-interface filesystem with magic `f_type`, if it is one a guest
/// may not be given.
pub fn refused_fs(f_type: i64) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(magic, _)| *magic == f_type)
        .map(|(_, name)| *name)
}

fn fs_type(fd: BorrowedFd<'_>, path: &Path) -> Result<i64, DetachedError> {
    let st = fstatfs(fd).map_err(|e| sys_error("statfs", path, e.into()))?;
    let FsType(magic) = st.filesystem_type();
    // `__fsword_t` is i64 on 64-bit targets, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    Ok(i64::from(magic))
}

fn sys_error(op: &'static str, path: &Path, source: io::Error) -> DetachedError {
    DetachedError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A detached clone of the one mount at `path` (resolved from the caller's root), `nodev`,
/// `nosuid`, and read-only when `readonly`: a WASI preopen. Refuses kernel interfaces.
pub fn open_guest_dir(path: &Path, readonly: bool) -> Result<OwnedFd, DetachedError> {
    let dir = open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys_error("open", path, e.into()))?;
    if let Some(fs) = refused_fs(fs_type(dir.as_fd(), path)?) {
        return Err(DetachedError::RefusedFs {
            path: path.to_path_buf(),
            fs,
        });
    }
    let clone = sys::open_tree_clone(dir.as_fd(), Path::new(""))
        .map_err(|e| sys_error("open_tree", path, e))?;
    let mut attrs = GUEST_ATTRS;
    if readonly {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    sys::mount_set_attrs(clone.as_fd(), attrs).map_err(|e| sys_error("mount_setattr", path, e))?;
    // The clone is the same filesystem, checked again on the handle the guest will use.
    if let Some(fs) = refused_fs(fs_type(clone.as_fd(), path)?) {
        return Err(DetachedError::RefusedFs {
            path: path.to_path_buf(),
            fs,
        });
    }
    Ok(clone)
}

/// A read-only, `nodev`, `nosuid` detached clone of the directory `dir` (named `path` in
/// messages): files opened through it cannot be reopened for writing (`EROFS`).
pub fn read_only_view(dir: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, DetachedError> {
    let clone =
        sys::open_tree_clone(dir, Path::new("")).map_err(|e| sys_error("open_tree", path, e))?;
    sys::mount_set_attrs(clone.as_fd(), libc::MOUNT_ATTR_RDONLY | GUEST_ATTRS)
        .map_err(|e| sys_error("mount_setattr", path, e))?;
    Ok(clone)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::unnecessary_cast)] // casts: see `REFUSED`
mod tests {
    use super::*;

    #[test]
    fn kernel_interfaces_are_refused_and_ordinary_filesystems_are_not() {
        assert_eq!(refused_fs(libc::PROC_SUPER_MAGIC as i64), Some("proc"));
        assert_eq!(refused_fs(libc::SYSFS_MAGIC as i64), Some("sysfs"));
        assert_eq!(
            refused_fs(libc::CGROUP2_SUPER_MAGIC as i64),
            Some("cgroup2")
        );
        assert_eq!(refused_fs(libc::CGROUP_SUPER_MAGIC as i64), Some("cgroup"));
        assert_eq!(refused_fs(0x1980_0202), Some("mqueue"));
        for ordinary in [
            libc::TMPFS_MAGIC,
            libc::OVERLAYFS_SUPER_MAGIC,
            libc::EXT4_SUPER_MAGIC,
        ] {
            assert_eq!(refused_fs(ordinary as i64), None, "{ordinary:#x}");
        }
    }

    /// Needs root (`CAP_SYS_ADMIN`): run with the crate's other root tests.
    #[test]
    fn root_a_read_only_view_refuses_writes_through_a_reopen() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (open_tree, mount_setattr)");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("entry"), b"code").unwrap();
        let fd = open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let view = read_only_view(fd.as_fd(), dir.path()).unwrap();
        let file = nix::fcntl::openat(
            view.as_fd(),
            "entry",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&reopen)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert_eq!(std::fs::read(&reopen).unwrap(), b"code");
    }

    #[test]
    fn root_a_guest_dir_holds_no_submount_and_proc_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (open_tree, mount_setattr)");
        }
        let err = open_guest_dir(Path::new("/proc"), true).unwrap_err();
        assert!(
            matches!(err, DetachedError::RefusedFs { fs: "proc", .. }),
            "{err}"
        );
        // `/` without its submounts: /proc is the bare directory of the root filesystem.
        let root = open_guest_dir(Path::new("/"), true).unwrap();
        let proc_in_clone = nix::fcntl::openat(
            root.as_fd(),
            "proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_ne!(
            fs_type(proc_in_clone.as_fd(), Path::new("/proc")).unwrap(),
            libc::PROC_SUPER_MAGIC as i64
        );
        let up = nix::fcntl::openat(
            root.as_fd(),
            "../../..",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let a = nix::sys::stat::fstat(&up).unwrap();
        let b = nix::sys::stat::fstat(&root).unwrap();
        assert_eq!(
            (a.st_dev, a.st_ino),
            (b.st_dev, b.st_ino),
            "`..` left the clone"
        );
    }
}
