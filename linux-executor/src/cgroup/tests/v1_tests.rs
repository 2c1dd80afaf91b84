//! The v1 driver against a fake v1 tree.

use std::fs;

use serde_json::json;

use super::{
    Sleeper,
    fake::{FakeV1, V1_CONTROLLERS, V1_UNLIMITED},
    resources,
};
use crate::cgroup::{
    Cgroup, CgroupErrorKind, CgroupVersion, IoDeviceStats, OomPoll, parse_cgroups_path,
};

const MIB: i64 = 1 << 20;
const REL: &str = "kubepods/pod1/ctr";

fn cgroup_path() -> crate::cgroup::CgroupPath {
    parse_cgroups_path(&format!("/{REL}"), "ctr").unwrap()
}

#[test]
fn create_writes_every_requested_value_to_its_controller() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let r = resources(json!({
        "memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 96 * MIB, "swappiness": 10},
        "cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "1", "mems": "0"},
        "pids": {"limit": 42},
        "blockIO": {"weight": 300, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    }));
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), Some(&r)).unwrap();
    assert!(!cg.is_v2());
    let mem = |f| fake.read("memory", REL, f);
    assert_eq!(mem("memory.limit_in_bytes"), (64 * MIB).to_string());
    assert_eq!(mem("memory.soft_limit_in_bytes"), (32 * MIB).to_string());
    assert_eq!(mem("memory.memsw.limit_in_bytes"), (96 * MIB).to_string());
    assert_eq!(mem("memory.swappiness"), "10");
    let cpu = |f| fake.read("cpu", REL, f);
    assert_eq!(cpu("cpu.shares"), "512");
    assert_eq!(cpu("cpu.cfs_quota_us"), "50000");
    assert_eq!(cpu("cpu.cfs_period_us"), "200000");
    assert_eq!(fake.read("cpuset", REL, "cpuset.cpus"), "1");
    assert_eq!(fake.read("cpuset", REL, "cpuset.mems"), "0");
    assert_eq!(fake.read("pids", REL, "pids.max"), "42");
    // This kernel's blkio has only the BFQ weight file.
    assert_eq!(fake.read("blkio", REL, "blkio.bfq.weight"), "300");
    assert_eq!(
        fake.read("blkio", REL, "blkio.throttle.read_bps_device"),
        "8:0 1048576"
    );
    assert_eq!(fake.read("devices", REL, "devices.deny"), "a *:* rwm");
    // The fake file keeps the last write: the default allow-list comes after the spec's
    // rules, so its last entry (pseudo-terminals) is what remains.
    assert_eq!(fake.read("devices", REL, "devices.allow"), "c 136:* rwm");
    // Unrequested values stay as the kernel set them.
    assert_eq!(fake.read("cpu", REL, "cpu.rt_runtime_us"), "0\n");
    assert_eq!(fake.read("freezer", REL, "freezer.state"), "THAWED\n");
}

#[test]
fn empty_cpusets_are_filled_from_the_parent_level_by_level() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    for rel in ["kubepods", "kubepods/pod1", REL] {
        assert_eq!(fake.read("cpuset", rel, "cpuset.cpus"), "0-1", "{rel}");
        assert_eq!(fake.read("cpuset", rel, "cpuset.mems"), "0", "{rel}");
    }
}

#[test]
fn create_makes_a_directory_in_every_hierarchy_and_remove_deletes_them() {
    let fake = FakeV1::new();
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    let dirs = cg.dirs();
    assert_eq!(dirs.len(), V1_CONTROLLERS.len());
    for c in V1_CONTROLLERS {
        let dir = fs::canonicalize(fake.path(c, REL)).unwrap();
        assert!(dirs.contains(&dir), "{c}: {dirs:?}");
    }
    assert_eq!(
        cg.memory_dir().unwrap(),
        fs::canonicalize(fake.path("memory", REL)).unwrap()
    );
    cg.remove().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{d:?} left behind");
    }
    // The pod's directory belongs to someone else.
    assert!(fake.path("memory", "kubepods/pod1").exists());
    cg.remove().unwrap();
}

