//! Wasm cases, run against containerd 1.6 and 2.1: WebAssembly modules and a WASI 0.2
//! component in the image's root file system, run by amphi with wasmtime inside the
//! container's sandbox. Images are built from `tests/fixtures/wasm` with `amphi-image`
//! (see `amphi_e2e::wasm`); every case ends with the leak checks for each container it used.
//!
//! Exit statuses follow the Wasm executor's convention: `proc_exit(n)` is n, a trap is 134
//! with a `wasm trap` line on stderr, SIGTERM is 143, SIGKILL is 137.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::wasm::{
    WasmImageSpec, cache_entries, component, corrupt_in_place, fixture, image_name, inode,
};
use amphi_e2e::{Containerd, Output, Spec, e2e_test};

/// How long a spinning guest may take to stop after SIGTERM or SIGKILL.
const KILL_DEADLINE: Duration = Duration::from_secs(2);
/// How long a foreground `ctr run` may take to return once its task stopped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a guest may take to print its first line (compilation included).
const FIRST_OUTPUT_TIMEOUT: Duration = Duration::from_secs(30);

fn hello_image(d: &Containerd) -> String {
    d.import_wasm("hello", &fixture("hello"), &WasmImageSpec::default())
}

fn all_output(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

#[track_caller]
fn assert_hello(d: &Containerd, out: &Output, what: &str) {
    assert_eq!(
        out.code(),
        Some(0),
        "{}: {what}: expected exit 0:\n{out}",
        d.version()
    );
    assert_eq!(
        out.stdout_trimmed(),
        "hello from wasm",
        "{}: {what}: wrong output:\n{out}",
        d.version()
    );
}

e2e_test!(hello_module, [v1_6, v2_1], |d: &Containerd| {
    let image = hello_image(d);
    let id = d.new_id("whello");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_hello(d, &out, "the hello module");
    d.assert_no_leaks(&id);
});

e2e_test!(hello_component, [v1_6, v2_1], |d: &Containerd| {
    let spec = WasmImageSpec {
        args: &["baked"],
        env: &["GREETING=hi from the image"],
        files: &[],
    };
    let image = d.import_wasm("component", component(), &spec);

    let id = d.new_id("wcomp");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: component exit:\n{out}",
        d.version()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "hello from a wasi 0.2 component",
        "args: baked",
        "GREETING=hi from the image",
    ] {
        assert!(
            lines.contains(&want),
            "{}: the component did not print {want:?}:\n{out}",
            d.version()
        );
    }
    d.assert_no_leaks(&id);

    // WASI 0.2.0 `wasi:cli/exit` carries only ok or err: `exit(5)` in the guest is err,
    // which the executor reports as status 1.
    let id = d.new_id("wcompexit");
    let out = d.run_image_rm(&id, &[], &image, &["/hello-component.wasm", "exit=5"]);
    assert_eq!(
        out.code(),
        Some(1),
        "{}: a component exiting with err must give status 1:\n{out}",
        d.version()
    );
    assert!(
        out.stdout.contains("args: exit=5"),
        "{}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(exit_codes, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("exit3", &fixture("exit3"), &WasmImageSpec::default());
    let id = d.new_id("wexit3");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_eq!(
        out.code(),
        Some(3),
        "{}: proc_exit(3) must give exit status 3:\n{out}",
        d.version()
    );
    assert_eq!(
        out.stdout_trimmed(),
        "exiting with 3",
        "{}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    // Returning from _start is status 0.
    let image = hello_image(d);
    let id = d.new_id("wexit0");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_hello(d, &out, "return from _start");
    d.assert_no_leaks(&id);
});

e2e_test!(args_and_env, [v1_6, v2_1], |d: &Containerd| {
    let spec = WasmImageSpec {
        args: &["baked-arg"],
        env: &["FROM_IMAGE=yes"],
        files: &[],
    };
    let image = d.import_wasm("echo", &fixture("echo"), &spec);

    // The image's entrypoint and environment, plus --env.
    let id = d.new_id("wargs");
    let out = d.run_image_rm(&id, &["--env", "GREETING=hello-env"], &image, &[]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    let args: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("arg: "))
        .collect();
    assert_eq!(
        args,
        ["arg: /echo.wasm", "arg: baked-arg"],
        "{}: argv from the image:\n{out}",
        d.version()
    );
    let env: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env: "))
        .collect();
    for want in ["GREETING=hello-env", "FROM_IMAGE=yes"] {
        assert!(
            env.contains(&want),
            "{}: the guest's environment lacks {want}:\n{out}",
            d.version()
        );
    }
    // The guest sees the container's environment, never the shim's.
    assert!(
        !env.iter().any(|e| e.starts_with("AMPHI_WASM_CACHE_DIR=")),
        "{}: the shim's environment leaked into the guest:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    // Arguments given to ctr replace the whole argv, as for Linux containers.
    let id = d.new_id("wargs2");
    let out = d.run_image_rm(&id, &[], &image, &["/echo.wasm", "one", "two words"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    let args: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("arg: "))
        .collect();
    assert_eq!(
        args,
        ["arg: /echo.wasm", "arg: one", "arg: two words"],
        "{}: argv from ctr:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

// WASI preview 1 has no call reporting the working directory, and wasi-libc ignores the
// WASI 0.2 one (its `getcwd` always starts at `/`), so the fixture component asks
// `wasi:cli/environment.initial-cwd` itself: it must be the OCI process cwd.
e2e_test!(cwd_of_a_component, [v1_6, v2_1], |d: &Containerd| {
    let data = d.work_dir().join("data.txt");
    fs::write(&data, "in the sub directory\n").expect("write data.txt");
    let spec = WasmImageSpec {
        args: &[],
        env: &[],
        files: &[(&data, "/sub/data.txt")],
    };
    let image = d.import_wasm("component", component(), &spec);

    for (label, opts, want) in [
        ("wcwdroot", &[][..], "initial-cwd: /"),
        ("wcwdsub", &["--cwd", "/sub"][..], "initial-cwd: /sub"),
    ] {
        let id = d.new_id(label);
        let out = d.run_image_rm(
            &id,
            opts,
            &image,
            &["/hello-component.wasm", "read=/sub/data.txt"],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{}: expected the line {want:?} (ctr run {opts:?}):\n{out}",
            d.version()
        );
        assert!(
            out.stdout.contains("in the sub directory"),
            "{}: the component could not read /sub/data.txt:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
});

e2e_test!(file_from_the_rootfs, [v1_6, v2_1], |d: &Containerd| {
    let data = d.work_dir().join("data.txt");
    fs::write(&data, "baked into the image\n").expect("write data.txt");
    let spec = WasmImageSpec {
        args: &[],
        env: &[],
        files: &[(&data, "/data.txt")],
    };
    let image = d.import_wasm("fs", &fixture("fs"), &spec);
    let id = d.new_id("wrootfs");
    let out = d.run_image_rm(&id, &[], &image, &["/fs.wasm", "read", "/data.txt"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "baked into the image",
        "{}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(file_from_a_bind_mount, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("fs", &fixture("fs"), &WasmImageSpec::default());
    let src = d.work_dir().join("bind-src");
    fs::create_dir_all(&src).expect("create the bind mount source");
    fs::write(src.join("hello.txt"), "from the host\n").expect("write hello.txt");
    let mount = format!(
        "type=bind,src={},dst=/mnt/host,options=rbind:ro",
        src.display()
    );
    let id = d.new_id("wbind");
    let out = d.run_image_rm(
        &id,
        &["--mount", &mount],
        &image,
        &["/fs.wasm", "read", "/mnt/host/hello.txt"],
    );
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "from the host",
        "{}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(
    write_to_a_read_only_mount_fails,
    [v1_6, v2_1],
    |d: &Containerd| {
        let image = d.import_wasm("fs", &fixture("fs"), &WasmImageSpec::default());
        let rw = d.work_dir().join("rw-src");
        let ro = d.work_dir().join("ro-src");
        fs::create_dir_all(&rw).expect("create the rw source");
        fs::create_dir_all(&ro).expect("create the ro source");
        let rw_mount = format!("type=bind,src={},dst=/rw,options=rbind:rw", rw.display());
        let ro_mount = format!("type=bind,src={},dst=/ro,options=rbind:ro", ro.display());

        // Control: the same write into a writable mount reaches the host.
        let id = d.new_id("wwrite");
        let out = d.run_image_rm(
            &id,
            &["--mount", &rw_mount],
            &image,
            &["/fs.wasm", "write", "/rw/new.txt"],
        );
        assert_eq!(
            out.code(),
            Some(0),
            "{}: write into a rw mount:\n{out}",
            d.version()
        );
        assert_eq!(
            fs::read_to_string(rw.join("new.txt")).ok().as_deref(),
            Some("written by wasm\n"),
            "{}: the write did not reach the host:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        let id = d.new_id("wrofail");
        let out = d.run_image_rm(
            &id,
            &["--mount", &ro_mount],
            &image,
            &["/fs.wasm", "write", "/ro/new.txt"],
        );
        assert_eq!(
            out.code(),
            Some(21),
            "{}: writing into a read-only mount must fail inside the guest (exit 21):\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("write /ro/new.txt: errno "),
            "{}: the guest did not report the errno:\n{out}",
            d.version()
        );
        assert!(
            !ro.join("new.txt").exists(),
            "{}: the write reached the host directory",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    paths_outside_the_preopens_fail,
    [v1_6, v2_1],
    |d: &Containerd| {
        let data = d.work_dir().join("data.txt");
        fs::write(&data, "inside the container\n").expect("write data.txt");
        let secret = d.work_dir().join("host-secret.txt");
        fs::write(&secret, "host secret\n").expect("write the host secret");
        let spec = WasmImageSpec {
            args: &[],
            env: &[],
            files: &[(&data, "/data.txt")],
        };
        let image = d.import_wasm("fs", &fixture("fs"), &spec);

        // Control: a path inside the root preopen opens.
        let id = d.new_id("wpreok");
        let out = d.run_image_rm(&id, &[], &image, &["/fs.wasm", "read", "/data.txt"]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            "inside the container",
            "{}",
            d.version()
        );
        d.assert_no_leaks(&id);

        // Climbing out of the preopen is refused by WASI.
        let id = d.new_id("wdotdot");
        let out = d.run_image_rm(
            &id,
            &[],
            &image,
            &["/fs.wasm", "read", "../../etc/hostname"],
        );
        assert_eq!(
            out.code(),
            Some(20),
            "{}: opening ../../etc/hostname must fail (exit 20):\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("open ../../etc/hostname: errno "),
            "{}:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        // A host path is not visible: "/" is the container's root, not the host's.
        let host_path = secret.display().to_string();
        let id = d.new_id("whostpath");
        let out = d.run_image_rm(&id, &[], &image, &["/fs.wasm", "read", &host_path]);
        assert_eq!(
            out.code(),
            Some(20),
            "{}: opening the host path {host_path} must fail (exit 20):\n{out}",
            d.version()
        );
        assert!(
            !out.stdout.contains("host secret"),
            "{}: the guest read a host file:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(memory_limit_traps, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("memory", &fixture("memory"), &WasmImageSpec::default());
    let big = (512u64 * 1024 * 1024).to_string();
    let small = (64u64 * 1024 * 1024).to_string();

    // Control: 96 MiB of linear memory fits under 512 MiB.
    let id = d.new_id("wmemok");
    let out = d.run_image_rm(&id, &["--memory-limit", &big], &image, &[]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: growing by 96 MiB under 512 MiB:\n{out}",
        d.version()
    );
    assert!(
        out.stdout.contains("grew by 96 MiB"),
        "{}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    let id = d.new_id("wmemtrap");
    let out = d.run_image_rm(&id, &["--memory-limit", &small], &image, &[]);
    assert_eq!(
        out.code(),
        Some(134),
        "{}: memory.grow past a 64 MiB limit must trap (134):\n{out}",
        d.version()
    );
    assert!(
        out.stdout.contains("growing by 96 MiB"),
        "{}: the guest never started:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.contains("wasm trap"),
        "{}: no `wasm trap` line on stderr:\n{out}",
        d.version()
    );
    assert!(
        !out.stdout.contains("grew by"),
        "{}: the grow succeeded:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

/// Runs the spinning fixture in the foreground, waits until it prints, sends `signal`,
/// and checks that ctr returns `status` within [`KILL_DEADLINE`] of the kill.
fn kill_spinning_guest(d: &Containerd, label: &str, signal: &str, status: i32) {
    let image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
    let id = d.new_id(label);
    let mut run = d.spawn_run_image_rm(&id, &[], &image, &[]);
    d.wait_task_status(&id, "RUNNING");
    let deadline = Instant::now() + FIRST_OUTPUT_TIMEOUT;
    while !run.stdout_so_far().contains("looping") {
        assert!(
            Instant::now() < deadline && !run.has_exited(),
            "{}: the spinning guest printed nothing within {FIRST_OUTPUT_TIMEOUT:?}",
            d.version()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let killed_at = Instant::now();
    d.kill_task(&id, signal);
    while !run.has_exited() && killed_at.elapsed() <= KILL_DEADLINE {
        thread::sleep(Duration::from_millis(10));
    }
    let took = killed_at.elapsed();
    let out = run.wait_timeout(EXIT_TIMEOUT);
    assert!(
        took <= KILL_DEADLINE,
        "{}: the spinning guest was still running {took:?} after {signal}:\n{out}",
        d.version()
    );
    assert_eq!(
        out.code(),
        Some(status),
        "{}: status after {signal}:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
}

e2e_test!(
    sigterm_stops_a_spinning_guest,
    [v1_6, v2_1],
    |d: &Containerd| kill_spinning_guest(d, "wterm", "SIGTERM", 143)
);

e2e_test!(
    sigkill_stops_a_spinning_guest,
    [v1_6, v2_1],
    |d: &Containerd| kill_spinning_guest(d, "wkill", "SIGKILL", 137)
);

e2e_test!(
    cache_dir_from_runtime_options,
    [v1_6, v2_1],
    |d: &Containerd| {
        // ctr --runtime-config-path reaches the shim as runtimeoptions.v1.Options; the
        // TOML it names moves the cache away from the daemon's default.
        let image = hello_image(d);
        let custom = d.work_dir().join("options-cache");
        let options = d.work_dir().join("amphi-options.toml");
        std::fs::write(
            &options,
            format!("wasm_cache_dir = {:?}\n", custom.display().to_string()),
        )
        .expect("write the runtime options");
        let id = d.new_id("wopts");
        let opts = [
            "--runtime-config-path",
            options.to_str().expect("utf-8 path"),
        ];
        assert_hello(d, &d.run_image_rm(&id, &opts, &image, &[]), "options run");
        d.assert_no_leaks(&id);
        let entries = cache_entries(&custom);
        assert_eq!(
            entries.len(),
            1,
            "{}: the module should be cached in {} (from the runtime options): {entries:?}",
            d.version(),
            custom.display()
        );

        // A typo in the options is a clear error, not a silent default.
        std::fs::write(&options, "wasm_cache_dirr = \"/x\"\n").expect("write");
        let id = d.new_id("wbadopts");
        let out = d.run_image_rm(&id, &opts, &image, &[]);
        assert_ne!(
            out.code(),
            Some(0),
            "{}: bad options accepted:\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("wasm_cache_dirr"),
            "{}: the error should name the unknown key:\n{out}",
            d.version()
        );
        let _ = d.ctr(&["container", "delete", &id]);
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    second_run_is_served_from_the_cache,
    [v1_6, v2_1],
    |d: &Containerd| {
        let image = hello_image(d);
        let cache = d.wasm_cache_dir();

        let id = d.new_id("wcache1");
        assert_hello(d, &d.run_image_rm(&id, &[], &image, &[]), "first run");
        d.assert_no_leaks(&id);
        let entries = cache_entries(&cache);
        assert_eq!(
            entries.len(),
            1,
            "{}: after one module ran, {} should hold one entry: {entries:?}",
            d.version(),
            cache.display()
        );
        let artifact = entries[0].artifact().to_path_buf();
        let first = inode(&artifact);

        let id = d.new_id("wcache2");
        assert_hello(d, &d.run_image_rm(&id, &[], &image, &[]), "second run");
        d.assert_no_leaks(&id);
        let entries_after = cache_entries(&cache);
        assert_eq!(
            entries_after,
            entries,
            "{}: the second run changed the cache entries",
            d.version()
        );
        assert_eq!(
            inode(&artifact),
            first,
            "{}: {} was replaced: the second run recompiled instead of using the cache",
            d.version(),
            artifact.display()
        );
    }
);

e2e_test!(
    corrupted_cache_entry_is_recompiled,
    [v1_6, v2_1],
    |d: &Containerd| {
        let image = hello_image(d);
        let cache = d.wasm_cache_dir();

        let id = d.new_id("wcorrupt1");
        assert_hello(d, &d.run_image_rm(&id, &[], &image, &[]), "first run");
        d.assert_no_leaks(&id);
        let entries = cache_entries(&cache);
        assert_eq!(
            entries.len(),
            1,
            "{}: one entry expected: {entries:?}",
            d.version()
        );
        let artifact = entries[0].artifact().to_path_buf();
        corrupt_in_place(&artifact, 16);
        let corrupted_inode = inode(&artifact);
        let corrupted = fs::read(&artifact).expect("read the corrupted artifact");

        let id = d.new_id("wcorrupt2");
        assert_hello(
            d,
            &d.run_image_rm(&id, &[], &image, &[]),
            "run after corrupting the cache entry",
        );
        d.assert_no_leaks(&id);
        let entries = cache_entries(&cache);
        assert_eq!(
            entries.len(),
            1,
            "{}: one entry expected after the recompile: {entries:?}",
            d.version()
        );
        assert_ne!(
            inode(&artifact),
            corrupted_inode,
            "{}: the corrupted entry {} was not replaced",
            d.version(),
            artifact.display()
        );
        assert_ne!(
            fs::read(&artifact).expect("read the new artifact"),
            corrupted,
            "{}: the entry still holds the corrupted bytes",
            d.version()
        );
    }
);

e2e_test!(
    invalid_module_fails_clearly,
    [v1_6, v2_1],
    |d: &Containerd| {
        // The magic and version of a core module, then bytes that are no section at all.
        let rootfs = d.work_dir().join("broken-rootfs");
        fs::create_dir_all(&rootfs).expect("mkdir the broken rootfs");
        fs::write(
            rootfs.join("broken.wasm"),
            b"\0asm\x01\0\0\0\x7f\xff\xff\xff\xff garbage",
        )
        .expect("write broken.wasm");
        let image = d.import_dir_image("broken", &rootfs, &["/broken.wasm"]);

        let id = d.new_id("wbroken");
        let out = d.run_image_rm(&id, &[], &image, &[]);
        assert!(
            !out.success() && !out.timed_out,
            "{}: running an invalid module should fail promptly:\n{out}",
            d.version()
        );
        assert!(
            all_output(&out).contains("broken.wasm"),
            "{}: the error does not name the module:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        // The daemon and the shim still work afterwards.
        let image = hello_image(d);
        let id = d.new_id("wafter");
        assert_hello(
            d,
            &d.run_image_rm(&id, &[], &image, &[]),
            "after the invalid module",
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    linux_and_wasm_side_by_side,
    [v1_6, v2_1],
    |d: &Containerd| {
        let image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
        let linux = d.new_id("sidelinux");
        let wasm = d.new_id("sidewasm");
        let linux_row = d.run_detached(&linux, &[], &["sleep", "100"]);
        let wasm_row = d.run_image_detached(&wasm, &[], &image, &[]);
        assert_ne!(linux_row.pid, wasm_row.pid, "{}", d.version());

        let tasks = d.tasks();
        for id in [&linux, &wasm] {
            assert!(
                tasks.iter().any(|t| &t.id == id && t.status == "RUNNING"),
                "{}: ctr task ls does not show {id} RUNNING: {tasks:?}",
                d.version()
            );
        }
        assert_eq!(
            d.kill_and_remove(&wasm, "SIGKILL"),
            137,
            "{}: {wasm}",
            d.version()
        );
        let still = d.task(&linux);
        assert!(
            still.as_ref().is_some_and(|r| r.status == "RUNNING"),
            "{}: the Linux container stopped with the Wasm one: {still:?}",
            d.version()
        );
        assert_eq!(
            d.kill_and_remove(&linux, "SIGKILL"),
            137,
            "{}: {linux}",
            d.version()
        );
        d.assert_no_leaks(&wasm);
        d.assert_no_leaks(&linux);
    }
);

e2e_test!(annotation_dispatch, [v1_6, v2_1], |d: &Containerd| {
    let image = hello_image(d);
    for (label, annotation) in [
        ("wkind", "amphi.io/kind=wasm"),
        ("wcrun", "run.oci.handler=wasm"),
        ("wcompat", "module.wasm.image/variant=compat"),
    ] {
        let id = d.new_id(label);
        let out = d.run_image_rm(&id, &["--annotation", annotation], &image, &[]);
        assert_hello(d, &out, annotation);
        d.assert_no_leaks(&id);
    }

    // Forcing Linux wins over the module's bytes: the kernel cannot exec a Wasm file.
    let id = d.new_id("wforcelinux");
    let out = d.run_image_rm(&id, &["--annotation", "amphi.io/kind=linux"], &image, &[]);
    assert!(
        !out.success() && !out.timed_out,
        "{}: amphi.io/kind=linux on a Wasm module should fail to exec:\n{out}",
        d.version()
    );
    assert!(
        !out.stdout.contains("hello from wasm"),
        "{}: the module ran although Linux was forced:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    // WebAssembly text as the entrypoint is recognised by its content.
    let rootfs = d.work_dir().join("wat-rootfs");
    fs::create_dir_all(&rootfs).expect("mkdir the wat rootfs");
    fs::copy(fixture("hello"), rootfs.join("hello.wat")).expect("copy hello.wat");
    let wat_image = d.import_dir_image("hello-wat", &rootfs, &["/hello.wat"]);
    let id = d.new_id("wwat");
    let out = d.run_image_rm(&id, &[], &wat_image, &[]);
    assert_hello(d, &out, "a .wat entrypoint");
    d.assert_no_leaks(&id);
});

e2e_test!(dispatch_errors, [v1_6, v2_1], |d: &Containerd| {
    let image = hello_image(d);
    let id = d.new_id("wbogus");
    let out = d.run_image_rm(&id, &["--annotation", "amphi.io/kind=bogus"], &image, &[]);
    assert!(
        !out.success() && !out.timed_out,
        "{}: amphi.io/kind=bogus must be refused:\n{out}",
        d.version()
    );
    assert!(
        all_output(&out).contains("bogus"),
        "{}: the error does not name the value:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    let id = d.new_id("wconflict");
    let out = d.run_image_rm(
        &id,
        &[
            "--annotation",
            "amphi.io/kind=linux",
            "--annotation",
            "run.oci.handler=wasm",
        ],
        &image,
        &[],
    );
    assert!(
        !out.success() && !out.timed_out,
        "{}: conflicting annotations must be refused:\n{out}",
        d.version()
    );
    assert!(
        all_output(&out).contains("run.oci.handler"),
        "{}: the error does not name the conflicting annotation:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

// `amphi-image wasm --platform wasi/wasm`: containerd unpacks it only for that platform,
// and the shim still recognises the module by its bytes.
e2e_test!(wasi_platform_image, [v1_6, v2_1], |d: &Containerd| {
    let name = image_name("hello-wasi");
    let opts = amphi_image::WasmImageOptions::new(name.clone(), amphi_image::Platform::wasi());
    let layout = amphi_image::wasm_image(&fixture("hello"), &opts).expect("build the wasi image");

    let out = d.try_import_layout(&layout, &[]);
    assert!(
        !out.success(),
        "{}: a wasip1/wasm image imported without --platform (expected containerd to filter it):\n{out}",
        d.version()
    );
    d.try_import_layout(&layout, &["--platform", "wasip1/wasm"])
        .expect_success("ctr image import --platform wasip1/wasm");

    let id = d.new_id("wwasi");
    let out = d.run_image_rm(&id, &["--platform", "wasip1/wasm"], &name.full(), &[]);
    assert_hello(d, &out, "a wasip1/wasm image");
    d.assert_no_leaks(&id);
});

// Dispatch rule 3: the shim reads a wasi/wasm-platform image through containerd's gRPC
// API and the image decides; a linux/<host arch> module image says nothing, so the
// entrypoint's bytes still decide.
e2e_test!(image_decides, [v1_6, v2_1], |d: &Containerd| {
    let name = image_name("hello-wasi-rule3");
    let opts = amphi_image::WasmImageOptions::new(name.clone(), amphi_image::Platform::wasi());
    let layout = amphi_image::wasm_image(&fixture("hello"), &opts).expect("build the wasi image");
    d.try_import_layout(&layout, &["--platform", "wasip1/wasm"])
        .expect_success("ctr image import --platform wasip1/wasm");

    let id = d.new_id("wrule3");
    let out = d.run_image_rm(&id, &["--platform", "wasip1/wasm"], &name.full(), &[]);
    assert_hello(d, &out, "a wasip1/wasm image");
    let line = d.dispatch_line(&id).unwrap_or_else(|| {
        panic!(
            "{}: no dispatch decision for {id} in the daemon log:\n{}",
            d.version(),
            d.log_tail(40)
        )
    });
    let expected = format!("wasm (image {} has platform wasip1/wasm)", name.full());
    assert!(
        line.contains(&expected),
        "{}: expected the image to decide ({expected:?}):\n{line}",
        d.version()
    );
    d.assert_no_leaks(&id);

    let image = hello_image(d);
    let id = d.new_id("wbytes");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_hello(d, &out, "a linux-platform module image");
    let line = d.dispatch_line(&id).unwrap_or_else(|| {
        panic!(
            "{}: no dispatch decision for {id} in the daemon log:\n{}",
            d.version(),
            d.log_tail(40)
        )
    });
    assert!(
        line.contains("wasm (entrypoint /hello.wasm is WebAssembly)"),
        "{}: expected the entrypoint bytes to decide:\n{line}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

// The CNCF Wasm OCI artifact: what containerd and ctr do with it (recorded behaviour).
e2e_test!(wasm_artifact_import, [v1_6, v2_1], |d: &Containerd| {
    let name = image_name("hello-artifact");
    let layout = amphi_image::wasm_artifact(&fixture("hello"), &name).expect("build the artifact");

    // Without a platform, ctr filters out the only (wasip1/wasm) manifest.
    let out = d.try_import_layout(&layout, &[]);
    assert!(
        !out.success() && out.stderr.contains("filtered out"),
        "{}: plain import of the artifact:\n{out}",
        d.version()
    );
    // With the platform and without unpacking, the content is stored.
    d.try_import_layout(&layout, &["--platform", "wasip1/wasm", "--no-unpack"])
        .expect_success("ctr image import --platform wasip1/wasm --no-unpack of the artifact");
    let listed = d
        .ctr(&["images", "ls", "-q"])
        .expect_success("ctr image ls");
    assert!(
        listed.stdout.lines().any(|l| l.trim() == name.full()),
        "{}: the artifact is not listed:\n{listed}",
        d.version()
    );

    // ctr cannot make a root file system from it (no tar layers, no image config).
    let id = d.new_id("wartifact");
    let out = d.run_image_rm(&id, &["--platform", "wasip1/wasm"], &name.full(), &[]);
    let expected = if d.version().is_2x() {
        "unknown image config media type application/vnd.wasm.config.v0+json"
    } else {
        "mismatched image rootfs and manifest layers"
    };
    assert!(
        !out.success() && out.stderr.contains(expected),
        "{}: ctr run of the artifact (expected {expected:?}):\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

/// Imports the CNCF Wasm OCI artifact of fixture `module` (content only: ctr cannot unpack
/// it) and returns its name and the digest of its wasm layer.
fn import_artifact(d: &Containerd, name: &str, module: &str) -> (String, String) {
    let name = image_name(name);
    let layout = amphi_image::wasm_artifact(&fixture(module), &name).expect("build the artifact");
    d.try_import_layout(&layout, &["--platform", "wasip1/wasm", "--no-unpack"])
        .expect_success("ctr image import --platform wasip1/wasm --no-unpack of the artifact");
    let layer = layout.manifest()["layers"][0]["digest"]
        .as_str()
        .expect("the artifact has a layer")
        .to_string();
    (name.full(), layer)
}

// The artifact run as CRI would run it: through containerd's API, on an empty snapshot.
// The module is a layer in containerd's content store (the root file system has nothing),
// its compiled code is cached like a module from a root file system.
e2e_test!(
    wasm_artifact_runs_from_the_content_store,
    [v1_6, v2_1],
    |d: &Containerd| {
        let (hello, _) = import_artifact(d, "hello-art", "hello");
        let cache = d.wasm_cache_dir();
        let spec = |id: &str, args: &[&str]| Spec::busybox(id, Path::new("rootfs"), args).0;

        let id = d.new_id("wart1");
        let run = d.api_run(&id, &hello, &spec(&id, &["hello.wasm"]));
        assert_eq!(run.result, Ok(0), "{}: the artifact:\n{run}", d.version());
        assert_eq!(run.stdout, "hello from wasm\n", "{}:\n{run}", d.version());
        let line = d.dispatch_line(&id).unwrap_or_else(|| {
            panic!(
                "{}: no dispatch line for {id}:\n{}",
                d.version(),
                d.log_tail(40)
            )
        });
        assert!(
            line.contains("wasm (image ") && line.contains("is a Wasm OCI artifact"),
            "{}: expected the image to decide:\n{line}",
            d.version()
        );
        d.assert_no_leaks(&id);
        let entries = cache_entries(&cache);
        assert_eq!(
            entries.len(),
            1,
            "{}: one module ran, {} should hold one entry: {entries:?}",
            d.version(),
            cache.display()
        );
        let compiled = entries[0].artifact().to_path_buf();
        let first = inode(&compiled);

        let id = d.new_id("wart2");
        let run = d.api_run(&id, &hello, &spec(&id, &["hello.wasm"]));
        assert_eq!(run.result, Ok(0), "{}: second run:\n{run}", d.version());
        d.assert_no_leaks(&id);
        assert_eq!(
            inode(&compiled),
            first,
            "{}: {} was replaced: the second run recompiled the layer's module",
            d.version(),
            compiled.display()
        );

        let (exit3, _) = import_artifact(d, "exit3-art", "exit3");
        let id = d.new_id("wart3");
        let run = d.api_run(&id, &exit3, &spec(&id, &["exit3.wasm"]));
        assert_eq!(run.result, Ok(3), "{}: exit code:\n{run}", d.version());
        assert_eq!(run.stdout, "exiting with 3\n", "{}:\n{run}", d.version());
        d.assert_no_leaks(&id);

        // A layer missing from the content store: a clear error at Create, nothing left.
        let (gone, layer) = import_artifact(d, "gone-art", "echo");
        d.ctr(&["content", "rm", &layer])
            .expect_success("ctr content rm of the artifact's layer");
        let id = d.new_id("wart4");
        let run = d.api_run(&id, &gone, &spec(&id, &["echo.wasm"]));
        let err = run.result.as_ref().expect_err("no module to run");
        assert!(
            err.starts_with("create task: FailedPrecondition")
                && err.contains(&format!("layer {layer} of image {gone}"))
                && err.contains("is not in containerd's content store"),
            "{}: {err}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);
