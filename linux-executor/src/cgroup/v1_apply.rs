//! Writing `linux.resources` into v1 controller files.
//!
//! Each setting goes to its controller's hierarchy. A setting that was not requested is
//! never touched, so a host without (say) the `blkio` controller is fine until a spec
//! asks for a block I/O weight; then the error names the missing file.
//!
//! # Limitations
//!
//! Kernel memory limits (`memory.kernel`, `memory.kernelTCP`) are ignored with a warning:
//! the kernel deprecated them and runc ignores them too.

use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxNetwork, LinuxResources, LinuxThrottleDevice,
};

use super::{
    CgroupError,
    fsutil::{read_u64_opt, write_requested},
    resources::{
        DEFAULT_ALLOWED_DEVICES, check_swap, device_rule, hugepage_size, limit_value, pids_value,
        rdma_lines,
    },
    v1::V1Cgroup,
};

/// Applies every section of `r` that has a value.
pub(crate) fn apply(cg: &V1Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        apply_memory(cg, m)?;
    }
    if let Some(c) = r.cpu() {
        apply_cpu(cg, c)?;
    }
    if let Some(p) = r.pids() {
        let dir = cg.controller("pids", "pids limit")?;
        write_requested(dir, "pids.max", &pids_value(p.limit()), "pids limit")?;
    }
    if let Some(b) = r.block_io() {
        apply_blkio(cg, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = hugepage_size(h.page_size())?;
        let dir = cg.controller("hugetlb", "hugepage limit")?;
        let file = format!("hugetlb.{size}.limit_in_bytes");
        write_requested(dir, &file, &h.limit().to_string(), "hugepage limit")?;
    }
    if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        let dir = cg.controller("devices", "device rules")?;
        for rule in rules {
            let Some(line) = device_rule(rule)? else {
                log::debug!("cgroup: device rule for fifos skipped: {rule:?}");
                continue;
            };
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write_requested(dir, file, &line, "device rules")?;
        }
        // The runtime supplies the default devices (runtime-spec "Default Devices"), so
        // they stay usable whatever the spec's rules deny, as with runc.
        for line in DEFAULT_ALLOWED_DEVICES {
            write_requested(dir, "devices.allow", line, "default device rules")?;
        }
    }
    if let Some(n) = r.network() {
        apply_network(cg, n)?;
    }
    if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
        let dir = cg.controller("rdma", "rdma limits")?;
        for line in rdma_lines(rdma)? {
            write_requested(dir, "rdma.max", &line, "rdma limits")?;
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::NotInVersion {
            what: "linux.resources.unified".into(),
            version: "v1",
        });
    }
    Ok(())
}

fn apply_memory(cg: &V1Cgroup, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = limit_value(m.limit(), "memory limit")?;
    let swap = limit_value(m.swap(), "memory+swap limit")?;
    let reservation = limit_value(m.reservation(), "memory reservation")?;
    check_swap(limit, swap)?;
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        log::warn!("cgroup: kernel memory limits are deprecated by the kernel and ignored");
    }
    let oom_off = m.disable_oom_killer() == Some(true);
    if limit.is_none()
        && swap.is_none()
        && reservation.is_none()
        && m.swappiness().is_none()
        && !oom_off
    {
        return Ok(());
    }
    let dir = cg.controller("memory", "memory limits")?;
    set_limit_and_swap(dir, limit, swap)?;
    if let Some(v) = reservation {
        write_requested(
            dir,
            "memory.soft_limit_in_bytes",
            &v.to_string(),
            "memory reservation",
        )?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(CgroupError::InvalidResource(format!(
                "memory swappiness {s} is above 100"
            )));
        }
        write_requested(
            dir,
            "memory.swappiness",
            &s.to_string(),
            "memory swappiness",
        )?;
    }
    if oom_off {
        write_requested(dir, "memory.oom_control", "1", "disabling the oom killer")?;
    }
    Ok(())
}

