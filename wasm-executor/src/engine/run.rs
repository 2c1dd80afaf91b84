//! Running a [`Prepared`] module: the WASI context built from a [`RunSpec`], one store
//! with memory limits, instantiation, the call, and the mapping of how it ended to an exit
//! status (table in the crate docs).
//!
//! Data flow: `Prepared::run` → signal handlers → `run_module` (WASI p1, `_start` or the
//! export) or `run_component` (WASI 0.2, `wasi:cli/run` or the export) → [`Ended`] →
//! one stderr line and a status.
//!
//! Limitations: an export called by name must take no parameters; its results are
//! ignored, except a component's `result` (an `err` is status 1).

use std::io::Write;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use wasmtime::component::{self, ResourceTable};
use wasmtime::{Engine, Linker, Store, StoreLimits, StoreLimitsBuilder, Trap, Val, WasmBacktrace};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Code, Prepared};
use crate::RunSpec;

/// A trap: like a native program that aborts (128 + SIGABRT).
const STATUS_TRAP: i32 = 134;
/// The export does not exist: like a shell's "command not found".
const STATUS_NO_EXPORT: i32 = 127;
/// The guest could not be set up: like a shell's "cannot execute".
const STATUS_SETUP: i32 = 126;

/// How a guest run ended.
#[derive(Debug)]
enum Ended {
    /// Returned normally, or asked to exit with a status.
    Exit(i32),
    /// Trapped or failed while running.
    Trap(wasmtime::Error),
    /// The export to call does not exist.
    NoExport(String),
    /// The guest could not be set up or instantiated.
    Setup(String),
}

impl Prepared {
    /// Runs the module as the container's workload and returns the status to exit with.
    ///
    /// Installs a SIGTERM/SIGINT handler that exits at once with 128 + signo, inherits
    /// fds 0-2, and never returns an error: every failure becomes a status plus one line
    /// on stderr.
    pub fn run(self, spec: &RunSpec) -> i32 {
        if let Err(err) = crate::sys::exit_on_termination_signals() {
            eprintln!("wasm: cannot install the SIGTERM handler: {err}");
        }
        let ended = match self.code {
            Code::Module(module) => run_module(&self.engine, &module, spec),
            Code::Component(component) => run_component(&self.engine, &component, spec),
        };
        let status = report(ended);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        status
    }
}

/// Prints what the status alone does not say and returns the status.
fn report(ended: Ended) -> i32 {
    match ended {
        Ended::Exit(status) => status,
        Ended::Trap(err) => {
            eprintln!("{}", trap_message(&err));
            STATUS_TRAP
        }
        Ended::NoExport(name) => {
            eprintln!("wasm: the module has no export named {name:?}");
            STATUS_NO_EXPORT
        }
        Ended::Setup(message) => {
            eprintln!("wasm: {message}");
            STATUS_SETUP
        }
    }
}

/// `wasm trap: <what>`, followed by the wasm backtrace when it is short.
fn trap_message(err: &wasmtime::Error) -> String {
    let mut message = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(), // already reads "wasm trap: ..."
        None => format!("wasm trap: {}", err.root_cause()),
    };
    if let Some(backtrace) = err.downcast_ref::<WasmBacktrace>()
        && !backtrace.frames().is_empty()
        && backtrace.frames().len() < super::BACKTRACE_FRAMES
    {
        message.push('\n');
        message.push_str(&backtrace.to_string());
    }
    message
}

/// Sorts the result of a call into an exit status or a trap.
fn ended_by(result: wasmtime::Result<()>) -> Ended {
    match result {
        Ok(()) => Ended::Exit(0),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Ended::Exit(exit.0),
            None => Ended::Trap(err),
        },
    }
}

/// Instantiation failed: a trap in a start function is a trap, anything else is setup.
fn instantiation_failed(err: wasmtime::Error) -> Ended {
    if err.downcast_ref::<I32Exit>().is_some() {
        return ended_by(Err(err));
    }
    if err.downcast_ref::<Trap>().is_some() {
        return Ended::Trap(err);
    }
    Ended::Setup(format!("cannot instantiate: {err:#}"))
}

fn store_limits(spec: &RunSpec) -> StoreLimits {
    let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
    if let Some(bytes) = spec.memory_limit {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        // Each memory is capped at the limit; a table element takes at least a pointer, so
        // `bytes / 8` elements keep each table within the same budget.
        limits = limits.memory_size(bytes).table_elements(bytes / 8);
    }
    limits.build()
}

