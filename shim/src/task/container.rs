//! One container and its init process: the [`Lifecycle`] state machine behind a short
//! `std::sync::Mutex` (never held across an `.await`), plus the side effects of each
//! transition. Events are queued while the lock is held, which is what keeps TaskStart
//! ahead of TaskExit for a process that dies at once.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;

use amphi_linux_executor::cgroup::Cgroup;
use amphi_linux_executor::launch::Created;
use containerd_shim::protos::api::Status;
use containerd_shim::protos::events::task::{TaskExit, TaskStart};
use containerd_shim::protos::topics::{TASK_EXIT_EVENT_TOPIC, TASK_START_EVENT_TOPIC};
use tokio::sync::watch;

use super::events::Events;
use super::lifecycle::{ExitInfo, Lifecycle};
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
        {
            let mut inner = self.lock();
            if !inner.life.stop(exit.clone()) {
                return;
            }
            inner.keepalive.close_all();
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
