//! The private wire protocol between the shim ([`crate::launch`]) and the init helper.
//!
//! Transport: a `SOCK_STREAM` unix socketpair created `SOCK_CLOEXEC` by the shim; the
//! helper's end is its fd 3. Framing: a 4-byte little-endian length, then that many bytes
//! of JSON (one [`ToInit`] or [`FromInit`] value). Frames are written with one `send` each
//! (`MSG_NOSIGNAL`, so a dead peer is `EPIPE`, never `SIGPIPE`).
//!
//! Conversation:
//!
//! ```text
//! shim                                   helper (fd 3)          container init (forked)
//! spawn helper, join_cgroup(helper pid)
//! Plan ------------------------------->  setns / unshare(user)
//!       <-------------------------------- NeedIdMaps            (new user namespace only)
//! write uid_map, gid_map; IdMapsWritten ->
//!                                        unshare rest, fork ---> (waits for the helper to exit)
//!       <-------------------------------- InitPid(host pid); helper _exit(0)
//!       <------------------------------------------------------ Console + SCM_RIGHTS (terminal only)
//!       <------------------------------------------------------ Warning(..)* , Ready | Failed
//! Start -------------------------------------------------------> execve | (Wasm) close socket, run
//!       <------------------------------------------------------ EOF (exec done: CLOEXEC) | ExecFailed
//! ```
//!
//! For a WebAssembly workload the init closes its end explicitly right before running the
//! module, so "EOF means started" holds for both kinds.
//!
//! An exec into a running container ([`crate::launch::exec`]) is the same conversation with
//! `Exec` instead of `Plan` as the first message: the helper also inherits a pidfd of the
//! container's init as fd [`INIT_PIDFD_FD`], joins that process's namespaces through it
//! (`setns`, no `unshare`, so never `NeedIdMaps`), forks, and the forked process reports
//! `Ready` once its identity, cwd and program are in place, as a container init would.
//!
//! With `process.terminal`, the container process allocates a pty in the container's devpts
//! instance and sends its master as `Console`, the descriptor riding on the frame's bytes as
//! `SCM_RIGHTS` ([`send_msg_with_fd`]); the shim reads every frame with `recvmsg`
//! ([`recv_msg_with_fds`], descriptors received close-on-exec) and takes the descriptor of a
//! `Console` frame only. The process closes its copy right after sending.
//!
//! Limitations: a frame is at most [`MAX_FRAME`] bytes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, send, sendmsg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::launch::ErrorKind;
use crate::plan::InitPlan;
use crate::sys;

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 4 << 20;

/// The fd number of the socket in the helper.
pub(crate) const INIT_SOCKET_FD: i32 = 3;

/// The fd number of the container init's pidfd in an exec helper.
pub(crate) const INIT_PIDFD_FD: i32 = 4;

/// Messages from the shim to the helper / container init.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ToInit {
    /// The plan to apply (first message).
    Plan(Box<InitPlan>),
    /// Instead of `Plan`: join the running container whose init's pidfd is fd
    /// [`INIT_PIDFD_FD`] and run this plan's process there (see [`InitPlan::for_exec`]).
    Exec(Box<InitPlan>),
    /// The uid/gid maps of the new user namespace are written.
    IdMapsWritten,
    /// Release the start barrier: exec the workload (or run the Wasm module).
    Start,
}

/// An error reported by the helper, already classified.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportedError {
    /// Classification for the shim's error codes.
    pub kind: ErrorKind,
    /// Human-readable message naming the operation and path.
    pub message: String,
}

/// Messages from the helper / container init to the shim.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum FromInit {
    /// The helper created a user namespace and waits for its id maps.
    NeedIdMaps,
    /// Host pid (in the shim's pid namespace) of the container init.
    InitPid(i32),
    /// A non-fatal note for the shim's log.
    Warning(String),
    /// The master of the process's terminal; the descriptor comes with this frame
    /// (`SCM_RIGHTS`). Sent before `Ready`, only when the plan asks for a terminal.
    Console,
    /// The container is created and waits on the start barrier.
    Ready,
    /// Setting the container up failed; the process exits.
    Failed(ReportedError),
    /// `execve` failed after `Start`; the process exits 127.
    ExecFailed(ReportedError),
}

/// Sends one frame.
pub(crate) fn send_msg<T: Serialize>(fd: BorrowedFd<'_>, msg: &T) -> io::Result<()> {
    send_frame(fd, &frame(msg)?, 0)
}

