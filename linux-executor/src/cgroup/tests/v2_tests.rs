//! The v2 driver against a fake unified tree: the only coverage v2 gets on v1 CI hosts.

use std::{fs, time::Duration};

use serde_json::json;

use super::{
    Sleeper,
    fake::{FakeV2, V2_CONTROLLERS},
    resources,
};
use crate::cgroup::{
    Cgroup, CgroupError, CgroupErrorKind, CgroupPath, CgroupVersion, IoDeviceStats, OomPoll,
    parse_cgroups_path,
};

const MIB: i64 = 1 << 20;
const REL: &str = "kubepods/pod1/ctr";

fn cgroup_path() -> CgroupPath {
    parse_cgroups_path(&format!("/{REL}"), "ctr").unwrap()
}

#[test]
fn create_enables_controllers_top_down_and_applies_converted_values() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let r = resources(json!({
        "memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 96 * MIB},
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": -1},
        "blockIO": {"weight": 1000, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "unified": {"memory.high": "50000000"}
    }));
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), Some(&r)).unwrap();
    assert!(cg.is_v2());
    let all: Vec<String> = V2_CONTROLLERS
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    let all = all.join(" ");
    assert_eq!(
        fs::read_to_string(fake.path("cgroup.subtree_control")).unwrap(),
        all
    );
    assert_eq!(fake.read("kubepods", "cgroup.subtree_control"), all);
    assert_eq!(fake.read("kubepods/pod1", "cgroup.subtree_control"), all);
    // The leaf does not delegate further.
    assert_eq!(fake.read(REL, "cgroup.subtree_control"), "");
    let f = |file| fake.read(REL, file);
    assert_eq!(f("memory.max"), (64 * MIB).to_string());
    assert_eq!(f("memory.swap.max"), (32 * MIB).to_string());
    assert_eq!(f("memory.low"), (32 * MIB).to_string());
    assert_eq!(f("cpu.weight"), "39");
    assert_eq!(f("cpu.max"), "50000 200000");
    assert_eq!(f("cpuset.cpus"), "0-1");
    assert_eq!(f("cpuset.mems"), "0");
    assert_eq!(f("pids.max"), "max");
    assert_eq!(f("io.weight"), "10000");
    assert_eq!(f("io.max"), "8:0 rbps=1048576");
    assert_eq!(f("hugetlb.2MB.max"), "4194304");
    assert_eq!(f("memory.high"), "50000000");
    // Unrequested values are untouched.
    assert_eq!(f("cgroup.freeze"), "0\n");
    assert_eq!(f("hugetlb.1GB.max"), "max\n");
}

#[test]
fn a_lone_quota_or_period_keeps_the_other_half_of_cpu_max() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    cg.apply(&resources(json!({"cpu": {"quota": 25000}})))
        .unwrap();
    assert_eq!(fake.read(REL, "cpu.max"), "25000 100000");
    cg.apply(&resources(json!({"cpu": {"period": 50000}})))
        .unwrap();
    assert_eq!(fake.read(REL, "cpu.max"), "25000 50000");
    cg.apply(&resources(json!({"cpu": {"quota": -1}}))).unwrap();
    assert_eq!(fake.read(REL, "cpu.max"), "max 50000");
}

/// A fake tree cannot hold eBPF programs: the device program is generated (so bad rules
/// still fail) but not attached. `root_devices` covers the attach on the real kernel.
#[test]
fn device_rules_on_a_fake_tree_are_checked_but_not_attached() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let ok = resources(json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]}));
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), Some(&ok)).unwrap();
    let bad = resources(json!({"devices": [{"allow": true, "type": "c", "access": "rwx"}]}));
    let err = cg.apply(&bad).unwrap_err();
    assert_eq!(err.kind(), CgroupErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("rwx"), "{err}");
}

