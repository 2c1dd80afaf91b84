//! Writing `linux.resources` into v2 interface files.
//!
//! v1-shaped OCI values are converted the way runc and crun do: `cpu.shares` to
//! `cpu.weight`, `blockIO.weight` to `io.weight`, and the OCI memory+swap total to
//! `memory.swap.max` (swap alone).
//!
//! Device rules become an eBPF device program ([`super::device_filter`]), replaced on every
//! apply that carries rules and left alone by one that carries none.
//!
//! # Limitations
//!
//! - On a fake tree (`emulated`, tests only) the device program is generated, so invalid
//!   rules still fail, but not attached: an ordinary directory cannot hold eBPF programs.
//! - `memory.swappiness`, `memory.disableOOMKiller`, kernel memory limits and the block
//!   I/O leaf weight have no v2 equivalent and are ignored with a warning (as crun does).
//! - Realtime CPU settings and `linux.resources.network` are errors: v2 cannot express them.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::{
    CgroupError,
    device_filter::{self, Program, rules_with_defaults},
    fsutil::{read, write_requested},
    resources::{
        blkio_to_io_weight, hugepage_size, limit_value, max_or, pids_value, rdma_lines,
        shares_to_weight, v2_swap_max,
    },
};

/// Applies every section of `r` that has a value to the cgroup directory `dir`.
/// `emulated` (a test's fake tree) skips attaching the device program.
pub(crate) fn apply(dir: &Path, r: &LinuxResources, emulated: bool) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        apply_memory(dir, m)?;
    }
    if let Some(c) = r.cpu() {
        apply_cpu(dir, c)?;
    }
    if let Some(p) = r.pids() {
        write_requested(dir, "pids.max", &pids_value(p.limit()), "pids limit")?;
    }
    if let Some(b) = r.block_io() {
        apply_io(dir, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let file = format!("hugetlb.{}.max", hugepage_size(h.page_size())?);
        write_requested(dir, &file, &h.limit().to_string(), "hugepage limit")?;
    }
    if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        apply_devices(dir, rules, emulated)?;
    }
    if r.network().is_some() {
        return Err(CgroupError::NotInVersion {
            what: "linux.resources.network".into(),
            version: "v2",
        });
    }
    if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
        for line in rdma_lines(rdma)? {
            write_requested(dir, "rdma.max", &line, "rdma limits")?;
        }
    }
    if let Some(unified) = r.unified() {
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in keys {
            let valid = key.contains('.')
                && !key.starts_with('.')
                && !key.contains('/')
                && !key.contains('\0');
            if !valid {
                return Err(CgroupError::InvalidResource(format!(
                    "unified key {key:?} is not a cgroup interface file name"
                )));
            }
            write_requested(dir, key, &unified[key], "linux.resources.unified")?;
        }
    }
    Ok(())
}

fn apply_devices(
    dir: &Path,
    rules: &[LinuxDeviceCgroup],
    emulated: bool,
) -> Result<(), CgroupError> {
    let program = Program::generate(&rules_with_defaults(rules)?);
    if emulated {
        log::debug!(
            "cgroup: fake tree, device program of {} instructions not attached to {}",
            program.insns.len(),
            dir.display()
        );
        return Ok(());
    }
    log::debug!("cgroup: device rules: {} <- eBPF program", dir.display());
    device_filter::install(dir, &program)
}

fn apply_memory(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = limit_value(m.limit(), "memory limit")?;
    let swap = limit_value(m.swap(), "memory+swap limit")?;
    let reservation = limit_value(m.reservation(), "memory reservation")?;
    let swap_max = v2_swap_max(limit, swap)?;
    if let Some(l) = limit {
        write_requested(dir, "memory.max", &max_or(l), "memory limit")?;
    }
    if let Some(v) = swap_max {
        write_requested(dir, "memory.swap.max", &v, "memory+swap limit")?;
    }
    if let Some(r) = reservation {
        write_requested(dir, "memory.low", &max_or(r), "memory reservation")?;
    }
    let ignored = [
        ("swappiness", m.swappiness().is_some()),
        ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ("kernel", m.kernel().is_some()),
        ("kernelTCP", m.kernel_tcp().is_some()),
    ];
    for (name, set) in ignored {
        if set {
            log::warn!("cgroup: memory.{name} has no cgroup v2 equivalent; ignored");
        }
    }
    Ok(())
}

