//! `Prepared::run` end to end, each case in a child process (`amphi-wasm-run`): stdio,
//! exit statuses, args and env, preopens and their read-only flag, memory limit, traps,
//! SIGTERM, named exports. Components are in `component.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn hello_world_prints_and_exits_zero() {
    let dir = temp();
    let file = write_fixture(dir.path(), "hello.wat", &hello("hello from wasm\n"));
    let out = run(command(&file, &[], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "hello from wasm\n");
}

#[test]
fn proc_exit_status_is_the_exit_status() {
    let dir = temp();
    let wat = format!(
        r#"(module {PRELUDE} (func (export "_start") (call $proc_exit (i32.const 3)) unreachable))"#
    );
    let file = write_fixture(dir.path(), "exit3.wat", &wat);
    let out = run(command(&file, &[], &[]));
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.lines().all(|l| l.starts_with("cache:")),
        "{out:?}"
    );
}

#[test]
fn guest_sees_exactly_the_given_args_and_env() {
    let dir = temp();
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  {PRELUDE}
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $print (i32.const 8192) (i32.load (i32.const 4)))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (call $print (i32.const 8192) (i32.load (i32.const 4)))))"#
    );
    let file = write_fixture(dir.path(), "argsenv.wat", &wat);
    let mut cmd = command(
        &file,
        &["--env", "GREETING=hi there", "--env", "EMPTY="],
        &["prog", "one", "two words"],
    );
    cmd.env("AMPHI_HOST_ONLY", "leak");
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        b"prog\0one\0two words\0GREETING=hi there\0EMPTY=\0",
        "{}",
        out.stdout_text()
    );
}

#[test]
fn reads_a_file_from_a_preopened_directory() {
    let dir = temp();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "file contents\n").unwrap();
    let file = write_fixture(dir.path(), "read.wat", &open_file("hello.txt", false));
    let preopen = format!("{}::/data::ro", data.display());
    let out = run(command(&file, &["--dir", &preopen], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "file contents\n");
}

#[test]
fn writing_into_a_readonly_preopen_fails_in_the_guest() {
    let dir = temp();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = write_fixture(dir.path(), "write.wat", &open_file("new.txt", true));

    let readonly = format!("{}::/data::ro", data.display());
    let out = run(command(&file, &["--dir", &readonly], &[]));
    let code = out.code().expect("exited");
    assert!(DENIED.contains(&code), "errno {code}: {out:?}");
    assert!(!data.join("new.txt").exists());

    // The same guest with a writable preopen succeeds: the failure above is the flag.
    let writable = format!("{}::/data", data.display());
    let out = run(command(&file, &["--dir", &writable], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read(data.join("new.txt")).unwrap(), b"written");
}

#[test]
fn paths_outside_the_preopens_cannot_be_opened() {
    let dir = temp();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "host secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), inner.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", inner.join("rel-link")).unwrap();
    let preopen = format!("{}::/inner", inner.display());
    for path in ["../secret.txt", "abs-link", "rel-link"] {
        let file = write_fixture(dir.path(), "escape.wat", &open_file(path, false));
        let out = run(command(&file, &["--dir", &preopen], &[]));
        let code = out.code().expect("exited");
        assert!(DENIED.contains(&code), "{path}: errno {code}: {out:?}");
        assert!(!out.stdout_text().contains("host secret"), "{path}");
    }
}

#[test]
fn memory_growth_past_the_limit_traps_with_134() {
    let dir = temp();
    let wat = r#"(module (memory 1)
  (func (export "_start") (loop $grow (drop (memory.grow (i32.const 1))) (br $grow))))"#;
    let file = write_fixture(dir.path(), "grow.wat", wat);
    let out = run(command(
        &file,
        &["--memory", &(1u64 << 20).to_string()],
        &[],
    ));
    assert_eq!(out.code(), Some(134), "{out:?}");
    assert!(out.stderr.contains("wasm trap"), "{out:?}");
}

