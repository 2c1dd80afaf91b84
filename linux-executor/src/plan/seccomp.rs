//! `linux.seccomp` as plain data: the default action, the architectures, the filter flags
//! and one rule per (syscall, condition set), validated.
//!
//! What the plan decides, so the init only compiles and loads ([`crate::init`]):
//! - actions: every `SCMP_ACT_*`; `SCMP_ACT_KILL` is `KILL_THREAD` (as in libseccomp);
//!   `errnoRet` (`defaultErrnoRet` for the default action) is the errno of `SCMP_ACT_ERRNO`
//!   (EPERM when absent) and the message of `SCMP_ACT_TRACE` (0 when absent); it is refused
//!   on any other action and when it does not fit (errno 0..=4095, trace 0..=65535);
//! - syscall names: a name the seccomp library does not know on this machine's architecture
//!   is skipped, as runc does, and listed once in the plan's warnings (an old library or a
//!   profile written for a newer kernel must not stop the container);
//! - argument conditions: `index` 0..=5, every `SCMP_CMP_*` (for `SCMP_CMP_MASKED_EQ`,
//!   `value` is the mask and `valueTwo` the value compared with `arg & mask`). Conditions on
//!   distinct arguments of one entry must all match (one rule); when an entry names the same
//!   argument twice, each condition becomes its own rule (any may match), as runc does,
//!   because one libseccomp rule cannot compare one argument twice;
//! - a rule whose action is the default action is dropped (it would change nothing, and
//!   libseccomp refuses it);
//! - flags: `SECCOMP_FILTER_FLAG_LOG`, `_SPEC_ALLOW`, `_TSYNC` and `_WAIT_KILLABLE_RECV`
//!   (meaningful only with a notification listener, which amphi does not offer, so it never
//!   reaches the kernel). Unknown flags, actions, operators and architectures are refused
//!   when the spec is parsed (oci-spec's typed enums: INVALID_ARGUMENT naming the value).
//!
//! Limitations: `SCMP_ACT_NOTIFY` (a seccomp agent at `listenerPath`) is refused with a
//! [`PlanError::Seccomp`] naming the field; the container state is never sent to an agent.

use std::collections::BTreeSet;

use libseccomp::ScmpSyscall;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
    LinuxSyscall,
};
use serde::{Deserialize, Serialize};

use super::PlanError;

/// The errno of `SCMP_ACT_ERRNO` without `errnoRet` (runc and crun agree).
pub const DEFAULT_ERRNO: u32 = libc::EPERM as u32;
/// The largest errno the kernel passes back (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;
/// Arguments a syscall can have.
const MAX_ARG_INDEX: usize = 5;

/// A validated `linux.seccomp`. See the module docs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SeccompPlan {
    /// `defaultAction` with `defaultErrnoRet`.
    pub default_action: SeccompAction,
    /// `architectures`, without duplicates, in spec order (the native one is always in the
    /// filter, as libseccomp adds it).
    pub architectures: Vec<Arch>,
    /// `flags`.
    pub flags: SeccompFlags,
    /// The rules, in spec order.
    pub rules: Vec<SeccompRule>,
}

/// What a matching (or unmatched) syscall gets.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompAction {
    /// `SCMP_ACT_KILL_THREAD` (and `SCMP_ACT_KILL`).
    KillThread,
    /// `SCMP_ACT_KILL_PROCESS`.
    KillProcess,
    /// `SCMP_ACT_TRAP`: SIGSYS.
    Trap,
    /// `SCMP_ACT_ERRNO` with its errno.
    Errno(u32),
    /// `SCMP_ACT_TRACE` with the message for the tracer.
    Trace(u32),
    /// `SCMP_ACT_ALLOW`.
    Allow,
    /// `SCMP_ACT_LOG`: allowed and logged.
    Log,
}

impl SeccompAction {
    /// True when the action lets the syscall run.
    pub fn allows(self) -> bool {
        matches!(self, SeccompAction::Allow | SeccompAction::Log)
    }
}

/// `linux.seccomp.flags`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompFlags {
    /// `SECCOMP_FILTER_FLAG_LOG`.
    pub log: bool,
    /// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
    pub spec_allow: bool,
    /// `SECCOMP_FILTER_FLAG_TSYNC` (the init adds it by itself when it has threads).
    pub tsync: bool,
    /// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (only meaningful with a listener).
    pub wait_killable_recv: bool,
}

/// One libseccomp rule: `name` with all of `args` matching gets `action`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SeccompRule {
    /// The syscall name (known to the library).
    pub name: String,
    /// The action.
    pub action: SeccompAction,
    /// Conditions, all on distinct arguments.
    pub args: Vec<SeccompArg>,
}