fn apply_cpu(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if c.realtime_period().is_some_and(|v| v != 0) || c.realtime_runtime().is_some_and(|v| v != 0) {
        return Err(CgroupError::NotInVersion {
            what: "realtime cpu scheduling limits".into(),
            version: "v2",
        });
    }
    if let Some(shares) = c.shares().filter(|v| *v != 0) {
        let weight = shares_to_weight(shares).to_string();
        write_requested(dir, "cpu.weight", &weight, "cpu shares")?;
    }
    let quota = limit_value(c.quota(), "cpu quota")?;
    let period = c.period().filter(|v| *v != 0);
    if quota.is_some() || period.is_some() {
        let value = cpu_max(dir, quota, period)?;
        write_requested(dir, "cpu.max", &value, "cpu quota")?;
    }
    if let Some(b) = c.burst() {
        write_requested(dir, "cpu.max.burst", &b.to_string(), "cpu burst")?;
    }
    if let Some(i) = c.idle() {
        write_requested(dir, "cpu.idle", &i.to_string(), "cpu idle")?;
    }
    for (value, file, what) in [
        (c.cpus(), "cpuset.cpus", "cpuset cpus"),
        (c.mems(), "cpuset.mems", "cpuset mems"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            write_requested(dir, file, v, what)?;
        }
    }
    Ok(())
}

/// `cpu.max` holds "quota period" together; a spec giving only one keeps the other.
fn cpu_max(dir: &Path, quota: Option<i64>, period: Option<u64>) -> Result<String, CgroupError> {
    let file = dir.join("cpu.max");
    if !file.exists() {
        return Err(CgroupError::Unsupported {
            what: "cpu quota".into(),
            file,
        });
    }
    let current = read(&file)?;
    let mut fields = current.split_whitespace();
    let cur_quota = fields.next().unwrap_or("max").to_string();
    let cur_period = fields.next().unwrap_or("100000").to_string();
    let quota = quota.map_or(cur_quota, max_or);
    let period = period.map_or(cur_period, |p| p.to_string());
    Ok(format!("{quota} {period}"))
}

fn apply_io(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // With the BFQ scheduler the weight lives in io.bfq.weight, in blkio's own range.
    let bfq = dir.join("io.bfq.weight").exists();
    let (weight_file, convert): (&str, fn(u16) -> u64) = if bfq {
        ("io.bfq.weight", u64::from)
    } else {
        ("io.weight", blkio_to_io_weight)
    };
    if let Some(w) = b.weight() {
        write_requested(dir, weight_file, &convert(w).to_string(), "block io weight")?;
    }
    if b.leaf_weight().is_some() {
        log::warn!("cgroup: blockIO.leafWeight has no cgroup v2 equivalent; ignored");
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            let line = format!("{}:{} {}", d.major(), d.minor(), convert(w));
            write_requested(dir, weight_file, &line, "block io device weight")?;
        }
    }
    let throttles = [
        (b.throttle_read_bps_device(), "rbps"),
        (b.throttle_write_bps_device(), "wbps"),
        (b.throttle_read_iops_device(), "riops"),
        (b.throttle_write_iops_device(), "wiops"),
    ];
    for (devices, key) in throttles {
        for d in devices.iter().flatten() {
            let line = format!("{}:{} {key}={}", d.major(), d.minor(), d.rate());
            write_requested(dir, "io.max", &line, "block io throttling")?;
        }
    }
    Ok(())
}
