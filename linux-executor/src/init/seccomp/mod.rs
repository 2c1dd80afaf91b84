//! Applying `linux.seccomp`: compile the plan with libseccomp, put the ENOSYS stub in front
//! ([`enosys`]), and load the program with `seccomp(SECCOMP_SET_MODE_FILTER)`.
//!
//! Data flow: [`compile`] runs in the container init before the start barrier, so a profile
//! the library refuses fails `Create`. It builds a libseccomp filter context from the
//! [`SeccompPlan`] (default action, architectures, one rule per planned rule, non-exact so
//! libseccomp rewrites multiplexed syscalls such as x86's `socketcall`), exports the BPF into
//! a memfd, and, unless the default action lets syscalls run, prepends the stub with the
//! highest syscall number the profile names per architecture. [`Filter::load`] is one
//! `seccomp(2)` call with the plan's flags (see [`crate::init`] for when it runs).
//!
//! The program is loaded by us, not by `seccomp_load`, because libseccomp cannot prepend
//! the stub and because the flags and errors are ours to report.
//!
//! Limitations: no `SECCOMP_FILTER_FLAG_NEW_LISTENER` (NOTIFY is refused in the plan); the
//! filter's bad-architecture action is libseccomp's default (`KILL_THREAD`), as with runc.

mod enosys;

#[cfg(test)]
mod bpf_interp;
#[cfg(test)]
mod tests;

use std::io::Read;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;
use oci_spec::runtime::{Arch, LinuxSeccompOperator};

use super::error::InitError;
use crate::plan::{SeccompAction, SeccompArg, SeccompPlan};
use crate::sys;
pub(crate) use enosys::Insn;
use enosys::{AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, ArchLimit};

/// The kernel's limit on a classic-BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// `SECCOMP_FILTER_FLAG_TSYNC`.
const FLAG_TSYNC: u32 = 1;
/// `SECCOMP_FILTER_FLAG_LOG`.
const FLAG_LOG: u32 = 2;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
const FLAG_SPEC_ALLOW: u32 = 4;

/// A compiled filter, ready to load.
#[derive(Debug)]
pub(crate) struct Filter {
    program: Vec<Insn>,
    flags: u32,
}

fn invalid(what: impl std::fmt::Display) -> InitError {
    InitError::Invalid(format!("linux.seccomp: {what}"))
}

/// Compiles `plan` (see the module docs).
pub(crate) fn compile(plan: &SeccompPlan) -> Result<Filter, InitError> {
    let mut ctx = ScmpFilterContext::new(scmp_action(plan.default_action))
        .map_err(|e| invalid(format!("default action: {e}")))?;
    let mut arches = vec![ScmpArch::native()];
    for arch in &plan.architectures {
        let scmp = scmp_arch(*arch);
        if !arches.contains(&scmp) {
            arches.push(scmp);
        }
        if !ctx
            .is_arch_present(scmp)
            .map_err(|e| invalid(format!("architecture {arch:?}: {e}")))?
        {
            ctx.add_arch(scmp).map_err(|e| {
                invalid(format!(
                    "architecture {arch:?} is not supported by libseccomp: {e}"
                ))
            })?;
        }
    }
    for rule in &plan.rules {
        let syscall = ScmpSyscall::from_name(&rule.name)
            .map_err(|e| invalid(format!("syscall {:?}: {e}", rule.name)))?;
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().map(condition).collect();
        ctx.add_rule_conditional(scmp_action(rule.action), syscall, &conditions)
            .map_err(|e| {
                invalid(format!(
                    "rule for {:?} ({:?}, {} conditions): {e}",
                    rule.name,
                    rule.action,
                    conditions.len()
                ))
            })?;
    }
    let mut program = if plan.default_action.allows() {
        Vec::new()
    } else {
        let limits: Vec<ArchLimit> = arch_limits(plan, &arches);
        enosys::stub(&limits).map_err(invalid)?
    };
    program.extend(export(&ctx)?);
    if program.len() > MAX_INSNS {
        return Err(invalid(format!(
            "the filter has {} BPF instructions, more than the kernel's {MAX_INSNS}",
            program.len()
        )));
    }
    let mut flags = 0;
    if plan.flags.log {
        flags |= FLAG_LOG;
    }
    if plan.flags.spec_allow {
        flags |= FLAG_SPEC_ALLOW;
    }
    if plan.flags.tsync {
        flags |= FLAG_TSYNC;
    }
    Ok(Filter { program, flags })
}

impl Filter {
    /// Loads the filter into this process; `all_threads` adds `SECCOMP_FILTER_FLAG_TSYNC`
    /// (for a process that may have threads, such as a Wasm runtime's). Without
    /// `no_new_privileges` the caller must hold `CAP_SYS_ADMIN`.
    pub(crate) fn load(&self, all_threads: bool) -> Result<(), InitError> {
        let flags = if all_threads {
            self.flags | FLAG_TSYNC
        } else {
            self.flags
        };
        match sys::seccomp_set_filter(&self.program, flags) {
            Ok(0) => Ok(()),
            Ok(tid) => Err(InitError::Invalid(format!(
                "seccomp: thread {tid} could not be synchronised to the filter (TSYNC)"
            ))),
            Err(e) => Err(load_error(
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                flags,
            )),
        }
    }

