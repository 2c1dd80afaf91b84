//! The one error type of the cgroup drivers.
//!
//! Every I/O variant carries the path it touched and what it was doing, so a failure reads
//! like `write "512" to /sys/fs/cgroup/pids/x/pids.max: Invalid argument (os error 22)`.
//! Callers branch on [`CgroupError::kind`], never on the message.

use std::{io, path::PathBuf};

/// What a caller (the shim) needs to know to map an error to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupErrorKind {
    /// The request itself is wrong: a malformed `cgroupsPath`, an impossible resource value,
    /// an unknown signal.
    InvalidArgument,
    /// The cgroup (or a file of it) does not exist.
    NotFound,
    /// The request is valid but this host cannot honour it (controller not mounted, interface
    /// file missing, feature absent in this cgroup version).
    Unsupported,
    /// Anything else: kernel refusals, timeouts, unexpected file contents.
    Internal,
}

/// Errors of the cgroup drivers.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file-system operation other than writing a value failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing a value into a cgroup interface file failed.
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    /// No cgroup hierarchy could be recognised under the given root.
    #[error("no cgroup v1 controller or cgroup v2 hierarchy found under {0}")]
    NoHierarchy(PathBuf),
    /// The host's mount disagrees with what the directory tree suggests.
    #[error("inconsistent cgroup layout at {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// `linux.cgroupsPath` (or the container id) cannot be turned into a cgroup path.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// A requested setting needs an interface file this host does not provide.
    #[error("{what} was requested but {file} does not exist on this host")]
    Unsupported { what: String, file: PathBuf },
    /// A requested setting cannot be expressed in this cgroup version at all.
    #[error("{what} is not supported on cgroup {version}")]
    NotInVersion { what: String, version: &'static str },
    /// A resource value is out of range or inconsistent with another one.
    #[error("invalid resource value: {0}")]
    InvalidResource(String),
    /// An interface file held something we could not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// The kernel did not reach the wanted state in time (freezer).
    #[error("timed out waiting for {path} to report {state}")]
    Timeout { path: PathBuf, state: &'static str },
    /// `kill(2)` failed for a reason other than "no such process".
    #[error("send signal {signal} to pid {pid}: {source}")]
    Signal {
        pid: i32,
        signal: i32,
        #[source]
        source: nix::Error,
    },
    /// The kernel refused the generated cgroup v2 device program; `log` is the verifier's.
    #[error("load the device program for {path}: {source}; verifier log: {log}")]
    DeviceProgram {
        path: PathBuf,
        log: String,
        #[source]
        source: io::Error,
    },
    /// The signal number is not a valid Linux signal.
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
}

impl CgroupError {
    /// The coarse category of this error (see [`CgroupErrorKind`]).
    pub fn kind(&self) -> CgroupErrorKind {
        match self {
            CgroupError::Io { source, .. } | CgroupError::Write { source, .. }
                if source.kind() == io::ErrorKind::NotFound =>
            {
                CgroupErrorKind::NotFound
            }
            CgroupError::InvalidPath { .. }
            | CgroupError::InvalidResource(_)
            | CgroupError::InvalidSignal(_) => CgroupErrorKind::InvalidArgument,
            CgroupError::NoHierarchy(_)
            | CgroupError::Unsupported { .. }
            | CgroupError::NotInVersion { .. } => CgroupErrorKind::Unsupported,
            _ => CgroupErrorKind::Internal,
        }
    }

    /// True when the cgroup or one of its files does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == CgroupErrorKind::NotFound
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CgroupError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause_not_the_message() {
        let missing = CgroupError::io("read", "/x", io::Error::from(io::ErrorKind::NotFound));
        assert!(missing.is_not_found());
        let denied = CgroupError::io(
            "read",
            "/x",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind(), CgroupErrorKind::Internal);
        assert_eq!(
            CgroupError::InvalidSignal(99).kind(),
            CgroupErrorKind::InvalidArgument
        );
        let unsupported = CgroupError::Unsupported {
            what: "pids limit".into(),
            file: "/x/pids.max".into(),
        };
        assert_eq!(unsupported.kind(), CgroupErrorKind::Unsupported);
        assert_eq!(
            unsupported.to_string(),
            "pids limit was requested but /x/pids.max does not exist on this host"
        );
    }

    #[test]
    fn write_errors_name_the_value_and_the_file() {
        let err = CgroupError::Write {
            path: "/cg/pids.max".into(),
            value: "12".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        let text = err.to_string();
        assert!(text.starts_with("write \"12\" to /cg/pids.max: "), "{text}");
    }
}
