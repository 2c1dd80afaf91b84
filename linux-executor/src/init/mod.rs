//! The init helper: the process that builds a Linux container and becomes its PID 1.
//!
//! The shim re-executes its own binary as `<exe> init` ([`crate::launch::create`]) and routes
//! that argument to [`main`] before any thread exists. The helper is single-threaded, so it
//! may fork. Data flow:
//!
//! 1. become non-dumpable; take the socket on fd 3; read the [`crate::plan::InitPlan`]
//!    ([`protocol`]);
//! 2. write `oom_score_adj` through the host's `/proc` (inherited by the fork), join and
//!    create namespaces ([`namespaces`]), with the id-map handshake for a new user namespace,
//!    then hostname and domainname (they belong to the new UTS namespace); the host's
//!    `/proc` is closed before step 3;
//! 3. fork; the parent reports the child's host pid and exits at once (the shim's reaper
//!    collects it); the child continues as the container init once its parent is gone;
//! 4. the child: `setsid`, the rootfs and pivot_root ([`rootfs`],
//!    [`mounts`], [`devices`], [`cgroupfs`]), with `process.terminal` the pty (allocated in
//!    the container's devpts, its master sent to the shim, its slave the controlling
//!    terminal and stdio: [`console`]), rlimits, identity and capabilities, cwd,
//!    executable lookup ([`process`]);
//!    The seccomp filter ([`seccomp`]) is compiled here; without `noNewPrivileges` it is
//!    loaded before the identity switch (loading needs `CAP_SYS_ADMIN` then, as in runc);
//! 5. report `Ready` and block on the start barrier; on `Start`, mark every fd above 2
//!    close-on-exec, restore default signal dispositions, load the seccomp filter (with
//!    `noNewPrivileges`) and `execve` ([`run`]). The socket
//!    is close-on-exec, so its EOF tells the shim the exec happened; an exec error is sent
//!    back and the process exits 127. EOF on the barrier (the shim dropped `Created`) exits 1.
//!
//! An exec into a running container (the `Exec` message, [`crate::launch::exec`]) takes the
//! same path with step 2 replaced by one `setns` on the container init's pidfd (fd 4; see
//! [`namespaces::join`]; `oom_score_adj` is written before it) and
//! step 4 reduced to the process part: no rootfs, mounts or hostname, which the container
//! already has (a terminal is allocated in the joined container's devpts, without the
//! `/dev/console` bind). The forked process is the exec'd one: it joins the container's pid namespace,
//! is already in its cgroup (the shim placed the helper there), and keeps the non-dumpable
//! flag and fd discipline of an init until its `execve`.
//!
//! A WebAssembly workload ([`crate::plan::Workload::Wasm`], only with [`main_with`]) follows
//! the same steps with these differences, detailed in [`wasm`]: in step 1 the cache
//! directory (and a read-only clone of it) is opened; the runner prepares (compiles or
//! loads) the module in the helper, before step 3's fork into the container's pid namespace
//! (a new container: before step 2, reading the module from the rootfs the shim mounted; an
//! exec: after joining), so a bad module fails `Create` and no process of the container
//! ever sees a process holding a host handle; after pivot_root, while still root, the
//! guest's directories are opened as detached clones; on `Start` the socket is closed
//! explicitly and the module runs in this process, whose exit status is the module's. There
//! is no `PATH` lookup ([`WasmRunner::prepare`] checks the module path). The module runs
//! under the container's seccomp filter, loaded after the module is compiled and mapped and
//! before the guest runs, synchronised to every thread of the runtime (TSYNC).
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
//! A binary that can run WebAssembly calls [`main_with`] there instead, with its
//! [`WasmRunner`].
//!
//! Host handles (docs/architecture.md): the helper is executed through the shim's sealed
//! handle on its binary ([`crate::sealed`]), so what runs in the container's namespaces
//! until `execve` (a Wasm workload: for its whole life) is never the host's file; it closes
//! every inherited descriptor but its socket (and an exec's pidfd) first, and uses the
//! host's `/proc` only before the fork, in the helper, which the container cannot see.
//!
//! Limitations: no hooks, no seccomp agent (`SCMP_ACT_NOTIFY`; see [`crate::plan`]). A
//! seccomp profile must allow what the init itself does after loading it: with
//! `noNewPrivileges` only `execve` (the Wasm runtime: what wasmtime needs, which
//! containerd's default profile allows); without it, the identity switch, `chdir`, the
//! start barrier's socket I/O, `rt_sigaction`, `close_range` and `execve`, as with runc.

