//! Cgroup drivers for cgroup v1, v2 and hybrid hosts, used by the shim for every container
//! (Linux and Wasm alike): create, place, update, freeze, stats, kill-all, remove.
//!
//! # How data flows
//!
//! 1. [`CgroupRoot::detect`] (or [`CgroupRoot::at`] in tests) looks at the cgroup root
//!    directory once: pure v2 when it holds `cgroup.controllers`, otherwise one v1
//!    hierarchy per controller directory.
//! 2. [`parse_cgroups_path`] turns `linux.cgroupsPath` (cgroupfs or systemd form) into a
//!    [`CgroupPath`], relative to every hierarchy root.
//! 3. [`Cgroup::create`] makes the directories and applies `linux.resources`;
//!    [`Cgroup::load`] names an existing cgroup (the `delete` action, a restarted shim).
//! 4. The shim then places the init helper with [`Cgroup::add_pid`], pauses with
//!    [`Cgroup::freeze`], reads [`Cgroup::stats`] (a neutral [`CgroupStats`] the shim turns
//!    into containerd's v1 or v2 metrics), applies `Update`s with [`Cgroup::apply`], watches
//!    for OOM kills with [`Cgroup::watch_oom`], and tears down with [`Cgroup::kill_all`]
//!    and [`Cgroup::remove`].
//!
//! # Why hand-written drivers
//!
//! `cgroups-rs` discovers hierarchies from `/proc/self/mountinfo` and cannot be pointed at
//! another directory, so its v2 code could never be tested on this project's v1 CI hosts.
//! These drivers are thin file writers that take the root as an argument (design habit 7):
//! tests build fake v1 and v2 trees in a temp dir, and the `root_` tests exercise the real
//! host (v1 hybrid on CI) and a real cgroup v2 kernel in a QEMU guest (`tests/vm`). Interface files are never created: on a real cgroupfs they appear with the
//! directory, and fake trees in tests carry them already.
//!
//! # Limitations
//!
//! - Hybrid hosts are driven as v1: the cgroup2 mount at `unified` (which holds only
//!   `hugetlb` on the CI machines) is detected but not used, so hugepage limits fail there
//!   with an "unsupported" error naming the missing v1 `hugetlb` hierarchy.
//! - Named v1 hierarchies (`name=systemd`) are not joined, and the systemd path form is
//!   translated to directories without asking systemd.
//! - [`Cgroup::pids`] lists the processes of the cgroup itself, not of child cgroups.
//! - v2 device rules are an eBPF program ([`device_filter`]) that a fake tree cannot hold:
//!   tests on fake trees check the rules but attach nothing. Options without a v2
//!   equivalent (swappiness, disabling the OOM killer) are ignored with a warning, as crun
//!   does.

mod device_filter;
mod error;
mod fsutil;
mod oom;
mod path;
mod resources;
mod root;
mod stats;
mod v1;
mod v1_apply;
mod v2;
mod v2_apply;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use oci_spec::runtime::LinuxResources;

pub use error::{CgroupError, CgroupErrorKind};
pub use oom::{OomPoll, OomWatch};
pub use path::{CgroupPath, parse_cgroups_path};
pub use root::CgroupRoot;
pub use stats::{
    CgroupStats, CgroupVersion, CpuStats, IoDeviceStats, MemoryCounter, MemoryEvents, MemoryStats,
    PidsStats,
};

use root::Layout;
use v1::V1Cgroup;
use v2::V2Cgroup;

/// How long [`Cgroup::freeze`] waits for the kernel to report the cgroup frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Driver {
    V1(V1Cgroup),
    V2(V2Cgroup),
}

/// One container's cgroup: the same relative path in every hierarchy the host has.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: CgroupPath,
    driver: Driver,
}

