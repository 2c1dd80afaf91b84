//! The ENOSYS stub's semantics, run in the test interpreter in front of a stand-in for
//! libseccomp's program (which returns a marker, so "fell through" is visible).

use super::super::bpf_interp::{SeccompData, run};
use super::*;

/// What the stand-in filter returns: "libseccomp decided".
const FILTER: u32 = 0x7fff_1234;
const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

fn with_filter(limits: &[ArchLimit]) -> Vec<Insn> {
    let mut prog = stub(limits).expect("stub fits");
    prog.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: FILTER,
    });
    prog
}

fn x86_family(x32: Option<u32>) -> Vec<ArchLimit> {
    vec![
        ArchLimit {
            audit_arch: AUDIT_ARCH_X86_64,
            max: Some(435),
            x32_max: x32,
        },
        ArchLimit {
            audit_arch: AUDIT_ARCH_I386,
            max: Some(450),
            x32_max: None,
        },
    ]
}

#[test]
fn newer_syscalls_get_enosys_per_architecture() {
    let prog = with_filter(&x86_family(Some(X32_SYSCALL_BIT | 547)));
    let on = |arch, nr| run(&prog, &SeccompData::call(arch, nr, &[]));
    // x86_64: up to and including the highest named number, libseccomp decides.
    assert_eq!(on(AUDIT_ARCH_X86_64, 0), FILTER);
    assert_eq!(on(AUDIT_ARCH_X86_64, 435), FILTER);
    assert_eq!(on(AUDIT_ARCH_X86_64, 436), ENOSYS);
    assert_eq!(on(AUDIT_ARCH_X86_64, 1000), ENOSYS);
    // x86 has its own limit.
    assert_eq!(on(AUDIT_ARCH_I386, 440), FILTER);
    assert_eq!(on(AUDIT_ARCH_I386, 451), ENOSYS);
    // x32 numbers carry the bit and are compared with the x32 limit, not x86_64's.
    assert_eq!(on(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 500), FILTER);
    assert_eq!(on(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 548), ENOSYS);
    // An architecture the stub does not know goes to libseccomp (bad-arch action).
    assert_eq!(on(AUDIT_ARCH_AARCH64, 5000), FILTER);
}

#[test]
fn x32_without_a_limit_is_left_to_libseccomp() {
    let prog = with_filter(&x86_family(None));
    let on = |nr| run(&prog, &SeccompData::call(AUDIT_ARCH_X86_64, nr, &[]));
    assert_eq!(on(X32_SYSCALL_BIT | 5000), FILTER);
    assert_eq!(on(X32_SYSCALL_BIT), FILTER);
    assert_eq!(on(436), ENOSYS);
}

#[test]
fn no_limits_no_stub() {
    assert!(stub(&[]).expect("empty").is_empty());
    let none = ArchLimit {
        audit_arch: AUDIT_ARCH_ARM,
        max: None,
        x32_max: None,
    };
    assert!(stub(&[none]).expect("empty").is_empty());
}

#[test]
fn arguments_never_matter() {
    let prog = with_filter(&x86_family(None));
    for args in [[0u64; 6], [u64::MAX; 6]] {
        let d = SeccompData {
            nr: 437,
            arch: AUDIT_ARCH_X86_64,
            args,
        };
        assert_eq!(run(&prog, &d), ENOSYS);
    }
}

#[test]
fn aarch64_and_arm_limits() {
    let prog = with_filter(&[
        ArchLimit {
            audit_arch: AUDIT_ARCH_AARCH64,
            max: Some(441),
            x32_max: None,
        },
        ArchLimit {
            audit_arch: AUDIT_ARCH_ARM,
            max: Some(400),
            x32_max: None,
        },
    ]);
    let on = |arch, nr| run(&prog, &SeccompData::call(arch, nr, &[]));
    assert_eq!(on(AUDIT_ARCH_AARCH64, 441), FILTER);
    assert_eq!(on(AUDIT_ARCH_AARCH64, 442), ENOSYS);
    assert_eq!(on(AUDIT_ARCH_ARM, 401), ENOSYS);
    // On aarch64 the x32 bit means nothing special: it is just a large number.
    assert_eq!(on(AUDIT_ARCH_AARCH64, X32_SYSCALL_BIT), ENOSYS);
}
