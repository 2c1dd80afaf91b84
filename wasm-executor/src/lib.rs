//! The WebAssembly side of amphi: compile a module or component with wasmtime (through a
//! compiled-artifact cache) and run it as the container's workload. It depends on no
//! containerd type.
//!
//! # Where it runs
//!
//! The container's init process (our own binary, re-executed, single-threaded, already in
//! the container's namespaces and cgroup, after `pivot_root`) calls this crate instead of
//! `execve`. Its fds 0, 1 and 2 are the container's stdio, so the guest inherits them.
//!
//! # Data flow
//!
//! ```text
//! bytes ──classify──▶ module | component | text
//!   │
//!   ├─ prepare(bytes, WasmConfig) ──▶ (Prepared, CacheOutcome)
//!   │     key = sha256(bytes ‖ engine compatibility hash)
//!   │     cache hit: verify checksum ─▶ map <key>.cwasm (code pages shared between containers)
//!   │     miss / corrupt: compile ─▶ store atomically ─▶ map it ─▶ evict LRU past the bound
//!   │
//!   └─ Prepared::run(RunSpec) ──▶ exit status (i32)
//!         WASI p1 context (core modules) or WASI 0.2 context (components):
//!         args, env, preopens with read-only flags, memory limit, inherited stdio
//! ```
//!
//! Modules: [`classify`](crate::classify()) recognises Wasm bytes, `cache` owns the
//! artifact directory (no wasmtime in it), `engine` holds every wasmtime call (one
//! engine configuration, compile, load, WASI contexts, exit statuses), `sys` holds the
//! signal handler that stops a spinning guest on SIGTERM.
//!
//! # Exit statuses of [`Prepared::run`]
//!
//! | what happened | status |
//! |---|---|
//! | `_start` (or the chosen export) returned; `wasi:cli/run` returned `ok` | 0 |
//! | `proc_exit(n)` (p1, n < 126: WASI reserves larger values and wasmtime-wasi turns them into an error, reported like a trap), `wasi:cli/exit.exit-with-code(n)` | n |
//! | `wasi:cli/exit.exit(ok / err)` | 0 / 1 |
//! | `wasi:cli/run` returned `err` | 1 |
//! | a trap (unreachable, out of bounds, stack overflow, memory growth past the limit) | 134, like a native program that aborts (128 + SIGABRT) |
//! | the export does not exist | 127, like a shell's "command not found" |
//! | the guest could not be set up (a preopen cannot be opened, an unknown import, instantiation failed) | 126, like a shell's "cannot execute" |
//! | SIGTERM / SIGINT | 128 + signal number (143 / 130), exited at once from the handler |
//!
//! Statuses 126, 127 and 134 come with a line on stderr (`wasm: ...`, `wasm trap: ...`,
//! plus a short wasm backtrace when there is one) so `ctr run` and `kubectl logs` show why.
//!
//! ```
//! use amphi_wasm_executor::{classify, Binary};
//! assert_eq!(classify(b"\0asm\x01\0\0\0"), Some(Binary::Module));
//! assert_eq!(classify(b"(module)"), Some(Binary::Text));
//! assert_eq!(classify(b"\x7fELF"), None);
//! ```
//!
//! # What a guest sees
//!
//! Exactly the [`RunSpec`]: its args, env and cwd, the inherited stdio, and its
//! preopens, nothing else (no sockets, no name lookup; clocks and `random_get` come from
//! WASI). A [`Preopen`] with `dir` set is that open directory and no path is resolved for
//! it: the container init passes detached, non-recursive, `nodev` clones of each mount
//! (`/` and each directory mount), so `/proc`, `/sys` and `/dev` are not below `/` and
//! the guest cannot reach its own process through `/proc/self/mem`. Paths inside a
//! preopen are resolved by wasmtime-wasi: `..` past the root and absolute symlinks are
//! refused (`ENOTCAPABLE`); a read-only preopen refuses writes (`EPERM`/`EROFS`).
//!
//! # Limitations
//!
//! - The working directory: `RunSpec::cwd` reaches components as
//!   `wasi:cli/environment.initial-cwd`. WASI preview 1 has no such call, and wasi-libc
//!   starts its emulated cwd at `/` without asking (seen with a Rust 1.95 `wasm32-wasip2`
//!   program), so relative paths of most guests resolve against `/` whatever the spec says.
//! - The SIGTERM handler is installed by `run`: as PID 1 the process ignores SIGTERM during
//!   `prepare` (compilation) and before; SIGKILL always works.
//! - No network is granted (no sockets, no name lookup).
//! - The memory limit counts linear memories and tables only; the cgroup stays the real
//!   bound for compiled code and host allocations.
//! - wasmtime-wasi runs some host calls on an internal tokio runtime, so worker threads
//!   appear in the process once the guest uses WASI; they share its cgroup and die with it.
//! - Each linear memory reserves address space up front (wasmtime's defaults: several GiB
//!   of virtual memory, guard regions included), so a low `RLIMIT_AS` makes instantiation
//!   fail (status 126); the memory cgroup counts only what is touched.
//! - The cache directory must allow executable file mappings (not `noexec`); otherwise
//!   every load falls back to an in-memory copy of the artifact.
//! - wasmtime keeps the artifact's `File` open for the life of its mapping
//!   (`deserialize_open_file`); with [`WasmConfig::cache_view`] that fd is on a read-only
//!   mount, without it (tools, tests) on the writable cache directory.

