//! Device nodes of the plan: the default devices every container gets, merged with
//! `linux.devices` (an entry of the spec replaces a default on the same path).
//!
//! Limitations: device paths must be under `/dev`; type `a` (cgroup-only) is rejected here.

use std::path::PathBuf;

use oci_spec::runtime::LinuxDeviceType;
use serde::{Deserialize, Serialize};

use super::{PlanError, is_clean_absolute};

/// The type of a device node.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// FIFO.
    Fifo,
}

/// A device node to create under the container's `/dev`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// Node type.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner (container uid).
    pub uid: u32,
    /// Group (container gid).
    pub gid: u32,
}

/// The devices every container gets (`config-linux.md`, "Default Devices").
fn default_devices() -> Vec<DevicePlan> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DevicePlan {
        path: PathBuf::from("/dev").join(name),
        kind: DeviceKind::Char,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub(super) fn devices(
    specs: &[oci_spec::runtime::LinuxDevice],
    setup_dev: bool,
) -> Result<Vec<DevicePlan>, PlanError> {
    let mut out = if setup_dev {
        default_devices()
    } else {
        Vec::new()
    };
    for d in specs {
        let path = d.path().clone();
        let bad = |reason| PlanError::BadDevice {
            path: path.clone(),
            reason,
        };
        if !is_clean_absolute(&path) || !path.starts_with("/dev") {
            return Err(bad("path must be absolute and under /dev"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => DeviceKind::Fifo,
            LinuxDeviceType::A => return Err(bad("type must be c, u, b or p")),
        };
        let major = u64::try_from(d.major()).map_err(|_| bad("major must not be negative"))?;
        let minor = u64::try_from(d.minor()).map_err(|_| bad("minor must not be negative"))?;
        let plan = DevicePlan {
            path: path.clone(),
            kind,
            major,
            minor,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        out.retain(|existing| existing.path != plan.path);
        out.push(plan);
    }
    Ok(out)
}
