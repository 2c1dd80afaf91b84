//! Pure conversions from OCI resource values to what cgroup files expect, shared by the v1
//! and v2 appliers. No I/O here, so every rule has a unit test.
//!
//! OCI semantics kept throughout: a value of 0 means "not set" for limits, quotas, shares
//! and periods; -1 means "unlimited" for memory, swap and CPU quota; `memory.swap` is the
//! limit of memory **plus** swap.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxRdma};

use super::CgroupError;

/// A limit that may be "unlimited" (-1). 0 and `None` both mean "leave alone".
pub(crate) fn limit_value(value: Option<i64>, what: &str) -> Result<Option<i64>, CgroupError> {
    match value {
        None | Some(0) => Ok(None),
        Some(v) if v < -1 => Err(CgroupError::InvalidResource(format!(
            "{what} {v} is negative (only -1, meaning unlimited, is allowed)"
        ))),
        Some(v) => Ok(Some(v)),
    }
}

/// Checks that the OCI memory+swap limit is not below the memory limit.
pub(crate) fn check_swap(limit: Option<i64>, swap: Option<i64>) -> Result<(), CgroupError> {
    if let (Some(l), Some(s)) = (limit, swap)
        && l > 0
        && s > 0
        && s < l
    {
        return Err(CgroupError::InvalidResource(format!(
            "memory+swap limit {s} is lower than the memory limit {l}"
        )));
    }
    Ok(())
}

/// v2 `memory.swap.max` from the OCI memory+swap total: `swap - limit`, `max` for -1.
/// Returns `None` when swap was not requested.
pub(crate) fn v2_swap_max(
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<Option<String>, CgroupError> {
    check_swap(limit, swap)?;
    match (limit, swap) {
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some("max".into())),
        (Some(l), Some(s)) if l > 0 => Ok(Some((s - l).to_string())),
        (_, Some(s)) => Err(CgroupError::InvalidResource(format!(
            "a memory+swap limit ({s}) needs a finite memory limit on cgroup v2"
        ))),
    }
}

/// v2 `memory.max` / `memory.low` / `pids.max` style value: `max` for unlimited.
pub(crate) fn max_or(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), the mapping runc and
/// crun use so that the default 1024 shares become weight 39.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// v1 `blkio.weight` (10..1000) to v2 `io.weight` (1..10000).
pub(crate) fn blkio_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// `pids.max` value: OCI 0 or negative means unlimited.
pub(crate) fn pids_value(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    }
}

/// Checks a hugepage size such as `2MB` or `1GB` before it becomes part of a file name.
pub(crate) fn hugepage_size(size: &str) -> Result<&str, CgroupError> {
    let ok = !size.is_empty()
        && size.chars().all(|c| c.is_ascii_alphanumeric())
        && size.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(size)
    } else {
        Err(CgroupError::InvalidResource(format!(
            "hugepage size {size:?} is not like \"2MB\""
        )))
    }
}

/// Device-cgroup rules every container gets after the spec's own: creating device
/// nodes (the runtime makes the default ones), the runtime-spec default devices
/// (null, zero, full, random, urandom, tty, console, ptmx) and pseudo-terminals.
pub(crate) const DEFAULT_ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// One v1 device-cgroup rule as written to `devices.allow`/`devices.deny`, e.g.
/// `c 1:3 rwm`. `None` for rules the device cgroup cannot express (FIFOs).
pub(crate) fn device_rule(rule: &LinuxDeviceCgroup) -> Result<Option<String>, CgroupError> {
    let typ = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => return Ok(None),
    };
    let num = |n: Option<i64>| match n {
        None | Some(-1) => Ok("*".to_string()),
        Some(n) if n >= 0 => Ok(n.to_string()),
        Some(n) => Err(CgroupError::InvalidResource(format!(
            "device number {n} is negative"
        ))),
    };
    let access = rule.access().as_deref().unwrap_or("rwm");
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidResource(format!(
            "device access {access:?} is not a combination of r, w and m"
        )));
    }
    Ok(Some(format!(
        "{typ} {}:{} {access}",
        num(rule.major())?,
        num(rule.minor())?
    )))
}

/// `rdma.max` lines, one per device: `mlx4_0 hca_handle=2 hca_object=max`.
pub(crate) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Result<Vec<String>, CgroupError> {
    let mut lines = Vec::new();
    for (dev, lim) in rdma {
        if dev.is_empty() || dev.chars().any(char::is_whitespace) {
            return Err(CgroupError::InvalidResource(format!(
                "rdma device {dev:?} is malformed"
            )));
        }
        let v = |n: Option<u32>| n.map_or_else(|| "max".to_string(), |n| n.to_string());
        lines.push(format!(
            "{dev} hca_handle={} hca_object={}",
            v(lim.hca_handles()),
            v(lim.hca_objects())
        ));
    }
    lines.sort();
    Ok(lines)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxRdmaBuilder};

    use super::*;

    #[test]
    fn cpu_weight_matches_the_runc_crun_mapping() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn io_weight_spans_the_v2_range() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 1 + (490 * 9999) / 990);
    }

    #[test]
    fn v2_swap_is_the_oci_total_minus_memory() {
        let mib = 1 << 20;
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(96 * mib)).unwrap(),
            Some((32 * mib).to_string())
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(64 * mib)).unwrap(),
            Some("0".into())
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(-1)).unwrap(),
            Some("max".into())
        );
        assert_eq!(v2_swap_max(Some(64 * mib), None).unwrap(), None);
        assert!(v2_swap_max(None, Some(mib)).is_err());
        assert!(v2_swap_max(Some(-1), Some(mib)).is_err());
        assert!(v2_swap_max(Some(2 * mib), Some(mib)).is_err());
    }

    #[test]
    fn limits_treat_zero_as_unset_and_reject_below_minus_one() {
        assert_eq!(limit_value(Some(0), "x").unwrap(), None);
        assert_eq!(limit_value(Some(-1), "x").unwrap(), Some(-1));
        assert!(limit_value(Some(-2), "x").is_err());
        assert_eq!(pids_value(0), "max");
        assert_eq!(pids_value(-1), "max");
        assert_eq!(pids_value(7), "7");
        assert_eq!(max_or(-1), "max");
        assert_eq!(max_or(5), "5");
    }

    #[test]
    fn device_rules_use_the_kernel_syntax() {
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&all).unwrap().unwrap(), "a *:* rwm");
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&null).unwrap().unwrap(), "c 1:3 rw");
        let fifo = LinuxDeviceCgroupBuilder::default()
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        assert_eq!(device_rule(&fifo).unwrap(), None);
        let bad = LinuxDeviceCgroupBuilder::default()
            .access("rwx")
            .build()
            .unwrap();
        assert!(device_rule(&bad).is_err());
    }

    #[test]
    fn hugepage_sizes_and_rdma_lines_are_validated() {
        assert_eq!(hugepage_size("2MB").unwrap(), "2MB");
        assert!(hugepage_size("../x").is_err());
        assert!(hugepage_size("MB").is_err());
        let mut rdma = HashMap::new();
        rdma.insert(
            "mlx4_0".to_string(),
            LinuxRdmaBuilder::default()
                .hca_handles(2u32)
                .build()
                .unwrap(),
        );
        assert_eq!(
            rdma_lines(&rdma).unwrap(),
            ["mlx4_0 hca_handle=2 hca_object=max"]
        );
        rdma.insert(
            "bad dev".to_string(),
            LinuxRdmaBuilder::default().build().unwrap(),
        );
        assert!(rdma_lines(&rdma).is_err());
    }
}
