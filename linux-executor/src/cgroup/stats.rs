//! A version-neutral snapshot of a cgroup's counters, and the readers that fill it from v1
//! and v2 interface files.
//!
//! Units are normalised (CPU times in nanoseconds, memory in bytes); everything else is
//! kept as the kernel reports it, including the raw `memory.stat` map, so the shim can fill
//! either of containerd's metrics messages without re-reading files.
//!
//! # Limitations
//!
//! Hugetlb, RDMA and pressure (PSI) counters are not collected. Block I/O is reduced to
//! bytes and operations per device and direction.

use std::{collections::BTreeMap, path::Path};

use super::{
    CgroupError,
    fsutil::{
        parse_dev, parse_err, parse_flat_keyed, read_flat_keyed, read_opt, read_u64_opt,
        read_u64_or_zero,
    },
};

/// Which cgroup version produced a [`CgroupStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupVersion {
    #[default]
    V1,
    V2,
}

/// Counters of one cgroup at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupStats {
    pub version: CgroupVersion,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    /// Per block device, in the order the kernel lists them.
    pub io: Vec<IoDeviceStats>,
}

/// CPU time and CFS throttling. All times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuStats {
    /// v1 `cpuacct.usage`; v2 `cpu.stat usage_usec`.
    pub usage_total_ns: u64,
    /// v1 `cpuacct.stat user` (USER_HZ ticks converted); v2 `user_usec`.
    pub usage_user_ns: u64,
    /// v1 `cpuacct.stat system`; v2 `system_usec`.
    pub usage_kernel_ns: u64,
    /// v1 `cpuacct.usage_percpu`; empty on v2 (the kernel has no such file).
    pub per_cpu_ns: Vec<u64>,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_ns: u64,
    /// Periods in which the CFS burst allowance was used (`cpu.stat nr_bursts`).
    pub nr_bursts: u64,
    /// Time spent bursting (v1 `burst_time`, v2 `burst_usec`).
    pub burst_time_ns: u64,
}

/// One memory counter family. Limits are as the kernel reports them: v1 shows a huge number
/// (9223372036854771712) for "unlimited", v2 `max` reads as `u64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryCounter {
    pub usage: u64,
    pub limit: u64,
    /// Peak usage (v1 `max_usage_in_bytes`, v2 `memory.peak` where the kernel has it).
    pub max_usage: u64,
    /// v1 only: how often the limit was hit.
    pub failcnt: u64,
}

/// Memory counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// v1 `memory.*_in_bytes`; v2 `memory.current`, `memory.max`, `memory.peak`.
    pub usage: MemoryCounter,
    /// v1 `memory.memsw.*`, which counts memory **plus** swap (zero when swap accounting is
    /// off); v2 `memory.swap.*`, which counts swap alone. This matches what containerd's v1
    /// and v2 metrics messages carry.
    pub swap: MemoryCounter,
    /// v1 only: `memory.kmem.*`.
    pub kernel: MemoryCounter,
    /// v1 only: `memory.kmem.tcp.*`.
    pub kernel_tcp: MemoryCounter,
    /// The raw `memory.stat` map (v1 keys such as `cache`, `rss`, `total_inactive_file`;
    /// v2 keys such as `anon`, `file`, `inactive_file`).
    pub stat: BTreeMap<String, u64>,
    /// v2 `memory.events`; on v1 only `oom_kill` is filled (from `memory.oom_control`).
    pub events: MemoryEvents,
    /// v1 only: `memory.oom_control oom_kill_disable`.
    pub oom_kill_disable: bool,
    /// v1 only: `memory.oom_control under_oom`.
    pub under_oom: bool,
}

/// v2 `memory.events` counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    /// Processes killed by the OOM killer in this cgroup (v1 and v2).
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

/// Number of processes (tasks) and the limit; `limit` 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PidsStats {
    pub current: u64,
    pub limit: u64,
}

/// Block I/O of one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IoDeviceStats {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

impl MemoryStats {
    /// A `memory.stat` value, 0 when absent.
    pub fn stat(&self, key: &str) -> u64 {
        self.stat.get(key).copied().unwrap_or(0)
    }
}

