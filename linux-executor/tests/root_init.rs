//! Root integration tests of `launch` + `init`: real containers from a busybox rootfs.
//! They panic (never skip) when not run as root.

mod common;

use std::fs;
use std::time::Duration;

use amphi_linux_executor::launch::ErrorKind;
use common::*;
use nix::sys::wait::WaitStatus;
use serde_json::json;

#[test]
fn root_echo_output_and_exit_code() {
    let _g = serial();
    let fx = busybox_rootfs();
    let out = no_mount_leak(fx.dir.path(), || {
        run(
            &spec(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
            &fx.rootfs,
        )
    })
    .expect("container runs");
    assert_eq!(out.code(), 3);
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
}

#[test]
fn root_env_and_cwd() {
    let _g = serial();
    let fx = busybox_rootfs();
    fs::create_dir_all(fx.rootfs.join("work/dir")).expect("mkdir");
    let mut s = spec(&["sh", "-c", "echo $FOO; pwd; umask"]);
    s["process"]["env"] = json!(["PATH=/bin", "FOO=bar baz"]);
    s["process"]["cwd"] = json!("/work/dir");
    s["process"]["user"]["umask"] = json!(0o027);
    assert_eq!(
        no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs)),
        "bar baz\n/work/dir\n0027\n"
    );
}

#[test]
fn root_missing_executable_or_cwd_is_not_found_at_create() {
    let _g = serial();
    let fx = busybox_rootfs();
    let err = no_mount_leak(fx.dir.path(), || {
        create(&spec(&["no-such-tool", "x"]), &fx.rootfs)
    })
    .expect_err("missing executable");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        err.to_string(),
        "executable \"no-such-tool\" not found in $PATH of the container"
    );

    let err = create(&spec(&["/bin/nope"]), &fx.rootfs).expect_err("missing absolute executable");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let mut s = spec(&["sh"]);
    s["process"]["cwd"] = json!("/nope");
    let err = create(&s, &fx.rootfs).expect_err("missing cwd");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("cwd \"/nope\""), "{err}");
}

#[test]
fn root_pid_namespace_makes_the_workload_pid_1() {
    let _g = serial();
    let fx = busybox_rootfs();
    assert_eq!(run_ok(&spec(&["sh", "-c", "echo $$"]), &fx.rootfs), "1\n");
}

#[test]
fn root_hostname_is_set() {
    let _g = serial();
    let fx = busybox_rootfs();
    assert_eq!(run_ok(&spec(&["hostname"]), &fx.rootfs), "amphi-test\n");
}

#[test]
fn root_readonly_root() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&[
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo wrote || echo refused; touch /tmp/y && echo tmp",
    ]);
    s["root"]["readonly"] = json!(true);
    s["mounts"].as_array_mut().expect("mounts").push(json!(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
    ));
    assert_eq!(
        no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs)),
        "refused\ntmp\n"
    );
    assert!(!fx.rootfs.join("x").exists());
}

#[test]
fn root_bind_mounts_rw_and_ro() {
    let _g = serial();
    let fx = busybox_rootfs();
    let host = tempfile::tempdir().expect("tempdir");
    fs::write(host.path().join("data.txt"), "from host\n").expect("write");
    fs::write(host.path().join("single"), "one file\n").expect("write");
    let mut s = spec(&[
        "sh",
        "-c",
        "cat /mnt/ro/data.txt; cat /etc/single; touch /mnt/ro/new 2>/dev/null || echo ro-refused; echo hi > /mnt/rw/out",
    ]);
    let mounts = s["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/mnt/ro", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "rprivate"]}));
    mounts.push(json!({"destination": "/mnt/rw", "type": "bind", "source": host.path(), "options": ["bind"]}));
    mounts.push(json!({"destination": "/etc/single", "type": "bind", "source": host.path().join("single"), "options": ["bind", "ro"]}));
    let out = no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs));
    assert_eq!(out, "from host\none file\nro-refused\n");
    assert_eq!(
        fs::read_to_string(host.path().join("out")).expect("written through rw bind"),
        "hi\n"
    );
    assert!(!host.path().join("new").exists());
}

