//! The stdio of a process created with a terminal: copies between the pty master the
//! container process sent back (see `amphi_linux_executor::launch::Created::take_console`)
//! and the client's FIFOs, driven by epoll readiness on the master (tokio `AsyncFd`).
//!
//! ```text
//! stdin FIFO ──copy_input──> master ══ pty ══ slave = fds 0, 1, 2 of the process
//! stdout FIFO <─copy_output── master
//! ```
//!
//! The master is made non-blocking and duplicated: one descriptor for reading, one for
//! writing (each registered once with the reactor), one kept for `ResizePty`. The stderr
//! FIFO is not used: the terminal merges both outputs, as with runc.
//!
//! - Output: copied until reading the master fails with EIO (every descriptor of the slave
//!   is closed: the process and whatever inherited its terminal are gone), so nothing the
//!   process wrote is lost; then the stdout FIFO's keepalive is released and the client
//!   sees EOF. Once the process has exited, the copy stops after [`DRAIN_AFTER_EXIT`] even
//!   without EIO (a background process still holding the terminal).
//! - Input: copied as by the pipe copy of [`super`]; when the input ends (the client closed
//!   its end, or `CloseIO` after what was buffered), the terminal's VEOF character (^D) is
//!   written, which a reader in canonical mode sees as end of file (what a user typing ^D
//!   does; closing the master instead would hang the terminal up).
//!
//! Limitations: VEOF ends input only at the start of a line (a reader with a partial line
//! gets that line first) and means nothing to a program that put the terminal in raw mode.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SpecialCharacterIndices, tcgetattr};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::{Close, copy_stdin};
use crate::error::{Error, Result};
use crate::sys::register;

/// How long output is still copied after the process exited, when something else keeps
/// the terminal open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// The character written when input ends, if the terminal's settings cannot be read.
const DEFAULT_VEOF: u8 = 0x04;

/// Where the terminal's output goes.
#[derive(Debug)]
pub(super) enum Sink {
    None,
    Fifo(pipe::Sender),
    File(File),
}

impl Sink {
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::None => Ok(()),
            Sink::Fifo(fifo) => fifo.write_all(data).await,
            // A regular file (`file://`): writes do not wait on a reader.
            Sink::File(file) => file.write_all(data),
        }
    }
}

/// The client's side, opened at Create/Exec, before the process exists.
#[derive(Debug)]
pub(super) struct Fifos {
    pub stdin: Option<pipe::Receiver>,
    pub stdout: Sink,
    /// Keepalives of the stdout FIFO, released when the output copy ends.
    pub keep: Vec<OwnedFd>,
}

/// A terminal whose copies run.
#[derive(Debug)]
pub(super) struct Attached {
    /// A descriptor of the master, for `ResizePty`.
    master: OwnedFd,
    /// Fired (or dropped) when the process exits: starts [`DRAIN_AFTER_EXIT`].
    exited: Option<oneshot::Sender<()>>,
}

impl Attached {
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        amphi_linux_executor::pty::set_window_size(self.master.as_fd(), rows, cols)
    }

    pub fn process_exited(&mut self) {
        if let Some(tx) = self.exited.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the copies of the module docs between `fifos` and `master`; returns the
/// terminal and, when there is a stdin FIFO, the handle that ends the input copy.
pub(super) fn attach(
    fifos: Fifos,
    master: OwnedFd,
) -> Result<(Attached, Option<oneshot::Sender<Close>>)> {
    let io_err = |op: &'static str| move |e: io::Error| Error::io(op, "pty master", e);
    let errno =
        |op: &'static str| move |e: nix::errno::Errno| Error::io(op, "pty master", e.into());
    let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(errno("get flags of"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(&master, FcntlArg::F_SETFL(flags)).map_err(errno("set non-blocking"))?;
    let reader = register(
        master.try_clone().map_err(io_err("duplicate"))?,
        Interest::READABLE,
    )
    .map_err(io_err("register"))?;
    let input = match fifos.stdin {
        Some(fifo) => {
            let writer = register(
                master.try_clone().map_err(io_err("duplicate"))?,
                Interest::WRITABLE,
            )
            .map_err(io_err("register"))?;
            let (tx, rx) = oneshot::channel();
            tokio::spawn(copy_input(fifo, Master(writer), rx));
            Some(tx)
        }
        None => None,
    };
    let (exited, exit_rx) = oneshot::channel();
    tokio::spawn(copy_output(reader, fifos.stdout, fifos.keep, exit_rx));
    Ok((
        Attached {
            master,
            exited: Some(exited),
        },
        input,
    ))
}

/// Master → stdout sink until EIO, or [`DRAIN_AFTER_EXIT`] after the exit.
async fn copy_output(
    master: AsyncFd<OwnedFd>,
    mut sink: Sink,
    keep: Vec<OwnedFd>,
    exited: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = async {
        // A dropped sender (the process's state is gone) counts as the exit.
        let _ = exited.await;
        tokio::time::sleep(DRAIN_AFTER_EXIT).await;
    };
    tokio::pin!(deadline);
    loop {
        let n = tokio::select! {
            biased;
            _ = &mut deadline => break,
            ready = master.readable() => {
                let Ok(mut guard) = ready else { break };
                match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(io::Error::from)) {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => n,
                    // EIO: no descriptor of the slave is left open.
                    Ok(Err(_)) => break,
                    Err(_would_block) => continue,
                }
            }
        };
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            written = sink.write_all(&buf[..n]) => if written.is_err() { break },
        }
    }
    drop(sink);
    drop(keep);
}

/// Stdin FIFO → master; VEOF when the input ends (module docs).
async fn copy_input(fifo: pipe::Receiver, mut master: Master, mut close: oneshot::Receiver<Close>) {
    if copy_stdin(fifo, &mut master, &mut close).await {
        let veof = tcgetattr(master.0.get_ref())
            .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
            .unwrap_or(DEFAULT_VEOF);
        let _ = master.write_all(&[veof]).await;
    }
}

/// The writing side of a non-blocking pty master.
struct Master(AsyncFd<OwnedFd>);

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
