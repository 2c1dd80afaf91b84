//! The binary that runs inside a container is never the host's `containerd-shim-amphi-v1`
//! (runc CVE-2019-5736). A Wasm container's PID 1 is our binary running wasmtime for its
//! whole life, the longest-lived case: a Linux container that joins its pid namespace with
//! `CAP_SYS_PTRACE` (which beats the non-dumpable flag) opens `/proc/1/exe` for writing.
//! With the host's file behind it the kernel's only answer is `ETXTBSY` ("Text file busy"),
//! which vanishes the moment no helper runs; with the sealed view (linux-executor `sealed`)
//! it is `EROFS`, and the host's file is untouched.

use std::fs;
use std::os::unix::fs::MetadataExt;

use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, e2e_test};

e2e_test!(wasm_pid1_exe_is_sealed, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
    let wasm = d.new_id("sealw");
    let row = d.run_image_detached(&wasm, &[], &image, &[]);

    // From the host: the PID 1's executable is not the shim's file (another device or inode).
    let shim = fs::canonicalize(d.bin_dir().join("containerd-shim-amphi-v1"))
        .expect("resolve the shim binary");
    let shim_meta = fs::metadata(&shim).expect("stat the shim binary");
    let exe_meta = fs::metadata(format!("/proc/{}/exe", row.pid)).expect("stat the PID 1's exe");
    assert_ne!(
        (exe_meta.dev(), exe_meta.ino()),
        (shim_meta.dev(), shim_meta.ino()),
        "{}: the Wasm PID 1 runs the host's {}",
        d.version(),
        shim.display()
    );
    let before = fs::read(&shim).expect("read the shim binary");

    // From inside: write, truncate and append through /proc/1/exe all fail read-only.
    let attacker = d.new_id("sealx");
    let pidns = format!("pid:/proc/{}/ns/pid", row.pid);
    let out = d.run_rm(
        &attacker,
        &["--with-ns", &pidns, "--cap-add", "CAP_SYS_PTRACE"],
        &[
            "sh",
            "-c",
            "head -c 4 /proc/1/exe | od -c | head -n 1; \
             echo x >> /proc/1/exe && echo APPENDED; \
             (: > /proc/1/exe) && echo TRUNCATED; \
             true",
        ],
    );
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert!(
        out.stdout.contains("E   L   F"),
        "{}: the attacker could not even read /proc/1/exe (the case proves nothing):\n{out}",
        d.version()
    );
    assert!(
        !out.stdout.contains("APPENDED") && !out.stdout.contains("TRUNCATED"),
        "{}: the attacker wrote to the PID 1's executable:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}: expected EROFS from the sealed executable, not another refusal \
         (ETXTBSY protects only while a helper runs):\n{out}",
        d.version()
    );
    assert!(
        fs::read(&shim).expect("read the shim binary") == before,
        "{}: the host's shim binary changed",
        d.version()
    );
    d.assert_no_leaks(&attacker);
    assert_eq!(d.kill_and_remove(&wasm, "SIGKILL"), 137, "{}", d.version());
    d.assert_no_leaks(&wasm);
});