#[test]
fn traps_report_134_with_a_message() {
    let dir = temp();
    let cases = [
        (
            r#"(module (func (export "_start") unreachable))"#,
            "unreachable",
        ),
        (
            r#"(module (func $f (export "_start") (call $f)))"#,
            "call stack exhausted",
        ),
        (
            r#"(module (memory 1) (func (export "_start") (drop (i32.load (i32.const 70000)))))"#,
            "out of bounds memory access",
        ),
    ];
    for (wat, what) in cases {
        let file = write_fixture(dir.path(), "trap.wat", wat);
        let out = run(command(&file, &[], &[]));
        assert_eq!(out.code(), Some(134), "{what}: {out:?}");
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("wasm trap: "))
            .unwrap_or_else(|| panic!("no trap line: {out:?}"));
        assert!(line.contains(what), "{line}");
    }
}

/// A guest that prints `ready` and then spins forever.
fn spin() -> String {
    format!(
        r#"(module {PRELUDE} (data (i32.const 256) "ready\n")
  (func (export "_start") (call $print (i32.const 256) (i32.const 6)) (loop $spin (br $spin))))"#
    )
}

/// Reads the `ready` line of [`spin`] (the stream stays with the child for `wait`).
fn wait_ready(child: &mut std::process::Child) {
    let mut ready = [0u8; 6];
    let stdout = child.stdout.as_mut().expect("stdout");
    stdout.read_exact(&mut ready).expect("read ready");
    assert_eq!(&ready, b"ready\n");
}

#[test]
fn sigterm_stops_an_infinite_loop_with_143() {
    let dir = temp();
    let file = write_fixture(dir.path(), "spin.wat", &spin());
    let mut child = command(&file, &[], &[]).spawn().expect("spawn");
    // Wait until the guest runs (the handler is installed before the guest starts).
    wait_ready(&mut child);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the loop ended by itself"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait(child, Duration::from_secs(2));
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_eq!(out.code(), Some(143), "{out:?}");
}

/// The real situation: the runner is PID 1 of a new pid namespace, where a signal without
/// a handler is ignored, so only the handler can make SIGTERM work. Needs root (`unshare`).
#[test]
fn sigterm_stops_pid_1_of_a_pid_namespace_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to create a pid namespace"
    );
    let dir = temp();
    let file = write_fixture(dir.path(), "spin.wat", &spin());
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", BIN])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn unshare");
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid1 = loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            break pid.parse::<i32>().unwrap();
        }
        assert!(Instant::now() < deadline, "the runner did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_ready(&mut child); // the handler is installed before the guest starts
    let pid1 = nix::unistd::Pid::from_raw(pid1);
    nix::sys::signal::kill(pid1, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait(child, Duration::from_secs(2));
    assert_eq!(out.code(), Some(143), "{out:?}");
}

#[test]
fn export_selects_the_function_to_call() {
    let dir = temp();
    let wat = format!(
        r#"(module {PRELUDE} (data (i32.const 256) "named export\n")
  (func (export "_start") (call $proc_exit (i32.const 9)))
  (func (export "greet") (call $print (i32.const 256) (i32.const 13))))"#
    );
    let file = write_fixture(dir.path(), "export.wat", &wat);
    let out = run(command(&file, &["--export", "greet"], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "named export\n");

    let out = run(command(&file, &[], &[]));
    assert_eq!(out.code(), Some(9), "{out:?}");

    let out = run(command(&file, &["--export", "missing"], &[]));
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert!(out.stderr.contains("\"missing\""), "{out:?}");
}

#[test]
fn unknown_imports_are_a_setup_failure() {
    let dir = temp();
    let wat = r#"(module (import "env" "nope" (func)) (func (export "_start")))"#;
    let file = write_fixture(dir.path(), "import.wat", wat);
    let out = run(command(&file, &[], &[]));
    assert_eq!(out.code(), Some(126), "{out:?}");
    assert!(out.stderr.contains("wasm: cannot instantiate"), "{out:?}");
}

#[test]
fn a_missing_preopen_directory_is_a_setup_failure() {
    let dir = temp();
    let file = write_fixture(dir.path(), "hello.wat", &hello("x"));
    let missing = format!("{}::/data", dir.path().join("absent").display());
    let out = run(command(&file, &["--dir", &missing], &[]));
    assert_eq!(out.code(), Some(126), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_input_does_not_run() {
    let dir = temp();
    let file = write_fixture(dir.path(), "bad.wat", "(module (func (result i32)))");
    let out = run(command(&file, &[], &[]));
    assert_eq!(out.code(), Some(65), "{out:?}");
    assert!(out.stderr.contains("invalid WebAssembly module"), "{out:?}");
}
