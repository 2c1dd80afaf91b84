//! The `bpf(2)` commands the device filter needs, each behind a small safe function.
//!
//! Every command's attribute block is a `#[repr(C)]` struct laid out like its member of
//! the kernel's `union bpf_attr`, padded to [`ATTR_SIZE`] bytes and zeroed: the kernel
//! accepts a larger block when the bytes it does not know are zero, and some commands
//! write results back into fields beyond the ones we set (`BPF_PROG_QUERY` writes
//! `revision`, `BPF_PROG_LOAD` writes `log_true_size`), which must land inside our memory.
//! File descriptors the kernel returns for BPF objects are always close-on-exec.
#![allow(unsafe_code)]

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE`, the attach type.
const CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`.
const F_ALLOW_MULTI: u32 = 2;

/// Larger than `union bpf_attr` of any kernel so far (about 150 bytes in 6.x).
const ATTR_SIZE: usize = 256;

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    tail: [u8; ATTR_SIZE - 64],
}

#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    tail: [u8; ATTR_SIZE - 16],
}

#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    tail: [u8; ATTR_SIZE - 28],
}

#[repr(C)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    tail: [u8; ATTR_SIZE - 12],
}

const _: () = {
    assert!(size_of::<ProgLoadAttr>() == ATTR_SIZE);
    assert!(size_of::<AttachAttr>() == ATTR_SIZE);
    assert!(size_of::<QueryAttr>() == ATTR_SIZE);
    assert!(size_of::<GetFdByIdAttr>() == ATTR_SIZE);
};

/// Calls `bpf(cmd, attr, ATTR_SIZE)`.
///
/// # Safety
///
/// `T` must be one of the attribute structs above (ATTR_SIZE bytes, the layout of the
/// union member for `cmd`), and every pointer stored in it must point to memory that is
/// valid for what the kernel does with it (read, or write for out buffers) during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed block of ATTR_SIZE bytes (the caller
    // guarantees the type and the pointers inside it); the kernel reads it and may write
    // results back into it, nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            ATTR_SIZE as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Open descriptors are never negative.
    fd.as_raw_fd().unsigned_abs()
}

/// Loads a device program (`insns`: encoded instructions, a multiple of 8 bytes). With
/// `log`, the verifier writes its log there (level 1) and the load is otherwise the same.
pub(super) fn prog_load(
    insns: &[u8],
    license: &CStr,
    name: &[u8],
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len() / 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?;
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name[..n]);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (
            1,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buf.as_mut_ptr() as u64,
        ),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        tail: [0; ATTR_SIZE - 64],
    };
    // SAFETY: a ProgLoadAttr for BPF_PROG_LOAD; `insns` (insn_cnt * 8 bytes) and the
    // NUL-terminated `license` are borrowed for the call and only read; `log_buf` is null
    // with size 0, or an exclusively borrowed buffer of `log_size` bytes the kernel writes.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad fd"))?;
    // SAFETY: the kernel returned a new descriptor for the program; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches `prog` to the cgroup directory `cgroup` as a device filter, next to the ones
/// already attached (`BPF_F_ALLOW_MULTI`).
pub(super) fn attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: CGROUP_DEVICE,
        attach_flags: F_ALLOW_MULTI,
        tail: [0; ATTR_SIZE - 16],
    };
    // SAFETY: an AttachAttr for BPF_PROG_ATTACH; it holds no pointers, only two fds that
    // are open for the duration of the call (borrowed).
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(|_| ())
}

/// Detaches the device program `prog` from the cgroup directory `cgroup`.
pub(super) fn detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: CGROUP_DEVICE,
        attach_flags: 0,
        tail: [0; ATTR_SIZE - 16],
    };
    // SAFETY: an AttachAttr for BPF_PROG_DETACH (same layout); no pointers, two borrowed
    // open fds.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(|_| ())
}

/// The ids of the device programs attached to the cgroup directory `cgroup` itself (not
/// inherited from its ancestors).
pub(super) fn query(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup),
            attach_type: CGROUP_DEVICE,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            tail: [0; ATTR_SIZE - 28],
        };
        // SAFETY: a QueryAttr for BPF_PROG_QUERY; `prog_ids` points to `ids`, exclusively
        // borrowed, with room for `prog_cnt` u32 values the kernel writes.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // The kernel says how many there are; make room and ask again.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() =>
            {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

/// A new descriptor for the loaded program with id `id` (`ENOENT` once it is gone).
pub(super) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
        tail: [0; ATTR_SIZE - 12],
    };
    // SAFETY: a GetFdByIdAttr for BPF_PROG_GET_FD_BY_ID; no pointers.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)? };
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad fd"))?;
    // SAFETY: the kernel returned a new descriptor for the program; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
