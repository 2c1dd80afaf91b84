//! Shared test helpers: `.wat` fixtures (readable text, compiled at test time) and a runner
//! for the `amphi-wasm-run` fixture binary. `Prepared::run` inherits fds 0-2 and installs
//! a SIGTERM handler, so every run happens in a child process whose output we capture.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_amphi-wasm-run");

/// WASI p1 imports used by the fixtures, plus a memory and a `$print` helper
/// (`ptr`, `len`) that writes to stdout through an iovec at offset 16.
pub const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
"#;

/// A module whose `_start` prints `text` (ASCII; quotes and backslashes not allowed).
pub fn hello(text: &str) -> String {
    format!(
        r#"(module {PRELUDE}
  (data (i32.const 256) "{escaped}")
  (func (export "_start") (call $print (i32.const 256) (i32.const {len}))))"#,
        escaped = text.replace('\n', "\\n"),
        len = text.len()
    )
}

/// A module that opens `path` relative to the first preopen (fd 3) with `oflags` and
/// `rights`, exits with the errno if that fails, then reads the file to stdout (when
/// `write` is false) or writes `written` into it (when true), and exits 0.
pub fn open_file(path: &str, write: bool) -> String {
    // rights: fd_read = 1 << 1, fd_write = 1 << 6; oflags: creat = 1.
    let (oflags, rights) = if write { (1, 64) } else { (0, 2) };
    let body = if write {
        r#"(i32.store (i32.const 16) (i32.const 512)) (i32.store (i32.const 20) (i32.const 7))
    (local.set $err (call $fd_write (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))"#
    } else {
        r#"(i32.store (i32.const 16) (i32.const 1024)) (i32.store (i32.const 20) (i32.const 4096))
    (local.set $err (call $fd_read (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))
    (if (i32.eqz (local.get $err))
      (then (call $print (i32.const 1024) (i32.load (i32.const 24)))))"#
    };
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  {PRELUDE}
  (data (i32.const 256) "{path}")
  (data (i32.const 512) "written")
  (func (export "_start") (local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 256) (i32.const {len})
      (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 0)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    {body}
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 100) (local.get $err)))))))"#,
        len = path.len()
    )
}

/// WASI p1 errnos that mean "not allowed": acces, perm, notcapable, rofs, and loop (what
/// the sandboxed resolver answers for an absolute symlink).
pub const DENIED: [i32; 5] = [2, 63, 76, 69, 32];

/// What a child run produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Writes `wat` into `dir` and returns its path.
pub fn write_fixture(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat).expect("write fixture");
    path
}

/// The runner command: `options` go before the file, `args` (argv) after it.
pub fn command(file: &Path, options: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(options).arg(file).args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to completion (killed after 60 s so a broken test cannot hang).
pub fn run(mut cmd: Command) -> Outcome {
    let child = cmd.spawn().expect("spawn amphi-wasm-run");
    wait(child, Duration::from_secs(60))
}

/// Waits for `child` at most `limit`, then kills it; collects its output.
pub fn wait(mut child: Child, limit: Duration) -> Outcome {
    // Streams a caller already took (to read a marker) are left to the caller.
    let out = child.stdout.take();
    let err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut out) = out {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(mut err) = err {
            let _ = err.read_to_string(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait after kill");
            panic!("child did not finish within {limit:?} ({status:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}