#[test]
fn root_masked_and_readonly_paths() {
    let _g = serial();
    let fx = busybox_rootfs();
    // On the host /proc/timer_list is never empty and /sys/firmware has entries.
    assert!(
        !fs::read_to_string("/proc/timer_list")
            .expect("host timer_list")
            .is_empty()
    );
    assert!(
        fs::read_dir("/sys/firmware")
            .expect("host /sys/firmware")
            .next()
            .is_some()
    );
    let script = "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
                  echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo ro";
    let out = no_mount_leak(fx.dir.path(), || {
        run(&spec(&["sh", "-c", script]), &fx.rootfs)
    })
    .expect("runs");
    assert_eq!(out.stdout, "0\n0\nro\n", "stderr: {}", out.stderr);
}

#[test]
fn root_devices_and_dev_symlinks() {
    let _g = serial();
    let fx = busybox_rootfs();
    let script = "stat -c '%F %t:%T %a' /dev/null /dev/zero /dev/tty; readlink /dev/fd; readlink /dev/ptmx; \
                  echo x > /dev/null && echo null-ok; ls /dev/pts/ptmx >/dev/null && echo pts-ok";
    let out = run_ok(&spec(&["sh", "-c", script]), &fx.rootfs);
    assert_eq!(
        out,
        "character special file 1:3 666\ncharacter special file 1:5 666\ncharacter special file 5:0 666\n\
         /proc/self/fd\npts/ptmx\nnull-ok\npts-ok\n"
    );
}

#[test]
fn root_user_switch_and_groups() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sh", "-c", "id -u; id -g; id -G"]);
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 20]});
    assert_eq!(run_ok(&s, &fx.rootfs), "1000\n1000\n1000 20\n");
}

#[test]
fn root_capabilities_and_no_new_privileges() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&[
        "sh",
        "-c",
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
    ]);
    s["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    });
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let out = run_ok(&s, &fx.rootfs);
    // CHOWN = bit 0, KILL = bit 5, NET_BIND_SERVICE = bit 10. As uid 1000, exec gives
    // permitted = effective = ambient.
    assert_eq!(
        out,
        "CapInh:\t0000000000000400\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000400\n\
         CapBnd:\t0000000000000421\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\n"
    );
}

#[test]
fn root_only_stdio_reaches_the_workload() {
    let _g = serial();
    let fx = busybox_rootfs();
    assert_eq!(
        run_ok(&spec(&["ls", "/proc/self/fd"]), &fx.rootfs),
        "0\n1\n2\n3\n"
    );
}

#[test]
fn root_dropping_created_makes_the_init_exit() {
    let _g = serial();
    let fx = busybox_rootfs();
    let (created, _pipes) = no_mount_leak(fx.dir.path(), || {
        create(&spec(&["sh", "-c", "echo never"]), &fx.rootfs)
    })
    .expect("create");
    let pid = created.pid();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "init is alive before drop"
    );
    drop(created);
    match wait_exit(pid, Duration::from_secs(10)) {
        WaitStatus::Exited(_, 1) => {}
        other => panic!("init should _exit(1) on barrier EOF, got {other:?}"),
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "init is gone"
    );
}

#[test]
fn root_exec_failure_is_reported_by_start() {
    let _g = serial();
    let fx = busybox_rootfs();
    let bogus = fx.rootfs.join("bin/bogus");
    fs::write(&bogus, [0u8, 1, 2, 3]).expect("write");
    fs::set_permissions(&bogus, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (created, _pipes) =
        create(&spec(&["bogus"]), &fx.rootfs).expect("create succeeds: the file exists");
    let pid = created.pid();
    let err = created
        .start()
        .expect_err("exec of a non-executable format fails");
    assert!(err.to_string().starts_with("start: execve"), "{err}");
    assert!(err.to_string().contains("ENOEXEC"), "{err}");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 127)
    ));
}