/// The WASI context both kinds share: args, env (never the host's), cwd, preopens and
/// inherited stdio; no network.
fn wasi_builder(spec: &RunSpec) -> Result<WasiCtxBuilder, String> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .inherit_stdio()
        .args(&spec.args)
        .envs(&spec.env)
        .allow_blocking_current_thread(true)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if !spec.cwd.is_empty() {
        builder.initial_cwd(&spec.cwd);
    }
    for preopen in &spec.preopens {
        let perms = if preopen.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        let added = match &preopen.dir {
            Some(dir) => preopen_open_dir(&mut builder, dir, &preopen.guest, perms),
            None => builder
                .preopened_dir(&preopen.host, &preopen.guest, perms)
                .map(|_| ()),
        };
        added.map_err(|err| {
            format!(
                "cannot open directory {} for {}: {err:#}",
                preopen.host.display(),
                preopen.guest
            )
        })?;
    }
    Ok(builder)
}

/// Preopens an already opened directory. wasmtime-wasi 48 only takes a path, so the
/// directory becomes the working directory for the moment `"."` is opened (no path is
/// resolved from `/`, and no procfs is needed), then the previous working directory is
/// restored.
fn preopen_open_dir(
    builder: &mut WasiCtxBuilder,
    dir: &OwnedFd,
    guest: &str,
    perms: FsPerms,
) -> wasmtime::Result<()> {
    let previous = nix::fcntl::open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::fchdir(dir)?;
    let added = builder.preopened_dir(".", guest, perms).map(|_| ());
    nix::unistd::fchdir(&previous)?;
    added
}

struct ModuleState {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

fn run_module(engine: &Engine, module: &wasmtime::Module, spec: &RunSpec) -> Ended {
    let wasi = match wasi_builder(spec) {
        Ok(mut builder) => builder.build_p1(),
        Err(message) => return Ended::Setup(message),
    };
    let mut store = Store::new(
        engine,
        ModuleState {
            wasi,
            limits: store_limits(spec),
        },
    );
    store.limiter(|state| &mut state.limits);
    let mut linker = Linker::new(engine);
    if let Err(err) =
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ModuleState| &mut s.wasi)
    {
        return Ended::Setup(format!("cannot link WASI: {err:#}"));
    }
    let instance = match linker.instantiate(&mut store, module) {
        Ok(instance) => instance,
        Err(err) => return instantiation_failed(err),
    };
    let name = spec.export.as_deref().unwrap_or("_start");
    let Some(func) = instance.get_func(&mut store, name) else {
        return Ended::NoExport(name.to_owned());
    };
    // A reactor (no `_start`) initialises itself before any other export is called.
    if name != "_start"
        && name != "_initialize"
        && let Some(init) = instance.get_func(&mut store, "_initialize")
    {
        match ended_by(init.call(&mut store, &[], &mut [])) {
            Ended::Exit(0) => {}
            other => return other,
        }
    }
    let ty = func.ty(&store);
    if ty.params().len() != 0 {
        return Ended::Setup(format!("export {name:?} takes parameters"));
    }
    let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
    ended_by(func.call(&mut store, &[], &mut results))
}

struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn run_component(engine: &Engine, component: &component::Component, spec: &RunSpec) -> Ended {
    let ctx = match wasi_builder(spec) {
        Ok(mut builder) => builder.build(),
        Err(message) => return Ended::Setup(message),
    };
    let mut store = Store::new(
        engine,
        ComponentState {
            ctx,
            table: ResourceTable::new(),
            limits: store_limits(spec),
        },
    );
    store.limiter(|state| &mut state.limits);
    let mut linker = component::Linker::new(engine);
    if let Err(err) = wasmtime_wasi::p2::add_to_linker_sync(&mut linker) {
        return Ended::Setup(format!("cannot link WASI: {err:#}"));
    }
    let pre = match linker.instantiate_pre(component) {
        Ok(pre) => pre,
        Err(err) => return Ended::Setup(format!("cannot link the component: {err:#}")),
    };
    let Some(name) = spec.export.as_deref() else {
        let Ok(command) = CommandPre::new(pre) else {
            return Ended::NoExport("wasi:cli/run".into());
        };
        return match command.instantiate(&mut store) {
            Ok(command) => match command.wasi_cli_run().call_run(&mut store) {
                Ok(Ok(())) => Ended::Exit(0),
                Ok(Err(())) => Ended::Exit(1),
                Err(err) => ended_by(Err(err)),
            },
            Err(err) => instantiation_failed(err),
        };
    };
    let instance = match pre.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(err) => return instantiation_failed(err),
    };
    let Some(func) = instance.get_func(&mut store, name) else {
        return Ended::NoExport(name.to_owned());
    };
    let ty = func.ty(&store);
    if ty.params().len() != 0 {
        return Ended::Setup(format!("export {name:?} takes parameters"));
    }
    let mut results: Vec<component::Val> =
        ty.results().map(|_| component::Val::Bool(false)).collect();
    match func.call(&mut store, &[], &mut results) {
        Ok(()) if matches!(results.first(), Some(component::Val::Result(Err(_)))) => Ended::Exit(1),
        result => ended_by(result),
    }
}
