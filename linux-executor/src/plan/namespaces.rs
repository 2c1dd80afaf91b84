//! Namespaces and user-namespace id mappings of the plan.
//!
//! Each `linux.namespaces` entry becomes a [`NamespacePlan`] (new, or joined by absolute
//! path); kinds are unique, sorted so the user namespace comes first, and a new mount
//! namespace is mandatory. Id mappings must come with a new user namespace, map uid/gid 0
//! and the process's ids.
//!
//! Limitations: a mount namespace cannot be joined by path.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

use super::{PlanError, UserPlan};

/// A Linux namespace kind, in the order the helper enters them (user first).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    /// User namespace (joined or created first: it owns the others).
    User,
    /// Mount namespace.
    Mount,
    /// UTS namespace (hostname, domain name).
    Uts,
    /// IPC namespace.
    Ipc,
    /// Network namespace.
    Network,
    /// Cgroup namespace.
    Cgroup,
    /// PID namespace (applies to the forked child).
    Pid,
    /// Time namespace (applies to the forked child).
    Time,
}

impl NamespaceKind {
    /// The `CLONE_NEW*` flag for this kind.
    pub fn clone_flag(self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags as F;
        match self {
            Self::User => F::CLONE_NEWUSER,
            Self::Mount => F::CLONE_NEWNS,
            Self::Uts => F::CLONE_NEWUTS,
            Self::Ipc => F::CLONE_NEWIPC,
            Self::Network => F::CLONE_NEWNET,
            Self::Cgroup => F::CLONE_NEWCGROUP,
            Self::Pid => F::CLONE_NEWPID,
            // nix has no named constant for CLONE_NEWTIME.
            Self::Time => F::from_bits_retain(libc::CLONE_NEWTIME),
        }
    }

    /// The name used by the OCI spec and under `/proc/<pid>/ns/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Mount => "mnt",
            Self::Uts => "uts",
            Self::Ipc => "ipc",
            Self::Network => "net",
            Self::Cgroup => "cgroup",
            Self::Pid => "pid",
            Self::Time => "time",
        }
    }

    fn from_oci(typ: LinuxNamespaceType) -> Self {
        match typ {
            LinuxNamespaceType::User => Self::User,
            LinuxNamespaceType::Mount => Self::Mount,
            LinuxNamespaceType::Uts => Self::Uts,
            LinuxNamespaceType::Ipc => Self::Ipc,
            LinuxNamespaceType::Network => Self::Network,
            LinuxNamespaceType::Cgroup => Self::Cgroup,
            LinuxNamespaceType::Pid => Self::Pid,
            LinuxNamespaceType::Time => Self::Time,
        }
    }
}

/// One namespace of the container: a new one (`path: None`) or an existing one to join.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    /// Which namespace.
    pub kind: NamespaceKind,
    /// The namespace file to join (`/proc/<pid>/ns/<kind>` or a bind mount of one).
    pub path: Option<PathBuf>,
}

/// One line of `uid_map` / `gid_map`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids mapped.
    pub size: u32,
}

impl IdMapping {
    fn contains(&self, id: u32) -> bool {
        id >= self.container_id
            && u64::from(id) < u64::from(self.container_id) + u64::from(self.size)
    }
}

/// Renders mappings in the format of `/proc/<pid>/uid_map` (one `inside outside count` line each).
pub fn id_map_text(mappings: &[IdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

pub(super) fn namespaces(
    specs: &[oci_spec::runtime::LinuxNamespace],
) -> Result<Vec<NamespacePlan>, PlanError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for ns in specs {
        let kind = NamespaceKind::from_oci(ns.typ());
        if !seen.insert(kind) {
            return Err(PlanError::DuplicateNamespace(kind.name()));
        }
        let path = ns
            .path()
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned();
        if let Some(p) = &path {
            if !p.is_absolute() {
                return Err(PlanError::RelativeNamespacePath {
                    kind: kind.name(),
                    path: p.clone(),
                });
            }
            if kind == NamespaceKind::Mount {
                return Err(PlanError::MountNamespaceRequired);
            }
        }
        out.push(NamespacePlan { kind, path });
    }
    if !seen.contains(&NamespaceKind::Mount) {
        return Err(PlanError::MountNamespaceRequired);
    }
    out.sort_by_key(|n| n.kind);
    Ok(out)
}

pub(super) fn id_mappings(specs: Option<&[LinuxIdMapping]>) -> Vec<IdMapping> {
    specs
        .unwrap_or_default()
        .iter()
        .map(|m| IdMapping {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        })
        .collect()
}

pub(super) fn check_id_mappings(
    new_userns: bool,
    uids: &[IdMapping],
    gids: &[IdMapping],
    user: &UserPlan,
) -> Result<(), PlanError> {
    if !new_userns {
        if !uids.is_empty() || !gids.is_empty() {
            return Err(PlanError::IdMappings(
                "mappings need a new user namespace (without path) in linux.namespaces".into(),
            ));
        }
        return Ok(());
    }
    if uids.is_empty() || gids.is_empty() {
        return Err(PlanError::IdMappings(
            "a new user namespace needs both uid and gid mappings".into(),
        ));
    }
    if uids.iter().chain(gids).any(|m| m.size == 0) {
        return Err(PlanError::IdMappings("a mapping has size 0".into()));
    }
    let unmapped = |maps: &[IdMapping], id: u32, what: &str| {
        if maps.iter().any(|m| m.contains(id)) {
            Ok(())
        } else {
            Err(PlanError::IdMappings(format!("{what} {id} is not mapped")))
        }
    };
    unmapped(uids, 0, "uid")?;
    unmapped(gids, 0, "gid")?;
    unmapped(uids, user.uid, "process.user.uid")?;
    unmapped(gids, user.gid, "process.user.gid")?;
    for gid in &user.additional_gids {
        unmapped(gids, *gid, "process.user.additionalGids entry")?;
    }
    Ok(())
}
