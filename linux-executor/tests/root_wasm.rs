//! Root integration tests of WebAssembly workloads through the init's [`main_with`] seam,
//! with the fake runner of the `amphi-test-init` binary (no wasmtime: a "module" is a text
//! file of `key=value` lines, see `src/bin/amphi-test-init.rs`). They panic (never skip)
//! when not run as root.
//!
//! [`main_with`]: amphi_linux_executor::init::main_with

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use amphi_linux_executor::launch::ErrorKind;
use amphi_linux_executor::plan::{InitPlan, WasmWorkload, Workload, split_entrypoint};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::{Value, json};

/// A plan running the Wasm entrypoint `entry` of `spec`, with an optional cache directory.
fn wasm_plan(spec: &Value, rootfs: &Path, entry: &str, cache: Option<&Path>) -> InitPlan {
    let oci: oci_spec::runtime::Spec =
        serde_json::from_value(spec.clone()).expect("test spec parses");
    let (module, export) = split_entrypoint(entry).expect("valid entrypoint");
    let mut w = WasmWorkload::new(module, export, &oci).expect("valid entrypoint");
    if let Some(dir) = cache {
        w = w.with_cache(dir.to_path_buf(), 1 << 20);
    }
    plan(spec, rootfs).with_workload(Workload::Wasm(w))
}

fn write_module(rootfs: &Path, path: &str, text: &str) {
    let file = rootfs.join(path.trim_start_matches('/'));
    fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    fs::write(file, text).expect("write module");
}

#[test]
fn root_wasm_module_sees_its_process_and_its_exit_code_propagates() {
    let _g = serial();
    let fx = busybox_rootfs();
    // Not executable and not in PATH: a Wasm workload has no PATH lookup.
    write_module(
        &fx.rootfs,
        "/app/hello.wasm",
        "code=7\nmessage=hello from wasm\n",
    );
    fs::create_dir_all(fx.rootfs.join("work")).expect("mkdir");
    let host = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut s = spec(&["hello.wasm", "a b"]);
    s["process"]["env"] = json!(["PATH=/bin", "FOO=bar=baz"]);
    s["process"]["cwd"] = json!("/work");
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    s["root"]["readonly"] = json!(true);
    s["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    let mounts = s["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}));
    mounts.push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}),
    );
    let plan = wasm_plan(&s, &fx.rootfs, "/app/hello.wasm#greet", Some(cache.path()));
    // An fd without close-on-exec leaks into the helper, as one from a careless library of
    // the shim would: the init must close it (nothing execs to drop it).
    let leaked = nix::unistd::pipe().expect("pipe without O_CLOEXEC");
    let out = no_mount_leak(fx.dir.path(), || run_plan(&plan)).expect("container runs");
    drop(leaked);
    assert_eq!(out.code(), 7, "stderr: {}", out.stderr);
    let expected = [
        "hello from wasm",
        r#"args=["hello.wasm", "a b"]"#,
        r#"env=[("PATH", "/bin"), ("FOO", "bar=baz")]"#,
        "cwd=/work getcwd=/work",
        r#"preopens=[("/", true), ("/run", false), ("/data", true), ("/tmp", false)]"#,
        r#"export=Some("greet") memory_limit=Some(67108864)"#,
        "cache=written",
        // Prepared as root (before the identity switch), run as the container user.
        "prepare_uid=0 uid=1000",
        // Prepared by the single-threaded helper, before it forked into the pid namespace.
        "prepared_outside_the_pid_namespace=true prepare_threads=1",
        // PID 1 of its pid namespace, still non-dumpable (it never execs).
        "pid=1 dumpable=Some(false)",
        // One detached clone per preopen: no /proc below `/` (a non-recursive clone).
        r#"dirs=[("/", true, false), ("/run", false, false), ("/data", true, false), ("/tmp", false, false)]"#,
        // Besides those: only stdio, plus the fd reading /proc/self/fd: the barrier socket,
        // the cache directory, its view and the rootfs handle are closed.
        "fds=[0, 1, 2, 3]",
        // Without a trailing newline: Rust's stdout buffer was flushed before _exit.
        "end",
    ]
    .join("\n");
    assert_eq!(out.stdout, expected, "stderr: {}", out.stderr);
    assert_eq!(
        fs::read_to_string(cache.path().join("fake-compiled")).expect("written via the fd"),
        "code=7\nmessage=hello from wasm\n"
    );
}

#[test]
fn root_wasm_missing_module_is_not_found_at_create() {
    let _g = serial();
    let fx = busybox_rootfs();
    let plan = wasm_plan(&spec(&["x"]), &fx.rootfs, "/app/missing.wasm", None);
    let err = create_plan(exe(), &plan).expect_err("no module");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.to_string(), "not found: /app/missing.wasm");
}

#[test]
fn root_wasm_prepare_error_is_invalid_argument_at_create() {
    let _g = serial();
    let fx = busybox_rootfs();
    write_module(&fx.rootfs, "/app/bad.wasm", "invalid=bad magic number\n");
    let plan = wasm_plan(&spec(&["/app/bad.wasm"]), &fx.rootfs, "/app/bad.wasm", None);
    let err = create_plan(exe(), &plan).expect_err("invalid module");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        err.to_string(),
        "invalid WebAssembly module /app/bad.wasm: bad magic number"
    );
}

