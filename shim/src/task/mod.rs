//! The containers one shim serves (a whole pod when containerd groups them) and the
//! operations containerd's Task API performs on them, on a container's init (`exec_id`
//! empty) or on one of its execs ([`exec`]). [`crate::service`] only adapts these to
//! ttrpc; everything that decides something lives here or in [`container`].
//!
//! Every reaped pid is routed through one registry (`by_pid`) to the process it was: a
//! container's init or one of its execs; others (the intermediate init helpers, a process
//! that died before it was registered) are remembered for a while as orphans.
//!
//! Pause, Resume, Update, Stats and the OOM watch are cgroup operations, done the same
//! way for a Linux and a Wasm container (both are processes in the container's cgroup).

mod container;
pub mod events;
mod exec;
mod lifecycle;
mod oom;
mod sandbox;

pub use sandbox::destroy_persisted;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amphi_linux_executor::cgroup::CgroupRoot;
use amphi_linux_executor::launch;
use amphi_linux_executor::sealed::SealedExe;
use containerd_shim::protos::api::{
    CreateTaskRequest, DeleteResponse, ExecProcessRequest, ProcessInfo, StateResponse, Status,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskIO};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::topics::{TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use container::{Container, IoPaths, Parts};
pub use events::Events;
pub use lifecycle::ExitInfo;

use crate::error::{Error, Result};
use crate::image::ContainerdApi;
use crate::reaper::Exit;
use crate::stdio;
use amphi_linux_executor::plan::InitPlan;

/// How many exits of unknown pids are remembered (the intermediate init helpers, and
/// a process that dies before it is registered).
const ORPHAN_EXITS: usize = 256;
/// How long Delete waits for a created-but-never-started init to go away.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whose a registered pid is: a container's init (`exec: None`) or one of its execs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    container: String,
    exec: Option<String>,
}

#[derive(Default)]
struct Registry {
    containers: HashMap<String, Arc<Container>>,
    by_pid: HashMap<i32, Owner>,
    orphans: VecDeque<Exit>,
}

impl Registry {
    /// Registers `pid`; returns its exit if it was already reaped.
    fn register(&mut self, pid: i32, owner: Owner) -> Option<Exit> {
        self.by_pid.insert(pid, owner);
        let i = self.orphans.iter().position(|e| e.pid == pid);
        i.and_then(|i| self.orphans.remove(i))
    }
}

pub struct Tasks {
    registry: Mutex<Registry>,
    events: Events,
    cgroups: std::result::Result<CgroupRoot, String>,
    /// Our own binary, sealed, re-executed as each container's init and exec helpers (an
    /// error when it could not be sealed: no container is created then).
    exe: std::result::Result<SealedExe, String>,
    /// containerd's gRPC API, asked about a container's image when dispatch needs it.
    containerd: ContainerdApi,
}

/// Seals our own binary for the helpers (linux-executor `sealed`), logging how, once.
fn sealed_exe() -> std::result::Result<SealedExe, String> {
    match SealedExe::current() {
        Ok(sealed) => {
            log::info!(
                "helpers run {} through {}",
                sealed.original().display(),
                sealed.kind()
            );
            Ok(sealed)
        }
        Err(e) => {
            log::error!("{e}");
            Err(e.to_string())
        }
    }
}

impl Tasks {
    pub fn new(events: Events, containerd: ContainerdApi) -> Self {
        Tasks {
            registry: Mutex::default(),
            events,
            cgroups: CgroupRoot::detect().map_err(|e| e.to_string()),
            exe: sealed_exe(),
            containerd,
        }
    }

