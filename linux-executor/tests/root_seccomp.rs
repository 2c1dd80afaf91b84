//! Root integration tests of the seccomp filter through `launch` + `init` (no shim): the
//! workload runs filtered with and without no_new_privileges, the filter is in place before
//! `execve`, and a profile libseccomp refuses fails `Create`. They panic (never skip) when
//! not run as root.

mod common;

use std::time::Duration;

use amphi_linux_executor::launch::ErrorKind;
use common::*;
use nix::sys::wait::WaitStatus;
use serde_json::json;

/// mkdir gets EOPNOTSUPP; everything else runs.
fn mkdir_profile() -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}]
    })
}

#[test]
fn root_workload_runs_filtered_with_and_without_nnp() {
    let _g = serial();
    let fx = busybox_rootfs();
    for nnp in [true, false] {
        let mut s = spec(&[
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; mkdir /tmp/x 2>/dev/null; echo mkdir=$?",
        ]);
        s["process"]["noNewPrivileges"] = json!(nnp);
        s["linux"]["seccomp"] = mkdir_profile();
        let out = no_mount_leak(fx.dir.path(), || run_ok(&s, &fx.rootfs));
        assert_eq!(out, "Seccomp:\t2\nmkdir=1\n", "noNewPrivileges={nnp}");
    }
}

#[test]
fn root_the_filter_is_loaded_before_execve() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sh", "-c", "exit 0"]);
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let (created, _pipes) = create(&s, &fx.rootfs).expect("create: nothing is loaded yet");
    let pid = created.pid();
    let err = created
        .start()
        .expect_err("execve is refused by the filter");
    assert!(err.to_string().contains("execve"), "{err}");
    assert!(err.to_string().contains("EPERM"), "{err}");
    assert!(matches!(
        wait_exit(pid, Duration::from_secs(10)),
        WaitStatus::Exited(_, 127)
    ));
}

#[test]
fn root_a_profile_libseccomp_refuses_fails_create() {
    let _g = serial();
    let fx = busybox_rootfs();
    let mut s = spec(&["sh", "-c", "exit 0"]);
    // A valid OCI architecture that Debian 12's libseccomp (2.5.4) does not know yet.
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_LOONGARCH64"],
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]
    });
    let err = create(&s, &fx.rootfs).expect_err("unsupported architecture");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string()
            .starts_with("linux.seccomp: architecture ScmpArchLoongarch64"),
        "{err}"
    );
}
