//! The `process` section of the spec: what to run and with which identity and limits.
//!
//! Capabilities are kept as canonical names (`CAP_CHOWN`) checked against the `caps` crate,
//! rlimits as canonical names (`RLIMIT_NOFILE`) checked against the kernel's list; the helper
//! converts both again with the same functions, so a plan that validated here applies there.
//!
//! Limitations: `process.user.username` and `commandLine` are Windows fields with no
//! meaning here (containerd resolves Linux users into uid and gid before the spec).

use std::str::FromStr;

use nix::sys::resource::Resource;
use serde::{Deserialize, Serialize};

use super::{PlanError, check_nul};

/// Identity of the workload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    /// Container uid.
    pub uid: u32,
    /// Container gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask applied before exec (`None`: keep the inherited one).
    pub umask: Option<u32>,
}

/// Capability sets by canonical name (`CAP_*`). Inheritable is empty unless the spec asks.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilitiesPlan {
    /// Bounding set: every other capability is dropped from it.
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Ambient set.
    pub ambient: Vec<String>,
}

/// One rlimit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RlimitPlan {
    /// Canonical name, `RLIMIT_*`.
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The workload process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    /// argv; `args[0]` is resolved against the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// The complete environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: std::path::PathBuf,
    /// uid, gid, groups, umask.
    pub user: UserPlan,
    /// Capability sets.
    pub capabilities: CapabilitiesPlan,
    /// rlimits, in spec order, no duplicates.
    pub rlimits: Vec<RlimitPlan>,
    /// `PR_SET_NO_NEW_PRIVS` before exec.
    pub no_new_privileges: bool,
    /// Value written to `/proc/self/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// `process.terminal`: the process gets a pty of the container's devpts instance as
    /// its controlling terminal and stdio; the master goes to the shim.
    #[serde(default)]
    pub terminal: bool,
    /// `process.consoleSize` as (rows, columns), applied to a new terminal.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// `process.apparmorProfile` (non-empty).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// `process.selinuxLabel` (non-empty).
    #[serde(default)]
    pub selinux_label: Option<String>,
}

impl ProcessPlan {
    /// The value of `PATH` in the container's environment, if set.
    pub fn path_env(&self) -> Option<&str> {
        self.env.iter().rev().find_map(|e| e.strip_prefix("PATH="))
    }
}

/// Parses a capability name (`CAP_SYS_ADMIN`; the `CAP_` prefix is optional).
pub fn capability_from_name(name: &str) -> Result<caps::Capability, PlanError> {
    let upper = name.to_ascii_uppercase();
    let canonical = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&canonical).map_err(|_| PlanError::UnknownCapability(name.into()))
}