/// Converts USER_HZ ticks (the unit of v1 `cpuacct.stat`) to nanoseconds.
fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000 / hz)
}

/// v1 CPU: `cpuacct` directory for usage, `cpu` directory for throttling.
pub(crate) fn read_v1_cpu(
    cpuacct: Option<&Path>,
    cpu: Option<&Path>,
) -> Result<CpuStats, CgroupError> {
    let mut out = CpuStats::default();
    if let Some(dir) = cpuacct {
        out.usage_total_ns = read_u64_or_zero(&dir.join("cpuacct.usage"))?;
        let stat = read_flat_keyed(&dir.join("cpuacct.stat"))?;
        out.usage_user_ns = ticks_to_ns(stat.get("user").copied().unwrap_or(0));
        out.usage_kernel_ns = ticks_to_ns(stat.get("system").copied().unwrap_or(0));
        let percpu = dir.join("cpuacct.usage_percpu");
        if let Some(text) = read_opt(&percpu)? {
            out.per_cpu_ns = text
                .split_whitespace()
                .map(|v| {
                    v.parse()
                        .map_err(|_| parse_err(&percpu, format!("{v:?} is not a number")))
                })
                .collect::<Result<_, _>>()?;
        }
    }
    if let Some(dir) = cpu {
        let stat = read_flat_keyed(&dir.join("cpu.stat"))?;
        out.nr_periods = stat.get("nr_periods").copied().unwrap_or(0);
        out.nr_throttled = stat.get("nr_throttled").copied().unwrap_or(0);
        out.throttled_time_ns = stat.get("throttled_time").copied().unwrap_or(0);
        out.nr_bursts = stat.get("nr_bursts").copied().unwrap_or(0);
        out.burst_time_ns = stat.get("burst_time").copied().unwrap_or(0);
    }
    Ok(out)
}

fn read_v1_counter(dir: &Path, prefix: &str) -> Result<MemoryCounter, CgroupError> {
    let file = |suffix: &str| dir.join(format!("{prefix}{suffix}"));
    Ok(MemoryCounter {
        usage: read_u64_or_zero(&file("usage_in_bytes"))?,
        limit: read_u64_or_zero(&file("limit_in_bytes"))?,
        max_usage: read_u64_or_zero(&file("max_usage_in_bytes"))?,
        failcnt: read_u64_or_zero(&file("failcnt"))?,
    })
}

/// v1 memory from the `memory` controller directory.
pub(crate) fn read_v1_memory(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let oom = read_flat_keyed(&dir.join("memory.oom_control"))?;
    Ok(MemoryStats {
        usage: read_v1_counter(dir, "memory.")?,
        swap: read_v1_counter(dir, "memory.memsw.")?,
        kernel: read_v1_counter(dir, "memory.kmem.")?,
        kernel_tcp: read_v1_counter(dir, "memory.kmem.tcp.")?,
        stat: read_flat_keyed(&dir.join("memory.stat"))?,
        events: MemoryEvents {
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..MemoryEvents::default()
        },
        oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0) != 0,
        under_oom: oom.get("under_oom").copied().unwrap_or(0) != 0,
    })
}

/// Pids from the `pids` directory (v1) or the unified directory (v2).
pub(crate) fn read_pids(dir: &Path) -> Result<PidsStats, CgroupError> {
    let limit = match read_u64_opt(&dir.join("pids.max"))? {
        Some(u64::MAX) | None => 0,
        Some(n) => n,
    };
    Ok(PidsStats {
        current: read_u64_or_zero(&dir.join("pids.current"))?,
        limit,
    })
}

