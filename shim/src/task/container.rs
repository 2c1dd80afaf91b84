//! One container, its init process and its execs: the [`Lifecycle`] state machines behind
//! one short `std::sync::Mutex` (never held across an `.await`), plus the side effects of
//! each transition. Events are queued while the lock is held, which is what keeps TaskStart
//! (TaskExecStarted) ahead of TaskExit for a process that dies at once, and every exec's
//! TaskExit ahead of the init's: when the init exits while execs run, its exit is held
//! (the container still reads RUNNING) until the last of them has exited (checklist T-X3);
//! in a shared pid namespace they are killed first (T-X4), in its own the kernel does it.
//!
//! Pause freezes the whole cgroup, so it works the same for a Linux workload and a Wasm
//! one (wasmtime runs as the container's PID 1, an ordinary process of the cgroup). A
//! frozen task cannot act on SIGKILL until thawed: a SIGKILL to a paused task thaws its
//! cgroup right after the signal (as runc does), and a task that exits while frozen has
//! its cgroup thawed too, so nothing stays frozen behind a stopped task.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use amphi_linux_executor::cgroup::Cgroup;
use amphi_linux_executor::launch::Created;
use amphi_linux_executor::plan::InitPlan;
use containerd_shim::protos::api::Status;
use containerd_shim::protos::events::task::{
    TaskExecAdded, TaskExecStarted, TaskExit, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::topics::{
    TASK_EXEC_ADDED_EVENT_TOPIC, TASK_EXEC_STARTED_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC,
    TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use tokio::sync::watch;

use super::events::Events;
use super::exec::{ExecBase, ExecProcess};
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
    /// What execs into this container start from.
    pub exec_base: ExecBase,
}

struct Inner {
    life: Lifecycle<Created>,
    keepalive: Keepalive,
    execs: HashMap<String, ExecProcess>,
    /// The init's exit, held while execs still run (see the module docs).
    held_exit: Option<ExitInfo>,
    /// The OOM watch of the cgroup, from Create until Delete.
    oom: Option<OomWatcher>,
}

impl Inner {
    /// The init runs and its exit is not being held: execs may be added and started.
    fn init_running(&self) -> bool {
        self.life.status().0 == Status::RUNNING && self.held_exit.is_none()
    }
}

/// What `State` reports about one exec.
pub struct ExecStatus {
    pub pid: i32,
    pub status: Status,
    pub exit: Option<ExitInfo>,
    pub io: IoPaths,
}

pub struct Container {
    pub id: String,
    pub bundle: String,
    pub pid: i32,
    pub io: IoPaths,
    pub cgroup: Cgroup,
    pub mounted_rootfs: Option<PathBuf>,
    kill_all_on_exit: bool,
    pub exec_base: ExecBase,
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
            exec_base: parts.exec_base,
            inner: Mutex::new(Inner {
                life: Lifecycle::new(parts.created),
                keepalive: parts.keepalive,
                execs: HashMap::new(),
                held_exit: None,
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
        let done =
            |inner: &Inner| inner.life.status().0 == Status::STOPPED || inner.held_exit.is_some();
        let was_frozen = {
            let inner = self.lock();
            if done(&inner) {
                return;
            }
            inner.life.is_frozen()
        };
        // A frozen task's remaining processes act on no signal until thawed.
        if was_frozen {
            self.thaw_quietly();
        }
        // Execs included: their exits come before the init's (module docs).
        if self.kill_all_on_exit
            && let Err(e) = self.cgroup.kill_all(libc::SIGKILL)
        {
            log::warn!("container {}: kill remaining processes: {e}", self.id);
        }
        let mut inner = self.lock();
        if done(&inner) {
            return;
        }
        inner.keepalive.close_all();
        if inner.execs.values().any(ExecProcess::is_active) {
            log::info!(
                "container {}: init exited; its exit waits for the running execs",
                self.id
            );
            inner.held_exit = Some(exit);
            return;
        }
        self.publish_stop(&mut inner, exit, events);
    }

    /// Records the init's exit and publishes it (the lock is held: see the module docs).
    fn publish_stop(&self, inner: &mut Inner, exit: ExitInfo, events: &Events) {
        if !inner.life.stop(exit.clone()) {
            return;
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
        send_signal(self.pidfd.as_ref(), self.pid, signal, &self.id)
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

/// Sends `signal` through `pidfd` (by pid without one); `label` names the process in
/// errors.
fn send_signal(pidfd: Option<&OwnedFd>, pid: i32, signal: i32, label: &str) -> Result<()> {
    let result = match (pidfd, rustix::process::Signal::from_named_raw(signal)) {
        (Some(fd), Some(sig)) => rustix::process::pidfd_send_signal(fd, sig)
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error())),
        (_, None) => return Err(Error::InvalidArgument(format!("invalid signal {signal}"))),
        (None, Some(_)) => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(signal)
                .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?,
        )
        .map_err(std::io::Error::from),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(Error::NotFound(format!(
            "{label}: process already finished"
        ))),
        Err(e) => Err(Error::io("signal", pid, e)),
    }
}

/// The execs of a container (see [`super::exec`]). Every method takes the container's lock
/// once and never across an `.await`.
impl Container {
    fn exec_label(&self, exec_id: &str) -> String {
        format!("container {} exec {exec_id}", self.id)
    }

    fn not_found(&self, exec_id: &str) -> Error {
        Error::NotFound(format!("exec {exec_id} not found in container {}", self.id))
    }

    fn not_running(&self, exec_id: &str) -> Error {
        Error::FailedPrecondition(format!(
            "container {} is not running: cannot exec {exec_id} in it",
            self.id
        ))
    }

    /// The `Exec` RPC: registers a created exec and publishes TaskExecAdded.
    pub fn add_exec(
        &self,
        exec_id: &str,
        io: IoPaths,
        plan: InitPlan,
        events: &Events,
    ) -> Result<()> {
        let mut inner = self.lock();
        if inner.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} already exists in container {}",
                self.id
            )));
        }
        if !inner.init_running() {
            return Err(self.not_running(exec_id));
        }
        inner
            .execs
            .insert(exec_id.to_string(), ExecProcess::new(io, plan));
        events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Start, step 1: the exec goes from Created to Starting; returns its plan and stdio.
    pub fn begin_exec_start(&self, exec_id: &str) -> Result<(Arc<InitPlan>, IoPaths)> {
        let mut inner = self.lock();
        let running = inner.init_running();
        let label = self.exec_label(exec_id);
        let e = inner
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        if !running {
            return Err(self.not_running(exec_id));
        }
        e.life.begin_start(&label)?;
        Ok((e.plan.clone(), e.io.clone()))
    }

    /// A duplicate of the init's pidfd, for an exec helper to join its namespaces.
    pub fn init_pidfd(&self) -> Result<OwnedFd> {
        let fd = self.pidfd.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "container {}: no pidfd of its init (pid {}) to exec through",
                self.id, self.pid
            ))
        })?;
        fd.try_clone()
            .map_err(|e| Error::io("duplicate pidfd of init", self.pid, e))
    }

    /// Start, step 2: the exec's process waits on its barrier as `pid`. Fails (the caller
    /// drops the process, which then exits) if the init exited meanwhile.
    pub fn exec_launched(&self, exec_id: &str, pid: i32, keepalive: Keepalive) -> Result<()> {
        let mut inner = self.lock();
        let running = inner.init_running();
        let e = inner
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        if !running {
            return Err(self.not_running(exec_id));
        }
        // The process is blocked on its barrier, so this pid is still ours.
        e.pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .inspect_err(|err| log::warn!("exec {exec_id}: pidfd_open({pid}): {err}"))
                .ok()
        });
        e.pid = pid;
        e.keepalive = keepalive;
        Ok(())
    }

    /// Start, step 3 (the program runs): publishes TaskExecStarted, then any exit that
    /// raced it.
    pub fn finish_exec_start(&self, exec_id: &str, events: &Events) -> Result<i32> {
        let mut inner = self.lock();
        let e = inner
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        let pid = e.pid;
        events.send(
            TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        if let Some(exit) = e.life.end_start() {
            self.stop_exec(&mut inner, exec_id, exit, events);
        }
        Ok(pid)
    }

    /// Start failed after its process existed: it exits by itself and is recorded when
    /// reaped.
    pub fn fail_exec_start(&self, exec_id: &str, events: &Events) {
        let mut inner = self.lock();
        let pending = inner
            .execs
            .get_mut(exec_id)
            .and_then(|e| e.life.end_start());
        if let Some(exit) = pending {
            self.stop_exec(&mut inner, exec_id, exit, events);
        }
    }

    /// Start failed before any process existed: back to Created.
    pub fn abort_exec_start(&self, exec_id: &str, events: &Events) {
        let mut inner = self.lock();
        if let Some(e) = inner.execs.get_mut(exec_id) {
            e.life.abort_start(());
            e.keepalive.close_all();
        }
        self.release_held_exit(&mut inner, events);
    }

    /// An exec's process was reaped.
    pub fn on_exec_exit(&self, exec_id: &str, exit: ExitInfo, events: &Events) {
        let mut inner = self.lock();
        let now = inner
            .execs
            .get_mut(exec_id)
            .and_then(|e| e.life.exited(exit));
        if let Some(exit) = now {
            self.stop_exec(&mut inner, exec_id, exit, events);
        }
    }

    /// Records an exec's exit, publishes it, then the init's if it was waiting for this one.
    fn stop_exec(&self, inner: &mut Inner, exec_id: &str, exit: ExitInfo, events: &Events) {
        let Some(e) = inner.execs.get_mut(exec_id) else {
            return;
        };
        if !e.life.stop(exit.clone()) {
            return;
        }
        e.keepalive.close_all();
        log::info!(
            "container {}: exec {exec_id} (pid {}) exited with status {}",
            self.id,
            e.pid,
            exit.status
        );
        events.send(
            TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: self.id.clone(),
                id: exec_id.to_string(),
                pid: e.pid as u32,
                exit_status: exit.status,
                exited_at: Some(exit.at.clone()).into(),
                ..Default::default()
            },
        );
        e.exited.send_replace(Some(exit));
        self.release_held_exit(inner, events);
    }

    /// Publishes the init's held exit once no exec runs any more.
    fn release_held_exit(&self, inner: &mut Inner, events: &Events) {
        if inner.execs.values().any(ExecProcess::is_active) {
            return;
        }
        if let Some(exit) = inner.held_exit.take() {
            self.publish_stop(inner, exit, events);
        }
    }

    /// Signals an exec; FAILED_PRECONDITION before Start, NOT_FOUND once it finished.
    pub fn signal_exec(&self, exec_id: &str, signal: i32) -> Result<()> {
        let inner = self.lock();
        let label = self.exec_label(exec_id);
        let e = inner
            .execs
            .get(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        e.life.check_signal(&label)?;
        if e.pid == 0 {
            return Err(Error::FailedPrecondition(format!("{label} is not started")));
        }
        send_signal(e.pidfd.as_ref(), e.pid, signal, &label)
    }

    pub fn exec_status(&self, exec_id: &str) -> Result<ExecStatus> {
        let inner = self.lock();
        let e = inner
            .execs
            .get(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        let (status, exit) = e.life.status();
        Ok(ExecStatus {
            pid: e.pid,
            status,
            exit,
            io: e.io.clone(),
        })
    }

    /// Resolves once the exec has exited.
    pub async fn wait_exec(&self, exec_id: &str) -> Result<ExitInfo> {
        let mut rx = {
            let inner = self.lock();
            inner
                .execs
                .get(exec_id)
                .ok_or_else(|| self.not_found(exec_id))?
                .exited
                .subscribe()
        };
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return Ok(exit);
            }
            if rx.changed().await.is_err() {
                // Deleted while waiting.
                return Err(self.not_found(exec_id));
            }
        }
    }

    /// Forgets a created or stopped exec; returns its pid (0 if never started) and exit
    /// (`None` if never started).
    pub fn delete_exec(&self, exec_id: &str) -> Result<(i32, Option<ExitInfo>)> {
        let mut inner = self.lock();
        let label = self.exec_label(exec_id);
        let e = inner
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        let exit = e.life.prepare_delete(&label)?;
        let pid = e.pid;
        inner.execs.remove(exec_id);
        Ok((pid, exit))
    }

    /// `ResizePty` of the init (`exec_id` empty) or an exec: NOT_FOUND for an unknown exec,
    /// FAILED_PRECONDITION for a process created without a terminal (containerd-shim-runc-v2
    /// silently accepts that; a caller asking it is better told).
    pub fn resize_pty(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let inner = self.lock();
        let (keepalive, label) = if exec_id.is_empty() {
            (&inner.keepalive, format!("container {}", self.id))
        } else {
            let e = inner
                .execs
                .get(exec_id)
                .ok_or_else(|| self.not_found(exec_id))?;
            (&e.keepalive, self.exec_label(exec_id))
        };
        match keepalive.resize(rows, cols) {
            Some(result) => result.map_err(|e| Error::io("resize terminal of", label, e)),
            None if exec_id.is_empty() || inner.execs.get(exec_id).is_some_and(|e| e.pid != 0) => {
                Err(Error::FailedPrecondition(format!(
                    "{label} has no terminal (created with terminal=false): cannot resize it"
                )))
            }
            None => Err(Error::FailedPrecondition(format!(
                "{label} is not started: its terminal does not exist yet"
            ))),
        }
    }

    pub fn close_exec_stdin(&self, exec_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let e = inner
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| self.not_found(exec_id))?;
        e.keepalive.close_stdin();
        Ok(())
    }

    /// The exec id of every started exec, by pid.
    pub fn exec_pids(&self) -> HashMap<i32, String> {
        self.lock()
            .execs
            .iter()
            .filter(|(_, e)| e.pid != 0)
            .map(|(id, e)| (e.pid, id.clone()))
            .collect()
    }
}
