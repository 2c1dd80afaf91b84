//! The device program's semantics without a kernel: a tiny interpreter for exactly the
//! opcodes the emitter uses, with the checks of the kernel's verifier that matter here
//! (known opcodes, forward jumps inside the program, no read of an unset register, context
//! reads in bounds, every path ends in `exit` with r0 set).

#![allow(clippy::unwrap_used)]

use oci_spec::runtime::LinuxDeviceCgroup;
use serde_json::json;

use super::*;

const R: u8 = ACC_READ;
const W: u8 = ACC_WRITE;
const M: u8 = ACC_MKNOD;
const RW: u8 = ACC_READ | ACC_WRITE;

/// Runs `p` on the context of one device access and returns r0.
fn run(p: &Program, dev_type: u32, access: u8, major: u32, minor: u32) -> u32 {
    let ctx = [(u32::from(access) << 16) | dev_type, major, minor];
    let mut regs: [Option<u64>; 11] = [None; 11];
    regs[1] = Some(0); // the context pointer: only used as the base of loads below
    let mut pc = 0usize;
    for _ in 0..=p.insns.len() {
        let insn = p
            .insns
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} outside the program"));
        let dst = insn.dst as usize;
        let src = insn.src as usize;
        let get = |r: usize| regs[r].unwrap_or_else(|| panic!("pc {pc}: r{r} read before set"));
        let imm = insn.imm as u32;
        let mut next = pc + 1;
        match insn.code {
            op::LDX_W => {
                assert_eq!(src, 1, "pc {pc}: loads only from the context");
                assert_eq!(get(1), 0, "pc {pc}: r1 is no longer the context");
                let off = usize::try_from(insn.off).unwrap();
                assert!(
                    off % 4 == 0 && off / 4 < ctx.len(),
                    "pc {pc}: bad ctx offset"
                );
                regs[dst] = Some(u64::from(ctx[off / 4]));
            }
            op::AND32_K => regs[dst] = Some(u64::from(get(dst) as u32 & imm)),
            op::RSH32_K => regs[dst] = Some(u64::from((get(dst) as u32) >> imm)),
            op::MOV32_K => regs[dst] = Some(u64::from(imm)),
            op::MOV32_X => regs[dst] = Some(u64::from(get(src) as u32)),
            op::JEQ32_K | op::JNE32_K => {
                assert!(insn.off >= 0, "pc {pc}: backward jump");
                let equal = get(dst) as u32 == imm;
                if equal == (insn.code == op::JEQ32_K) {
                    next = pc + 1 + usize::try_from(insn.off).unwrap();
                }
            }
            op::EXIT => return u32::try_from(get(0)).unwrap(),
            other => panic!("pc {pc}: opcode {other:#x} is not one the emitter uses"),
        }
        pc = next;
    }
    panic!("the program did not exit");
}

/// The meaning the module docs give the rules, computed directly: the reference the
/// program is compared with.
fn decide(rules: &[DeviceRule], dev_type: u32, access: u8, major: u32, minor: u32) -> bool {
    let mut undecided = access;
    for rule in rules.iter().rev() {
        let device = rule.kind.is_none_or(|k| k.bpf_type() == dev_type)
            && rule.major.is_none_or(|m| m == major)
            && rule.minor.is_none_or(|m| m == minor);
        if !device || undecided & rule.access == 0 {
            continue;
        }
        if !rule.allow {
            return false;
        }
        undecided &= !rule.access;
        if undecided == 0 {
            return true;
        }
    }
    false
}

fn spec(rules: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_value(rules).unwrap()
}

fn parse(rules: serde_json::Value) -> Vec<DeviceRule> {
    spec(rules)
        .iter()
        .filter_map(|r| DeviceRule::from_spec(r).unwrap())
        .collect()
}

/// Allowed by the program (checked against the reference model too).
fn allowed(rules: &[DeviceRule], dev_type: u32, access: u8, major: u32, minor: u32) -> bool {
    let p = Program::generate(rules);
    let verdict = run(&p, dev_type, access, major, minor);
    assert!(verdict <= 1, "r0 = {verdict}");
    assert_eq!(
        verdict == 1,
        decide(rules, dev_type, access, major, minor),
        "program and model disagree on type {dev_type} access {access} {major}:{minor}"
    );
    verdict == 1
}

