//! containerd's gRPC API, for what `ctr` has no command for: `Tasks.Update` (ctr 1.6 to
//! 2.1 have no `task update`), sent exactly as CRI's `UpdateContainerResources` sends it,
//! through the daemon to the shim.
//!
//! ```text
//! test ──Tasks.Update{container_id, Any(LinuxResources JSON)}──▶ containerd ──Task.Update──▶ shim
//! ```

use std::time::Duration;

use containerd_client::services::v1::UpdateTaskRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::tonic::Request;
use containerd_client::tonic::metadata::MetadataValue;

use crate::daemon::{Containerd, NAMESPACE};

/// The type URL containerd's typeurl gives OCI `LinuxResources` JSON.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// How long one gRPC call may take.
const GRPC_TIMEOUT: Duration = Duration::from_secs(60);

impl Containerd {
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let socket = self.socket();
        let request = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(prost_types::Any {
                type_url: type_url.to_string(),
                value,
            }),
            ..Default::default()
        };
        runtime.block_on(async {
            let call = async {
                let channel = containerd_client::connect(&socket)
                    .await
                    .map_err(|e| format!("connect {}: {e}", socket.display()))?;
                let mut req = Request::new(request);
                req.metadata_mut().insert(
                    "containerd-namespace",
                    MetadataValue::from_static(NAMESPACE),
                );
                TasksClient::new(channel)
                    .update(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            };
            tokio::time::timeout(GRPC_TIMEOUT, call)
                .await
                .map_err(|_| format!("Tasks.Update of {id}: no answer within {GRPC_TIMEOUT:?}"))?
        })
    }
}
