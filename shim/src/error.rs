//! The shim's error type and its single translation to ttrpc status codes.
//!
//! Every error is created with its kind already decided (the place that knows why an
//! operation failed also knows whether containerd should read it as "no such task",
//! "bad request" or "wrong state"). [`From<Error> for ttrpc::Error`] is the only place a
//! kind becomes a wire code; nothing matches on message text.

use amphi_linux_executor::cgroup::{CgroupError, CgroupErrorKind};
use amphi_linux_executor::launch::{ErrorKind as LaunchKind, LaunchError};
use amphi_linux_executor::plan::PlanError;
use containerd_shim::protos::ttrpc::{self, Code};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown container or exec id, or a process that already finished.
    #[error("{0}")]
    NotFound(String),
    /// Duplicate container or exec id.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the task is in the wrong state for it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bad input: a broken config.json, a missing rootfs, an unsupported option.
    #[error("{0}")]
    InvalidArgument(String),
    /// An RPC this shim does not implement yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The spec asks for something this host does not allow (e.g. a missing capability).
    #[error("{0}")]
    PermissionDenied(String),
    /// The spec could not be turned into a sandbox plan.
    #[error("invalid container spec: {0}")]
    Plan(#[from] PlanError),
    /// Creating or starting the container process failed.
    #[error("{0}")]
    Launch(#[from] LaunchError),
    /// A cgroup operation failed.
    #[error("cgroup {op}: {source}")]
    Cgroup {
        op: &'static str,
        #[source]
        source: CgroupError,
    },
    /// A system call or file operation of the shim itself failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A failure inside the containerd-shim crate (mounts, publisher, protobuf).
    #[error("{0}")]
    Shim(#[from] containerd_shim::Error),
}

impl Error {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub fn cgroup(op: &'static str) -> impl FnOnce(CgroupError) -> Self {
        move |source| Error::Cgroup { op, source }
    }

    /// The ttrpc status code containerd will see.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) | Error::Plan(_) => Code::INVALID_ARGUMENT,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::PermissionDenied(_) => Code::PERMISSION_DENIED,
            Error::Launch(e) => match e.kind() {
                LaunchKind::InvalidArgument => Code::INVALID_ARGUMENT,
                // A missing executable or cwd inside the container is bad input from
                // containerd's point of view; NOT_FOUND would read as "no such task".
                LaunchKind::NotFound => Code::INVALID_ARGUMENT,
                LaunchKind::PermissionDenied => Code::PERMISSION_DENIED,
                LaunchKind::FailedPrecondition => Code::FAILED_PRECONDITION,
                LaunchKind::Internal => Code::INTERNAL,
            },
            // A resource the spec asks for that this host cannot express is bad input.
            Error::Cgroup { source, .. } => match source.kind() {
                CgroupErrorKind::InvalidArgument | CgroupErrorKind::Unsupported => {
                    Code::INVALID_ARGUMENT
                }
                CgroupErrorKind::NotFound | CgroupErrorKind::Internal => Code::INTERNAL,
            },
            Error::Io { .. } | Error::Shim(_) => Code::INTERNAL,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wire_code(e: Error) -> Code {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(status) => status.code(),
            other => panic!("expected an RpcStatus, got {other:?}"),
        }
    }

    #[test]
    fn kinds_map_to_the_codes_containerd_expects() {
        assert_eq!(wire_code(Error::NotFound("x".into())), Code::NOT_FOUND);
        assert_eq!(
            wire_code(Error::AlreadyExists("x".into())),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            wire_code(Error::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            wire_code(Error::InvalidArgument("x".into())),
            Code::INVALID_ARGUMENT
        );
        // Not the generated NOT_FOUND default, and not the crate's UNKNOWN.
        assert_eq!(
            wire_code(Error::Unimplemented("x".into())),
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            wire_code(Error::io(
                "open",
                "/x",
                std::io::Error::from_raw_os_error(libc::EIO)
            )),
            Code::INTERNAL
        );
    }

    #[test]
    fn message_reaches_the_wire_unchanged() {
        let e = Error::InvalidArgument("config.json: missing field `process`".into());
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(status) => {
                assert_eq!(status.message(), "config.json: missing field `process`")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