/// The rules containerd (1.6 to 2.x) puts into every container's spec: deny everything
/// (`populateDefaultUnixSpec`), then `WithDefaultUnixDevices`.
fn containerd_default() -> serde_json::Value {
    json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
        {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
    ])
}

#[test]
fn containerd_defaults_allow_the_standard_devices_and_nothing_of_the_host() {
    let rules = rules_with_defaults(&spec(containerd_default())).unwrap();
    let c = DEV_CHAR;
    let b = DEV_BLOCK;
    // (type, access, major, minor, allowed)
    let table = [
        (c, RW, 1, 3, true),     // /dev/null
        (c, RW, 1, 5, true),     // /dev/zero
        (c, R, 1, 9, true),      // /dev/urandom
        (c, RW, 5, 2, true),     // /dev/ptmx
        (c, RW, 136, 7, true),   // /dev/pts/7
        (c, RW, 10, 200, true),  // /dev/net/tun (containerd allows it)
        (c, M, 10, 232, true),   // mknod of anything is allowed ("c *:* m") ...
        (c, RW, 10, 232, false), // ... but opening /dev/kvm is not
        (b, M, 7, 0, true),
        (b, RW, 7, 0, false),    // /dev/loop0
        (b, R, 8, 0, false),     // /dev/sda
        (c, R, 1, 1, false),     // /dev/mem
        (c, W, 4, 0, false),     // /dev/tty0
        (c, RW, 10, 237, false), // /dev/loop-control
    ];
    for (t, access, major, minor, want) in table {
        assert_eq!(
            allowed(&rules, t, access, major, minor),
            want,
            "type {t} access {access} {major}:{minor}"
        );
    }
}

#[test]
fn no_rules_deny_everything_and_allow_all_allows_everything() {
    assert!(!allowed(&[], DEV_CHAR, R, 1, 3));
    let all = parse(json!([{"allow": true, "access": "rwm"}]));
    assert!(allowed(&all, DEV_CHAR, RW | M, 1, 3));
    assert!(allowed(&all, DEV_BLOCK, RW, 8, 0));
}

#[test]
fn the_last_matching_rule_wins() {
    let deny_last = parse(json!([
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]));
    assert!(!allowed(&deny_last, DEV_CHAR, R, 1, 3));
    let allow_last = parse(json!([
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]));
    assert!(allowed(&allow_last, DEV_CHAR, R, 1, 3));
    // A later deny-all overrides everything before it.
    let deny_all_last = parse(json!([
        {"allow": true, "access": "rwm"},
        {"allow": false, "access": "rwm"}
    ]));
    assert!(!allowed(&deny_all_last, DEV_CHAR, R, 1, 3));
    // An allow-all list with holes (the "blacklist" form).
    let holes = parse(json!([
        {"allow": true, "access": "rwm"},
        {"allow": false, "type": "b", "access": "rwm"},
        {"allow": false, "type": "c", "major": 10, "minor": 232, "access": "rwm"}
    ]));
    assert!(allowed(&holes, DEV_CHAR, RW, 1, 3));
    assert!(!allowed(&holes, DEV_BLOCK, R, 8, 0));
    assert!(!allowed(&holes, DEV_CHAR, R, 10, 232));
}

#[test]
fn access_is_decided_bit_by_bit() {
    let no_write = parse(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]));
    assert!(allowed(&no_write, DEV_CHAR, R, 1, 3));
    assert!(allowed(&no_write, DEV_CHAR, M, 1, 3));
    assert!(!allowed(&no_write, DEV_CHAR, W, 1, 3));
    assert!(!allowed(&no_write, DEV_CHAR, RW, 1, 3));
    let split = parse(json!([
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]));
    assert!(allowed(&split, DEV_CHAR, RW, 1, 3));
    assert!(!allowed(&split, DEV_CHAR, RW | M, 1, 3));
    assert!(!allowed(&split, DEV_CHAR, M, 1, 3));
}

