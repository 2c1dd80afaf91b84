//! One container and its init process: the [`Lifecycle`] state machine behind a short
//! `std::sync::Mutex` (never held across an `.await`), plus the side effects of each
//! transition. Events are queued while the lock is held, which is what keeps TaskStart
//! ahead of TaskExit for a process that dies at once (and TaskPaused/TaskResumed in the
//! order the transitions happened).
//!
//! Pause freezes the whole cgroup, so it works the same for a Linux workload and a Wasm
//! one (wasmtime runs as the container's PID 1, an ordinary process of the cgroup). A
//! frozen task cannot act on SIGKILL until thawed: a SIGKILL to a paused task thaws its
//! cgroup right after the signal (as runc does), and a task that exits while frozen has
//! its cgroup thawed too, so nothing stays frozen behind a stopped task.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;

use amphi_linux_executor::cgroup::Cgroup;
use amphi_linux_executor::launch::Created;
use containerd_shim::protos::api::Status;
use containerd_shim::protos::events::task::{TaskExit, TaskPaused, TaskResumed, TaskStart};
use containerd_shim::protos::topics::{
    TASK_EXIT_EVENT_TOPIC, TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC,
    TASK_START_EVENT_TOPIC,
};
use tokio::sync::watch;

use super::events::Events;
use super::lifecycle::{ExitInfo, Lifecycle, PauseOutcome};
use super::oom::OomWatcher;
use crate::error::{Error, Result};
use crate::stdio::Keepalive;

/// The stdio a task was created with, as containerd reports it back in `State`.
#[derive(Debug, Clone, Default)]
pub struct IoPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What Create built for a container, handed over to the [`Container`].
pub struct Parts {
    pub created: Created,
    pub keepalive: Keepalive,
    pub cgroup: Cgroup,
    pub mounted_rootfs: Option<PathBuf>,
    /// The container shares a pid namespace (host or pod): its init's death does not
    /// take the other processes with it, so the shim must (checklist T-X4).
    pub kill_all_on_exit: bool,
}

struct Inner {
    life: Lifecycle<Created>,
    keepalive: Keepalive,
    /// The OOM watch of the cgroup, from Create until Delete.
    oom: Option<OomWatcher>,
}

pub struct Container {
    pub id: String,
    pub bundle: String,
    pub pid: i32,
    pub io: IoPaths,
    pub cgroup: Cgroup,
    pub mounted_rootfs: Option<PathBuf>,
    kill_all_on_exit: bool,
    /// A pidfd of the init, opened while it could not have been reaped yet: signals
    /// through it can never reach a recycled pid.
    pidfd: Option<OwnedFd>,
    inner: Mutex<Inner>,
    exited: watch::Sender<Option<ExitInfo>>,
}

