//! Cgroup counters to the metrics message containerd expects from `Stats`.
//!
//! The cgroup drivers report a version-neutral
//! [`CgroupStats`](amphi_linux_executor::cgroup::CgroupStats); [`stats_to_any`] turns it
//! into `io.containerd.cgroups.v1.Metrics` on v1 (and hybrid) hosts or
//! `io.containerd.cgroups.v2.Metrics` on v2 hosts, packed in a protobuf `Any` whose type
//! URL is the message's full name (what `containerd_shim::util::convert_to_any` writes and
//! containerd resolves). These are the only two types CRI accepts (checklist T-M1).
//!
//! CRI reads, among others: CPU usage, memory usage and `inactive_file` (working set =
//! usage - inactive_file), `pids.current`, and the OOM-kill counter (v1
//! `memory_oom_control.oom_kill`, v2 `memory_events.oom_kill`) to mark a container
//! OOMKilled (checklist T-M2). All of them are filled here.
//!
//! # Limitations
//!
//! Hugetlb, RDMA, network and PSI fields stay empty (the drivers do not collect them).
//! v1 block I/O carries only the `Read` and `Write` entries per device.

use amphi_linux_executor::cgroup::{CgroupStats, CgroupVersion, MemoryCounter};
use containerd_shim::{
    protos::{
        cgroups::metrics as v1,
        cgroups_v2::metrics as v2,
        protobuf::{MessageField, well_known_types::any::Any},
    },
    util::convert_to_any,
};

/// Packs `stats` as containerd metrics of the cgroup version that produced them.
///
/// Fails only if protobuf serialisation fails.
pub fn stats_to_any(stats: &CgroupStats) -> Result<Any, containerd_shim::Error> {
    match stats.version {
        CgroupVersion::V1 => convert_to_any(Box::new(to_v1(stats))),
        CgroupVersion::V2 => convert_to_any(Box::new(to_v2(stats))),
    }
}

fn to_v1(s: &CgroupStats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = MessageField::some(v1::PidsStat {
        current: s.pids.current,
        limit: s.pids.limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: s.cpu.usage_total_ns,
            kernel: s.cpu.usage_kernel_ns,
            user: s.cpu.usage_user_ns,
            per_cpu: s.cpu.per_cpu_ns.clone(),
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: s.cpu.nr_periods,
            throttled_periods: s.cpu.nr_throttled,
            throttled_time: s.cpu.throttled_time_ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    m.memory = MessageField::some(v1_memory(s));
    m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
        oom_kill_disable: u64::from(s.memory.oom_kill_disable),
        under_oom: u64::from(s.memory.under_oom),
        oom_kill: s.memory.events.oom_kill,
        ..Default::default()
    });
    if !s.io.is_empty() {
        let entry = |op: &str, major, minor, value| v1::BlkIOEntry {
            op: op.to_string(),
            major,
            minor,
            value,
            ..Default::default()
        };
        let mut blkio = v1::BlkIOStat::new();
        for d in &s.io {
            blkio.io_service_bytes_recursive.extend([
                entry("Read", d.major, d.minor, d.read_bytes),
                entry("Write", d.major, d.minor, d.write_bytes),
            ]);
            blkio.io_serviced_recursive.extend([
                entry("Read", d.major, d.minor, d.read_ios),
                entry("Write", d.major, d.minor, d.write_ios),
            ]);
        }
        m.blkio = MessageField::some(blkio);
    }
    m
}

fn v1_entry(c: &MemoryCounter) -> MessageField<v1::MemoryEntry> {
    MessageField::some(v1::MemoryEntry {
        limit: c.limit,
        usage: c.usage,
        max: c.max_usage,
        failcnt: c.failcnt,
        ..Default::default()
    })
}

fn v1_memory(s: &CgroupStats) -> v1::MemoryStat {
    let mem = &s.memory;
    let st = |k: &str| mem.stat(k);
    v1::MemoryStat {
        cache: st("cache"),
        rss: st("rss"),
        rss_huge: st("rss_huge"),
        mapped_file: st("mapped_file"),
        dirty: st("dirty"),
        writeback: st("writeback"),
        pg_pg_in: st("pgpgin"),
        pg_pg_out: st("pgpgout"),
        pg_fault: st("pgfault"),
        pg_maj_fault: st("pgmajfault"),
        inactive_anon: st("inactive_anon"),
        active_anon: st("active_anon"),
        inactive_file: st("inactive_file"),
        active_file: st("active_file"),
        unevictable: st("unevictable"),
        hierarchical_memory_limit: st("hierarchical_memory_limit"),
        hierarchical_swap_limit: st("hierarchical_memsw_limit"),
        total_cache: st("total_cache"),
        total_rss: st("total_rss"),
        total_rss_huge: st("total_rss_huge"),
        total_mapped_file: st("total_mapped_file"),
        total_dirty: st("total_dirty"),
        total_writeback: st("total_writeback"),
        total_pg_pg_in: st("total_pgpgin"),
        total_pg_pg_out: st("total_pgpgout"),
        total_pg_fault: st("total_pgfault"),
        total_pg_maj_fault: st("total_pgmajfault"),
        total_inactive_anon: st("total_inactive_anon"),
        total_active_anon: st("total_active_anon"),
        total_inactive_file: st("total_inactive_file"),
        total_active_file: st("total_active_file"),
        total_unevictable: st("total_unevictable"),
        usage: v1_entry(&mem.usage),
        swap: v1_entry(&mem.swap),
        kernel: v1_entry(&mem.kernel),
        kernel_tcp: v1_entry(&mem.kernel_tcp),
        ..Default::default()
    }
}

