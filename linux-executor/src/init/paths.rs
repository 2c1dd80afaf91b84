//! Race-safe path handling inside the (untrusted) rootfs.
//!
//! Every container path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to an `O_PATH` handle on the rootfs ([`crate::rootfs_lookup::open_in_root`],
//! shared with the shim's pre-launch lookups), so `..` and symlinks (absolute or relative)
//! can never lead outside it. Mount targets are then named as `/proc/self/fd/N` of the
//! resolved handle, so what is mounted on is exactly what was checked (runc's fix for
//! CVE-2021-30465). Missing directories are created one component at a time with `mkdirat`
//! on an already-resolved parent.
//!
//! Limitations: needs openat2 (Linux 5.6); there is deliberately no string-path fallback.
//! `/proc/self/fd/N` requires the host `/proc` to be mounted in the helper's mount
//! namespace (true until pivot_root, which is when all of this runs).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};

use super::error::InitError;
use crate::rootfs_lookup::{open_in_root, relative};

/// The path of an fd through the helper's procfs, usable as a mount source or target.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// An `O_PATH` handle on a container path.
pub(super) fn open_path(root: BorrowedFd<'_>, path: &Path) -> nix::Result<OwnedFd> {
    open_in_root(root, path, OFlag::O_PATH)
}

/// Creates the directory `path` and its missing parents inside `root`; returns an `O_PATH`
/// handle on it.
pub(super) fn mkdir_all(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, InitError> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut current = PathBuf::from("/");
    let mut dir =
        open_in_root(root, &current, dir_flags).map_err(InitError::sys("open rootfs", "/"))?;
    for component in relative(path).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        current.push(name);
        dir = match open_in_root(root, &current, dir_flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(InitError::sys("mkdir in container", current.display())(e));
                    }
                }
                open_in_root(root, &current, dir_flags).map_err(InitError::sys(
                    "open new directory in container",
                    current.display(),
                ))?
            }
            Err(e) => {
                return Err(InitError::sys(
                    "open directory in container",
                    current.display(),
                )(e));
            }
        };
    }
    Ok(dir)
}

/// Makes sure a non-directory exists at `path` (an empty regular file is created when
/// nothing is there, never through a symlink); returns an `O_PATH` handle on it.
pub(super) fn ensure_file(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, InitError> {
    if let Ok(fd) = open_path(root, path) {
        return Ok(fd);
    }
    let parent_path = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or(OsStr::new("."));
    let parent = mkdir_all(root, parent_path)?;
    let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(&parent, name, flags, Mode::from_bits_truncate(0o644)) {
        Ok(fd) => drop(fd),
        Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(InitError::sys("create file in container", path.display())(
                e,
            ));
        }
    }
    open_path(root, path).map_err(InitError::sys("open file in container", path.display()))
}

/// Splits a container path into (O_PATH handle of its parent directory, file name),
/// creating the parent as needed.
pub(super) fn parent_and_name<'p>(
    root: BorrowedFd<'_>,
    path: &'p Path,
) -> Result<(OwnedFd, &'p OsStr), InitError> {
    let name = path
        .file_name()
        .ok_or_else(|| InitError::Invalid(format!("{} has no file name", path.display())))?;
    let parent = mkdir_all(root, path.parent().unwrap_or(Path::new("/")))?;
    Ok((parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{OFlag, open};
    use std::os::fd::AsFd;

    fn root_of(dir: &Path) -> OwnedFd {
        open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open root")
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let outside = tempfile::tempdir().expect("tempdir");
        let root_dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "x").expect("write");
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink("../../..", root_dir.path().join("up")).expect("symlink");
        let root = root_of(root_dir.path());
        // The absolute symlink is resolved inside the root, where its target does not exist.
        let err = open_path(root.as_fd(), &Path::new("/link").join("secret")).expect_err("escape");
        assert_eq!(err, Errno::ENOENT);
        // mkdir_all through a symlink pointing outside fails: the symlink dangles inside the
        // root, and nothing is created outside.
        assert!(mkdir_all(root.as_fd(), Path::new("/link/newdir")).is_err());
        assert!(!outside.path().join("newdir").exists());
        // An absolute symlink to a directory of the root is followed inside the root.
        std::fs::create_dir(root_dir.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink("/real", root_dir.path().join("abs")).expect("symlink");
        mkdir_all(root.as_fd(), Path::new("/abs/sub/dir")).expect("mkdir_all");
        assert!(root_dir.path().join("real/sub/dir").is_dir());
        // `..` is clamped at the root.
        let up = open_path(root.as_fd(), Path::new("/up")).expect("open /up");
        let real = std::fs::read_link(fd_path(&up)).expect("readlink");
        assert_eq!(real, root_dir.path());
    }

    #[test]
    fn ensure_file_creates_and_refuses_dangling_symlinks() {
        let root_dir = tempfile::tempdir().expect("tempdir");
        let root = root_of(root_dir.path());
        ensure_file(root.as_fd(), Path::new("/etc/hosts")).expect("create");
        assert!(root_dir.path().join("etc/hosts").is_file());
        std::os::unix::fs::symlink("/nowhere/x", root_dir.path().join("dangling"))
            .expect("symlink");
        assert!(ensure_file(root.as_fd(), Path::new("/dangling")).is_err());
        assert!(!Path::new("/nowhere").exists());
    }
}
