//! Fake cgroupfs trees in a temp dir, with the interface files (and sample contents) a
//! Linux 6.x kernel shows. A kernel creates these files on `mkdir`; a fake tree cannot, so
//! tests call `leaf` before `Cgroup::create` to play the kernel's part.

use std::{
    fs,
    path::{Path, PathBuf},
};

use tempfile::TempDir;

use crate::cgroup::CgroupRoot;

pub(super) const V1_UNLIMITED: &str = "9223372036854771712";

pub(super) const V1_CONTROLLERS: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
];

pub(super) const V1_MEMORY_STAT: &str = "cache 4096000\nrss 1048576\nrss_huge 0\nshmem 0\n\
mapped_file 8192\ndirty 0\nwriteback 0\nswap 0\npgpgin 300\npgpgout 100\npgfault 1234\n\
pgmajfault 5\ninactive_anon 0\nactive_anon 1048576\ninactive_file 3000000\n\
active_file 1096000\nunevictable 0\nhierarchical_memory_limit 67108864\n\
hierarchical_memsw_limit 100663296\ntotal_cache 4096000\ntotal_rss 1048576\n\
total_rss_huge 0\ntotal_mapped_file 8192\ntotal_pgfault 1234\ntotal_pgmajfault 5\n\
total_inactive_anon 0\ntotal_active_anon 1048576\ntotal_inactive_file 3000000\n\
total_active_file 1096000\ntotal_unevictable 0\n";

pub(super) const V2_MEMORY_STAT: &str = "anon 2097152\nfile 8388608\nkernel 1000\n\
kernel_stack 16384\nslab 40960\nsock 0\nshmem 0\nfile_mapped 4096\nfile_dirty 0\n\
file_writeback 0\nanon_thp 0\ninactive_anon 0\nactive_anon 2097152\ninactive_file 6000000\n\
active_file 2388608\nunevictable 0\nslab_reclaimable 20480\nslab_unreclaimable 20480\n\
pgfault 777\npgmajfault 3\nworkingset_refault_anon 1\nworkingset_refault_file 2\n\
workingset_activate_anon 0\nworkingset_activate_file 0\nworkingset_nodereclaim 0\n\
pgscan 9\npgsteal 8\npgactivate 7\npgdeactivate 6\npglazyfree 0\npglazyfreed 0\n\
thp_fault_alloc 0\nthp_collapse_alloc 0\n";

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

fn v1_files(controller: &str) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![
        ("cgroup.procs", ""),
        ("tasks", ""),
        ("notify_on_release", "0\n"),
        ("cgroup.clone_children", "0\n"),
    ];
    files.extend_from_slice(match controller {
        "cpu" => &[
            ("cpu.shares", "1024\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpu.cfs_burst_us", "0\n"),
            ("cpu.rt_period_us", "1000000\n"),
            ("cpu.rt_runtime_us", "0\n"),
            ("cpu.idle", "0\n"),
            (
                "cpu.stat",
                "nr_periods 40\nnr_throttled 4\nthrottled_time 123456\nnr_bursts 2\nburst_time 6789\n",
            ),
        ][..],
        "cpuacct" => &[
            ("cpuacct.usage", "2500000000\n"),
            ("cpuacct.stat", "user 150\nsystem 50\n"),
            ("cpuacct.usage_percpu", "1500000000 1000000000 \n"),
        ],
        "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
        "memory" => &[
            ("cgroup.event_control", ""),
            ("memory.limit_in_bytes", V1_UNLIMITED),
            ("memory.soft_limit_in_bytes", V1_UNLIMITED),
            ("memory.usage_in_bytes", "5144576\n"),
            ("memory.max_usage_in_bytes", "6000000\n"),
            ("memory.failcnt", "2\n"),
            ("memory.memsw.limit_in_bytes", V1_UNLIMITED),
            ("memory.memsw.usage_in_bytes", "5144577\n"),
            ("memory.memsw.max_usage_in_bytes", "6000001\n"),
            ("memory.memsw.failcnt", "0\n"),
            ("memory.kmem.usage_in_bytes", "300000\n"),
            ("memory.kmem.limit_in_bytes", V1_UNLIMITED),
            ("memory.kmem.max_usage_in_bytes", "310000\n"),
            ("memory.kmem.failcnt", "0\n"),
            ("memory.kmem.tcp.usage_in_bytes", "0\n"),
            ("memory.kmem.tcp.limit_in_bytes", V1_UNLIMITED),
            ("memory.kmem.tcp.max_usage_in_bytes", "0\n"),
            ("memory.kmem.tcp.failcnt", "0\n"),
            ("memory.swappiness", "60\n"),
            ("memory.stat", V1_MEMORY_STAT),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
        ],
        "devices" => &[
            ("devices.allow", ""),
            ("devices.deny", ""),
            ("devices.list", "a *:* rwm\n"),
        ],
        "freezer" => &[
            ("freezer.state", "THAWED\n"),
            ("freezer.self_freezing", "0\n"),
            ("freezer.parent_freezing", "0\n"),
        ],
        "blkio" => &[
            ("blkio.bfq.weight", "100\n"),
            ("blkio.bfq.weight_device", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.read_iops_device", ""),
            ("blkio.throttle.write_iops_device", ""),
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 8192\n8:0 Write 4096\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n\
                 8:0 Total 12288\nTotal 12288\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "8:0 Read 2\n8:0 Write 1\n8:0 Total 3\nTotal 3\n",
            ),
        ],
        "pids" => &[
            ("pids.max", "max\n"),
            ("pids.current", "3\n"),
            ("pids.events", "max 0\n"),
        ],
        _ => &[],
    });
    files
}