fn to_v2(s: &CgroupStats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: s.pids.current,
        limit: s.pids.limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: s.cpu.usage_total_ns / 1000,
        user_usec: s.cpu.usage_user_ns / 1000,
        system_usec: s.cpu.usage_kernel_ns / 1000,
        nr_periods: s.cpu.nr_periods,
        nr_throttled: s.cpu.nr_throttled,
        throttled_usec: s.cpu.throttled_time_ns / 1000,
        nr_bursts: s.cpu.nr_bursts,
        burst_usec: s.cpu.burst_time_ns / 1000,
        ..Default::default()
    });
    m.memory = MessageField::some(v2_memory(s));
    let ev = &s.memory.events;
    m.memory_events = MessageField::some(v2::MemoryEvents {
        low: ev.low,
        high: ev.high,
        max: ev.max,
        oom: ev.oom,
        oom_kill: ev.oom_kill,
        oom_group_kill: ev.oom_group_kill,
        ..Default::default()
    });
    if !s.io.is_empty() {
        let mut io = v2::IOStat::new();
        io.usage =
            s.io.iter()
                .map(|d| v2::IOEntry {
                    major: d.major,
                    minor: d.minor,
                    rbytes: d.read_bytes,
                    wbytes: d.write_bytes,
                    rios: d.read_ios,
                    wios: d.write_ios,
                    ..Default::default()
                })
                .collect();
        m.io = MessageField::some(io);
    }
    m
}

