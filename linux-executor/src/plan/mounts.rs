//! Mount entries of the spec turned into mount(2) arguments.
//!
//! Each `mounts[]` entry becomes a [`MountPlan`]: a kind (bind, cgroup, or a plain
//! filesystem), the `MS_*` flags its options ask for, the remaining options joined as the
//! filesystem data string, and an optional propagation change. The option table follows
//! mount(8) and the OCI spec's list (`config.md`, "Mounts").
//!
//! Limitations: recursive mount attributes (`rro`, `rnosuid`, ...) and id-mapped mounts
//! (`idmap`, `ridmap`) are rejected; `tmpcopyup` is refused; `x-*` options (userspace
//! hints for mount helpers) are ignored. Bind sources must be absolute (bundle-relative sources are not resolved).

use std::path::PathBuf;

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use super::{PlanError, check_nul, is_clean_absolute};

/// What a mount is.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path (`bind`/`rbind` option or type `bind`).
    Bind {
        /// Absolute host path.
        source: PathBuf,
        /// `rbind`: bind the whole subtree.
        recursive: bool,
    },
    /// `cgroup` or `cgroup2`: the container's view of its cgroups, built by the helper.
    Cgroup,
    /// Any other filesystem, mounted with `mount(source, destination, fstype, flags, data)`.
    Fs {
        /// Filesystem type (`proc`, `tmpfs`, `devpts`...).
        fstype: String,
        /// Mount source (often the type again, ignored by most pseudo filesystems).
        source: String,
    },
}

/// A propagation type.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PropagationKind {
    /// `MS_PRIVATE`.
    Private,
    /// `MS_SHARED`.
    Shared,
    /// `MS_SLAVE`.
    Slave,
    /// `MS_UNBINDABLE`.
    Unbindable,
}

/// A propagation change, possibly recursive.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// The propagation type.
    pub kind: PropagationKind,
    /// Apply to the whole subtree (`MS_REC`).
    pub recursive: bool,
}

impl Propagation {
    /// The flags for `mount(NULL, target, NULL, flags, NULL)`.
    pub fn ms_flags(self) -> MsFlags {
        let base = match self.kind {
            PropagationKind::Private => MsFlags::MS_PRIVATE,
            PropagationKind::Shared => MsFlags::MS_SHARED,
            PropagationKind::Slave => MsFlags::MS_SLAVE,
            PropagationKind::Unbindable => MsFlags::MS_UNBINDABLE,
        };
        if self.recursive {
            base | MsFlags::MS_REC
        } else {
            base
        }
    }
}

/// One entry of `mounts`, ready for mount(2).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// What to mount.
    pub kind: MountKind,
    /// `MS_*` bits from the options (without `MS_BIND`/`MS_REC`, implied by the kind).
    pub flags: libc::c_ulong,
    /// Options mount(2) passes to the filesystem (`mode=755,size=65536k`...).
    pub data: String,
    /// Propagation change applied after mounting.
    pub propagation: Option<Propagation>,
}

impl MountPlan {
    /// The `MS_*` flags requested by the options.
    pub fn ms_flags(&self) -> MsFlags {
        MsFlags::from_bits_truncate(self.flags)
    }

    /// True when the mount must be read-only.
    pub fn readonly(&self) -> bool {
        self.ms_flags().contains(MsFlags::MS_RDONLY)
    }
}

/// Parses a propagation option (`private`, `rslave`...).
pub(super) fn propagation_option(option: &str) -> Option<Propagation> {
    let (recursive, name) = match option.strip_prefix('r') {
        Some(rest) if rest != "o" && rest != "w" => (true, rest),
        _ => (false, option),
    };
    let kind = match name {
        "private" => PropagationKind::Private,
        "shared" => PropagationKind::Shared,
        "slave" => PropagationKind::Slave,
        "unbindable" => PropagationKind::Unbindable,
        _ => return None,
    };
    Some(Propagation { kind, recursive })
}

/// What one option does to a mount.
#[derive(Debug, PartialEq, Eq)]
enum OptionEffect {
    Set(MsFlags),
    Clear(MsFlags),
    Bind { recursive: bool },
    Propagation(Propagation),
    Ignore,
    Unsupported,
    Data,
}

