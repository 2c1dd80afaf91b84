//! The ttrpc Task service: a thin adapter from containerd's requests to [`Tasks`].
//!
//! All 17 RPCs are written out: the generated defaults answer NOT_FOUND, which containerd
//! would read as "no such task". What amphi does not do yet answers UNIMPLEMENTED
//! (except in Create, where containerd 2.x would read UNIMPLEMENTED as "downgrade the
//! task API", so unsupported Create options are INVALID_ARGUMENT).
//!
//! The same implementation is registered as `containerd.task.v2.Task` (containerd 1.6,
//! 1.7, and 2.x when it bridges) and `containerd.task.v3.Task` (2.x); see
//! [`crate::server::task_services`].

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::ExitSignal;
use containerd_shim::protos::api::*;
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;

use crate::error::Error;
use crate::metrics;
use crate::task::Tasks;

type TtrpcResult<T> = ttrpc::Result<T>;

pub struct Service {
    pub tasks: Arc<Tasks>,
    pub exit: Arc<ExitSignal>,
}

fn unimplemented<T>(what: &str) -> TtrpcResult<T> {
    Err(Error::Unimplemented(format!("{what} is not supported by amphi yet")).into())
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        log::debug!("create {}", req.id);
        let pid = self.tasks.create(&req).await.inspect_err(|e| {
            log::warn!("create {}: {e}", req.id);
        })?;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = if req.exec_id.is_empty() {
            self.tasks.start(&req.id).await?
        } else {
            self.tasks
                .start_exec(&req.id, &req.exec_id)
                .await
                .inspect_err(|e| log::warn!("start exec {} in {}: {e}", req.exec_id, req.id))?
        };
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.tasks.state(&req.id, &req.exec_id)?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.tasks
            .kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let exit = self.tasks.wait(&req.id, &req.exec_id).await?;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.tasks.delete(&req.id, &req.exec_id).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(PidsResponse {
            processes: self.tasks.pids(&req.id)?,
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.tasks.get(&req.id).map(|c| c.pid as u32).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: crate::VERSION.to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        // containerd sends Shutdown after every Delete; a grouped shim outlives all but
        // the last one.
        if self.tasks.is_empty() {
            log::info!("last container gone, shutting down");
            self.exit.signal();
        }
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            self.tasks.close_stdin(&req.id, &req.exec_id)?;
        }
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let c = self.tasks.get(&req.id)?;
        let stats = c.cgroup.stats().map_err(Error::cgroup("stats"))?;
        Ok(StatsResponse {
            stats: Some(metrics::stats_to_any(&stats).map_err(Error::from)?).into(),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        log::debug!("exec {} in {}", req.exec_id, req.id);
        self.tasks.exec(&req).inspect_err(|e| {
            log::warn!("exec {} in {}: {e}", req.exec_id, req.id);
        })?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.tasks
            .resize_pty(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.tasks.pause(&req.id).await.inspect_err(|e| {
            log::warn!("pause {}: {e}", req.id);
        })?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.tasks.resume(&req.id).inspect_err(|e| {
            log::warn!("resume {}: {e}", req.id);
        })?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.tasks
            .update(&req.id, req.resources.as_ref())
            .inspect_err(|e| {
                log::warn!("update {}: {e}", req.id);
            })?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unimplemented("checkpoint")
    }
}
