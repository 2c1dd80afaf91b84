//! The ENOSYS stub: a few classic-BPF instructions run before libseccomp's program, so a
//! syscall newer than the profile fails with `ENOSYS` rather than the default action.
//!
//! Why: a profile is an allow-list written against the kernels of its day. When glibc (or a
//! Go runtime) meets a new syscall (`clone3`, `faccessat2`, `openat2`...), it tries it and
//! falls back to the old one on `ENOSYS`, which is what an old kernel answers. The default
//! action of a profile is usually `EPERM`, and `EPERM` is taken as "refused": no fallback,
//! the program fails. runc's `patchbpf` solved this first; this is the same idea, written
//! here from the kernel's BPF semantics.
//!
//! The stub checks, per architecture of the filter it knows the audit value of (x86_64,
//! x86, x32, aarch64, arm), whether the syscall number is above the highest one the profile
//! names on that architecture; if so it returns `SECCOMP_RET_ERRNO | ENOSYS`, otherwise it
//! falls through to libseccomp's program, which then sees the syscall exactly as without
//! the stub. On x86_64, x32 syscalls arrive with `AUDIT_ARCH_X86_64` and
//! `__X32_SYSCALL_BIT` set in the number: they are compared with the x32 limit when the
//! filter has x32, and left to libseccomp's bad-architecture action otherwise.
//!
//! Layout, for each architecture with a limit (`A` is the accumulator):
//!
//! ```text
//! A = seccomp_data.arch
//! if A != AUDIT_ARCH_<arch> goto next_arch
//! A = seccomp_data.nr
//! [x86_64 only: if A & __X32_SYSCALL_BIT goto x32_check]
//! if A > max goto enosys else goto filter
//! [x32_check: if A > x32_max goto enosys else goto filter]
//! next_arch: ...
//! goto filter
//! enosys: return ERRNO(ENOSYS)
//! filter: (libseccomp's program)
//! ```
//!
//! Limitations: the syscall numbers below the highest the profile names are left to the
//! default action even when the profile does not name them (a gap is not "newer"); the
//! x32-only syscalls (512..=547) make the x32 limit high, so newer x32 syscalls below 512
//! get the default action; architectures other than the five above get no stub.

/// A classic-BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    /// Opcode.
    pub code: u16,
    /// Relative jump when true.
    pub jt: u8,
    /// Relative jump when false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS`.
pub(crate) const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`.
pub(crate) const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub(crate) const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`.
pub(crate) const JMP_JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JSET | BPF_K`.
pub(crate) const JMP_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`.
pub(crate) const RET_K: u16 = 0x06;

/// `offsetof(struct seccomp_data, nr)`.
const OFFSET_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const OFFSET_ARCH: u32 = 4;
/// `SECCOMP_RET_ERRNO`.
pub(crate) const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// `__X32_SYSCALL_BIT`.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64` (x32 shares it).
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386`.
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64`.
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_ARM`.
pub(crate) const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// The limits of one audit architecture: syscall numbers above `max` (above `x32_max` for
/// numbers with [`X32_SYSCALL_BIT`], on x86_64) get `ENOSYS`. `None`: no limit, the
/// syscall goes to libseccomp's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArchLimit {
    /// `AUDIT_ARCH_*`.
    pub audit_arch: u32,
    /// Highest native syscall number the profile names.
    pub max: Option<u32>,
    /// Highest x32 syscall number (with the bit) the profile names; x86_64 only.
    pub x32_max: Option<u32>,
}

/// The stub grew beyond what an 8-bit conditional jump reaches (cannot happen with the
/// architectures the kernel has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("seccomp ENOSYS stub: jump of {0} instructions does not fit a BPF conditional jump")]
pub(crate) struct StubTooLarge(usize);

#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// `n` instructions after the next.
    Skip(usize),
    Enosys,
    Filter,
}

struct Pending {
    code: u16,
    jt: Target,
    jf: Target,
    k: u32,
}

fn jump(code: u16, k: u32, jt: Target, jf: Target) -> Pending {
    Pending { code, jt, jf, k }
}

/// One check of the number in the accumulator: `ENOSYS` above `max`, else the filter.
fn check(max: Option<u32>) -> Pending {
    match max {
        Some(max) => jump(JMP_JGT_K, max, Target::Enosys, Target::Filter),
        None => jump(JMP_JA, 0, Target::Filter, Target::Filter),
    }
}

/// The stub for `limits` (empty when no architecture has a limit). See the module docs.
pub(crate) fn stub(limits: &[ArchLimit]) -> Result<Vec<Insn>, StubTooLarge> {
    let mut code = Vec::new();
    for l in limits {
        let x86_64 = l.audit_arch == AUDIT_ARCH_X86_64;
        if l.max.is_none() && !(x86_64 && l.x32_max.is_some()) {
            continue;
        }
        let mut block = vec![jump(LD_W_ABS, OFFSET_NR, Target::Next, Target::Next)];
        if x86_64 {
            block.push(jump(
                JMP_JSET_K,
                X32_SYSCALL_BIT,
                Target::Skip(1),
                Target::Next,
            ));
            block.push(check(l.max));
            block.push(check(l.x32_max));
        } else {
            block.push(check(l.max));
        }
        code.push(jump(LD_W_ABS, OFFSET_ARCH, Target::Next, Target::Next));
        code.push(jump(
            JMP_JEQ_K,
            l.audit_arch,
            Target::Next,
            Target::Skip(block.len()),
        ));
        code.extend(block);
    }
    if code.is_empty() {
        return Ok(Vec::new());
    }
    code.push(jump(JMP_JA, 0, Target::Filter, Target::Filter));
    code.push(jump(
        RET_K,
        SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        Target::Next,
        Target::Next,
    ));
    let enosys = code.len() - 1;
    let filter = code.len();
    let offset = |at: usize, t: Target| -> usize {
        match t {
            Target::Next => 0,
            Target::Skip(n) => n,
            Target::Enosys => enosys - (at + 1),
            Target::Filter => filter - (at + 1),
        }
    };
    code.iter()
        .enumerate()
        .map(|(at, p)| {
            let short = |t| {
                let n = offset(at, t);
                u8::try_from(n).map_err(|_| StubTooLarge(n))
            };
            Ok(match p.code {
                JMP_JA => Insn {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(offset(at, p.jt)).map_err(|_| StubTooLarge(at))?,
                },
                JMP_JEQ_K | JMP_JGT_K | JMP_JSET_K => Insn {
                    code: p.code,
                    jt: short(p.jt)?,
                    jf: short(p.jf)?,
                    k: p.k,
                },
                _ => Insn {
                    code: p.code,
                    jt: 0,
                    jf: 0,
                    k: p.k,
                },
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "enosys_tests.rs"]
mod tests;