    /// The path helpers are executed through (the sealed handle's `/proc/self/fd/N`).
    fn helper_exe(&self) -> Result<PathBuf> {
        self.exe
            .as_ref()
            .map(SealedExe::path)
            .map_err(|e| Error::FailedPrecondition(format!("refusing to run containers: {e}")))
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.registry()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    pub fn is_empty(&self) -> bool {
        self.registry().containers.is_empty()
    }

    pub async fn create(&self, req: &CreateTaskRequest) -> Result<i32> {
        if self.registry().containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let cgroups = self.cgroups.as_ref().map_err(|e| {
            Error::FailedPrecondition(format!("cannot use this host's cgroups: {e}"))
        })?;
        let sandbox = sandbox::create(req, cgroups, &self.helper_exe()?, &self.containerd).await?;
        let container = Arc::new(Container::new(
            req.id.clone(),
            req.bundle.clone(),
            IoPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            sandbox,
        ));
        let pid = container.pid;
        if let Some(watcher) = oom::watch(&req.id, &container.cgroup, &self.events) {
            container.set_oom_watch(watcher);
        }
        self.events.send(
            TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        let early_exit = {
            let mut reg = self.registry();
            reg.containers.insert(req.id.clone(), container.clone());
            reg.register(
                pid,
                Owner {
                    container: req.id.clone(),
                    exec: None,
                },
            )
        };
        if let Some(exit) = early_exit {
            self.route_exit(&container, None, exit);
        }
        log::info!("container {} created, init pid {pid}", req.id);
        Ok(pid)
    }

    pub async fn start(&self, id: &str) -> Result<i32> {
        let container = self.get(id)?;
        let created = container.begin_start()?;
        let started = tokio::task::spawn_blocking(move || created.start())
            .await
            .map_err(|e| Error::Launch(std::io::Error::other(e).into()))
            .and_then(|r| r.map_err(Error::from));
        match started {
            Ok(()) => {
                container.finish_start(&self.events);
                Ok(container.pid)
            }
            Err(e) => {
                container.fail_start(&self.events);
                // The init exits right after reporting the failure. Answer only once its
                // exit is recorded, so the client's immediate Delete finds it stopped.
                if tokio::time::timeout(RELEASE_TIMEOUT, container.wait())
                    .await
                    .is_err()
                {
                    log::warn!(
                        "container {id}: init {} still alive after a failed start",
                        container.pid
                    );
                }
                Err(e)
            }
        }
    }

    /// Signals the init (with `all`: every process of the container) or an exec (`all`
    /// is then ignored, as by runc's shim).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let container = self.get(id)?;
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| Signal::try_from(*s).is_ok())
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        if !exec_id.is_empty() {
            return container.signal_exec(exec_id, sig);
        }
        if all {
            container.check_running()?;
            container
                .cgroup
                .kill_all(sig)
                .map_err(Error::cgroup("kill all"))?;
            container.after_kill_all(sig, &self.events);
            return Ok(());
        }
        container.signal(sig)?;
        container.after_signal(sig, &self.events);
        Ok(())
    }

