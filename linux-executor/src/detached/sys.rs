//! The two mount API calls nix does not wrap: `open_tree(2)` and `mount_setattr(2)`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `open_tree(dir, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC [| AT_EMPTY_PATH])`, never
/// `AT_RECURSIVE`: a detached copy of the one mount at `path` (or at `dir` itself when
/// `path` is empty), without any mount below it.
pub(super) fn open_tree_clone(dir: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `dir` is a valid
    // borrowed descriptor; the kernel only reads them and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just installed `fd` in our table for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mount_setattr(mount, "", AT_EMPTY_PATH, {attr_set: set})`: sets mount attributes
/// (`MOUNT_ATTR_*`) on the mount `mount` refers to, not on any mount below it.
pub(super) fn mount_set_attrs(mount: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the kernel reads `size_of::<mount_attr>()` bytes from `&attr`, a live local of
    // that type, and the empty NUL-terminated path; `mount` is a valid borrowed descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