impl Container {
    pub fn new(id: String, bundle: String, io: IoPaths, parts: Parts) -> Self {
        let pid = parts.created.pid();
        // The init is blocked on its start barrier, so this pid is still ours.
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .inspect_err(|e| log::warn!("container {id}: pidfd_open({pid}): {e}"))
                .ok()
        });
        Container {
            id,
            bundle,
            pid,
            pidfd,
            io,
            cgroup: parts.cgroup,
            mounted_rootfs: parts.mounted_rootfs,
            kill_all_on_exit: parts.kill_all_on_exit,
            inner: Mutex::new(Inner {
                life: Lifecycle::new(parts.created),
                keepalive: parts.keepalive,
                oom: None,
            }),
            exited: watch::channel(None).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock is a bug; keep serving the other containers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> (Status, Option<ExitInfo>) {
        self.lock().life.status()
    }

    pub fn begin_start(&self) -> Result<Created> {
        self.lock().life.begin_start(&self.id)
    }

    /// The workload was exec'd: publish TaskStart, then any exit that raced it.
    pub fn finish_start(&self, events: &Events) {
        let pending = {
            let mut inner = self.lock();
            events.send(
                TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: self.id.clone(),
                    pid: self.pid as u32,
                    ..Default::default()
                },
            );
            inner.life.end_start()
        };
        if let Some(exit) = pending {
            self.stop(exit, events);
        }
    }

    /// The start failed: the init exits on its own and is recorded when reaped.
    pub fn fail_start(&self, events: &Events) {
        let pending = self.lock().life.end_start();
        if let Some(exit) = pending {
            self.stop(exit, events);
        }
    }

    /// The init was reaped.
    pub fn on_exit(&self, exit: ExitInfo, events: &Events) {
        let now = self.lock().life.exited(exit);
        if let Some(exit) = now {
            self.stop(exit, events);
        }
    }

    fn stop(&self, exit: ExitInfo, events: &Events) {
        let was_frozen = {
            let mut inner = self.lock();
            let was_frozen = inner.life.is_frozen();
            if !inner.life.stop(exit.clone()) {
                return;
            }
            inner.keepalive.close_all();
            was_frozen
        };
        if was_frozen {
            self.thaw_quietly();
        }
        if self.kill_all_on_exit
            && let Err(e) = self.cgroup.kill_all(libc::SIGKILL)
        {
            log::warn!("container {}: kill remaining processes: {e}", self.id);
        }
        events.send(
            TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: self.id.clone(),
                id: self.id.clone(),
                pid: self.pid as u32,
                exit_status: exit.status,
                exited_at: Some(exit.at.clone()).into(),
                ..Default::default()
            },
        );
        self.exited.send_replace(Some(exit));
    }

    /// Signals the init; NOT_FOUND once it has finished.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.lock().life.check_signal(&self.id)?;
        let finished =
            || Error::NotFound(format!("container {}: process already finished", self.id));
        let result = match (&self.pidfd, rustix::process::Signal::from_named_raw(signal)) {
            (Some(fd), Some(sig)) => rustix::process::pidfd_send_signal(fd, sig)
                .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error())),
            (_, None) => return Err(Error::InvalidArgument(format!("invalid signal {signal}"))),
            (None, Some(_)) => nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::try_from(signal)
                    .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?,
            )
            .map_err(std::io::Error::from),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(finished()),
            Err(e) => Err(Error::io("signal", self.pid, e)),
        }
    }

    /// After a signal reached the task: a SIGKILL to a paused task thaws its cgroup so the
    /// kill takes effect (a frozen process acts on no signal); the task then counts as
    /// running until its exit is reaped. Other signals stay pending until Resume.
    pub fn after_signal(&self, signal: i32, events: &Events) {
        if signal != libc::SIGKILL {
            return;
        }
        let mut inner = self.lock();
        if !inner.life.is_frozen() {
            return;
        }
        match self.cgroup.thaw() {
            Ok(()) => {
                inner.life.resumed();
                log::info!("container {}: thawed after SIGKILL", self.id);
                events.send(
                    TASK_RESUMED_EVENT_TOPIC,
                    TaskResumed {
                        container_id: self.id.clone(),
                        ..Default::default()
                    },
                );
            }
            Err(e) => log::warn!("container {}: thaw after SIGKILL: {e}", self.id),
        }
    }

    /// `kill --all` goes through [`Cgroup::kill_all`], which leaves the cgroup thawed.
    /// For a paused task: SIGKILL counts as a resume (see [`Self::after_signal`]); any
    /// other signal freezes the cgroup again, so the task stays paused as State says.
    pub fn after_kill_all(&self, signal: i32, events: &Events) {
        if signal == libc::SIGKILL {
            return self.after_signal(signal, events);
        }
        // The lock is held through the freeze (fast: the cgroup was frozen a moment ago)
        // so a concurrent Resume cannot thaw in between and leave RUNNING frozen.
        let inner = self.lock();
        if inner.life.is_frozen()
            && let Err(e) = self.cgroup.freeze()
        {
            log::warn!("container {}: freeze again after kill --all: {e}", self.id);
        }
    }

    /// Pause, first half: the task must be running; it is PAUSING from now on.
    pub fn begin_pause(&self) -> Result<()> {
        self.lock().life.begin_pause(&self.id)
    }

    /// Pause, second half, once the freeze (run without the lock) has returned.
    pub fn end_pause(&self, frozen: Result<()>, events: &Events) -> Result<()> {
        let mut inner = self.lock();
        match inner.life.end_pause(frozen.is_ok()) {
            PauseOutcome::Paused => {
                events.send(
                    TASK_PAUSED_EVENT_TOPIC,
                    TaskPaused {
                        container_id: self.id.clone(),
                        ..Default::default()
                    },
                );
                log::info!("container {} paused", self.id);
                Ok(())
            }
            PauseOutcome::Failed => frozen,
            PauseOutcome::Overtaken => {
                drop(inner);
                self.thaw_quietly();
                Err(Error::FailedPrecondition(format!(
                    "container {} was killed or exited while being paused",
                    self.id
                )))
            }
        }
    }

    /// Resume: thaws the cgroup of a paused task and publishes TaskResumed.
    pub fn resume(&self, events: &Events) -> Result<()> {
        let mut inner = self.lock();
        inner.life.check_resume(&self.id)?;
        // One write to the freezer: short enough to do under the lock, which keeps a
        // concurrent Kill or exit from seeing a half-resumed task.
        self.cgroup.thaw().map_err(Error::cgroup("resume"))?;
        inner.life.resumed();
        events.send(
            TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: self.id.clone(),
                ..Default::default()
            },
        );
        log::info!("container {} resumed", self.id);
        Ok(())
    }

    /// Thaws the cgroup, logging a failure (a cgroup already gone is fine).
    fn thaw_quietly(&self) {
        if let Err(e) = self.cgroup.thaw()
            && !e.is_not_found()
        {
            log::warn!("container {}: thaw: {e}", self.id);
        }
    }

    /// Fails with FAILED_PRECONDITION once the init has finished (Update).
    pub fn check_not_stopped(&self) -> Result<()> {
        match self.lock().life.status().0 {
            Status::STOPPED => Err(Error::FailedPrecondition(format!(
                "container {} has already stopped",
                self.id
            ))),
            _ => Ok(()),
        }
    }

    /// Keeps the OOM watch until [`Self::stop_oom_watch`] (Delete).
    pub fn set_oom_watch(&self, watcher: OomWatcher) {
        self.lock().oom = Some(watcher);
    }

    /// Ends the OOM watch (its task and its file descriptors).
    pub fn stop_oom_watch(&self) {
        let watcher = self.lock().oom.take();
        drop(watcher);
    }

    /// Fails with NOT_FOUND once the init has finished.
    pub fn check_running(&self) -> Result<()> {
        self.lock().life.check_signal(&self.id)
    }

    pub fn prepare_delete(&self) -> Result<Option<ExitInfo>> {
        self.lock().life.prepare_delete(&self.id)
    }

    pub fn close_stdin(&self) {
        self.lock().keepalive.close_stdin();
    }

    /// Resolves once the init has exited.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            // The sender lives in `self`, so the channel cannot close while we wait.
            let _ = rx.changed().await;
        }
    }
}
