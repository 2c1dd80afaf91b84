//! Putting a generated program on a cgroup: load, attach, then detach what was there.

use std::{
    fs::File,
    io,
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::Path,
};

use super::{Program, sys};
use crate::cgroup::CgroupError;

/// The license the program declares. Device programs call no GPL-only helper, so any
/// string works; this is the project's own.
const LICENSE: &std::ffi::CStr = c"Apache-2.0";
/// The program's name as `bpftool prog` shows it.
const NAME: &[u8] = b"amphi_devices";
/// Room for the verifier's log when a load fails.
const LOG_SIZE: usize = 1 << 16;

/// Installs `program` as the device filter of the cgroup v2 directory `dir`, replacing the
/// device programs attached there before: the new one is attached first (with
/// `BPF_F_ALLOW_MULTI`), the old ones are detached afterwards, so the cgroup is never
/// without a filter. Every descriptor (the cgroup's, the programs') is closed on return;
/// the kernel keeps the program alive while the cgroup holds it.
pub(crate) fn install(dir: &Path, program: &Program) -> Result<(), CgroupError> {
    let cgroup = open_dir(dir)?;
    let old = sys::query(cgroup.as_fd()).map_err(|e| kernel("query device programs of", dir, e))?;
    let prog = load(program, dir)?;
    sys::attach(cgroup.as_fd(), prog.as_fd())
        .map_err(|e| kernel("attach the device program to", dir, e))?;
    drop(prog);
    for id in old {
        let old_prog = match sys::prog_fd_by_id(id) {
            Ok(fd) => fd,
            // Released in between (someone else replaced it): nothing to detach.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(kernel("open the previous device program of", dir, e)),
        };
        match sys::detach(cgroup.as_fd(), old_prog.as_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(kernel("detach the previous device program from", dir, e)),
        }
    }
    Ok(())
}

/// The ids of the device programs attached to `dir` itself.
#[cfg(test)]
pub(crate) fn attached(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let cgroup = open_dir(dir)?;
    sys::query(cgroup.as_fd()).map_err(|e| kernel("query device programs of", dir, e))
}

/// True while a program with this id is loaded anywhere in the kernel.
#[cfg(test)]
pub(crate) fn program_exists(id: u32) -> io::Result<bool> {
    match sys::prog_fd_by_id(id) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn open_dir(dir: &Path) -> Result<File, CgroupError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| CgroupError::io("open cgroup", dir, e))
}

/// Loads the program; when the kernel refuses it, loads it again with a log buffer so the
/// error carries the verifier's explanation.
fn load(program: &Program, dir: &Path) -> Result<OwnedFd, CgroupError> {
    let bytes = program.bytes();
    match sys::prog_load(&bytes, LICENSE, NAME, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; LOG_SIZE];
            let again = sys::prog_load(&bytes, LICENSE, NAME, Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
            match again {
                // Loaded the second time: a transient refusal (memory pressure).
                Ok(fd) => Ok(fd),
                Err(_) => Err(CgroupError::DeviceProgram {
                    path: dir.to_path_buf(),
                    log,
                    source: first,
                }),
            }
        }
    }
}

fn kernel(op: &'static str, dir: &Path, source: io::Error) -> CgroupError {
    CgroupError::io(op, dir, source)
}
