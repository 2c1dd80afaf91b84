//! seccomp and no_new_privileges, attacked from inside containers with the syscall probe
//! (`tests/fixtures/probe/probe.c`, `/probe` in the busybox image).
//!
//! - containerd's default profile (`ctr run --seccomp`): `Seccomp: 2`, `unshare(CLONE_NEWUSER)`,
//!   `keyctl`, `personality(ADDR_NO_RANDOMIZE)`, `mount`, `userfaultfd`, `perf_event_open`
//!   fail with EPERM while a normal workload runs, with and without no_new_privileges; an
//!   exec gets the container's filter too. Catches: the filter not loaded (init or exec).
//! - a custom profile with argument conditions and errnos: the matching call gets the errno,
//!   the non-matching one runs. Catches: conditions or errnos not compiled as written.
//! - ENOSYS for syscalls newer than a default-errno profile (`clone3`, nr 1000), EPERM for
//!   an old syscall it does not allow. Catches: the ENOSYS stub missing.
//! - NNP: a setuid-root copy of the probe run by uid 1000 gains no euid 0 (control: it does
//!   with `--allow-new-privs`). Catches: `PR_SET_NO_NEW_PRIVS` not set.
//! - a Wasm container with `--seccomp` runs its module, and its PID 1 shows `Seccomp: 2`
//!   on the host. Catches: the Wasm process left unfiltered.

use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, Output, e2e_test};

/// `EPERM`, `EACCES`, `EFAULT`, `EINVAL`, `ENOSYS`, `EOPNOTSUPP` as the probe prints them.
const EPERM: &str = "1";
const EACCES: &str = "13";
const EFAULT: &str = "14";
const EINVAL: &str = "22";
const ENOSYS: &str = "38";
const EOPNOTSUPP: &str = "95";

/// The `<label> errno=<n>` lines of a script run by `sh -c`, as (label, errno).
fn errnos(out: &Output) -> Vec<(String, String)> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let (label, rest) = l.split_once(' ')?;
            let n = rest.trim().strip_prefix("errno=")?;
            Some((label.to_string(), n.to_string()))
        })
        .collect()
}

#[track_caller]
fn assert_errno(d: &Containerd, out: &Output, label: &str, want: &str) {
    let got = errnos(out);
    let found = got
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, n)| n.as_str());
    assert_eq!(
        found,
        Some(want),
        "{}: {label}: expected errno={want}:\n{out}",
        d.version()
    );
}

