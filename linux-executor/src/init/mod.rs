//! The init helper: the process that builds a Linux container and becomes its PID 1.
//!
//! The shim re-executes its own binary as `<exe> init` ([`crate::launch::create`]) and routes
//! that argument to [`main`] before any thread exists. The helper is single-threaded, so it
//! may fork. Data flow:
//!
//! 1. become non-dumpable; take the socket on fd 3; read the [`crate::plan::InitPlan`]
//!    ([`protocol`]);
//! 2. join and create namespaces ([`namespaces`]), with the id-map handshake for a new
//!    user namespace;
//! 3. fork; the parent reports the child's host pid and exits at once (the shim's reaper
//!    collects it); the child continues as the container init once its parent is gone;
//! 4. the child: `setsid`, oom_score_adj, the rootfs and pivot_root ([`rootfs`],
//!    [`mounts`], [`devices`], [`cgroupfs`]), hostname, rlimits, identity and capabilities,
//!    cwd, executable lookup ([`process`]);
//! 5. report `Ready` and block on the start barrier; on `Start`, mark every fd above 2
//!    close-on-exec, restore default signal dispositions and `execve`. The socket is
//!    close-on-exec, so its EOF tells the shim the exec happened; an exec error is sent back
//!    and the process exits 127. EOF on the barrier (the shim dropped `Created`) exits 1.
//!
//! The shim routes the subcommand first thing in `main`, before any thread exists:
//!
//! ```no_run
//! // The first statement of the shim's `main`:
//! if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
//!     amphi_linux_executor::init::main();
//! }
//! ```
//!
//! Limitations: no seccomp, no terminal, no hooks (see [`crate::plan`]). The init runs the
//! shim's binary inside the container's namespaces until `execve`; it is non-dumpable, so
//! only a process with `CAP_SYS_PTRACE` over it could open its `/proc/<pid>/exe` (a sealed
//! copy of the binary, as runc's `exeseal`, is not used).

mod cgroupfs;
mod devices;
mod error;
mod mounts;
mod namespaces;
mod paths;
mod process;
pub(crate) mod protocol;
mod rootfs;

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::prctl;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::{ForkResult, execve, pipe2, setsid};

use crate::plan::InitPlan;
use crate::sys;
use error::InitError;
use protocol::{FromInit, INIT_SOCKET_FD, ToInit, recv_msg, send_msg};

/// Entry point of the helper (`<exe> init`). Reads its instructions from fd 3; never returns.
pub fn main() -> ! {
    // First of all: nobody may ptrace us or open our /proc files while we run the shim's
    // binary in the container's namespaces (CVE-2019-5736). execve resets it.
    let dumpable = prctl::set_dumpable(false);
    let Ok(sock) = sys::take_inherited_socket(INIT_SOCKET_FD) else {
        // Nobody to report to: we were not started by the launcher.
        eprintln!("amphi init: fd 3 is not the launcher's socket; this command is internal");
        sys::exit_now(2)
    };
    if let Err(e) = dumpable {
        fail(sock.as_fd(), &InitError::sys("prctl", "PR_SET_DUMPABLE")(e));
    }
    let plan = match receive_plan(sock.as_fd()) {
        Ok(Some(plan)) => plan,
        Ok(None) => sys::exit_now(1),
        Err(e) => fail(sock.as_fd(), &e),
    };
    match enter_and_fork(&plan, sock.as_fd()) {
        Ok(Role::Helper) => sys::exit_now(0),
        Ok(Role::ContainerInit) => container_init(sock, &plan),
        Err(e) => fail(sock.as_fd(), &e),
    }
}

/// Reports `e` to the shim and exits 1.
fn fail(sock: BorrowedFd<'_>, e: &InitError) -> ! {
    // If the shim is gone there is nobody left to tell.
    let _ = send_msg(sock, &FromInit::Failed(e.report()));
    sys::exit_now(1)
}

fn receive_plan(sock: BorrowedFd<'_>) -> Result<Option<InitPlan>, InitError> {
    match recv_msg::<ToInit>(sock) {
        Ok(Some(ToInit::Plan(plan))) => Ok(Some(*plan)),
        Ok(None) => Ok(None),
        Ok(Some(other)) => Err(InitError::Protocol {
            what: "receive plan",
            source: std::io::Error::other(format!("unexpected message {other:?}")),
        }),
        Err(source) => Err(InitError::Protocol {
            what: "receive plan",
            source,
        }),
    }
}

