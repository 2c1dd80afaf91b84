//! The executable that runs inside containers: a sealed view of our own binary, never the
//! host's file itself (runc CVE-2019-5736).
//!
//! Every init and exec helper is a re-exec of the shim's binary, and it runs inside the
//! container's namespaces: until `execve` for a Linux workload, for its whole life for a
//! WebAssembly one. A process in the container that can open `/proc/<pid>/exe` of such a
//! helper (root with `CAP_SYS_PTRACE`, which beats the non-dumpable flag) would otherwise hold
//! the host's `containerd-shim-amphi-v1`, and only `ETXTBSY` would stand between it and
//! overwriting the binary every later container runs.
//!
//! [`SealedExe::new`] makes, once per shim, a handle on the binary that cannot be written by
//! anyone, and helpers are executed through it (`/proc/self/fd/N`, so their
//! `/proc/<pid>/exe` is that handle):
//!
//! 1. **overlay** (preferred): a lower-only overlayfs (the binary's directory over an empty
//!    one), made with `fsopen`/`fsmount` as a *detached* mount that is never attached to any
//!    mount tree, mounted read-only, `nodev`, `nosuid`. A file of a lower-only overlay can
//!    never be opened for writing (`EROFS`), there is no way to reach the real file through
//!    it, and it costs nothing: overlayfs maps the lower file's own pages, so the helpers
//!    share the shim's page cache.
//! 2. **memfd** (fallback, when overlayfs or the new mount API is missing): a copy of the
//!    binary in a memfd sealed against writes, growth, shrinking and further seals
//!    (`F_SEAL_EXEC` too where the kernel has it). It costs one copy of the binary per shim.
//!
//! If neither works the shim refuses to create containers (see the shim's `Tasks`), rather
//! than run the host's file in them.
//!
//! Limitations: the overlay needs `CAP_SYS_ADMIN` in the initial user namespace (the shim
//! runs as root); the empty lower directory is made under `/run` and removed as soon as the
//! mount exists (the overlay keeps its own reference to it).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// The lowest descriptor number the sealed handle takes.
const FIRST_FD: i32 = 64;

/// How [`SealedExe`] seals the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// A file of a detached, lower-only, read-only overlayfs (zero copy).
    Overlay,
    /// A sealed memfd copy.
    Memfd,
}

impl std::fmt::Display for SealKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealKind::Overlay => "a read-only overlayfs view",
            SealKind::Memfd => "a sealed memfd copy",
        })
    }
}

/// Why the binary could not be sealed: both methods failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot seal {exe}: overlay: {overlay}; memfd: {memfd}")]
pub struct SealError {
    /// The binary.
    pub exe: PathBuf,
    /// Why the overlay failed.
    pub overlay: io::Error,
    /// Why the memfd copy failed.
    pub memfd: io::Error,
}

/// A sealed handle on the binary (see the module docs). Close-on-exec: a helper executed
/// through [`SealedExe::path`] does not keep it.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
    kind: SealKind,
    exe: PathBuf,
}

impl SealedExe {
    /// Seals `exe` (a real path, not `/proc/self/exe`: overlayfs needs the directory).
    pub fn new(exe: &Path) -> Result<SealedExe, SealError> {
        let sealed = match overlay(exe) {
            Ok(fd) => (fd, SealKind::Overlay),
            Err(overlay) => match memfd(exe) {
                Ok(fd) => (fd, SealKind::Memfd),
                Err(memfd) => {
                    return Err(SealError {
                        exe: exe.to_path_buf(),
                        overlay,
                        memfd,
                    });
                }
            },
        };
        // Out of the way of the descriptors the launcher maps into a helper (3 and 4), which
        // would replace it in the child before the exec that needs it.
        let fd = rustix::io::fcntl_dupfd_cloexec(&sealed.0, FIRST_FD).map_err(|e| SealError {
            exe: exe.to_path_buf(),
            overlay: io::Error::from(e).with_context("dup the sealed handle"),
            memfd: io::Error::other("not tried"),
        })?;
        Ok(SealedExe {
            fd,
            kind: sealed.1,
            exe: exe.to_path_buf(),
        })
    }

    /// Seals the running binary (`/proc/self/exe`, resolved).
    pub fn current() -> Result<SealedExe, SealError> {
        let exe = std::fs::read_link("/proc/self/exe").map_err(|e| SealError {
            exe: PathBuf::from("/proc/self/exe"),
            overlay: io::Error::new(e.kind(), format!("readlink: {e}")),
            memfd: io::Error::new(e.kind(), format!("readlink: {e}")),
        })?;
        SealedExe::new(&exe)
    }

