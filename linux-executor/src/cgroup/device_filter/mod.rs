//! Device rules on cgroup v2: `linux.resources.devices` as a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! eBPF program attached to the container's cgroup.
//!
//! cgroup v2 has no `devices.allow`/`devices.deny` files; the kernel instead runs every
//! device program attached to the cgroup (and its ancestors) on each `open(2)` and
//! `mknod(2)` of a device node, and refuses the access with `EPERM` unless all of them
//! return 1.
//!
//! # How data flows
//!
//! 1. [`DeviceRule::from_spec`] checks and converts each OCI rule (pure); the runtime's
//!    default devices ([`super::resources::DEFAULT_ALLOWED_DEVICES`], the same list the v1
//!    driver writes) are appended after the spec's rules by [`rules_with_defaults`], as
//!    runc and crun do, so they stay usable whatever the spec denies.
//! 2. [`Program::generate`] emits the eBPF instructions with a small emitter of our own (no
//!    C toolchain, no libbpf). Unit tests run the program in a tiny interpreter.
//! 3. [`install`] (thin, in `attach.rs`) loads it (`BPF_PROG_LOAD`, the verifier's log in
//!    the error), attaches it with `BPF_F_ALLOW_MULTI`, then detaches the programs that
//!    were attached before, so an Update never leaves a window without a filter (for a
//!    moment both apply, which can only be stricter). No fd is kept: the program lives as
//!    long as the cgroup holds it, and removing the cgroup releases it.
//!
//! # Semantics
//!
//! The OCI spec says the rules are evaluated in order. Like runc and crun (both walk the
//! list from the last rule to the first, so the first match in the program is the last
//! rule in the list), the *last* matching rule wins, and a device no rule matches is
//! denied. A rule matches a device by type (`a` matches block and char devices and ignores
//! the numbers), major and minor (absent or -1 is a wildcard). Access is decided per bit:
//! each of `r`, `w`, `m` the kernel asks for is decided by the last matching rule that
//! names it, and the request is allowed only when every bit is. So `allow c 1:3 r` followed
//! by `allow c 1:3 w` allows an `O_RDWR` open (as v1's merged exceptions do), and `deny c
//! 1:3 w` after `allow c 1:3 rwm` still allows reads but refuses `O_RDWR`.
//!
//! # Limitations
//!
//! - runc first normalises the list through an emulation of the v1 kernel; where v1 would
//!   refuse to "punch a hole" into an earlier wildcard allow (a narrower deny after `allow
//!   c *:* rwm`), this filter does punch it: it is stricter, never looser.
//! - FIFO rules (`p`) are skipped, as on v1: the device cgroup does not cover FIFOs.
//! - Programs attached by someone else without `BPF_F_ALLOW_MULTI` make the attach fail
//!   (the kernel refuses a second program); this is reported, not worked around.

mod attach;
mod sys;

#[cfg(test)]
mod tests;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

pub(crate) use attach::install;
#[cfg(test)]
pub(crate) use attach::{attached, program_exists};

use super::{CgroupError, resources::DEFAULT_ALLOWED_DEVICES};

/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`: the access bits in the program's context.
pub(crate) const ACC_MKNOD: u8 = 1;
pub(crate) const ACC_READ: u8 = 2;
pub(crate) const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR`: the device type in the context.
pub(crate) const DEV_BLOCK: u32 = 1;
pub(crate) const DEV_CHAR: u32 = 2;

/// The kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    Block,
    Char,
}

impl DeviceKind {
    fn bpf_type(self) -> u32 {
        match self {
            DeviceKind::Block => DEV_BLOCK,
            DeviceKind::Char => DEV_CHAR,
        }
    }
}

/// One checked device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    /// `None` for type `a` (every block and char device, whatever the numbers).
    pub(crate) kind: Option<DeviceKind>,
    /// `None` is the wildcard.
    pub(crate) major: Option<u32>,
    pub(crate) minor: Option<u32>,
    /// `ACC_*` bits, never empty.
    pub(crate) access: u8,
    pub(crate) allow: bool,
}

