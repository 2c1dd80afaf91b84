//! Test fixture binary: routes `init` to [`amphi_linux_executor::init::main_with`] as the
//! shim's `main` does, with a fake WebAssembly runner, so the root integration tests
//! (`tests/root_*.rs`) can launch real containers through `CARGO_BIN_EXE_amphi-test-init`
//! without building the shim or wasmtime.
//!
//! The fake "module" is a text file of `key=value` lines: `code=N` (the exit status),
//! `message=...` (printed first), `sleep=1` (run blocks forever), `invalid=reason` (prepare
//! fails with InvalidArgument). Prepare reads it from the host module file when the init
//! opened one, else with a plain open (the init is after pivot_root), writes `fake-compiled` into the cache directory when it gets one, and notes
//! its euid; run prints everything it was given, one `key=value` line each, including the
//! guest directories (`dirs=[(path, readonly, proc)]`, `proc` telling whether `proc/self`
//! exists below that directory handle).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use amphi_linux_executor::init::{
    GuestDir, HostFiles, PreparedWasm, WasmPrepareError, WasmProcess, WasmRunner,
};
use amphi_linux_executor::plan::WasmWorkload;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

struct FakeRunner;

struct FakeJob {
    code: i32,
    message: String,
    sleep: bool,
    workload: WasmWorkload,
    cache: String,
    prepare_uid: u32,
    /// `/proc/self/ns/pid` where prepare ran (the helper, before its fork).
    prepare_pidns: String,
    /// Threads of the process during prepare.
    prepare_threads: usize,
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// What happened to the cache fd: "none", "written" or the write error.
fn use_cache(fd: Option<OwnedFd>, content: &str) -> String {
    let Some(dir) = fd else {
        return "none".into();
    };
    let flags = OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    match openat(
        &dir,
        "fake-compiled",
        flags,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(file) => match nix::unistd::write(&file, content.as_bytes()) {
            Ok(_) => "written".into(),
            Err(e) => format!("write failed: {e}"),
        },
        Err(e) => format!("open failed: {e}"),
    }
}

impl WasmRunner for FakeRunner {
    fn prepare(
        &self,
        w: &WasmWorkload,
        mut files: HostFiles,
    ) -> Result<Box<dyn PreparedWasm>, WasmPrepareError> {
        let read = files
            .read_module(w)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let text = match read {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WasmPrepareError::not_found(format!(
                    "not found: {}",
                    w.module
                )));
            }
            Err(e) => return Err(WasmPrepareError::invalid(format!("{}: {e}", w.module))),
        };
        let mut job = FakeJob {
            code: 0,
            message: String::new(),
            sleep: false,
            workload: w.clone(),
            cache: use_cache(files.cache_dir, &text),
            prepare_uid: nix::unistd::geteuid().as_raw(),
            prepare_pidns: pid_namespace(),
            prepare_threads: std::fs::read_dir("/proc/self/task")
                .map(|d| d.count())
                .unwrap_or(0),
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("code", v)) => job.code = v.trim().parse().unwrap_or(99),
                Some(("message", v)) => job.message = v.to_string(),
                Some(("sleep", _)) => job.sleep = true,
                Some(("invalid", why)) => {
                    return Err(WasmPrepareError::invalid(format!(
                        "invalid WebAssembly module {}: {why}",
                        w.module
                    )));
                }
                _ => {}
            }
        }
        Ok(Box::new(job))
    }
}

fn open_fds() -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

impl PreparedWasm for FakeJob {
    fn run(self: Box<Self>, p: &WasmProcess, dirs: Vec<GuestDir>) -> i32 {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|e| e.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.message);
        let _ = writeln!(out, "args={:?}", p.args);
        let _ = writeln!(out, "env={:?}", p.env);
        let _ = writeln!(out, "cwd={} getcwd={cwd}", p.cwd);
        let _ = writeln!(out, "preopens={:?}", p.preopens);
        let _ = writeln!(
            out,
            "export={:?} memory_limit={:?}",
            self.workload.export, self.workload.memory_limit
        );
        let _ = writeln!(out, "cache={}", self.cache);
        let _ = writeln!(
            out,
            "prepare_uid={} uid={}",
            self.prepare_uid,
            nix::unistd::getuid()
        );
        let _ = writeln!(
            out,
            "prepared_outside_the_pid_namespace={} prepare_threads={}",
            self.prepare_pidns != pid_namespace(),
            self.prepare_threads
        );
        let _ = writeln!(
            out,
            "pid={} dumpable={:?}",
            std::process::id(),
            nix::sys::prctl::get_dumpable().ok()
        );
        let described: Vec<(String, bool, bool)> = dirs
            .iter()
            .map(|d| {
                let proc_below = openat(
                    &d.dir,
                    "proc/self",
                    OFlag::O_PATH | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .is_ok();
                (d.guest.display().to_string(), d.readonly, proc_below)
            })
            .collect();
        let _ = writeln!(out, "dirs={described:?}");
        let dir_fds: Vec<u32> = dirs
            .iter()
            .filter_map(|d| u32::try_from(d.dir.as_raw_fd()).ok())
            .collect();
        let fds: Vec<u32> = open_fds()
            .into_iter()
            .filter(|fd| !dir_fds.contains(fd))
            .collect();
        let _ = writeln!(out, "fds={fds:?}");
        // No trailing newline: the init must flush Rust's stdout buffer before `_exit`.
        let _ = write!(out, "end");
        drop(out);
        if self.sleep {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        self.code
    }
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        amphi_linux_executor::init::main_with(&FakeRunner);
    }
    eprintln!(
        "amphi-test-init: internal test helper; run as `amphi-test-init init` by launch::create"
    );
    std::process::exit(2);
}
