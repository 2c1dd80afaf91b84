//! The container's standard IO.
//!
//! containerd's clients create FIFOs (or pass `file://` URIs) for stdin, stdout and
//! stderr.
//!
//! **stdout and stderr go to the container without copying**: the FIFO descriptors are
//! its fds 1 and 2; no copy loop, no buffers in the shim. The shim keeps one extra
//! read-write descriptor on each of these FIFOs (a *keepalive*), so that opening never
//! blocks on the client's side, a containerd restart does not break the pipe under the
//! container (the data waits in the FIFO until containerd reopens it), and readers see
//! EOF when the shim drops the keepalive at the process's exit.
//!
//! **stdin is copied** from the FIFO into a pipe whose read end is the container's fd 0,
//! by one task driven by epoll readiness (no thread, no polling). A FIFO cannot be
//! handed over directly: a reader that opens it before the client's writer connects
//! reads EOF at once, and a keepalive writer would hide the client's EOF. The copy ends
//! when the client closes its end (EOF), on `CloseIO` (after delivering what is already
//! in the FIFO), or when the process exits.
//!
//! **With a terminal** (`terminal=true`) the process's stdio is a pty allocated inside the
//! container; the FIFOs are opened here (stdin and stdout; stderr is unused) and, once the
//! container process has sent the pty master back, [`Keepalive::attach_terminal`] starts
//! copying between them ([`terminal`]). [`Keepalive::resize`] serves `ResizePty`.
//!
//! Limitations: `binary://` logging URIs are rejected (INVALID_ARGUMENT).

mod terminal;

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use amphi_linux_executor::launch::InitIo;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How the stdin copy should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// `CloseIO`: deliver what the FIFO already holds, then EOF.
    AfterDrain,
    /// The process is gone: stop now.
    Now,
}

/// A process's terminal: its FIFOs until the master arrives, then the running copies.
#[derive(Debug)]
enum Terminal {
    Pending(terminal::Fifos),
    Attached(terminal::Attached),
}

/// What the shim holds for one process's stdio; see the module docs. Dropping it stops
/// the stdin copy and releases the output keepalives.
#[derive(Debug, Default)]
pub struct Keepalive {
    stdin: Option<oneshot::Sender<Close>>,
    outputs: Vec<OwnedFd>,
    terminal: Option<Terminal>,
}

impl Keepalive {
    /// `CloseIO`: the process sees EOF on stdin once what is buffered is delivered.
    pub fn close_stdin(&mut self) {
        if let Some(tx) = self.stdin.take() {
            let _ = tx.send(Close::AfterDrain);
        }
    }

    /// The process exited: stop copying stdin and let readers of its output see EOF
    /// once nothing else holds the FIFOs (with a terminal: once its output is drained).
    pub fn close_all(&mut self) {
        if let Some(tx) = self.stdin.take() {
            let _ = tx.send(Close::Now);
        }
        self.outputs.clear();
        match &mut self.terminal {
            Some(Terminal::Attached(t)) => t.process_exited(),
            Some(Terminal::Pending(_)) => self.terminal = None,
            None => {}
        }
    }

    /// The process's pty master arrived (see the module docs): start copying. Must be
    /// called inside the tokio runtime, once, on stdio opened with a terminal.
    pub fn attach_terminal(&mut self, master: OwnedFd) -> Result<()> {
        let Some(Terminal::Pending(fifos)) = self.terminal.take() else {
            return Err(Error::io(
                "attach",
                "pty master",
                std::io::Error::other("stdio was not opened for a terminal"),
            ));
        };
        let (attached, stdin) = terminal::attach(fifos, master)?;
        self.stdin = stdin;
        self.terminal = Some(Terminal::Attached(attached));
        Ok(())
    }

    /// `ResizePty`: `None` when the process has no terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Option<std::io::Result<()>> {
        match &self.terminal {
            Some(Terminal::Attached(t)) => Some(t.resize(rows, cols)),
            _ => None,
        }
    }
}

/// Copies `fifo` into `to` until EOF or `close`. `true` when the input ended (the client's
/// EOF, or `CloseIO` once what was buffered is delivered); `false` when stopped (the
/// process is gone, or writing failed).
async fn copy_stdin<W: AsyncWrite + Unpin>(
    fifo: pipe::Receiver,
    to: &mut W,
    close: &mut oneshot::Receiver<Close>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            how = &mut *close => {
                // A dropped sender (the container is gone) means stop now.
                if how != Ok(Close::AfterDrain) {
                    return false;
                }
                while let Ok(n @ 1..) = fifo.try_read(&mut buf) {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
                return true;
            }
            ready = fifo.readable() => {
                if ready.is_err() {
                    return false;
                }
                match fifo.try_read(&mut buf) {
                    Ok(0) => return true,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return false,
                }
            }
        };
        tokio::select! {
            biased;
            _ = &mut *close => return false,
            written = to.write_all(&buf[..n]) => if written.is_err() { return false },
        }
    }
}

