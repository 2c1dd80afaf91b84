//! Processes exec'd into a running container (`ctr task exec`, CRI `ExecSync`/`Exec`):
//! turning the request into a plan, and each exec's own state.
//!
//! Data flow:
//!
//! 1. `Exec` RPC: [`decode_process`] reads the request's OCI `Process` (JSON in an `Any`);
//!    [`plan`] plans it on top of the container's own plan ([`InitPlan::for_exec`]: same
//!    validation as the init's process) and picks how the program runs
//!    ([`dispatch::decide_exec`]: a WebAssembly module or component, by its bytes, runs in
//!    wasmtime with the container's memory limit and compiled-module cache; anything else is
//!    exec'd natively). The exec is registered CREATED in its container; no process exists
//!    yet (as with runc's shim). TaskExecAdded.
//! 2. `Start`: its stdio is opened ([`crate::stdio`]), `launch::exec` re-executes our binary
//!    as the init helper in exec mode: placed in the container's cgroup, it joins the init's
//!    namespaces through the init's pidfd, forks into the pid namespace, applies user,
//!    capabilities, rlimits, no_new_privileges and cwd, and waits on the start barrier. Its
//!    pid is registered, the barrier released, TaskExecStarted published (before any
//!    TaskExit of that pid, as for the init).
//! 3. Its exit (from the reaper): TaskExit with `id` = the exec id. `Delete` forgets it and
//!    publishes nothing, as containerd-shim-runc-v2 does.
//!
//! [`ExecProcess`] is plain state; [`super::Container`] keeps its execs under its own lock,
//! so the init's exit can be held until every running exec's exit is published (T-X3).
//!
//! With `terminal=true` the exec's process allocates a pty in the container's devpts and
//! sends the master back; the shim copies it to the exec's FIFOs ([`crate::stdio`]) and
//! `ResizePty` with the exec id resizes it.
//!
//! Limitations: the program is looked up
//! in the container's root filesystem only (not in volumes mounted into it) to decide whether
//! it is WebAssembly; an exec cannot be started again after its process ran.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use amphi_linux_executor::plan::{InitPlan, WasmWorkload, Workload, split_entrypoint};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::{Process, Spec};
use tokio::sync::watch;

use super::container::IoPaths;
use super::lifecycle::{ExitInfo, Lifecycle};
use crate::dispatch::{self, Decision, Kind};
use crate::error::{Error, Result};
use crate::stdio::Keepalive;

/// The type URL containerd gives the exec spec.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// The type of [`process_details`], as containerd-shim-runc-v2 reports it in `Pids`.
pub const PROCESS_DETAILS_TYPE_URL: &str = "containerd.runc.v1.ProcessDetails";

/// What an exec needs from its container, kept from `Create`.
#[derive(Clone)]
pub struct ExecBase {
    /// The container's plan: an exec replaces its process and workload.
    pub plan: InitPlan,
    /// The container's spec (the memory limit of a Wasm exec).
    pub spec: Spec,
    /// The compiled-module cache directory and its size bound.
    pub wasm_cache: (PathBuf, u64),
}

/// Reads the OCI `Process` of an `ExecProcessRequest`.
pub fn decode_process(spec: Option<&Any>) -> Result<Process> {
    let any = spec.ok_or_else(|| Error::InvalidArgument("exec spec is missing".into()))?;
    if any.type_url != PROCESS_TYPE_URL && !any.type_url.ends_with("runtime-spec/1/Process") {
        return Err(Error::InvalidArgument(format!(
            "exec spec has type {:?}, expected {PROCESS_TYPE_URL}",
            any.type_url
        )));
    }
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::InvalidArgument(format!("exec spec: invalid OCI process: {e}")))
}

/// The plan of an exec into the container of `base`, and how its program runs.
pub fn plan(base: &ExecBase, process: &Process) -> Result<(InitPlan, Decision)> {
    let plan = base.plan.for_exec(process)?;
    let arg0 = &plan.process.args[0];
    let (name, export) = split_entrypoint(arg0)?;
    let entry = super::sandbox::find_entrypoint(&plan.rootfs, name, plan.process.path_env())?;
    let decision = dispatch::decide_exec(&entry);
    if decision.kind == Kind::Linux {
        return Ok((plan, decision));
    }
    let dispatch::Entrypoint::Found { path, .. } = &entry else {
        // decide_exec says Wasm only for a file it read.
        return Err(Error::InvalidArgument(format!("not found: {name}")));
    };
    let (dir, max) = &base.wasm_cache;
    super::sandbox::create_cache_dir(dir)?;
    let wasm = WasmWorkload::new(path, export, &base.spec)?.with_cache(dir.clone(), *max);
    Ok((plan.with_workload(Workload::Wasm(wasm)), decision))
}