/// v1 block I/O: `blkio.io_service*_recursive` (CFQ/BFQ accounting) when present, else the
/// throttle policy's files, which every kernel with blkio has.
pub(crate) fn read_v1_blkio(dir: &Path) -> Result<Vec<IoDeviceStats>, CgroupError> {
    let pick = |name: &str| {
        let cfq = dir.join(format!("blkio.{name}"));
        if cfq.exists() {
            cfq
        } else {
            dir.join(format!("blkio.throttle.{name}"))
        }
    };
    let mut devices: Vec<IoDeviceStats> = Vec::new();
    for (name, is_bytes) in [
        ("io_service_bytes_recursive", true),
        ("io_serviced_recursive", false),
    ] {
        let path = pick(name);
        let Some(text) = read_opt(&path)? else {
            continue;
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "8:0 Read 4096"; the summary line is "Total 123".
            let [dev, op, value] = fields.as_slice() else {
                continue;
            };
            let (major, minor) = parse_dev(&path, dev)?;
            let value: u64 = value
                .parse()
                .map_err(|_| parse_err(&path, format!("bad value in {line:?}")))?;
            let entry = device_entry(&mut devices, major, minor);
            match (*op, is_bytes) {
                ("Read", true) => entry.read_bytes = value,
                ("Write", true) => entry.write_bytes = value,
                ("Read", false) => entry.read_ios = value,
                ("Write", false) => entry.write_ios = value,
                _ => {}
            }
        }
    }
    Ok(devices)
}

fn device_entry(devices: &mut Vec<IoDeviceStats>, major: u64, minor: u64) -> &mut IoDeviceStats {
    let pos = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(pos) => pos,
        None => {
            devices.push(IoDeviceStats {
                major,
                minor,
                ..IoDeviceStats::default()
            });
            devices.len() - 1
        }
    };
    &mut devices[pos]
}

/// v2 CPU from `cpu.stat` (present even without the cpu controller enabled).
pub(crate) fn read_v2_cpu(dir: &Path) -> Result<CpuStats, CgroupError> {
    let stat = read_flat_keyed(&dir.join("cpu.stat"))?;
    let us = |k: &str| stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
    Ok(CpuStats {
        usage_total_ns: us("usage_usec"),
        usage_user_ns: us("user_usec"),
        usage_kernel_ns: us("system_usec"),
        per_cpu_ns: Vec::new(),
        nr_periods: stat.get("nr_periods").copied().unwrap_or(0),
        nr_throttled: stat.get("nr_throttled").copied().unwrap_or(0),
        throttled_time_ns: us("throttled_usec"),
        nr_bursts: stat.get("nr_bursts").copied().unwrap_or(0),
        burst_time_ns: us("burst_usec"),
    })
}

/// v2 memory from the unified directory.
pub(crate) fn read_v2_memory(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let counter = |prefix: &str| -> Result<MemoryCounter, CgroupError> {
        Ok(MemoryCounter {
            usage: read_u64_or_zero(&dir.join(format!("{prefix}.current")))?,
            limit: read_u64_or_zero(&dir.join(format!("{prefix}.max")))?,
            max_usage: read_u64_or_zero(&dir.join(format!("{prefix}.peak")))?,
            failcnt: 0,
        })
    };
    let events = read_flat_keyed(&dir.join("memory.events"))?;
    let ev = |k: &str| events.get(k).copied().unwrap_or(0);
    Ok(MemoryStats {
        usage: counter("memory")?,
        swap: counter("memory.swap")?,
        stat: read_flat_keyed(&dir.join("memory.stat"))?,
        events: MemoryEvents {
            low: ev("low"),
            high: ev("high"),
            max: ev("max"),
            oom: ev("oom"),
            oom_kill: ev("oom_kill"),
            oom_group_kill: ev("oom_group_kill"),
        },
        ..MemoryStats::default()
    })
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per device.
pub(crate) fn read_v2_io(dir: &Path) -> Result<Vec<IoDeviceStats>, CgroupError> {
    let path = dir.join("io.stat");
    let Some(text) = read_opt(&path)? else {
        return Ok(Vec::new());
    };
    let mut devices = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let Some(dev) = fields.next() else { continue };
        let (major, minor) = parse_dev(&path, dev)?;
        let pairs = parse_flat_keyed(
            &path,
            &fields.collect::<Vec<_>>().join("\n").replace('=', " "),
        )?;
        let get = |k: &str| pairs.get(k).copied().unwrap_or(0);
        devices.push(IoDeviceStats {
            major,
            minor,
            read_bytes: get("rbytes"),
            write_bytes: get("wbytes"),
            read_ios: get("rios"),
            write_ios: get("wios"),
        });
    }
    Ok(devices)
}
