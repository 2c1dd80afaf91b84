//! # amphi-e2e: end-to-end tests of `containerd-shim-amphi-v1` through containerd and `ctr`
//!
//! Each test starts its own private containerd ([`Containerd::start`]) of one version,
//! imports a busybox image built from the host's busybox-static ([`image::busybox`]), drives
//! it with `ctr` (every call has a 60 s deadline, [`command::CTR_TIMEOUT`]), and checks after
//! every case that nothing is left behind ([`leaks`]): mounts, cgroups, processes, shim
//! sockets, and what containerd itself still lists.
//!
//! ```text
//! test fn ──> Containerd::start(Version) ── /run/amphi-e2e/d<rand>/{c.sock,config.toml,root,state,bin,work}
//!                 │  PATH = bin/ (containerd-shim-amphi-v1 -> built shim) : <version>/usr/bin : /usr/sbin ...
//!                 ├─ ctr image import --base-name localhost/busybox  (layout built once per process)
//!                 ├─ ctr run --runtime $AMPHI_E2E_RUNTIME ...        (the case)
//!                 ├─ assert_no_leaks(id)                             (after every case)
//!                 └─ drop: remove containers, stop daemon, kill/unmount/rmdir leftovers, log tail on failure
//! ```
//!
//! ## Running
//!
//! As root, after `cargo build -p amphi-shim`: `cargo test -p amphi-e2e` (or `tests/run.sh`,
//! which also installs the dependencies). Environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `AMPHI_E2E_RUNTIME` | runtime passed to `ctr run --runtime` | `io.containerd.amphi.v1` |
//! | `AMPHI_CONTAINERD_VERSIONS` | comma list of versions to run (`1.6,1.7,2.1`) | all three |
//! | `AMPHI_CONTAINERD_DIR` | where fetched containerd builds live (`<dir>/<release>/usr/bin`) | `/var/cache/amphi/containerd` |
//! | `AMPHI_SHIM` | the shim binary | `$CARGO_TARGET_DIR/debug/containerd-shim-amphi-v1` |
//!
//! A version that is selected but whose binaries are missing fails the test with the path
//! and the fetch command; a test whose version is deselected by `AMPHI_CONTAINERD_VERSIONS`
//! says so on stderr (not captured) and passes. Not running as root fails every test.
//!
//! ## Test matrix
//!
//! Test names are `<case>::v1_6`, `<case>::v1_7`, `<case>::v2_1`.
//!
//! | file | cases | 1.6.20 | 1.7.24 | 2.1.9 |
//! |---|---|---|---|---|
//! | `tests/lifecycle.rs` | output and exit code 3, exit 0, SIGKILL → 137, SIGTERM → 143, detached kill/delete, two containers at once, PID 1 is the workload, missing executable, leak checks | ✓ | ✓ | ✓ |
//! | `tests/wasm.rs` | Wasm modules (`tests/fixtures/wasm/*.wat`) and a WASI 0.2 component: output, exit codes, args/env/cwd, files from the rootfs and a bind mount, read-only mount, outside the preopens, memory-limit trap, SIGTERM/SIGKILL of a spinning guest, the compiled-module cache (hit, corrupted entry), an invalid module, Linux and Wasm side by side, annotation dispatch, the CNCF Wasm OCI artifact run from the content store through the containerd API (`src/api.rs`, output, exit code, cache hit) | ✓ | | ✓ |
//! | `tests/exec.rs` | `ctr task exec` into a Linux container: output, exit code 7, no inherited fds, env/cwd/user from the exec spec, duplicate exec id, missing executable, stopped container, `task ps` naming the exec, `task kill --exec-id`; a second Wasm module exec'd into a Wasm container; the init exiting while an exec runs (own and shared pid namespace): exec killed, its `/tasks/exit` before the init's | ✓ | | ✓ |
//! | `tests/tty.rs` | `ctr run -t` (a `/dev/pts` terminal, the test terminal's size, exit 3), an interactive `sh` fed through the terminal (exit 4), `ctr task exec -t` (terminal, size, exit 5, the shim's fd count unchanged after three), resize by SIGWINCH and by Tasks.ResizePty seen by `stty size`, ResizePty errors (no terminal, unknown exec), a Wasm module seeing a terminal with `-t` and none without | ✓ | | ✓ |
//! | `tests/faults.rs` | containerd restarted under a running task (no output lost through the test's own FIFO, Connect/Pids after reconnect, then kill/delete), ten containers of one pod (`io.kubernetes.cri.sandbox-id`, nine Linux and a Wasm one) in one shim that outlives its first containers and exits with the last, Wait held open during concurrent State/Pids/Stats/Exec, then Kill, 200 create/start/wait/delete cycles four at a time (Linux and Wasm) with the pod shim's fd count unchanged | ✓ | | ✓ |
//! | `tests/cri.rs` | containerd's CRI plugin with RuntimeClass handler `amphi` (`src/cri.rs`, the `k8s-cri` client): a host-network pod with a Linux and two Wasm containers under one shim next to its pause container, CRI logs, ExecSync output and exit code, ContainerStats (working set, CPU) for Linux and Wasm, pod removal leaves nothing; a container over its memory limit reported exit 137, reason OOMKilled (from TaskOOM) | ✓ | | ✓ |
//! | `tests/control.rs` | pause/resume of a counting Linux container (stops counting, `task ls` PAUSED, cgroup frozen, `/tasks/paused` then `/tasks/resumed`, wrong states refused, SIGKILL while paused → 137) and of a spinning Wasm guest (no CPU time while frozen), `Tasks.Update` (gRPC, as CRI sends it) raising the memory limit lets a refused allocation succeed, bad JSON → INVALID_ARGUMENT, `/tasks/oom` and the OOM-kill counter in metrics, `task metrics` of a Linux and a Wasm container | ✓ | | ✓ |
//! | `tests/attack/` | attacks from inside containers, one module per defence: seccomp (containerd's default profile, a custom one with argument conditions, ENOSYS for newer syscalls, NNP against setuid, execs and the Wasm PID 1 filtered), the sealed helper binary (`/proc/1/exe` of a Wasm PID 1 is read-only and not the host's file), host device nodes, a Wasm guest against `/proc`, `..` and symlinks out of its preopens, the compiled-module cache from a `CAP_SYS_PTRACE` neighbour, hostile modules, LSM labels never dropped | ✓ | | ✓ |
//! | `tests/features.rs` | `--env`, `--cwd`, `--read-only`, bind mount ro, `--memory-limit` OOM → 137, pids limit (`--config` spec), `--with-ns network`, `--uidmap/--gidmap`, `task ps`, `task metrics`, event order | | | ✓ |
//!
//! `tests/harness.rs` checks the harness itself on all three versions: the leak checks must
//! report a running container (mount, cgroup, shim process, task pid, shim socket, bundle,
//! containerd's listings), and report nothing once it is removed.
//!
//! ## Validating the harness without amphi
//!
//! - `AMPHI_E2E_RUNTIME=io.containerd.runc.v2 cargo test -p amphi-e2e`: the stock runc shim;
//! - `AMPHI_SHIM=/usr/bin/containerd-shim-runc-v2 cargo test -p amphi-e2e`: runtime name
//!   `io.containerd.amphi.v1`, served by the runc shim through the PATH symlink, which is
//!   exactly the path the real amphi shim takes.
//!
//! Both pass every case on 1.6.20, 1.7.24 and 2.1.9, with two known runc-side flakes on
//! 2.1.9 (about one run in ten each): `task_events_in_order` misses `/tasks/delete` (runc's
//! shim exits on Shutdown before its event forwarder has sent it) and
//! `user_namespace_mapping` once got no output from a task that exited 0.
//!
//! ## Limitations
//!
//! - A test process killed with SIGKILL cannot tear its daemon down; the next run does not
//!   clean `/run/amphi-e2e` either (directories of live daemons cannot be told apart).
//! - SIGTERM to a container's PID 1 that installed no handler is ignored by the kernel, so
//!   the 143 case runs `sleep` as a non-init process: it joins the pid namespace of another
//!   container with `--with-ns pid:...`.

