//! The few syscalls `nix` does not wrap safely, each behind a small safe function.
//!
//! Everything here is used by the init helper (single-threaded, so `fork` is sound there).
//! Every `unsafe` block states its justification in a `// SAFETY:` comment.
//!
//! Limitations: `close_range` needs Linux 5.11 (`CLOSE_RANGE_CLOEXEC`); there is no
//! userspace fallback.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::stat::{SFlag, fstat};
use nix::unistd::ForkResult;

/// `fork(2)`. Only for the init helper, which never starts a thread.
pub(crate) fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: the init helper is single-threaded (it is routed in `main` before any thread
    // or runtime exists and never spawns one), so the child is a complete copy of the only
    // thread and may run arbitrary code, as after a fork in a single-threaded C program.
    unsafe { nix::unistd::fork() }
}

/// `_exit(2)`: ends the process at once, without running atexit handlers or flushing
/// buffers shared with the parent of a fork.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Takes ownership of the inherited socket `fd` after checking it is an open socket.
pub(crate) fn take_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: we only borrow `fd` for the duration of `fstat`; if it is not open, fstat
    // fails with EBADF and nothing else happens.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = fstat(borrowed).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a socket"),
        ));
    }
    // SAFETY: the fd is open (fstat succeeded) and, by the launch protocol, fd 3 of the
    // helper is the socket the shim mapped for it and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of the inherited pidfd `fd` (an exec helper's view of the container init)
/// after checking, with a null signal, that it is a pidfd of a live process: `Ok(None)` when
/// that process has exited.
pub(crate) fn take_inherited_pidfd(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks the target; `fd`
    // is only read by the kernel (EBADF if it is not an open pidfd).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    // SAFETY: the kernel accepted `fd` as a pidfd, so it is open; by the launch protocol fd 4
    // of an exec helper is the pidfd the shim mapped for it and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((rc == 0).then_some(owned))
}

/// Marks every fd from `first` upwards close-on-exec (`close_range(first, ~0, CLOEXEC)`).
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it
    // touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd from `first` upwards except those in `keep` (`close_range` over the gaps).
///
/// Only for the container init of a Wasm workload, which never execs (so close-on-exec
/// flags would not help): at the call, the only fds above 2 it owns are those in `keep`;
/// anything else was inherited by accident and no Rust object refers to it.
pub(crate) fn close_fds_except(first: RawFd, keep: &[RawFd]) -> io::Result<()> {
    close_between_except(first, RawFd::MAX, keep)
}

/// Closes the fds of `first..=last` that are not in `keep`.
fn close_between_except(first: RawFd, last: RawFd, keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep
        .iter()
        .copied()
        .filter(|fd| (first..=last).contains(fd))
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = first;
    for kept in keep {
        if kept > from {
            close_range(from, kept - 1)?;
        }
        from = kept + 1;
    }
    if from <= last {
        close_range(from, last)?;
    }
    Ok(())
}

fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    };
    // SAFETY: closing descriptors touches no memory. Per `close_fds_except`'s contract, no
    // live Rust object owns a descriptor in [first, last], so none is closed behind its back.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(fd, NS_GET_NSTYPE)`: the `CLONE_NEW*` constant of a namespace file.
pub(crate) fn namespace_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    const NSIO: libc::c_ulong = 0xb7;
    const NS_GET_NSTYPE: libc::c_ulong = (NSIO << 8) | 0x3; // _IO(NSIO, 0x3)
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an int; `fd` is a valid borrowed
    // descriptor for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Restores the default disposition of the signals the Rust runtime or the shim may have