impl DeviceRule {
    /// Converts an OCI rule; `None` for FIFO rules, which the device cgroup does not cover.
    pub(crate) fn from_spec(rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>, CgroupError> {
        let kind = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DeviceKind::Block),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DeviceKind::Char),
            LinuxDeviceType::P => return Ok(None),
        };
        let (major, minor) = match kind {
            None => (None, None),
            Some(_) => (spec_number(rule.major())?, spec_number(rule.minor())?),
        };
        Ok(Some(DeviceRule {
            kind,
            major,
            minor,
            access: access_bits(rule.access().as_deref().unwrap_or("rwm"))?,
            allow: rule.allow(),
        }))
    }

    /// Parses an allow rule in the v1 `devices.allow` syntax (`c 1:3 rwm`, `b *:* m`).
    pub(crate) fn parse_allow(line: &str) -> Result<DeviceRule, CgroupError> {
        let bad = || CgroupError::InvalidResource(format!("device rule {line:?} is malformed"));
        let mut fields = line.split(' ');
        let (Some(typ), Some(numbers), Some(access), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let kind = match typ {
            "a" => None,
            "b" => Some(DeviceKind::Block),
            "c" => Some(DeviceKind::Char),
            _ => return Err(bad()),
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
        let number = |n: &str| match n {
            "*" => Ok(None),
            n => n.parse().map(Some).map_err(|_| bad()),
        };
        Ok(DeviceRule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: access_bits(access)?,
            allow: true,
        })
    }
}

/// The spec's rules (FIFO rules dropped) followed by the runtime's default devices.
pub(crate) fn rules_with_defaults(
    spec: &[LinuxDeviceCgroup],
) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut rules = Vec::with_capacity(spec.len() + DEFAULT_ALLOWED_DEVICES.len());
    for rule in spec {
        if let Some(r) = DeviceRule::from_spec(rule)? {
            rules.push(r);
        }
    }
    for line in DEFAULT_ALLOWED_DEVICES {
        rules.push(DeviceRule::parse_allow(line)?);
    }
    Ok(rules)
}

fn spec_number(n: Option<i64>) -> Result<Option<u32>, CgroupError> {
    match n {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            CgroupError::InvalidResource(format!("device number {n} is out of range"))
        }),
    }
}

fn access_bits(access: &str) -> Result<u8, CgroupError> {
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0xff,
        };
    }
    if access.is_empty() || bits & !ACC_ALL != 0 {
        return Err(CgroupError::InvalidResource(format!(
            "device access {access:?} is not a combination of r, w and m"
        )));
    }
    Ok(bits)
}

/// eBPF registers the program uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
    R6 = 6,
}