pub mod api;
pub mod bench;
pub mod command;
pub mod cri;
pub mod ctr;
pub mod daemon;
pub mod env;
pub mod image;
pub mod leaks;
pub mod probe;
pub mod pty;
pub mod spec;
pub mod version;
pub mod wasm;

pub use command::Output;
pub use ctr::{Metrics, TaskRow};
pub use daemon::Containerd;
pub use env::runtime;
pub use image::IMAGE;
pub use spec::Spec;
pub use version::Version;

use std::io::Write;

/// Runs one case against the version named by a test function (`v1_6`, `v1_7`, `v2_1`):
/// checks root, starts a daemon with the busybox image, runs `case`, then asserts the leak
/// checks for every container id the case used and tears the daemon down.
#[track_caller]
pub fn run_case(version_fn: &str, case_name: &str, case: impl FnOnce(&Containerd)) {
    run_with(version_fn, case_name, Containerd::start_with_busybox, case);
}

/// [`run_case`] against a daemon with the CRI plugin enabled and the CRI images imported
/// ([`Containerd::start_cri_with_images`]).
#[track_caller]
pub fn run_cri_case(version_fn: &str, case_name: &str, case: impl FnOnce(&Containerd)) {
    run_with(
        version_fn,
        case_name,
        Containerd::start_cri_with_images,
        case,
    );
}

#[track_caller]
fn run_with(
    version_fn: &str,
    case_name: &str,
    start: fn(Version) -> Containerd,
    case: impl FnOnce(&Containerd),
) {
    let version = Version::parse(version_fn)
        .unwrap_or_else(|| panic!("test fn {version_fn} does not name a containerd version"));
    if !version::is_selected(version) {
        // Written to the real stderr (not print capture) so a deselection is always visible.
        let _ = writeln!(
            std::io::stderr(),
            "amphi-e2e: {case_name}::{version_fn} not run: {version} is not in AMPHI_CONTAINERD_VERSIONS"
        );
        return;
    }
    env::require_root();
    let daemon = start(version);
    case(&daemon);
    daemon.finish();
}

/// Declares one end-to-end case as a module with one `#[test]` per listed version:
///
/// ```no_run
/// amphi_e2e::e2e_test!(exit_code, [v1_6, v1_7, v2_1], |d| {
///     let id = d.new_id("exit");
///     assert_eq!(d.run_rm(&id, &[], &["true"]).code(), Some(0));
///     d.assert_no_leaks(&id);
/// });
/// ```
///
/// gives the tests `exit_code::v1_6`, `exit_code::v1_7` and `exit_code::v2_1`.
#[macro_export]
macro_rules! e2e_test {
    ($name:ident, cri, [$($version:ident),+ $(,)?], $case:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $version() {
                    $crate::run_cri_case(stringify!($version), stringify!($name), $case);
                }
            )+
        }
    };
    ($name:ident, [$($version:ident),+ $(,)?], $case:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $version() {
                    $crate::run_case(stringify!($version), stringify!($name), $case);
                }
            )+
        }
    };
}