enum Role {
    Helper,
    ContainerInit,
}

/// Steps 2 and 3 of the module docs.
fn enter_and_fork(plan: &InitPlan, sock: BorrowedFd<'_>) -> Result<Role, InitError> {
    namespaces::enter(plan, sock)?;
    let (gate_r, gate_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(InitError::sys("pipe2", "start gate"))?;
    match sys::fork_single_threaded().map_err(InitError::sys("fork", "container init"))? {
        ForkResult::Parent { child } => {
            drop(gate_r);
            let sent = send_msg(sock, &FromInit::InitPid(child.as_raw()));
            // Exiting closes `gate_w`, which lets the child go on.
            drop(gate_w);
            sent.map_err(|source| InitError::Protocol {
                what: "report init pid",
                source,
            })?;
            Ok(Role::Helper)
        }
        ForkResult::Child => {
            drop(gate_w);
            wait_for_eof(gate_r);
            Ok(Role::ContainerInit)
        }
    }
}

/// Blocks until every writer of the pipe is gone (the parent exited).
fn wait_for_eof(fd: OwnedFd) {
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Err(nix::errno::Errno::EINTR) | Ok(1..) => continue,
            _ => return,
        }
    }
}

/// What `execve` needs, prepared before the barrier so nothing can fail after `Start`
/// except the exec itself.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn container_init(sock: OwnedFd, plan: &InitPlan) -> ! {
    let mut warnings = Vec::new();
    let exec = match setup(plan, &mut warnings) {
        Ok(exec) => exec,
        Err(e) => fail(sock.as_fd(), &e),
    };
    for w in warnings {
        let _ = send_msg(sock.as_fd(), &FromInit::Warning(w));
    }
    if send_msg(sock.as_fd(), &FromInit::Ready).is_err() {
        sys::exit_now(1);
    }
    match recv_msg::<ToInit>(sock.as_fd()) {
        Ok(Some(ToInit::Start)) => {}
        // EOF: the shim dropped the container before starting it.
        _ => sys::exit_now(1),
    }
    let err = exec_workload(&exec);
    let _ = send_msg(sock.as_fd(), &FromInit::ExecFailed(err.report()));
    sys::exit_now(127)
}

/// Step 4 of the module docs.
fn setup(plan: &InitPlan, warnings: &mut Vec<String>) -> Result<Exec, InitError> {
    setsid().map_err(InitError::sys("setsid", "container init"))?;
    let proc_ = rootfs::open_host_proc()?;
    process::set_oom_score_adj(proc_.as_fd(), &plan.process)?;
    process::set_names(proc_.as_fd(), plan)?;
    drop(proc_);
    rootfs::setup(plan, warnings)?;
    process::set_rlimits(&plan.process)?;
    process::switch_identity(plan, warnings)?;
    process::set_umask(&plan.process);
    process::enter_cwd(&plan.process)?;
    let path = process::resolve_executable(&plan.process)?;
    let to_c = |v: &Vec<String>| {
        v.iter()
            .map(|s| CString::new(s.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| InitError::Invalid("process.args or env contains a NUL byte".into()))
    };
    Ok(Exec {
        path,
        argv: to_c(&plan.process.args)?,
        envp: to_c(&plan.process.env)?,
    })
}

/// Fd hygiene, default signals, `execve`. Returns only on failure.
fn exec_workload(exec: &Exec) -> InitError {
    if let Err(e) = sys::cloexec_from(3) {
        return InitError::sys("close_range", "fds above 2")(nix::errno::Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ));
    }
    if let Err(e) = sys::reset_signal_dispositions() {
        return InitError::sys("reset signal dispositions", "")(nix::errno::Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ));
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        return InitError::sys("sigprocmask", "")(e);
    }
    match execve(&exec.path, &exec.argv, &exec.envp) {
        Err(nix::errno::Errno::ENOENT) => InitError::NotFound(format!(
            "exec {:?}: no such file (or its interpreter is missing)",
            exec.path
        )),
        Err(nix::errno::Errno::EACCES) => {
            InitError::Denied(format!("exec {:?}: permission denied", exec.path))
        }
        Err(e) => InitError::sys("execve", exec.path.to_string_lossy())(e),
    }
}