/// A script printing `<label> errno=<n>` for each probe call.
fn script(calls: &[(&str, &str)]) -> String {
    calls
        .iter()
        .map(|(label, args)| format!("echo {label} $(/probe {args})"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The blocked calls of containerd's default profile (without extra capabilities).
const DEFAULT_BLOCKED: &[(&str, &str)] = &[
    ("unshare_user", "unshare 0x10000000"),
    ("keyctl", "keyctl"),
    ("personality", "personality 0x0040000"),
    ("mount", "mount-tmpfs /tmp"),
    ("userfaultfd", "userfaultfd"),
    ("perf_event_open", "perf-event-open"),
];

e2e_test!(
    default_profile_blocks_and_allows,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("sdef");
        let cmd = format!(
            "grep Seccomp: /proc/self/status; {}; echo data > /tmp/f && cat /tmp/f && ls / >/dev/null && echo workload-ok",
            script(DEFAULT_BLOCKED)
        );
        let out = d.run_rm(&id, &["--seccomp"], &["sh", "-c", &cmd]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
            "{}: the container is not in seccomp filter mode:\n{out}",
            d.version()
        );
        for (label, _) in DEFAULT_BLOCKED {
            assert_errno(d, &out, label, EPERM);
        }
        assert!(
            out.stdout.contains("data\n") && out.stdout.contains("workload-ok"),
            "{}: a normal workload failed under the default profile:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    default_profile_without_nnp,
    [v1_6, v2_1],
    |d: &Containerd| {
        // Without no_new_privileges the filter is loaded before the identity switch (it needs
        // CAP_SYS_ADMIN then); the container must be just as filtered.
        let id = d.new_id("snonnp");
        let cmd = format!("/probe seccomp; {}", script(DEFAULT_BLOCKED));
        let out = d.run_rm(
            &id,
            &["--seccomp", "--allow-new-privs"],
            &["sh", "-c", &cmd],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
            "{}: the container is not in seccomp filter mode:\n{out}",
            d.version()
        );
        for (label, _) in DEFAULT_BLOCKED {
            assert_errno(d, &out, label, EPERM);
        }
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    exec_gets_the_containers_filter,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("sexec");
        d.run_detached(&id, &["--seccomp"], &["sleep", "1000"]);
        let cmd = format!("/probe seccomp; {}", script(&[("keyctl", "keyctl")]));
        let out = d.ctr(&["tasks", "exec", "--exec-id", "probe", &id, "sh", "-c", &cmd]);
        assert_eq!(out.code(), Some(0), "{}: exec:\n{out}", d.version());
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
            "{}: the exec is not filtered:\n{out}",
            d.version()
        );
        assert_errno(d, &out, "keyctl", EPERM);
        d.kill_and_remove(&id, "SIGKILL");
        d.assert_no_leaks(&id);
    }
);

/// Writes `profile` into the daemon's directory and returns its path.
fn write_profile(d: &Containerd, name: &str, profile: &serde_json::Value) -> String {
    let path = d.dir().join(format!("{name}.json"));
    std::fs::write(&path, profile.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

e2e_test!(
    custom_profile_with_argument_conditions,
    [v1_6, v2_1],
    |d: &Containerd| {
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95,
                 "args": [{"index": 0, "value": 0xffff_ffffu32, "op": "SCMP_CMP_EQ"}]},
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "value": 0x1000_0000, "valueTwo": 0x1000_0000,
                           "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        });
        let path = write_profile(d, "conditions", &profile);
        let id = d.new_id("scond");
        let cmd = script(&[
            ("personality_query", "personality 0xffffffff"),
            ("personality_linux", "personality 0"),
            ("unshare_user_ns", "unshare 0x10000000"),
            ("unshare_user_and_uts", "unshare 0x14000000"),
            ("unshare_nothing", "unshare 0"),
        ]);
        let out = d.run_rm(
            &id,
            &["--seccomp", "--seccomp-profile", &path],
            &["sh", "-c", &cmd],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_errno(d, &out, "personality_query", EOPNOTSUPP);
        assert_errno(d, &out, "personality_linux", "0");
        assert_errno(d, &out, "unshare_user_ns", EACCES);
        assert_errno(d, &out, "unshare_user_and_uts", EACCES);
        assert_errno(d, &out, "unshare_nothing", "0");
        d.assert_no_leaks(&id);
    }
);

e2e_test!(newer_syscalls_get_enosys, [v1_6, v2_1], |d: &Containerd| {
    // Enough for the static probe to start, print and exit; rseq (334) is the highest
    // number named, so clone3 (435) and 1000 are "newer than the profile".
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{
            "names": ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list",
                      "rseq", "prlimit64", "readlink", "readlinkat", "getrandom", "mprotect",
                      "mmap", "munmap", "uname", "write", "writev", "exit", "exit_group",
                      "fstat", "newfstatat", "ioctl", "futex", "rt_sigprocmask",
                      "rt_sigaction", "sendmsg", "sendto"],
            "action": "SCMP_ACT_ALLOW"
        }]
    });
    let path = write_profile(d, "enosys", &profile);
    let opts = ["--seccomp", "--seccomp-profile", path.as_str()];
    for (what, args, want) in [
        ("clone3", &["/probe", "clone3"][..], ENOSYS),
        ("syscall 1000", &["/probe", "syscall", "1000"][..], ENOSYS),
        // mkdir (83) is older than rseq and not allowed: the default errno. Allowed, a
        // NULL path would be EFAULT.
        ("mkdir(NULL)", &["/probe", "syscall", "83"][..], EPERM),
    ] {
        let id = d.new_id("senosys");
        let out = d.run_rm(&id, &opts, args);
        assert_eq!(out.code(), Some(0), "{}: {what}:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            format!("errno={want}"),
            "{}: {what}: expected errno={want} (EFAULT {EFAULT} / EINVAL {EINVAL} mean unfiltered):\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
});

e2e_test!(
    no_new_privileges_stops_setuid,
    [v1_6, v2_1],
    |d: &Containerd| {
        let cmd = ["/probe", "setuid", "1000", "/probe-suid", "ids"];
        // ctr sets noNewPrivileges unless --allow-new-privs.
        let id = d.new_id("snnp");
        let out = d.run_rm(&id, &[], &cmd);
        assert_eq!(out.code(), Some(0), "{}: with NNP:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            "uid=1000 euid=1000 gid=1000 egid=1000",
            "{}: the setuid binary gained privileges despite no_new_privileges:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);

        // Control: without NNP the same binary does become euid 0.
        let id = d.new_id("snonnp");
        let out = d.run_rm(&id, &["--allow-new-privs"], &cmd);
        assert_eq!(out.code(), Some(0), "{}: without NNP:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            "uid=1000 euid=0 gid=1000 egid=1000",
            "{}: control: the setuid bit did not work without no_new_privileges:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(wasm_process_is_filtered, [v1_6, v2_1], |d: &Containerd| {
    let hello = d.import_wasm("hello", &fixture("hello"), &WasmImageSpec::default());
    let id = d.new_id("swhello");
    let out = d.run_image_rm(&id, &["--seccomp"], &hello, &[]);
    assert_eq!(out.code(), Some(0), "{}: hello:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "hello from wasm",
        "{}: the guest's output under the default profile:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);

    let sleep = d.import_wasm("sleep", &fixture("sleep"), &WasmImageSpec::default());
    let id = d.new_id("swsleep");
    let row = d.run_image_detached(&id, &["--seccomp"], &sleep, &[]);
    let status_path = format!("/proc/{}/status", row.pid);
    let status =
        std::fs::read_to_string(&status_path).unwrap_or_else(|e| panic!("read {status_path}: {e}"));
    let seccomp_line = status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .unwrap_or("no Seccomp line");
    assert!(
        seccomp_line.split_whitespace().eq(["Seccomp:", "2"]),
        "{}: the Wasm PID 1 (host pid {}) is not filtered: {seccomp_line}",
        d.version(),
        row.pid
    );
    d.kill_and_remove(&id, "SIGKILL");
    d.assert_no_leaks(&id);
});
