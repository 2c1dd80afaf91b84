//! Test fixture and manual tool: prepare and run one WebAssembly file the way the
//! container init process does, in a process of its own (the run inherits fds 0-2 and
//! installs a SIGTERM handler, so tests run it as a child).
//!
//! ```text
//! amphi-wasm-run [--cache DIR [--cache-max BYTES]] [--env K=V]... [--dir HOST::GUEST[::ro]]...
//!                [--memory BYTES] [--export NAME] [--cwd DIR] FILE [ARG0 ARGS...]
//! ```
//!
//! ARG0 defaults to FILE. The cache outcome is printed to stderr as `cache: <outcome>`.
//! Exit status: the guest's (see the crate docs), or 2 for bad usage / unreadable
//! input, 65 for a module that does not prepare.
//!
//! Limitations: no stdin wiring beyond inheritance and no OCI spec parsing: the shim's
//! init process builds the `RunSpec` from config.json.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use amphi_wasm_executor::{Preopen, RunSpec, WasmConfig, prepare};

struct Options {
    config: WasmConfig,
    spec: RunSpec,
    file: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut config = WasmConfig {
        cache_dir: None,
        cache_view: None,
        cache_max_bytes: 256 << 20,
    };
    let mut spec = RunSpec {
        cwd: "/".into(),
        ..RunSpec::default()
    };
    let file = loop {
        let arg = args.next().ok_or("missing FILE")?;
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--cache" => {
                let dir = std::fs::File::open(value()?).map_err(|e| format!("--cache: {e}"))?;
                config.cache_dir = Some(OwnedFd::from(dir));
            }
            "--cache-max" => config.cache_max_bytes = number(&value()?)?,
            "--env" => {
                let pair = value()?;
                let (k, v) = pair.split_once('=').ok_or("--env wants K=V")?;
                spec.env.push((k.into(), v.into()));
            }
            "--dir" => {
                let dir = value()?;
                let mut parts = dir.split("::");
                let host = parts.next().unwrap_or_default();
                let guest = parts.next().ok_or("--dir wants HOST::GUEST[::ro]")?;
                let readonly = match parts.next() {
                    None => false,
                    Some("ro") => true,
                    Some(other) => return Err(format!("--dir: unknown flag {other:?}")),
                };
                spec.preopens.push(Preopen {
                    host: host.into(),
                    dir: None,
                    guest: guest.into(),
                    readonly,
                });
            }
            "--memory" => spec.memory_limit = Some(number(&value()?)?),
            "--export" => spec.export = Some(value()?),
            "--cwd" => spec.cwd = value()?,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => break PathBuf::from(arg),
        }
    };
    spec.args = args.collect();
    if spec.args.is_empty() {
        spec.args.push(file.display().to_string());
    }
    Ok(Options { config, spec, file })
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("amphi-wasm-run: {message}");
            return ExitCode::from(2);
        }
    };
    let bytes = match std::fs::read(&options.file) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("amphi-wasm-run: {}: {err}", options.file.display());
            return ExitCode::from(2);
        }
    };
    let prepared = match prepare(&bytes, &options.config) {
        Ok((prepared, outcome)) => {
            eprintln!("cache: {outcome:?}");
            prepared
        }
        Err(err) => {
            eprintln!("amphi-wasm-run: {err}");
            return ExitCode::from(65);
        }
    };
    let status = prepared.run(&options.spec);
    // Like a process's exit status, only the low 8 bits survive.
    ExitCode::from(u8::try_from(status & 0xff).unwrap_or(u8::MAX))
}
