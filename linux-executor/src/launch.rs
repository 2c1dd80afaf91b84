//! The shim side of container creation: start the init helper and drive it through the
//! [`crate::init::protocol`] conversation.
//!
//! Runs inside the multi-threaded shim, so it never forks by hand: the helper is started
//! with `std::process::Command` (`<exe> init`, empty environment, cwd `/`), its stdio taken
//! from [`InitIo`] and the socket mapped to fd 3 with `command-fds`. Then:
//! `join_cgroup(helper pid)` (the helper is still blocked waiting for its plan), send the
//! plan, write id maps on request, learn the container init's host pid, collect warnings,
//! and return [`Created`] on `Ready`. [`Created::start`] releases the barrier. With
//! `process.terminal` the process sends the pty master on the way (`Console`, the descriptor
//! received close-on-exec); the shim takes it with [`Created::take_console`].
//!
//! [`exec`] starts another process in a running container the same way: the helper gets the
//! plan as `Exec` and a pidfd of the container's init as fd 4, joins the init's namespaces
//! instead of creating any, and the [`Created`] it yields is released by the same
//! [`Created::start`].
//!
//! This module never calls `waitpid`: the shim's global reaper owns every exit status. The
//! helper exits right after forking and the container init is reparented to the shim (a
//! child subreaper). On any failure, whatever was started is killed with SIGKILL.
//!
//! Limitations: kills and the "start succeeded" conclusion are pid-based, not pidfd-based
//! (an init killed between `Ready` and `Start` also yields EOF, which reads as success; the
//! reaper then reports its exit); every wait is bounded by [`STEP_TIMEOUT`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::init::protocol::{
    FromInit, INIT_PIDFD_FD, INIT_SOCKET_FD, ReportedError, ToInit, recv_msg, recv_msg_with_fds,
    send_msg,
};
use crate::plan::{InitPlan, id_map_text};

/// The longest the shim waits for one step of the helper.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How an error should be reported to containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The spec asks for something invalid.
    InvalidArgument,
    /// Something the container needs (executable, cwd, bind source) does not exist.
    NotFound,
    /// A setting needs a privilege the shim or the host lacks.
    PermissionDenied,
    /// The container is not in a state that allows the operation (an exec whose container
    /// init has exited).
    FailedPrecondition,
    /// Anything else.
    Internal,
}

/// Stdio of the container process; `None` is `/dev/null`.
#[derive(Debug, Default)]
pub struct InitIo {
    /// fd 0 of the workload.
    pub stdin: Option<OwnedFd>,
    /// fd 1 of the workload.
    pub stdout: Option<OwnedFd>,
    /// fd 2 of the workload.
    pub stderr: Option<OwnedFd>,
}

