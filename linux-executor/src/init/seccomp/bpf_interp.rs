//! A classic-BPF interpreter for tests: runs a seccomp program on a `seccomp_data` the way
//! the kernel does, for the opcodes the ENOSYS stub and libseccomp emit. Unknown opcodes
//! panic, so a test can never pass by skipping an instruction.

use super::enosys::Insn;

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl SeccompData {
    /// A call of `nr` on `arch` with `args` (missing ones are 0).
    pub(crate) fn call(arch: u32, nr: u32, args: &[u64]) -> SeccompData {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        SeccompData { nr, arch, args: a }
    }

    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            // instruction_pointer: the programs under test never read it.
            8 | 12 => 0,
            16..=63 if offset.is_multiple_of(4) => {
                let arg = self.args[((offset - 16) / 8) as usize];
                if (offset - 16).is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from seccomp_data offset {offset}"),
        }
    }
}

/// The return value of `prog` for `data`.
pub(crate) fn run(prog: &[Insn], data: &SeccompData) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("program ran off its end at {pc}"));
        pc += 1;
        let cond = |taken: bool| if taken { i.jt } else { i.jf } as usize;
        match i.code {
            0x20 => a = data.word(i.k),       // ld [k]
            0x00 => a = i.k,                  // ld #k
            0x01 => x = i.k,                  // ldx #k
            0x60 => a = mem[i.k as usize],    // ld M[k]
            0x61 => x = mem[i.k as usize],    // ldx M[k]
            0x02 => mem[i.k as usize] = a,    // st M[k]
            0x03 => mem[i.k as usize] = x,    // stx M[k]
            0x54 => a &= i.k,                 // and #k
            0x44 => a |= i.k,                 // or #k
            0x07 => x = a,                    // tax
            0x87 => a = x,                    // txa
            0x05 => pc += i.k as usize,       // ja
            0x15 => pc += cond(a == i.k),     // jeq #k
            0x25 => pc += cond(a > i.k),      // jgt #k
            0x35 => pc += cond(a >= i.k),     // jge #k
            0x45 => pc += cond(a & i.k != 0), // jset #k
            0x1d => pc += cond(a == x),       // jeq x
            0x2d => pc += cond(a > x),        // jgt x
            0x3d => pc += cond(a >= x),       // jge x
            0x4d => pc += cond(a & x != 0),   // jset x
            0x06 => return i.k,               // ret #k
            0x16 => return a,                 // ret a
            other => panic!("opcode {other:#x} at {} is not interpreted", pc - 1),
        }
    }
}
