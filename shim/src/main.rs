//! `containerd-shim-amphi-v1`: containerd's shim for Linux and WebAssembly containers.
//!
//! One binary, four roles, routed here before any thread exists:
//!
//! - `init`: the container init helper, re-executed by the server for every container
//!   (single-threaded; see `amphi_linux_executor::init`); it `execve`s a Linux workload
//!   or runs a WebAssembly one in wasmtime ([`wasm`]).
//! - `-v`, `-info`, `start`, `delete`: short actions containerd runs ([`bootstrap`]).
//! - no action: the long-lived ttrpc server ([`server`]).

mod bootstrap;
mod dispatch;
mod error;
mod image;
mod metrics;
mod options;
mod reaper;
mod resources;
mod server;
mod service;
mod state;
mod stdio;
mod sys;
mod task;
mod wasm;

use std::ffi::OsStr;

pub const RUNTIME_ID: &str = "io.containerd.amphi.v1";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const BINARY: &str = "containerd-shim-amphi-v1";

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) == Some(OsStr::new("init")) {
        // Before tokio, before any thread: this process becomes a container, native or
        // WebAssembly.
        amphi_linux_executor::init::main_with(&wasm::Runner);
    }
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-v" || a == "-version" || a == "--version")
    {
        println!("{BINARY}:\n  Version:  {VERSION}\n  Runtime:  {RUNTIME_ID}");
        return;
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => fail(&e.to_string()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => fail(&format!("tokio runtime: {e}")),
    };
    let result = runtime.block_on(async {
        if flags.info {
            return bootstrap::info();
        }
        match flags.action.as_str() {
            "start" => bootstrap::start(&flags).await,
            "delete" => bootstrap::delete(&flags),
            "" => server::serve(&flags).await,
            other => Err(error::Error::InvalidArgument(format!(
                "unknown action {other:?}"
            ))),
        }
    });
    if let Err(e) = result {
        log::error!("{e}");
        fail(&e.to_string());
    }
    // Do not wait for blocking tasks (e.g. a start barrier) when exiting.
    runtime.shutdown_background();
}

fn fail(msg: &str) -> ! {
    // containerd logs what `start`/`delete` print on failure; never print on success.
    eprintln!("{BINARY}: {msg}");
    std::process::exit(1)
}
