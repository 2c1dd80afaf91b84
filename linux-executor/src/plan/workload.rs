//! What the container init runs once the sandbox is built: a native program (`execve`) or a
//! WebAssembly module run in-process by a [`crate::init::WasmRunner`] the binary provides.
//!
//! [`super::InitPlan::from_spec`] always plans [`Workload::Exec`]; the shim's dispatch
//! (architecture.md, section 2) decides per container and, for Wasm, splits the entrypoint
//! with [`split_entrypoint`], resolves the module in the rootfs, builds a
//! [`WasmWorkload`] with [`WasmWorkload::new`] and sets it with
//! [`super::InitPlan::with_workload`].
//!
//! Limitations: the entrypoint must already be resolved to an absolute container path (see
//! [`crate::rootfs_lookup::resolve_in_root`]); the memory limit is only carried here, the
//! runner enforces it.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::{PlanError, is_clean_absolute};

/// What the container init runs after the start barrier.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub enum Workload {
    /// `execve` of `process.args[0]`, looked up in the container's `PATH`.
    #[default]
    Exec,
    /// A WebAssembly module run in the init process itself.
    Wasm(WasmWorkload),
}

/// A WebAssembly workload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WasmWorkload {
    /// Absolute path of the module inside the container (`/app/hello.wasm`), or, for a
    /// [`WasmWorkload::host_module`], what names it in messages (`layer sha256:...`).
    pub module: String,
    /// A module that is not in the container's filesystem (a layer of the image, which the
    /// shim wrote to this host file): the init opens it before entering the container's
    /// namespaces, as it does the cache directory, and the runner reads that instead of
    /// [`WasmWorkload::module`].
    pub host_module: Option<PathBuf>,
    /// The function to call, from an entrypoint written `path#export` (`None`: the WASI
    /// command's `_start`, or the component's `run`).
    pub export: Option<String>,
    /// Host path of the compiled-module cache directory. The init opens it before entering
    /// the container's namespaces and hands the fd to the runner.
    pub cache_dir: Option<PathBuf>,
    /// Size bound of the cache, in bytes.
    pub cache_max_bytes: u64,
    /// `linux.resources.memory.limit`, when positive.
    pub memory_limit: Option<u64>,
}

impl WasmWorkload {
    /// A workload running `module` (an absolute container path without `..`, already
    /// resolved) and calling `export` if given, for `spec`, without a cache (see
    /// [`WasmWorkload::with_cache`]).
    pub fn new(module: &str, export: Option<&str>, spec: &Spec) -> Result<WasmWorkload, PlanError> {
        if !is_clean_absolute(Path::new(module)) {
            return Err(PlanError::BadWasmEntrypoint {
                entry: module.to_string(),
                reason: "the module must be an absolute path without \"..\"",
            });
        }
        Ok(WasmWorkload::with_module(
            module.to_string(),
            None,
            export,
            spec,
        ))
    }

    /// A workload running the module in the host file `path` (opened before the init
    /// enters any namespace), named `name` in messages; see [`WasmWorkload::host_module`].
    pub fn from_host_file(
        path: PathBuf,
        name: &str,
        export: Option<&str>,
        spec: &Spec,
    ) -> WasmWorkload {
        WasmWorkload::with_module(name.to_string(), Some(path), export, spec)
    }

    fn with_module(
        module: String,
        host_module: Option<PathBuf>,
        export: Option<&str>,
        spec: &Spec,
    ) -> WasmWorkload {
        let export = export.map(str::to_string);
        let memory_limit = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .and_then(|limit| u64::try_from(limit).ok())
            .filter(|limit| *limit > 0);
        WasmWorkload {
            module,
            host_module,
            export,
            cache_dir: None,
            cache_max_bytes: 0,
            memory_limit,
        }
    }

    /// Sets the compiled-module cache (a host directory) and its size bound.
    pub fn with_cache(mut self, dir: PathBuf, max_bytes: u64) -> WasmWorkload {
        self.cache_dir = Some(dir);
        self.cache_max_bytes = max_bytes;
        self
    }
}