const RLIMITS: &[(&str, Resource)] = &[
    ("RLIMIT_AS", Resource::RLIMIT_AS),
    ("RLIMIT_CORE", Resource::RLIMIT_CORE),
    ("RLIMIT_CPU", Resource::RLIMIT_CPU),
    ("RLIMIT_DATA", Resource::RLIMIT_DATA),
    ("RLIMIT_FSIZE", Resource::RLIMIT_FSIZE),
    ("RLIMIT_LOCKS", Resource::RLIMIT_LOCKS),
    ("RLIMIT_MEMLOCK", Resource::RLIMIT_MEMLOCK),
    ("RLIMIT_MSGQUEUE", Resource::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", Resource::RLIMIT_NICE),
    ("RLIMIT_NOFILE", Resource::RLIMIT_NOFILE),
    ("RLIMIT_NPROC", Resource::RLIMIT_NPROC),
    ("RLIMIT_RSS", Resource::RLIMIT_RSS),
    ("RLIMIT_RTPRIO", Resource::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", Resource::RLIMIT_RTTIME),
    ("RLIMIT_SIGPENDING", Resource::RLIMIT_SIGPENDING),
    ("RLIMIT_STACK", Resource::RLIMIT_STACK),
];

/// Maps a canonical rlimit name to the kernel resource.
pub fn rlimit_resource_from_name(name: &str) -> Result<Resource, PlanError> {
    RLIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| PlanError::UnknownRlimit(name.into()))
}

/// Maps a validated rlimit plan to the kernel resource (`None` only for a plan that did not
/// come from [`super::InitPlan::from_spec`]).
pub fn rlimit_resource(rlimit: &RlimitPlan) -> Option<Resource> {
    rlimit_resource_from_name(&rlimit.name).ok()
}

fn capability_names(
    set: &Option<oci_spec::runtime::Capabilities>,
) -> Result<Vec<String>, PlanError> {
    let mut names = set
        .iter()
        .flatten()
        .map(|c| {
            let name = format!("CAP_{c}");
            capability_from_name(&name).map(|cap| cap.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

pub(super) fn plan(
    p: &oci_spec::runtime::Process,
    warnings: &mut Vec<String>,
) -> Result<ProcessPlan, PlanError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(PlanError::EmptyArgs);
    }
    check_nul("process.args", &args)?;
    let env = p.env().clone().unwrap_or_default();
    check_nul("process.env", &env)?;
    if let Some(bad) = env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        return Err(PlanError::BadEnv(bad.clone()));
    }
    let cwd = p.cwd().clone();
    if !cwd.is_absolute() {
        return Err(PlanError::RelativeCwd(cwd));
    }
    check_nul("process.cwd", [&cwd.to_string_lossy().into_owned()])?;

    let u = p.user();
    let user = UserPlan {
        uid: u.uid(),
        gid: u.gid(),
        additional_gids: u.additional_gids().clone().unwrap_or_default(),
        umask: u.umask(),
    };

    let capabilities = match p.capabilities() {
        Some(c) => CapabilitiesPlan {
            bounding: capability_names(c.bounding())?,
            effective: capability_names(c.effective())?,
            inheritable: capability_names(c.inheritable())?,
            permitted: capability_names(c.permitted())?,
            ambient: capability_names(c.ambient())?,
        },
        None => {
            warnings
                .push("process.capabilities is not set: the workload gets no capability".into());
            CapabilitiesPlan::default()
        }
    };

    let mut rlimits: Vec<RlimitPlan> = Vec::new();
    for r in p.rlimits().iter().flatten() {
        let name = r.typ().to_string();
        rlimit_resource_from_name(&name)?;
        if rlimits.iter().any(|e| e.name == name) {
            return Err(PlanError::DuplicateRlimit(name));
        }
        if r.soft() > r.hard() {
            return Err(PlanError::RlimitSoftAboveHard {
                name,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        rlimits.push(RlimitPlan {
            name,
            soft: r.soft(),
            hard: r.hard(),
        });
    }

    Ok(ProcessPlan {
        args,
        env,
        cwd,
        user,
        capabilities,
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: console_size(p)?,
        apparmor_profile: label(p.apparmor_profile(), "process.apparmorProfile")?,
        selinux_label: label(p.selinux_label(), "process.selinuxLabel")?,
    })
}

/// An LSM profile or label: absent when empty, never with a NUL byte.
pub(super) fn label(
    value: &Option<String>,
    field: &'static str,
) -> Result<Option<String>, PlanError> {
    let value = value.as_ref().filter(|v| !v.is_empty());
    super::check_nul(field, value)?;
    Ok(value.cloned())
}

/// `process.consoleSize` as (rows, columns); a size of 0 is no size.
fn console_size(p: &oci_spec::runtime::Process) -> Result<Option<(u16, u16)>, PlanError> {
    let Some(size) = p.console_size() else {
        return Ok(None);
    };
    let (height, width) = (size.height(), size.width());
    if height == 0 || width == 0 {
        return Ok(None);
    }
    match (u16::try_from(height), u16::try_from(width)) {
        (Ok(rows), Ok(cols)) => Ok(Some((rows, cols))),
        _ => Err(PlanError::BadConsoleSize { height, width }),
    }
}