/// Why a container could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The socketpair for the helper could not be created.
    #[error("create socketpair for init helper: {0}")]
    Socket(#[source] std::io::Error),
    /// The helper could not be spawned.
    #[error("spawn init helper {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The `join_cgroup` callback failed.
    #[error("place init helper (pid {pid}) in its cgroup: {source}")]
    JoinCgroup {
        /// Helper pid.
        pid: i32,
        /// The error.
        source: std::io::Error,
    },
    /// Writing a user-namespace map failed.
    #[error("write {path}: {source}")]
    IdMap {
        /// `/proc/<pid>/uid_map` or `gid_map`.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The helper or container init reported an error while creating the container.
    #[error("{message}")]
    Init {
        /// Classification from the helper.
        kind: ErrorKind,
        /// The helper's message.
        message: String,
    },
    /// `execve` of the workload failed at start.
    #[error("start: {message}")]
    Exec {
        /// Classification from the init.
        kind: ErrorKind,
        /// The init's message.
        message: String,
    },
    /// The helper went away without saying why (killed, crashed).
    #[error("init helper exited without reporting while {0}")]
    Vanished(&'static str),
    /// No answer within [`STEP_TIMEOUT`].
    #[error("timed out after {secs}s while {what}")]
    Timeout {
        /// The step.
        what: &'static str,
        /// The limit, [`STEP_TIMEOUT`].
        secs: u64,
    },
    /// Any other I/O failure around the launch (for callers wrapping, e.g., a failed
    /// `spawn_blocking` join).
    #[error("launch container init: {0}")]
    Io(#[from] std::io::Error),
    /// The conversation with the helper broke.
    #[error("talk to init helper while {what}: {source}")]
    Protocol {
        /// The step.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

impl LaunchError {
    /// The classification the shim turns into a ttrpc code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LaunchError::Init { kind, .. } | LaunchError::Exec { kind, .. } => *kind,
            LaunchError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            LaunchError::IdMap { source, .. } | LaunchError::JoinCgroup { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ErrorKind::PermissionDenied
            }
            _ => ErrorKind::Internal,
        }
    }

    fn from_report(r: ReportedError) -> Self {
        LaunchError::Init {
            kind: r.kind,
            message: r.message,
        }
    }
}

/// A created container: its init waits on the start barrier.
#[derive(Debug)]
pub struct Created {
    sock: OwnedFd,
    pid: i32,
    warnings: Vec<String>,
    console: Option<OwnedFd>,
}

impl Created {
    /// Host pid of the container's PID 1 (the process that will execve the workload).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Notes from the init (capabilities the host cannot grant, mount fallbacks...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The master of the process's terminal (`process.terminal`), once: close-on-exec,
    /// blocking. `None` without a terminal.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Releases the start barrier. `Ok` once `execve` succeeded (the close-on-exec socket
    /// reached EOF), `Err` with the exec error otherwise.
    pub fn start(self) -> Result<(), LaunchError> {
        const STEP: &str = "waiting for exec";
        match send_msg(self.sock.as_fd(), &ToInit::Start) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                return Err(LaunchError::Vanished("starting"));
            }
            Err(source) => {
                return Err(LaunchError::Protocol {
                    what: "starting",
                    source,
                });
            }
        }
        match recv_msg::<FromInit>(self.sock.as_fd()) {
            Ok(None) => Ok(()),
            Ok(Some(FromInit::ExecFailed(r))) => Err(LaunchError::Exec {
                kind: r.kind,
                message: r.message,
            }),
            Ok(Some(other)) => Err(LaunchError::Protocol {
                what: STEP,
                source: std::io::Error::other(format!("unexpected message {other:?}")),
            }),
            Err(e) => Err(recv_error(STEP, e)),
        }
    }
}

fn recv_error(what: &'static str, e: std::io::Error) -> LaunchError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => LaunchError::Timeout {
            what,
            secs: STEP_TIMEOUT.as_secs(),
        },
        _ => LaunchError::Protocol { what, source: e },
    }
}

