//! Defence: no process of a container holds a writable handle on the compiled-module
//! cache, or any host directory. The module is compiled (or loaded) by the init helper
//! before it forks into the container's pid namespace, every cache and module handle is
//! closed before that fork, and the artifact wasmtime keeps open and maps was opened
//! through a read-only detached clone of the cache directory (a reopen for writing through
//! `/proc/<pid>/fd` or `/proc/<pid>/map_files` fails with `EROFS`).
//!
//! Removing the read-only view (opening entries through the writable cache directory
//! again) makes both cases fail: the attacker reopens the artifact for writing.

use std::fs;
use std::time::Duration;

use amphi_e2e::wasm::{WasmImageSpec, cache_entries, fixture};
use amphi_e2e::{Containerd, Output, e2e_test};
use sha2::{Digest, Sha256};

/// The attacker, run in a Linux container sharing the Wasm container's pid namespace with
/// CAP_SYS_PTRACE and CAP_SYS_ADMIN (so `/proc/<pid>/map_files` opens too). For every other
/// process it tries to open each fd that is a regular file, and each file mapping, for
/// writing (`O_WRONLY|O_APPEND`: nothing is written), and reports each directory fd.
/// Lines: `TRIED <path> -> <target>` for every open attempted, `WRITABLE <path>` for one
/// that succeeded, `HOSTDIR <path> -> <target>` for a directory fd, then `DONE`. Memfds
/// (wasmtime's own anonymous memory images, private to the process) are skipped.
const ATTACK: &str = r#"
self=$$
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$self" ] && continue
  for f in $p/fd/* $p/map_files/*; do
    [ -e "$f" ] || continue
    t=$(readlink "$f")
    if [ -d "$f" ]; then echo "HOSTDIR $f -> $t"; continue; fi
    [ -f "$f" ] || continue
    case "$t" in /memfd:*) continue;; esac
    echo "TRIED $f -> $t"
    if ( : >>"$f" ) 2>/dev/null; then echo "WRITABLE $f -> $t"; fi
  done
done
echo DONE
"#;

fn sha256(path: &std::path::Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&bytes))
}

/// Runs [`ATTACK`] in the pid namespace of the process `pid` (a host pid).
fn attack(d: &Containerd, label: &str, pid: u32) -> Output {
    let ns = format!("pid:/proc/{pid}/ns/pid");
    let id = d.new_id(label);
    let out = d.run_rm(
        &id,
        &[
            "--with-ns",
            &ns,
            "--cap-add",
            "CAP_SYS_PTRACE",
            "--cap-add",
            "CAP_SYS_ADMIN",
        ],
        &["sh", "-c", ATTACK],
    );
    eprintln!("{} attacker:\n{out}", d.version());
    assert!(
        out.stdout.contains("DONE"),
        "{}: the attacker did not finish:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
    out
}

fn assert_nothing_writable(d: &Containerd, out: &Output, what: &str) {
    assert!(
        !out.stdout.contains("WRITABLE") && !out.stdout.contains("HOSTDIR"),
        "{}: {what}: a container process holds a writable or directory handle:\n{out}",
        d.version()
    );
}

e2e_test!(
    no_writable_cache_handle_in_the_pid_namespace,
    [v1_6, v2_1],
    |d: &Containerd| {
        let image = d.import_wasm("sleep", &fixture("sleep"), &WasmImageSpec::default());
        let id = d.new_id("cwasm");
        let row = d.run_image_detached(&id, &[], &image, &[]);
        let entries = cache_entries(&d.wasm_cache_dir());
        assert_eq!(
            entries.len(),
            1,
            "{}: one cache entry: {entries:?}",
            d.version()
        );
        let artifact = entries[0].artifact().to_path_buf();
        let before = sha256(&artifact);

        let out = attack(d, "cattack", row.pid);
        // The attack reached the artifact wasmtime maps (the defence is tested, not dodged).
        let name = artifact
            .file_name()
            .and_then(|n| n.to_str())
            .expect("artifact name");
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("TRIED /proc/1/") && l.contains(name)),
            "{}: the attacker never saw the mapped artifact {name}:\n{out}",
            d.version()
        );
        assert_nothing_writable(d, &out, "init");

        // A Wasm exec into the same container: the same, for the exec's process.
        let mut exec = d.ctr_command();
        exec.args(["tasks", "exec", "--exec-id", "wexec", &id, "/sleep.wasm"]);
        let exec = amphi_e2e::command::Background::spawn(&mut exec);
        wait_for_output(d, &exec, "sleeping");
        let out = attack(d, "cattack2", row.pid);
        assert!(
            out.stdout.lines().any(|l| {
                l.starts_with("TRIED /proc/")
                    && !l.starts_with("TRIED /proc/1/")
                    && l.contains(name)
            }),
            "{}: the attacker never saw the exec map {name}:\n{out}",
            d.version()
        );
        assert_nothing_writable(d, &out, "exec");
        let _ = d.ctr(&["tasks", "kill", "--exec-id", "wexec", "-s", "SIGKILL", &id]);
        let _ = exec.wait_timeout(Duration::from_secs(60));

        assert_eq!(
            sha256(&artifact),
            before,
            "{}: the cache entry changed",
            d.version()
        );
        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
    }
);

/// Waits until the attached `ctr` has printed `text` (the guest is running).
fn wait_for_output(d: &Containerd, ctr: &amphi_e2e::command::Background, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ctr.stdout_so_far().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}: the exec never printed {text:?}",
            d.version()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