/// Opens the stdin FIFO and starts copying it into a new pipe; returns the pipe's read
/// end for the process. Must be called inside the tokio runtime.
fn stdin_from_fifo(path: &str) -> Result<(OwnedFd, oneshot::Sender<Close>)> {
    // Read-only and non-blocking: no writer of ours, so the client's EOF is seen.
    let fifo = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe", path, e.into()))?;
    let to = pipe::Sender::from_owned_fd(write).map_err(|e| Error::io("pipe", path, e))?;
    let (tx, mut rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut to = to;
        // Dropping `to` on return is the EOF the process sees.
        copy_stdin(fifo, &mut to, &mut rx).await;
    });
    Ok((read, tx))
}

enum Target<'a> {
    None,
    Fifo(&'a str),
    File(&'a str),
}

fn parse(uri: &str) -> Result<Target<'_>> {
    if uri.is_empty() {
        return Ok(Target::None);
    }
    match uri.split_once("://") {
        None => Ok(Target::Fifo(uri)),
        Some(("fifo", path)) => Ok(Target::Fifo(path)),
        Some(("file", path)) => Ok(Target::File(path)),
        Some((scheme, _)) => Err(Error::InvalidArgument(format!(
            "stdio uri {uri}: scheme {scheme:?} is not supported (use a fifo path or file://)"
        ))),
    }
}

fn open_output_fifo(path: &str, keep: &mut Vec<OwnedFd>) -> Result<OwnedFd> {
    // Read-write never blocks on a FIFO and keeps it alive; see the module docs.
    let keepalive = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    keep.push(keepalive.into());
    Ok(file.into())
}

fn open_output(uri: &str, keep: &mut Vec<OwnedFd>) -> Result<Option<OwnedFd>> {
    Ok(match parse(uri)? {
        Target::None => None,
        Target::Fifo(path) => Some(open_output_fifo(path, keep)?),
        Target::File(path) => {
            let file: File = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(path)
                .map_err(|e| Error::io("open log file", path, e))?;
            Some(file.into())
        }
    })
}

/// Opens the three stdio URIs of a process. Empty means /dev/null. With `terminal`, the
/// process's own stdio is /dev/null until it takes its terminal, and the FIFOs wait for
/// [`Keepalive::attach_terminal`].
pub fn open(
    stdin: &str,
    stdout: &str,
    stderr: &str,
    terminal: bool,
) -> Result<(InitIo, Keepalive)> {
    if terminal {
        return open_for_terminal(stdin, stdout);
    }
    let mut keep = Keepalive::default();
    let stdin = match parse(stdin)? {
        Target::None => None,
        Target::Fifo(path) => {
            let (fd, close) = stdin_from_fifo(path)?;
            keep.stdin = Some(close);
            Some(fd)
        }
        Target::File(path) => Some(
            File::open(path)
                .map_err(|e| Error::io("open stdin file", path, e))?
                .into(),
        ),
    };
    let stdout = open_output(stdout, &mut keep.outputs)?;
    let stderr = open_output(stderr, &mut keep.outputs)?;
    Ok((
        InitIo {
            stdin,
            stdout,
            stderr,
        },
        keep,
    ))
}

