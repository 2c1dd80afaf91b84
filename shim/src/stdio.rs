//! The container's standard IO, handed to the process without copying.
//!
//! containerd's clients create FIFOs (or pass `file://` URIs) for stdin, stdout and
//! stderr. amphi opens them and gives the container the file descriptors directly: no
//! copy loop, no buffers in the shim. The shim keeps one extra read-write descriptor
//! on each FIFO (a *keepalive*), so that
//!
//! - opening never blocks on containerd's side of the FIFO,
//! - a containerd restart does not break the pipe under the container (the data waits
//!   in the FIFO until containerd reopens it),
//! - the shim decides when readers see EOF: keepalives of stdout/stderr are dropped when
//!   the process exits, the stdin keepalive on `CloseIO`.
//!
//! Limitations: `binary://` logging URIs are rejected (INVALID_ARGUMENT); terminals are
//! not supported yet.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use amphi_linux_executor::launch::InitIo;

use crate::error::{Error, Result};

/// Descriptors the shim holds for one process; see the module docs.
#[derive(Debug, Default)]
pub struct Keepalive {
    stdin: Option<OwnedFd>,
    outputs: Vec<OwnedFd>,
}

impl Keepalive {
    /// Lets the process see EOF on stdin once the client closes its end (`CloseIO`).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Lets readers see EOF once the process (and anything that inherited its stdio)
    /// is gone.
    pub fn close_all(&mut self) {
        self.stdin = None;
        self.outputs.clear();
    }
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

fn open_fifo(path: &str, read: bool, keep: &mut Vec<OwnedFd>) -> Result<OwnedFd> {
    // Read-write never blocks on a FIFO and keeps it alive; see the module docs.
    let keepalive = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    let file = OpenOptions::new()
        .read(read)
        .write(!read)
        .open(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    keep.push(keepalive.into());
    Ok(file.into())
}

fn open_output(uri: &str, keep: &mut Vec<OwnedFd>) -> Result<Option<OwnedFd>> {
    Ok(match parse(uri)? {
        Target::None => None,
        Target::Fifo(path) => Some(open_fifo(path, false, keep)?),
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
            let mut v = Vec::new();
            let fd = open_fifo(path, true, &mut v)?;
            keep.stdin = v.pop();
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

    #[test]
    fn unknown_scheme_is_invalid_argument() {
        let err = open("", "binary:///usr/bin/logger", "").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("binary"), "{err}");
    }

    #[test]
    fn empty_means_none() {
        let (io, _keep) = open("", "", "").unwrap();
        assert!(io.stdin.is_none() && io.stdout.is_none() && io.stderr.is_none());
    }

    #[test]
    fn fifo_output_reaches_reader_and_eof_follows_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = path.to_str().unwrap().to_string();
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