fn option_effect(option: &str) -> OptionEffect {
    use OptionEffect::{Clear, Set};
    match option {
        "defaults" => OptionEffect::Ignore,
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "silent" => Set(MsFlags::MS_SILENT),
        "loud" => Clear(MsFlags::MS_SILENT),
        "bind" => OptionEffect::Bind { recursive: false },
        "rbind" => OptionEffect::Bind { recursive: true },
        "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec"
        | "rnodiratime" | "rdiratime" | "rrelatime" | "rnorelatime" | "rnoatime" | "ratime"
        | "rstrictatime" | "rnostrictatime" | "rnosymfollow" | "rsymfollow" | "idmap"
        | "ridmap" | "remount" => OptionEffect::Unsupported,
        o if o.starts_with("x-") => OptionEffect::Ignore,
        o => propagation_option(o).map_or(OptionEffect::Data, OptionEffect::Propagation),
    }
}

/// Plans every entry of `mounts`.
pub(super) fn plan(mounts: &[oci_spec::runtime::Mount]) -> Result<Vec<MountPlan>, PlanError> {
    mounts
        .iter()
        .enumerate()
        .map(|(index, m)| plan_one(index, m))
        .collect()
}

fn plan_one(index: usize, m: &oci_spec::runtime::Mount) -> Result<MountPlan, PlanError> {
    let destination = m.destination().clone();
    if !is_clean_absolute(&destination) {
        return Err(PlanError::RelativeMountDestination { index, destination });
    }
    let bad = |reason: String| PlanError::BadMount {
        index,
        destination: destination.clone(),
        reason,
    };
    let options = m.options().clone().unwrap_or_default();
    check_nul("mounts options", options.iter())?;

    let mut flags = MsFlags::empty();
    let mut bind: Option<bool> = None;
    let mut propagation = None;
    let mut data = Vec::new();
    for option in &options {
        match option_effect(option) {
            OptionEffect::Set(f) => flags.insert(f),
            OptionEffect::Clear(f) => flags.remove(f),
            OptionEffect::Bind { recursive } => bind = Some(bind.unwrap_or(false) || recursive),
            OptionEffect::Propagation(p) => propagation = Some(p),
            OptionEffect::Ignore => {}
            OptionEffect::Unsupported => {
                return Err(bad(format!("unsupported mount option {option:?}")));
            }
            OptionEffect::Data if option == "tmpcopyup" => {
                return Err(bad(
                    "mount option \"tmpcopyup\" is not supported by amphi".to_string()
                ));
            }
            OptionEffect::Data => data.push(option.clone()),
        }
    }

    let fstype = m.typ().clone().unwrap_or_default();
    let source = m.source().clone();
    if fstype == "bind" && bind.is_none() {
        bind = Some(false);
    }
    let kind = if let Some(recursive) = bind {
        let source = source.ok_or_else(|| bad("a bind mount needs a source".into()))?;
        if !source.is_absolute() {
            return Err(bad(format!(
                "bind source {source:?} must be an absolute path"
            )));
        }
        if !data.is_empty() {
            return Err(bad(format!("unknown mount options {:?}", data.join(","))));
        }
        MountKind::Bind { source, recursive }
    } else if fstype == "cgroup" || fstype == "cgroup2" {
        MountKind::Cgroup
    } else if fstype.is_empty() {
        return Err(bad("type is required (or a bind/rbind option)".into()));
    } else {
        let source = source.map_or_else(|| fstype.clone(), |s| s.to_string_lossy().into_owned());
        MountKind::Fs { fstype, source }
    };

    Ok(MountPlan {
        destination,
        kind,
        flags: flags.bits(),
        data: data.join(","),
        propagation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_effects() {
        assert_eq!(option_effect("ro"), OptionEffect::Set(MsFlags::MS_RDONLY));
        assert_eq!(option_effect("rw"), OptionEffect::Clear(MsFlags::MS_RDONLY));
        assert_eq!(
            option_effect("rbind"),
            OptionEffect::Bind { recursive: true }
        );
        assert_eq!(option_effect("mode=755"), OptionEffect::Data);
        assert_eq!(option_effect("rro"), OptionEffect::Unsupported);
        assert_eq!(option_effect("x-systemd.automount"), OptionEffect::Ignore);
        assert_eq!(
            option_effect("rslave"),
            OptionEffect::Propagation(Propagation {
                kind: PropagationKind::Slave,
                recursive: true
            })
        );
        assert_eq!(
            option_effect("shared"),
            OptionEffect::Propagation(Propagation {
                kind: PropagationKind::Shared,
                recursive: false
            })
        );
    }

    #[test]
    fn propagation_flags() {
        let p = propagation_option("rprivate").expect("rprivate parses");
        assert_eq!(p.ms_flags(), MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(propagation_option("ro"), None);
        assert_eq!(propagation_option("bogus"), None);
    }
}