#[test]
fn root_negative_oom_score_adj_is_a_clear_error() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["true"]);
    s["process"]["args"] = json!(["sh", "-c", "cat /proc/self/oom_score_adj"]);
    s["process"]["oomScoreAdj"] = json!(-999);
    let host_has = caps::has_cap(
        None,
        caps::CapSet::Bounding,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .expect("caps");
    let result = run(&s, &fx.rootfs);
    if host_has {
        assert_eq!(result.expect("runs").stdout, "-999\n");
    } else {
        let err = result.expect_err("EACCES without CAP_SYS_RESOURCE");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert_eq!(
            err.to_string(),
            "cannot set oom_score_adj to -999: lowering oom_score_adj needs CAP_SYS_RESOURCE, \
             which this host lacks (not in its capability bounding set)"
        );
    }
    // A positive value always works.
    s["process"]["oomScoreAdj"] = json!(500);
    assert_eq!(run_ok(&s, &fx.rootfs), "500\n");
}

#[test]
fn root_rlimits_and_raising_hard_limits() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}]);
    assert_eq!(run_ok(&s, &fx.rootfs), "512\n768\n");

    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let host_has = caps::has_cap(
        None,
        caps::CapSet::Bounding,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .expect("caps");
    assert!(
        !host_has,
        "this test expects a host without CAP_SYS_RESOURCE (see spec/this-machine.md)"
    );
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]);
    let err = run(&s, &fx.rootfs).expect_err("raising the hard limit fails");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot set RLIMIT_NOFILE to soft=1024 hard={}: raising the hard limit above the \
             current {hard} needs CAP_SYS_RESOURCE, which this host lacks (not in its capability \
             bounding set)",
            hard + 1
        )
    );
}

#[test]
fn root_user_namespace_with_id_maps() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$"]);
    s["linux"]["namespaces"] = json!([{"type": "user"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]);
    s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    chown_tree(&fx.rootfs, 100000, 100000);
    let out = no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(lines[2], "1");
}

#[test]
fn root_cgroup_mount_shows_hierarchies() {
    let _g = serial();
    let fx = busybox_rootfs();
    let out = run_ok(
        &spec(&[
            "sh",
            "-c",
            "ls /sys/fs/cgroup; touch /sys/fs/cgroup/x 2>/dev/null || echo ro",
        ]),
        &fx.rootfs,
    );
    assert!(out.lines().any(|l| l == "memory"), "{out}");
    assert!(out.lines().any(|l| l == "ro"), "{out}");
}

#[test]
fn root_joined_namespace_of_wrong_type_is_rejected() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["true"]);
    s["linux"]["namespaces"] =
        json!([{"type": "mount"}, {"type": "network", "path": "/proc/self/ns/uts"}]);
    s.as_object_mut().expect("object").remove("hostname");
    let err = create(&s, &fx.rootfs).expect_err("uts file given as net namespace");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("is not a net namespace"), "{err}");
}