/// Sends one frame with `passed` attached to its first byte (`SCM_RIGHTS`).
pub(crate) fn send_msg_with_fd<T: Serialize>(
    fd: BorrowedFd<'_>,
    msg: &T,
    passed: BorrowedFd<'_>,
) -> io::Result<()> {
    let frame = frame(msg)?;
    let raw = [passed.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&raw)];
    let sent = loop {
        match sendmsg::<()>(
            fd.as_raw_fd(),
            &[io::IoSlice::new(&frame)],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    send_frame(fd, &frame, sent)
}

/// Length header and JSON body of `msg`.
fn frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds {MAX_FRAME}", body.len()),
        ));
    }
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Sends what is left of `frame` after its first `sent` bytes.
fn send_frame(fd: BorrowedFd<'_>, frame: &[u8], mut sent: usize) -> io::Result<()> {
    while sent < frame.len() {
        match send(fd.as_raw_fd(), &frame[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on EOF before the first byte.
fn read_exact_or_eof(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message",
                ));
            }
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Receives one frame; `Ok(None)` on a clean EOF (the peer closed or exec'd).
pub(crate) fn recv_msg<T: DeserializeOwned>(fd: BorrowedFd<'_>) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    if !read_exact_or_eof(fd, &mut len)? {
        return Ok(None);
    }
    recv_body(fd, len).map(Some)
}

/// Like [`recv_msg`], also returning the descriptors that came with the frame (received
/// close-on-exec). Descriptors ride on a frame's first bytes, so the header is read with
/// `recvmsg`.
pub(crate) fn recv_msg_with_fds<T: DeserializeOwned>(
    fd: BorrowedFd<'_>,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < len.len() {
        match sys::recv_with_fds(fd, &mut len[got..]) {
            Ok((0, _)) if got == 0 => return Ok(None),
            Ok((0, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message",
                ));
            }
            Ok((n, received)) => {
                got += n;
                fds.extend(received);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some((recv_body(fd, len)?, fds)))
}

/// Reads and decodes the body announced by the header `len`.
fn recv_body<T: DeserializeOwned>(fd: BorrowedFd<'_>, len: [u8; 4]) -> io::Result<T> {
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    if !read_exact_or_eof(fd, &mut body)? {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed after a message header",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    /// The launcher's kind of socketpair.
    fn pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair")
    }

    #[test]
    fn frames_round_trip_and_eof_is_none() {
        let (a, b) = pair();
        send_msg(a.as_fd(), &FromInit::InitPid(42)).expect("send");
        send_msg(
            a.as_fd(),
            &FromInit::Failed(ReportedError {
                kind: ErrorKind::NotFound,
                message: "nope".into(),
            }),
        )
        .expect("send");
        drop(a);
        assert!(matches!(
            recv_msg::<FromInit>(b.as_fd()).expect("recv"),
            Some(FromInit::InitPid(42))
        ));
        match recv_msg::<FromInit>(b.as_fd()).expect("recv") {
            Some(FromInit::Failed(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
            other => panic!("unexpected {other:?}"),
        }
        assert!(recv_msg::<FromInit>(b.as_fd()).expect("recv").is_none());
    }

    #[test]
    fn a_descriptor_rides_on_its_frame_and_arrives_cloexec() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send_msg(a.as_fd(), &FromInit::Warning("before".into())).expect("send");
        send_msg_with_fd(a.as_fd(), &FromInit::Console, w.as_fd()).expect("send fd");
        drop(w);
        send_msg(a.as_fd(), &FromInit::Ready).expect("send");
        let (first, fds) = recv_msg_with_fds::<FromInit>(b.as_fd())
            .expect("recv")
            .expect("a frame");
        assert!(matches!(first, FromInit::Warning(_)));
        assert!(fds.is_empty(), "no descriptor came with the first frame");
        let (console, mut fds) = recv_msg_with_fds::<FromInit>(b.as_fd())
            .expect("recv")
            .expect("a frame");
        assert!(matches!(console, FromInit::Console));
        assert_eq!(fds.len(), 1, "the descriptor comes with the Console frame");
        let passed = fds.pop().expect("one fd");
        let flags = nix::fcntl::fcntl(&passed, nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptors are close-on-exec"
        );
        // It is the pipe's write end: what goes in comes out of `r`.
        nix::unistd::write(&passed, b"x").expect("write through the passed fd");
        let mut buf = [0u8; 1];
        nix::unistd::read(&r, &mut buf).expect("read");
        assert_eq!(&buf, b"x");
        let (ready, fds) = recv_msg_with_fds::<FromInit>(b.as_fd())
            .expect("recv")
            .expect("a frame");
        assert!(matches!(ready, FromInit::Ready) && fds.is_empty());
        drop(a);
        assert!(
            recv_msg_with_fds::<FromInit>(b.as_fd())
                .expect("eof")
                .is_none()
        );
    }

    #[test]
    fn oversized_header_is_rejected() {
        let (a, b) = pair();
        nix::unistd::write(&a, &u32::MAX.to_le_bytes()).expect("write");
        let err = recv_msg::<FromInit>(b.as_fd()).expect_err("too big");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
