//! The drivers on the real host. Needs root: the test fails loudly without it (design
//! habit 9: root tests are never skipped silently; CI runs as root).
//!
//! On the CI host these drive cgroup v1 (a hybrid host); tests/run.sh runs them again in a
//! pure cgroup v2 guest (tests/vm), where the same tests drive the v2 driver for real.

use std::{
    io::Write,
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use serde_json::json;

use super::resources;
use crate::cgroup::{Cgroup, CgroupRoot, CgroupVersion, parse_cgroups_path};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates real cgroups under /sys/fs/cgroup); run the \
         test suite as root"
    );
}

#[test]
fn root_real_cgroup_lifecycle() {
    require_root();
    let root = CgroupRoot::detect().unwrap();
    assert_eq!(
        root.is_v2(),
        sys_fs_cgroup_is_cgroup2(),
        "the detected layout disagrees with /proc/self/mountinfo"
    );
    let path = parse_cgroups_path(&format!("/amphi-test-{}", std::process::id()), "x").unwrap();
    let r = resources(json!({
        "memory": {"limit": 64 << 20},
        "pids": {"limit": 16}
    }));
    let cg = Cgroup::create(&root, &path, Some(&r)).unwrap();
    let dirs = cg.dirs();
    assert!(!dirs.is_empty());
    let mut guard = CleanupGuard(Some(cg.clone()));

    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    cg.add_pid(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), [pid]);

    let s = cg.stats().unwrap();
    assert_eq!(
        s.version,
        if root.is_v2() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    );
    assert_eq!(s.memory.usage.limit, 64 << 20);
    assert_eq!(s.pids.limit, 16);
    assert_eq!(s.pids.current, 1);

    cg.freeze().unwrap();
    cg.thaw().unwrap();
    cg.kill_all(libc::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    cg.remove().unwrap();
    guard.0 = None;
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// A process over its memory limit is OOM-killed, the OOM watch (v1 eventfd, v2 inotify on
/// `memory.events`) reports the kill, the stats count it, and an update of the limit lands.
#[test]
fn root_real_cgroup_oom_kill_is_reported_and_limits_update() {
    require_root();
    let root = CgroupRoot::detect().unwrap();
    let path = parse_cgroups_path(&format!("/amphi-test-oom-{}", std::process::id()), "x").unwrap();
    let r = resources(json!({"memory": {"limit": 32 << 20, "swap": 32 << 20}}));
    let cg = Cgroup::create(&root, &path, Some(&r)).unwrap();
    let mut guard = CleanupGuard(Some(cg.clone()));
    let mut watch = cg.watch_oom().unwrap().expect("a memory controller");

    // The child waits on stdin until it is in the cgroup, then allocates and fills 64 MiB.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read -r go && exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cg.add_pid(i32::try_from(child.id()).unwrap()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    let mut kills = 0;
    while kills == 0 {
        let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(60_000u16)).unwrap();
        assert_eq!(n, 1, "the OOM watch did not become readable within 60 s");
        match watch.on_readable().unwrap() {
            crate::cgroup::OomPoll::Kills(k) => kills += k,
            crate::cgroup::OomPoll::Gone => panic!("the cgroup vanished"),
        }
    }
    assert!(cg.stats().unwrap().memory.events.oom_kill >= 1);

    cg.apply(&resources(
        json!({"memory": {"limit": 128 << 20, "swap": 128 << 20}}),
    ))
    .unwrap();
    assert_eq!(cg.stats().unwrap().memory.usage.limit, 128 << 20);

    cg.remove().unwrap();
    guard.0 = None;
}

/// Whether `/sys/fs/cgroup` itself is a cgroup2 mount (a pure v2 host).
fn sys_fs_cgroup_is_cgroup2() -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        left.split(' ').nth(4) == Some("/sys/fs/cgroup") && right.starts_with("cgroup2 ")
    })
}

/// Removes the test cgroup even when an assertion failed half-way.
struct CleanupGuard(Option<Cgroup>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.remove();
        }
    }
}