/// The kernel insists on memsw >= memory at every moment, so the order of the two writes
/// depends on whether the memsw limit grows or shrinks.
fn set_limit_and_swap(
    dir: &Path,
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<(), CgroupError> {
    const MEM: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let write_limit = |v: i64| write_requested(dir, MEM, &v.to_string(), "memory limit");
    let write_swap = |v: i64| write_requested(dir, MEMSW, &v.to_string(), "memory+swap limit");
    match (limit, swap) {
        (None, None) => Ok(()),
        (Some(l), None) => {
            // Lifting the memory limit must lift a finite memsw limit first.
            if l == -1 && dir.join(MEMSW).exists() {
                write_swap(-1)?;
            }
            write_limit(l)
        }
        (None, Some(s)) => write_swap(s),
        (Some(l), Some(s)) => {
            let current =
                read_u64_opt(&dir.join(MEMSW))?.ok_or_else(|| CgroupError::Unsupported {
                    what: "memory+swap limit".into(),
                    file: dir.join(MEMSW),
                })?;
            let grows = s == -1 || u64::try_from(s).is_ok_and(|s| s > current);
            if grows {
                write_swap(s)?;
                write_limit(l)
            } else {
                write_limit(l)?;
                write_swap(s)
            }
        }
    }
}

fn apply_cpu(cg: &V1Cgroup, c: &LinuxCpu) -> Result<(), CgroupError> {
    let nonzero_u = |v: Option<u64>| v.filter(|v| *v != 0);
    let shares = nonzero_u(c.shares());
    let period = nonzero_u(c.period());
    let quota = limit_value(c.quota(), "cpu quota")?;
    let burst = c.burst();
    let rt_period = nonzero_u(c.realtime_period());
    let rt_runtime = c.realtime_runtime().filter(|v| *v != 0);
    let wants_cpu = shares.is_some()
        || period.is_some()
        || quota.is_some()
        || burst.is_some()
        || rt_period.is_some()
        || rt_runtime.is_some()
        || c.idle().is_some();
    if wants_cpu {
        let dir = cg.controller("cpu", "cpu limits")?;
        if let Some(v) = shares {
            write_requested(dir, "cpu.shares", &v.to_string(), "cpu shares")?;
        }
        set_period_and_quota(dir, period, quota)?;
        if let Some(v) = burst {
            write_requested(dir, "cpu.cfs_burst_us", &v.to_string(), "cpu burst")?;
        }
        if let Some(v) = rt_period {
            write_requested(dir, "cpu.rt_period_us", &v.to_string(), "realtime period")?;
        }
        if let Some(v) = rt_runtime {
            write_requested(dir, "cpu.rt_runtime_us", &v.to_string(), "realtime runtime")?;
        }
        if let Some(v) = c.idle() {
            write_requested(dir, "cpu.idle", &v.to_string(), "cpu idle")?;
        }
    }
    for (value, file, what) in [
        (c.cpus(), "cpuset.cpus", "cpuset cpus"),
        (c.mems(), "cpuset.mems", "cpuset mems"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            let dir = cg.controller("cpuset", what)?;
            write_requested(dir, file, v, what)?;
        }
    }
    Ok(())
}

/// Period first; if the kernel refuses it against the current quota (hierarchical
/// bandwidth check), write the quota and retry the period.
fn set_period_and_quota(
    dir: &Path,
    period: Option<u64>,
    quota: Option<i64>,
) -> Result<(), CgroupError> {
    let write_quota =
        |q: i64| write_requested(dir, "cpu.cfs_quota_us", &q.to_string(), "cpu quota");
    let write_period =
        |p: u64| write_requested(dir, "cpu.cfs_period_us", &p.to_string(), "cpu period");
    if let Some(p) = period {
        match write_period(p) {
            Ok(()) => {}
            Err(CgroupError::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                if let Some(q) = quota {
                    write_quota(q)?;
                }
                return write_period(p);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = quota {
        write_quota(q)?;
    }
    Ok(())
}

fn apply_blkio(cg: &V1Cgroup, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let throttles: [(&Option<Vec<LinuxThrottleDevice>>, &str); 4] = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    let any_throttle = throttles
        .iter()
        .any(|(t, _)| t.as_ref().is_some_and(|t| !t.is_empty()));
    let weight_devices = b.weight_device().as_deref().unwrap_or_default();
    if b.weight().is_none()
        && b.leaf_weight().is_none()
        && weight_devices.is_empty()
        && !any_throttle
    {
        return Ok(());
    }
    let dir = cg.controller("blkio", "block io limits")?;
    // CFQ exposes blkio.weight; with BFQ (newer kernels) only blkio.bfq.weight exists.
    let weight_file = if dir.join("blkio.weight").exists() || !dir.join("blkio.bfq.weight").exists()
    {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    if let Some(w) = b.weight() {
        write_requested(dir, weight_file, &w.to_string(), "block io weight")?;
    }
    if let Some(w) = b.leaf_weight() {
        write_requested(
            dir,
            "blkio.leaf_weight",
            &w.to_string(),
            "block io leaf weight",
        )?;
    }
    for d in weight_devices {
        if let Some(w) = d.weight() {
            let line = format!("{}:{} {w}", d.major(), d.minor());
            let file = format!("{weight_file}_device");
            write_requested(dir, &file, &line, "block io device weight")?;
        }
        if let Some(w) = d.leaf_weight() {
            let line = format!("{}:{} {w}", d.major(), d.minor());
            write_requested(
                dir,
                "blkio.leaf_weight_device",
                &line,
                "block io device weight",
            )?;
        }
    }
    for (devices, file) in throttles {
        for d in devices.iter().flatten() {
            let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            write_requested(dir, file, &line, "block io throttling")?;
        }
    }
    Ok(())
}

fn apply_network(cg: &V1Cgroup, n: &LinuxNetwork) -> Result<(), CgroupError> {
    if let Some(id) = n.class_id() {
        let dir = cg.controller("net_cls", "network class id")?;
        write_requested(dir, "net_cls.classid", &id.to_string(), "network class id")?;
    }
    for p in n.priorities().iter().flatten() {
        let dir = cg.controller("net_prio", "network priorities")?;
        let line = format!("{} {}", p.name(), p.priority());
        write_requested(dir, "net_prio.ifpriomap", &line, "network priorities")?;
    }
    Ok(())
}
