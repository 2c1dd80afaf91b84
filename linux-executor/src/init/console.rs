//! The process's terminal (`process.terminal`), allocated the way runc and crun do it: inside
//! the container, in the container's own devpts instance, so `/dev/pts/<n>` exists there and
//! `tty` names it.
//!
//! Steps (container process, before its identity switch):
//! 1. [`allocate`]: open `dev/pts` below the container's root with
//!    `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` and check it is a devpts mount; open
//!    its `ptmx` (`O_NOFOLLOW | O_NOCTTY | O_CLOEXEC`) and check it is the pty multiplexer
//!    (char 5:2 of that devpts); unlock it and open the slave with `TIOCGPTPEER` on the master
//!    (never by path: CVE-2025-52565), checking it is a pty slave of the same devpts;
//! 2. for a container's init only, [`bind_console`]: bind the slave, by descriptor, onto a
//!    fresh empty file at `/dev/console` (runc's behaviour with a terminal);
//! 3. [`hand_over`]: apply `process.consoleSize`, send the master to the shim (`Console`,
//!    `SCM_RIGHTS`) and close it here, then `TIOCSCTTY` (the process is already a session
//!    leader) and `dup2` the slave onto 0, 1 and 2.
//!
//! The init does steps 1 and 2 just before `pivot_root`, through the rootfs handle (the same
//! devpts instance the container then sees at `/dev/pts`; the bind source is named through
//! the helper's verified procfs); an exec does step 1 after joining the container's mount
//! namespace, whose root is the container's. Every descriptor is close-on-exec and the
//! master leaves this process before any workload code runs, so the container never holds
//! it.
//!
//! Limitations: the slave keeps the owner devpts gave it (the container's root, with
//! devpts' `gid=5,mode=620`); a process switching to another user reads and writes it
//! through its inherited descriptors but cannot reopen `/dev/pts/<n>` by name.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, fstat, major, minor};
use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, Statfs, fstatfs};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::error::InitError;
use super::paths::{fd_path, mkdir_all};
use super::protocol::{FromInit, send_msg_with_fd};
use crate::sys;

/// The pty multiplexer `ptmx` is char 5:2 in every devpts instance.
const PTMX: (u64, u64) = (5, 2);
/// Unix98 pty slaves use majors 136 to 143.
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;

/// A new pty: the master for the shim, the slave for the process.
pub(super) struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn is_devpts(fs: &Statfs) -> bool {
    fs.filesystem_type() == DEVPTS_SUPER_MAGIC
}

/// Checks that `fd` is a character device of a devpts instance whose number satisfies
/// `want`; `what` names it in errors.
fn check_devpts_char(
    fd: BorrowedFd<'_>,
    what: &str,
    want: impl Fn(u64, u64) -> bool,
) -> Result<(), InitError> {
    let fs = fstatfs(fd).map_err(InitError::sys("statfs", what))?;
    let st = fstat(fd).map_err(InitError::sys("stat", what))?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    if !is_devpts(&fs) || !is_char || !want(maj, min) {
        return Err(InitError::Invalid(format!(
            "terminal: {what} is not the expected device of a devpts mount (char {maj}:{min})"
        )));
    }
    Ok(())
}

