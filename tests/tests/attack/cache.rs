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
/// CAP_SYS_PTRACE (the grant that beats non-dumpable), and in a second run also
/// CAP_SYS_ADMIN (which `/proc/<pid>/map_files` wants). For every other process it tries
/// to open each fd that is a regular file, and each file mapping, for writing
/// (`O_WRONLY|O_APPEND`: nothing is written), and reports each directory fd.
/// A directory fd is the container's own (a preopen: a detached clone of one of its
/// mounts, shown as `/`) when its device and inode are those of a mount point in that
/// process's root; anything else is a host directory. Lines: `TRIED <path> -> <target>`
/// for every open attempted, `WRITABLE <path> -> <target>` for one that succeeded,
/// `OWNDIR <path>` and `HOSTDIR <path> -> <target>` for directory fds, then `DONE`. Memfds
/// (wasmtime's own anonymous memory images, private to the process) are skipped.
const ATTACK: &str = r#"
self=$$
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$self" ] && continue
  own=" "
  for m in $(cut -d' ' -f5 "$p/mountinfo" 2>/dev/null); do
    own="$own$(stat -L -c %d:%i "$p/root$m" 2>/dev/null) "
  done
  for f in $p/fd/* $p/map_files/*; do
    [ -e "$f" ] || continue
    t=$(readlink "$f")
    if [ -d "$f" ]; then
      case "$own" in
        *" $(stat -L -c %d:%i "$f") "*) echo "OWNDIR $f" ;;
        *) echo "HOSTDIR $f -> $t" ;;
      esac
      continue
    fi
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
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs [`ATTACK`] in the pid namespace of the process `pid` (a host pid), with
/// CAP_SYS_PTRACE and, when `admin`, CAP_SYS_ADMIN.
fn attack(d: &Containerd, label: &str, pid: u32, admin: bool) -> Output {
    let ns = format!("pid:/proc/{pid}/ns/pid");
    let id = d.new_id(label);
    let mut opts = vec!["--with-ns", &ns, "--cap-add", "CAP_SYS_PTRACE"];
    if admin {
        opts.extend(["--cap-add", "CAP_SYS_ADMIN"]);
    }
    let out = d.run_rm(&id, &opts, &["sh", "-c", ATTACK]);
    eprintln!("{} attacker:\n{out}", d.version());
    assert!(
        out.stdout.contains("DONE"),
        "{}: the attacker did not finish:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
    out
}

/// No directory fd and nothing writable; with `only_cache`, only cache artifacts count
/// (with CAP_SYS_ADMIN, `map_files` also reaches the host's shared libraries a dynamic
/// debug build maps, which is the sealed-binary finding's business, not the cache's).
fn assert_nothing_writable(d: &Containerd, out: &Output, what: &str, only_cache: bool) {
    let bad: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            l.starts_with("HOSTDIR")
                || (l.starts_with("WRITABLE") && (!only_cache || l.contains(".cwasm")))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{}: {what}: a container process holds a writable or directory handle: {bad:?}\n{out}",
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

        let name = artifact
            .file_name()
            .and_then(|n| n.to_str())
            .expect("artifact name");
        for admin in [false, true] {
            let out = attack(d, "cattack", row.pid, admin);
            // The attack reached the artifact wasmtime maps (tested, not dodged).
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.starts_with("TRIED /proc/1/fd/") && l.contains(name)),
                "{}: the attacker never saw the artifact {name} open in PID 1:\n{out}",
                d.version()
            );
            if admin {
                assert!(
                    out.stdout
                        .lines()
                        .any(|l| l.starts_with("TRIED /proc/1/map_files/") && l.contains(name)),
                    "{}: the attacker never saw the mapping of {name}:\n{out}",
                    d.version()
                );
            }
            assert_nothing_writable(d, &out, "init", admin);
        }

        // A Wasm exec into the same container: the same, for the exec's process.
        let mut exec = d.ctr_command();
        exec.args(["tasks", "exec", "--exec-id", "wexec", &id, "/sleep.wasm"]);
        let exec = amphi_e2e::command::Background::spawn(&mut exec);
        wait_for_output(d, &exec, "sleeping");
        let out = attack(d, "cattack2", row.pid, false);
        assert!(
            out.stdout.lines().any(|l| {
                l.starts_with("TRIED /proc/")
                    && !l.starts_with("TRIED /proc/1/")
                    && l.contains(name)
            }),
            "{}: the attacker never saw the exec map {name}:\n{out}",
            d.version()
        );
        assert_nothing_writable(d, &out, "exec", false);
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
