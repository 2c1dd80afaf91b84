//! Checks of the harness itself: the leak checks must see a running container (so they
//! can fail), and a container's traces must all go away once it is removed.

use amphi_e2e::{Containerd, e2e_test};

e2e_test!(
    leak_checks_see_a_running_container,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("seen");
        let row = d.run_detached(&id, &[], &["sleep", "100"]);
        let leaks = d.leaks(&id);
        let has = |prefix: &str| leaks.iter().any(|l| l.starts_with(prefix));
        for kind in [
            "mount:",
            "cgroup:",
            "process ",
            "task process",
            "task bundle:",
            "shim socket:",
            "containerd still lists the container",
            "containerd still lists the task",
            "containerd still lists the snapshot",
        ] {
            assert!(
                has(kind),
                "{}: the leak check misses `{kind}` for running task {id} (pid {}):\n  - {}",
                d.version(),
                row.pid,
                leaks.join("\n  - ")
            );
        }
        let socket = d.recorded_shim_socket(&id);
        assert!(
            socket.as_ref().is_some_and(|s| s.exists()),
            "{}: no shim socket recorded for the running task {id}: {socket:?}",
            d.version()
        );

        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
        assert!(
            !socket.is_some_and(|s| s.exists()),
            "{}: the shim socket outlived the task",
            d.version()
        );
    }
);