/// Kills what was started unless disarmed.
struct KillOnDrop {
    pids: Vec<i32>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.pids {
            // ESRCH (already gone) is fine: the reaper collects it either way.
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

/// Creates a container from `plan`: spawns `<exe> init`, lets `join_cgroup` place the helper
/// (before it unshares anything), and returns once the container init is ready.
pub fn create(
    exe: &Path,
    plan: &InitPlan,
    io: InitIo,
    join_cgroup: &dyn Fn(i32) -> std::io::Result<()>,
) -> Result<Created, LaunchError> {
    launch(exe, plan, None, io, join_cgroup)
}

/// Starts `plan`'s process (from [`InitPlan::for_exec`]) in the running container whose
/// init `init_pidfd` refers to: spawns `<exe> init`, lets `join_cgroup` place the helper in
/// the container's cgroup (before it joins any namespace), and returns once the process is
/// ready, waiting on its start barrier like a created container.
pub fn exec(
    exe: &Path,
    plan: &InitPlan,
    init_pidfd: OwnedFd,
    io: InitIo,
    join_cgroup: &dyn Fn(i32) -> std::io::Result<()>,
) -> Result<Created, LaunchError> {
    launch(exe, plan, Some(init_pidfd), io, join_cgroup)
}

/// [`create`] (no pidfd) or [`exec`] (the pidfd of the init to join).
fn launch(
    exe: &Path,
    plan: &InitPlan,
    init_pidfd: Option<OwnedFd>,
    io: InitIo,
    join_cgroup: &dyn Fn(i32) -> std::io::Result<()>,
) -> Result<Created, LaunchError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| LaunchError::Socket(e.into()))?;
    setsockopt(
        &ours,
        sockopt::ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: STEP_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        }),
    )
    .map_err(|e| LaunchError::Socket(e.into()))?;

    let mut cmd = Command::new(exe);
    cmd.arg("init")
        .env_clear()
        .current_dir("/")
        .stdin(stdio(io.stdin))
        .stdout(stdio(io.stdout))
        .stderr(stdio(io.stderr));
    let mut mappings = vec![FdMapping {
        parent_fd: theirs,
        child_fd: INIT_SOCKET_FD,
    }];
    let first = match init_pidfd {
        Some(pidfd) => {
            mappings.push(FdMapping {
                parent_fd: pidfd,
                child_fd: INIT_PIDFD_FD,
            });
            ToInit::Exec(Box::new(plan.clone()))
        }
        None => ToInit::Plan(Box::new(plan.clone())),
    };
    cmd.fd_mappings(mappings)
        .map_err(|e| LaunchError::Socket(std::io::Error::other(e.to_string())))?;
    let spawned = cmd.spawn();
    // Dropping the command closes our copies of the helper's socket end and stdio, so the
    // helper's exit is visible as EOF.
    drop(cmd);
    let child = spawned.map_err(|source| LaunchError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let helper =
        i32::try_from(child.id()).map_err(|e| LaunchError::Socket(std::io::Error::other(e)))?;
    // `Child` does not wait on drop; the shim's reaper collects the helper.
    drop(child);
    let mut guard = KillOnDrop { pids: vec![helper] };

    join_cgroup(helper).map_err(|source| LaunchError::JoinCgroup {
        pid: helper,
        source,
    })?;
    send_msg(ours.as_fd(), &first).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPIPE) {
            LaunchError::Vanished("sending the plan")
        } else {
            LaunchError::Protocol {
                what: "sending the plan",
                source: e,
            }
        }
    })?;

    let mut pid = None;
    let mut warnings = Vec::new();
    let mut console = None;
    loop {
        const STEP: &str = "creating the container";
        let received =
            recv_msg_with_fds::<FromInit>(ours.as_fd()).map_err(|e| recv_error(STEP, e))?;
        // Descriptors are only expected with `Console`; any other is dropped (closed) here.
        let (msg, mut fds) = match received {
            Some((msg, fds)) => (Some(msg), fds),
            None => (None, Vec::new()),
        };
        match msg {
            None => return Err(LaunchError::Vanished(STEP)),
            Some(FromInit::Console) => {
                if !plan.process.terminal || console.is_some() || fds.len() != 1 {
                    return Err(protocol_error(format!(
                        "unexpected terminal with {} descriptor(s) (terminal asked: {})",
                        fds.len(),
                        plan.process.terminal
                    )));
                }
                console = fds.pop();
            }
            Some(FromInit::NeedIdMaps) => {
                write_id_maps(helper, plan)?;
                send_msg(ours.as_fd(), &ToInit::IdMapsWritten).map_err(|source| {
                    LaunchError::Protocol {
                        what: "acknowledging id maps",
                        source,
                    }
                })?;
            }
            Some(FromInit::InitPid(p)) => {
                pid = Some(p);
                guard.pids.push(p);
            }
            Some(FromInit::Warning(w)) => warnings.push(w),
            Some(FromInit::Failed(r)) => return Err(LaunchError::from_report(r)),
            Some(FromInit::Ready) => break,
            Some(FromInit::ExecFailed(r)) => return Err(LaunchError::from_report(r)),
        }
    }
    let Some(pid) = pid else {
        return Err(protocol_error(
            "ready before the init pid was reported".into(),
        ));
    };
    if plan.process.terminal && console.is_none() {
        return Err(protocol_error(
            "ready without the terminal it was asked for".into(),
        ));
    }
    guard.pids.clear();
    Ok(Created {
        sock: ours,
        pid,
        warnings,
        console,
    })
}

fn protocol_error(message: String) -> LaunchError {
    LaunchError::Protocol {
        what: "creating the container",
        source: std::io::Error::other(message),
    }
}

fn write_id_maps(helper: i32, plan: &InitPlan) -> Result<(), LaunchError> {
    for (file, maps) in [
        ("uid_map", &plan.uid_mappings),
        ("gid_map", &plan.gid_mappings),
    ] {
        let path = format!("/proc/{helper}/{file}");
        std::fs::write(&path, id_map_text(maps))
            .map_err(|source| LaunchError::IdMap { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_errors() {
        let e = LaunchError::Init {
            kind: ErrorKind::NotFound,
            message: "executable \"foo\" not found in $PATH of the container".into(),
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "executable \"foo\" not found in $PATH of the container"
        );
        let spawn = LaunchError::Spawn {
            exe: "/nope".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(spawn.kind(), ErrorKind::NotFound);
        let timeout = LaunchError::Timeout {
            what: "x",
            secs: 60,
        };
        assert_eq!(timeout.kind(), ErrorKind::Internal);
        assert_eq!(timeout.to_string(), "timed out after 60s while x");
        let denied = LaunchError::IdMap {
            path: "/proc/1/uid_map".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn spawn_failure_of_a_missing_exe_is_not_found() {
        let plan = InitPlan::from_spec(&oci_spec::runtime::Spec::default(), Path::new("/tmp"))
            .expect("the default spec plans");
        let err = create(
            Path::new("/nonexistent/amphi"),
            &plan,
            InitIo::default(),
            &|_| Ok(()),
        )
        .expect_err("missing exe");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
}