impl Cgroup {
    /// Creates the cgroup (every missing level, in every hierarchy), prepares it (v1:
    /// `cpuset.cpus`/`cpuset.mems` copied from the parent when empty; v2: controllers
    /// enabled in the ancestors' `cgroup.subtree_control`) and applies `resources`.
    ///
    /// On failure every directory this call made is removed again; directories that
    /// already existed are left alone.
    pub fn create(
        root: &CgroupRoot,
        path: &CgroupPath,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        let cg = Cgroup::load(root, path);
        let mut created = Vec::new();
        let result = cg.prepare(&mut created).and_then(|()| match resources {
            Some(r) => cg.apply(r),
            None => Ok(()),
        });
        if let Err(e) = result {
            for dir in created.iter().rev() {
                if let Err(undo) = fsutil::remove_dir(dir, root.emulated) {
                    log::warn!("cgroup: cleanup after failed create: {undo}");
                }
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn prepare(&self, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.create_dirs(&self.path, created),
            Driver::V2(v2) => v2.create_dir(&self.path, created),
        }
    }

    /// Names an existing cgroup without touching the file system.
    pub fn load(root: &CgroupRoot, path: &CgroupPath) -> Cgroup {
        let driver = match &root.layout {
            Layout::V1 { hierarchies, .. } => {
                Driver::V1(V1Cgroup::new(&root.root, hierarchies, path, root.emulated))
            }
            Layout::V2 => Driver::V2(V2Cgroup::new(&root.root, path, root.emulated)),
        };
        Cgroup {
            path: path.clone(),
            driver,
        }
    }

    /// The cgroup's path relative to every hierarchy root.
    pub fn path(&self) -> &CgroupPath {
        &self.path
    }

    /// Writes the requested settings of `resources` (the `Update` RPC uses this too).
    /// Unrequested settings are not touched; a requested one whose file is missing on
    /// this host is an [`CgroupErrorKind::Unsupported`] error naming the file.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => {
                for dir in v1.dirs() {
                    fsutil::ensure_dir(&dir)?;
                }
                v1_apply::apply(v1, resources)
            }
            Driver::V2(v2) => {
                fsutil::ensure_dir(v2.dir())?;
                v2_apply::apply(v2.dir(), resources, v2.emulated())
            }
        }
    }

    /// Moves process `pid` into the cgroup (every hierarchy on v1).
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.add_pid(pid),
            Driver::V2(v2) => v2.add_pid(pid),
        }
    }

    /// The processes in this cgroup itself (`cgroup.procs`; child cgroups not included).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let file = match &self.driver {
            Driver::V1(v1) => match v1.procs_file() {
                Some(f) => f,
                None => return Ok(Vec::new()),
            },
            Driver::V2(v2) => v2.procs_file(),
        };
        let text = fsutil::read(&file)?;
        text.split_whitespace()
            .map(|p| {
                p.parse()
                    .map_err(|_| fsutil::parse_err(&file, format!("{p:?} is not a pid")))
            })
            .collect()
    }

    /// Freezes every process and waits until the kernel confirms (v1 `freezer.state`
    /// `FROZEN`, v2 `cgroup.events` `frozen 1`); gives up and thaws after 5 seconds.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.freeze_within(FREEZE_TIMEOUT)
    }

    pub(crate) fn freeze_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.freeze(timeout),
            Driver::V2(v2) => v2.freeze(timeout),
        }
    }

    /// Thaws a frozen cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.thaw(),
            Driver::V2(v2) => v2.thaw(),
        }
    }

    fn has_freezer(&self) -> bool {
        match &self.driver {
            Driver::V1(v1) => v1.has_freezer(),
            Driver::V2(v2) => v2.has_freezer(),
        }
    }

    /// Sends `signal` to every process of the cgroup.
    ///
    /// On v2 with `SIGKILL` and a kernel that has `cgroup.kill`, one write kills the whole
    /// subtree. Otherwise the cgroup is frozen (when a freezer exists) so nothing can fork
    /// in between, every pid in `cgroup.procs` is signalled (already-gone processes are
    /// fine), and the cgroup is thawed so the signals are delivered. A paused cgroup is
    /// therefore left thawed (as runc does): a signal to a frozen task would otherwise stay
    /// pending.
    pub fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        let sig = Signal::try_from(signal).map_err(|_| CgroupError::InvalidSignal(signal))?;
        if let (Driver::V2(v2), Signal::SIGKILL) = (&self.driver, sig)
            && v2.kill_via_cgroup_kill()?
        {
            return Ok(());
        }
        let frozen = self.has_freezer()
            && match self.freeze() {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("cgroup: killing without freezing {}: {e}", self.path);
                    false
                }
            };
        let result = self.signal_each(sig);
        if frozen && let Err(e) = self.thaw() {
            return Err(result.err().unwrap_or(e));
        }
        result
    }

    fn signal_each(&self, sig: Signal) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        pid,
                        signal: sig as i32,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads the counters of this cgroup; "not found" when it does not exist.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.stats(),
            Driver::V2(v2) => v2.stats(),
        }
    }

    /// Removes the cgroup directory from every hierarchy, retrying for about a second while
    /// the kernel still reports it busy. Already gone is success. Parent directories (for
    /// example the pod's cgroup) are never removed.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.remove(),
            Driver::V2(v2) => v2.remove(),
        }
    }

    /// True for a cgroup v2 cgroup.
    pub fn is_v2(&self) -> bool {
        matches!(self.driver, Driver::V2(_))
    }

    /// Every directory this cgroup consists of (one per v1 hierarchy, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.driver {
            Driver::V1(v1) => v1.dirs(),
            Driver::V2(v2) => vec![v2.dir().to_path_buf()],
        }
    }

    /// Starts watching the cgroup for OOM kills (see [`OomWatch`]). `None` on a v1 host
    /// without the memory controller.
    pub fn watch_oom(&self) -> Result<Option<OomWatch>, CgroupError> {
        match &self.driver {
            Driver::V1(v1) => v1.dir_of("memory").map(OomWatch::v1).transpose(),
            Driver::V2(v2) => OomWatch::v2(v2.dir()).map(Some),
        }
    }

    /// The directory holding the memory controller files (for OOM watching): the v1
    /// `memory` hierarchy's directory, or the v2 directory. `None` on a v1 host without
    /// the memory controller.
    pub fn memory_dir(&self) -> Option<PathBuf> {
        match &self.driver {
            Driver::V1(v1) => v1.dir_of("memory").map(PathBuf::from),
            Driver::V2(v2) => Some(v2.dir().to_path_buf()),
        }
    }
}