/// Splits an entrypoint written `path#export` (a module and the export to call). A `#`
/// followed by a `/` belongs to the path.
pub fn split_entrypoint(entry: &str) -> Result<(&str, Option<&str>), PlanError> {
    let bad = |reason: &'static str| PlanError::BadWasmEntrypoint {
        entry: entry.to_string(),
        reason,
    };
    if entry.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let (module, export) = match entry.rsplit_once('#') {
        Some((module, export)) if !export.contains('/') => {
            if export.is_empty() {
                return Err(bad("the export after '#' is empty"));
            }
            (module, Some(export))
        }
        _ => (entry, None),
    };
    Ok((module, export))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> Spec {
        serde_json::from_value(value).expect("spec parses")
    }

    /// Split, then build: what the shim does (minus the lookup in the rootfs).
    fn from_entry(entry: &str, s: &Spec) -> Result<WasmWorkload, PlanError> {
        let (module, export) = split_entrypoint(entry)?;
        WasmWorkload::new(module, export, s)
    }

    #[test]
    fn entrypoints_with_and_without_export() {
        let s = spec(json!({"ociVersion": "1.0.2"}));
        let w = from_entry("/app/hello.wasm", &s).expect("valid");
        assert_eq!(w.module, "/app/hello.wasm");
        assert_eq!(w.export, None);
        assert_eq!(w.memory_limit, None);
        assert_eq!(w.cache_dir, None);
        let w = from_entry("/app/lib.wasm#greet", &s).expect("valid");
        assert_eq!(
            (w.module.as_str(), w.export.as_deref()),
            ("/app/lib.wasm", Some("greet"))
        );
        // A '#' inside a directory name is part of the path.
        let w = from_entry("/a#b/x.wasm", &s).expect("valid");
        assert_eq!((w.module.as_str(), w.export), ("/a#b/x.wasm", None));
    }

    #[test]
    fn bad_entrypoints_are_rejected() {
        let s = spec(json!({"ociVersion": "1.0.2"}));
        for entry in ["hello.wasm", "/app/../x.wasm", "/app/x.wasm#", "/a\0b"] {
            let err = from_entry(entry, &s).expect_err(entry);
            assert!(
                matches!(err, PlanError::BadWasmEntrypoint { .. }),
                "{entry}: {err}"
            );
        }
        assert_eq!(
            from_entry("x.wasm", &s).expect_err("relative").to_string(),
            "wasm entrypoint \"x.wasm\": the module must be an absolute path without \"..\""
        );
    }

    #[test]
    fn memory_limit_and_cache() {
        let s = spec(json!({"ociVersion": "1.0.2",
            "linux": {"resources": {"memory": {"limit": 67108864}}}}));
        let w = from_entry("/m.wasm", &s)
            .expect("valid")
            .with_cache(PathBuf::from("/var/lib/amphi/cache"), 1 << 30);
        assert_eq!(w.memory_limit, Some(64 << 20));
        assert_eq!(
            w.cache_dir.as_deref(),
            Some(Path::new("/var/lib/amphi/cache"))
        );
        assert_eq!(w.cache_max_bytes, 1 << 30);
        let unlimited = spec(json!({"ociVersion": "1.0.2",
            "linux": {"resources": {"memory": {"limit": -1}}}}));
        assert_eq!(
            from_entry("/m.wasm", &unlimited)
                .expect("valid")
                .memory_limit,
            None
        );
    }

    #[test]
    fn workload_serde_round_trip_and_default() {
        assert_eq!(Workload::default(), Workload::Exec);
        let wasm = Workload::Wasm(WasmWorkload {
            module: "/app/hello.wasm".into(),
            host_module: Some(PathBuf::from("/run/bundle/amphi-module.wasm")),
            export: Some("run".into()),
            cache_dir: Some(PathBuf::from("/var/cache/amphi")),
            cache_max_bytes: 123,
            memory_limit: Some(1 << 20),
        });
        for w in [Workload::Exec, wasm] {
            let text = serde_json::to_string(&w).expect("serialize");
            assert_eq!(
                serde_json::from_str::<Workload>(&text).expect("deserialize"),
                w
            );
        }
    }

    #[test]
    fn plans_default_to_exec_and_switch_with_with_workload() {
        let s = spec(json!({"ociVersion": "1.0.2",
            "process": {"args": ["/app/hello.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}]}}));
        let plan = super::super::InitPlan::from_spec(&s, Path::new("/rootfs")).expect("plans");
        assert_eq!(plan.workload, Workload::Exec);
        // A plan serialized without the field (an older shim) reads back as Exec.
        let mut value = serde_json::to_value(&plan).expect("serialize");
        value
            .as_object_mut()
            .expect("object")
            .remove("workload")
            .expect("the field is serialized");
        let old: super::super::InitPlan = serde_json::from_value(value).expect("deserialize");
        assert_eq!(old.workload, Workload::Exec);
        let w = from_entry("/app/hello.wasm", &s).expect("valid");
        let wasm = plan.with_workload(Workload::Wasm(w.clone()));
        assert_eq!(wasm.workload, Workload::Wasm(w));
        let text = serde_json::to_string(&wasm).expect("serialize");
        assert_eq!(
            serde_json::from_str::<super::super::InitPlan>(&text).expect("deserialize"),
            wasm
        );
    }
}