    /// Freezes every process of the container (Linux or Wasm alike) and publishes
    /// TaskPaused once the kernel reports the cgroup frozen.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let container = self.get(id)?;
        container.begin_pause()?;
        let cgroup = container.cgroup.clone();
        let frozen = tokio::task::spawn_blocking(move || cgroup.freeze())
            .await
            .map_err(|e| Error::io("freeze", id, std::io::Error::other(e)))
            .and_then(|r| r.map_err(Error::cgroup("pause")));
        container.end_pause(frozen, &self.events)
    }

    /// Thaws a paused container and publishes TaskResumed.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.get(id)?.resume(&self.events)
    }

    /// Applies the resources of an Update request to the container's cgroup.
    pub fn update(&self, id: &str, resources: Option<&Any>) -> Result<()> {
        let container = self.get(id)?;
        let resources = crate::resources::decode(resources)?;
        container.check_not_stopped()?;
        container
            .cgroup
            .apply(&resources)
            .map_err(Error::cgroup("update"))?;
        log::info!("container {id}: resources updated");
        Ok(())
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let container = self.get(id)?;
        if !exec_id.is_empty() {
            return container.wait_exec(exec_id).await;
        }
        Ok(container.wait().await)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<StateResponse> {
        let c = self.get(id)?;
        if !exec_id.is_empty() {
            let e = c.exec_status(exec_id)?;
            return Ok(StateResponse {
                id: exec_id.to_string(),
                exec_id: exec_id.to_string(),
                bundle: c.bundle.clone(),
                pid: e.pid as u32,
                status: e.status.into(),
                stdin: e.io.stdin,
                stdout: e.io.stdout,
                stderr: e.io.stderr,
                terminal: e.io.terminal,
                exit_status: e.exit.as_ref().map(|e| e.status).unwrap_or_default(),
                exited_at: e.exit.map(|e| e.at).into(),
                ..Default::default()
            });
        }
        let (status, exit) = c.status();
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.clone(),
            pid: c.pid as u32,
            status: status.into(),
            stdin: c.io.stdin.clone(),
            stdout: c.io.stdout.clone(),
            stderr: c.io.stderr.clone(),
            terminal: c.io.terminal,
            exit_status: exit.as_ref().map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    pub fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        let c = self.get(id)?;
        let mut pids = c.cgroup.pids().map_err(Error::cgroup("list pids"))?;
        // Between Create and the first process in the cgroup, report the init anyway:
        // containerd treats an empty list as a leaked shim after a restart.
        if pids.is_empty() && c.status().0 != Status::STOPPED {
            pids.push(c.pid);
        }
        let execs = c.exec_pids();
        Ok(pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                info: execs.get(&pid).map(|id| exec::process_details(id)).into(),
                ..Default::default()
            })
            .collect())
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<DeleteResponse> {
        let c = self.get(id)?;
        if !exec_id.is_empty() {
            return self.delete_exec(&c, exec_id);
        }
        let exit = match c.prepare_delete()? {
            Some(exit) => exit,
            None => {
                // Never started: make sure the init is gone before removing its cgroup.
                let _ = kill(Pid::from_raw(c.pid), Signal::SIGKILL);
                tokio::time::timeout(RELEASE_TIMEOUT, c.wait())
                    .await
                    .map_err(|_| {
                        Error::FailedPrecondition(format!(
                            "container {id}: init {} did not exit after SIGKILL",
                            c.pid
                        ))
                    })?
            }
        };
        c.stop_oom_watch();
        sandbox::destroy(&c.cgroup, c.mounted_rootfs.as_deref(), &c.bundle)?;
        {
            let mut reg = self.registry();
            reg.containers.remove(id);
            reg.by_pid.retain(|_, owner| owner.container != id);
        }
        self.events.send(
            TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: id.to_string(),
                id: id.to_string(),
                pid: c.pid as u32,
                exit_status: exit.status,
                exited_at: Some(exit.at.clone()).into(),
                ..Default::default()
            },
        );
        log::info!("container {id} deleted");
        Ok(DeleteResponse {
            pid: c.pid as u32,
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let c = self.get(id)?;
        if !exec_id.is_empty() {
            return c.close_exec_stdin(exec_id);
        }
        c.close_stdin();
        Ok(())
    }

    /// `ResizePty` of the init (`exec_id` empty) or an exec.
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let (Ok(cols), Ok(rows)) = (u16::try_from(width), u16::try_from(height)) else {
            return Err(Error::InvalidArgument(format!(
                "window size {width}x{height} is larger than a terminal (65535x65535)"
            )));
        };
        self.get(id)?.resize_pty(exec_id, rows, cols)
    }

    /// The `Exec` RPC: plans the process and registers it, created, in its container.
    pub fn exec(&self, req: &ExecProcessRequest) -> Result<()> {
        if req.exec_id.is_empty() {
            return Err(Error::InvalidArgument("exec id must not be empty".into()));
        }
        let c = self.get(&req.id)?;
        let process = exec::decode_process(req.spec.as_ref())?;
        let (plan, decision) = exec::plan(&c.exec_base, &process)?;
        let io = IoPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        c.add_exec(&req.exec_id, io, plan.clone(), &self.events)?;
        log::info!(
            "container {}: exec {} added: {} ({})",
            req.id,
            req.exec_id,
            decision.kind,
            decision.reason
        );
        for warning in &plan.warnings {
            log::warn!("container {} exec {}: {warning}", req.id, req.exec_id);
        }
        Ok(())
    }

    /// Start of an exec: launch its process (see [`exec`]), register its pid, release it.
    pub async fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32> {
        let c = self.get(id)?;
        let (plan, io) = c.begin_exec_start(exec_id)?;
        let created = match self.launch_exec(&c, exec_id, plan, &io).await {
            Ok(created) => created,
            Err(e) => {
                c.abort_exec_start(exec_id, &self.events);
                return Err(e);
            }
        };
        let pid = created.pid();
        let early_exit = self.registry().register(
            pid,
            Owner {
                container: id.to_string(),
                exec: Some(exec_id.to_string()),
            },
        );
        if let Some(exit) = early_exit {
            self.route_exit(&c, Some(exec_id), exit);
        }
        let started = tokio::task::spawn_blocking(move || created.start())
            .await
            .map_err(|e| Error::Launch(std::io::Error::other(e).into()))
            .and_then(|r| r.map_err(Error::from));
        match started {
            Ok(()) => c.finish_exec_start(exec_id, &self.events),
            Err(e) => {
                c.fail_exec_start(exec_id, &self.events);
                // Its process exits right after reporting: answer once that is recorded.
                if tokio::time::timeout(RELEASE_TIMEOUT, c.wait_exec(exec_id))
                    .await
                    .is_err()
                {
                    log::warn!(
                        "container {id}: exec {exec_id} (pid {pid}) alive after a failed start"
                    );
                }
                Err(e)
            }
        }
    }

    /// Opens the exec's stdio and launches its process up to the start barrier.
    async fn launch_exec(
        &self,
        c: &Container,
        exec_id: &str,
        plan: Arc<InitPlan>,
        io: &IoPaths,
    ) -> Result<launch::Created> {
        let (init_io, mut keepalive) = stdio::open(&io.stdin, &io.stdout, &io.stderr, io.terminal)?;
        let init_pidfd = c.init_pidfd()?;
        let exe = self.helper_exe()?;
        let cgroup = c.cgroup.clone();
        let mut created = tokio::task::spawn_blocking(move || {
            launch::exec(&exe, &plan, init_pidfd, init_io, &|pid| {
                cgroup.add_pid(pid).map_err(std::io::Error::other)
            })
        })
        .await
        .map_err(|e| Error::Launch(std::io::Error::other(e).into()))??;
        for warning in created.warnings() {
            log::warn!("container {} exec {exec_id}: {warning}", c.id);
        }
        // On failure `created` is dropped: the process sees its barrier close and exits.
        if let Some(master) = created.take_console() {
            keepalive.attach_terminal(master)?;
        }
        c.exec_launched(exec_id, created.pid(), keepalive)?;
        Ok(created)
    }

    /// Delete of an exec: forget it and return its exit; no event (as runc's shim).
    fn delete_exec(&self, c: &Container, exec_id: &str) -> Result<DeleteResponse> {
        let (pid, exit) = c.delete_exec(exec_id)?;
        {
            let mut reg = self.registry();
            let ours = reg
                .by_pid
                .get(&pid)
                .is_some_and(|o| o.container == c.id && o.exec.as_deref() == Some(exec_id));
            if ours {
                reg.by_pid.remove(&pid);
            }
        }
        log::info!("container {}: exec {exec_id} deleted", c.id);
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.as_ref().map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    /// Routes one reaped child to the container whose init or exec it was.
    pub fn on_exit(&self, exit: Exit) {
        let (container, exec) = {
            let mut reg = self.registry();
            match reg.by_pid.get(&exit.pid).cloned() {
                Some(owner) => {
                    if owner.exec.is_some() {
                        // An exec's pid is done for good once reaped; the init's stays
                        // registered until Delete.
                        reg.by_pid.remove(&exit.pid);
                    }
                    (reg.containers.get(&owner.container).cloned(), owner.exec)
                }
                None => {
                    if reg.orphans.len() == ORPHAN_EXITS {
                        reg.orphans.pop_front();
                    }
                    reg.orphans.push_back(exit);
                    return;
                }
            }
        };
        if let Some(c) = container {
            self.route_exit(&c, exec.as_deref(), exit);
        }
    }

    fn route_exit(&self, c: &Container, exec_id: Option<&str>, exit: Exit) {
        let info = ExitInfo {
            status: exit.status,
            at: exit.at,
        };
        match exec_id {
            Some(exec_id) => c.on_exec_exit(exec_id, info, &self.events),
            None => {
                log::info!(
                    "container {}: init {} exited with status {}",
                    c.id,
                    exit.pid,
                    exit.status
                );
                c.on_exit(info, &self.events);
            }
        }
    }
}
