//! Driving a daemon's CRI plugin as the kubelet does (`k8s-cri`, CRI `runtime.v1`, over the
//! daemon's socket), for the Kubernetes path: RuntimeClass handler [`CRI_HANDLER`] is the
//! runtime under test.
//!
//! ```text
//! Containerd::start_cri ─▶ import busybox, pause (busybox sleeping) and test images into k8s.io
//! Cri::run_pod (host network: no CNI) ─▶ create_start(container) ─▶ ExecSync / stats / status
//! Cri::remove_pod (StopPodSandbox, RemovePodSandbox) ─▶ the pod's cgroup parent removed
//! ```
//!
//! Every pod and container id is registered with the daemon, so the leak checks at the end
//! of a case cover them. There is no CRI call for logs: [`Cri::log`] reads the file the CRI
//! plugin writes, as the kubelet does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStats, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

use crate::daemon::{CRI_HANDLER, CRI_NAMESPACE, Containerd, PAUSE_IMAGE};
use crate::image::{IMAGE_BASE_NAME, busybox};

/// How long a CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A CRI client bound to one daemon.
pub struct Cri<'a> {
    d: &'a Containerd,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A pod made by [`Cri::run_pod`].
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    /// The pod's cgroup parent (cgroupfs form), removed by [`Cri::remove_pod`].
    pub cgroup_parent: String,
}

impl Containerd {
    /// Starts a CRI-enabled daemon and imports busybox and the pause image into `k8s.io`.
    pub fn start_cri_with_images(version: crate::Version) -> Containerd {
        let d = Containerd::start_cri(version);
        let tar = busybox().tar.display().to_string();
        d.ctr_in(
            CRI_NAMESPACE,
            &["images", "import", "--base-name", IMAGE_BASE_NAME, &tar],
        )
        .expect_success("ctr -n k8s.io image import of busybox");
        let pause = amphi_image::dir_image(
            &busybox().rootfs,
            &amphi_image::DirImageOptions {
                name: amphi_image::ImageName::parse(PAUSE_IMAGE).expect("pause image name"),
                entrypoint: vec!["sleep".into(), "2147483647".into()],
                cmd: Vec::new(),
                env: Vec::new(),
                working_dir: "/".into(),
            },
        )
        .expect("build the pause image");
        d.try_import_layout_in(CRI_NAMESPACE, &pause, &[])
            .expect_success("ctr -n k8s.io image import of the pause image");
        d
    }

    /// A CRI client of this daemon.
    pub fn cri(&self) -> Cri<'_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let channel = rt
            .block_on(containerd_client::connect(self.socket()))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket().display()));
        Cri {
            d: self,
            rt,
            client: RuntimeServiceClient::new(channel),
        }
    }
}

impl Cri<'_> {
    fn call<T, F>(&self, what: &str, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> T
    where
        F: std::future::Future<
                Output = Result<
                    containerd_client::tonic::Response<T>,
                    containerd_client::tonic::Status,
                >,
            >,
    {
        let fut = f(self.client.clone());
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await });
        match answer {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => panic!(
                "{}: CRI {what}: {:?}: {}\nlog tail:\n{}",
                self.d.version(),
                status.code(),
                status.message(),
                self.d.log_tail(60)
            ),
            Err(_) => panic!(
                "{}: CRI {what}: no answer in {CALL_TIMEOUT:?}",
                self.d.version()
            ),
        }
    }

    /// RunPodSandbox with the runtime handler under test, host network (no CNI), a log
    /// directory in the daemon's work dir and a cgroup parent of its own.
    pub fn run_pod(&self, name: &str) -> Pod {
        let uid = self.d.new_id(name);
        let cgroup_parent = format!("/amphi-e2e-{uid}");
        let log_directory = self.d.work_dir().join("pods").join(&uid);
        std::fs::create_dir_all(&log_directory).expect("mkdir the pod log directory");
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "amphi-e2e".into(),
                attempt: 0,
            }),
            log_directory: log_directory.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: CRI_HANDLER.into(),
        };
        let id = self
            .call("RunPodSandbox", |mut c| async move {
                c.run_pod_sandbox(request).await
            })
            .pod_sandbox_id;
        self.d.track_id(&id);
        Pod {
            id,
            config,
            cgroup_parent,
        }
    }

    /// CreateContainer + StartContainer of `image` running `command` in `pod`, logging to
    /// `<name>.log` in the pod's log directory; returns the container id.
    pub fn create_start(&self, pod: &Pod, name: &str, image: &str, command: &[&str]) -> String {
        self.create_start_limited(pod, name, image, command, None)
    }

    /// [`Cri::create_start`] with a memory limit in bytes (`resources.memory_limit_in_bytes`).
    pub fn create_start_limited(
        &self,
        pod: &Pod,
        name: &str,
        image: &str,
        command: &[&str],
        memory_limit: Option<i64>,
    ) -> String {
        let linux = memory_limit.map(|limit| LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: limit,
                ..Default::default()
            }),
            ..Default::default()
        });
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: format!("{name}.log"),
                linux,
                ..Default::default()
            }),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .call("CreateContainer", |mut c| async move {
                c.create_container(request).await
            })
            .container_id;
        self.d.track_id(&id);
        let container_id = id.clone();
        self.call("StartContainer", |mut c| async move {
            c.start_container(StartContainerRequest { container_id })
                .await
        });
        id
    }

    /// ContainerStatus.
    pub fn status(&self, id: &str) -> ContainerStatus {
        let container_id = id.to_string();
        self.call("ContainerStatus", |mut c| async move {
            c.container_status(ContainerStatusRequest {
                container_id,
                verbose: false,
            })
            .await
        })
        .status
        .unwrap_or_else(|| panic!("ContainerStatus of {id}: no status"))
    }

    /// Waits (up to 30 s) until the container has exited; returns its status.
    pub fn wait_exited(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id);
            if status.state == k8s_cri::v1::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {id} still not exited: {status:?}",
                self.d.version()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// ExecSync: (stdout, stderr, exit code).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> (String, String, i32) {
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let out = self.call(
            "ExecSync",
            |mut c| async move { c.exec_sync(request).await },
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.exit_code,
        )
    }

    /// ContainerStats.
    pub fn stats(&self, id: &str) -> ContainerStats {
        let container_id = id.to_string();
        self.call("ContainerStats", |mut c| async move {
            c.container_stats(ContainerStatsRequest { container_id })
                .await
        })
        .stats
        .unwrap_or_else(|| panic!("ContainerStats of {id}: no stats"))
    }

    /// The container's log file as the CRI plugin wrote it.
    pub fn log(&self, pod: &Pod, name: &str) -> String {
        let path = PathBuf::from(&pod.config.log_directory).join(format!("{name}.log"));
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    /// StopPodSandbox, RemovePodSandbox, then the pod's cgroup parent (which nothing in
    /// containerd removes).
    pub fn remove_pod(&self, pod: &Pod) {
        let pod_sandbox_id = pod.id.clone();
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
                .await
        });
        let pod_sandbox_id = pod.id.clone();
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
                .await
        });
        let parent = pod.cgroup_parent.trim_start_matches('/').to_string();
        crate::leaks::remove_cgroups_matching(&[parent]);
    }
}