fn v2_memory(s: &CgroupStats) -> v2::MemoryStat {
    let mem = &s.memory;
    let st = |k: &str| mem.stat(k);
    // Linux 5.9 split these counters into _anon and _file; older kernels have the sum.
    let split = |k: &str| match mem.stat.get(k) {
        Some(v) => *v,
        None => st(&format!("{k}_anon")) + st(&format!("{k}_file")),
    };
    v2::MemoryStat {
        anon: st("anon"),
        file: st("file"),
        kernel_stack: st("kernel_stack"),
        slab: st("slab"),
        sock: st("sock"),
        shmem: st("shmem"),
        file_mapped: st("file_mapped"),
        file_dirty: st("file_dirty"),
        file_writeback: st("file_writeback"),
        anon_thp: st("anon_thp"),
        inactive_anon: st("inactive_anon"),
        active_anon: st("active_anon"),
        inactive_file: st("inactive_file"),
        active_file: st("active_file"),
        unevictable: st("unevictable"),
        slab_reclaimable: st("slab_reclaimable"),
        slab_unreclaimable: st("slab_unreclaimable"),
        pgfault: st("pgfault"),
        pgmajfault: st("pgmajfault"),
        workingset_refault: split("workingset_refault"),
        workingset_activate: split("workingset_activate"),
        workingset_nodereclaim: st("workingset_nodereclaim"),
        pgrefill: st("pgrefill"),
        pgscan: st("pgscan"),
        pgsteal: st("pgsteal"),
        pgactivate: st("pgactivate"),
        pgdeactivate: st("pgdeactivate"),
        pglazyfree: st("pglazyfree"),
        pglazyfreed: st("pglazyfreed"),
        thp_fault_alloc: st("thp_fault_alloc"),
        thp_collapse_alloc: st("thp_collapse_alloc"),
        usage: mem.usage.usage,
        usage_limit: mem.usage.limit,
        swap_usage: mem.swap.usage,
        swap_limit: mem.swap.limit,
        max_usage: mem.usage.max_usage,
        swap_max_usage: mem.swap.max_usage,
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amphi_linux_executor::cgroup::{
        CpuStats, IoDeviceStats, MemoryEvents, MemoryStats, PidsStats,
    };
    use containerd_shim::protos::protobuf::Message;

    use super::*;

    fn sample(version: CgroupVersion) -> CgroupStats {
        let stat_keys: &[(&str, u64)] = match version {
            CgroupVersion::V1 => &[
                ("cache", 4096),
                ("rss", 8192),
                ("inactive_file", 1000),
                ("total_inactive_file", 3000),
                ("pgmajfault", 5),
                ("hierarchical_memsw_limit", 777),
            ],
            CgroupVersion::V2 => &[
                ("anon", 8192),
                ("file", 4096),
                ("inactive_file", 3000),
                ("workingset_refault_anon", 1),
                ("workingset_refault_file", 2),
                ("workingset_activate", 9),
            ],
        };
        CgroupStats {
            version,
            cpu: CpuStats {
                usage_total_ns: 2_500_000_000,
                usage_user_ns: 1_500_000_000,
                usage_kernel_ns: 1_000_000_000,
                per_cpu_ns: vec![2_000_000_000, 500_000_000],
                nr_periods: 40,
                nr_throttled: 4,
                throttled_time_ns: 123_000,
                nr_bursts: 2,
                burst_time_ns: 7_000,
            },
            memory: MemoryStats {
                usage: MemoryCounter {
                    usage: 10_000,
                    limit: 64 << 20,
                    max_usage: 12_000,
                    failcnt: 2,
                },
                swap: MemoryCounter {
                    usage: 4096,
                    limit: u64::MAX,
                    ..MemoryCounter::default()
                },
                stat: stat_keys.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                events: MemoryEvents {
                    oom: 1,
                    oom_kill: 3,
                    ..MemoryEvents::default()
                },
                under_oom: true,
                ..MemoryStats::default()
            },
            pids: PidsStats {
                current: 7,
                limit: 64,
            },
            io: vec![IoDeviceStats {
                major: 8,
                minor: 0,
                read_bytes: 8192,
                write_bytes: 4096,
                read_ios: 2,
                write_ios: 1,
            }],
        }
    }

    #[test]
    fn v1_stats_become_v1_metrics_with_what_cri_reads() {
        let any = stats_to_any(&sample(CgroupVersion::V1)).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        let cpu = m.cpu.usage.as_ref().unwrap();
        assert_eq!(
            (cpu.total, cpu.user, cpu.kernel),
            (2_500_000_000, 1_500_000_000, 1_000_000_000)
        );
        assert_eq!(cpu.per_cpu, [2_000_000_000, 500_000_000]);
        assert_eq!(m.cpu.throttling.throttled_periods, 4);
        let mem = m.memory.as_ref().unwrap();
        assert_eq!(mem.usage.usage, 10_000);
        assert_eq!(mem.usage.limit, 64 << 20);
        assert_eq!((mem.usage.max, mem.usage.failcnt), (12_000, 2));
        assert_eq!(mem.swap.usage, 4096);
        // CRI's working set on v1: usage - total_inactive_file.
        assert_eq!(mem.total_inactive_file, 3000);
        assert_eq!((mem.cache, mem.rss, mem.inactive_file), (4096, 8192, 1000));
        assert_eq!(mem.pg_maj_fault, 5);
        assert_eq!(mem.hierarchical_swap_limit, 777);
        assert_eq!(m.memory_oom_control.oom_kill, 3);
        assert_eq!(m.memory_oom_control.under_oom, 1);
        assert_eq!((m.pids.current, m.pids.limit), (7, 64));
        let bytes = &m.blkio.io_service_bytes_recursive;
        assert_eq!(bytes.len(), 2);
        assert_eq!((bytes[0].op.as_str(), bytes[0].value), ("Read", 8192));
        assert_eq!(
            (bytes[1].op.as_str(), bytes[1].major, bytes[1].value),
            ("Write", 8, 4096)
        );
        assert_eq!(m.blkio.io_serviced_recursive[1].value, 1);
    }

    #[test]
    fn v2_stats_become_v2_metrics_with_what_cri_reads() {
        let any = stats_to_any(&sample(CgroupVersion::V2)).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (2_500_000, 1_500_000, 1_000_000)
        );
        assert_eq!((m.cpu.nr_throttled, m.cpu.throttled_usec), (4, 123));
        assert_eq!((m.cpu.nr_bursts, m.cpu.burst_usec), (2, 7));
        let mem = m.memory.as_ref().unwrap();
        // CRI's working set on v2: usage - inactive_file.
        assert_eq!((mem.usage, mem.inactive_file), (10_000, 3000));
        assert_eq!((mem.usage_limit, mem.max_usage), (64 << 20, 12_000));
        assert_eq!((mem.swap_usage, mem.swap_limit), (4096, u64::MAX));
        assert_eq!((mem.anon, mem.file), (8192, 4096));
        assert_eq!(
            mem.workingset_refault, 3,
            "sum of the _anon and _file counters"
        );
        assert_eq!(mem.workingset_activate, 9);
        assert_eq!((m.memory_events.oom, m.memory_events.oom_kill), (1, 3));
        assert_eq!((m.pids.current, m.pids.limit), (7, 64));
        let io = &m.io.usage;
        assert_eq!(io.len(), 1);
        assert_eq!(
            (
                io[0].major,
                io[0].rbytes,
                io[0].wbytes,
                io[0].rios,
                io[0].wios
            ),
            (8, 8192, 4096, 2, 1)
        );
    }

    #[test]
    fn empty_stats_still_carry_the_sections_cri_dereferences() {
        let any = stats_to_any(&CgroupStats {
            version: CgroupVersion::V2,
            ..CgroupStats::default()
        })
        .unwrap();
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.cpu.is_some() && m.memory.is_some() && m.pids.is_some());
        assert!(m.io.is_none());
        let any = stats_to_any(&CgroupStats::default()).unwrap();
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.cpu.is_some() && m.memory.is_some() && m.memory_oom_control.is_some());
        assert!(m.blkio.is_none());
    }
}