#[test]
fn root_joined_network_namespace_is_shared() {
    let _g = serial();
    let fx = busybox_rootfs();
    // A first container keeps its network namespace; a second one joins it by path.
    let (first, _p) = create(&spec(&["sh", "-c", "sleep 30"]), &fx.rootfs).expect("create first");
    let first_pid = first.pid();
    let first_net = fs::read_link(format!("/proc/{first_pid}/ns/net")).expect("readlink ns");
    let mut s = spec(&["readlink", "/proc/self/ns/net"]);
    s["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "pid"}, {"type": "network", "path": format!("/proc/{first_pid}/ns/net")}]);
    s.as_object_mut().expect("object").remove("hostname");
    let out = run_ok(&s, &fx.rootfs);
    assert_eq!(out.trim(), first_net.to_string_lossy());
    drop(first);
    assert!(matches!(
        wait_exit(first_pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 1)
    ));
}

#[test]
fn root_join_cgroup_runs_before_the_namespaces() {
    let _g = serial();
    let fx = busybox_rootfs();
    let cg = std::path::PathBuf::from(format!(
        "/sys/fs/cgroup/pids/amphi-launch-test-{}",
        std::process::id()
    ));
    fs::create_dir_all(&cg).expect("create a v1 pids cgroup (cgroup v1 host)");
    let (io, pipes) = io_with_pipes();
    let s = spec(&[
        "sh",
        "-c",
        "grep pids /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max",
    ]);
    fs::write(cg.join("pids.max"), "42").expect("pids.max");
    let created = amphi_linux_executor::launch::create(exe(), &plan(&s, &fx.rootfs), io, &|pid| {
        fs::write(cg.join("cgroup.procs"), pid.to_string())
    })
    .expect("create");
    let pid = created.pid();
    let host_view = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("init cgroup");
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 0)
    ));
    let out = read_all(pipes.stdout);
    fs::remove_dir(&cg).expect("remove test cgroup");
    assert!(
        host_view.contains(&format!(":pids:/amphi-launch-test-{}", std::process::id())),
        "{host_view}"
    );
    // No cgroup namespace: the path is the host's; the container sees its own cgroup's files.
    assert!(
        out.contains(&format!(":pids:/amphi-launch-test-{}", std::process::id())),
        "{out}"
    );
    assert!(out.ends_with("42\n"), "{out}");
}

#[test]
fn root_new_namespaces_differ_from_the_host() {
    let _g = serial();
    let fx = busybox_rootfs();
    let kinds = ["ipc", "uts", "net", "mnt", "pid", "cgroup", "time"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let mut s = spec(&["sh", "-c", &script]);
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
        {"type": "network"}, {"type": "cgroup"}, {"type": "time"}]);
    let out = no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs));
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out}");
    for (kind, line) in kinds.iter().zip(inside) {
        let host = fs::read_link(format!("/proc/self/ns/{kind}")).expect("host ns");
        assert!(line.starts_with(&format!("{kind}:[")), "{line}");
        assert_ne!(
            line,
            host.to_string_lossy(),
            "{kind} namespace should be new"
        );
    }
}

#[test]
fn root_cgroup_namespace_roots_the_hierarchies() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&[
        "sh",
        "-c",
        "grep -E ':(memory|pids):' /proc/self/cgroup; ls /sys/fs/cgroup/pids/cgroup.procs",
    ]);
    s["linux"]["namespaces"] =
        json!([{"type": "pid"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}]);
    let out = run_ok(&s, &fx.rootfs);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].ends_with(":/") && lines[1].ends_with(":/"),
        "{out}"
    );
    assert_eq!(lines[2], "/sys/fs/cgroup/pids/cgroup.procs");
}

#[test]
fn root_sysctls_and_domainname() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&[
        "sh",
        "-c",
        "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname",
    ]);
    s["linux"]["sysctl"] = json!({"kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1"});
    s["domainname"] = json!("example.test");
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl");
    let host_domain = fs::read_to_string("/proc/sys/kernel/domainname").expect("host domainname");
    assert_eq!(run_ok(&s, &fx.rootfs), "1\n1\nexample.test\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl"),
        host_forward
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/domainname").expect("host"),
        host_domain
    );
}

#[test]
fn root_spec_devices_and_unavailable_capabilities() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["stat", "-c", "%F %t:%T %a %u", "/dev/fuse"]);
    s["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 384, "uid": 7, "gid": 0}]);
    s["process"]["capabilities"]["bounding"] = json!(["CAP_CHOWN", "CAP_SYS_RESOURCE"]);
    s["process"]["capabilities"]["effective"] = json!(["CAP_CHOWN", "CAP_SYS_RESOURCE"]);
    s["process"]["capabilities"]["permitted"] = json!(["CAP_CHOWN", "CAP_SYS_RESOURCE"]);
    let (created, pipes) = create(&s, &fx.rootfs).expect("create");
    let host_has = caps::has_cap(
        None,
        caps::CapSet::Bounding,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .expect("caps");
    let warned = created
        .warnings()
        .iter()
        .any(|w| w.contains("CAP_SYS_RESOURCE is not available"));
    assert_eq!(warned, !host_has, "{:?}", created.warnings());
    let pid = created.pid();
    created.start().expect("start");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 0)
    ));
    assert_eq!(
        read_all(pipes.stdout),
        "character special file a:e5 600 7\n"
    );
}

