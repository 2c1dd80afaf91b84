//! The shim binary's short actions (`-v`, `-info`) and the `delete` action containerd
//! runs when a shim has died: it must kill what is left of the container, remove its
//! cgroup and unmount its rootfs, without a live shim to ask.

use std::time::{Duration, Instant};

use amphi_e2e::leaks::processes_matching;
use amphi_e2e::{Containerd, e2e_test, env};

/// Pid of the amphi shim server serving container `id` (started with `-id <id>`).
fn shim_server_pid(id: &str) -> Option<i32> {
    processes_matching(&[format!("-id {id} ")])
        .into_iter()
        .find(|(_, cmd)| cmd.contains("containerd-shim-amphi-v1") && cmd.contains("-socket"))
        .and_then(|(pid, _)| i32::try_from(pid).ok())
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry: look at its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn remove_client_fifos(id: &str) {
    let Ok(dirs) = std::fs::read_dir("/run/containerd/fifo") else {
        return;
    };
    for dir in dirs.flatten() {
        for suffix in ["stdin", "stdout", "stderr"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{id}-{suffix}")));
        }
        let _ = std::fs::remove_dir(dir.path());
    }
}

#[test]
fn version_and_info_actions() {
    env::require_root();
    let shim = env::shim_path();
    let out = std::process::Command::new(&shim)
        .arg("-v")
        .output()
        .expect("run the shim with -v");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "-v failed: {out:?}");
    assert!(
        text.contains("containerd-shim-amphi-v1") && text.contains(env!("CARGO_PKG_VERSION")),
        "-v printed {text:?}"
    );

    let out = std::process::Command::new(&shim)
        .arg("-info")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the shim with -info");
    assert!(out.status.success(), "-info failed: {out:?}");
    // A protobuf RuntimeInfo: field 1 (name) is a length-delimited string.
    let name = b"io.containerd.amphi.v1";
    assert_eq!(
        out.stdout.first(),
        Some(&0x0a),
        "not a RuntimeInfo: {out:?}"
    );
    assert_eq!(out.stdout.get(1), Some(&(name.len() as u8)));
    assert_eq!(out.stdout.get(2..2 + name.len()), Some(&name[..]));
}

e2e_test!(
    delete_action_cleans_up_after_a_killed_shim,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        if !env::testing_amphi() {
            eprintln!(
                "{}: not amphi: the shim pid lookup is amphi-specific",
                d.version()
            );
            return;
        }
        let id = d.new_id("shimkill");
        let task = d.run_detached(&id, &[], &["sleep", "300"]);
        let events = d.subscribe_events();
        let shim = shim_server_pid(&id)
            .unwrap_or_else(|| panic!("{}: no amphi shim server for {id}", d.version()));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the shim");

        // containerd notices the dead shim and runs `containerd-shim-amphi-v1 delete`,
        // which must kill the container's processes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(task.pid) {
            assert!(
                Instant::now() < deadline,
                "{}: task pid {} still alive 20 s after its shim was killed\n{}",
                d.version(),
                task.pid,
                d.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The delete action's answer becomes the task's exit: SIGKILL, 137.
        let exit = d.wait_event(&events, "/tasks/exit", &id);
        let log = events.kill();
        assert_eq!(
            exit.as_ref()
                .and_then(|e| e.body.get("exit_status"))
                .and_then(|v| v.as_u64()),
            Some(137),
            "{}: /tasks/exit for {id} after its shim was killed:\n{log}",
            d.version()
        );
        // containerd dropped the task with its shim, so `ctr task delete` has nothing to
        // delete and ctr never removes its own stdio FIFOs (client-side files, the same
        // with any shim): remove them here, then check what the shim is responsible for.
        let gone = d.ctr(&["task", "delete", &id]);
        assert!(
            d.task(&id).is_none(),
            "{}: task {id} still listed after its shim died:\n{gone}",
            d.version()
        );
        remove_client_fifos(&id);
        d.delete_container(&id);
        d.assert_no_leaks(&id);
    }
);