mod cgroupfs;
mod console;
mod devices;
mod error;
mod lsm;
mod mounts;
mod namespaces;
mod paths;
mod process;
pub(crate) mod protocol;
mod rootfs;
mod run;
pub(crate) mod seccomp;
mod wasm;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sys::prctl;
use nix::unistd::{ForkResult, pipe2, setsid};

use crate::plan::InitPlan;
use crate::sys;
use error::InitError;
use protocol::{FromInit, INIT_PIDFD_FD, INIT_SOCKET_FD, ToInit, recv_msg, send_msg};
use run::{Exec, Job};
use seccomp::Filter;
use wasm::WasmInput;
pub use wasm::{GuestDir, HostFiles, PreparedWasm, WasmPrepareError, WasmProcess, WasmRunner};

/// Entry point of the helper (`<exe> init`). Reads its instructions from fd 3; never returns.
/// Fails a WebAssembly workload at `Create` ("this binary cannot run WebAssembly").
pub fn main() -> ! {
    init_main(None)
}

/// Like [`main`], but able to run WebAssembly workloads with `wasm`.
pub fn main_with(wasm: &dyn WasmRunner) -> ! {
    init_main(Some(wasm))
}

fn init_main(runner: Option<&dyn WasmRunner>) -> ! {
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
    // Whatever the shim's process inherited without close-on-exec reached us too: nothing
    // but the launch socket and an exec's pidfd may go on towards the container.
    if let Err(e) = close_inherited(&[INIT_SOCKET_FD, INIT_PIDFD_FD]) {
        fail(sock.as_fd(), &e);
    }
    let (plan, exec) = match receive_plan(sock.as_fd()) {
        Ok(Some(received)) => received,
        Ok(None) => sys::exit_now(1),
        Err(e) => fail(sock.as_fd(), &e),
    };
    if !exec && let Err(e) = close_inherited(&[INIT_SOCKET_FD]) {
        fail(sock.as_fd(), &e);
    }
    // An exec: the container init to join (its pidfd, taken before any namespace is joined).
    let joining = match exec.then(exec_init_pidfd).transpose() {
        Ok(joining) => joining,
        Err(e) => fail(sock.as_fd(), &e),
    };
    let wasm = match wasm::wasm_input(&plan, runner) {
        Ok(wasm) => wasm,
        Err(e) => fail(sock.as_fd(), &e),
    };
    let wasm = match wasm.map(|input| open_wasm_files(sock.as_fd(), input)) {
        Some(Ok(input)) => Some(input),
        Some(Err(e)) => fail(sock.as_fd(), &e),
        None => None,
    };
    // The host's /proc is used here, by the helper, and closed before the fork: the forked
    // process becomes visible in the container's pid namespace, where another process with
    // CAP_SYS_PTRACE could take any descriptor it holds (docs/architecture.md, "Host
    // handles"). oom_score_adj is inherited by the fork; the names need the new UTS
    // namespace, so they are set between entering the namespaces and the fork. A Wasm
    // module is compiled (or loaded) here too, for the same reason.
    let host_lsm = lsm::HostLsm::detect();
    let host_proc = match rootfs::open_host_proc() {
        Ok(fd) => fd,
        Err(e) => fail(sock.as_fd(), &e),
    };
    if let Err(e) = process::set_oom_score_adj(host_proc.as_fd(), &plan.process) {
        fail(sock.as_fd(), &e);
    }
    let entered = match joining {
        Some(init) => enter_and_fork(sock.as_fd(), || {
            namespaces::join(&plan, init)?;
            // Joined: our root is the container's.
            let prepared = wasm
                .map(|input| prepare_wasm(input, Path::new("/"), host_proc.as_fd()))
                .transpose();
            drop(host_proc);
            prepared
        }),
        None => enter_and_fork(sock.as_fd(), || {
            let prepared = wasm
                .map(|input| prepare_wasm(input, &plan.rootfs, host_proc.as_fd()))
                .transpose()?;
            namespaces::enter(&plan, sock.as_fd())?;
            process::set_names(host_proc.as_fd(), &plan)?;
            drop(host_proc);
            Ok(prepared)
        }),
    };
    match entered {
        Ok((Role::Helper, _)) => sys::exit_now(0),
        Ok((Role::ContainerInit, prepared)) => {
            container_init(sock, &plan, prepared, exec, host_lsm)
        }
        Err(e) => fail(sock.as_fd(), &e),
    }
}