#![warn(missing_docs)]

mod cache;
mod classify;
mod engine;
mod sys;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

pub use classify::{Binary, classify};
pub use engine::Prepared;

use engine::Kind;

/// How [`prepare`] compiles: where the compiled-artifact cache lives and how big it may grow.
#[derive(Debug, Default)]
pub struct WasmConfig {
    /// The cache directory, opened by the caller before `pivot_root` (`O_DIRECTORY` with
    /// `O_PATH` or `O_RDONLY`), for writing entries. `None` disables the cache.
    pub cache_dir: Option<OwnedFd>,
    /// Where entries to map are opened: a read-only detached clone of `cache_dir`, so the
    /// artifact file wasmtime keeps open for its mapping cannot be reopened for writing.
    /// `None`: through `cache_dir` itself (tools and tests; the container init always
    /// passes one).
    pub cache_view: Option<OwnedFd>,
    /// Upper bound, in bytes, of the entries kept in the cache directory.
    pub cache_max_bytes: u64,
}

/// What the cache did during one [`prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache directory was configured; the module was compiled in memory.
    Disabled,
    /// A verified artifact was loaded; nothing was compiled.
    Hit,
    /// No artifact existed; the module was compiled and stored.
    Miss,
    /// The artifact was corrupt or incompatible; the module was compiled and the entry replaced.
    Recompiled,
    /// The module was compiled but the cache could not be written (e.g. `EACCES`, `EROFS`).
    NotStored,
}

/// A directory the guest may use: `host` appears to the guest as `guest`.
#[derive(Debug, Clone)]
pub struct Preopen {
    /// The directory, as the process sees it: a path when `dir` is `None`, else only the
    /// name used in messages.
    pub host: PathBuf,
    /// The directory already opened (the container init passes a detached clone of the
    /// mount, see `amphi_linux_executor`); preferred over `host`, which is then not
    /// resolved at all.
    pub dir: Option<Arc<OwnedFd>>,
    /// The name the guest sees, e.g. `/` or a mount destination.
    pub guest: String,
    /// Whether the guest may only read.
    pub readonly: bool,
}

/// How to run a prepared module: the OCI process translated to WASI terms.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// argv; `args[0]` is the program name as the guest sees it.
    pub args: Vec<String>,
    /// The OCI process environment; the host environment is never inherited.
    pub env: Vec<(String, String)>,
    /// The guest's initial working directory (see the crate's Limitations for p1).
    pub cwd: String,
    /// The directories the guest may open, typically `/` plus each mount destination.
    pub preopens: Vec<Preopen>,
    /// Upper bound, in bytes, of each linear memory (and of each table's elements at 8
    /// bytes each); growth past it traps. The cgroup bounds the sum.
    pub memory_limit: Option<u64>,
    /// Call this export instead of `_start` (core modules) or `wasi:cli/run` (components).
    pub export: Option<String>,
}