/// One argument condition.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompArg {
    /// Argument index, 0..=5.
    pub index: u32,
    /// The comparison.
    pub op: LinuxSeccompOperator,
    /// `value` (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// `valueTwo` (the compared value for `SCMP_CMP_MASKED_EQ`), 0 when absent.
    pub value_two: u64,
}

/// Plans `linux.seccomp`; syscall names the library does not know go to `warnings` (one
/// line).
pub fn plan(spec: &LinuxSeccomp, warnings: &mut Vec<String>) -> Result<SeccompPlan, PlanError> {
    let default_action = action(
        "linux.seccomp.defaultAction",
        spec.default_action(),
        spec.default_errno_ret(),
    )?;
    let mut architectures = Vec::new();
    for arch in spec.architectures().iter().flatten() {
        if !architectures.contains(arch) {
            architectures.push(*arch);
        }
    }
    let mut flags = SeccompFlags::default();
    for flag in spec.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags.log = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => flags.spec_allow = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => flags.tsync = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                flags.wait_killable_recv = true;
            }
        }
    }
    let mut rules = Vec::new();
    let mut unknown = BTreeSet::new();
    for (i, entry) in spec.syscalls().iter().flatten().enumerate() {
        let act = action(
            &format!("linux.seccomp.syscalls[{i}].action"),
            entry.action(),
            entry.errno_ret(),
        )?;
        let groups = arg_groups(i, entry)?;
        if act == default_action {
            continue;
        }
        for name in entry.names() {
            if ScmpSyscall::from_name(name).is_err() {
                unknown.insert(name.clone());
                continue;
            }
            for args in &groups {
                rules.push(SeccompRule {
                    name: name.clone(),
                    action: act,
                    args: args.clone(),
                });
            }
        }
    }
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown.iter().map(String::as_str).collect();
        warnings.push(format!(
            "linux.seccomp: syscalls unknown to libseccomp on this architecture were skipped: {}",
            names.join(", ")
        ));
    }
    Ok(SeccompPlan {
        default_action,
        architectures,
        flags,
        rules,
    })
}

fn action(
    field: &str,
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<SeccompAction, PlanError> {
    let bad = |reason: String| PlanError::Seccomp {
        field: field.to_string(),
        reason,
    };
    let planned = match act {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActErrno => {
            let errno = errno_ret.unwrap_or(DEFAULT_ERRNO);
            if errno > MAX_ERRNO {
                return Err(bad(format!(
                    "errno {errno} is above the largest errno ({MAX_ERRNO})"
                )));
            }
            return Ok(SeccompAction::Errno(errno));
        }
        LinuxSeccompAction::ScmpActTrace => {
            let msg = errno_ret.unwrap_or(0);
            if msg > u32::from(u16::MAX) {
                return Err(bad(format!("trace message {msg} does not fit in 16 bits")));
            }
            return Ok(SeccompAction::Trace(msg));
        }
        LinuxSeccompAction::ScmpActNotify => {
            return Err(bad(
                "SCMP_ACT_NOTIFY is not supported (amphi does not hand a seccomp notification fd \
                 to a listenerPath agent)"
                    .into(),
            ));
        }
    };
    if errno_ret.is_some() {
        return Err(bad(format!(
            "an errno return is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {act}"
        )));
    }
    Ok(planned)
}

/// The condition sets of entry `i`: one set with every condition when their argument indexes
/// are distinct, else one set per condition (see the module docs).
fn arg_groups(i: usize, entry: &LinuxSyscall) -> Result<Vec<Vec<SeccompArg>>, PlanError> {
    let mut args = Vec::new();
    for (j, arg) in entry.args().iter().flatten().enumerate() {
        if arg.index() > MAX_ARG_INDEX {
            return Err(PlanError::Seccomp {
                field: format!("linux.seccomp.syscalls[{i}].args[{j}].index"),
                reason: format!(
                    "argument index {} is out of range (a syscall has arguments 0 to {MAX_ARG_INDEX})",
                    arg.index()
                ),
            });
        }
        args.push(SeccompArg {
            // The index is at most 5 (checked above).
            index: arg.index() as u32,
            op: arg.op(),
            value: arg.value(),
            value_two: arg.value_two().unwrap_or(0),
        });
    }
    let distinct: BTreeSet<u32> = args.iter().map(|a| a.index).collect();
    if distinct.len() == args.len() {
        Ok(vec![args])
    } else {
        Ok(args.into_iter().map(|a| vec![a]).collect())
    }
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
