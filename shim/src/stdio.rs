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
//! Limitations: `binary://` logging URIs are rejected (INVALID_ARGUMENT); terminals are
//! not supported yet.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use amphi_linux_executor::launch::InitIo;
use tokio::io::AsyncWriteExt;
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

/// What the shim holds for one process's stdio; see the module docs. Dropping it stops
/// the stdin copy and releases the output keepalives.
#[derive(Debug, Default)]
pub struct Keepalive {
    stdin: Option<oneshot::Sender<Close>>,
    outputs: Vec<OwnedFd>,
}

impl Keepalive {
    /// `CloseIO`: the process sees EOF on stdin once what is buffered is delivered.
    pub fn close_stdin(&mut self) {
        if let Some(tx) = self.stdin.take() {
            let _ = tx.send(Close::AfterDrain);
        }
    }

    /// The process exited: stop copying stdin and let readers of its output see EOF
    /// once nothing else holds the FIFOs.
    pub fn close_all(&mut self) {
        if let Some(tx) = self.stdin.take() {
            let _ = tx.send(Close::Now);
        }
        self.outputs.clear();
    }
}

/// Copies `fifo` into `to` until EOF or `close`.
async fn copy_stdin(
    fifo: pipe::Receiver,
    mut to: pipe::Sender,
    mut close: oneshot::Receiver<Close>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            how = &mut close => {
                // A dropped sender (the container is gone) means stop now.
                if how == Ok(Close::AfterDrain) {
                    while let Ok(n @ 1..) = fifo.try_read(&mut buf) {
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                return;
            }
            ready = fifo.readable() => {
                if ready.is_err() {
                    return;
                }
                match fifo.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            biased;
            _ = &mut close => return,
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
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
    let (tx, rx) = oneshot::channel();
    tokio::spawn(copy_stdin(fifo, to, rx));
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

/// Opens the three stdio URIs of a process. Empty means /dev/null.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<(InitIo, Keepalive)> {
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
        let (io, _keep) = open(&path, "", "").unwrap();
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
        let (io, mut keep) = open(&path, "", "").unwrap();
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

    #[test]
    fn unknown_scheme_is_invalid_argument() {
        let err = open("", "binary:///usr/bin/logger", "").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("binary"), "{err}");
    }

    #[tokio::test]
    async fn empty_means_none() {
        let (io, _keep) = open("", "", "").unwrap();
        assert!(io.stdin.is_none() && io.stdout.is_none() && io.stderr.is_none());
    }

    #[test]
    fn fifo_output_reaches_reader_and_eof_follows_close() {
        let dir = tempfile::tempdir().unwrap();
        let p = fifo(&dir, "out");
        let path = std::path::PathBuf::from(&p);
        let (io, mut keep) = open("", &p, "").unwrap();
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
        let (io, _keep) = open("", &uri, &uri).unwrap();
        File::from(io.stdout.unwrap()).write_all(b"a").unwrap();
        File::from(io.stderr.unwrap()).write_all(b"b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ab");
    }
}