/// The stdin and stdout of a process with a terminal (stderr is unused).
fn open_for_terminal(stdin: &str, stdout: &str) -> Result<(InitIo, Keepalive)> {
    let stdin = match parse(stdin)? {
        Target::None => None,
        Target::Fifo(path) => Some(
            pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(|e| Error::io("open fifo", path, e))?,
        ),
        Target::File(path) => {
            return Err(Error::InvalidArgument(format!(
                "stdin {path}: a file cannot be the input of a terminal (use a fifo)"
            )));
        }
    };
    let mut keep = Vec::new();
    let sink = match parse(stdout)? {
        Target::None => terminal::Sink::None,
        Target::Fifo(path) => {
            let fd = open_output_fifo(path, &mut keep)?;
            terminal::Sink::Fifo(
                pipe::Sender::from_owned_fd(fd).map_err(|e| Error::io("open fifo", path, e))?,
            )
        }
        Target::File(_) => match open_output(stdout, &mut keep)? {
            Some(fd) => terminal::Sink::File(fd.into()),
            None => terminal::Sink::None,
        },
    };
    let fifos = terminal::Fifos {
        stdin,
        stdout: sink,
        keep,
    };
    Ok((
        InitIo::default(),
        Keepalive {
            terminal: Some(Terminal::Pending(fifos)),
            ..Keepalive::default()
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn fifo(dir: &tempfile::TempDir, name: &str) -> String {
        let path = dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Reads the process's stdin to EOF, off the runtime (it blocks).
    async fn read_stdin(io: InitIo) -> String {
        let stdin = File::from(io.stdin.unwrap());
        tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            (&stdin).read_to_string(&mut s).unwrap();
            s
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn stdin_eof_follows_the_client_closing_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(&dir, "in");
        let (io, _keep) = open(&path, "", "", false).unwrap();
        let mut client = OpenOptions::new().write(true).open(&path).unwrap();
        client.write_all(b"line1\nline2\n").unwrap();
        drop(client);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), read_stdin(io))
            .await
            .expect("the process must see EOF after the client closes the fifo");
        assert_eq!(got, "line1\nline2\n");
    }

    #[tokio::test]
    async fn close_io_delivers_buffered_input_then_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(&dir, "in");
        let (io, mut keep) = open(&path, "", "", false).unwrap();
        // The client keeps its end open: only CloseIO can end the input.
        let mut client = OpenOptions::new().write(true).open(&path).unwrap();
        client.write_all(b"buffered").unwrap();
        // Give the copy a chance to run, then close; what is in the fifo still arrives.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        keep.close_stdin();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), read_stdin(io))
            .await
            .expect("CloseIO must end the input");
        assert_eq!(got, "buffered");
        drop(client);
    }

    /// Runs a blocking read off the runtime, with a deadline.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::task::spawn_blocking(f),
        )
        .await
        .expect("in time")
        .unwrap()
    }

    #[tokio::test]
    async fn a_terminal_copies_both_ways_and_closes_its_output_after_eio() {
        let dir = tempfile::tempdir().unwrap();
        let (inp, out) = (fifo(&dir, "in"), fifo(&dir, "out"));
        let (io, mut keep) = open(&inp, &out, "", true).unwrap();
        assert!(
            io.stdin.is_none() && io.stdout.is_none() && io.stderr.is_none(),
            "the process takes its stdio from the terminal"
        );
        assert!(
            keep.resize(1, 1).is_none(),
            "no terminal before it is attached"
        );
        // The keepalive writer exists, so opening the reader does not block.
        let reader = File::open(&out).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        keep.attach_terminal(pty.master).unwrap();
        let slave = std::sync::Arc::new(File::from(pty.slave));

        // Client → process: a line typed on the stdin FIFO.
        let mut client = OpenOptions::new().write(true).open(&inp).unwrap();
        client.write_all(b"ping\n").unwrap();
        let s = slave.clone();
        let line = blocking(move || {
            let mut buf = [0u8; 64];
            let n = (&*s).read(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .await;
        assert_eq!(line, b"ping\n");

        // ResizePty reaches the process's side.
        keep.resize(24, 99).unwrap().unwrap();
        assert_eq!(
            amphi_linux_executor::pty::window_size(std::os::fd::AsFd::as_fd(&*slave)).unwrap(),
            (24, 99)
        );

        // CloseIO: VEOF, which a canonical-mode reader sees as end of file.
        keep.close_stdin();
        let s = slave.clone();
        let n = blocking(move || (&*s).read(&mut [0u8; 64]).unwrap()).await;
        assert_eq!(n, 0, "CloseIO must end the terminal's input");

        // Process → client: written, then the process exits and its terminal closes.
        (&*slave).write_all(b"pong\n").unwrap();
        keep.close_all();
        drop(slave);
        let got = blocking(move || {
            let mut s = String::new();
            (&reader).read_to_string(&mut s).unwrap();
            s
        })
        .await;
        assert!(
            got.contains("pong\r\n"),
            "output is drained before EOF: {got:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_terminal_needs_stdio_opened_for_it() {
        let (_, mut keep) = open("", "", "", false).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let err = keep.attach_terminal(pty.master).unwrap_err();
        assert!(
            err.to_string().contains("not opened for a terminal"),
            "{err}"
        );
        assert!(keep.resize(10, 10).is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, "x").unwrap();
        let uri = format!("file://{}", path.display());
        let err = open(&uri, "", "", true).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn unknown_scheme_is_invalid_argument() {
        let err = open("", "binary:///usr/bin/logger", "", false).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("binary"), "{err}");
    }

    #[tokio::test]
    async fn empty_means_none() {
        let (io, _keep) = open("", "", "", false).unwrap();
        assert!(io.stdin.is_none() && io.stdout.is_none() && io.stderr.is_none());
    }

    #[test]
    fn fifo_output_reaches_reader_and_eof_follows_close() {
        let dir = tempfile::tempdir().unwrap();
        let p = fifo(&dir, "out");
        let path = std::path::PathBuf::from(&p);
        let (io, mut keep) = open("", &p, "", false).unwrap();
        let mut reader = File::open(&path).unwrap();
        let mut w = File::from(io.stdout.unwrap());
        w.write_all(b"hello").unwrap();
        drop(w);
        // The keepalive still holds a writer: closing it releases EOF.
        keep.close_all();
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn file_uri_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let uri = format!("file://{}", path.display());
        let (io, _keep) = open("", &uri, &uri, false).unwrap();
        File::from(io.stdout.unwrap()).write_all(b"a").unwrap();
        File::from(io.stderr.unwrap()).write_all(b"b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ab");
    }
}
