//! The glue between the two executors, which do not know each other: the Linux init
//! helper calls a [`WasmRunner`] where it would `execve`, and this one runs the module
//! with `amphi_wasm_executor` (wasmtime).
//!
//! The compiled-module cache lives in [`cache_dir`], bounded by [`cache_max_bytes`]: the
//! runtime options ([`crate::options`]) win, then `AMPHI_WASM_CACHE_DIR` /
//! `AMPHI_WASM_CACHE_MAX_BYTES` from containerd's environment, then the defaults
//! (`/var/lib/amphi/wasm-cache`, 1 GiB).

use std::path::PathBuf;
use std::sync::Arc;

use amphi_linux_executor::init::{
    GuestDir, HostFiles, PreparedWasm, WasmPrepareError, WasmProcess, WasmRunner,
};
use amphi_linux_executor::launch::ErrorKind;
use amphi_linux_executor::plan::WasmWorkload;
use amphi_wasm_executor::{Preopen, Prepared, RunSpec, WasmConfig, WasmError};

use crate::options::Options;

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/amphi/wasm-cache";
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;

/// Where compiled modules are kept (created by the shim, 0700, root-owned).
pub fn cache_dir(options: &Options) -> PathBuf {
    if let Some(dir) = &options.wasm_cache_dir {
        return dir.clone();
    }
    std::env::var_os("AMPHI_WASM_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

pub fn cache_max_bytes(options: &Options) -> u64 {
    if let Some(max) = options.wasm_cache_max_bytes {
        return max;
    }
    std::env::var("AMPHI_WASM_CACHE_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CACHE_MAX_BYTES)
}

pub struct Runner;

struct Job {
    prepared: Prepared,
    export: Option<String>,
    memory_limit: Option<u64>,
}

impl WasmRunner for Runner {
    fn prepare(
        &self,
        w: &WasmWorkload,
        mut files: HostFiles,
    ) -> Result<Box<dyn PreparedWasm>, WasmPrepareError> {
        let bytes = files.read_module(w).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                WasmPrepareError::not_found(format!("not found: {}", w.module))
            }
            std::io::ErrorKind::InvalidInput => {
                WasmPrepareError::invalid(format!("read {}: {e}", w.module))
            }
            _ => WasmPrepareError {
                kind: ErrorKind::Internal,
                message: format!("read {}: {e}", w.module),
            },
        })?;
        // The cache handles move into the config and are closed when `prepare` returns
        // (the helper forks into the container next): only the artifact file wasmtime maps,
        // opened through the read-only view, stays open.
        let config = WasmConfig {
            cache_dir: files.cache_dir.take(),
            cache_view: files.cache_view.take(),
            cache_max_bytes: w.cache_max_bytes,
        };
        drop(files);
        let (prepared, _outcome) = amphi_wasm_executor::prepare(&bytes, &config).map_err(|e| {
            let message = format!("{}: {e}", w.module);
            match e {
                WasmError::Invalid(_) => WasmPrepareError::invalid(message),
                _ => WasmPrepareError {
                    kind: ErrorKind::Internal,
                    message,
                },
            }
        })?;
        Ok(Box::new(Job {
            prepared,
            export: w.export.clone(),
            memory_limit: w.memory_limit,
        }))
    }
}

impl PreparedWasm for Job {
    fn run(self: Box<Self>, p: &WasmProcess, dirs: Vec<GuestDir>) -> i32 {
        // Only the detached clones the init opened: no path is resolved for a preopen.
        let spec = RunSpec {
            args: p.args.clone(),
            env: p.env.clone(),
            cwd: p.cwd.clone(),
            preopens: dirs
                .into_iter()
                .map(|d| Preopen {
                    guest: d.guest.to_string_lossy().into_owned(),
                    host: d.guest,
                    dir: Some(Arc::new(d.dir)),
                    readonly: d.readonly,
                })
                .collect(),
            memory_limit: self.memory_limit,
            export: self.export,
        };
        self.prepared.run(&spec)
    }
}
