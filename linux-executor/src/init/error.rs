//! Errors of the init helper, classified for the shim.
//!
//! The helper cannot return errors to anyone but the shim, so each [`InitError`] is turned
//! into a [`ReportedError`] (kind + message) and sent over the socket before the helper
//! exits. Messages name the operation and the path (container paths for things inside the
//! container, host paths otherwise).

use nix::errno::Errno;

use super::protocol::ReportedError;
use crate::launch::ErrorKind;

/// Why building the container failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// A syscall failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What we were doing (`mount proc`, `open namespace`...).
        op: String,
        /// The path or object involved.
        path: String,
        /// The errno.
        source: Errno,
    },
    /// A setting needs a privilege this process or host lacks.
    #[error("cannot set {setting}: {reason}")]
    Permission {
        /// The setting, with its value.
        setting: String,
        /// Why, naming the missing capability.
        reason: String,
    },
    /// Something the container needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Access to something the container needs is denied.
    #[error("{0}")]
    Denied(String),
    /// The spec asks for something inconsistent with the host (wrong namespace type...).
    #[error("{0}")]
    Invalid(String),
    /// An error already classified elsewhere (the Wasm runner, a missing capability of
    /// this binary).
    #[error("{message}")]
    Classified {
        /// How the shim reports it.
        kind: ErrorKind,
        /// The message.
        message: String,
    },
    /// Talking to the shim failed.
    #[error("{what}: {source}")]
    Protocol {
        /// The step.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl InitError {
    /// Shorthand for `map_err(InitError::sys("mount", path))`.
    pub(crate) fn sys(
        op: impl Into<String>,
        path: impl std::fmt::Display,
    ) -> impl FnOnce(Errno) -> InitError {
        let op = op.into();
        let path = path.to_string();
        move |source| InitError::Sys { op, path, source }
    }

    /// The shim-facing classification.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            InitError::Sys { .. } | InitError::Protocol { .. } => ErrorKind::Internal,
            InitError::Permission { .. } | InitError::Denied(_) => ErrorKind::PermissionDenied,
            InitError::NotFound(_) => ErrorKind::NotFound,
            InitError::Invalid(_) => ErrorKind::InvalidArgument,
            InitError::Classified { kind, .. } => *kind,
        }
    }

    /// The message sent to the shim.
    pub(crate) fn report(&self) -> ReportedError {
        ReportedError {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_errors_name_operation_and_path() {
        let e = InitError::sys("mount proc on", "/proc")(Errno::EPERM);
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(
            e.to_string(),
            "mount proc on /proc: EPERM: Operation not permitted"
        );
        let p = InitError::Permission {
            setting: "oom_score_adj to -999".into(),
            reason: "this host lacks CAP_SYS_RESOURCE".into(),
        };
        assert_eq!(p.report().kind, ErrorKind::PermissionDenied);
        assert_eq!(
            p.to_string(),
            "cannot set oom_score_adj to -999: this host lacks CAP_SYS_RESOURCE"
        );
    }
}