    /// The path to execute: `/proc/self/fd/N` of the sealed handle, valid in this process
    /// and in a child between fork and exec.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// How the binary is sealed.
    pub fn kind(&self) -> SealKind {
        self.kind
    }

    /// The binary that was sealed.
    pub fn original(&self) -> &Path {
        &self.exe
    }
}

impl AsFd for SealedExe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Escapes `:` and `\` for an overlayfs `lowerdir` list.
fn escape_lowerdir(path: &Path) -> String {
    path.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

fn overlay(exe: &Path) -> io::Result<OwnedFd> {
    let (dir, name) = match (exe.parent(), exe.file_name()) {
        (Some(dir), Some(name)) if exe.is_absolute() => (dir, name),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an absolute file path", exe.display()),
            ));
        }
    };
    let ctx = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| ctx_error("fsopen overlay", e))?;
    // A lower-only overlay needs two layers: the binary's directory on top of an empty one,
    // which only has to exist while the superblock is made.
    let empty = EmptyDir::new()?;
    let lower = format!("{}:{}", escape_lowerdir(dir), escape_lowerdir(&empty.0));
    rustix::mount::fsconfig_set_string(ctx.as_fd(), "lowerdir", &lower)
        .map_err(|e| ctx_error(&format!("overlay lowerdir={lower}"), e))?;
    // Only to keep dmesg quiet when the layers are on different filesystems.
    let _ = rustix::mount::fsconfig_set_string(ctx.as_fd(), "xino", "off");
    rustix::mount::fsconfig_create(ctx.as_fd()).map_err(|e| ctx_error("create overlay", e))?;
    let mnt = rustix::mount::fsmount(
        ctx.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(|e| ctx_error("fsmount overlay", e))?;
    drop(empty);
    let fd = rustix::fs::openat(
        mnt.as_fd(),
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::from(e).with_context(&format!("open {name:?} in the overlay of {dir:?}"))
    })?;
    check_executable(&fd, exe)?;
    Ok(fd)
}

fn memfd(exe: &Path) -> io::Result<OwnedFd> {
    let mut src = File::open(exe).map_err(|e| e.with_context(&format!("open {exe:?}")))?;
    let fd = rustix::fs::memfd_create(
        "containerd-shim-amphi-v1",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io::Error::from(e).with_context("memfd_create"))?;
    let mut dst = File::from(fd);
    io::copy(&mut src, &mut dst).map_err(|e| e.with_context("copy the binary into a memfd"))?;
    let fd = OwnedFd::from(dst);
    let seals = SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    // F_SEAL_EXEC (Linux 6.3) also freezes the mode bits; older kernels reject the flag.
    if rustix::fs::fcntl_add_seals(&fd, seals | SealFlags::EXEC).is_err() {
        rustix::fs::fcntl_add_seals(&fd, seals)
            .map_err(|e| io::Error::from(e).with_context("seal the memfd"))?;
    }
    check_executable(&fd, exe)?;
    Ok(fd)
}

/// The handle must be an executable regular file.
fn check_executable(fd: &OwnedFd, exe: &Path) -> io::Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| io::Error::from(e).with_context("fstat"))?;
    let mode = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if mode != rustix::fs::FileType::RegularFile || st.st_mode & 0o111 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the sealed handle of {exe:?} is not an executable file"),
        ));
    }
    Ok(())
}

fn ctx_error(what: &str, e: rustix::io::Errno) -> io::Error {
    io::Error::from(e).with_context(what)
}

/// A new empty directory under `/run` (unique to this process and instant), removed on
/// drop.
struct EmptyDir(PathBuf);

impl EmptyDir {
    fn new() -> io::Result<EmptyDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = Path::new("/run").join(format!("amphi-seal-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o500)
            .create(&dir)
            .map(|()| EmptyDir(dir.clone()))
            .map_err(|e| e.with_context(&format!("mkdir {dir:?}")))
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        // Nothing is ever created in it; the overlay keeps its own reference.
        let _ = std::fs::remove_dir(&self.0);
    }
}

trait WithContext {
    fn with_context(self, what: &str) -> io::Error;
}

impl WithContext for io::Error {
    fn with_context(self, what: &str) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escaping() {
        assert_eq!(escape_lowerdir(Path::new("/a:b\\c")), "/a\\:b\\\\c");
        assert_eq!(escape_lowerdir(Path::new("/usr/bin")), "/usr/bin");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(overlay(Path::new("bin/x")).is_err());
    }
}