/// `containerd.runc.v1.ProcessDetails{exec_id}`, the `info` of an exec's pid in `Pids`.
pub fn process_details(exec_id: &str) -> Any {
    // One length-delimited field 1: tag 0x0a, varint length, bytes.
    let mut value = vec![0x0a];
    let mut len = exec_id.len();
    while len >= 0x80 {
        value.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    value.push(len as u8);
    value.extend_from_slice(exec_id.as_bytes());
    Any {
        type_url: PROCESS_DETAILS_TYPE_URL.to_string(),
        value,
        ..Default::default()
    }
}

/// One exec's state. Its lifecycle is the init's ([`Lifecycle`]) without a barrier object:
/// CREATED has no process, Start moves it through Starting (an exit arriving then waits for
/// TaskExecStarted) to Running, and its exit to Stopped.
pub struct ExecProcess {
    pub io: IoPaths,
    pub plan: Arc<InitPlan>,
    pub life: Lifecycle<()>,
    /// Host pid, 0 until started.
    pub pid: i32,
    /// Opened while the process waited on its barrier: signals never reach a recycled pid.
    pub pidfd: Option<OwnedFd>,
    pub keepalive: Keepalive,
    pub exited: watch::Sender<Option<ExitInfo>>,
}

impl ExecProcess {
    pub fn new(io: IoPaths, plan: InitPlan) -> Self {
        ExecProcess {
            io,
            plan: Arc::new(plan),
            life: Lifecycle::new(()),
            pid: 0,
            pidfd: None,
            keepalive: Keepalive::default(),
            exited: watch::channel(None).0,
        }
    }

    /// Has (or is about to have) a process that has not exited yet.
    pub fn is_active(&self) -> bool {
        self.life.is_active()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;
    use serde_json::json;
    use std::path::Path;

    fn any(type_url: &str, value: serde_json::Value) -> Any {
        Any {
            type_url: type_url.into(),
            value: serde_json::to_vec(&value).unwrap(),
            ..Default::default()
        }
    }

    /// The container spec `ctr run` writes, trimmed, with its rootfs at `rootfs`.
    fn base(rootfs: &Path) -> ExecBase {
        let spec: Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sleep", "100"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/bin"]},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}],
                "resources": {"memory": {"limit": 33554432}}}
        }))
        .unwrap();
        ExecBase {
            plan: InitPlan::from_spec(&spec, rootfs).unwrap(),
            spec,
            wasm_cache: (rootfs.join("../cache"), 1 << 20),
        }
    }

    fn exec_process(args: &[&str]) -> serde_json::Value {
        json!({"args": args, "cwd": "/tmp", "env": ["PATH=/bin", "FOO=bar"],
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 64, "soft": 32}],
            "noNewPrivileges": true,
            "apparmorProfile": "cri-containerd.apparmor.d"})
    }

    fn rootfs_with(files: &[(&str, &[u8], u32)]) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for (path, bytes, mode) in files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        dir
    }

    #[test]
    fn decode_reads_the_process_and_checks_its_type() {
        let p = decode_process(Some(&any(PROCESS_TYPE_URL, exec_process(&["sh"])))).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
        let wrong = decode_process(Some(&any("types.containerd.io/x/Spec", json!({}))));
        let err = wrong.unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(
            err.to_string().contains("types.containerd.io/x/Spec"),
            "{err}"
        );
        let missing = decode_process(None).unwrap_err();
        assert_eq!(missing.code(), Code::INVALID_ARGUMENT);
        let bad = Any {
            type_url: PROCESS_TYPE_URL.into(),
            value: b"{not json".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            decode_process(Some(&bad)).unwrap_err().code(),
            Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn an_exec_plan_is_the_container_with_the_exec_process() {
        let dir = rootfs_with(&[("/bin/sh", b"\x7fELF....", 0o755)]);
        let rootfs = dir.path().join("rootfs");
        let base = base(&rootfs);
        let process: Process = serde_json::from_value(exec_process(&["sh", "-c", "id"])).unwrap();
        let (plan, decision) = plan(&base, &process).unwrap();
        assert_eq!(decision.kind, Kind::Linux);
        assert!(decision.reason.contains("/bin/sh"), "{}", decision.reason);
        // The container's sandbox...
        assert_eq!(plan.rootfs, rootfs);
        assert_eq!(plan.namespaces, base.plan.namespaces);
        assert_eq!(plan.mounts, base.plan.mounts);
        // ...with the exec's process.
        assert_eq!(plan.process.args, ["sh", "-c", "id"]);
        assert_eq!(plan.process.env, ["PATH=/bin", "FOO=bar"]);
        assert_eq!(plan.process.cwd, Path::new("/tmp"));
        assert_eq!((plan.process.user.uid, plan.process.user.gid), (1000, 1000));
        assert_eq!(plan.process.user.additional_gids, [5]);
        assert_eq!(plan.process.capabilities.effective, ["CAP_KILL"]);
        assert_eq!(plan.process.rlimits[0].soft, 32);
        assert!(plan.process.no_new_privileges);
        assert_eq!(plan.workload, Workload::Exec);
        // The exec's own AppArmor profile is planned (applied or refused by the init).
        assert_eq!(
            plan.process.apparmor_profile.as_deref(),
            Some("cri-containerd.apparmor.d")
        );
    }

    #[test]
    fn a_missing_program_is_left_to_the_helper_to_name() {
        let dir = rootfs_with(&[]);
        let base = base(&dir.path().join("rootfs"));
        let process: Process = serde_json::from_value(exec_process(&["nope"])).unwrap();
        let (plan, decision) = plan(&base, &process).unwrap();
        assert_eq!(decision.kind, Kind::Linux);
        assert_eq!(plan.workload, Workload::Exec);
    }

    #[test]
    fn a_module_in_the_rootfs_runs_as_wasm_with_the_container_limits() {
        let dir = rootfs_with(&[("/app/two.wasm", b"\0asm\x01\0\0\0", 0o644)]);
        let rootfs = dir.path().join("rootfs");
        let base = base(&rootfs);
        let process: Process =
            serde_json::from_value(exec_process(&["/app/two.wasm", "x"])).unwrap();
        let (plan, decision) = plan(&base, &process).unwrap();
        assert_eq!(decision.kind, Kind::Wasm);
        let Workload::Wasm(w) = &plan.workload else {
            panic!("expected a Wasm workload, got {:?}", plan.workload);
        };
        assert_eq!(w.module, "/app/two.wasm");
        assert_eq!(w.memory_limit, Some(32 << 20));
        assert_eq!(w.cache_dir.as_deref(), Some(base.wasm_cache.0.as_path()));
        assert!(base.wasm_cache.0.is_dir(), "the cache directory is created");
        assert_eq!(plan.process.args, ["/app/two.wasm", "x"]);
    }

    #[test]
    fn invalid_exec_processes_are_invalid_argument() {
        let dir = rootfs_with(&[]);
        let base = base(&dir.path().join("rootfs"));
        let relative: Process = serde_json::from_value(
            json!({"args": ["sh"], "cwd": "tmp", "user": {"uid": 0, "gid": 0}}),
        )
        .unwrap();
        let err = plan(&base, &relative).err().unwrap();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(err.to_string().contains("cwd"), "{err}");
        let empty: Process =
            serde_json::from_value(json!({"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}))
                .unwrap();
        assert_eq!(
            plan(&base, &empty).err().unwrap().code(),
            Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn process_details_encode_the_exec_id() {
        let any = process_details("e1");
        assert_eq!(any.type_url, "containerd.runc.v1.ProcessDetails");
        assert_eq!(any.value, b"\x0a\x02e1");
        let long = "x".repeat(200);
        let any = process_details(&long);
        assert_eq!(&any.value[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(any.value.len(), 3 + 200);
    }

    #[test]
    fn exec_lifecycle_created_started_stopped() {
        let mut e = ExecProcess::new(IoPaths::default(), base(Path::new("/r")).plan);
        assert!(!e.is_active(), "a created exec has no process");
        e.life.begin_start("c exec e").unwrap();
        assert!(e.is_active());
        // Launch failed before any process existed: back to created, startable again.
        e.life.abort_start(());
        assert!(!e.is_active());
        e.life.begin_start("c exec e").unwrap();
        assert_eq!(e.life.end_start(), None);
        assert!(e.is_active());
        assert!(e.life.stop(ExitInfo {
            status: 7,
            at: Default::default()
        }));
        assert!(!e.is_active());
        assert_eq!(
            e.life.begin_start("c exec e").unwrap_err().code(),
            Code::FAILED_PRECONDITION
        );
    }
}