#[test]
fn root_failed_join_cgroup_kills_the_helper() {
    let _g = serial();
    let fx = busybox_rootfs();
    let helper = std::cell::Cell::new(0);
    let (io, _pipes) = io_with_pipes();
    let err = amphi_linux_executor::launch::create(
        exe(),
        &plan(&spec(&["true"]), &fx.rootfs),
        io,
        &|pid| {
            helper.set(pid);
            Err(std::io::Error::from_raw_os_error(libc::EACCES))
        },
    )
    .expect_err("join_cgroup failure is fatal");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "place init helper (pid {}) in its cgroup",
            helper.get()
        )),
        "{err}"
    );
    match wait_exit(helper.get(), Duration::from_secs(10)) {
        WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _) => {}
        other => panic!("helper should be killed, got {other:?}"),
    }
}

#[test]
fn root_missing_namespace_path_is_not_found() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["true"]);
    s["linux"]["namespaces"] =
        json!([{"type": "mount"}, {"type": "network", "path": "/run/netns/amphi-does-not-exist"}]);
    s.as_object_mut().expect("object").remove("hostname");
    let err = create(&s, &fx.rootfs).expect_err("no such netns");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("/run/netns/amphi-does-not-exist"),
        "{err}"
    );
}

#[test]
fn root_symlinked_mount_target_stays_inside_the_rootfs() {
    let _g = serial();
    let fx = busybox_rootfs();
    let host_dir = tempfile::tempdir().expect("tempdir");
    // The image's /proc points far up and then at a host directory; resolved inside the
    // rootfs it must land in the rootfs' copy of that path, never on the host one.
    let escape = format!("../../../../../../../..{}", host_dir.path().display());
    std::os::unix::fs::symlink(&escape, fx.rootfs.join("proc")).expect("symlink");
    let inside = fx
        .rootfs
        .join(host_dir.path().strip_prefix("/").expect("absolute"));
    fs::create_dir_all(&inside).expect("mkdir inside rootfs");
    let s = spec(&["sh", "-c", "ls /proc/ | grep -c '^self$'"]);
    let out = no_mount_leak(host_dir.path(), || run_ok(&s, &fx.rootfs));
    assert_eq!(out, "1\n");
    assert!(
        fs::read_dir(host_dir.path())
            .expect("read host dir")
            .next()
            .is_none(),
        "host dir untouched"
    );
}

#[test]
fn root_unknown_sysctl_is_invalid() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["true"]);
    s["linux"]["sysctl"] = json!({"kernel.amphi_no_such_knob": "1"});
    let err = create(&s, &fx.rootfs).expect_err("unknown sysctl");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("kernel.amphi_no_such_knob"),
        "{err}"
    );
}

#[test]
fn root_shared_rootfs_propagation_does_not_leak_mounts_to_the_host() {
    let _g = serial();
    let fx = busybox_rootfs();
    let root_line = "grep -E '^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ / ' /proc/self/mountinfo";
    let mut s = spec(&["sh", "-c", root_line]);
    s["linux"]["rootfsPropagation"] = json!("rshared");
    // `run` checks the host's mounts below the fixture before and after.
    let shared = run_ok(&s, &fx.rootfs);
    assert!(shared.contains(" shared:"), "{shared}");
    s["linux"]["rootfsPropagation"] = json!("private");
    let private = run_ok(&s, &fx.rootfs);
    assert!(
        !private.contains("shared:") && !private.contains("master:"),
        "{private}"
    );
}
