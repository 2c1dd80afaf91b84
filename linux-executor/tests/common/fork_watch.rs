//! The descriptors a helper's forked process holds at the instant it exists: the test seizes
//! the helper with ptrace from `join_cgroup` (the helper has no plan yet, so it cannot have
//! forked), the fork stops both processes, the child's `/proc/<pid>/fd` is read, and both are
//! let go. That instant is when the child becomes visible in the container's pid namespace,
//! where a process with `CAP_SYS_PTRACE` could take any descriptor it holds; a descriptor the
//! child opens and closes later cannot be seen here (the container init's own rootfs setup,
//! before pivot_root, is like runc's and out of this check).

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// One descriptor of the forked process: its number and where `/proc/<pid>/fd/N` points.
pub type Fd = (i32, String);

/// What the tracer thread reports: the forked process's descriptors, or why it could not.
type Report = Result<Vec<Fd>, String>;

/// Watches the next helper passed to [`ForkWatch::join_cgroup`].
#[derive(Default)]
pub struct ForkWatch {
    result: Mutex<Option<Receiver<Report>>>,
}

impl ForkWatch {
    /// For `launch::create` / `launch::exec`: seizes `pid` and returns once it is traced.
    pub fn join_cgroup(&self, pid: i32) -> std::io::Result<()> {
        let (ready_tx, ready_rx) = channel();
        let (tx, rx) = channel();
        std::thread::spawn(move || trace(pid, &ready_tx, &tx));
        ready_rx
            .recv()
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        Ok(())
    }

    /// The forked process's descriptors (waits for the tracer thread).
    pub fn fds(&self) -> Vec<Fd> {
        let rx = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("join_cgroup was called");
        rx.recv()
            .expect("tracer thread")
            .unwrap_or_else(|e| panic!("watching the fork: {e}"))
    }
}

fn trace(pid: i32, ready: &Sender<Result<(), String>>, done: &Sender<Report>) {
    let helper = Pid::from_raw(pid);
    if let Err(e) = ptrace::seize(helper, ptrace::Options::PTRACE_O_TRACEFORK) {
        let _ = ready.send(Err(format!("PTRACE_SEIZE {pid}: {e}")));
        return;
    }
    let _ = ready.send(Ok(()));
    let _ = done.send(until_fork(helper));
}

fn until_fork(helper: Pid) -> Report {
    loop {
        match waitpid(helper, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, _, event)) if event == libc::PTRACE_EVENT_FORK => {
                let child = ptrace::getevent(helper).map_err(|e| format!("GETEVENTMSG: {e}"))?;
                let child = Pid::from_raw(child as i32);
                // A traced fork's child starts in a stop of its own.
                waitpid(child, Some(WaitPidFlag::__WALL))
                    .map_err(|e| format!("wait child: {e}"))?;
                let fds = list_fds(child.as_raw());
                let _ = ptrace::detach(child, None);
                let _ = ptrace::detach(helper, None);
                return fds;
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return Err(format!("the helper exited with {code} before forking"));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Err(format!("the helper was killed by {sig} before forking"));
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                // A signal-delivery stop: deliver it.
                ptrace::cont(helper, Some(sig)).map_err(|e| format!("PTRACE_CONT: {e}"))?;
            }
            Ok(_) => ptrace::cont(helper, None).map_err(|e| format!("PTRACE_CONT: {e}"))?,
            Err(e) => return Err(format!("waitpid {helper}: {e}")),
        }
    }
}

fn list_fds(pid: i32) -> Report {
    let dir = format!("/proc/{pid}/fd");
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("read {dir}: {e}"))? {
        let entry = entry.map_err(|e| format!("read {dir}: {e}"))?;
        let Some(n) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let target = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("<{e}>"));
        fds.push((n, target));
    }
    fds.sort();
    Ok(fds)
}

/// The descriptors above stdio that name a file or directory (a path), i.e. anything but
/// sockets, pipes and anonymous inodes such as pidfds.
pub fn path_fds(fds: &[Fd]) -> Vec<&Fd> {
    fds.iter()
        .filter(|(n, target)| *n > 2 && target.starts_with('/'))
        .collect()
}
