//! The last step of the container init, after the start barrier: hand the process over to
//! the workload.
//!
//! Both kinds first restore default signal dispositions and an empty signal mask, so the
//! workload starts as a freshly exec'd program would. The seccomp filter, when the init
//! did not load it already (it does, before the identity switch, without
//! `no_new_privileges`), is loaded as the very last step before the workload. Then:
//! - `Exec`: every fd above 2 is marked close-on-exec, the filter is loaded, and the
//!   program is `execve`d. The
//!   barrier socket closes with the exec, which the shim reads as "started"; an exec error is
//!   sent back (`ExecFailed`) and the process exits 127.
//! - `Wasm`: stray fds above 2 were already closed by the helper, before it opened the
//!   cache and prepared the module (see [`super::wasm`]); the barrier socket is closed here,
//!   explicitly (the same EOF the shim waits for) after the filter is loaded with
//!   `SECCOMP_FILTER_FLAG_TSYNC` (the runtime may have threads by now), then the module runs
//!   and its status is this process's exit status
//!   (`_exit`, after flushing Rust's stdout buffer).
//!
//! Limitations: a panic inside the runner unwinds out of `main` (exit status 101, message on
//! the container's stderr).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::execve;

use super::error::InitError;
use super::protocol::{FromInit, send_msg};
use super::seccomp::Filter;
use super::wasm::{GuestDir, PreparedWasm, WasmProcess};
use crate::plan::ProcessPlan;
use crate::sys;

/// What `execve` needs, prepared before the barrier so nothing can fail after `Start`
/// except the exec itself.
pub(super) struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Exec {
    /// The exec of `path` (already resolved) with the process's args and env.
    pub(super) fn new(path: CString, process: &ProcessPlan) -> Result<Exec, InitError> {
        let to_c = |v: &Vec<String>| {
            v.iter()
                .map(|s| CString::new(s.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| InitError::Invalid("process.args or env contains a NUL byte".into()))
        };
        Ok(Exec {
            path,
            argv: to_c(&process.args)?,
            envp: to_c(&process.env)?,
        })
    }
}

/// The workload, ready to go once the barrier is released.
pub(super) enum Job {
    /// A native program.
    Exec(Exec),
    /// A compiled WebAssembly module and the guest's view of the process.
    Wasm {
        /// From [`super::WasmRunner::prepare`].
        job: Box<dyn PreparedWasm>,
        /// Args, env, cwd, preopens.
        process: WasmProcess,
        /// The preopens, opened as detached clones.
        dirs: Vec<GuestDir>,
    },
}

/// Runs `job`, loading `seccomp` (when not loaded already) as the last step before the
/// workload; never returns.
pub(super) fn run(sock: OwnedFd, job: Job, seccomp: Option<Filter>) -> ! {
    if let Err(err) = default_signals() {
        let _ = send_msg(sock.as_fd(), &FromInit::ExecFailed(err.report()));
        sys::exit_now(127)
    }
    match job {
        Job::Exec(exec) => {
            let err = exec_workload(&exec, seccomp.as_ref());
            let _ = send_msg(sock.as_fd(), &FromInit::ExecFailed(err.report()));
            sys::exit_now(127)
        }
        Job::Wasm { job, process, dirs } => {
            // The module is compiled and mapped; the runtime may have started threads, so
            // the filter is synchronised to all of them (TSYNC).
            if let Some(filter) = &seccomp
                && let Err(err) = filter.load(true)
            {
                let _ = send_msg(sock.as_fd(), &FromInit::ExecFailed(err.report()));
                sys::exit_now(127)
            }
            // The shim's `Created::start` returns once it reads EOF here.
            drop(sock);
            let code = job.run(&process, dirs);
            let _ = std::io::stdout().flush();
            sys::exit_now(code)
        }
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Default dispositions for the signals Rust or the shim may have changed, empty mask.
fn default_signals() -> Result<(), InitError> {
    sys::reset_signal_dispositions()
        .map_err(|e| InitError::sys("reset signal dispositions", "")(errno_of(&e)))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(InitError::sys("sigprocmask", ""))
}

/// Fd hygiene, the seccomp filter, and `execve`. Returns only on failure.
fn exec_workload(exec: &Exec, seccomp: Option<&Filter>) -> InitError {
    if let Err(e) = sys::cloexec_from(3) {
        return InitError::sys("close_range", "fds above 2")(errno_of(&e));
    }
    if let Some(filter) = seccomp
        && let Err(e) = filter.load(false)
    {
        return e;
    }
    match execve(&exec.path, &exec.argv, &exec.envp) {
        Err(Errno::ENOENT) => InitError::NotFound(format!(
            "exec {:?}: no such file (or its interpreter is missing)",
            exec.path
        )),
        Err(Errno::EACCES) => InitError::Denied(format!("exec {:?}: permission denied", exec.path)),
        Err(e) => InitError::sys("execve", exec.path.to_string_lossy())(e),
    }
}
