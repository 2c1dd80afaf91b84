//! Feature cases, run against containerd 1.6, 1.7 and 2.1: what `ctr run` flags put into the spec
//! (environment, working directory, read-only root, bind mounts, memory limit, namespaces
//! to join, user namespace), a pids limit through a full spec, `task ps`, `task metrics`,
//! and the order of task events. Every case ends with the leak checks.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::ctr::parse_task_ps;
use amphi_e2e::{Containerd, Spec, e2e_test, image};

e2e_test!(env_flag, [v1_6, v1_7, v2_1], |d: &Containerd| {
    let id = d.new_id("env");
    let out = d.run_rm(&id, &["--env", "FOO=bar"], &["sh", "-c", "echo $FOO"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "bar",
        "{}: --env not applied:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(cwd_flag, [v1_6, v1_7, v2_1], |d: &Containerd| {
    let id = d.new_id("cwd");
    let out = d.run_rm(&id, &["--cwd", "/tmp"], &["pwd"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "/tmp",
        "{}: --cwd not applied:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(read_only_root, [v1_6, v1_7, v2_1], |d: &Containerd| {
    // Control: the same write succeeds on a writable root.
    let rw = d.new_id("rw");
    let out = d.run_rm(&rw, &[], &["touch", "/x"]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: touch on a writable root:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&rw);

    let ro = d.new_id("ro");
    let out = d.run_rm(&ro, &["--read-only"], &["touch", "/x"]);
    assert!(
        out.code().is_some_and(|c| c != 0),
        "{}: touch /x succeeded with --read-only:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.to_lowercase().contains("read-only"),
        "{}: expected a read-only file system error:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&ro);
});

e2e_test!(
    bind_mount_read_only,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let src = d.work_dir().join("bind-src");
        fs::create_dir_all(&src).expect("create the bind mount source");
        fs::write(src.join("hello.txt"), "from the host\n").expect("write the bind mount file");
        let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", src.display());

        let id = d.new_id("bindr");
        let out = d.run_rm(&id, &["--mount", &mount], &["cat", "/data/hello.txt"]);
        assert_eq!(
            out.code(),
            Some(0),
            "{}: reading the bind mount:\n{out}",
            d.version()
        );
        assert_eq!(
            out.stdout_trimmed(),
            "from the host",
            "{}:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        let id = d.new_id("bindw");
        let out = d.run_rm(
            &id,
            &["--mount", &mount],
            &["sh", "-c", "echo x > /data/new"],
        );
        assert!(
            out.code().is_some_and(|c| c != 0),
            "{}: writing into a read-only bind mount succeeded:\n{out}",
            d.version()
        );
        assert!(
            !src.join("new").exists(),
            "{}: the write reached the host directory",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    memory_limit_oom_kill,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let limit = (32 * 1024 * 1024).to_string();
        // Control: a small allocation fits under the limit.
        let small = d.new_id("memok");
        let out = d.run_rm(
            &small,
            &["--memory-limit", &limit],
            &["sh", "-c", "head -c 1000000 /dev/zero | wc -c"],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(out.stdout_trimmed(), "1000000", "{}:\n{out}", d.version());
        d.assert_no_leaks(&small);

        // `tail` keeps the last line of /dev/zero, which never ends: it grows until killed.
        let id = d.new_id("oom");
        let out = d.run_rm(&id, &["--memory-limit", &limit], &["tail", "/dev/zero"]);
        assert_eq!(
            out.code(),
            Some(137),
            "{}: the OOM-killed task should exit 137:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    pids_limit_from_spec,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        // ctr has no pids flag: the case writes a full spec and runs it with `ctr run --config`.
        let rootfs = d.work_dir().join("rootfs");
        image::copy_rootfs(&rootfs);
        let script = "for i in $(seq 1 20); do sleep 2 & done; wait; echo all-started";

        let free = d.new_id("pidsfree");
        let spec_path = d.work_dir().join("free.json");
        Spec::busybox(&free, &rootfs, &["sh", "-c", script]).write(&spec_path);
        let out = d.run_rm_config(&free, &spec_path);
        assert_eq!(
            out.code(),
            Some(0),
            "{}: 20 children without a limit:\n{out}",
            d.version()
        );
        assert_eq!(
            out.stdout_trimmed(),
            "all-started",
            "{}:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&free);

        let id = d.new_id("pids");
        let spec_path = d.work_dir().join("limited.json");
        Spec::busybox(&id, &rootfs, &["sh", "-c", script])
            .pids_limit(8)
            .write(&spec_path);
        let out = d.run_rm_config(&id, &spec_path);
        assert!(
            out.code().is_some_and(|c| c != 0) && !out.stdout.contains("all-started"),
            "{}: 20 children started under pids.limit 8:\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("fork"),
            "{}: expected the shell to report a failed fork:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    with_ns_joins_network_namespace,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let holder = d.new_id("netns");
        let row = d.run_detached(&holder, &[], &["sleep", "100"]);
        let ns_path = format!("/proc/{}/ns/net", row.pid);
        let host_view = fs::read_link(&ns_path)
            .expect("readlink of the holder's net namespace")
            .display()
            .to_string();

        let id = d.new_id("joined");
        let flag = format!("network:{ns_path}");
        let out = d.run_rm(
            &id,
            &["--with-ns", &flag],
            &["readlink", "/proc/self/ns/net"],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            host_view,
            "{}: --with-ns did not join the holder's network namespace:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        // Control: without --with-ns the container gets a namespace of its own.
        let own = d.new_id("ownns");
        let out = d.run_rm(&own, &[], &["readlink", "/proc/self/ns/net"]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_ne!(out.stdout_trimmed(), host_view, "{}:\n{out}", d.version());
        d.assert_no_leaks(&own);

        assert_eq!(
            d.kill_and_remove(&holder, "SIGKILL"),
            137,
            "{}",
            d.version()
        );
        d.assert_no_leaks(&holder);
    }
);

/// The `Uid:`/`Gid:` line of `/proc/<pid>/status`: real, effective, saved, fs ids.
fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

e2e_test!(
    user_namespace_mapping,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let maps = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
        let id = d.new_id("userns");
        let out = d.run_rm(&id, &maps, &["sh", "-c", "id -u; id -g"]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(
            out.stdout.split_whitespace().collect::<Vec<_>>(),
            ["0", "0"],
            "{}: inside the user namespace the workload should be uid/gid 0:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        let id = d.new_id("usernsd");
        let row = d.run_detached(&id, &maps, &["sleep", "100"]);
        let uids = status_ids(row.pid, "Uid:");
        let gids = status_ids(row.pid, "Gid:");
        assert_eq!(
            uids,
            [100000; 4],
            "{}: the host should see uid 100000",
            d.version()
        );
        assert_eq!(
            gids,
            [100000; 4],
            "{}: the host should see gid 100000",
            d.version()
        );
        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
    }
);

e2e_test!(task_ps_and_metrics, [v1_6, v1_7, v2_1], |d: &Containerd| {
    let id = d.new_id("psm");
    let row = d.run_detached(&id, &[], &["sh", "-c", "sleep 100 & exec sleep 101"]);

    // `task ps` lists the init process and, once it is forked, the background sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let out = d.ctr(&["tasks", "ps", &id]).expect_success("ctr task ps");
        let pids = parse_task_ps(&out.stdout);
        if pids.len() >= 2 || Instant::now() >= deadline {
            break pids;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        pids.contains(&row.pid),
        "{}: ctr task ps does not list the init pid {}: {pids:?}",
        d.version(),
        row.pid
    );
    assert_eq!(
        pids.len(),
        2,
        "{}: expected two processes: {pids:?}",
        d.version()
    );

    let m = d.metrics(&id);
    assert!(
        m.memory_bytes > 0,
        "{}: memory usage is 0: {m:?}",
        d.version()
    );
    assert!(m.cpu_ns > 0, "{}: cpu usage is 0: {m:?}", d.version());
    if let Some(p) = m.pids {
        assert_eq!(p, 2, "{}: pids.current: {m:?}", d.version());
    }

    assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
    d.assert_no_leaks(&id);
});

e2e_test!(
    task_events_in_order,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let events = d.subscribe_events();

        let id = d.new_id("events");
        let out = d.run_rm(&id, &[], &["sh", "-c", "exit 7"]);
        assert_eq!(out.code(), Some(7), "{}:\n{out}", d.version());

        let _ = d.wait_event(&events, "/tasks/delete", &id);
        let log = events.kill();
        let parsed = amphi_e2e::ctr::parse_events(&log.stdout);
        let topics: Vec<&str> = parsed
            .iter()
            .filter(|e| e.topic.starts_with("/tasks/") && e.container_id() == Some(id.as_str()))
            .map(|e| e.topic.as_str())
            .collect();
        assert_eq!(
            topics,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "{}: task events for {id} out of order or missing (the shim must publish \
         /tasks/delete before it exits; runc's shim of 2.x sometimes loses it under load, \
         exiting on Shutdown before its event forwarder drains):\n{log}",
            d.version()
        );
        let exit = parsed
            .iter()
            .find(|e| e.topic == "/tasks/exit" && e.container_id() == Some(id.as_str()));
        assert_eq!(
            exit.and_then(|e| e.body.get("exit_status"))
                .and_then(|v| v.as_u64()),
            Some(7),
            "{}: /tasks/exit should carry exit_status 7:\n{log}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);