/// Step 1 of the module docs, in the devpts instance at `dev/pts` below `root`.
pub(super) fn allocate(root: BorrowedFd<'_>) -> Result<Pty, InitError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let pts = loop {
        match openat2(root, "dev/pts", how) {
            Err(Errno::EAGAIN) => continue,
            other => break other,
        }
    }
    .map_err(|e| match e {
        Errno::ENOENT => InitError::Invalid(
            "terminal: the container has no /dev/pts (mount a devpts there)".into(),
        ),
        e => InitError::sys("open", "/dev/pts (no symlinks) for the terminal")(e),
    })?;
    let fs = fstatfs(&pts).map_err(InitError::sys("statfs", "/dev/pts"))?;
    if !is_devpts(&fs) {
        return Err(InitError::Invalid(
            "terminal: /dev/pts of the container is not a devpts mount".into(),
        ));
    }
    let master = openat(
        &pts,
        "ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", "/dev/pts/ptmx"))?;
    check_devpts_char(master.as_fd(), "/dev/pts/ptmx", |maj, min| {
        (maj, min) == PTMX
    })?;
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    sys::pty_unlock(master.as_fd())
        .map_err(|e| InitError::sys("unlock pty", "/dev/pts/ptmx")(errno(e)))?;
    let slave = sys::pty_peer(master.as_fd()).map_err(|e| {
        InitError::sys("open pty slave (TIOCGPTPEER) of", "/dev/pts/ptmx")(errno(e))
    })?;
    check_devpts_char(slave.as_fd(), "the pty slave", |maj, _| {
        PTY_SLAVE_MAJORS.contains(&maj)
    })?;
    // Same instance: the slave lives in the devpts whose ptmx we opened.
    let (a, b) = (
        fstat(&pts).map_err(InitError::sys("stat", "/dev/pts"))?,
        fstat(&slave).map_err(InitError::sys("stat", "the pty slave"))?,
    );
    if a.st_dev != b.st_dev {
        return Err(InitError::Invalid(
            "terminal: the pty slave is not in the container's devpts".into(),
        ));
    }
    Ok(Pty { master, slave })
}

/// Step 1 for an exec: the container's root is this process's `/` (it joined the
/// container's mount namespace).
pub(super) fn allocate_in_joined_container() -> Result<Pty, InitError> {
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", "/ of the container"))?;
    allocate(root.as_fd())
}

/// Step 2 of the module docs: a fresh empty file at `/dev/console` below `root` (whatever
/// the image put there is removed, never followed), with the slave bound onto it by
/// descriptor. Runs before `pivot_root`, while `/proc/self/fd` is the helper's procfs.
pub(super) fn bind_console(root: BorrowedFd<'_>, pty: &Pty) -> Result<(), InitError> {
    let dev = mkdir_all(root, Path::new("/dev"))?;
    match unlinkat(&dev, "console", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(InitError::sys("remove", "/dev/console")(e)),
    }
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    drop(
        openat(&dev, "console", flags, Mode::from_bits_truncate(0o600))
            .map_err(InitError::sys("create", "/dev/console"))?,
    );
    let target = openat(
        &dev,
        "console",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::sys("open", "/dev/console"))?;
    mount(
        Some(fd_path(&pty.slave).as_str()),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(InitError::sys("bind the pty slave on", "/dev/console"))
}

/// Step 3 of the module docs. On return the process's stdio is the terminal and the master
/// is gone from this process.
pub(super) fn hand_over(
    pty: Pty,
    sock: BorrowedFd<'_>,
    size: Option<(u16, u16)>,
) -> Result<(), InitError> {
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let Pty { master, slave } = pty;
    if let Some((rows, cols)) = size {
        sys::set_window_size(master.as_fd(), rows, cols)
            .map_err(|e| InitError::sys("set window size of", "the terminal")(errno(e)))?;
    }
    send_msg_with_fd(sock, &FromInit::Console, master.as_fd()).map_err(|source| {
        InitError::Protocol {
            what: "send the terminal to the shim",
            source,
        }
    })?;
    drop(master);
    sys::set_controlling_terminal(slave.as_fd()).map_err(|e| {
        InitError::sys("make controlling terminal (TIOCSCTTY)", "the pty slave")(errno(e))
    })?;
    nix::unistd::dup2_stdin(&slave).map_err(InitError::sys("dup2 pty slave to", "stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(InitError::sys("dup2 pty slave to", "stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(InitError::sys("dup2 pty slave to", "stderr"))?;
    debug_assert!(
        slave.as_raw_fd() > 2,
        "the slave is a new descriptor above stdio"
    );
    Ok(())
}
