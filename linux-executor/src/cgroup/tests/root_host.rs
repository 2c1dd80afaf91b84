//! The drivers on the real host. Needs root: the test fails loudly without it (design
//! habit 9: root tests are never skipped silently; CI runs as root).

use std::process::Command;

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