#[test]
fn bfq_weight_takes_the_blkio_value_unconverted() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    fake.set(REL, "io.bfq.weight", "default 100\n");
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    cg.apply(&resources(json!({"blockIO": {"weight": 500}})))
        .unwrap();
    assert_eq!(fake.read(REL, "io.bfq.weight"), "500");
    assert_eq!(fake.read(REL, "io.weight"), "default 100\n");
}

#[test]
fn v2_rejects_what_it_cannot_express_and_missing_files() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    let kind = |json| cg.apply(&resources(json)).unwrap_err().kind();
    assert_eq!(
        kind(json!({"cpu": {"realtimeRuntime": 950000}})),
        CgroupErrorKind::Unsupported
    );
    assert_eq!(
        kind(json!({"network": {"classID": 1}})),
        CgroupErrorKind::Unsupported
    );
    assert_eq!(
        kind(json!({"memory": {"swap": 1024}})),
        CgroupErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(json!({"unified": {"../x": "1"}})),
        CgroupErrorKind::InvalidArgument
    );
    fs::remove_file(fake.path(REL).join("pids.max")).unwrap();
    let err = cg
        .apply(&resources(json!({"pids": {"limit": 3}})))
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::Unsupported { file, .. } if file.ends_with("pids.max")),
        "{err}"
    );
    // Ignored with a warning (as crun does): no v2 equivalent.
    cg.apply(&resources(
        json!({"memory": {"swappiness": 10}, "devices": [{"allow": false, "access": "rwm"}]}),
    ))
    .unwrap();
}

#[test]
fn a_failed_create_removes_the_directories_it_made() {
    let fake = FakeV2::new();
    // No leaf files: the kernel would have made them, the fake did not, so pids.max is
    // missing and the create must fail and clean up.
    let r = resources(json!({"pids": {"limit": 3}}));
    let err = Cgroup::create(&fake.root(), &cgroup_path(), Some(&r)).unwrap_err();
    assert_eq!(err.kind(), CgroupErrorKind::Unsupported);
    assert!(!fake.path("kubepods").exists());
}

#[test]
fn stats_read_the_unified_files() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    fake.set(REL, "pids.max", "64\n");
    fake.set(REL, "memory.max", "67108864\n");
    let s = Cgroup::load(&fake.root(), &cgroup_path()).stats().unwrap();
    assert_eq!(s.version, CgroupVersion::V2);
    assert_eq!(s.cpu.usage_total_ns, 2_500_000_000);
    assert_eq!(s.cpu.usage_user_ns, 1_500_000_000);
    assert_eq!(s.cpu.usage_kernel_ns, 1_000_000_000);
    assert!(s.cpu.per_cpu_ns.is_empty());
    assert_eq!(
        (
            s.cpu.nr_periods,
            s.cpu.nr_throttled,
            s.cpu.throttled_time_ns
        ),
        (40, 4, 123_000)
    );
    assert_eq!((s.cpu.nr_bursts, s.cpu.burst_time_ns), (3, 45_000));
    let m = &s.memory;
    assert_eq!(
        (m.usage.usage, m.usage.limit, m.usage.max_usage),
        (10_485_760, 67_108_864, 12_000_000)
    );
    assert_eq!((m.swap.usage, m.swap.limit), (4096, u64::MAX));
    assert_eq!(m.stat("inactive_file"), 6_000_000);
    assert_eq!(m.stat("anon"), 2_097_152);
    assert_eq!(
        (m.events.high, m.events.max, m.events.oom, m.events.oom_kill),
        (1, 2, 3, 4)
    );
    assert_eq!((s.pids.current, s.pids.limit), (7, 64));
    assert_eq!(s.io.len(), 2);
    assert_eq!(
        s.io[1],
        IoDeviceStats {
            major: 253,
            minor: 1,
            read_bytes: 1,
            write_bytes: 2,
            read_ios: 3,
            write_ios: 4
        }
    );
}

