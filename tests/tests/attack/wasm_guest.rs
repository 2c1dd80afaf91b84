//! Defence: a Wasm guest cannot reach its host process through its preopens. Each preopen
//! is a detached, non-recursive, `nodev` clone of one mount (linux-executor `detached`),
//! so `/proc`, `/sys` and `/dev` are not below `/`; a preopen on a kernel filesystem is
//! refused at Create; `..` and symlinks stay inside (wasmtime-wasi's own resolution).
//!
//! Removing the clone (preopening the path `/` again) makes `probe_from_the_root` fail:
//! `/proc/self/maps`, `/proc/self/mem`, the relative symlink into `/proc` and `/dev/null`
//! then open. Removing `nodev` makes `a_device_directory_is_nodev` fail; removing the
//! filesystem check makes `a_procfs_mount_is_refused` fail.

use std::fs;
use std::os::unix::fs::symlink;

use amphi_e2e::wasm::fixture;
use amphi_e2e::{Containerd, Output, e2e_test};

/// WASI errnos the probe prints.
const ENOENT: &str = "errno 44";
const EACCES: &str = "errno 2";

/// An image whose rootfs holds `/probe.wasm`, a data file and symlinks aimed out of the
/// preopen (absolute, relative, through `..`) and at `/proc` and `/dev`.
fn probe_image(d: &Containerd) -> String {
    let root = d.work_dir().join("probe-rootfs");
    if root.exists() {
        fs::remove_dir_all(&root).expect("remove the previous probe rootfs");
    }
    for dir in ["data", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir in the probe rootfs");
    }
    let module = amphi_image::module::load(&fixture("probe")).expect("probe fixture");
    fs::write(root.join("probe.wasm"), &module.bytes).expect("write probe.wasm");
    fs::write(root.join("data/hello.txt"), "guest data\n").expect("write hello.txt");
    symlink("/proc/self", root.join("abs-proc")).expect("symlink");
    symlink("proc/self", root.join("rel-proc")).expect("symlink");
    symlink("../../../../proc/self", root.join("data/up-proc")).expect("symlink");
    symlink("/dev/null", root.join("null-link")).expect("symlink");
    d.import_dir_image("wprobe", &root, &["/probe.wasm"])
}

/// The probe's line for `path` ("PATH: ok N" or "PATH: errno E").
fn line<'a>(out: &'a Output, path: &str) -> &'a str {
    let prefix = format!("{path}: ");
    out.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no probe line for {path}:\n{out}"))
}

fn run_probe(d: &Containerd, label: &str, opts: &[&str], args: &[&str]) -> Output {
    let image = probe_image(d);
    let id = d.new_id(label);
    let mut cmd = vec!["/probe.wasm"];
    cmd.extend_from_slice(args);
    let out = d.run_image_rm(&id, opts, &image, &cmd);
    eprintln!("{} probe {args:?}:\n{out}", d.version());
    assert_eq!(
        out.code(),
        Some(0),
        "{}: the probe did not run:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
    out
}

e2e_test!(probe_from_the_root, [v1_6, v2_1], |d: &Containerd| {
    let read = run_probe(
        d,
        "wgread",
        &[],
        &[
            "r",
            "/data/hello.txt",
            "/proc/self/maps",
            "/proc/self/root/etc/passwd",
            "/proc/1/environ",
            "/rel-proc/maps",
            "/data/../proc/self/maps",
            "/dev/null",
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "/abs-proc/maps",
            "/data/up-proc/maps",
            "../../../proc/self/maps",
            "/../../etc/hostname",
            "/null-link",
        ],
    );
    // Control: the guest's own files still work.
    assert_eq!(
        line(&read, "/data/hello.txt"),
        "/data/hello.txt: ok 11",
        "{}",
        d.version()
    );
    // Inside the preopen, but not in the clone: the mounts are not there at all.
    for path in [
        "/proc/self/maps",
        "/proc/self/root/etc/passwd",
        "/proc/1/environ",
        "/rel-proc/maps",
        "/data/../proc/self/maps",
        "/dev/null",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ] {
        assert!(
            line(&read, path).ends_with(ENOENT),
            "{}: {path} must not exist for the guest:\n{read}",
            d.version()
        );
    }
    // Out of the preopen (absolute symlinks, `..` past the root): refused.
    for path in [
        "/abs-proc/maps",
        "/data/up-proc/maps",
        "../../../proc/self/maps",
        "/../../etc/hostname",
        "/null-link",
    ] {
        assert!(
            line(&read, path).contains(": errno "),
            "{}: {path} must not open:\n{read}",
            d.version()
        );
    }
    // The finding: /proc/self/mem of the wasmtime process, for writing.
    let write = run_probe(d, "wgmem", &[], &["w", "/proc/self/mem", "/rel-proc/mem"]);
    for path in ["/proc/self/mem", "/rel-proc/mem"] {
        assert!(
            line(&write, path).ends_with(ENOENT),
            "{}: {path} must not open for writing:\n{write}",
            d.version()
        );
    }
});

e2e_test!(
    a_device_directory_is_nodev,
    [v1_6, v2_1],
    |d: &Containerd| {
        // The host's /dev bind-mounted into the container: a devtmpfs full of device nodes.
        let out = run_probe(
            d,
            "wgdev",
            &[
                "--mount",
                "type=bind,src=/dev,dst=/hostdev,options=rbind:ro",
            ],
            &["r", "/hostdev/null", "/hostdev/zero"],
        );
        for path in ["/hostdev/null", "/hostdev/zero"] {
            assert!(
                line(&out, path).ends_with(EACCES),
                "{}: device node {path} must not open (nodev):\n{out}",
                d.version()
            );
        }
    }
);

e2e_test!(a_procfs_mount_is_refused, [v1_6, v2_1], |d: &Containerd| {
    let image = probe_image(d);
    let id = d.new_id("wgproc");
    let out = d.run_image_rm(
        &id,
        &[
            "--mount",
            "type=bind,src=/proc,dst=/hostproc,options=rbind:ro",
        ],
        &image,
        &["/probe.wasm", "r", "/hostproc/self/maps"],
    );
    eprintln!("{}:\n{out}", d.version());
    assert_ne!(
        out.code(),
        Some(0),
        "{}: Create must fail:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.contains("/hostproc is a proc filesystem"),
        "{}: the error must name the refused mount:\n{out}",
        d.version()
    );
    assert!(
        !out.stdout.contains(": ok"),
        "{}: the guest ran with the host's procfs:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});