/// changed (Rust's `main` sets SIGPIPE to SIG_IGN), so the workload starts with defaults.
pub(crate) fn reset_signal_dispositions() -> io::Result<()> {
    for sig in [
        libc::SIGPIPE,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGCHLD,
    ] {
        // SAFETY: installing SIG_DFL involves no handler code; the process is
        // single-threaded and about to exec (or run its Wasm module).
        let previous = unsafe { libc::signal(sig, libc::SIG_DFL) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `ioctl(master, TIOCSPTLCK, &0)` (`unlockpt`): lets the slave of a fresh pty be opened.
pub(crate) fn pty_unlock(master: BorrowedFd<'_>) -> io::Result<()> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which points to a live local for
    // the duration of the call; `master` is a valid borrowed descriptor.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)`: opens the slave of `master`
/// through the master itself, so no path (which the container could redirect with a
/// symlink, CVE-2025-52565) is ever resolved. Linux 4.13.
pub(crate) fn pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new descriptor; no memory
    // of ours is touched.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just installed `fd` in our table for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(tty, TIOCSCTTY, 0)`: makes `tty` the controlling terminal of the calling session
/// leader (never stealing it from another session).
pub(crate) fn set_controlling_terminal(tty: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal); no memory is touched.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(tty, TIOCSWINSZ)`: sets the window size (the kernel sends SIGWINCH to the
/// terminal's foreground process group when it changes).
pub(crate) fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points to a
    // live local of that type for the duration of the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(tty, TIOCGWINSZ)`: the window size as (rows, columns).
pub(crate) fn window_size(tty: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // live local of that type for the duration of the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// `recvmsg` into `buf`, taking ownership of any descriptors that came with the bytes
/// (`SCM_RIGHTS`). They are received close-on-exec (`MSG_CMSG_CLOEXEC`), so a descriptor
/// sent by a container never reaches another process the shim spawns. A truncated control
/// message is an error (the descriptors that did not fit are lost).
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in our table with this message;
                // nothing else in the process knows of it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors sent with a message were truncated",
        ));
    }
    Ok((msg.bytes, fds))
}

// `Insn` must be laid out as `struct sock_filter` for `seccomp_set_filter`.
const _: () = assert!(
    std::mem::size_of::<crate::init::seccomp::Insn>() == std::mem::size_of::<libc::sock_filter>()
);

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`: installs `program` on this thread (all
/// threads with `SECCOMP_FILTER_FLAG_TSYNC`). Returns the kernel's non-negative result: 0,
/// or with TSYNC the id of a thread that could not be synchronised.
pub(crate) fn seccomp_set_filter(
    program: &[crate::init::seccomp::Insn],
    flags: u32,
) -> io::Result<i64> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        // `Insn` is `#[repr(C)]` with the fields of `struct sock_filter` in order.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, `len` instructions of the layout of
    // `struct sock_filter`, alive for the whole call; the kernel copies the program and
    // never writes through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn namespace_type_of_own_mount_namespace() {
        let f = std::fs::File::open("/proc/self/ns/mnt").expect("open /proc/self/ns/mnt");
        assert_eq!(
            namespace_type(f.as_fd()).expect("NS_GET_NSTYPE"),
            libc::CLONE_NEWNS
        );
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: borrowed only for the fstat call; EBADF if closed.
        fstat(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
    }

    #[test]
    fn close_between_except_keeps_only_the_listed_fds() {
        // Tests run on parallel threads that allocate the lowest free fds: work far above
        // them, on fds no Rust object owns (as in the init), and never close unboundedly.
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        let raw: Vec<RawFd> = (0..5)
            .map(|i| {
                nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(900 + i))
                    .expect("dup")
            })
            .collect();
        assert_eq!(raw, [900, 901, 902, 903, 904]);
        close_between_except(900, 904, &[901, 903, 2]).expect("close");
        assert!(!is_open(900) && !is_open(902) && !is_open(904));
        assert!(is_open(901) && is_open(903));
        close_between_except(900, 904, &[]).expect("close the rest");
        assert!(!is_open(901) && !is_open(903));
    }

    #[test]
    fn take_inherited_socket_rejects_non_sockets() {
        let f = std::fs::File::open("/proc/self/stat").expect("open");
        let fd = f.as_raw_fd();
        let err = take_inherited_socket(fd).expect_err("a regular file is not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        drop(f);
    }
}