/// Step 1 for a Wasm workload (stray inherited fds are already closed): opens the cache
/// directory, its read-only view and the host module file, all before any namespace is
/// entered.
fn open_wasm_files<'a>(
    sock: BorrowedFd<'_>,
    mut input: WasmInput<'a>,
) -> Result<WasmInput<'a>, InitError> {
    // The cache is a host directory, owned by the host's root.
    let cache = wasm::open_cache_dir(input.workload);
    input.files.cache_dir = cache.dir;
    input.files.cache_view = cache.view;
    if let Some(w) = cache.warning {
        let _ = send_msg(sock, &FromInit::Warning(w));
    }
    input.files.module = wasm::open_host_module(input.workload)?;
    Ok(input)
}

/// Step 2 of the [`wasm`] docs, in the helper: the runner compiles or loads the module
/// with the container's root at `root`; every handle of [`HostFiles`] is closed when it
/// returns, and the helper must still be single-threaded (it forks next).
fn prepare_wasm(
    mut input: WasmInput<'_>,
    root: &Path,
    proc_: BorrowedFd<'_>,
) -> Result<Box<dyn PreparedWasm>, InitError> {
    input.files.root = Some(wasm::open_root(root)?);
    let prepared = input
        .runner
        .prepare(input.workload, input.files)
        .map_err(|e| InitError::Classified {
            kind: e.kind,
            message: e.message,
        })?;
    wasm::assert_single_threaded(proc_)?;
    Ok(prepared)
}

/// An exec helper's container init to join: its pidfd (fd 4), taken before any namespace is
/// joined.
fn exec_init_pidfd() -> Result<OwnedFd, InitError> {
    sys::take_inherited_pidfd(INIT_PIDFD_FD)
        .map_err(|source| InitError::Protocol {
            what: "take the container init's pidfd (fd 4)",
            source,
        })?
        .ok_or_else(namespaces::init_exited)
}

/// Closes every descriptor above 2 but `keep`.
fn close_inherited(keep: &[i32]) -> Result<(), InitError> {
    sys::close_fds_except(3, keep).map_err(|e| {
        InitError::sys("close_range", "inherited fds above 2")(nix::errno::Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ))
    })
}

/// Reports `e` to the shim and exits 1.
fn fail(sock: BorrowedFd<'_>, e: &InitError) -> ! {
    // If the shim is gone there is nobody left to tell.
    let _ = send_msg(sock, &FromInit::Failed(e.report()));
    sys::exit_now(1)
}