#[test]
fn a_failed_create_removes_only_what_it_made() {
    let fake = FakeV1::new();
    // Only the memory hierarchy already has the cgroup; the pids one gets an empty
    // directory without pids.max, so the requested pids limit cannot be written.
    fake.leaf_in("memory", REL);
    let r = resources(json!({"pids": {"limit": 5}}));
    let err = Cgroup::create(&fake.root(), &cgroup_path(), Some(&r)).unwrap_err();
    assert_eq!(err.kind(), CgroupErrorKind::Unsupported);
    assert!(err.to_string().contains("pids.max"), "{err}");
    for c in V1_CONTROLLERS.iter().filter(|c| **c != "memory") {
        assert!(!fake.path(c, "kubepods").exists(), "{c} leaked");
    }
    assert!(fake.path("memory", REL).exists());
}

#[test]
fn requests_v1_cannot_express_are_errors() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    let unified = resources(json!({"unified": {"memory.high": "1000"}}));
    assert_eq!(
        cg.apply(&unified).unwrap_err().kind(),
        CgroupErrorKind::Unsupported
    );
    let hugepages = resources(json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}));
    let err = cg.apply(&hugepages).unwrap_err();
    assert!(err.to_string().contains("hugetlb"), "{err}");
    let low_swap = resources(json!({"memory": {"limit": 64 * MIB, "swap": 32 * MIB}}));
    assert_eq!(
        cg.apply(&low_swap).unwrap_err().kind(),
        CgroupErrorKind::InvalidArgument
    );
    let gone = Cgroup::load(&fake.root(), &parse_cgroups_path("/nope", "x").unwrap());
    assert!(gone.apply(&low_swap).unwrap_err().is_not_found());
}

#[test]
fn lifting_the_memory_limit_lifts_memsw_first() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    cg.apply(&resources(
        json!({"memory": {"limit": 64 * MIB, "swap": 64 * MIB}}),
    ))
    .unwrap();
    cg.apply(&resources(json!({"memory": {"limit": -1}})))
        .unwrap();
    assert_eq!(fake.read("memory", REL, "memory.limit_in_bytes"), "-1");
    assert_eq!(
        fake.read("memory", REL, "memory.memsw.limit_in_bytes"),
        "-1"
    );
    assert_eq!(
        fake.read("memory", REL, "memory.soft_limit_in_bytes"),
        V1_UNLIMITED
    );
}

#[test]
fn stats_read_every_v1_controller() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    fs::write(fake.path("pids", REL).join("pids.max"), "100\n").unwrap();
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let s = cg.stats().unwrap();
    assert_eq!(s.version, CgroupVersion::V1);
    assert_eq!(s.cpu.usage_total_ns, 2_500_000_000);
    // cpuacct.stat counts USER_HZ (100 per second) ticks.
    assert_eq!(s.cpu.usage_user_ns, 1_500_000_000);
    assert_eq!(s.cpu.usage_kernel_ns, 500_000_000);
    assert_eq!(s.cpu.per_cpu_ns, [1_500_000_000, 1_000_000_000]);
    assert_eq!(
        (
            s.cpu.nr_periods,
            s.cpu.nr_throttled,
            s.cpu.throttled_time_ns
        ),
        (40, 4, 123_456)
    );
    assert_eq!((s.cpu.nr_bursts, s.cpu.burst_time_ns), (2, 6789));
    let m = &s.memory;
    assert_eq!(m.usage.usage, 5_144_576);
    assert_eq!(m.usage.limit, 9_223_372_036_854_771_712);
    assert_eq!((m.usage.max_usage, m.usage.failcnt), (6_000_000, 2));
    assert_eq!((m.swap.usage, m.swap.max_usage), (5_144_577, 6_000_001));
    assert_eq!(m.kernel.usage, 300_000);
    assert_eq!(m.stat("total_inactive_file"), 3_000_000);
    assert_eq!(m.stat("pgmajfault"), 5);
    assert_eq!(m.events.oom_kill, 3);
    assert!(!m.oom_kill_disable && !m.under_oom);
    assert_eq!((s.pids.current, s.pids.limit), (3, 100));
    assert_eq!(
        s.io,
        [IoDeviceStats {
            major: 8,
            minor: 0,
            read_bytes: 8192,
            write_bytes: 4096,
            read_ios: 2,
            write_ios: 1
        }]
    );
    let gone = Cgroup::load(&fake.root(), &parse_cgroups_path("/nope", "x").unwrap());
    assert!(gone.stats().unwrap_err().is_not_found());
}

