//! Looking at files of an (untrusted) container rootfs from the host, race-safely.
//!
//! Every container path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to a handle on the rootfs, so `..` and symlinks (absolute or relative) are
//! clamped at the rootfs and can never lead to a host file. The init helper builds its mount
//! targets on [`open_in_root`] (see `init/paths.rs`); the shim uses [`read_head_in_root`] and
//! [`resolve_in_root`] before launching, to decide whether a container runs a native program
//! or a WebAssembly module (architecture.md, section 2, rule 4).
//!
//! Limitations: needs openat2 (Linux 5.6); there is deliberately no string-path fallback.
//! [`resolve_in_root`] cannot honour relative or empty `PATH` entries (they name the
//! container's cwd, unknown here) and skips them; it does not check that the container user
//! may execute the file (execvp in the init does).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

/// `PATH` used when the container's environment has none (the one runc and execvp use).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `path` relative to the container root ("." for "/").
pub(crate) fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Opens a container path inside `root` (`O_CLOEXEC` is always added).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root, &relative(path), how) {
            // openat2 asks to retry when a rename raced with the resolution.
            Err(Errno::EAGAIN) => continue,
            other => return other,
        }
    }
}

fn open_rootfs(rootfs: &Path) -> io::Result<OwnedFd> {
    open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn is_regular(fd: BorrowedFd<'_>) -> io::Result<(bool, u32)> {
    let st = fstat(fd).map_err(io::Error::from)?;
    let is_reg = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    Ok((is_reg, st.st_mode))
}

/// Reads up to `n` leading bytes of `path` (absolute, inside `rootfs`), resolving it safely
/// inside the rootfs (openat2 `RESOLVE_IN_ROOT`): symlinks cannot escape the rootfs.
///
/// Only regular files are read (a FIFO or device in the image could block or have side
/// effects): anything else is an `InvalidInput` error. A missing file is `NotFound`.
pub fn read_head_in_root(rootfs: &Path, path: &str, n: usize) -> io::Result<Vec<u8>> {
    if !path.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not an absolute path"),
        ));
    }
    let root = open_rootfs(rootfs)?;
    let fd = open_in_root(
        root.as_fd(),
        Path::new(path),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
    )
    .map_err(io::Error::from)?;
    if !is_regular(fd.as_fd())?.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path} is not a regular file"),
        ));
    }
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match nix::unistd::read(&fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Resolves a command name the way execvp would inside the container: a name with `/` is
/// returned as is; otherwise each directory of `path_env` (the container's `PATH`, the
/// default `PATH` when `None`) is tried inside the rootfs, and the first regular file with
/// any execute bit wins. `None` if not found (or the rootfs cannot be opened).
pub fn resolve_in_root(rootfs: &Path, name: &str, path_env: Option<&str>) -> Option<String> {
    if name.contains('/') {
        return Some(name.to_string());
    }
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    let root = open_rootfs(rootfs).ok()?;
    path_env
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .find(|candidate| {
            open_in_root(root.as_fd(), Path::new(candidate), OFlag::O_PATH)
                .ok()
                .and_then(|fd| is_regular(fd.as_fd()).ok())
                .is_some_and(|(reg, mode)| reg && mode & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// A rootfs with /etc/passwd, /bin/tool (executable), /bin/data (not executable) and
    /// /app/app.wasm.
    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for d in ["etc", "bin", "app", "usr/bin"] {
            fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        fs::write(r.join("etc/passwd"), "inside the rootfs\n").expect("write");
        fs::write(r.join("bin/tool"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(r.join("bin/tool"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(r.join("bin/data"), "x").expect("write");
        fs::set_permissions(r.join("bin/data"), fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::write(r.join("app/app.wasm"), b"\0asm\x01\0\0\0rest").expect("write");
        fs::set_permissions(r.join("app/app.wasm"), fs::Permissions::from_mode(0o744))
            .expect("chmod");
        dir
    }

    #[test]
    fn read_head_reads_at_most_n_bytes() {
        let dir = rootfs();
        let head = read_head_in_root(dir.path(), "/app/app.wasm", 8).expect("read");
        assert_eq!(head, b"\0asm\x01\0\0\0");
        let all = read_head_in_root(dir.path(), "/app/app.wasm", 100).expect("read");
        assert_eq!(all.len(), 12);
        assert!(
            read_head_in_root(dir.path(), "/app/app.wasm", 0)
                .expect("read")
                .is_empty()
        );
    }

    #[test]
    fn read_head_symlinks_stay_inside_the_rootfs() {
        let dir = rootfs();
        let r = dir.path();
        // Relative escape: clamped at the rootfs, so it reads the rootfs' own /etc/passwd.
        symlink("../../etc/passwd", r.join("app/link")).expect("symlink");
        let head = read_head_in_root(r, "/app/link", 64).expect("read");
        assert_eq!(head, b"inside the rootfs\n");
        // `..` in the path itself is clamped too.
        let head = read_head_in_root(r, "/../../../etc/passwd", 64).expect("read");
        assert_eq!(head, b"inside the rootfs\n");
        // An absolute link to a host file that the rootfs lacks is NotFound, not the host's.
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), "host secret").expect("write");
        symlink(outside.path().join("secret"), r.join("app/abs")).expect("symlink");
        let err = read_head_in_root(r, "/app/abs", 64).expect_err("must not reach the host");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn read_head_errors() {
        let dir = rootfs();
        let err = read_head_in_root(dir.path(), "/nope", 4).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = read_head_in_root(dir.path(), "/app", 4).expect_err("a directory");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = read_head_in_root(dir.path(), "app/app.wasm", 4).expect_err("relative");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        nix::unistd::mkfifo(
            &dir.path().join("app/fifo"),
            Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = read_head_in_root(dir.path(), "/app/fifo", 4).expect_err("a fifo");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn resolve_follows_path_like_execvp() {
        let dir = rootfs();
        let r = dir.path();
        assert_eq!(
            resolve_in_root(r, "tool", Some("/usr/bin:/bin")).as_deref(),
            Some("/bin/tool")
        );
        // Not executable: skipped.
        assert_eq!(resolve_in_root(r, "data", Some("/bin")), None);
        // The default PATH includes /bin.
        assert_eq!(
            resolve_in_root(r, "tool", None).as_deref(),
            Some("/bin/tool")
        );
        // Any execute bit will do; trailing slashes are fine.
        assert_eq!(
            resolve_in_root(r, "app.wasm", Some("/nope:/app/")).as_deref(),
            Some("/app/app.wasm")
        );
        // Directories are not commands; relative entries are skipped.
        assert_eq!(resolve_in_root(r, "app", Some("/")), None);
        assert_eq!(resolve_in_root(r, "tool", Some("bin:")), None);
        // A name with a slash is returned as is, without looking.
        assert_eq!(resolve_in_root(r, "./x/y", None).as_deref(), Some("./x/y"));
        assert_eq!(resolve_in_root(r, "missing", None), None);
    }

    #[test]
    fn resolve_symlinks_stay_inside_the_rootfs() {
        let dir = rootfs();
        let r = dir.path();
        // A PATH directory that is a symlink escaping upwards lands on the rootfs' /bin.
        symlink("../../../../bin", r.join("usr/bin/up")).expect("symlink");
        assert_eq!(
            resolve_in_root(r, "tool", Some("/usr/bin/up")).as_deref(),
            Some("/usr/bin/up/tool")
        );
        // A command symlinked to a host executable the rootfs lacks is not found.
        symlink("/usr/bin/env", r.join("usr/bin/hostenv")).expect("symlink");
        assert!(Path::new("/usr/bin/env").exists());
        assert_eq!(resolve_in_root(r, "hostenv", Some("/usr/bin")), None);
        // The relative ../../etc/passwd link resolves to the rootfs' (non-executable) file.
        symlink("../../etc/passwd", r.join("bin/pw")).expect("symlink");
        assert_eq!(resolve_in_root(r, "pw", Some("/bin")), None);
        fs::set_permissions(r.join("etc/passwd"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert_eq!(
            resolve_in_root(r, "pw", Some("/bin")).as_deref(),
            Some("/bin/pw")
        );
    }
}