#[test]
fn wildcards_types_and_large_numbers() {
    let rules = parse(json!([
        {"allow": true, "type": "c", "minor": 5, "access": "r"},
        {"allow": true, "type": "b", "major": -1, "minor": 9, "access": "rw"},
        {"allow": true, "type": "u", "major": 4_294_967_280_i64, "minor": 0, "access": "r"},
        {"allow": true, "type": "p", "access": "rwm"}
    ]));
    assert_eq!(rules.len(), 3, "the FIFO rule is dropped");
    assert!(allowed(&rules, DEV_CHAR, R, 1, 5));
    assert!(allowed(&rules, DEV_CHAR, R, 250, 5));
    assert!(!allowed(&rules, DEV_BLOCK, R, 1, 5));
    assert!(!allowed(&rules, DEV_CHAR, W, 1, 5));
    assert!(allowed(&rules, DEV_BLOCK, RW, 3, 9));
    assert!(!allowed(&rules, DEV_CHAR, RW, 3, 9));
    assert!(allowed(&rules, DEV_CHAR, R, 0xffff_fff0, 0));
    assert!(!allowed(&rules, DEV_CHAR, R, 0x7fff_fff0, 0));
    // Type `a` ignores numbers, as v1's "a" does.
    let all = parse(json!([{"allow": true, "type": "a", "major": 1, "minor": 3, "access": "r"}]));
    assert!(allowed(&all, DEV_BLOCK, R, 8, 0));
}

#[test]
fn invalid_rules_are_invalid_arguments() {
    for bad in [
        json!([{"allow": true, "access": "rwx"}]),
        json!([{"allow": true, "access": ""}]),
        json!([{"allow": true, "type": "c", "major": -2, "access": "r"}]),
        json!([{"allow": true, "type": "c", "minor": 4_294_967_296_i64, "access": "r"}]),
    ] {
        let err = rules_with_defaults(&spec(bad.clone())).unwrap_err();
        assert_eq!(
            err.kind(),
            crate::cgroup::CgroupErrorKind::InvalidArgument,
            "{bad}: {err}"
        );
    }
    // Absent access means rwm.
    let rules = parse(json!([{"allow": true, "type": "c", "major": 1, "minor": 3}]));
    assert_eq!(rules[0].access, R | W | M);
}

#[test]
fn the_default_device_lines_parse_and_malformed_lines_do_not() {
    for line in DEFAULT_ALLOWED_DEVICES {
        let rule = DeviceRule::parse_allow(line).unwrap();
        assert!(rule.allow);
    }
    assert_eq!(
        DeviceRule::parse_allow("c 136:* rwm").unwrap(),
        DeviceRule {
            kind: Some(DeviceKind::Char),
            major: Some(136),
            minor: None,
            access: R | W | M,
            allow: true
        }
    );
    for bad in [
        "c 1:3",
        "x 1:3 r",
        "c 1-3 r",
        "c 1:3 q",
        "c a:3 r",
        "c 1:3 r extra",
    ] {
        assert!(DeviceRule::parse_allow(bad).is_err(), "{bad}");
    }
}

#[test]
fn program_and_model_agree_on_generated_rule_lists() {
    // A small deterministic generator (xorshift) over a handful of numbers, so rules
    // overlap a lot.
    let mut state = 0x2545_f491_u32;
    let mut next = move |n: u32| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state % n
    };
    let numbers = [1u32, 5, 136];
    for _ in 0..300 {
        let count = next(6);
        let rules: Vec<DeviceRule> = (0..count)
            .map(|_| DeviceRule {
                kind: [None, Some(DeviceKind::Char), Some(DeviceKind::Block)][next(3) as usize],
                major: [None, Some(numbers[next(3) as usize])][next(2) as usize],
                minor: [None, Some(numbers[next(3) as usize])][next(2) as usize],
                access: u8::try_from(next(7) + 1).unwrap(),
                allow: next(2) == 1,
            })
            .collect();
        for dev_type in [DEV_BLOCK, DEV_CHAR] {
            for major in numbers {
                for minor in numbers {
                    for access in 1..=7 {
                        allowed(&rules, dev_type, access, major, minor);
                    }
                }
            }
        }
    }
}

#[test]
fn instructions_encode_as_the_kernel_reads_them() {
    let p = Program::generate(&[]);
    let bytes = p.bytes();
    assert_eq!(bytes.len(), p.insns.len() * 8);
    // ldxw r2, [r1 + 0]: dst in the low nibble, src in the high one.
    assert_eq!(&bytes[..8], &[0x61, 0x12, 0, 0, 0, 0, 0, 0]);
    // and32 r2, 0xffff
    assert_eq!(&bytes[8..16], &[0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]);
    // ldxw r4, [r1 + 4]
    assert_eq!(&bytes[32..40], &[0x61, 0x14, 4, 0, 0, 0, 0, 0]);
    // The program ends with "r0 = 0; exit".
    let n = bytes.len();
    assert_eq!(
        &bytes[n - 16..],
        &[0xb4, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]
    );
}
