//! Root tests of the host-handle invariant (docs/architecture.md, "Host handles"): the
//! process a helper forks into a container, the container's init or an exec's process,
//! holds no descriptor of a host file or directory when it comes to exist. A process of
//! the container with `CAP_SYS_PTRACE` could otherwise take it through `/proc/<pid>/fd` and
//! walk to the host's `/` (an exec helper once held the host's `/proc` this way).

mod common;

use std::time::Duration;

use amphi_linux_executor::launch;
use common::fork_watch::{ForkWatch, path_fds};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

#[test]
fn root_container_init_holds_no_host_path_when_forked() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["echo", "ok"]);
    s["process"]["oomScoreAdj"] = 100.into();
    let watch = ForkWatch::default();
    let (io, _pipes) = io_with_pipes();
    let created = launch::create(exe(), &plan(&s, &fx.rootfs), io, &|pid| {
        watch.join_cgroup(pid)
    })
    .expect("create");
    let fds = watch.fds();
    assert!(
        path_fds(&fds).is_empty(),
        "the container init held host paths when it was forked: {fds:?}"
    );
    let pid = created.pid();
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(20)),
        WaitStatus::Exited(_, 0)
    ));
}

#[test]
fn root_exec_process_holds_no_host_path_when_forked() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sleep", "100"]);
    s["process"]["oomScoreAdj"] = 100.into();
    let container = plan(&s, &fx.rootfs);
    let (created, _pipes) = create_plan(exe(), &container).expect("create");
    let init = created.pid();
    created.start().expect("start");

    let pid = rustix::process::Pid::from_raw(init).expect("init pid");
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .expect("pidfd_open of the init");
    let mut process = s["process"].clone();
    process["args"] = serde_json::json!(["cat", "/proc/self/oom_score_adj"]);
    let process: oci_spec::runtime::Process =
        serde_json::from_value(process).expect("exec process");
    let exec_plan = container.for_exec(&process).expect("exec plan");
    let watch = ForkWatch::default();
    let (io, pipes) = io_with_pipes();
    let exec =
        launch::exec(exe(), &exec_plan, pidfd, io, &|pid| watch.join_cgroup(pid)).expect("exec");
    let fds = watch.fds();
    assert!(
        path_fds(&fds).is_empty(),
        "the exec'd process held host paths when it was forked into the container: {fds:?}"
    );
    let exec_pid = exec.pid();
    exec.start().expect("start the exec");
    assert!(matches!(
        wait_exit(exec_pid, Duration::from_secs(20)),
        WaitStatus::Exited(_, 0)
    ));
    // oom_score_adj, written before the fork, is still applied.
    assert_eq!(read_all(pipes.stdout).trim(), "100");

    kill(Pid::from_raw(init), Signal::SIGKILL).expect("kill the init");
    wait_exit(init, Duration::from_secs(20));
}
