//! Running a container through containerd's gRPC API directly, for what `ctr run` refuses:
//! a CNCF Wasm OCI artifact (ctr cannot make a root filesystem from it, see
//! `tests/tests/wasm.rs`). The calls are the ones ctr and CRI make:
//!
//! ```text
//! Snapshots.Prepare(key = id, no parent)   an empty, writable root filesystem
//! Containers.Create(id, image, runtime, spec as an Any, snapshot key)
//! Tasks.Create(rootfs mounts, stdio URIs) ─▶ Tasks.Start ─▶ Tasks.Wait
//! Tasks.Delete ─▶ Containers.Delete ─▶ Snapshots.Remove   (also when a step failed)
//! ```
//!
//! `Tasks.Update` is here too: ctr 1.6 to 2.1 have no `task update`; it is sent as CRI's
//! `UpdateContainerResources` sends it.
//!
//! The shim sees exactly what it sees under CRI: a container whose `image` names the
//! artifact, a bundle with `config.json`, and rootfs mounts to mount. The fault tests also
//! use it for a task whose stdout is a FIFO the test itself reads, which no containerd
//! restart can take away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, ResizePtyRequest, StartRequest, UpdateTaskRequest, WaitRequest,
    containers_client::ContainersClient, tasks_client::TasksClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, metadata::MetadataValue};

use crate::daemon::{Containerd, NAMESPACE};

/// Type URL containerd gives an OCI runtime spec in a container record.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL containerd's typeurl gives OCI `LinuxResources` JSON.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// The snapshotter the harness's daemons use.
const SNAPSHOTTER: &str = "overlayfs";
/// Deadline for starting a task, and for waiting for its exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`Containerd::api_run`] saw: the exit status and the task's output files.
#[derive(Debug)]
pub struct ApiRun {
    /// The status from Tasks.Wait, or the error of the first step that failed.
    pub result: Result<u32, String>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for ApiRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "result: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.result, self.stdout, self.stderr
        )
    }
}

fn request<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "containerd-namespace",
        MetadataValue::from_static(NAMESPACE),
    );
    req
}

fn rpc(step: &str) -> impl FnOnce(containerd_client::tonic::Status) -> String + '_ {
    move |s| format!("{step}: {:?}: {}", s.code(), s.message())
}

/// Where a container made through the API gets its root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rootfs {
    /// An empty snapshot, mounted by the shim at the bundle's `rootfs` (the spec's
    /// `root.path` is set to it): what CRI gives a Wasm artifact.
    EmptySnapshot,
    /// The spec's own absolute `root.path` (a directory the test owns), no snapshot.
    SpecRoot,
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

impl Containerd {
    async fn channel(&self) -> Result<Channel, String> {
        containerd_client::connect(self.socket())
            .await
            .map_err(|e| format!("connect to {}: {e}", self.socket().display()))
    }

    /// Creates and starts a task of `image` (may be empty) with the OCI spec `spec` and the
    /// given stdio URIs (a FIFO path, `file://...`, or empty), as described in the module
    /// docs; returns the task's pid. On failure, removes what it made.
    pub fn api_start(
        &self,
        id: &str,
        image: &str,
        spec: &serde_json::Value,
        rootfs: Rootfs,
        stdout: &str,
        stderr: &str,
    ) -> Result<u32, String> {
        let mut spec = spec.clone();
        if rootfs == Rootfs::EmptySnapshot {
            spec["root"] = serde_json::json!({ "path": "rootfs", "readonly": false });
        }
        block_on(async {
            let channel = self.channel().await?;
            let started = tokio::time::timeout(
                RUN_TIMEOUT,
                create_start(&channel, id, image, &spec, rootfs, stdout, stderr),
            )
            .await
            .unwrap_or_else(|_| Err(format!("not started within {RUN_TIMEOUT:?}")));
            if started.is_err() {
                clean_up(&channel, id).await;
            }
            started
        })
    }