    /// The BPF program (stub first).
    #[cfg(test)]
    pub(crate) fn program(&self) -> &[Insn] {
        &self.program
    }
}

fn flag_names(flags: u32) -> String {
    let names: Vec<&str> = [
        (FLAG_TSYNC, "TSYNC"),
        (FLAG_LOG, "LOG"),
        (FLAG_SPEC_ALLOW, "SPEC_ALLOW"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

fn load_error(errno: Errno, flags: u32) -> InitError {
    let call = format!(
        "seccomp(SECCOMP_SET_MODE_FILTER, flags {})",
        flag_names(flags)
    );
    match errno {
        Errno::EACCES => InitError::Permission {
            setting: "the seccomp filter".into(),
            reason: format!(
                "the kernel refused {call} (EACCES): loading a filter without no_new_privileges needs CAP_SYS_ADMIN"
            ),
        },
        Errno::EINVAL => InitError::Invalid(format!(
            "the kernel refused {call} (EINVAL): a flag or the program is not supported by this kernel"
        )),
        e => InitError::sys("load the seccomp filter with", call)(e),
    }
}

/// libseccomp's program for `ctx`, through a memfd (`seccomp_export_bpf_mem` needs
/// libseccomp 2.6).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<Insn>, InitError> {
    let memfd =
        nix::sys::memfd::memfd_create(c"amphi-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(InitError::sys("memfd_create", "seccomp export"))?;
    ctx.export_bpf(&memfd)
        .map_err(|e| invalid(format!("libseccomp could not export the filter: {e}")))?;
    let mut file = std::fs::File::from(memfd);
    std::io::Seek::rewind(&mut file).map_err(|e| {
        InitError::sys("lseek", "seccomp export")(Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ))
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| {
        InitError::sys("read", "seccomp export")(Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ))
    })?;
    parse_program(&bytes)
}

/// `struct sock_filter` array in native byte order.
fn parse_program(bytes: &[u8]) -> Result<Vec<Insn>, InitError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(invalid(format!(
            "libseccomp exported {} bytes, not a whole BPF program",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The highest syscall number the plan names on `arch` (pseudo-syscalls, which libseccomp
/// numbers below 0, do not count).
fn highest(plan: &SeccompPlan, arch: ScmpArch) -> Option<u32> {
    plan.rules
        .iter()
        .filter_map(|r| ScmpSyscall::from_name_by_arch(&r.name, arch).ok())
        .filter_map(|s| u32::try_from(s.as_raw_syscall()).ok())
        .max()
}

/// The stub's limits for the filter's architectures (see [`enosys`]).
fn arch_limits(plan: &SeccompPlan, arches: &[ScmpArch]) -> Vec<ArchLimit> {
    let mut limits = Vec::new();
    for arch in arches {
        let audit_arch = match arch {
            ScmpArch::X8664 => AUDIT_ARCH_X86_64,
            ScmpArch::X86 => AUDIT_ARCH_I386,
            ScmpArch::Aarch64 => AUDIT_ARCH_AARCH64,
            ScmpArch::Arm => AUDIT_ARCH_ARM,
            // x32 joins x86_64's entry below.
            _ => continue,
        };
        let x32_max = (*arch == ScmpArch::X8664 && arches.contains(&ScmpArch::X32))
            .then(|| highest(plan, ScmpArch::X32))
            .flatten();
        limits.push(ArchLimit {
            audit_arch,
            max: highest(plan, *arch),
            x32_max,
        });
    }
    if arches.contains(&ScmpArch::X32) && !arches.contains(&ScmpArch::X8664) {
        limits.push(ArchLimit {
            audit_arch: AUDIT_ARCH_X86_64,
            max: None,
            x32_max: highest(plan, ScmpArch::X32),
        });
    }
    limits
}

fn scmp_action(action: SeccompAction) -> ScmpAction {
    match action {
        SeccompAction::KillThread => ScmpAction::KillThread,
        SeccompAction::KillProcess => ScmpAction::KillProcess,
        SeccompAction::Trap => ScmpAction::Trap,
        // The plan keeps errnos within 0..=4095 and trace messages within 16 bits.
        SeccompAction::Errno(e) => ScmpAction::Errno(e as i32),
        SeccompAction::Trace(m) => ScmpAction::Trace(m as u16),
        SeccompAction::Allow => ScmpAction::Allow,
        SeccompAction::Log => ScmpAction::Log,
    }
}

fn condition(arg: &SeccompArg) -> ScmpArgCompare {
    let (op, datum) = match arg.op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (ScmpCompareOp::MaskedEqual(arg.value), arg.value_two)
        }
    };
    ScmpArgCompare::new(arg.index, op, datum)
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}
