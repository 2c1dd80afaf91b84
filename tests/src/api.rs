//! Running a container through containerd's gRPC API directly, for what `ctr run` refuses:
//! a CNCF Wasm OCI artifact (ctr cannot make a root filesystem from it, see
//! `tests/tests/wasm.rs`). The calls are the ones ctr and CRI make:
//!
//! ```text
//! Snapshots.Prepare(key = id, no parent)   an empty, writable root filesystem
//! Containers.Create(id, image, runtime, spec as an Any, snapshot key)
//! Tasks.Create(rootfs mounts, stdout/stderr = file:// URIs) ─▶ Tasks.Start ─▶ Tasks.Wait
//! Tasks.Delete ─▶ Containers.Delete ─▶ Snapshots.Remove   (also when a step failed)
//! ```
//!
//! The shim sees exactly what it sees under CRI: a container whose `image` names the
//! artifact, a bundle with `config.json`, and rootfs mounts to mount.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, StartRequest, WaitRequest, containers_client::ContainersClient,
    tasks_client::TasksClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, metadata::MetadataValue};

use crate::daemon::{Containerd, NAMESPACE};

/// Type URL containerd gives an OCI runtime spec in a container record.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The snapshotter the harness's daemons use.
const SNAPSHOTTER: &str = "overlayfs";
/// Deadline for a whole [`Containerd::api_run`].
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

impl Containerd {
    /// Runs a container of `image` with the OCI spec `spec` (its `root.path` is set to the
    /// bundle's `rootfs`) through the gRPC API, as described in the module docs, and
    /// removes everything it made, whatever happened.
    pub fn api_run(&self, id: &str, image: &str, spec: &serde_json::Value) -> ApiRun {
        let mut spec = spec.clone();
        spec["root"] = serde_json::json!({ "path": "rootfs", "readonly": false });
        let out = self.work_dir().join(format!("{id}.stdout"));
        let err = self.work_dir().join(format!("{id}.stderr"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let result = runtime.block_on(async {
            let channel = containerd_client::connect(self.socket())
                .await
                .map_err(|e| format!("connect to {}: {e}", self.socket().display()))?;
            let run = run(&channel, id, image, &spec, &out, &err);
            let result = tokio::time::timeout(RUN_TIMEOUT, run)
                .await
                .unwrap_or_else(|_| Err(format!("not done within {RUN_TIMEOUT:?}")));
            clean_up(&channel, id).await;
            result
        });
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

async fn run(
    channel: &Channel,
    id: &str,
    image: &str,
    spec: &serde_json::Value,
    stdout: &Path,
    stderr: &Path,
) -> Result<u32, String> {
    let mounts = SnapshotsClient::new(channel.clone())
        .prepare(request(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
            ..Default::default()
        }))
        .await
        .map_err(rpc("prepare snapshot"))?
        .into_inner()
        .mounts;
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
        snapshotter: SNAPSHOTTER.into(),
        snapshot_key: id.into(),
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
            stdout: format!("file://{}", stdout.display()),
            stderr: format!("file://{}", stderr.display()),
            ..Default::default()
        }))
        .await
        .map_err(rpc("create task"))?;
    // Wait is answered when the task exits; ask before starting so no exit is missed.
    let mut waiter = tasks.clone();
    let wait_id = id.to_string();
    let wait = tokio::spawn(async move {
        waiter
            .wait(request(WaitRequest {
                container_id: wait_id,
                exec_id: String::new(),
            }))
            .await
    });
    tasks
        .start(request(StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await
        .map_err(rpc("start task"))?;
    let status = wait
        .await
        .map_err(|e| format!("wait task: {e}"))?
        .map_err(rpc("wait task"))?
        .into_inner()
        .exit_status;
    Ok(status)
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