/// Why a module could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The bytes are not a valid module, component or WebAssembly text.
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    /// wasmtime could not compile a module that validated.
    #[error("cannot compile WebAssembly module: {0}")]
    Compile(String),
    /// The engine configuration was rejected (a bug or an unsupported host).
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// A compiled artifact could not be loaded.
    #[error("cannot load compiled WebAssembly: {0}")]
    Load(String),
    /// A cache directory operation failed. [`prepare`] logs these and carries on without
    /// the cache ([`CacheOutcome::NotStored`]): the cache never makes a container fail.
    #[error("compiled-artifact cache: cannot {op} {}: {source}", path.display())]
    Cache {
        /// What was attempted (`open`, `read`, `write`, ...).
        op: &'static str,
        /// The entry, relative to the cache directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Compiles (or loads from the cache) a core module, a component, or WebAssembly text.
///
/// Returns the prepared code and what the cache did. Errors: [`WasmError::Invalid`] when
/// the bytes are not WebAssembly or do not validate; cache failures are never errors.
pub fn prepare(bytes: &[u8], config: &WasmConfig) -> Result<(Prepared, CacheOutcome), WasmError> {
    let kind = match classify(bytes) {
        Some(Binary::Module) => Kind::Module,
        Some(Binary::Component) => Kind::Component,
        Some(Binary::Text) if classify::text_is_component(bytes) => Kind::Component,
        Some(Binary::Text) => Kind::Module,
        None => {
            return Err(WasmError::Invalid(
                "not a core module, a component or WebAssembly text".into(),
            ));
        }
    };
    let engine = engine::new_engine()?;
    let Some(dir) = config.cache_dir.as_ref() else {
        return Ok((
            engine::compile(&engine, kind, bytes)?,
            CacheOutcome::Disabled,
        ));
    };
    let view = config.cache_view.as_ref().unwrap_or(dir);
    let cache = cache::Cache::new(dir.as_fd(), view.as_fd(), config.cache_max_bytes);
    let key = cache::key(bytes, &engine::compatibility_digest(&engine));

    let mut fresh_outcome = CacheOutcome::Miss;
    match cache.lookup(&key) {
        Ok(cache::Lookup::Found(artifact)) => match engine::load_verified(&engine, kind, &artifact)
        {
            Ok(prepared) => {
                cache.touch(&artifact);
                return Ok((prepared, CacheOutcome::Hit));
            }
            Err(err) => {
                log::warn!("cache entry {key} rejected, recompiling: {err}");
                fresh_outcome = CacheOutcome::Recompiled;
            }
        },
        Ok(cache::Lookup::Corrupt(reason)) => {
            log::warn!("cache entry {key} is corrupt ({reason}), recompiling");
            fresh_outcome = CacheOutcome::Recompiled;
        }
        Ok(cache::Lookup::Absent) => {}
        Err(err) => log::warn!("{err}; compiling"),
    }

    let artifact = engine::precompile(&engine, kind, bytes)?;
    let stored = match cache.store(&key, artifact.bytes()) {
        Ok(stored) => stored,
        Err(err) => {
            log::warn!("{err}; running without caching");
            return Ok((
                engine::load_fresh(&engine, kind, &artifact)?,
                CacheOutcome::NotStored,
            ));
        }
    };
    cache.evict(&key);
    let prepared = match engine::load_verified(&engine, kind, &stored) {
        Ok(prepared) => prepared,
        Err(err) => {
            // Typically a `noexec` cache mount: the entry is fine, mapping it is not.
            log::warn!("cannot map the stored artifact {key} ({err}); using a copy in memory");
            engine::load_fresh(&engine, kind, &artifact)?
        }
    };
    Ok((prepared, fresh_outcome))
}
