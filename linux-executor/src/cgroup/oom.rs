//! Noticing OOM kills in a cgroup: a file descriptor that becomes readable when the
//! kernel's OOM killer may have acted, and the reading that tells whether it did.
//!
//! ```text
//! v1: eventfd ──"<efd> <fd of memory.oom_control>"──▶ cgroup.event_control
//!       readable: one count per OOM in the cgroup (and once when the cgroup is removed)
//! v2: inotify(IN_MODIFY) on memory.events
//!       readable: the file changed; an OOM kill is `oom_kill` growing
//! ```
//!
//! [`OomWatch`] holds no thread and no async runtime: the caller (the shim) waits for the
//! fd to become readable however it likes (tokio's `AsyncFd`), then calls
//! [`OomWatch::on_readable`]. Dropping the watch closes every descriptor; on v1 the kernel
//! then forgets the registration.
//!
//! # Limitations
//!
//! - v1 reports "the cgroup hit OOM", which with the OOM killer enabled means a kill; with
//!   `disable_oom_killer` it means tasks are waiting for memory instead. containerd's own
//!   v1 watcher makes the same simplification.
//! - v2 counts kills in the cgroup and its children (`memory.events` is hierarchical),
//!   like containerd's v2 watcher.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::{
        eventfd::{EfdFlags, EventFd},
        inotify::{AddWatchFlags, InitFlags, Inotify},
    },
};

use super::{
    CgroupError,
    fsutil::{parse_flat_keyed, read_opt, write},
};

/// What one readable notification meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomPoll {
    /// This many OOM kills happened since the last call (0: the wake-up was something
    /// else, such as another counter of `memory.events` changing).
    Kills(u64),
    /// The cgroup is gone: the watch has nothing more to report.
    Gone,
}

enum Source {
    V1 {
        eventfd: EventFd,
        /// Must stay open while registered.
        _oom_control: File,
    },
    V2 {
        inotify: Inotify,
        /// `oom_kill` as last read.
        last: u64,
    },
}

/// An OOM watch on one cgroup's memory controller directory.
pub struct OomWatch {
    source: Source,
    memory_dir: PathBuf,
}

impl std::fmt::Debug for OomWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::V1 { .. } => "v1 eventfd",
            Source::V2 { .. } => "v2 inotify",
        };
        write!(f, "OomWatch({kind} on {})", self.memory_dir.display())
    }
}

fn sys_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> CgroupError + 'a {
    move |e| CgroupError::io(op, path, std::io::Error::from(e))
}

impl OomWatch {
    /// Registers an eventfd for `memory.oom_control` of the v1 memory directory `dir`.
    pub(crate) fn v1(dir: &Path) -> Result<OomWatch, CgroupError> {
        let control_path = dir.join("memory.oom_control");
        let oom_control =
            File::open(&control_path).map_err(|e| CgroupError::io("open", &control_path, e))?;
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(sys_err("eventfd for", dir))?;
        let registration = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
        write(&dir.join("cgroup.event_control"), &registration)?;
        Ok(OomWatch {
            source: Source::V1 {
                eventfd,
                _oom_control: oom_control,
            },
            memory_dir: dir.to_path_buf(),
        })
    }

    /// Watches `memory.events` of the v2 directory `dir`, counting from its current
    /// `oom_kill`.
    pub(crate) fn v2(dir: &Path) -> Result<OomWatch, CgroupError> {
        let events = dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys_err("inotify for", &events))?;
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(sys_err("watch", &events))?;
        // Read after the watch is in place, so no kill falls between the two.
        let last = oom_kills_v2(dir)?.unwrap_or(0);
        Ok(OomWatch {
            source: Source::V2 { inotify, last },
            memory_dir: dir.to_path_buf(),
        })
    }

    /// The descriptor to wait on for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::V1 { eventfd, .. } => eventfd.as_fd(),
            Source::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// Drains the descriptor and says what happened. Call it whenever [`Self::fd`] is
    /// readable; a spurious call (nothing to read) reports `Kills(0)`.
    pub fn on_readable(&mut self) -> Result<OomPoll, CgroupError> {
        let gone = !self.memory_dir.exists();
        match &mut self.source {
            Source::V1 { eventfd, .. } => {
                let count = match eventfd.read() {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => 0,
                    Err(e) => return Err(sys_err("read eventfd of", &self.memory_dir)(e)),
                };
                // The kernel also signals the eventfd when the cgroup is removed.
                if gone {
                    return Ok(OomPoll::Gone);
                }
                Ok(OomPoll::Kills(count))
            }
            Source::V2 { inotify, last } => {
                let events = match inotify.read_events() {
                    Ok(events) => events,
                    Err(Errno::EAGAIN) => Vec::new(),
                    Err(e) => return Err(sys_err("read inotify of", &self.memory_dir)(e)),
                };
                let removed = events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED));
                let Some(now) = oom_kills_v2(&self.memory_dir)? else {
                    return Ok(OomPoll::Gone);
                };
                let new = now.saturating_sub(*last);
                *last = now;
                if new == 0 && (gone || removed) {
                    return Ok(OomPoll::Gone);
                }
                Ok(OomPoll::Kills(new))
            }
        }
    }
}

impl AsRawFd for OomWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

/// `oom_kill` of `dir/memory.events`; `None` when the file (the cgroup) is gone.
fn oom_kills_v2(dir: &Path) -> Result<Option<u64>, CgroupError> {
    let path = dir.join("memory.events");
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    let map = parse_flat_keyed(&path, &text)?;
    Ok(Some(map.get("oom_kill").copied().unwrap_or(0)))
}