/// The plan, and whether it is an exec into a running container.
fn receive_plan(sock: BorrowedFd<'_>) -> Result<Option<(InitPlan, bool)>, InitError> {
    match recv_msg::<ToInit>(sock) {
        Ok(Some(ToInit::Plan(plan))) => Ok(Some((*plan, false))),
        Ok(Some(ToInit::Exec(plan))) => Ok(Some((*plan, true))),
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

/// Steps 2 (`enter`: create and join, or join a running container; for a Wasm workload it
/// also prepares the module, whose result `T` the container init inherits) and 3 of the
/// module docs.
fn enter_and_fork<T>(
    sock: BorrowedFd<'_>,
    enter: impl FnOnce() -> Result<T, InitError>,
) -> Result<(Role, T), InitError> {
    let entered = enter()?;
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
            Ok((Role::Helper, entered))
        }
        ForkResult::Child => {
            drop(gate_w);
            wait_for_eof(gate_r);
            Ok((Role::ContainerInit, entered))
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

/// The forked process: a new container's init, or an exec (`exec`).
fn container_init(
    sock: OwnedFd,
    plan: &InitPlan,
    wasm: Option<Box<dyn PreparedWasm>>,
    exec: bool,
    host_lsm: lsm::HostLsm,
) -> ! {
    let mut warnings = Vec::new();
    let (job, seccomp) = match setup(plan, wasm, sock.as_fd(), exec, host_lsm, &mut warnings) {
        Ok(ready) => ready,
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
    run::run(sock, job, seccomp)
}

/// Step 4 of the module docs; for a Wasm workload (already prepared by the helper), also
/// the guest's directories ([`wasm`]). An exec skips the container's own setup. Returns the
/// job and the seccomp filter still to load right before it runs.
fn setup(
    plan: &InitPlan,
    wasm: Option<Box<dyn PreparedWasm>>,
    sock: BorrowedFd<'_>,
    exec: bool,
    host_lsm: lsm::HostLsm,
    warnings: &mut Vec<String>,
) -> Result<(Job, Option<Filter>), InitError> {
    setsid().map_err(InitError::sys("setsid", "container init"))?;
    lsm::check(plan, host_lsm, warnings)?;
    let pty = if !exec {
        rootfs::setup(plan, host_lsm, warnings)?
    } else if plan.process.terminal {
        Some(console::allocate_in_joined_container()?)
    } else {
        None
    };
    if let Some(pty) = pty {
        console::hand_over(pty, sock, plan.process.console_size)?;
    }
    process::set_rlimits(&plan.process)?;
    // Compiled before the barrier, so a profile the library refuses fails `Create`.
    let filter = plan.seccomp.as_ref().map(seccomp::compile).transpose()?;
    // Still root, after pivot_root: the guest's directories are detached clones, which
    // needs CAP_SYS_ADMIN. The identity switch below applies to the run, as for `Exec`.
    let prepared = wasm
        .map(|job| {
            let process = WasmProcess::from_plan(plan, &|p: &Path| p.is_dir());
            wasm::open_guest_dirs(&process).map(|dirs| (job, process, dirs))
        })
        .transpose()?;
    // Labels before the seccomp filter (their private procfs needs fsopen) and before
    // no_new_privileges and the identity switch (runc's order).
    lsm::apply(plan, host_lsm, prepared.is_some())?;
    // Without no_new_privileges, loading a filter needs CAP_SYS_ADMIN: load it now, before
    // the identity switch drops it (as runc does). With it, as late as possible ([`run`]).
    let filter = match filter {
        Some(f) if !plan.process.no_new_privileges => {
            f.load(prepared.is_some())?;
            None
        }
        other => other,
    };
    process::switch_identity(plan, warnings)?;
    process::set_umask(&plan.process);
    process::enter_cwd(&plan.process)?;
    let job = match prepared {
        Some((job, process, dirs)) => Job::Wasm { job, process, dirs },
        None => Job::Exec(Exec::new(
            process::resolve_executable(&plan.process)?,
            &plan.process,
        )?),
    };
    Ok((job, filter))
}