/// Opcodes the emitter produces (class | operation | source), and nothing else.
pub(crate) mod op {
    /// `dst = *(u32 *)(src + off)` (BPF_LDX | BPF_MEM | BPF_W).
    pub(crate) const LDX_W: u8 = 0x61;
    /// 32-bit `dst &= imm` (BPF_ALU | BPF_AND | BPF_K).
    pub(crate) const AND32_K: u8 = 0x54;
    /// 32-bit `dst >>= imm` (BPF_ALU | BPF_RSH | BPF_K).
    pub(crate) const RSH32_K: u8 = 0x74;
    /// 32-bit `dst = imm` (BPF_ALU | BPF_MOV | BPF_K).
    pub(crate) const MOV32_K: u8 = 0xb4;
    /// 32-bit `dst = src` (BPF_ALU | BPF_MOV | BPF_X).
    pub(crate) const MOV32_X: u8 = 0xbc;
    /// `if (u32)dst == imm goto +off` (BPF_JMP32 | BPF_JEQ | BPF_K).
    pub(crate) const JEQ32_K: u8 = 0x16;
    /// `if (u32)dst != imm goto +off` (BPF_JMP32 | BPF_JNE | BPF_K).
    pub(crate) const JNE32_K: u8 = 0x56;
    /// `return r0` (BPF_JMP | BPF_EXIT).
    pub(crate) const EXIT: u8 = 0x95;
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    pub(crate) dst: Reg,
    pub(crate) src: Reg,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads: code, dst (low nibble) and src (high nibble), the
    /// offset and the immediate, little-endian on x86_64 (native order in general).
    fn encode(&self) -> [u8; 8] {
        let mut b = [0; 8];
        b[0] = self.code;
        b[1] = (self.dst as u8) | ((self.src as u8) << 4);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// A generated device program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Program {
    pub(crate) insns: Vec<Insn>,
}

/// Offsets in `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`;
/// `access_type` is `(access << 16) | type`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

impl Program {
    /// Emits the program for `rules` (in spec order; see the module docs for the meaning).
    ///
    /// Registers: r2 = type, r3 = requested access, r4 = major, r5 = minor, r6 = access
    /// bits not decided yet, r1 scratch once the context is read. Rules are emitted last
    /// to first; each one that matches the device and names an undecided bit either
    /// returns 0 (deny) or clears those bits and returns 1 once none is left (allow).
    /// Falling off the end returns 0: default deny. There are no loops and every jump goes
    /// forward to the start of the next rule's block.
    pub(crate) fn generate(rules: &[DeviceRule]) -> Program {
        use Reg::*;
        let mut p = vec![
            Insn::new(op::LDX_W, R2, R1, CTX_ACCESS_TYPE, 0),
            Insn::new(op::AND32_K, R2, R0, 0, 0xffff),
            Insn::new(op::LDX_W, R3, R1, CTX_ACCESS_TYPE, 0),
            Insn::new(op::RSH32_K, R3, R0, 0, 16),
            Insn::new(op::LDX_W, R4, R1, CTX_MAJOR, 0),
            Insn::new(op::LDX_W, R5, R1, CTX_MINOR, 0),
            Insn::new(op::MOV32_X, R6, R3, 0, 0),
        ];
        for rule in rules.iter().rev() {
            p.extend(rule_block(rule));
        }
        p.push(Insn::new(op::MOV32_K, R0, R0, 0, 0));
        p.push(Insn::new(op::EXIT, R0, R0, 0, 0));
        Program { insns: p }
    }

    /// The instructions as the kernel expects them in `BPF_PROG_LOAD`.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.insns.iter().flat_map(Insn::encode).collect()
    }
}

/// The block of one rule. Its conditional jumps skip to the block's end (the next rule).
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    use Reg::*;
    // Each entry: an instruction, and whether it is a "goto next" whose offset is filled
    // in once the block's length is known.
    let mut block: Vec<(Insn, bool)> = Vec::new();
    let mut skip_unless = |reg: Reg, value: u32| {
        // Wrapping cast: JMP32 compares the low 32 bits, so the bit pattern is what counts.
        block.push((Insn::new(op::JNE32_K, reg, R0, 0, value as i32), true));
    };
    if let Some(kind) = rule.kind {
        skip_unless(R2, kind.bpf_type());
    }
    if let Some(major) = rule.major {
        skip_unless(R4, major);
    }
    if let Some(minor) = rule.minor {
        skip_unless(R5, minor);
    }
    block.push((Insn::new(op::MOV32_X, R1, R6, 0, 0), false));
    block.push((
        Insn::new(op::AND32_K, R1, R0, 0, i32::from(rule.access)),
        false,
    ));
    block.push((Insn::new(op::JEQ32_K, R1, R0, 0, 0), true));
    if rule.allow {
        let clear = !u32::from(rule.access) as i32;
        block.push((Insn::new(op::AND32_K, R6, R0, 0, clear), false));
        block.push((Insn::new(op::JNE32_K, R6, R0, 0, 0), true));
        block.push((Insn::new(op::MOV32_K, R0, R0, 0, 1), false));
    } else {
        block.push((Insn::new(op::MOV32_K, R0, R0, 0, 0), false));
    }
    block.push((Insn::new(op::EXIT, R0, R0, 0, 0), false));
    let len = block.len();
    block
        .into_iter()
        .enumerate()
        .map(|(i, (mut insn, to_next))| {
            if to_next {
                // A block is at most 10 instructions long, so the offset always fits.
                insn.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
            insn
        })
        .collect()
}