#[test]
fn root_wasm_module_is_read_inside_the_container() {
    let _g = serial();
    let fx = busybox_rootfs();
    // A symlink pointing at a host path resolves inside the container's root after
    // pivot_root: the host file is never read.
    let host = tempfile::tempdir().expect("tempdir");
    fs::write(host.path().join("m.wasm"), "code=3\n").expect("write");
    fs::create_dir_all(fx.rootfs.join("app")).expect("mkdir");
    std::os::unix::fs::symlink(host.path().join("m.wasm"), fx.rootfs.join("app/m.wasm"))
        .expect("symlink");
    let plan = wasm_plan(&spec(&["m"]), &fx.rootfs, "/app/m.wasm", None);
    let err = create_plan(exe(), &plan).expect_err("the host file is out of reach");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn root_wasm_host_module_is_opened_before_entering_the_container() {
    let _g = serial();
    let fx = busybox_rootfs();
    // A module from an image layer: a host file outside the rootfs, opened by the helper
    // before it enters any namespace; the container's filesystem has nothing at that name.
    let host = tempfile::tempdir().expect("tempdir");
    let file = host.path().join("amphi-module.wasm");
    fs::write(&file, "code=5\nmessage=from a layer\n").expect("write");
    let oci: oci_spec::runtime::Spec =
        serde_json::from_value(spec(&["hello.wasm"])).expect("test spec parses");
    let w = WasmWorkload::from_host_file(file.clone(), "layer sha256:aa", None, &oci);
    let plan = plan(&spec(&["hello.wasm"]), &fx.rootfs).with_workload(Workload::Wasm(w));
    let out = no_mount_leak(fx.dir.path(), || run_plan(&plan)).expect("container runs");
    assert_eq!(out.code(), 5, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("from a layer"), "{}", out.stdout);

    fs::remove_file(&file).expect("remove");
    let err = create_plan(exe(), &plan).expect_err("the host file is gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("layer sha256:aa"), "{err}");
}

#[test]
fn root_wasm_cache_dir_fd_is_passed_when_available() {
    let _g = serial();
    let fx = busybox_rootfs();
    write_module(&fx.rootfs, "/m.wasm", "code=0\n");
    let s = spec(&["/m.wasm"]);
    let cache_line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("cache="))
            .expect("cache line")
            .to_string()
    };

    // A cache directory: prepare (at create, before start) writes through the fd.
    let cache = tempfile::tempdir().expect("tempdir");
    let plan = wasm_plan(&s, &fx.rootfs, "/m.wasm", Some(cache.path()));
    let (created, pipes) = create_plan(exe(), &plan).expect("create");
    assert!(
        cache.path().join("fake-compiled").exists(),
        "prepared at create"
    );
    let pid = created.pid();
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 0)
    ));
    assert_eq!(cache_line(&read_all(pipes.stdout)), "cache=written");

    // No cache configured.
    let out = run_plan(&wasm_plan(&s, &fx.rootfs, "/m.wasm", None)).expect("runs");
    assert_eq!(cache_line(&out.stdout), "cache=none");

    // A configured cache that cannot be opened: a warning, and no fd.
    let missing = cache.path().join("missing");
    let plan = wasm_plan(&s, &fx.rootfs, "/m.wasm", Some(&missing));
    let (created, pipes) = create_plan(exe(), &plan).expect("create");
    assert!(
        created
            .warnings()
            .iter()
            .any(|w| w.contains(&missing.display().to_string())),
        "{:?}",
        created.warnings()
    );
    let pid = created.pid();
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 0)
    ));
    assert_eq!(cache_line(&read_all(pipes.stdout)), "cache=none");
}

#[test]
fn root_wasm_sigkill_stops_the_module() {
    let _g = serial();
    let fx = busybox_rootfs();
    write_module(&fx.rootfs, "/m.wasm", "message=running\nsleep=1\n");
    let plan = wasm_plan(&spec(&["/m.wasm"]), &fx.rootfs, "/m.wasm", None);
    let (created, pipes) = create_plan(exe(), &plan).expect("create");
    let pid = created.pid();
    created.start().expect("start");
    // The module is running (it printed) and does not exit by itself.
    std::thread::sleep(Duration::from_millis(300));
    assert!(kill(Pid::from_raw(pid), None).is_ok(), "still running");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    match wait_exit(pid, Duration::from_secs(10)) {
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => {}
        other => panic!("expected death by SIGKILL, got {other:?}"),
    }
    let out = read_all(pipes.stdout);
    assert!(out.starts_with("running\n"), "{out}");
    assert!(out.contains("\npid=1 "), "{out}");
}

#[test]
fn root_wasm_dropping_created_makes_the_init_exit() {
    let _g = serial();
    let fx = busybox_rootfs();
    write_module(&fx.rootfs, "/m.wasm", "message=never\n");
    let plan = wasm_plan(&spec(&["/m.wasm"]), &fx.rootfs, "/m.wasm", None);
    let (created, pipes) = create_plan(exe(), &plan).expect("create");
    let pid = created.pid();
    drop(created);
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 1)
    ));
    assert_eq!(read_all(pipes.stdout), "");
}

#[test]
fn root_wasm_needs_a_binary_with_a_runner() {
    let _g = serial();
    let fx = busybox_rootfs();
    write_module(&fx.rootfs, "/m.wasm", "code=0\n");
    let wasm = wasm_plan(&spec(&["/m.wasm"]), &fx.rootfs, "/m.wasm", None);
    let err = create_plan(exe_without_wasm(), &wasm).expect_err("init::main has no runner");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert_eq!(err.to_string(), "this binary cannot run WebAssembly");
    // The same binary still runs native programs.
    let native = plan(&spec(&["sh", "-c", "echo native"]), &fx.rootfs);
    let (created, pipes) = create_plan(exe_without_wasm(), &native).expect("create");
    let pid = created.pid();
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 0)
    ));
    assert_eq!(read_all(pipes.stdout), "native\n");
}