#[test]
fn unlimited_pids_read_as_zero_limit() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let s = Cgroup::load(&fake.root(), &cgroup_path()).stats().unwrap();
    assert_eq!(s.pids.limit, 0);
}

#[test]
fn add_pid_places_in_every_hierarchy_and_pids_reads_them_back() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::create(&fake.root(), &cgroup_path(), None).unwrap();
    cg.add_pid(4242).unwrap();
    for c in V1_CONTROLLERS {
        assert_eq!(fake.read(c, REL, "cgroup.procs"), "4242", "{c}");
    }
    fs::write(fake.path("pids", REL).join("cgroup.procs"), "12\n34\n").unwrap();
    assert_eq!(cg.pids().unwrap(), [12, 34]);
    fs::write(fake.path("pids", REL).join("cgroup.procs"), "12\nx\n").unwrap();
    assert!(cg.pids().is_err());
}

#[test]
fn freeze_and_thaw_drive_freezer_state() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    cg.freeze().unwrap();
    assert_eq!(fake.read("freezer", REL, "freezer.state"), "FROZEN");
    cg.thaw().unwrap();
    assert_eq!(fake.read("freezer", REL, "freezer.state"), "THAWED");
}

#[test]
fn kill_all_signals_every_listed_process_and_thaws() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let a = Sleeper::spawn();
    let b = Sleeper::spawn();
    // 999999999 is above pid_max: already gone, which kill_all must tolerate.
    let procs = format!("{}\n{}\n999999999\n", a.pid(), b.pid());
    fs::write(fake.path("pids", REL).join("cgroup.procs"), procs).unwrap();
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(a.wait_signal(), Some(libc::SIGKILL));
    assert_eq!(b.wait_signal(), Some(libc::SIGKILL));
    assert_eq!(fake.read("freezer", REL, "freezer.state"), "THAWED");
    assert_eq!(
        cg.kill_all(1234).unwrap_err().kind(),
        CgroupErrorKind::InvalidArgument
    );
}

#[test]
fn oom_watch_registers_an_eventfd_and_counts_its_wakeups() {
    use std::os::fd::AsRawFd;
    let fake = FakeV1::new();
    fake.leaf(REL);
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    let mut watch = cg
        .watch_oom()
        .unwrap()
        .expect("the memory controller is mounted");
    // The registration names the eventfd and an open memory.oom_control, as
    // "<event_fd> <fd of memory.oom_control>".
    let registration = fake.read("memory", REL, "cgroup.event_control");
    let fds: Vec<i32> = registration
        .split(' ')
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fds.len(), 2, "{registration:?}");
    assert_eq!(fds[0], watch.as_raw_fd());
    let target = fs::read_link(format!("/proc/self/fd/{}", fds[1])).unwrap();
    assert_eq!(
        target,
        fake.path("memory", REL).join("memory.oom_control"),
        "the second fd must be memory.oom_control"
    );
    // Nothing signalled yet: a spurious wake-up reports no kill.
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Kills(0));
    // Play the kernel: two OOMs signal the eventfd twice.
    let efd = watch.fd().try_clone_to_owned().unwrap();
    for _ in 0..2 {
        nix::unistd::write(&efd, &1u64.to_ne_bytes()).unwrap();
    }
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Kills(2));
    // Removing the cgroup also signals the eventfd: that is the end, not an OOM.
    nix::unistd::write(&efd, &1u64.to_ne_bytes()).unwrap();
    fs::remove_dir_all(fake.path("memory", REL)).unwrap();
    assert_eq!(watch.on_readable().unwrap(), OomPoll::Gone);
    drop(watch);
    // Every descriptor of the watch is closed with it (the clone is the only one left).
    let left: Vec<_> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .filter(|t| t.starts_with(fake.dir.path()))
        .collect();
    assert!(left.is_empty(), "descriptors left open: {left:?}");
}

#[test]
fn no_memory_controller_means_no_oom_watch() {
    let fake = FakeV1::new();
    fake.leaf(REL);
    fs::remove_dir_all(fake.dir.path().join("memory")).unwrap();
    let cg = Cgroup::load(&fake.root(), &cgroup_path());
    assert!(cg.watch_oom().unwrap().is_none());
}