#[test]
fn freeze_waits_for_the_kernel_to_report_frozen() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    // The fake kernel never reports "frozen 1": the freeze times out and undoes itself.
    let err = cg.freeze_within(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, CgroupError::Timeout { .. }), "{err}");
    assert_eq!(fake.read(REL, "cgroup.freeze"), "0");
    fake.set(REL, "cgroup.events", "populated 1\nfrozen 1\n");
    cg.freeze().unwrap();
    assert_eq!(fake.read(REL, "cgroup.freeze"), "1");
    cg.thaw().unwrap();
    assert_eq!(fake.read(REL, "cgroup.freeze"), "0");
    fs::remove_file(fake.path(REL).join("cgroup.freeze")).unwrap();
    assert_eq!(
        cg.freeze().unwrap_err().kind(),
        CgroupErrorKind::Unsupported
    );
}

#[test]
fn sigkill_uses_cgroup_kill_when_the_kernel_has_it() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let child = Sleeper::spawn();
    fake.set(REL, "cgroup.procs", &format!("{}\n", child.pid()));
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(fake.read(REL, "cgroup.kill"), "1");
    // cgroup.kill did the work (in a real kernel), so the process was not signalled here.
    let pid = nix::unistd::Pid::from_raw(child.pid());
    assert!(nix::sys::signal::kill(pid, None).is_ok());
}

#[test]
fn other_signals_freeze_signal_each_pid_and_thaw() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    fake.set(REL, "cgroup.events", "populated 1\nfrozen 1\n");
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let child = Sleeper::spawn();
    fake.set(REL, "cgroup.procs", &format!("{}\n", child.pid()));
    cg.kill_all(libc::SIGTERM).unwrap();
    assert_eq!(child.wait_signal(), Some(libc::SIGTERM));
    assert_eq!(fake.read(REL, "cgroup.freeze"), "0");
    assert_eq!(fake.read(REL, "cgroup.kill"), "");
}

#[test]
fn remove_and_dirs_on_v2() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    assert_eq!(cg.dirs(), [fake.path(REL)]);
    assert_eq!(cg.memory_dir(), Some(fake.path(REL)));
    assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    cg.remove().unwrap();
    assert!(!fake.path(REL).exists());
    assert!(fake.path("kubepods/pod1").exists());
    cg.remove().unwrap();
}

/// Waits (at most 300 ms) until the watch's descriptor is readable.
fn readable(watch: &crate::cgroup::OomWatch) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(300u16)).unwrap() == 1
}

#[test]
fn oom_watch_reports_growth_of_the_oom_kill_counter() {
    let fake = FakeV2::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    // The fake starts at oom_kill 4: kills before the watch are not reported.
    let mut watch = cg
        .watch_oom()
        .unwrap()
        .expect("v2 always has memory.events");
    assert!(!readable(&watch));

    // Another counter changes: the file is modified, but no kill happened.
    fake.set(
        REL,
        "memory.events",
        "low 0\nhigh 2\nmax 2\noom 3\noom_kill 4\noom_group_kill 0\n",
    );
    assert!(readable(&watch));
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Kills(0));

    fake.set(
        REL,
        "memory.events",
        "low 0\nhigh 2\nmax 5\noom 5\noom_kill 6\noom_group_kill 0\n",
    );
    assert!(readable(&watch));
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Kills(2));
    assert!(!readable(&watch), "the notification was drained");

    fake.set(
        REL,
        "memory.events",
        "low 0\nhigh 2\nmax 5\noom 6\noom_kill 7\noom_group_kill 0\n",
    );
    assert!(readable(&watch));
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Kills(1));

    // The cgroup is removed: the watch ends.
    fs::remove_dir_all(fake.path(REL)).unwrap();
    assert!(readable(&watch), "removal wakes the watch up");
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Gone);
}

#[test]
fn oom_watch_on_a_missing_cgroup_is_an_error_naming_the_file() {
    let fake = FakeV2::new();
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let err = cg.watch_oom().unwrap_err();
    assert!(err.to_string().contains("memory.events"), "{err}");
    assert!(err.is_not_found(), "{err}");
}
