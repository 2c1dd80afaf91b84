//! Compiled filters run in the test interpreter: libseccomp's real program behind the stub.

use serde_json::json;

use super::bpf_interp::{SeccompData, run};
use super::enosys::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, SECCOMP_RET_ERRNO, X32_SYSCALL_BIT};
use super::*;
use crate::plan::SeccompPlan;

const ALLOW: u32 = 0x7fff_0000;
const fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | e as u32
}

fn compiled(profile: serde_json::Value) -> Filter {
    let spec: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_value(profile).expect("valid profile");
    let mut warnings = Vec::new();
    let plan: SeccompPlan = crate::plan::plan_seccomp(&spec, &mut warnings).expect("plans");
    compile(&plan).expect("compiles")
}

fn nr(name: &str) -> u32 {
    u32::try_from(
        ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664)
            .expect("known")
            .as_raw_syscall(),
    )
    .expect("non-negative")
}

fn x86_64(f: &Filter, name_or_nr: u32, args: &[u64]) -> u32 {
    run(
        f.program(),
        &SeccompData::call(AUDIT_ARCH_X86_64, name_or_nr, args),
    )
}

#[test]
fn argument_conditions_and_errnos() {
    let f = compiled(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "write", "getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "args": [{"index": 0, "value": 0xffffffffu32, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xff, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }));
    let personality = nr("personality");
    assert_eq!(x86_64(&f, personality, &[0xffff_ffff]), errno(38));
    assert_eq!(x86_64(&f, personality, &[0x1008]), ALLOW);
    assert_eq!(x86_64(&f, personality, &[0]), errno(libc::EPERM));
    assert_eq!(x86_64(&f, nr("getpid"), &[]), ALLOW);
    // An old syscall the profile does not allow (below the highest it names): the default
    // errno; one above it (mount is newer than personality): ENOSYS.
    assert_eq!(x86_64(&f, nr("mkdir"), &[]), errno(libc::EPERM));
    assert_eq!(x86_64(&f, nr("mount"), &[]), errno(libc::ENOSYS));
    // A number above everything the profile names: ENOSYS (the stub).
    assert_eq!(x86_64(&f, 1000, &[]), errno(libc::ENOSYS));
    assert_eq!(x86_64(&f, personality + 1, &[]), errno(libc::ENOSYS));
}

#[test]
fn the_stub_covers_x86_and_x32_when_listed() {
    let f = compiled(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write", "clone3", "rt_sigreturn"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let x86_read = u32::try_from(
        ScmpSyscall::from_name_by_arch("read", ScmpArch::X86)
            .expect("known")
            .as_raw_syscall(),
    )
    .expect("non-negative");
    let x86 = |nr| run(f.program(), &SeccompData::call(AUDIT_ARCH_I386, nr, &[]));
    assert_eq!(x86(x86_read), ALLOW);
    assert_eq!(x86(2000), errno(libc::ENOSYS));
    let x32_read = u32::try_from(
        ScmpSyscall::from_name_by_arch("read", ScmpArch::X32)
            .expect("known")
            .as_raw_syscall(),
    )
    .expect("non-negative");
    assert_ne!(x32_read & X32_SYSCALL_BIT, 0, "x32 numbers carry the bit");
    assert_eq!(x86_64(&f, x32_read, &[]), ALLOW);
    assert_eq!(x86_64(&f, X32_SYSCALL_BIT | 2000, &[]), errno(libc::ENOSYS));
    assert_eq!(x86_64(&f, nr("clone3"), &[]), ALLOW);
    assert_eq!(x86_64(&f, nr("clone3") + 1, &[]), errno(libc::ENOSYS));
}

#[test]
fn no_stub_when_the_default_allows() {
    let f = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(x86_64(&f, 1000, &[]), ALLOW);
    assert_eq!(x86_64(&f, nr("mount"), &[]), errno(libc::EPERM));
    assert_eq!(f.flags, 0);
}

#[test]
fn kill_trap_trace_log_actions_reach_the_program() {
    let f = compiled(json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_KILL"},
            {"names": ["write"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 9},
            {"names": ["getppid"], "action": "SCMP_ACT_LOG"}
        ]
    }));
    assert_eq!(x86_64(&f, nr("read"), &[]), 0);
    assert_eq!(x86_64(&f, nr("write"), &[]), 0x0003_0000);
    assert_eq!(x86_64(&f, nr("getpid"), &[]), 0x7ff0_0009);
    assert_eq!(x86_64(&f, nr("getppid"), &[]), 0x7ffc_0000);
    assert_eq!(x86_64(&f, nr("mkdir"), &[]), 0x8000_0000);
    assert_eq!(f.flags, FLAG_LOG | FLAG_SPEC_ALLOW);
    assert_eq!(flag_names(f.flags | FLAG_TSYNC), "TSYNC|LOG|SPEC_ALLOW");
}

#[test]
fn kernel_refusals_are_classified() {
    let e = load_error(Errno::EACCES, 0);
    assert!(matches!(e, InitError::Permission { .. }));
    assert!(e.to_string().contains("needs CAP_SYS_ADMIN"), "{e}");
    let e = load_error(Errno::EINVAL, FLAG_LOG);
    assert!(e.to_string().contains("flags LOG"), "{e}");
    assert!(matches!(e, InitError::Invalid(_)));
}

#[test]
fn a_truncated_export_is_an_error() {
    assert!(parse_program(&[0; 12]).is_err());
    assert!(parse_program(&[]).is_err());
    assert_eq!(
        parse_program(&[6, 0, 0, 0, 0, 0, 0xff, 0x7f])
            .expect("one insn")
            .len(),
        1
    );
}