/// A v1 host: one directory per controller, like `/sys/fs/cgroup/<controller>`.
pub(super) struct FakeV1 {
    pub(super) dir: TempDir,
}

impl FakeV1 {
    pub(super) fn new() -> FakeV1 {
        let dir = tempfile::tempdir().unwrap();
        for c in V1_CONTROLLERS {
            write_all(&dir.path().join(c), &[("cgroup.procs", "")]);
        }
        write_all(
            &dir.path().join("cpuset"),
            &[("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")],
        );
        FakeV1 { dir }
    }

    pub(super) fn root(&self) -> CgroupRoot {
        CgroupRoot::at(self.dir.path()).unwrap()
    }

    /// `rel`'s directory in `controller`'s hierarchy.
    pub(super) fn path(&self, controller: &str, rel: &str) -> PathBuf {
        self.dir.path().join(controller).join(rel)
    }

    pub(super) fn read(&self, controller: &str, rel: &str, file: &str) -> String {
        fs::read_to_string(self.path(controller, rel).join(file)).unwrap()
    }

    /// Plays the kernel: every level of `rel` in every hierarchy, with its files.
    pub(super) fn leaf(&self, rel: &str) {
        for c in V1_CONTROLLERS {
            self.leaf_in(c, rel);
        }
    }

    /// Like `leaf`, for one hierarchy only.
    pub(super) fn leaf_in(&self, controller: &str, rel: &str) {
        let mut dir = self.dir.path().join(controller);
        for comp in rel.split('/') {
            dir.push(comp);
            write_all(&dir, &v1_files(controller));
        }
    }
}

pub(super) const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn v2_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cgroup.controllers", V2_CONTROLLERS),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cgroup.freeze", "0\n"),
        ("cgroup.kill", ""),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.max.burst", "0\n"),
        ("cpu.idle", "0\n"),
        (
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 1500000\nsystem_usec 1000000\nnr_periods 40\n\
             nr_throttled 4\nthrottled_usec 123\nnr_bursts 3\nburst_usec 45\n",
        ),
        ("cpuset.cpus", "\n"),
        ("cpuset.mems", "\n"),
        ("memory.current", "10485760\n"),
        ("memory.max", "max\n"),
        ("memory.low", "0\n"),
        ("memory.high", "max\n"),
        ("memory.peak", "12000000\n"),
        ("memory.swap.current", "4096\n"),
        ("memory.swap.max", "max\n"),
        ("memory.stat", V2_MEMORY_STAT),
        (
            "memory.events",
            "low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\noom_group_kill 0\n",
        ),
        ("pids.current", "7\n"),
        ("pids.max", "max\n"),
        ("io.weight", "default 100\n"),
        ("io.max", ""),
        (
            "io.stat",
            "8:0 rbytes=8192 wbytes=4096 rios=2 wios=1 dbytes=0 dios=0\n\
             253:1 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
        ),
        ("hugetlb.2MB.max", "max\n"),
        ("hugetlb.1GB.max", "max\n"),
        ("rdma.max", ""),
    ]
}

/// A pure v2 host: one unified tree, like `/sys/fs/cgroup` with cgroup2 mounted.
pub(super) struct FakeV2 {
    pub(super) dir: TempDir,
}

impl FakeV2 {
    pub(super) fn new() -> FakeV2 {
        let dir = tempfile::tempdir().unwrap();
        write_all(
            dir.path(),
            &[
                ("cgroup.controllers", V2_CONTROLLERS),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", ""),
            ],
        );
        FakeV2 { dir }
    }

    pub(super) fn root(&self) -> CgroupRoot {
        CgroupRoot::at(self.dir.path()).unwrap()
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(super) fn read(&self, rel: &str, file: &str) -> String {
        fs::read_to_string(self.path(rel).join(file)).unwrap()
    }

    pub(super) fn set(&self, rel: &str, file: &str, content: &str) {
        fs::write(self.path(rel).join(file), content).unwrap();
    }

    /// Plays the kernel: every level of `rel`, with the files of a child cgroup.
    pub(super) fn leaf(&self, rel: &str) {
        let mut dir = self.dir.path().to_path_buf();
        for comp in rel.split('/') {
            dir.push(comp);
            write_all(&dir, &v2_files());
        }
    }
}