    /// Tasks.Wait: the task's exit status once it exits.
    pub fn api_wait(&self, id: &str) -> Result<u32, String> {
        block_on(async {
            let mut tasks = TasksClient::new(self.channel().await?);
            let wait = tasks.wait(request(WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }));
            Ok(tokio::time::timeout(RUN_TIMEOUT, wait)
                .await
                .map_err(|_| format!("wait task: not done within {RUN_TIMEOUT:?}"))?
                .map_err(rpc("wait task"))?
                .into_inner()
                .exit_status)
        })
    }

    /// `Tasks.Update` of task `id` with `resources`, an OCI `LinuxResources` as JSON.
    /// `Err` carries the gRPC status code and message.
    pub fn update_task(&self, id: &str, resources: &serde_json::Value) -> Result<(), String> {
        self.update_task_raw(
            id,
            LINUX_RESOURCES_TYPE_URL,
            resources.to_string().into_bytes(),
        )
    }

    /// `Tasks.Update` with an arbitrary `Any` (to check how bad input is refused).
    pub fn update_task_raw(&self, id: &str, type_url: &str, value: Vec<u8>) -> Result<(), String> {
        let update_request = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(prost_types::Any {
                type_url: type_url.to_string(),
                value,
            }),
            ..Default::default()
        };
        block_on(async {
            let update = async {
                let mut tasks = TasksClient::new(self.channel().await?);
                tasks
                    .update(request(update_request))
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            };
            tokio::time::timeout(RUN_TIMEOUT, update)
                .await
                .map_err(|_| format!("Tasks.Update of {id}: no answer within {RUN_TIMEOUT:?}"))?
        })
    }

    /// Tasks.ResizePty of the init (`exec_id` empty) or an exec; the error is
    /// `"resize pty: <code>: <message>"`.
    pub fn api_resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), String> {
        block_on(async {
            let mut tasks = TasksClient::new(self.channel().await?);
            tasks
                .resize_pty(request(ResizePtyRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    width,
                    height,
                }))
                .await
                .map_err(rpc("resize pty"))?;
            Ok(())
        })
    }

    /// Deletes the task, the container and its snapshot, each if present.
    pub fn api_remove(&self, id: &str) {
        block_on(async {
            if let Ok(channel) = self.channel().await {
                clean_up(&channel, id).await;
            }
        });
    }

    /// Runs a container of `image` on an empty snapshot ([`Rootfs::EmptySnapshot`]) to its
    /// exit, with its output in files, and removes everything it made, whatever happened.
    pub fn api_run(&self, id: &str, image: &str, spec: &serde_json::Value) -> ApiRun {
        let out = self.work_dir().join(format!("{id}.stdout"));
        let err = self.work_dir().join(format!("{id}.stderr"));
        let uri = |p: &Path| format!("file://{}", p.display());
        let result = self
            .api_start(
                id,
                image,
                spec,
                Rootfs::EmptySnapshot,
                &uri(&out),
                &uri(&err),
            )
            .and_then(|_| self.api_wait(id));
        self.api_remove(id);
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let run = ApiRun {
            result,
            stdout: read(&out),
            stderr: read(&err),
        };
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&err);
        run
    }
}

async fn create_start(
    channel: &Channel,
    id: &str,
    image: &str,
    spec: &serde_json::Value,
    rootfs: Rootfs,
    stdout: &str,
    stderr: &str,
) -> Result<u32, String> {
    let mounts = match rootfs {
        Rootfs::EmptySnapshot => {
            SnapshotsClient::new(channel.clone())
                .prepare(request(PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.into(),
                    ..Default::default()
                }))
                .await
                .map_err(rpc("prepare snapshot"))?
                .into_inner()
                .mounts
        }
        Rootfs::SpecRoot => Vec::new(),
    };
    let with_snapshot = rootfs == Rootfs::EmptySnapshot;
    let container = Container {
        id: id.into(),
        image: image.into(),
        runtime: Some(Runtime {
            name: crate::env::runtime(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: SPEC_TYPE_URL.into(),
            value: serde_json::to_vec(spec).map_err(|e| format!("encode spec: {e}"))?,
        }),
        snapshotter: if with_snapshot {
            SNAPSHOTTER.into()
        } else {
            String::new()
        },
        snapshot_key: if with_snapshot {
            id.into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    ContainersClient::new(channel.clone())
        .create(request(CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .map_err(rpc("create container"))?;
    let mut tasks = TasksClient::new(channel.clone());
    tasks
        .create(request(CreateTaskRequest {
            container_id: id.into(),
            rootfs: mounts,
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        }))
        .await
        .map_err(rpc("create task"))?;
    let pid = tasks
        .start(request(StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await
        .map_err(rpc("start task"))?
        .into_inner()
        .pid;
    Ok(pid)
}

/// Deletes the task, the container and the snapshot, each if present.
async fn clean_up(channel: &Channel, id: &str) {
    let _ = TasksClient::new(channel.clone())
        .delete(request(DeleteTaskRequest {
            container_id: id.into(),
        }))
        .await;
    let _ = ContainersClient::new(channel.clone())
        .delete(request(DeleteContainerRequest { id: id.into() }))
        .await;
    let _ = SnapshotsClient::new(channel.clone())
        .remove(request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        }))
        .await;
}
