//! Unit tests of the seccomp plan: every field of `linux.seccomp`.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompOperator};
use serde_json::{Value, json};

use super::*;

fn seccomp(v: Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("valid linux.seccomp JSON")
}

fn plan_of(v: Value) -> (Result<SeccompPlan, PlanError>, Vec<String>) {
    let mut warnings = Vec::new();
    let planned = plan(&seccomp(v), &mut warnings);
    (planned, warnings)
}

fn ok(v: Value) -> SeccompPlan {
    let (p, w) = plan_of(v);
    assert!(w.is_empty(), "unexpected warnings {w:?}");
    p.expect("plans")
}

fn field_of(e: PlanError) -> String {
    match e {
        PlanError::Seccomp { field, .. } => field,
        other => panic!("not a seccomp error: {other:?}"),
    }
}

#[test]
fn default_action_and_errno() {
    let p = ok(json!({"defaultAction": "SCMP_ACT_ERRNO"}));
    assert_eq!(p.default_action, SeccompAction::Errno(libc::EPERM as u32));
    let p = ok(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}));
    assert_eq!(p.default_action, SeccompAction::Errno(38));
    let p = ok(json!({"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 7}));
    assert_eq!(p.default_action, SeccompAction::Trace(7));
    assert!(p.rules.is_empty());
}

#[test]
fn every_action() {
    let cases = [
        ("SCMP_ACT_KILL", SeccompAction::KillThread),
        ("SCMP_ACT_KILL_THREAD", SeccompAction::KillThread),
        ("SCMP_ACT_KILL_PROCESS", SeccompAction::KillProcess),
        ("SCMP_ACT_TRAP", SeccompAction::Trap),
        ("SCMP_ACT_ERRNO", SeccompAction::Errno(1)),
        ("SCMP_ACT_TRACE", SeccompAction::Trace(0)),
        ("SCMP_ACT_LOG", SeccompAction::Log),
    ];
    for (name, want) in cases {
        let p = ok(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": name}]
        }));
        assert_eq!(p.rules.len(), 1, "{name}");
        assert_eq!(p.rules[0].action, want, "{name}");
    }
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(p.rules[0].action, SeccompAction::Allow);
    assert!(p.rules[0].action.allows() && SeccompAction::Log.allows());
    assert!(!p.default_action.allows());
}

#[test]
fn notify_is_refused_naming_the_field() {
    let (p, _) = plan_of(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}
        ]
    }));
    let e = p.expect_err("NOTIFY refused");
    assert!(
        e.to_string().contains("SCMP_ACT_NOTIFY is not supported"),
        "{e}"
    );
    assert_eq!(field_of(e), "linux.seccomp.syscalls[1].action");
    let (p, _) = plan_of(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
    assert_eq!(
        field_of(p.expect_err("refused")),
        "linux.seccomp.defaultAction"
    );
}

#[test]
fn errno_ret_is_checked() {
    let (p, _) = plan_of(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4096}]
    }));
    assert_eq!(
        field_of(p.expect_err("too large")),
        "linux.seccomp.syscalls[0].action"
    );
    let (p, _) = plan_of(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 70000}]
    }));
    assert!(p.is_err());
    let (p, _) = plan_of(json!({"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1}));
    let e = p.expect_err("errno on kill");
    assert!(
        e.to_string().contains("only valid with SCMP_ACT_ERRNO"),
        "{e}"
    );
    assert_eq!(field_of(e), "linux.seccomp.defaultAction");
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}]
    }));
    assert_eq!(p.rules[0].action, SeccompAction::Errno(0));
}

#[test]
fn architectures_are_deduplicated_in_order() {
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86"]
    }));
    assert_eq!(
        p.architectures,
        [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    );
}

#[test]
fn flags() {
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    }));
    assert_eq!(
        p.flags,
        SeccompFlags {
            log: true,
            spec_allow: true,
            tsync: false,
            wait_killable_recv: true
        }
    );
    assert_eq!(
        ok(json!({"defaultAction": "SCMP_ACT_ERRNO"})).flags,
        SeccompFlags::default()
    );
}

#[test]
fn unknown_enum_values_are_refused_when_the_spec_is_parsed() {
    for (bad, value) in [
        (json!({"defaultAction": "SCMP_ACT_MAYBE"}), "SCMP_ACT_MAYBE"),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}),
            "SCMP_ARCH_Z80",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}),
            "SECCOMP_FILTER_FLAG_FAST",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}),
            "SCMP_CMP_ABOUT",
        ),
    ] {
        let e = serde_json::from_value::<LinuxSeccomp>(bad).expect_err("refused");
        assert!(e.to_string().contains(value), "{e}");
    }
}

#[test]
fn one_rule_per_name_with_all_conditions() {
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{
            "names": ["personality", "getpid"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 0xff, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}
            ]
        }]
    }));
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.rules[0].name, "personality");
    assert_eq!(p.rules[1].name, "getpid");
    assert_eq!(
        p.rules[0].args,
        [
            SeccompArg {
                index: 0,
                op: LinuxSeccompOperator::ScmpCmpEq,
                value: 8,
                value_two: 0
            },
            SeccompArg {
                index: 1,
                op: LinuxSeccompOperator::ScmpCmpMaskedEq,
                value: 0xff,
                value_two: 3
            }
        ]
    );
}

#[test]
fn the_same_argument_twice_makes_one_rule_per_condition() {
    // Docker's profile allows personality(0), personality(8) and personality(0x20000) so.
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
            ]
        }]
    }));
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.rules[0].args.len(), 1);
    assert_eq!(p.rules[1].args[0].value, 8);
}

#[test]
fn argument_index_above_five_is_refused() {
    let (p, _) = plan_of(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_NE"},
                      {"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    let e = p.expect_err("index 6");
    assert!(e.to_string().contains("out of range"), "{e}");
    assert_eq!(field_of(e), "linux.seccomp.syscalls[1].args[1].index");
}

#[test]
fn unknown_names_are_skipped_and_listed_once() {
    let (p, w) = plan_of(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "not_a_syscall_b", "not_a_syscall_a"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["not_a_syscall_a"], "action": "SCMP_ACT_LOG"}
        ]
    }));
    let p = p.expect("unknown names are not an error");
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].name, "read");
    assert_eq!(
        w,
        [
            "linux.seccomp: syscalls unknown to libseccomp on this architecture were skipped: \
          not_a_syscall_a, not_a_syscall_b"
        ]
    );
}

#[test]
fn rules_with_the_default_action_are_dropped() {
    let p = ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    }));
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].name, "write");
    assert_eq!(p.rules[0].action, SeccompAction::Errno(38));
}
